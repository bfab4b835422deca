"""Logic depth of a synthesized ECP5 netlist, before placement: which register-to-register paths
are deep enough to miss a clock, grouped by where they start and end.

A board build takes an hour here; Yosys alone takes minutes. This reads the JSON netlist that
``synth_ecp5`` writes (``build/ulx3s-85f/top.json`` after ``make bitstream``, or any
``write_json``), walks every path from a timing start point (flip-flop, block RAM output,
registered multiplier output) through LUT4, PFUMX, L6MUX21, CCU2C and LUT RAM read ports to an end
point, and gives each path a delay estimate: nextpnr-ecp5's cell delays (speed grade 6, rounded)
plus a fixed delay per routed net (default 0.9 ns; carry nets inside a chain are free). Routing
after placement is not fixed, so the figure is a ranking of paths, not a timing sign-off: a
path past the clock period here needs more registers wherever it is placed; a path under it may
still fail when its ends are placed far apart.

    python -m bcq.sim.logic_depth build/ulx3s-85f/top.json [--net-ns 0.9] [--limit-ns 10]

After a build, ``--routed build/ulx3s-85f/top-report.json`` (nextpnr's ``--report`` with
``--detailed-timing-report``, which ``bcq build`` asks for) replaces the fixed delay by each
end point's routed arrival: every end point that misses the clock after routing, not only the
one critical path nextpnr prints, grouped the same way (by end, and by where its slowest
pre-placement path starts).
"""

import argparse
import json
import re
import sys
from collections import Counter, defaultdict

from bcq.sw.formats.errors import FileFormatError

__all__ = ["analyse", "routed_arrivals", "main"]

# Clock-to-output of the timing start points (ns).
START_NS = {"TRELLIS_FF": 0.52, "DP16KD": 5.0, "MULT18X18D": 1.6}
SETUP_NS = 0.1
CLOCK_PORTS = {"CLK", "CLKA", "CLKB", "WCK", "CLK0", "CLK1", "CLK2", "CLK3"}
END_TYPES = ("TRELLIS_FF", "DP16KD", "MULT18X18D", "TRELLIS_DPR16X4")


def _arcs(cell, port):
    """(input bit, delay ns, is a carry arc) into output ``port`` of a combinational cell, or
    None for a cell that starts paths (or that this model does not know: treated as a start)."""
    t, conn = cell["type"], cell["connections"]

    def bits(ports, ns, carry=False):
        return [(b, ns, carry) for p in ports for b in conn.get(p, [])[:1] if isinstance(b, int)]
    if t == "LUT4":
        return bits("ABCD", 0.24)
    if t == "PFUMX":
        return bits(("ALUT", "BLUT", "C0"), 0.2)
    if t == "L6MUX21":
        return bits(("D0", "D1", "SD"), 0.2)
    if t == "CCU2C":
        low, high = ("A0", "B0", "C0", "D0"), ("A1", "B1", "C1", "D1")
        if port == "COUT":
            return bits(("CIN",), 0.07, True) + bits(low + high, 0.45)
        if port == "S0":
            return bits(("CIN",), 0.44, True) + bits(low, 0.45)
        return bits(("CIN",), 0.5, True) + bits(low + high, 0.45)
    if t == "TRELLIS_DPR16X4" and port.startswith("DO"):
        return [(b, 0.4, False) for b in conn.get("RAD", []) if isinstance(b, int)]
    return None


def routed_arrivals(report):
    """``{(cell, port): ns}`` and ``{cell: ns}``: the latest routed arrival at every timing end
    point in nextpnr's JSON report (``--report`` with ``--detailed-timing-report``: per net,
    each end point's arrival from the clock, ``[min, max]``, through every cell and routed net
    before it). nextpnr keeps the Yosys names of flip-flops, block RAMs and multipliers; a
    flip-flop's data input may be renamed (DI -> M) by the packer, hence the per-cell figure."""
    timings = report.get("detailed_net_timings")
    if not isinstance(timings, list):
        raise ValueError("the report has no detailed_net_timings (nextpnr --detailed-timing-report)")
    by_port, by_cell = {}, {}
    for t in timings:
        for e in t.get("endpoints", []):
            d = e.get("delay", 0.0)
            d = max(d) if isinstance(d, list) else float(d)
            key = (e.get("cell"), e.get("port"))
            by_port[key] = max(by_port.get(key, 0.0), d)
            by_cell[key[0]] = max(by_cell.get(key[0], 0.0), d)
    return by_port, by_cell


def analyse(netlist, net_ns=0.9, routed=None):
    """Every end point's estimated arrival: a list of ``(ns, end cell, end port, path)``, the
    path a list of cell names from its start, slowest first. ``routed``: the routed arrivals
    (:func:`routed_arrivals`); then only the end points that nextpnr reports are listed, each
    with its routed arrival (the path is still the slowest one before placement: it names
    where the end's logic starts)."""
    tops = [mod for mod in netlist.get("modules", {}).values() if mod.get("attributes", {}).get("top")]
    if len(tops) != 1:
        raise ValueError(f"expected one top module in the netlist, found {len(tops)}")
    cells = tops[0]["cells"]
    driver = {}
    for name, c in cells.items():
        for p, bits in c["connections"].items():
            if c.get("port_directions", {}).get(p) == "output":
                for b in bits:
                    if isinstance(b, int):
                        driver[b] = (name, p)
    memo = {}

    def arrival(bit):
        # Iterative depth-first walk (the netlist's paths are far deeper than Python's stack).
        stack = [bit]
        while stack:
            b = stack[-1]
            if b in memo:
                stack.pop()
                continue
            src = driver.get(b)
            if src is None:
                memo[b] = (0.0, ())
                stack.pop()
                continue
            name, port = src
            cell = cells[name]
            if cell["type"] in START_NS:
                memo[b] = (START_NS[cell["type"]], (name,))
                stack.pop()
                continue
            arcs = _arcs(cell, port)
            if arcs is None:
                memo[b] = (0.0, (name,))
                stack.pop()
                continue
            todo = [a for a, _, _ in arcs if a not in memo]
            if todo:
                memo.setdefault(("visiting", b), 0)
                if memo[("visiting", b)]:      # a combinational loop: cut it here
                    memo[b] = (0.0, (name,))
                    stack.pop()
                    continue
                memo[("visiting", b)] = 1
                stack.extend(todo)
                continue
            best = (0.0, ())
            for a, ns, carry in arcs:
                t, path = memo[a]
                t += ns + (0.0 if carry else net_ns)
                if t > best[0]:
                    best = (t, path + (name,))
            memo[b] = best
            stack.pop()
        return memo[bit]

    ends = []
    for name, c in cells.items():
        if c["type"] not in END_TYPES:
            continue
        for p, bits in c["connections"].items():
            if c.get("port_directions", {}).get(p) != "input" or p in CLOCK_PORTS:
                continue
            for b in bits:
                if isinstance(b, int):
                    t, path = arrival(b)
                    if not path:
                        continue
                    if routed is None:
                        ends.append((t + net_ns + SETUP_NS, name, p, list(path)))
                        continue
                    by_port, by_cell = routed
                    got = by_port.get((name, p), by_cell.get(name) if c["type"] == "TRELLIS_FF" else None)
                    if got is not None:
                        ends.append((got, name, p, list(path)))
    ends.sort(key=lambda e: -e[0])
    return ends


def group(name):
    """A cell's signal name without Yosys's mapping suffixes, digits as ``#``."""
    name = re.sub(r"(_TRELLIS|_CCU2C|_LUT4|_PFUMX|_L6MUX|\$).*", "", name)
    return re.sub(r"\d+", "#", name)


def report(ends, limit_ns, net_ns, top=30, out=None, routed=False):
    out = sys.stdout if out is None else out
    slow = [e for e in ends if e[0] > limit_ns]
    how = "routed arrivals" if routed else f"cell delays + {net_ns:g} ns per net"
    print(f"{len(ends)} path end points; {len(slow)} over {limit_ns:g} ns "
          f"({how}; worst {ends[0][0]:.2f} ns)" if ends else "no paths", file=out)
    worst, count = {}, Counter()
    for t, end, _, path in slow:
        k = (group(path[0]), group(end))
        count[k] += 1
        worst[k] = max(worst.get(k, 0.0), t)
    if count:
        print(f"{'ends':>6} {'worst ns':>8}  from -> to", file=out)
    for k, n in sorted(count.items(), key=lambda kv: -worst[kv[0]])[:top]:
        print(f"{n:6d} {worst[k]:8.2f}  {k[0]}  ->  {k[1]}", file=out)
    return slow


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bcq.sim.logic_depth", description=__doc__.split("\n\n")[0])
    ap.add_argument("netlist", help="Yosys JSON netlist of an ECP5 design (synth_ecp5; write_json)")
    ap.add_argument("--net-ns", type=float, default=0.9, help="delay per routed net (default 0.9)")
    ap.add_argument("--limit-ns", type=float, default=10.0, help="list paths estimated over this (default 10)")
    ap.add_argument("--top", type=int, default=30, help="groups listed (default 30)")
    ap.add_argument("--routed", metavar="REPORT", help="nextpnr's JSON report of the routed build "
                    "(--report with --detailed-timing-report): routed arrivals instead of the estimate")
    a = ap.parse_args(argv)

    def load(path, what):
        try:
            with open(path) as f:
                return json.load(f)
        except OSError as e:
            raise SystemExit(str(FileFormatError(path, f"cannot read the {what}: {e.strerror}")))
        except json.JSONDecodeError as e:
            raise SystemExit(str(FileFormatError(path, f"not a JSON {what} ({e.msg}, line {e.lineno})")))
    netlist = load(a.netlist, "netlist")
    routed = None
    if a.routed:
        try:
            routed = routed_arrivals(load(a.routed, "nextpnr report"))
        except (ValueError, AttributeError, TypeError) as e:
            raise SystemExit(str(FileFormatError(a.routed, f"not a detailed nextpnr report of this netlist: {e}")))
    try:
        ends = analyse(netlist, a.net_ns, routed)
    except (ValueError, KeyError, TypeError) as e:
        raise SystemExit(str(FileFormatError(a.netlist, f"not a Yosys netlist of ECP5 cells: {e}")))
    if routed is not None:
        print(f"{a.routed}: routed arrivals at {len(routed[0])} end points")
    report(ends, a.limit_ns, a.net_ns, a.top, routed=routed is not None)


if __name__ == "__main__":
    main()
