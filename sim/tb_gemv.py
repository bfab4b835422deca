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
import torch
from bcq.sw.contract.beats import activation_beats
from bcq.sw.formats.golden import dot_fixed
from bcq.sw.formats.lobcq import encode
from bcq.sw.host.image import read_image

from .cocotb_util import check_engine_rows, reset, stream_engine, write_port


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
    t0 = time.perf_counter()
    got, cycles = await stream_engine(dut, flat, rows * len(encoded), rng, p["stall"])
    dt = time.perf_counter() - t0
    values = check_engine_rows(got, int(p["acc_bits"]), expected, f"seed {p['seed']}")
    dut._log.info("%d vectors x %d rows bit-exact in %d cycles (%.0f cycles/s)", len(encoded), rows, cycles, cycles / dt)
    with open(p["out"], "w") as f:
        json.dump({"values": values, "cycles": cycles, "seconds": dt}, f)
