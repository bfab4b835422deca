"""cocotb testbench for the Ax-BxP MAC (bcq.hw.bxp_mac.BxPMac).

BXP_TB = JSON {config: {n_bits, block_bits} (default modes), seed, count, stall_in, stall_out}:
vectors of random beats, mode switches within and between vectors, random stalls. (Every
operand pair of every 8-bit mode runs in the compiled harness: tests/test_harness.py.)
"""
import json
import os
import random
import time

import cocotb
from bcq.sw.contract.beats import mac_beats
from bcq.sw.formats.axbxp import BxPConfig

from .cocotb_util import reset, stream_vectors
from .vectors import bxp_random_vectors


@cocotb.test()
async def golden_products(dut):
    p = json.loads(os.environ["BXP_TB"])
    cfg = BxPConfig(**p["config"])
    rng = random.Random(p["seed"])
    await reset(dut)
    vectors = bxp_random_vectors(cfg, rng, p["count"], max_beats=8)
    suites = [("random", [mac_beats(cfg, beats) for beats, _ in vectors], [e for _, e in vectors])]
    stats = {}
    for label, beats, expected in suites:
        t0 = time.perf_counter()
        got, cycles = await stream_vectors(dut, beats, rng=rng, stall_in=p["stall_in"], stall_out=p["stall_out"])
        dt = time.perf_counter() - t0
        bad = [k for k, (g, e) in enumerate(zip(got, expected)) if g != e]
        assert not bad, (f"{label}: {len(bad)} mismatches; first: case {bad[0]} got {got[bad[0]]}, "
                         f"golden {expected[bad[0]]}; seed {p['seed']}")
        stats[label] = {"cases": len(expected), "cycles": cycles, "seconds": dt}
        dut._log.info("%s: %d cases bit-exact, %d cycles, %.0f cycles/s", label, len(expected), cycles, cycles / dt)
    with open("stats.json", "w") as f:
        json.dump(stats, f)
