"""cocotb testbench for bcq.hw.bcq_dot.BCQDot: random and directed vectors, random stalls on both
streams, bit-exact against the golden model (bcq.sw.formats.golden, via bcq.sim.vectors).

Parameters come from the environment (set by tests/test_bcq_dot_cocotb.py):
BCQ_TB = JSON {config, blocks_per_cycle, max_len, seed, count, stall_in, stall_out, replay}.
"""
import json
import os
import random
import time

import cocotb
import torch

from bcq.sw.contract.beats import bcq_vector_beats
from bcq.sw.contract.geometry import BeatGeometry
from bcq.sw.contract.tables import pair_table_words
from bcq.sw.formats.config import BCQConfig

from .cocotb_util import reset, stream_vectors, write_port
from .vectors import make_cases, random_codebooks


@cocotb.test()
async def golden_vectors(dut):
    p = json.loads(os.environ["BCQ_TB"])
    cfg = BCQConfig.from_dict(p["config"])
    codebooks = random_codebooks(cfg, torch.Generator().manual_seed(p["seed"]))
    cases = make_cases(cfg, codebooks, seed=p["seed"], count=p["count"], max_len=p["max_len"])
    geometry = BeatGeometry(cfg, p["blocks_per_cycle"])
    beats = [bcq_vector_beats(c.w, c.x, geometry) for c in cases]
    await reset(dut)
    await write_port(dut, "cbw", pair_table_words(codebooks))
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
