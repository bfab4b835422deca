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
import torch
from bcq.sw.contract.beats import bxp_activation_beats
from bcq.sw.formats.axbxp import matmul
from bcq.sw.host.image import read_int8_image

from .cocotb_util import check_engine_rows, reset, stream_engine, write_port


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
        await write_port(dut, "wmem", layer.weight_words)
        dut.rows.value = rows
        dut.mode.value = cfg.mode_index(layer.mode.name)
        flat = [b for x in xs for b in bxp_activation_beats(cfg, x.tolist(), img.layout.lanes(layer.mode))]
        t0 = time.perf_counter()
        got, cycles = await stream_engine(dut, flat, rows * len(xs), rng, p["stall"])
        dt = time.perf_counter() - t0
        values = check_engine_rows(got, acc_bits, expected, f"mode {layer.mode.name} (seed {p['seed']})")
        dut._log.info("mode %s: %d vectors x %d rows bit-exact in %d cycles (%.0f cycles/s)", layer.mode.name,
                      len(xs), rows, cycles, cycles / dt)
        out.append({"mode": layer.mode.name, "values": values, "cycles": cycles, "seconds": dt})
    with open(p["out"], "w") as f:
        json.dump(out, f)
