"""cocotb testbench for bcq.hw.bcq_encoder.BCQEncoder: random and directed BF16 vectors, random
stalls on both streams, every output beat bit-exact against the integer encoder specification
(bcq.sw.formats.encoder_int, via bcq.sim.encoder_vectors).

Parameters come from the environment (set by tests/test_bcq_encoder_cocotb.py):
BCQ_TB = JSON {config, blocks_per_cycle, lanes, seed, count, max_arrays, ts_exp, stall_in, stall_out, replay}.
"""
import json
import os
import random
import time

import cocotb
from cocotb.triggers import FallingEdge
import torch

from bcq.sw.formats.config import BCQConfig

from .cocotb_util import reset, stream_vectors, write_port
from .encoder_vectors import encoder_cases, encoder_codebooks


@cocotb.test()
async def spec_vectors(dut):
    p = json.loads(os.environ["BCQ_TB"])
    cfg = BCQConfig.from_dict(p["config"])
    codebooks = encoder_codebooks(cfg, torch.Generator().manual_seed(p["seed"]))
    cases = encoder_cases(cfg, codebooks, seed=p["seed"], count=p["count"], max_arrays=p["max_arrays"],
                          blocks_per_cycle=p["blocks_per_cycle"], lanes=p["lanes"], ts_exp=p["ts_exp"])
    # One output beat per group of B * Lb / lanes input beats.
    beats = [(c, k, g, e) for c in cases for k, (g, e) in enumerate(zip(c.groups, c.expected))]
    await reset(dut)
    dut.ts_exp.value = p["ts_exp"]
    await write_port(dut, "cbw", codebooks.entries.flatten().tolist())   # entry per address (sel * 16 + index)
    while dut.busy.value == 1:          # the nearest-entry table rebuild (i.ready is low meanwhile)
        await FallingEdge(dut.clk)
    t0 = time.perf_counter()
    got, cycles = await stream_vectors(dut, [g for _, _, g, _ in beats], rng=random.Random(p["seed"]),
                                       stall_in=p["stall_in"], stall_out=p["stall_out"])
    dt = time.perf_counter() - t0
    dut._log.info("%d vectors, %d beats, %d cycles in %.2f s", len(cases), len(beats), cycles, dt)
    mask = (1 << len(dut.o__payload.value)) - 1
    for (case, k, _, want), value in zip(beats, got):
        assert value & mask == want, (
            f"{case.name} beat {k}: got {value & mask:#x}, spec {want:#x}\n{case.describe()}\n"
            f"seed={p['seed']}; replay: {p['replay']}")
    with open("throughput.json", "w") as f:
        json.dump({"vectors": len(cases), "beats": len(beats), "cycles": cycles, "seconds": dt}, f)
