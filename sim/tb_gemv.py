"""cocotb testbench for bcq.hw.gemv.GEMV: activations through the engine, bit-exact against the
golden model applied to the weight image.

GEMV_TB = JSON {image, layer, activations (a .pt of float vectors [V, cols]), load ("ports":
write codebook/weights/scales through the write ports first; "baked": memories initialized at
elaboration), seed, stall, out (results JSON path)}.
"""
import json
import os
import random
import time

import cocotb
from cocotb.triggers import FallingEdge, ReadOnly
import torch

from bcq.sw.contract.beats import activation_beats
from bcq.sw.formats.golden import dot_fixed
from bcq.sw.formats.lobcq import encode
from bcq.sw.host.image import read_image

from .cocotb_util import reset


async def write_port(dut, prefix, words):
    en, addr, data = (getattr(dut, f"{prefix}__{n}") for n in ("en", "addr", "data"))
    for a, v in enumerate(words):
        en.value, addr.value, data.value = 1, a, v
        await FallingEdge(dut.clk)
    en.value = 0


@cocotb.test()
async def engine_vectors(dut):
    p = json.loads(os.environ["GEMV_TB"])
    img = read_image(p["image"])
    layer = img.layers[p["layer"]]
    rows = layer.shape[0]
    xs = torch.load(p["activations"])
    encoded = [encode(x, img.codebooks) for x in xs]
    expected = [dot_fixed(layer.weights, x).tolist() for x in encoded]
    rng = random.Random(p["seed"])
    await reset(dut, sinks=("x",))
    dut.rows.value = rows
    if p["load"] == "ports":
        mask = (1 << img.config.entry_bits) - 1
        await write_port(dut, "cbw", [v & mask for v in img.codebooks.entries.flatten().tolist()])
        await write_port(dut, "wmem", layer.weight_words)
        await write_port(dut, "smem", layer.scale_words)
    flat = [b for x in encoded for b in activation_beats(x, img.layout.geometry)]
    got, pos, cycles = [], 0, 0
    total = rows * len(encoded)
    t0 = time.perf_counter()
    while len(got) < total:
        in_valid = pos < len(flat) and rng.random() >= p["stall"]
        dut.x__valid.value = int(in_valid)
        if in_valid:
            dut.x__payload.value = flat[pos]
        out_ready = rng.random() >= p["stall"]
        dut.o__ready.value = int(out_ready)
        await ReadOnly()
        fire_in = in_valid and dut.x__ready.value == 1
        if out_ready and dut.o__valid.value == 1:
            got.append(dut.o__payload.value.to_unsigned())  # {value: acc_bits, row} (bcq.hw.gemv)
        await FallingEdge(dut.clk)
        pos += fire_in
        cycles += 1
        assert cycles < 100 * (len(flat) + total) + 10000, "engine hang"
    dt = time.perf_counter() - t0
    acc_bits = int(p["acc_bits"])
    values, rows_seen = [], []
    for word in got:
        v = word & ((1 << acc_bits) - 1)
        values.append(v - (1 << acc_bits) if v >> (acc_bits - 1) else v)
        rows_seen.append(word >> acc_bits)
    assert rows_seen == list(range(rows)) * len(encoded), "rows out of order"
    for i, exp in enumerate(expected):
        got_i = values[i * rows:(i + 1) * rows]
        bad = [r for r in range(rows) if got_i[r] != exp[r]]
        assert not bad, f"vector {i}: row {bad[0]} got {got_i[bad[0]]}, golden {exp[bad[0]]} (seed {p['seed']})"
    dut._log.info("%d vectors x %d rows bit-exact in %d cycles (%.0f cycles/s)", len(encoded), rows, cycles, cycles / dt)
    with open(p["out"], "w") as f:
        json.dump({"values": values, "cycles": cycles, "seconds": dt}, f)
