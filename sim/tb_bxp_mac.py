"""cocotb testbench for bcq.hw.bxp_mac.BxPMac, bit-exact against the golden model (bcq.sw.formats.axbxp).

BXP_TB = JSON {suite: "exhaustive" | "random", config: {n_bits, block_bits} (default modes),
seed, count, stall_in, stall_out}.
- exhaustive: every signed and unsigned 8-bit operand pair in exact8, and every signed pair in
  each approximate mode; one beat per vector, so every beat's sum is checked.
- random: vectors of random beats, mode switches within and between vectors, random stalls.
"""
import json
import os
import random
import time

import cocotb
import torch

from bcq.sw.contract.beats import mac_beats
from bcq.sw.formats.axbxp import BxPConfig, product

from .cocotb_util import reset, stream_vectors
from .vectors import bxp_random_vectors


def exhaustive_cases(cfg):
    """(label, packed beats, expected per beat) for each (mode, signed) checked exhaustively."""
    suites = []
    for mode in cfg.modes:
        if mode.precision != cfg.n_bits:
            continue
        for sgn in ((True, False) if mode.kind == "exact" else (True,)):
            lo, hi = cfg.operand_range(mode, sgn)
            vals = torch.arange(lo, hi + 1)
            X, W = (t.flatten() for t in torch.meshgrid(vals, vals, indexing="ij"))
            ppc = cfg.products_per_cycle(mode)
            pad = (-X.numel()) % ppc
            X = torch.cat([X, torch.zeros(pad, dtype=X.dtype)]).reshape(-1, ppc)
            W = torch.cat([W, torch.zeros(pad, dtype=W.dtype)]).reshape(-1, ppc)
            expected = product(X, W, cfg, mode, sgn).sum(-1).tolist()
            beats = mac_beats(cfg, [(x, w, mode.name, sgn, True) for x, w in zip(X.tolist(), W.tolist())])
            suites.append((f"{mode.name} {'signed' if sgn else 'unsigned'}", beats, expected))
    return suites


@cocotb.test()
async def golden_products(dut):
    p = json.loads(os.environ["BXP_TB"])
    cfg = BxPConfig(**p["config"])
    rng = random.Random(p["seed"])
    await reset(dut)
    if p["suite"] == "exhaustive":
        suites = exhaustive_cases(cfg)
    else:
        vectors = bxp_random_vectors(cfg, rng, p["count"], max_beats=8)
        suites = [("random", [mac_beats(cfg, beats) for beats, _ in vectors], [e for _, e in vectors])]
    stats = {}
    for label, beats, expected in suites:
        per_case = [[b] for b in beats] if p["suite"] == "exhaustive" else beats
        t0 = time.perf_counter()
        got, cycles = await stream_vectors(dut, per_case, rng=rng, stall_in=p["stall_in"], stall_out=p["stall_out"])
        dt = time.perf_counter() - t0
        bad = [k for k, (g, e) in enumerate(zip(got, expected)) if g != e]
        assert not bad, (f"{label}: {len(bad)} mismatches; first: case {bad[0]} got {got[bad[0]]}, "
                         f"golden {expected[bad[0]]}; seed {p['seed']}")
        stats[label] = {"cases": len(expected), "cycles": cycles, "seconds": dt}
        dut._log.info("%s: %d cases bit-exact, %d cycles, %.0f cycles/s", label, len(expected), cycles, cycles / dt)
    with open("stats.json", "w") as f:
        json.dump(stats, f)
