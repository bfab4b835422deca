"""FPGA build plumbing that runs without the (minutes-long) place and route: the report parser,
the board list and the errors. The full build is `make bitstream`."""
import importlib
import json
from pathlib import Path
import subprocess
import sys

from amaranth.hdl import Fragment
from amaranth_boards.icebreaker import ICEBreakerPlatform
from helpers import exactly
import pytest
import torch

from bcq.hw.board import BOARDS, BoardTop
from bcq.sim.fpga import build_bitstream, parse_report
from bcq.sw.contract.image_layout import EngineLayout
from bcq.sw.formats.codebooks import default_codebooks
from bcq.sw.formats.errors import BCQError, FileFormatError
from bcq.sw.host.image import write_image

SAMPLE = """Info: Device utilisation:
Info: \t          TRELLIS_IO:       7/    365     1%
Info: \t              DP16KD:     109/    208    52%
Info: \t          MULT18X18D:      40/    156    25%
Info: \t          TRELLIS_FF:    3253/  83640     3%
Info: Max frequency for clock '$glbnet$acc.core.clk': 39.14 MHz (FAIL at 50.00 MHz)
Info: Max frequency for clock '$glbnet$acc.core.clk': 52.71 MHz (PASS at 50.00 MHz)
"""


def test_report_takes_the_final_fmax_and_the_utilisation():
    r = parse_report(SAMPLE, 50e6)
    assert r["cells"]["DP16KD"] == (109, 208) and r["cells"]["TRELLIS_FF"] == (3253, 83640)
    assert r["fmax_mhz"] == 52.71 and r["met"]
    r = parse_report(SAMPLE.replace("52.71", "47.00"), 50e6)
    assert not r["met"]


def test_boards_elaborate_for_their_platforms():
    """Each board top elaborates against its amaranth-boards platform (pins, clock, PLL)."""

    for board, p in BOARDS.items():
        module, cls = p["platform"].split(":")
        platform = getattr(importlib.import_module(module), cls)()
        frag = Fragment.get(BoardTop(board), platform)
        assert frag is not None


def test_unknown_board_is_a_clear_error(tmp_path):
    r = subprocess.run([sys.executable, "-m", "bcq.cli", "build", "--board", "de10", "-o", tmp_path],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "unknown board 'de10'; allowed: ulx3s-85f, icebreaker" in r.stderr


def test_board_top_bakes_an_image_and_refuses_a_mismatched_one(tmp_path):

    cb = default_codebooks()
    write_image(tmp_path / "ok", {"fc": torch.randn(8, 128)}, cb, EngineLayout(cb.config, 1, 1))
    top = BoardTop("icebreaker", image=tmp_path / "ok")
    assert top.layer.name == "fc" and top.codebooks == cb
    Fragment.get(top, ICEBreakerPlatform())
    write_image(tmp_path / "lanes4", {"fc": torch.randn(8, 128)}, cb, EngineLayout(cb.config, 4, 1))
    d = cb.config.describe()
    with pytest.raises(FileFormatError, match=exactly(
            f"{tmp_path / 'lanes4' / 'manifest.json'}: image is for lanes=4, blocks_per_cycle=1, {d}; "
            f"the hardware was built for lanes=1, blocks_per_cycle=1, {d}")):
        BoardTop("icebreaker", image=tmp_path / "lanes4")
    write_image(tmp_path / "big", {"fc": torch.randn(64, 128)}, cb, EngineLayout(cb.config, 1, 1))
    with pytest.raises(BCQError, match=exactly("layer fc (64 x 128) exceeds the icebreaker engine's 32 x 128")):
        BoardTop("icebreaker", image=tmp_path / "big")


@pytest.fixture
def fake_toolchain(monkeypatch):
    """The board's platform with its build replaced by one that writes a nextpnr report: the
    plumbing around the build runs, the minutes of synthesis do not. Records each build."""
    board = "icebreaker"
    module, cls = BOARDS[board]["platform"].split(":")
    platform = getattr(importlib.import_module(module), cls)
    builds = []

    def build(self, top, name, build_dir, **kwargs):
        builds.append(build_dir)
        Path(build_dir, f"{name}.tim").write_text(SAMPLE)
        Path(build_dir, f"{name}.bin").write_bytes(b"bitstream")
    monkeypatch.setattr(platform, "build", build)
    return board, builds


def test_build_json_into_a_missing_directory_fails_before_the_build(tmp_path, fake_toolchain):
    board, builds = fake_toolchain
    with pytest.raises(FileFormatError, match=exactly(
            f"{tmp_path / 'nodir' / 'r.json'}: cannot write: no directory {tmp_path / 'nodir'}")):
        build_bitstream(board, tmp_path / "build", report_path=tmp_path / "nodir" / "r.json")
    with pytest.raises(FileFormatError, match=exactly(f"{tmp_path}: is a directory; give a file name")):
        build_bitstream(board, tmp_path / "build", report_path=tmp_path)
    assert builds == [] and not (tmp_path / "build").exists()


def test_build_writes_its_json_report(tmp_path, fake_toolchain):
    board, builds = fake_toolchain
    report = build_bitstream(board, tmp_path / "build", build_id=7, report_path=tmp_path / "r.json")
    assert builds == [str(tmp_path / "build" / board)]
    assert json.loads((tmp_path / "r.json").read_text()) == json.loads(json.dumps(report))
    assert report["fmax_mhz"] == 52.71 and report["bitstream"] == str(tmp_path / "build" / board / "top.bin")
