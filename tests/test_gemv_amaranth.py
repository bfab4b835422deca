"""Fast Amaranth-simulator checks of the matrix-vector engine against the golden model."""
import random

from amaranth import signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator
import pytest
import torch

from bcq.hw.gemv import GEMV
from bcq.sim.amaranth_streams import get_payloads, put_beats, write_words
from bcq.sim.vectors import random_codebooks
from bcq.sw.contract.beats import activation_beats
from bcq.sw.contract.image_layout import EngineLayout
from bcq.sw.formats.codebooks import default_codebooks
from bcq.sw.formats.config import BCQConfig
from bcq.sw.formats.errors import ConfigError
from bcq.sw.formats.golden import Arithmetic, dot_fixed
from bcq.sw.formats.output_float import OUTPUT_FORMATS, float_bits
from bcq.sw.formats.lobcq import encode
from bcq.sw.host.image import read_image, write_image
from helpers import exactly


def run_engine(dut, rows, vectors, seed, write=None, stall=0.3, exp=None):
    """Drive activation vectors, return the rows of results per vector; ``write`` optionally
    loads (codebook, weight words, scale words) through the write ports first; ``exp`` sets the
    float output's exponent input (an engine built with ``output``)."""
    rng = random.Random(seed)
    results = [[] for _ in vectors]
    sim = Simulator(dut)
    sim.add_clock(1e-8)

    async def producer(ctx):
        ctx.set(dut.rows, rows)
        if exp is not None:
            ctx.set(dut.exp, exp)
        if write is not None:
            cb, ww, sw = write
            for port, words in ((dut.cbw, cb), (dut.wmem, ww), (dut.smem, sw)):
                await write_words(ctx, port, words)
        await put_beats(ctx, dut.x, [b for beats in vectors for b in beats], rng, stall)

    async def consumer(ctx):
        for v in range(len(vectors)):
            for value, row in await get_payloads(ctx, dut.o, rows, rng, stall, dut.o.payload.value, dut.o.payload.row):
                assert row == len(results[v])
                results[v].append(value)

    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    return results


@pytest.mark.parametrize("lanes,bpc,rows,mult_rows", [(4, 1, 10, None), (3, 1, 7, None), (2, 2, 4, None),
                                                      (4, 1, 3, None), (4, 1, 10, 2), (4, 2, 7, 0), (20, 1, 20, 8)])
def test_engine_matches_golden(tmp_path, seed, lanes, bpc, rows, mult_rows):
    """Every row bit-exact with the golden model; rows on multipliers, on fabric bit planes, or a
    mix of both (``multiplier_rows``); 20 rows are 5 row groups on 4 copies of the activation."""
    cb = default_codebooks()
    layout = EngineLayout(cb.config, lanes, bpc)
    g = torch.Generator().manual_seed(seed)
    cols = 128
    write_image(tmp_path, {"fc": torch.randn(rows, cols, generator=g)}, cb, layout)
    img = read_image(tmp_path, layout)
    layer = img.layers["fc"]
    xs = [encode(torch.randn(cols, generator=g) * 3, cb) for _ in range(3)]
    dut = GEMV(layout, max_rows=max(16, rows), max_cols=256, codebooks=cb, image=layer, multiplier_rows=mult_rows)
    got = run_engine(dut, rows, [activation_beats(x, layout.geometry) for x in xs], seed)
    for x, res in zip(xs, got):
        assert res == dot_fixed(layer.weights, x).tolist()


@pytest.mark.parametrize("fmt,lanes,bpc,mult_rows", [("bf16", 4, 1, 2), ("fp32", 2, 2, None)])
def test_engine_float_output_matches_golden(tmp_path, seed, fmt, lanes, bpc, mult_rows):
    """``output="bf16"``/``"fp32"``: every row's float bits equal ``float_bits`` of the golden
    accumulator, at the golden ``out_exp`` and at exponents far enough off to overflow to Inf and
    to round into subnormals and zero."""
    cb = default_codebooks()
    layout = EngineLayout(cb.config, lanes, bpc)
    g = torch.Generator().manual_seed(seed)
    rows, cols = 7, 128
    write_image(tmp_path, {"fc": torch.randn(rows, cols, generator=g)}, cb, layout)
    layer = read_image(tmp_path, layout).layers["fc"]
    xs = [encode(torch.randn(cols, generator=g) * 3, cb) for _ in range(2)]
    out_exp = Arithmetic(cb.config, 256).out_exp
    dut = GEMV(layout, max_rows=16, max_cols=256, codebooks=cb, image=layer, multiplier_rows=mult_rows, output=fmt)
    f = OUTPUT_FORMATS[fmt]
    for exp in (out_exp, out_exp + random.Random(seed).randint(-40, 40), f.emax - 8, f.emin - f.man_bits - 12):
        got = run_engine(dut, rows, [activation_beats(x, layout.geometry) for x in xs], seed, exp=exp)
        for x, res in zip(xs, got):
            acc = dot_fixed(layer.weights, x)
            want = [float_bits(int(a), exp, fmt) for a in acc.tolist()]
            assert res == want, f"exp={exp}: accumulators {acc.tolist()}"


def test_engine_group_rows_is_checked():
    layout = EngineLayout(BCQConfig(), 4, 1)
    for bad in (0, -4, 2.0, True, None):
        with pytest.raises(ConfigError, match=exactly(f"invalid config: group_rows={bad!r}; allowed: a positive number of rows")):
            GEMV(layout, group_rows=bad)


def test_engine_output_format_is_checked():
    with pytest.raises(ConfigError, match=exactly("invalid config: output='fp16'; allowed: None, 'bf16', 'fp32'")):
        GEMV(EngineLayout(BCQConfig(), 2, 1), output="fp16")


def test_engine_written_at_run_time(tmp_path, seed):
    """Empty memories at elaboration; codebooks, weights and scales arrive through the ports."""
    cfg = BCQConfig(block_len=4, n_codebooks=4)
    cb = random_codebooks(cfg, torch.Generator().manual_seed(seed))
    layout = EngineLayout(cfg, 2, 1)
    g = torch.Generator().manual_seed(seed)
    write_image(tmp_path, {"fc": torch.randn(5, 128, generator=g)}, cb, layout)
    layer = read_image(tmp_path, layout).layers["fc"]
    x = encode(torch.randn(128, generator=g), cb)
    dut = GEMV(layout, max_rows=8, max_cols=128)
    mask = (1 << cfg.entry_bits) - 1
    got = run_engine(dut, 5, [activation_beats(x, layout.geometry)], seed,
                     write=([v & mask for v in cb.entries.flatten().tolist()], layer.weight_words, layer.scale_words))
    assert got[0] == dot_fixed(layer.weights, x).tolist()


@pytest.mark.parametrize("entry_bits,array_len,cols", [(6, 16, 16), (8, 16, 16), (6, 64, 128)])
def test_engine_back_to_back_groups_under_back_pressure(tmp_path, seed, entry_bits, array_len, cols):
    """Short rows against a consumer that stalls most cycles, so the issuer waits for result
    banks: with one beat per row (array_len = B * block_len) every beat ends a row group; with
    four-beat arrays the issuer pauses inside an array (the rows must hold their sums). Entry
    width 8 takes the unpacked (one product per multiplier) row path, 6 the packed one."""
    cfg = BCQConfig(block_len=8, array_len=array_len, entry_bits=entry_bits)
    cb = random_codebooks(cfg, torch.Generator().manual_seed(seed))
    layout = EngineLayout(cfg, 3, 2)
    g = torch.Generator().manual_seed(seed)
    rows = 11
    write_image(tmp_path, {"fc": torch.randn(rows, cols, generator=g)}, cb, layout)
    layer = read_image(tmp_path, layout).layers["fc"]
    xs = [encode(torch.randn(cols, generator=g) * 3, cb) for _ in range(3)]
    dut = GEMV(layout, max_rows=16, max_cols=128, codebooks=cb, image=layer)
    got = run_engine(dut, rows, [activation_beats(x, layout.geometry) for x in xs], seed, stall=0.8)
    for x, res in zip(xs, got):
        assert res == dot_fixed(layer.weights, x).tolist()


class _CopyTreeTop(wiring.Component):
    """``copy_tree`` of an 8-bit input to ``copies`` outputs."""

    def __init__(self, copies, signed_=False):
        shape = signed(8) if signed_ else unsigned(8)
        self.copies = copies
        super().__init__({"i": In(shape), **{f"o{k}": Out(shape) for k in range(copies)}})
        self.o = [getattr(self, f"o{k}") for k in range(copies)]

    def elaborate(self, platform):
        from amaranth import Module
        from bcq.hw.pipeline import copy_tree
        m = Module()
        m.d.comb += [o.eq(c) for o, c in zip(self.o, copy_tree(m, self.i, "x", self.copies))]
        return m


@pytest.mark.parametrize("signed_", [False, True])
def test_copy_tree_copies_are_the_value_two_edges_late(signed_):
    """Every copy reads 0 out of reset, then the input of two edges before (random values,
    signed and unsigned: the complemented copies are inverted back)."""
    dut = _CopyTreeTop(4, signed_)
    rng = random.Random(3)
    lo, hi = (-128, 127) if signed_ else (0, 255)
    values = [rng.randint(lo, hi) for _ in range(200)] + [lo, hi, 0, -1 if signed_ else 1]
    sim = Simulator(dut)
    sim.add_clock(1e-8)

    async def tb(ctx):
        assert [ctx.get(o) for o in dut.o] == [0] * 4
        for n, v in enumerate(values + [0, 0]):
            ctx.set(dut.i, v if n < len(values) else 0)
            await ctx.tick()
            if n >= 1:
                want = values[n - 1] if n - 1 < len(values) else 0
                assert [ctx.get(o) for o in dut.o] == [want] * 4, f"edge {n}"
            else:
                assert [ctx.get(o) for o in dut.o] == [0] * 4
    sim.add_testbench(tb)
    sim.run()


def test_copy_tree_survives_synthesis_as_separate_flip_flops():
    """Yosys merges registers with equal inputs (opt_merge): 4 plain copies of a register
    would be one flip-flop per bit. The tree keeps 2 + 4 per bit after synth_ecp5 (2 copies:
    both come from the first level's plain register, 1 + 2 per bit)."""
    from bcq.sim.synth import synth_ecp5
    assert synth_ecp5(_CopyTreeTop(4), "copy_tree")["FF"] == 6 * 8
    assert synth_ecp5(_CopyTreeTop(2), "copy_tree")["FF"] == 3 * 8
    with pytest.raises(ValueError, match="copy_tree makes 1 to 4 copies, not 5"):
        _CopyTreeTop(5).elaborate(None)
