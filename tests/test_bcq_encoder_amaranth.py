"""The activation encoder (bcq.hw.bcq_encoder) in the Amaranth simulator, bit-exact against the
integer encoder specification (bcq.sw.formats.encoder_int) through bcq.sim.encoder_vectors."""
import random

import pytest
import torch
from amaranth import Value
from amaranth.sim import Simulator

from bcq.hw.bcq_encoder import BCQEncoder
from bcq.hw.bcq_block import codebook_write_signature
from bcq.hw.units import write_verilog
from bcq.sim.amaranth_streams import get_payloads, put_beats
from bcq.sim.encoder_vectors import encoder_cases, encoder_codebooks
from bcq.sw.formats.config import BCQConfig
from bcq.sw.formats.errors import ConfigError
from helpers import exactly

CONFIGS = [
    ("default", BCQConfig(), 1, 0),
    ("nearest", BCQConfig(scale_rule="nearest"), 1, 3),
    ("e8m0", BCQConfig(scale_format="e8m0", e8m0_min_exp=-12), 1, -2),
    ("lb4-nc2-la16-2bpc", BCQConfig(block_len=4, array_len=16, n_codebooks=2), 2, 0),
    ("nc1-int8", BCQConfig(n_codebooks=1, entry_bits=8, array_len=32), 1, -5),
]


def run_encoder(dut, codebooks, beats, n_out, rng, stall_in, stall_out, ts_exp=0):
    got = []
    sim = Simulator(dut)
    sim.add_clock(1e-8)

    async def producer(ctx):
        ctx.set(dut.ts_exp, ts_exp)
        for addr, value in enumerate(codebooks.entries.flatten().tolist()):
            ctx.set(dut.cbw.en, 1)
            ctx.set(dut.cbw.addr, addr)
            ctx.set(dut.cbw.data, value)
            await ctx.tick()
        ctx.set(dut.cbw.en, 0)
        await put_beats(ctx, dut.i, beats, rng, stall_in)

    async def consumer(ctx):
        got.extend(v for v, in await get_payloads(ctx, dut.o, n_out, rng, stall_out, Value.cast(dut.o.payload)))

    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    return got


@pytest.mark.parametrize("name,cfg,bpc,ts_exp", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_random_and_directed_vectors(name, cfg, bpc, ts_exp, seed):
    cb = encoder_codebooks(cfg, torch.Generator().manual_seed(seed))
    cases = encoder_cases(cfg, cb, seed=seed, count=3, max_arrays=2, blocks_per_cycle=bpc, ts_exp=ts_exp)
    beats = [b for c in cases for b in c.beats]
    expected = [(c, k, e) for c in cases for k, e in enumerate(c.expected)]
    dut = BCQEncoder(cfg, blocks_per_cycle=bpc)
    got = run_encoder(dut, cb, beats, len(expected), random.Random(seed), 0.2, 0.3, ts_exp)
    for (case, k, want), value in zip(expected, got):
        assert value == want, f"{case.name} beat {k}: got {value:#x}, spec {want:#x}\n{case.describe()}"


def test_latency_is_measured(seed):
    """The first output beat of an array comes ``latency`` cycles after its last input beat."""
    cfg = BCQConfig(block_len=4, array_len=16, n_codebooks=2)
    cb = encoder_codebooks(cfg, torch.Generator().manual_seed(seed))
    case = encoder_cases(cfg, cb, seed=seed, count=1, max_arrays=1, directed=False)[0]
    dut = BCQEncoder(cfg)
    seen = {}
    sim = Simulator(dut)
    sim.add_clock(1e-8)

    async def tb(ctx):
        ctx.set(dut.o.ready, 1)
        for cycle in range(40):
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
    assert seen["first_out"] - last_in == BCQEncoder.latency


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
                           f"4 scalars/cycle, latency 8 cycles from an array's last beat, FIFO 12 beats); ports: ")


def test_bad_parameters():
    with pytest.raises(ConfigError, match=exactly("invalid config: config='dict'; allowed: a BCQConfig")):
        BCQEncoder({})
    with pytest.raises(ConfigError, match=exactly("invalid config: blocks_per_cycle=3; allowed: a divisor of blocks_per_array=8")):
        BCQEncoder(BCQConfig(), blocks_per_cycle=3)
