"""cocotb stress testbench: a long randomized run in chunks (generated, streamed, checked
against the golden model and dropped, so memory stays flat however many vectors run).

STRESS = JSON {unit: "bcq" | "bxp", config, blocks_per_cycle, max_len, vectors, chunk, seed,
stall_in, stall_out}. BCQ: the directed edge cases in the first chunk, then random vectors of
mixed lengths; BxP: random beats with mode and signedness switching within and between vectors.
Writes stats.json.
"""
import json
import os
import random
import time

import cocotb
import torch

from bcq.sw.contract.beats import bcq_vector_beats, mac_beats
from bcq.sw.contract.geometry import BeatGeometry
from bcq.sw.formats.axbxp import BxPConfig
from bcq.sw.formats.config import BCQConfig

from .cocotb_util import reset, stream_vectors
from .tb_bcq_dot import write_codebooks
from .vectors import bxp_random_vectors, make_cases, random_codebooks


def _chunks(p):
    """(beats per vector, expected, describe(k)) chunk by chunk."""
    done, k = 0, 0
    rng = random.Random(p["seed"])
    while done < p["vectors"]:
        n = min(p["chunk"], p["vectors"] - done)
        seed = p["seed"] * 1_000_003 + k
        if p["unit"] == "bcq":
            cfg = BCQConfig.from_dict(p["config"])
            cases = make_cases(cfg, p["codebooks"], seed=seed, count=n, max_len=p["max_len"], directed=k == 0)
            geometry = BeatGeometry(cfg, p["blocks_per_cycle"])
            yield ([bcq_vector_beats(c.w, c.x, geometry) for c in cases],
                   [c.expected for c in cases], lambda i, cases=cases: cases[i].describe(), seed)
        else:
            cfg = BxPConfig(**p["config"])
            vs = bxp_random_vectors(cfg, rng, n, max_beats=8)
            yield ([mac_beats(cfg, b) for b, _ in vs], [e for _, e in vs], lambda i, vs=vs: repr(vs[i][0]), seed)
        done += n
        k += 1


@cocotb.test()
async def stress(dut):
    p = json.loads(os.environ["STRESS"])
    await reset(dut)
    if p["unit"] == "bcq":
        cfg = BCQConfig.from_dict(p["config"])
        p["codebooks"] = random_codebooks(cfg, torch.Generator().manual_seed(p["seed"]))
        await write_codebooks(dut, p["codebooks"])
    rng = random.Random(p["seed"] + 1)
    vectors = cycles = 0
    t0 = time.perf_counter()
    for beats, expected, describe, seed in _chunks(p):
        got, c = await stream_vectors(dut, beats, rng=rng, stall_in=p["stall_in"], stall_out=p["stall_out"])
        for i, (g, e) in enumerate(zip(got, expected)):
            assert g == e, (f"{p['unit']}: vector {vectors + i} (chunk seed {seed}, index {i}) got {g}, "
                            f"golden {e}: {describe(i)}")
        vectors += len(expected)
        cycles += c
        if vectors // p["chunk"] % 20 == 0:
            dt = time.perf_counter() - t0
            dut._log.info("%d vectors bit-exact, %.0f vectors/s", vectors, vectors / dt)
    dt = time.perf_counter() - t0
    with open("stats.json", "w") as f:
        json.dump({"vectors": vectors, "cycles": cycles, "seconds": dt}, f)
