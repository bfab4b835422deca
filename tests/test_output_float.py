"""BF16/FP32 output conversion: the golden function (bcq.sw.formats.output_float) against torch's
casts and hand-worked edge cases, and the converter gateware (bcq.hw.output_float) bit-exact
against the golden function in the Amaranth simulator."""
import random

import pytest
import torch
from amaranth.sim import Simulator

from bcq.hw.output_float import OutputFloat
from bcq.sim.amaranth_streams import get_payloads, put_beats
from bcq.sw.formats.errors import BCQError, ConfigError
from bcq.sw.formats.output_float import float_bits
from helpers import exactly

# (acc, exp, fmt, bits): worked by hand.
DIRECTED = [
    (0, 0, "bf16", 0x0000), (0, -300, "fp32", 0),
    (257, 0, "bf16", 0x4380),            # 257 = 256 + 1: a tie, to even (256)
    (259, 0, "bf16", 0x4382),            # 259: a tie, to even (260)
    (-3, -1, "bf16", 0xBFC0),            # -1.5
    (255, 120, "bf16", 0x7F7F),          # the largest finite BF16
    (511, 119, "bf16", 0x7F80),          # 255.5 * 2**120: a tie, to even = 2**128: Inf
    (-1, 200, "bf16", 0xFF80),           # -Inf
    (1, -133, "bf16", 0x0001),           # the smallest subnormal
    (3, -135, "bf16", 0x0001),           # 0.75 of it: rounds up
    (1, -134, "bf16", 0x0000),           # half of it: a tie, to even (0)
    (-1, -134, "bf16", 0x8000),          # the same, negative: -0
    (255, -133, "bf16", 0x00FF),         # 255 * 2**-133 = (1 + 127/128) * 2**-126: a normal, exact
    ((1 << 24) + 1, 0, "fp32", 0x4B800000),   # 2**24 + 1: a tie, to even
    (1, -149, "fp32", 0x00000001),
    (-(1 << 63), -10, "fp32", 0xDA000000),    # -2**53
]


@pytest.mark.parametrize("acc,exp,fmt,bits", DIRECTED)
def test_directed(acc, exp, fmt, bits):
    assert float_bits(acc, exp, fmt) == bits


def test_bf16_matches_torch(seed):
    """acc of at most 24 significant bits is exact in FP32, whose cast to BF16 rounds once."""
    rng = random.Random(seed)
    for _ in range(4000):
        acc = rng.randrange(-(1 << 24), 1 << 24) >> rng.randrange(24)
        exp = rng.randint(-149 - 0, 100)
        v = torch.tensor(acc * 2.0 ** exp, dtype=torch.float64).to(torch.float32)
        want = int(v.to(torch.bfloat16).view(torch.int16)) & 0xFFFF
        if acc == 0:
            want = 0
        assert float_bits(acc, exp, "bf16") == want, (acc, exp)


def test_fp32_matches_torch(seed):
    """acc of at most 53 bits is exact in float64, whose cast to FP32 rounds once."""
    rng = random.Random(seed)
    for _ in range(4000):
        acc = rng.randrange(-(1 << 53), 1 << 53) >> rng.randrange(53)
        exp = rng.randint(-200, 120)
        want = int(torch.tensor(acc * 2.0 ** exp, dtype=torch.float64).to(torch.float32).view(torch.int32)) & 0xFFFFFFFF
        assert float_bits(acc, exp, "fp32") == (0 if acc == 0 else want), (acc, exp)


def test_golden_errors():
    with pytest.raises(BCQError, match=exactly("output format 'fp8' is not one of bf16, fp32")):
        float_bits(1, 0, "fp8")
    with pytest.raises(BCQError, match=exactly("float_bits takes integers acc and exp, not 1.5 and 0")):
        float_bits(1.5, 0)


@pytest.mark.parametrize("fmt", ["bf16", "fp32"])
def test_converter_matches_golden(fmt, seed):
    rng = random.Random(seed)
    acc_bits = 40
    dut = OutputFloat(acc_bits, fmt=fmt)
    cases = []
    for exp in (-180, -140, -126 - 39, -60, -20, 0, 30, 95, 127, 200):
        for _ in range(40):
            acc = rng.randrange(-(1 << (acc_bits - 1)), 1 << (acc_bits - 1)) >> rng.randrange(acc_bits)
            cases.append((acc, exp))
        cases += [(0, exp), (-(1 << (acc_bits - 1)), exp), ((1 << (acc_bits - 1)) - 1, exp), (1, exp), (-1, exp)]
    cases += [(a, e) for a, e, f, _ in DIRECTED if f == fmt and -(1 << 39) <= a < (1 << 39) and -512 <= e < 512]
    got = []
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    by_exp = {}
    for a, e in cases:
        by_exp.setdefault(e, []).append(a)

    # One exponent group at a time, drained before the exponent changes (it is held in flight).
    async def producer(ctx):
        for e, accs in by_exp.items():
            ctx.set(dut.exp, e)
            await put_beats(ctx, dut.i, [a & ((1 << acc_bits) - 1) for a in accs], rng, 0.2)
            for _ in range(OutputFloat.latency + 2):
                await ctx.tick()

    async def consumer(ctx):
        got.extend(v for v, in await get_payloads(ctx, dut.o, len(cases), rng, 0.3, dut.o.payload))

    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    want = [float_bits(a, e, fmt) for e, accs in by_exp.items() for a in accs]
    for (a, e), g, w in zip([(a, e) for e, accs in by_exp.items() for a in accs], got, want):
        assert g == w, f"acc={a} exp={e}: got {g:#x}, golden {w:#x}"


def test_converter_errors():
    with pytest.raises(ConfigError, match=exactly("invalid config: fmt='fp8'; allowed: ('bf16', 'fp32')")):
        OutputFloat(40, fmt="fp8")
