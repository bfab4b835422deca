"""Stream drivers shared by the cocotb testbenches (no arithmetic here)."""
import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge


async def reset(dut, *, sinks=("i",), sources=("o",)):
    """Start the clock and hold reset for two cycles with every input stream idle (``sinks``:
    the design's input streams, valid low) and no output taken (``sources``: ready low)."""
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    for name in sinks:
        getattr(dut, f"{name}__valid").value = 0
    for name in sources:
        getattr(dut, f"{name}__ready").value = 0
    if hasattr(dut, "cbw__en"):
        dut.cbw__en.value = 0
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
