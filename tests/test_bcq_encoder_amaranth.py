"""The activation encoder (bcq.hw.bcq_encoder) in the Amaranth simulator, bit-exact against the
integer encoder specification (bcq.sw.formats.encoder_int) through bcq.sim.encoder_vectors."""
import random

import pytest
import torch
from amaranth import Value
from amaranth.sim import Simulator

from bcq.hw.bcq_encoder import BCQEncoder, NearestEntry, lanes_to_feed
from bcq.hw.board import BOARDS
from bcq.hw.bcq_block import codebook_write_signature
from bcq.hw.units import write_verilog
from bcq.sim.amaranth_streams import get_payloads, put_beats, write_words
from bcq.sim.encoder_vectors import encoder_cases, encoder_codebooks
from bcq.sw.contract.image_layout import EngineLayout
from bcq.sw.formats.config import BCQConfig
from bcq.sw.formats.encoder_int import nearest_entries
from bcq.sw.formats.errors import ConfigError
from helpers import exactly

# (name, config, blocks per output beat, lanes (None: B * Lb), ts_exp): every way the input beat
# can cut the output beat (several blocks per input beat, one block, part of a block).
CONFIGS = [
    ("default", BCQConfig(), 1, None, 0),
    ("ulx3s-lanes1", BCQConfig(), 2, 1, -1),
    ("nearest-lanes2", BCQConfig(scale_rule="nearest"), 1, 2, 3),
    ("e8m0-lanes4", BCQConfig(scale_format="e8m0", e8m0_min_exp=-12), 1, 4, -2),
    ("lb4-nc2-la16-2bpc", BCQConfig(block_len=4, array_len=16, n_codebooks=2), 2, None, 0),
    ("lb4-nc2-la16-2bpc-lanes4", BCQConfig(block_len=4, array_len=16, n_codebooks=2), 2, 4, 0),
    ("nc1-int8", BCQConfig(n_codebooks=1, entry_bits=8, array_len=32), 1, None, -5),
]


def run_encoder(dut, codebooks, beats, n_out, rng, stall_in, stall_out, ts_exp=0, write=True):
    """Write ``codebooks`` through ``cbw`` (unless ``write`` is False: the dut was built with
    them), stream ``beats``, return ``n_out`` output payloads."""
    got = []
    sim = Simulator(dut)
    sim.add_clock(1e-8)

    async def producer(ctx):
        ctx.set(dut.ts_exp, ts_exp)
        if write:
            await write_words(ctx, dut.cbw, codebooks.entries.flatten().tolist())
        await put_beats(ctx, dut.i, beats, rng, stall_in)

    async def consumer(ctx):
        got.extend(v for v, in await get_payloads(ctx, dut.o, n_out, rng, stall_out, Value.cast(dut.o.payload)))

    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    return got


@pytest.mark.parametrize("name,cfg,bpc,lanes,ts_exp", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_random_and_directed_vectors(name, cfg, bpc, lanes, ts_exp, seed):
    cb = encoder_codebooks(cfg, torch.Generator().manual_seed(seed))
    cases = encoder_cases(cfg, cb, seed=seed, count=3, max_arrays=2, blocks_per_cycle=bpc, lanes=lanes,
                          ts_exp=ts_exp)
    beats = [b for c in cases for b in c.beats]
    expected = [(c, k, e) for c in cases for k, e in enumerate(c.expected)]
    dut = BCQEncoder(cfg, blocks_per_cycle=bpc, lanes=lanes)
    got = run_encoder(dut, cb, beats, len(expected), random.Random(seed), 0.2, 0.3, ts_exp)
    for (case, k, want), value in zip(expected, got):
        assert value == want, f"{case.name} beat {k}: got {value:#x}, spec {want:#x}\n{case.describe()}"


def test_codebooks_given_at_build_need_no_write(seed):
    """The table's initial contents (built from the specification's nearest entries) equal what
    the fill computes: encode without any codebook write."""
    cfg = BCQConfig(block_len=4, array_len=16, n_codebooks=2)
    cb = encoder_codebooks(cfg, torch.Generator().manual_seed(seed))
    cases = encoder_cases(cfg, cb, seed=seed, count=2, max_arrays=2, blocks_per_cycle=2, lanes=2)
    expected = [(c, k, e) for c in cases for k, e in enumerate(c.expected)]
    dut = BCQEncoder(cfg, blocks_per_cycle=2, lanes=2, codebooks=cb)
    got = run_encoder(dut, cb, [b for c in cases for b in c.beats], len(expected), random.Random(seed), 0.2, 0.3,
                      write=False)
    for (case, k, want), value in zip(expected, got):
        assert value == want, f"{case.name} beat {k}: got {value:#x}, spec {want:#x}\n{case.describe()}"


def test_table_rebuild_takes_fill_cycles():
    """After the last codebook write ``busy`` (and ``i.ready`` low) lasts ``fill_cycles``."""
    cfg = BCQConfig(block_len=4, array_len=16, n_codebooks=2)
    dut = BCQEncoder(cfg)
    seen = {}
    sim = Simulator(dut)
    sim.add_clock(1e-8)

    async def tb(ctx):
        ctx.set(dut.i.valid, 1)
        ctx.set(dut.cbw.en, 1)
        await ctx.tick()
        ctx.set(dut.cbw.en, 0)
        for cycle in range(dut.fill_cycles + 5):
            busy, ready = ctx.get(dut.busy), ctx.get(dut.i.ready)
            assert busy == (not ready), f"cycle {cycle}: busy {busy} with i.ready {ready}"
            if not busy and "free" not in seen:
                seen["free"] = cycle
            await ctx.tick()
    sim.add_testbench(tb)
    sim.run()
    assert seen["free"] == dut.fill_cycles == (1 << dut.arith.t_bits) * cfg.n_codebooks + BCQEncoder.FILL_LATENCY


def test_ulx3s_engine_needs_one_lane():
    """lanes_to_feed: B * Lb / ceil(M / R) scalars per cycle, rounded up to a width the encoder
    takes."""
    lay = EngineLayout(BCQConfig(), BOARDS["ulx3s-85f"]["lanes"], BOARDS["ulx3s-85f"]["blocks_per_cycle"])
    assert lanes_to_feed(lay, BOARDS["ulx3s-85f"]["max_rows"]) == 1 == BOARDS["ulx3s-85f"]["encoder_lanes"]
    assert lanes_to_feed(lay, 16) == 16          # one row group: the engine's full beat rate
    assert lanes_to_feed(lay, 48) == 8           # 16 / 3 -> 5.3, the next width the encoder takes
    assert lanes_to_feed(lay, 64) == 4


@pytest.mark.parametrize("bpc,lanes", [(1, None), (2, 2), (2, 1)])
def test_latency_is_measured(seed, bpc, lanes):
    """The first output beat of an array comes ``latency`` cycles after its last input beat."""
    cfg = BCQConfig(block_len=4, array_len=16, n_codebooks=2)
    cb = encoder_codebooks(cfg, torch.Generator().manual_seed(seed))
    case = encoder_cases(cfg, cb, seed=seed, count=1, max_arrays=1, blocks_per_cycle=bpc, lanes=lanes,
                         directed=False)[0]
    dut = BCQEncoder(cfg, blocks_per_cycle=bpc, lanes=lanes)
    assert dut.latency == dut.base_latency + dut.beats_per_output - 1 == 14 + dut.scale_stages + dut.div_stages + dut.sel_stages + dut.beats_per_output - 1
    seen = {}
    sim = Simulator(dut)
    sim.add_clock(1e-8)

    async def tb(ctx):
        ctx.set(dut.o.ready, 1)
        for cycle in range(80):
            k = cycle if cycle < len(case.beats) else None
            ctx.set(dut.i.valid, k is not None)
            if k is not None:
                ctx.set(Value.cast(dut.i.payload), case.beats[k])
            if ctx.get(dut.o.valid) and "first_out" not in seen:
                seen["first_out"] = cycle
            await ctx.tick()
    sim.add_testbench(tb)
    sim.run()
    last_in = len(case.beats) - 1      # accepted on the edge that ends this cycle
    assert seen["first_out"] - last_in == dut.latency


def test_codebook_port_is_the_engines():
    cfg = BCQConfig()
    assert BCQEncoder(cfg).signature.members["cbw"] == wiring_out(codebook_write_signature(cfg))


def wiring_out(sig):
    from amaranth.lib.wiring import Out
    return Out(sig)


def test_verilog_unit(tmp_path):
    cfg = BCQConfig(block_len=4, array_len=16, n_codebooks=2)
    line = write_verilog("bcq-encoder", tmp_path / "bcq_encoder.v", config=cfg)
    assert "module bcq_encoder" in (tmp_path / "bcq_encoder.v").read_text()
    assert line.startswith(f"wrote {tmp_path / 'bcq_encoder.v'}: module bcq_encoder ({cfg.describe()}; BF16 in, "
                           f"4 scalars/cycle, latency 30 cycles from an array's last beat, FIFO 21 beats, table rebuild 1028 "
                           f"cycles); ports: ")


def test_bad_parameters():
    with pytest.raises(ConfigError, match=exactly("invalid config: config='dict'; allowed: a BCQConfig")):
        BCQEncoder({})
    with pytest.raises(ConfigError, match=exactly("invalid config: blocks_per_cycle=3; allowed: a divisor of blocks_per_array=8")):
        BCQEncoder(BCQConfig(), blocks_per_cycle=3)
    for bad in (-1, 6, True, 1.0):
        with pytest.raises(ConfigError, match=exactly(f"invalid config: latency={bad!r}; allowed: 0..5 (keys, then the tree's 4 levels)")):
            NearestEntry(BCQConfig(), latency=bad)
    for bad in (3, 0, 32, 12, True, 2.0):
        with pytest.raises(ConfigError, match=exactly(
                f"invalid config: lanes={bad!r}; allowed: one of 1, 2, 4, 8, 16 (divides B * Lb = 16 and divides "
                "or is a multiple of block_len=8)")):
            BCQEncoder(BCQConfig(), blocks_per_cycle=2, lanes=bad)


@pytest.mark.parametrize("latency", [0, BCQEncoder.FILL_SEARCH_LATENCY, 5])
def test_nearest_entry_all_t_against_the_spec(seed, latency):
    """The 16-entry NearestEntry (the table fill's search; the formal proof covers fewer entries)
    against the specification's ``nearest_entries`` for every ``t`` of its width, codebooks with
    ties and extremes (``encoder_codebooks``); combinational, and pipelined as the fill uses it
    (a new ``t`` and codebook every cycle, each answered ``latency`` edges later)."""
    cfg = BCQConfig()
    dut = NearestEntry(cfg, latency=latency)
    books = encoder_codebooks(cfg, torch.Generator().manual_seed(seed)).entries[:3].to(torch.int64)
    tb_ = dut.arith.t_bits
    ts = torch.arange(-(1 << (tb_ - 1)), 1 << (tb_ - 1))
    want = nearest_entries(ts, books)                                  # [2**t_bits, 3]
    steps = [(c, k) for c in range(books.shape[0]) for k in range(len(ts))]
    sim = Simulator(dut)
    if latency:
        sim.add_clock(1e-6)

    async def tb(ctx):
        for n in range(len(steps) + latency):
            if n < len(steps):
                c, k = steps[n]
                ctx.set(dut.t, int(ts[k]))
                for i in range(cfg.n_entries):
                    ctx.set(dut.entries[i], int(books[c, i]))
            if n >= latency:
                c, k = steps[n - latency]
                idx, val = ctx.get(dut.index), ctx.get(dut.value)
                assert (idx, val) == (int(want[k, c]), int(books[c, want[k, c]])), \
                    f"codebook {books[c].tolist()} t={int(ts[k])}: got index {idx} value {val}, spec index {int(want[k, c])}"
            if latency:
                await ctx.tick()
    sim.add_testbench(tb)
    sim.run()
