"""The activation encoder on Verilator through cocotb, bit-exact against the integer encoder
specification, random and directed vectors with stalls on both streams."""
import json
import os

import pytest

from bcq.hw.bcq_encoder import BCQEncoder
from bcq.sim.runner import build, run_cocotb
from bcq.sw.formats.config import BCQConfig

pytestmark = [pytest.mark.verilator]

CONFIGS = [
    ("default", BCQConfig(), 1, -3),
]
VECTORS = int(os.environ.get("BCQ_TB_VECTORS", 300))


@pytest.mark.parametrize("name,cfg,bpc,ts_exp", CONFIGS, ids=[c[0] for c in CONFIGS])
@pytest.mark.xdist_group("verilator")
def test_random_and_directed_vectors(name, cfg, bpc, ts_exp, seed, tmp_path, request):
    dut = BCQEncoder(cfg, blocks_per_cycle=bpc)
    build_dir = build(dut, "bcq_encoder")
    params = {"config": cfg.to_dict(), "blocks_per_cycle": bpc, "seed": seed, "count": VECTORS, "max_arrays": 4,
              "ts_exp": ts_exp, "stall_in": 0.2, "stall_out": 0.3,
              "replay": f"SEED={seed} pytest '{request.node.nodeid}'"}
    log = run_cocotb(build_dir, "bcq_encoder", "bcq.sim.tb_bcq_encoder", test_dir=tmp_path,
                     env={"BCQ_TB": json.dumps(params)})
    stats = json.loads((tmp_path / "throughput.json").read_text())
    print(f"{name}: {stats['vectors']} vectors, {stats['beats']} beats, {stats['cycles']} cycles; log {log}")
    assert stats["vectors"] >= VECTORS
