"""The Ax-BxP MAC on Verilator through cocotb: exhaustive over 8-bit operand pairs, and a few
random dot products with mode switches and stalls (the volume of those runs in the compiled
harness, tests/test_harness.py)."""
import json

import pytest

from bcq.hw.bxp_mac import BxPMac
from bcq.sim.runner import build, run_cocotb
from bcq.sw.formats.axbxp import DEFAULT_BXP

pytestmark = [pytest.mark.verilator]


@pytest.mark.xdist_group("verilator")
@pytest.mark.parametrize("suite,count,stall", [("exhaustive", 0, 0.0), ("random", 300, 0.25)])
def test_bxp_mac_bit_exact(suite, count, stall, seed, tmp_path):
    build_dir = build(BxPMac(DEFAULT_BXP, max_len=16), "bxp_mac")
    params = {"suite": suite, "config": {"n_bits": DEFAULT_BXP.n_bits, "block_bits": DEFAULT_BXP.block_bits},
              "seed": seed, "count": count, "stall_in": stall, "stall_out": stall}
    run_cocotb(build_dir, "bxp_mac", "bcq.sim.tb_bxp_mac", test_dir=tmp_path, env={"BXP_TB": json.dumps(params)})
    stats = json.loads((tmp_path / "stats.json").read_text())
    for label, s in stats.items():
        print(f"{label}: {s['cases']} cases, {s['cycles']} cycles, {s['cycles'] / s['seconds']:.0f} cycles/s")
    if suite == "exhaustive":
        assert stats["exact8 signed"]["cases"] == stats["exact8 unsigned"]["cases"] == 1 << 16
        approx = [m.name for m in DEFAULT_BXP.modes if m.kind != "exact"]
        assert all(f"{name} signed" in stats for name in approx)
