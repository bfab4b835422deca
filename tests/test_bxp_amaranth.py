"""Fast Amaranth-simulator checks of the Ax-BxP MAC against the golden model (bcq.sw.formats.axbxp)."""
import random

from amaranth import Value
from amaranth.sim import Simulator
import pytest

from bcq.hw.bxp_mac import BxPMac
from bcq.hw.int_mac import IntMac
from bcq.sim.amaranth_streams import run_streams
from bcq.sim.vectors import bxp_random_vectors
from bcq.sw.contract.beats import mac_beats
from bcq.sw.formats.axbxp import DEFAULT_BXP, BxPConfig, Mode


def simulate(dut, vectors, seed, stall=0.3):
    words = [w for beats, _ in vectors for w in mac_beats(dut.config, beats)]
    return run_streams(dut, words, len(vectors), random.Random(seed), stall, stall)


@pytest.mark.parametrize("cfg", [DEFAULT_BXP, BxPConfig(n_bits=8, block_bits=4),
                                 BxPConfig(n_bits=6, block_bits=2, modes=(Mode("e6", "exact", 6), Mode("d1", "dynamic", 6, 1)))],
                         ids=["N8k2", "N8k4", "N6k2-custom"])
def test_random_vectors_with_mode_switches(cfg, seed):
    rng = random.Random(seed)
    vectors = bxp_random_vectors(cfg, rng, 60)
    got = simulate(BxPMac(cfg, max_len=16), vectors, seed)
    for k, ((beats, expected), value) in enumerate(zip(vectors, got)):
        assert value == expected, f"vector {k}: {beats} -> {value}, golden {expected}; seed {seed}"
    assert len(got) == len(vectors)


def test_latency_and_throughput_properties():
    dut = BxPMac()
    assert [dut.products_per_cycle(m) for m in DEFAULT_BXP.modes] == [1, 4, 16, 2, 5, 16, 1, 4, 16]
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    seen = {}

    async def tb(ctx):
        ctx.set(dut.o.ready, 1)
        ctx.set(dut.i.valid, 1)
        ctx.set(Value.cast(dut.i.payload), mac_beats(DEFAULT_BXP, [([-128], [-128], "exact8", True, True)])[0])
        await ctx.tick()
        ctx.set(dut.i.valid, 0)
        cycles = 1
        while not ctx.get(dut.o.valid):
            await ctx.tick()
            cycles += 1
        seen.update(latency=cycles, value=ctx.get(dut.o.payload))

    sim.add_testbench(tb)
    sim.run()
    assert seen == {"latency": BxPMac.latency, "value": 16384}


def test_int_mac_baseline(seed):
    """The plain INT8 MAC array (the cost baseline) sums x*w exactly."""
    rng = random.Random(seed)
    dut = IntMac(8, lanes=4, max_len=8)
    vectors = [[([rng.randint(-128, 127) for _ in range(4)], [rng.randint(-128, 127) for _ in range(4)])
                for _ in range(rng.randint(1, 5))] for _ in range(30)]
    vectors.append([([-128] * 4, [-128] * 4)] * 8)
    got = []
    sim = Simulator(dut)
    sim.add_clock(1e-8)

    async def tb(ctx):
        ctx.set(dut.o.ready, 1)
        for vec in vectors:
            for k, (xs, ws) in enumerate(vec):
                ctx.set(dut.i.valid, 1)
                ctx.set(dut.i.payload.x, xs)
                ctx.set(dut.i.payload.w, ws)
                ctx.set(dut.i.payload.last, k == len(vec) - 1)
                await ctx.tick()
                if ctx.get(dut.o.valid):
                    got.append(ctx.get(dut.o.payload))
        ctx.set(dut.i.valid, 0)
        for _ in range(8):
            await ctx.tick()
            if ctx.get(dut.o.valid):
                got.append(ctx.get(dut.o.payload))

    sim.add_testbench(tb)
    sim.run()
    assert got == [sum(x * w for xs, ws in vec for x, w in zip(xs, ws)) for vec in vectors]
