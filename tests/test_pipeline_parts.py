"""The stream plumbing that keeps wide enables off long handshake paths: the skid buffer
(``bcq.hw.pipeline.skid_buffer``) and the engines' result drain (``bcq.hw.drain.ResultDrain``)."""
import random

from amaranth import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator
import pytest

from bcq.hw.drain import ResultDrain
from bcq.hw.pipeline import skid_buffer


class _Skid(wiring.Component):
    i: In(stream.Signature(16))
    o: Out(stream.Signature(16))

    def elaborate(self, platform):
        m = Module()
        skid_buffer(m, self.i, self.o, "t")
        return m


@pytest.mark.parametrize("stall_in,stall_out", [(0.0, 0.0), (0.5, 0.0), (0.0, 0.7), (0.4, 0.4)])
def test_skid_buffer_passes_every_item_in_order(seed, stall_in, stall_out):
    """Random stalls on both sides: every item comes out once, in order; with neither side
    stalling, one item per cycle after one edge of latency."""
    rng = random.Random(seed)
    items = [rng.randrange(1 << 16) for _ in range(300)] + [0, 0xFFFF]
    dut = _Skid()
    got, cycles = [], []
    sim = Simulator(dut)
    sim.add_clock(1e-8)

    async def producer(ctx):
        for v in items:
            while rng.random() < stall_in:
                await ctx.tick()
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.i.payload, v)
            await ctx.tick().until(dut.i.ready)
            ctx.set(dut.i.valid, 0)

    async def consumer(ctx):
        n = 0
        while len(got) < len(items):
            ready = rng.random() >= stall_out
            ctx.set(dut.o.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            n += 1
            if valid and ready:
                got.append(payload)
        cycles.append(n)

    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    assert got == items
    if stall_in == stall_out == 0:
        assert cycles == [len(items) + 1]


def test_skid_buffer_ready_does_not_follow_o_ready_combinationally():
    """``i.ready`` is a register: changing ``o.ready`` within a cycle never changes it (the whole
    point: the logic behind ``i.ready`` must not wait on the logic behind ``o.ready``)."""
    dut = _Skid()
    rng = random.Random(1)
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    seen = set()

    async def tb(ctx):
        for _ in range(400):
            ctx.set(dut.i.valid, rng.random() < 0.7)
            ctx.set(dut.i.payload, rng.randrange(1 << 16))
            ctx.set(dut.o.ready, 0)
            before = ctx.get(dut.i.ready)
            ctx.set(dut.o.ready, 1)
            assert ctx.get(dut.i.ready) == before
            seen.add(before)
            ctx.set(dut.o.ready, rng.random() < 0.4)
            await ctx.tick()
    sim.add_testbench(tb)
    sim.run()
    assert seen == {0, 1}      # the buffer did fill and drain


@pytest.mark.parametrize("lanes,rows", [(4, 10), (4, 8), (1, 3), (3, 1)])
def test_drain_rows_in_order_and_done_after_the_last_row_left(seed, lanes, rows):
    """Groups of ``lanes`` results in, one row per cycle out under random back-pressure, padding
    rows (past ``rows``) dropped; ``done`` pulses once per matrix, never before its last row has
    been taken from ``o``; ``release`` once per group."""
    rng = random.Random(seed)
    acc_bits = 20
    dut = ResultDrain(lanes, acc_bits, 16)
    n_groups = -(-rows // lanes)
    matrices = [[[rng.randint(-(1 << 19), (1 << 19) - 1) for _ in range(lanes)] for _ in range(n_groups)]
                for _ in range(3)]
    want = [[v for g in mat for v in g][:rows] for mat in matrices]
    got, dones, releases = [], [], [0]
    sim = Simulator(dut)
    sim.add_clock(1e-8)

    async def producer(ctx):
        ctx.set(dut.rows, rows)
        for mat in matrices:
            for g in mat:
                while rng.random() < 0.5:
                    await ctx.tick()
                ctx.set(dut.valid, 1)
                for r, v in enumerate(g):
                    ctx.set(dut.values[r], v)
                await ctx.tick().until(dut.ready)
                ctx.set(dut.valid, 0)

    async def consumer(ctx):
        taken = []
        while len(dones) < len(matrices):
            ready = rng.random() < 0.5
            ctx.set(dut.o.ready, ready)
            _, _, valid, value, row, done, release = await ctx.tick().sample(
                dut.o.valid, dut.o.payload.value, dut.o.payload.row, dut.done, dut.release)
            if valid and ready:
                taken.append((row, value))
            releases[0] += release
            if done:
                dones.append(len(taken))
                got.append(taken)
                taken = []
            assert len(taken) <= rows, "rows of the next matrix before this one's done"
        for _ in range(30):      # nothing more comes
            ctx.set(dut.o.ready, 1)
            _, _, valid, done, release = await ctx.tick().sample(dut.o.valid, dut.done, dut.release)
            assert not valid and not done
            releases[0] += release      # padding rows after the last one still step out

    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    assert dones == [rows] * len(matrices)
    assert got == [list(enumerate(w)) for w in want]
    assert releases == [n_groups * len(matrices)]

