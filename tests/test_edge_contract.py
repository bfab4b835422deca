"""The contract at the edges (docs/arithmetic.md section 5): what the BCQ unit does with input the
encoder never produces, the golden model and the gateware (Amaranth simulator) checked against
each other and against references written here from the doc's words. The compiled harness
streams the same cases (tests/test_harness.py); the beat layout table of section 3 is checked
against the layout."""
from pathlib import Path
import random
import re

from amaranth import ClockDomain, Module, Signal
from amaranth.hdl import Shape
from amaranth.sim import Simulator
from conftest import random_codebooks
from helpers import exactly
import numpy as np
import pytest
import torch

from bcq.hw import scale as hw_scale
from bcq.hw.bcq_dot import BCQDot
from bcq.sim.amaranth_streams import get_payloads, put_beats, run_streams, write_words
from bcq.sim.bulk import bcq_beats, random_operand
from bcq.sw.contract.beats import activation_layout, bcq_beat_layout
from bcq.sw.contract.geometry import BeatGeometry
from bcq.sw.contract.packing import words_to_int
from bcq.sw.contract.tables import pair_table_words
from bcq.sw.formats.codebooks import Codebooks
from bcq.sw.formats.config import BCQConfig
from bcq.sw.formats.errors import BCQError, ConfigError
from bcq.sw.formats.golden import Arithmetic, dot_fixed, dot_pairs
from bcq.sw.formats.lobcq import BCQTensor
from bcq.sw.formats.numerics import scale_decode

DOC = Path(__file__).resolve().parent.parent / "docs" / "arithmetic.md"
SCALE_CONFIGS = [BCQConfig(), BCQConfig(scale_format="e8m0"), BCQConfig(scale_format="e8m0", e8m0_min_exp=-5),
                 BCQConfig(scale_format="e8m0", e8m0_min_exp=0)]


def doc_decode(code, cfg):
    """The doc's words, in plain integers: E4M3 reads bits 6..0 (0x7F by the formula); E8M0
    saturates to [127 + e8m0_min_exp, 127]."""
    if cfg.scale_format == "e4m3":
        e, m = (code & 0x7F) >> 3, code & 7
        return (m + 8 if e else m), max(e, 1) - 10
    return 1, min(max(code - 127, cfg.e8m0_min_exp), 0)


@pytest.mark.parametrize("cfg", SCALE_CONFIGS, ids=lambda c: f"{c.scale_format}{c.e8m0_min_exp}")
def test_golden_decodes_every_code_as_documented(cfg):
    mant, exp = scale_decode(torch.arange(256), cfg.scale, any_code=True)
    assert [(int(a), int(b)) for a, b in zip(mant, exp)] == [doc_decode(c, cfg) for c in range(256)]


@pytest.mark.parametrize("cfg", SCALE_CONFIGS, ids=lambda c: f"{c.scale_format}{c.e8m0_min_exp}")
def test_gateware_decodes_every_code_like_the_golden_model(cfg):
    fmt = cfg.scale
    m = Module()
    code = Signal(8)
    mant, exp_off = hw_scale.decode_scale(m, code, fmt, "s")
    sim = Simulator(m)
    got = []

    async def bench(ctx):
        for c in range(256):
            ctx.set(code, c)
            got.append((ctx.get(mant), ctx.get(exp_off) + fmt.exp_min))

    sim.add_testbench(bench)
    sim.run()
    gm, ge = scale_decode(torch.arange(256), fmt, any_code=True)
    assert got == list(zip(gm.tolist(), ge.tolist()))


def test_the_software_still_rejects_those_codes(default_cb):
    with pytest.raises(BCQError, match=exactly(
            "scale code 0x80 is not a valid E4M3 scale (allowed 0x00..0x7E: positive, finite)")):
        scale_decode(torch.tensor([3, 0x80]), default_cb.config.scale)
    fmt = BCQConfig(scale_format="e8m0").scale
    with pytest.raises(BCQError, match=exactly(
            "scale code 128 is outside the E8M0 window [111, 127] (exponents -16..0)")):
        scale_decode(torch.tensor([128]), fmt)


def _simulate(dut, pairs, codebooks=None, seed=0):
    """Beats of each (w, x) pair through ``dut`` with stalls; codebooks written first."""
    geo = dut.geometry
    beats = [words_to_int(b) for w, x in pairs for b in bcq_beats(w[None], x[None], dut.i.payload.shape(), geo)]

    async def setup(ctx):
        if codebooks is None:
            return
        await write_words(ctx, dut.cbw, pair_table_words(codebooks))
    return run_streams(dut, beats, len(pairs), random.Random(seed), 0.3, 0.3, setup=setup)


def _edge_scales(cfg):
    return [0x7F, 0xFF, 0x80, 0xB8, 0xFE] if cfg.scale_format == "e4m3" else [0, 255, 110, 128, 200]


@pytest.mark.parametrize("cfg,bpc", [(BCQConfig(), 1), (BCQConfig(scale_format="e8m0"), 1), (BCQConfig(), 2),
                                     (BCQConfig(block_len=4, n_codebooks=4), 1)],
                         ids=["default", "e8m0", "2bpc", "lb4-nc4"])
def test_unit_equals_golden_on_every_edge(cfg, bpc, seed):
    """Edge scale codes, short final arrays (a `last` inside an array) and vectors after them."""
    rng = np.random.default_rng(seed)
    cb = random_codebooks(cfg, torch.Generator().manual_seed(seed))
    dut = BCQDot(cfg, blocks_per_cycle=bpc, max_len=4 * cfg.array_len, cells="model")
    geo = dut.geometry
    S, la = geo.scalars_per_beat, cfg.array_len
    pairs = []
    for code in _edge_scales(cfg):
        w, x = random_operand(cb, rng, 1, 2 * la)[0], random_operand(cb, rng, 1, 2 * la)[0]
        w.scales[0], x.scales[-1] = code, code
        pairs.append((w, x))
    if geo.beats_per_array > 1:
        for n in (S, la - S, la + S, 3 * la + S):   # short final arrays, each followed by a whole one
            pairs.append((random_operand(cb, rng, 1, n)[0], random_operand(cb, rng, 1, n)[0]))
            pairs.append((random_operand(cb, rng, 1, la)[0], random_operand(cb, rng, 1, la)[0]))
    got = _simulate(dut, pairs, cb, seed)
    expected = [int(dot_fixed(w, x, dut.arith, any_code=True)) for w, x in pairs]
    assert got == expected


def test_short_final_array_is_the_vector_padded_with_zero_products(default_cb, seed):
    """The golden model's short array against an independent reading: pad the vector to a whole
    array with a zero codeword (codebook 0, index 2 of random_codebooks) and the same scales."""
    cfg = BCQConfig()
    cb = random_codebooks(cfg, torch.Generator().manual_seed(seed))
    assert int(cb.entries[0, 2]) == 0
    rng = np.random.default_rng(seed)
    for n in (8, 56, 72, 200):
        w, x = random_operand(cb, rng, 1, n)[0], random_operand(cb, rng, 1, n)[0]
        full = -(-n // cfg.array_len) * cfg.array_len

        def pad(q):
            return BCQTensor(cb, torch.cat([q.indices, torch.full((full - n,), 2, dtype=torch.uint8)]),
                             torch.cat([q.selectors, torch.zeros((full - n) // cfg.block_len, dtype=torch.uint8)]),
                             q.scales)
        assert int(dot_fixed(w, x, any_code=True)) == int(dot_fixed(pad(w), pad(x), any_code=True))
        assert int(dot_pairs(w[None], x[None], any_code=True)[0]) == int(dot_fixed(w, x, any_code=True))


def test_codebooks_are_zero_until_written_and_survive_reset(seed):
    cfg = BCQConfig()
    cb = random_codebooks(cfg, torch.Generator().manual_seed(seed))
    rng = np.random.default_rng(seed)
    pairs = [(random_operand(cb, rng, 1, 2 * cfg.array_len)[0], random_operand(cb, rng, 1, 2 * cfg.array_len)[0])
             for _ in range(3)]
    zeros = Codebooks(cfg, torch.zeros(cfg.n_codebooks, 16))
    unwritten = _simulate(BCQDot(cfg, max_len=256, cells="model"), pairs, None, seed)
    golden_zero = [int(dot_fixed(BCQTensor(zeros, w.indices, w.selectors, w.scales),
                                 BCQTensor(zeros, x.indices, x.selectors, x.scales), any_code=True)) for w, x in pairs]
    assert unwritten == golden_zero == [0, 0, 0]
    # Written, then the unit reset (rst high for two cycles): the tables keep their contents.
    dut = BCQDot(cfg, max_len=256, cells="model")
    m = Module()
    m.domains.sync = cd = ClockDomain()
    m.submodules.dut = dut
    beats = [words_to_int(b) for w, x in pairs for b in bcq_beats(w[None], x[None], dut.i.payload.shape(), dut.geometry)]
    got = []
    sim = Simulator(m)
    sim.add_clock(1e-8, domain="sync")

    table = pair_table_words(cb)

    async def producer(ctx):
        await write_words(ctx, dut.cbw, table)
        ctx.set(cd.rst, 1)
        await ctx.delay(2e-8)   # clock ticks raise DomainReset while rst is high: wait by time
        ctx.set(cd.rst, 0)
        await put_beats(ctx, dut.i, beats, random.Random(seed), 0.2)

    async def consumer(ctx):
        await ctx.delay((len(table) + 8) * 1e-8)   # past the writes and the reset
        got.extend(await get_payloads(ctx, dut.o, len(pairs), random.Random(seed + 1), 0.2))

    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    expected = [int(dot_fixed(w, x, dut.arith, any_code=True)) for w, x in pairs]
    assert got == expected and any(expected)


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_too_low_e8m0_window_is_refused_with_the_reason():
    with pytest.raises(ConfigError, match=exactly(
            "invalid config: e8m0_min_exp=-21; allowed: -20..0 at max_len=4096: the exact accumulator would need "
            "66 bits (shifts up to 42) and the golden model computes in 64-bit integers (or keep -21 with max_len "
            "at most 1984)")):
        BCQDot(BCQConfig(scale_format="e8m0", e8m0_min_exp=-21))
    with pytest.raises(ConfigError, match=exactly(
            "invalid config: e8m0_min_exp=-30; allowed: -23..0 at max_len=64: the exact accumulator would need "
            "78 bits (shifts up to 60) and the golden model computes in 64-bit integers (-30 does not fit even "
            "one block array)")):
        Arithmetic(BCQConfig(scale_format="e8m0", e8m0_min_exp=-30), max_len=64)
    # The limits stated are the real ones: both ends of each fit.
    assert Arithmetic(BCQConfig(scale_format="e8m0", e8m0_min_exp=-20), max_len=4096).acc_bits <= 64
    assert Arithmetic(BCQConfig(scale_format="e8m0", e8m0_min_exp=-21), max_len=1984).acc_bits <= 64
    with pytest.raises(ConfigError):
        Arithmetic(BCQConfig(scale_format="e8m0", e8m0_min_exp=-21), max_len=1984 + 64)


def test_without_saturation_the_unit_would_disagree(monkeypatch, seed):
    """The E8M0 test can fail: the decode as it was (offset wrapping modulo 2**exp_bits) differs
    from the golden model on out-of-window codes."""
    from amaranth import unsigned

    def wrapping(m, code, fmt, name):
        mant = Signal(hw_scale.mant_shape(fmt), name=f"{name}_mant")
        exp_off = Signal(unsigned(fmt.exp_bits), name=f"{name}_exp_off")
        m.d.comb += [mant.eq(1), exp_off.eq(code - (127 + fmt.exp_min))]
        return mant, exp_off

    import bcq.hw.bcq_dot as bcq_dot_module
    monkeypatch.setattr(bcq_dot_module, "decode_scale", wrapping)
    cfg = BCQConfig(scale_format="e8m0")
    cb = random_codebooks(cfg, torch.Generator().manual_seed(seed))
    rng = np.random.default_rng(seed)
    w, x = random_operand(cb, rng, 1, 64)[0], random_operand(cb, rng, 1, 64)[0]
    w.indices[:], w.selectors[:], w.scales[:] = 1, 0, 200   # entry_max, a code above the window
    x.indices[:], x.selectors[:], x.scales[:] = 1, 0, 127
    dut = BCQDot(cfg, max_len=256, cells="model")
    assert _simulate(dut, [(w, x)], cb, seed) != [int(dot_fixed(w, x, dut.arith, any_code=True))]


def _doc_table(title):
    text = DOC.read_text()
    section = text[text.index(title):]
    rows = re.findall(r"^\| `(\w+)` \| (\d+)(?:\.\.(\d+))? \| ([^|]+) \|", section, re.M)
    return {name: (int(lo or hi), int(hi)) for name, hi, lo, _ in rows[:7]}


def test_beat_layout_table_matches_the_layout():
    layout = bcq_beat_layout(BeatGeometry(BCQConfig()))
    fields = {name: (f.offset, f.offset + Shape.cast(f.shape).width - 1) for name, f in layout}
    assert _doc_table("### Beat layout (bit order)") == fields
    assert Shape.cast(layout).width == 87 and "87 bits for the default config" in DOC.read_text()
    act = activation_layout(BeatGeometry(BCQConfig()))
    offsets = {name: (f.offset, f.offset + Shape.cast(f.shape).width - 1) for name, f in act}
    assert offsets == {"idx": (0, 31), "sel": (32, 34), "scale": (35, 42), "last": (43, 43)}
    assert "`idx` 31..0, `sel` 34..32, `scale` 42..35, `last` 43" in DOC.read_text()
