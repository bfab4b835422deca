"""The activation encoder on Verilator through cocotb, bit-exact against the integer encoder
specification, random and directed vectors with stalls on both streams."""
import json
import os

import pytest

from bcq.hw.bcq_encoder import BCQEncoder
from bcq.sim.runner import build, run_cocotb
from bcq.sw.formats.config import BCQConfig

pytestmark = [pytest.mark.verilator]

# (name, config, blocks per output beat, lanes, ts_exp): the ULX3S engine's encoder (one scalar a
# cycle into 2-block beats) and a full-width one (one 8-lane block a cycle).
CONFIGS = [
    ("ulx3s-lanes1", BCQConfig(), 2, 1, -3),
    ("default-lanes8", BCQConfig(), 1, 8, 2),
]
VECTORS = int(os.environ.get("BCQ_TB_VECTORS", 300))


@pytest.mark.parametrize("name,cfg,bpc,lanes,ts_exp", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_random_and_directed_vectors(name, cfg, bpc, lanes, ts_exp, seed, tmp_path, request):
    dut = BCQEncoder(cfg, blocks_per_cycle=bpc, lanes=lanes)
    build_dir = build(dut, "bcq_encoder")
    params = {"config": cfg.to_dict(), "blocks_per_cycle": bpc, "lanes": lanes, "seed": seed, "count": VECTORS, "max_arrays": 4,
              "ts_exp": ts_exp, "stall_in": 0.2, "stall_out": 0.3,
              "replay": f"SEED={seed} pytest '{request.node.nodeid}'"}
    log = run_cocotb(build_dir, "bcq_encoder", "bcq.sim.tb_bcq_encoder", test_dir=tmp_path,
                     env={"BCQ_TB": json.dumps(params)})
    stats = json.loads((tmp_path / "throughput.json").read_text())
    print(f"{name}: {stats['vectors']} vectors, {stats['beats']} beats, {stats['cycles']} cycles; log {log}")
    assert stats["vectors"] >= VECTORS
