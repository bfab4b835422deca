"""cocotb replay of one compiled-harness chunk (``python -m bcq.sim.harness replay``): the same
file, the same setup writes, the same xorshift32 stall decisions cycle by cycle, so a mismatch
the C++ testbench found happens here at the same cycle, with waves (``WAVES=1``).

HARNESS_REPLAY = JSON {chunk: path, spec: HarnessSpec.to_json(), until: chunk vector index or null}.
Generic like the harness: only the port names and widths of the spec are used.
"""
import json
import os

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge

from bcq.sw.contract.packing import words_to_int

from .harness import HarnessSpec, read_chunk, xorshift32


def _port(dut, name):
    return getattr(dut, name)


@cocotb.test()
async def replay_chunk(dut):
    p = json.loads(os.environ["HARNESS_REPLAY"])
    spec = HarnessSpec.from_json(p["spec"])
    chunk = read_chunk(p["chunk"], spec)
    until = p.get("until")
    i, o = spec.inp[0], spec.out[0]
    in_valid, in_ready, in_payload = (_port(dut, f"{i}__{n}") for n in ("valid", "ready", "payload"))
    out_valid, out_ready, out_payload = (_port(dut, f"{o}__{n}") for n in ("valid", "ready", "payload"))
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    in_valid.value = 0
    out_ready.value = 0
    for name, *_ in spec.writes:
        _port(dut, f"{name}__en").value = 0
    for _ in range(2):
        await RisingEdge(dut.clk)
    await FallingEdge(dut.clk)
    dut.rst.value = 0
    out_ready.value = 1
    widths = {w[0]: w[2] for w in spec.writes} | {s[0]: s[1] for s in spec.sets}
    writes = {w[0] for w in spec.writes}
    for name, addr, value in chunk.setup:
        value &= (1 << widths[name]) - 1   # the file holds two's complement words
        if name in writes:
            _port(dut, f"{name}__en").value = 1
            _port(dut, f"{name}__addr").value = addr
            _port(dut, f"{name}__data").value = value
        else:
            _port(dut, name).value = value
        await FallingEdge(dut.clk)
        if name in writes:
            _port(dut, f"{name}__en").value = 0
    state = chunk.seed
    stall_in, stall_out = round(chunk.stall_in * 65536), round(chunk.stall_out * 65536)
    beats = [words_to_int(b) for b in chunk.beats]
    expected = [words_to_int(e) for e in chunk.expected]
    bpos = rpos = cycles = 0
    while rpos < len(expected):
        state = xorshift32(state)
        r_in = state
        state = xorshift32(state)
        r_out = state
        valid = bpos < len(beats) and (r_in >> 16) >= stall_in
        ready = (r_out >> 16) >= stall_out
        in_valid.value = int(valid)
        if bpos < len(beats):
            in_payload.value = beats[bpos]
        out_ready.value = int(ready)
        await ReadOnly()
        fire_in = valid and in_ready.value == 1
        if ready and out_valid.value == 1:
            got = out_payload.value.to_unsigned()
            v = int(chunk.result_vector[rpos])
            if got != expected[rpos]:
                message = (f"vector {chunk.first_vector + v} (index {v} of {p['chunk']}, result {rpos}) got {got:#x}, "
                           f"expected {expected[rpos]:#x} at cycle {cycles} of the chunk; stall seed {chunk.seed}")
                dut._log.error("MISMATCH %s", message)   # into sim.log, beside the waves
                raise AssertionError(message)
            rpos += 1
            if until is not None and v >= until and (rpos == len(expected) or chunk.result_vector[rpos] != v):
                dut._log.info("vector %d of the chunk matched; stopping (--vector)", v)
                return
        await FallingEdge(dut.clk)
        bpos += fire_in
        cycles += 1
        assert cycles < 1000 * (len(beats) + len(expected)) + 100000, "hang"
    dut._log.info("%d results matched in %d cycles", len(expected), cycles)
