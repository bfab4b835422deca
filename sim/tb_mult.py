"""cocotb testbench for ``bcq.hw.pipeline.registered_mult`` in its MULT18X18D form (simulated on
the model in sim/ecp5_cells.v): every cycle's product against a Python model of the two
register ranks with their clock enable, over random and extreme operands and a random enable.
Parameters from the environment (tests/test_mult_cell.py): ``BCQ_TB`` = JSON with a_bits,
b_bits, b_unsigned (the operand is zero-extended), cycles, seed."""
import json
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, RisingEdge


def _operand(rng, bits, unsigned):
    lo, hi = (0, (1 << bits) - 1) if unsigned else (-(1 << (bits - 1)), (1 << (bits - 1)) - 1)
    return rng.choice([lo, hi, 0, -1 if not unsigned else 1, rng.randint(lo, hi), rng.randint(lo, hi)])


@cocotb.test()
async def products(dut):
    p = json.loads(os.environ["BCQ_TB"])
    rng = random.Random(p["seed"])
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    if hasattr(dut, "rst"):
        dut.rst.value = 0
    dut.ce.value, dut.a.value, dut.b.value = 0, 0, 0
    ra = rb = prod = 0          # the model: input rank, output rank (reset to 0)
    await FallingEdge(dut.clk)
    checked = 0
    for cycle in range(p["cycles"]):
        a, b = _operand(rng, p["a_bits"], False), _operand(rng, p["b_bits"], p["b_unsigned"])
        ce = int(rng.random() < 0.7)
        dut.a.value, dut.b.value, dut.ce.value = a, b, ce
        await RisingEdge(dut.clk)
        if ce:
            ra, rb, prod = a, b, ra * rb
        await FallingEdge(dut.clk)
        got = dut.p.value.to_signed()
        assert got == prod, f"cycle {cycle}: p = {got}, expected {prod} (seed {p['seed']})"
        checked += 1
    dut._log.info("%d cycles checked", checked)
