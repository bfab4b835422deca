"""`bcq verilog`: readable Verilog with the component's port names, lint-clean under the waivers."""
import re
import subprocess
import sys

import pytest

from bcq.hw.units import build_unit
from bcq.sim.runner import WAIVERS, lint
from bcq.sw.formats.config import BCQConfig


def bcq(*args):
    return subprocess.run([sys.executable, "-m", "bcq.cli", *map(str, args)], capture_output=True, text=True)


@pytest.mark.parametrize("config,options", [
    ("", []), ("block_len=4,n_codebooks=4", []), ("n_codebooks=1,scale_format=e8m0", []),
    ("", ["blocks_per_cycle=2"]), ("", ["codebook_rom=true"])])
def test_bcq_dot_verilog_is_lint_clean(tmp_path, config, options):
    out = tmp_path / "bcq_dot.v"
    args = ["verilog", "--unit", "bcq-dot", "-o", out]
    if config:
        args += ["--config", config]
    for o in options:
        args += ["--option", o]
    r = bcq(*args)
    assert r.returncode == 0, r.stderr
    latency = build_unit("bcq-dot", BCQConfig.parse(config) if config else None, options)[0].latency
    assert f"wrote {out}" in r.stdout and f"latency {latency} cycles" in r.stdout
    text = out.read_text()
    header = re.search(r"module bcq_dot\((.*?)\);", text, re.S).group(1)
    ports = {p.strip() for p in header.split(",")}
    expected = {"clk", "rst", "i__valid", "i__ready", "i__payload", "o__valid", "o__ready", "o__payload"}
    if "codebook_rom=true" not in options:
        expected |= {"cbw__en", "cbw__addr", "cbw__data"}
    assert ports == expected
    ok, report = lint(out)
    assert ok, report


def test_waiver_file_gives_a_reason_for_every_rule():
    lines = WAIVERS.read_text().splitlines()
    for i, line in enumerate(lines):
        if line.startswith("lint_off"):
            assert lines[i - 1].startswith("//"), f"waiver without a reason: {line}"


def test_lint_catches_a_real_problem(tmp_path):
    bad = tmp_path / "bad.v"
    bad.write_text("module bad(input [3:0] a, output [1:0] y);\n  assign y = a;\nendmodule\n")
    ok, report = lint(bad)
    assert not ok and "WIDTHTRUNC" in report


@pytest.mark.parametrize("args,message", [
    (["--unit", "fft"], "unknown unit 'fft'"),
    (["--unit", "bcq-dot", "--option", "blocks_per_cycle=3"], "blocks_per_cycle=3"),
    (["--unit", "bcq-dot", "--option", "lanes=3"], "--option lanes"),
    (["--unit", "bcq-dot", "--option", "max_len=100"], "max_len=100"),
    (["--unit", "bcq-dot", "--config", "block_len=5"], "block_len=5")])
def test_bad_verilog_requests(tmp_path, args, message):
    r = bcq("verilog", *args, "-o", tmp_path / "x.v")
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr


@pytest.mark.parametrize("unit,options", [("bxp-mac", []), ("bxp-mac", ["block_bits=4"]), ("int-mac", ["lanes=4"]),
                                          ("mxfp4-dot", []), ("mxfp4-dot", ["lanes=4"])])
def test_other_units_verilog_is_lint_clean(tmp_path, unit, options):
    out = tmp_path / f"{unit.replace('-', '_')}.v"  # -Wall wants file name == module name
    r = bcq("verilog", "--unit", unit, "-o", out, *[a for o in options for a in ("--option", o)])
    assert r.returncode == 0, r.stderr
    ok, report = lint(out)
    assert ok, report


def test_bxp_mac_verilog_reports_products_per_cycle(tmp_path):
    r = bcq("verilog", "--unit", "bxp-mac", "-o", tmp_path / "m.v")
    assert "exact8:1, exact4:4, exact2:16" in r.stdout and "dynamic2:4" in r.stdout
    r = bcq("verilog", "--unit", "bxp-mac", "--config", "block_len=4", "-o", tmp_path / "m.v")
    assert r.returncode == 2 and "takes --option instead" in r.stderr
