"""The engine's row datapath (``hw/engine_rows.py``): the two-products-per-multiplier packing,
checked for every operand triple, and the row pair and scaling stages in the Amaranth simulator
against plain Python sums."""
import random

from amaranth.sim import Simulator
import pytest
import torch

from bcq.hw.engine_rows import RowPair, can_pack, tree_levels
from bcq.sw.formats.config import BCQConfig


@pytest.mark.parametrize("e", [4, 5, 6])
def test_packing_is_exact_for_every_operand_triple(e):
    """P = (w1 * 2**(2e) + w0 + 2**(e-1)) * x for all signed e-bit w0, w1, x: the low 2e bits
    (signed) minus 2**(e-1) * x give w0 * x, the next 2e bits (signed) plus the low field's
    sign bit give w1 * x. Python integers model the multiplier's bits; the expectations are
    the plain products."""
    v = torch.arange(-(1 << (e - 1)), 1 << (e - 1), dtype=torch.int64)
    w0, w1, x = torch.meshgrid(v, v, v, indexing="ij")
    p = (w1 * (1 << 2 * e) + w0 + (1 << (e - 1))) * x
    mask, half = (1 << 2 * e) - 1, 1 << (2 * e - 1)
    signed = lambda f: torch.where(f >= half, f - 2 * half, f)  # noqa: E731
    low = signed(p & mask)
    up = signed((p >> 2 * e) & mask) + ((p >> (2 * e - 1)) & 1)
    assert torch.equal(low - (1 << (e - 1)) * x, w0 * x)
    assert torch.equal(up, w1 * x)
    assert 3 * e <= 18 and can_pack(BCQConfig(entry_bits=e))


def _edge_words(rng, lanes, e):
    lo, hi = -(1 << (e - 1)), (1 << (e - 1)) - 1
    pick = rng.random()
    if pick < 0.15:
        return [lo] * lanes            # every product at its largest
    if pick < 0.25:
        return [hi] * lanes
    return [rng.choice((lo, hi, 0, -1, 1, rng.randint(lo, hi))) for _ in range(lanes)]


@pytest.mark.parametrize("entry_bits,lanes,rows,fabric", [(6, 16, 2, False), (6, 8, 1, False), (8, 8, 2, False),
                                                          (4, 16, 2, False), (6, 16, 2, True), (8, 8, 1, True),
                                                          (5, 8, 2, True)])
def test_row_pair_array_sums(seed, entry_bits, lanes, rows, fabric):
    """Random beats (extremes over-represented) in arrays of 1..5 beats, with idle cycles
    (``valid`` low, random words) anywhere, also inside an array: ``psum`` of each row,
    ``latency`` edges after an array's last beat, is the plain sum of that array's products,
    with multipliers and with the fabric's bit planes (same latency)."""
    cfg = BCQConfig(entry_bits=entry_bits)
    dut = RowPair(cfg, lanes, rows, fabric=fabric)
    rng = random.Random(seed)
    beats, first = [], []
    for _ in range(12):
        n = rng.randint(1, 5)
        for k in range(n):
            beats.append((_edge_words(rng, lanes, entry_bits), [_edge_words(rng, lanes, entry_bits) for _ in range(rows)]))
            first.append(k == 0)
    ends = [i for i in range(len(beats)) if i + 1 == len(beats) or first[i + 1]]
    want, run = {}, [0] * rows
    for i, (x, ws) in enumerate(beats):
        run = [(0 if first[i] else run[r]) + sum(a * b for a, b in zip(ws[r], x)) for r in range(rows)]
        if i in ends:
            want[i] = run
    got = {}
    # The cycle of each beat: idle cycles (random words, valid low) between beats.
    slots, t = [], 0
    for _ in beats:
        t += rng.choice((0, 0, 0, 1, 3))
        slots.append(t)
        t += 1
    at = {c: i for i, c in enumerate(slots)}

    async def tb(ctx):
        xsum = []
        for t in range(slots[-1] + dut.latency + 1):
            i = at.get(t)
            x, ws = beats[i] if i is not None else (_edge_words(rng, lanes, entry_bits),
                                                     [_edge_words(rng, lanes, entry_bits) for _ in range(rows)])
            ctx.set(dut.x, x)
            for r in range(rows):
                ctx.set(dut.w[r], ws[r])
            ctx.set(dut.valid, i is not None)
            ctx.set(dut.first, first[i] if i is not None else rng.random() < 0.5)
            xsum.append(sum(x))
            # x_sum is the engine's (ActivationDecode's) job: the beat's sum, xsum_lag edges late.
            lagged = t - dut.xsum_lag
            ctx.set(dut.x_sum, xsum[lagged] if 0 <= lagged < len(xsum) else 0)
            done = at.get(t - dut.latency)
            if done in want:
                got[done] = [ctx.get(dut.psum[r]) for r in range(rows)]
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    assert got == want
    assert dut.packed == (rows == 2 and entry_bits <= 6 and not fabric)
    assert dut.latency == 4 + tree_levels(lanes)
