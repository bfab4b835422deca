"""Stream drivers shared by the cocotb testbenches (no arithmetic here)."""
import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge


async def reset(dut, *, sinks=("i",), sources=("o",), write_ports=("cbw", "wmem", "smem")):
    """Start the clock and hold reset for two cycles with every input stream idle (``sinks``:
    the design's input streams, valid low), no output taken (``sources``: ready low) and no
    memory written (those of ``write_ports`` the design has: enable low)."""
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    for name in sinks:
        getattr(dut, f"{name}__valid").value = 0
    for name in sources:
        getattr(dut, f"{name}__ready").value = 0
    for name in write_ports:
        if hasattr(dut, f"{name}__en"):
            getattr(dut, f"{name}__en").value = 0
    for _ in range(2):
        await RisingEdge(dut.clk)
    await FallingEdge(dut.clk)
    dut.rst.value = 0


async def stream_vectors(dut, beats_per_case, *, rng, stall_in, stall_out):
    """Drive every beat (valid/ready, random input gaps) and collect one result per case (random
    output back-pressure). Returns (results, cycles). All decisions at the falling edge,
    handshakes sampled settled (ReadOnly) before the rising edge."""
    flat = [(b, k) for k, beats in enumerate(beats_per_case) for b in beats]
    results, pos, cycles = [], 0, 0
    while len(results) < len(beats_per_case):
        in_valid = pos < len(flat) and rng.random() >= stall_in
        dut.i__valid.value = int(in_valid)
        if in_valid:
            dut.i__payload.value = flat[pos][0]
        out_ready = rng.random() >= stall_out
        dut.o__ready.value = int(out_ready)
        await ReadOnly()
        fire_in = in_valid and dut.i__ready.value == 1
        fire_out = out_ready and dut.o__valid.value == 1
        if fire_out:
            results.append(dut.o__payload.value.to_signed())
        await FallingEdge(dut.clk)
        pos += fire_in
        cycles += 1
        if cycles > 50 * (len(flat) + 100):
            raise AssertionError(f"hang: {len(results)} of {len(beats_per_case)} results after {cycles} cycles")
    return results, cycles


async def write_port(dut, prefix, words):
    """Write ``words`` to addresses 0, 1, ... of the memory write port ``prefix`` (one a cycle)."""
    en, addr, data = (getattr(dut, f"{prefix}__{n}") for n in ("en", "addr", "data"))
    for a, v in enumerate(words):
        en.value, addr.value, data.value = 1, a, v
        await FallingEdge(dut.clk)
    en.value = 0


async def stream_engine(dut, flat, total, rng, stall):
    """A matrix-vector engine's run: the activation beats ``flat`` into ``x`` with random gaps,
    ``total`` row results out of ``o`` with random back-pressure (both with probability
    ``stall``). Returns (raw ``o`` payload words, cycles)."""
    got, pos, cycles = [], 0, 0
    while len(got) < total:
        in_valid = pos < len(flat) and rng.random() >= stall
        dut.x__valid.value = int(in_valid)
        if in_valid:
            dut.x__payload.value = flat[pos]
        out_ready = rng.random() >= stall
        dut.o__ready.value = int(out_ready)
        await ReadOnly()
        fire_in = in_valid and dut.x__ready.value == 1
        if out_ready and dut.o__valid.value == 1:
            got.append(dut.o__payload.value.to_unsigned())
        await FallingEdge(dut.clk)
        pos += fire_in
        cycles += 1
        assert cycles < 100 * (len(flat) + total) + 10000, "engine hang"
    dut.x__valid.value = 0
    return got, cycles


def check_engine_rows(got, acc_bits, expected, what):
    """Split the engine's ``{value: signed(acc_bits), row}`` words, check that rows come in
    order for every vector and equal ``expected`` (one list of row values per vector, from the
    golden model). Returns the values."""
    rows = len(expected[0]) if expected else 0
    values, rows_seen = [], []
    for word in got:
        v = word & ((1 << acc_bits) - 1)
        values.append(v - (1 << acc_bits) if v >> (acc_bits - 1) else v)
        rows_seen.append(word >> acc_bits)
    assert rows_seen == list(range(rows)) * len(expected), f"{what}: rows out of order"
    for i, exp in enumerate(expected):
        got_i = values[i * rows:(i + 1) * rows]
        bad = [r for r in range(rows) if got_i[r] != exp[r]]
        assert not bad, f"{what}, vector {i}: row {bad[0]} got {got_i[bad[0]]}, golden {exp[bad[0]]}"
    return values
