"""Stream drivers for Amaranth-simulator testbenches (the fast tests): put packed beats on an
``amaranth.lib.stream`` input with random gaps, and take payloads off an output with random
back-pressure. No arithmetic here."""

from amaranth import Value
from amaranth.sim import Simulator

__all__ = ["put_beats", "get_payloads", "run_streams", "write_words"]


async def put_beats(ctx, stream, beats, rng, stall):
    """Send each packed beat (an int), idling a random number of cycles before each."""
    for beat in beats:
        while rng.random() < stall:
            await ctx.tick()
        ctx.set(stream.valid, 1)
        ctx.set(Value.cast(stream.payload), beat)
        await ctx.tick().until(stream.ready)
        ctx.set(stream.valid, 0)


async def get_payloads(ctx, stream, count, rng, stall, *fields):
    """Take ``count`` transfers, holding ``ready`` low a random number of cycles before each;
    returns the payloads (or tuples of ``fields``, values of the payload to sample)."""
    out = []
    for _ in range(count):
        while rng.random() < stall:
            await ctx.tick()
        ctx.set(stream.ready, 1)
        sampled = await ctx.tick().sample(*(fields or (stream.payload,))).until(stream.valid)
        out.append(sampled if fields else sampled[0])
        ctx.set(stream.ready, 0)
    return out


async def write_words(ctx, port, words):
    """Write ``words`` to addresses 0, 1, ... of the memory write port ``port`` (one a cycle)."""
    for addr, value in enumerate(words):
        ctx.set(port.en, 1)
        ctx.set(port.addr, addr)
        ctx.set(port.data, value)
        await ctx.tick()
    ctx.set(port.en, 0)


def run_streams(dut, beats, n_results, rng, stall_in, stall_out, setup=None):
    """Simulate ``dut`` (a unit with stream ``i`` and ``o``): ``setup(ctx)`` first if given
    (e.g. codebook writes), then every packed beat in, ``n_results`` payloads out, each side
    with its own random stalls. Returns the payloads."""
    got = []
    sim = Simulator(dut)
    sim.add_clock(1e-8)

    async def producer(ctx):
        if setup is not None:
            await setup(ctx)
        await put_beats(ctx, dut.i, beats, rng, stall_in)

    async def consumer(ctx):
        got.extend(await get_payloads(ctx, dut.o, n_results, rng, stall_out))

    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    return got
