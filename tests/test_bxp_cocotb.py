"""The Ax-BxP MAC on Verilator through cocotb: random dot products with mode switches within and
between vectors, and stalls on both streams. Every operand pair of every 8-bit mode, and the
volume, run in the compiled harness (tests/test_harness.py)."""
import json

import pytest

from bcq.hw.bxp_mac import BxPMac
from bcq.sim.runner import build, run_cocotb
from bcq.sw.formats.axbxp import DEFAULT_BXP

pytestmark = [pytest.mark.verilator]


def test_bxp_mac_bit_exact(seed, tmp_path):
    build_dir = build(BxPMac(DEFAULT_BXP, max_len=16), "bxp_mac")
    params = {"config": {"n_bits": DEFAULT_BXP.n_bits, "block_bits": DEFAULT_BXP.block_bits},
              "seed": seed, "count": 300, "stall_in": 0.25, "stall_out": 0.25}
    run_cocotb(build_dir, "bxp_mac", "bcq.sim.tb_bxp_mac", test_dir=tmp_path, env={"BXP_TB": json.dumps(params)})
    stats = json.loads((tmp_path / "stats.json").read_text())
    s = stats["random"]
    print(f"random: {s['cases']} cases, {s['cycles']} cycles, {s['cycles'] / s['seconds']:.0f} cycles/s")
    assert s["cases"] == 300
