"""cocotb testbench for hw.bcq_dot.BCQDot: random and directed vectors, random stalls on both
streams, bit-exact against the golden model (sw.golden, via sim.vectors).

Parameters come from the environment (set by tests/test_bcq_dot_cocotb.py):
BCQ_TB = JSON {config, blocks_per_cycle, max_len, seed, count, stall_in, stall_out, replay}.
"""
import json
import os
import random
import time

import cocotb
import torch
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge

from hw.bcq_dot import vector_beats
from sim.vectors import make_cases, random_codebooks
from sw.config import BCQConfig


async def reset(dut):
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    dut.i__valid.value = 0
    dut.o__ready.value = 0
    if hasattr(dut, "cbw__en"):
        dut.cbw__en.value = 0
    for _ in range(2):
        await RisingEdge(dut.clk)
    await FallingEdge(dut.clk)
    dut.rst.value = 0


async def write_codebooks(dut, codebooks):
    for addr, value in enumerate(codebooks.entries.flatten().tolist()):
        dut.cbw__en.value = 1
        dut.cbw__addr.value = addr
        dut.cbw__data.value = value
        await FallingEdge(dut.clk)
    dut.cbw__en.value = 0


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


@cocotb.test()
async def golden_vectors(dut):
    p = json.loads(os.environ["BCQ_TB"])
    cfg = BCQConfig.from_dict(p["config"])
    codebooks = random_codebooks(cfg, torch.Generator().manual_seed(p["seed"]))
    cases = make_cases(cfg, codebooks, seed=p["seed"], count=p["count"], max_len=p["max_len"])
    beats = [vector_beats(c.w, c.x, p["blocks_per_cycle"]) for c in cases]
    await reset(dut)
    await write_codebooks(dut, codebooks)
    t0 = time.perf_counter()
    got, cycles = await stream_vectors(dut, beats, rng=random.Random(p["seed"]),
                                       stall_in=p["stall_in"], stall_out=p["stall_out"])
    dt = time.perf_counter() - t0
    dut._log.info("%d vectors, %d cycles in %.2f s: %.0f vectors/s, %.0f cycles/s",
                  len(cases), cycles, dt, len(cases) / dt, cycles / dt)
    for k, (case, value) in enumerate(zip(cases, got)):
        assert value == case.expected, (
            f"vector {k} mismatch: got {value}, golden {case.expected}\n{case.describe()}\n"
            f"seed={p['seed']}; replay: {p['replay']}")
    with open("throughput.json", "w") as f:
        json.dump({"vectors": len(cases), "cycles": cycles, "seconds": dt}, f)
