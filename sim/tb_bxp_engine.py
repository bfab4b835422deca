"""cocotb testbench for bcq.hw.bxp_engine.BxPEngine: one layer per int8 image, each in its own
MAC mode, through one engine (weights written through the write port, mode set at run time),
bit-exact against the golden model (``bcq.sw.formats.axbxp.matmul``) on the image's weights.

BXP_ENGINE_TB = JSON {runs: [{image, activations (a .pt of integer vectors [V, cols] in the
image layer's mode range)}], seed, stall, out (results JSON path), acc_bits}.
"""
import json
import os
import random
import time

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge
import torch

from bcq.sw.contract.beats import bxp_activation_beats
from bcq.sw.formats.axbxp import matmul
from bcq.sw.host.image import read_int8_image


async def reset(dut):
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    dut.x__valid.value = 0
    dut.o__ready.value = 0
    dut.wmem__en.value = 0
    for _ in range(2):
        await RisingEdge(dut.clk)
    await FallingEdge(dut.clk)
    dut.rst.value = 0


async def write_port(dut, words):
    for a, v in enumerate(words):
        dut.wmem__en.value, dut.wmem__addr.value, dut.wmem__data.value = 1, a, v
        await FallingEdge(dut.clk)
    dut.wmem__en.value = 0


async def run_layer(dut, flat, total, rng, stall):
    """Stream the beats with random gaps and take ``total`` results with random back-pressure;
    returns (raw payload words, cycles)."""
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
            got.append(dut.o__payload.value.to_unsigned())   # {value: acc_bits, row} (bcq.hw.bxp_engine)
        await FallingEdge(dut.clk)
        pos += fire_in
        cycles += 1
        assert cycles < 100 * (len(flat) + total) + 10000, "engine hang"
    dut.x__valid.value = 0
    return got, cycles


@cocotb.test()
async def engine_modes(dut):
    p = json.loads(os.environ["BXP_ENGINE_TB"])
    rng = random.Random(p["seed"])
    acc_bits = int(p["acc_bits"])
    await reset(dut, sinks=("x",))
    out = []
    for run in p["runs"]:
        img = read_int8_image(run["image"])
        layer, cfg = img.layer(), img.layout.config
        xs = torch.load(run["activations"])
        expected = matmul(xs, layer.q, cfg, layer.mode).tolist()
        rows = layer.shape[0]
        await write_port(dut, layer.weight_words)
        dut.rows.value = rows
        dut.mode.value = cfg.mode_index(layer.mode.name)
        flat = [b for x in xs for b in bxp_activation_beats(cfg, x.tolist(), img.layout.lanes(layer.mode))]
        t0 = time.perf_counter()
        got, cycles = await run_layer(dut, flat, rows * len(xs), rng, p["stall"])
        dt = time.perf_counter() - t0
        values, rows_seen = [], []
        for word in got:
            v = word & ((1 << acc_bits) - 1)
            values.append(v - (1 << acc_bits) if v >> (acc_bits - 1) else v)
            rows_seen.append(word >> acc_bits)
        assert rows_seen == list(range(rows)) * len(xs), f"mode {layer.mode.name}: rows out of order"
        for i, exp in enumerate(expected):
            got_i = values[i * rows:(i + 1) * rows]
            bad = [r for r in range(rows) if got_i[r] != exp[r]]
            assert not bad, (f"mode {layer.mode.name}, vector {i}: row {bad[0]} got {got_i[bad[0]]}, golden "
                             f"{exp[bad[0]]} (seed {p['seed']})")
        dut._log.info("mode %s: %d vectors x %d rows bit-exact in %d cycles (%.0f cycles/s)", layer.mode.name,
                      len(xs), rows, cycles, cycles / dt)
        out.append({"mode": layer.mode.name, "values": values, "cycles": cycles, "seconds": dt})
    with open(p["out"], "w") as f:
        json.dump(out, f)
