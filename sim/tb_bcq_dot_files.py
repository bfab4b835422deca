"""Second, independent cocotb testbench for the BCQ unit: it knows nothing of the format or the
golden model. It replays a vector file written beforehand (tests/test_bcq_dot_cocotb.py):

    {"codebook": [w0, w1, ...], "vectors": [{"beats": ["hex", ...], "expected": int}, ...]}

and drives it with plain handshakes (no stalls, output always ready), checking every result.
"""
import json
import os

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge


@cocotb.test()
async def replay_vector_file(dut):
    with open(os.environ["BCQ_VECTORS"]) as f:
        spec = json.load(f)
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    dut.i__valid.value = 0
    dut.o__ready.value = 1
    dut.cbw__en.value = 0
    await RisingEdge(dut.clk)
    await FallingEdge(dut.clk)
    dut.rst.value = 0
    for addr, value in enumerate(spec["codebook"]):
        dut.cbw__en.value, dut.cbw__addr.value, dut.cbw__data.value = 1, addr, value
        await FallingEdge(dut.clk)
    dut.cbw__en.value = 0
    beats = [int(b, 16) for v in spec["vectors"] for b in v["beats"]]
    expected = [v["expected"] for v in spec["vectors"]]
    got = []
    for beat in beats + [None] * 64:
        dut.i__valid.value = int(beat is not None)
        if beat is not None:
            dut.i__payload.value = beat
        await ReadOnly()
        assert beat is None or dut.i__ready.value == 1, "unit stalled with its output always ready"
        if dut.o__valid.value == 1:
            got.append(dut.o__payload.value.to_signed())
        await FallingEdge(dut.clk)
        if len(got) == len(expected):
            break
    assert got == expected, next(f"vector {k}: got {g}, file says {e}"
                                 for k, (g, e) in enumerate(zip(got + [None] * len(expected), expected)) if g != e)
