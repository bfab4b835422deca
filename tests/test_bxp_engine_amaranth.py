"""Fast Amaranth-simulator checks of the Ax-BxP matrix-vector engine (bcq.hw.bxp_engine)
against the golden model (bcq.sw.formats.axbxp.matmul), several layers in different modes
through one engine."""
import random

from amaranth.sim import Simulator
from helpers import exactly
import pytest
import torch

from bcq.hw.bxp_engine import BxPEngine
from bcq.sim.amaranth_streams import get_payloads, put_beats
from bcq.sw.contract.beats import bxp_activation_beats
from bcq.sw.contract.image_layout import BxPLayout
from bcq.sw.formats.axbxp import DEFAULT_BXP, BxPConfig, Mode, matmul, quantize_symmetric
from bcq.sw.formats.errors import ConfigError
from bcq.sw.host.image import read_int8_image, write_int8_image


def run_layers(dut, layers, seed, stall=0.3, ports=True):
    """``layers``: [(mode name, weight words, rows, [activation beats per vector])], run one
    after another (weights written and mode set while the engine is idle). Returns, per layer,
    the rows of results per vector."""
    rng = random.Random(seed)
    results = [[[] for _ in vecs] for _, _, _, vecs in layers]
    finished = []
    sim = Simulator(dut)
    sim.add_clock(1e-8)

    async def producer(ctx):
        for li, (mode, words, rows, vecs) in enumerate(layers):
            while len(finished) < li:
                await ctx.tick()
            ctx.set(dut.rows, rows)
            ctx.set(dut.mode, dut.layout.config.mode_index(mode))
            if ports:
                for a, v in enumerate(words):
                    ctx.set(dut.wmem.en, 1)
                    ctx.set(dut.wmem.addr, a)
                    ctx.set(dut.wmem.data, v)
                    await ctx.tick()
                ctx.set(dut.wmem.en, 0)
            await put_beats(ctx, dut.x, [b for beats in vecs for b in beats], rng, stall)

    async def consumer(ctx):
        for li, (_, _, rows, vecs) in enumerate(layers):
            for v in range(len(vecs)):
                for value, row in await get_payloads(ctx, dut.o, rows, rng, stall, dut.o.payload.value,
                                                     dut.o.payload.row):
                    assert row == len(results[li][v])
                    results[li][v].append(value)
            finished.append(li)

    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    return results


@pytest.mark.parametrize("R,rows,cols", [(4, 10, 37), (3, 3, 16), (1, 2, 5)])
def test_engine_every_mode_matches_golden(tmp_path, seed, R, rows, cols):
    """One engine, one layer per mode (image written and read back per mode), mode switched
    at run time between layers; random weights and activations, stalls on both streams."""
    cfg = DEFAULT_BXP
    layout = BxPLayout(cfg, R)
    g = torch.Generator().manual_seed(seed)
    dut = BxPEngine(layout, max_rows=12, max_cols=40)
    layers, expected = [], []
    for mode in cfg.modes:
        write_int8_image(tmp_path / mode.name, {"fc": torch.randn(rows, cols, generator=g)}, layout, mode.name)
        layer = read_int8_image(tmp_path / mode.name, layout).layer()
        xs, _ = quantize_symmetric(torch.randn(2, cols, generator=g) * 3, mode.precision)
        xs[0, 0] = -(1 << (mode.precision - 1))               # the extreme the weights never hold
        layers.append((mode.name, layer.weight_words, rows,
                       [bxp_activation_beats(cfg, x.tolist(), layout.lanes(mode)) for x in xs]))
        expected.append(matmul(xs, layer.q, cfg, mode).tolist())
    got = run_layers(dut, layers, seed)
    for mode, e, r in zip(cfg.modes, expected, got):
        assert r == e, f"mode {mode.name}: engine {r}, golden {e}; seed {seed}"


def test_engine_baked_image_other_config(tmp_path, seed):
    """A baked (ROM) image with a non-default MAC config (N=6, k=2)."""
    cfg = BxPConfig(n_bits=6, block_bits=2, modes=(Mode("e6", "exact", 6), Mode("d1", "dynamic", 6, 1)))
    layout = BxPLayout(cfg, 2)
    g = torch.Generator().manual_seed(seed)
    write_int8_image(tmp_path, {"fc": torch.randn(5, 11, generator=g)}, layout, "d1")
    layer = read_int8_image(tmp_path, layout).layer()
    dut = BxPEngine(layout, max_rows=5, max_cols=11, image=layer, rom=True)
    xs = torch.randint(-32, 32, (3, 11), generator=g)
    got = run_layers(dut, [("d1", [], 5, [bxp_activation_beats(cfg, x.tolist(), layout.lanes("d1")) for x in xs])],
                     seed, ports=False)
    assert got[0] == matmul(xs, layer.q, cfg, "d1").tolist()


def test_engine_config_errors():
    layout = BxPLayout(DEFAULT_BXP, 4)
    with pytest.raises(ConfigError, match=exactly("invalid config: rom=True; allowed: only with an image")):
        BxPEngine(layout, rom=True)
    with pytest.raises(ConfigError, match=exactly("invalid config: max_rows=0; allowed: a positive integer")):
        BxPEngine(layout, max_rows=0)
    with pytest.raises(ConfigError, match=exactly("invalid config: rows=65; allowed: 1..64")):
        BxPLayout(DEFAULT_BXP, 65)
