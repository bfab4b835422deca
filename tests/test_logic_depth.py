"""The pre-placement path estimate (``bcq.sim.logic_depth``) on hand-built netlists, whose
arrival times are worked out here from the documented delays."""
import json

import pytest

from bcq.sim import logic_depth as L


def _cell(type_, dirs, conns):
    return {"type": type_, "port_directions": dirs, "connections": conns, "attributes": {}}


def _ff(d, q):
    return _cell("TRELLIS_FF", {"CLK": "input", "DI": "input", "Q": "output"}, {"CLK": [1], "DI": [d], "Q": [q]})


def _lut(ins, z):
    return _cell("LUT4", {**{p: "input" for p in "ABCD"}, "Z": "output"},
                 {**{p: [b] for p, b in zip("ABCD", ins)}, "Z": [z]})


def _ccu2(a0, cin, s1, cout):
    conns = {"A0": [a0], "S1": [s1], "COUT": [cout]}
    if cin is not None:
        conns["CIN"] = [cin]
    return _cell("CCU2C", {"A0": "input", "CIN": "input", "S1": "output", "COUT": "output"}, conns)


def _netlist(cells):
    return {"modules": {"top": {"attributes": {"top": 1}, "cells": cells, "netnames": {}}}}


def test_lut_and_carry_paths_get_the_documented_delays():
    net = 0.9
    cells = {
        "src": _ff(2, 10),
        "l1": _lut([10, 3], 11), "l2": _lut([11, 10], 12), "dst_lut": _ff(12, 13),
        # A carry chain: A0 -> COUT, CIN -> COUT (free net), CIN -> S1.
        "c1": _ccu2(10, None, 20, 21), "c2": _ccu2(4, 21, 22, 23), "c3": _ccu2(5, 23, 24, 25), "dst_carry": _ff(24, 26),
    }
    ends = {(e[1], e[2]): e for e in L.analyse(_netlist(cells), net)}
    t, _, _, path = ends[("dst_lut", "DI")]
    assert t == pytest.approx(0.52 + 2 * (net + 0.24) + net + L.SETUP_NS)
    assert path == ["src", "l1", "l2"]
    t, _, _, path = ends[("dst_carry", "DI")]
    assert t == pytest.approx(0.52 + net + 0.45 + 0.07 + 0.5 + net + L.SETUP_NS)
    assert path == ["src", "c1", "c2", "c3"]
    # Slowest first; the LUT path (3.80 ns) is the worst here.
    assert L.analyse(_netlist(cells), net)[0][1] == "dst_lut"


def test_block_ram_output_starts_late_and_a_combinational_loop_ends():
    cells = {
        "ram": _cell("DP16KD", {"DOA0": "output", "CLKA": "input", "ADA0": "input"}, {"DOA0": [30], "CLKA": [1], "ADA0": [31]}),
        "l": _lut([30], 32), "dst": _ff(32, 33),
        "loop1": _lut([41], 40), "loop2": _lut([40], 41), "dst2": _ff(41, 42),
    }
    ends = {(e[1], e[2]): e[0] for e in L.analyse(_netlist(cells), 1.0)}
    assert ends[("dst", "DI")] == pytest.approx(5.0 + 1.0 + 0.24 + 1.0 + L.SETUP_NS)
    assert ("dst2", "DI") not in ends or ends[("dst2", "DI")] < 10


def test_cli_reports_groups_and_names_a_bad_file(tmp_path, capsys):
    cells = {"a.b.src_TRELLIS_FF_Q": _ff(2, 10), "l": _lut([10], 11), "a.b.dst3_TRELLIS_FF_Q_1": _ff(11, 12)}
    path = tmp_path / "top.json"
    path.write_text(json.dumps(_netlist(cells)))
    L.main([str(path), "--limit-ns", "1"])
    out = capsys.readouterr().out
    assert "1 over 1 ns" in out and "a.b.src  ->  a.b.dst#" in out
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SystemExit, match=f"{bad}: not a JSON netlist"):
        L.main([str(bad)])
    with pytest.raises(SystemExit, match="cannot read the netlist"):
        L.main([str(tmp_path / "missing.json")])
    path.write_text(json.dumps({"modules": {}}))
    with pytest.raises(SystemExit, match="expected one top module"):
        L.main([str(path)])


def test_routed_arrivals_replace_the_estimate(tmp_path, capsys):
    # Two ends: dst (a flip-flop whose DI the packer renamed M) and ram's address (no report).
    cells = {"src": _ff(2, 10), "l": _lut([10], 11), "dst": _ff(11, 12),
             "ram": _cell("DP16KD", {"ADA0": "input", "CLKA": "input", "DOA0": "output"},
                          {"ADA0": [11], "CLKA": [1], "DOA0": [13]})}
    net = _netlist(cells)
    report = {"detailed_net_timings": [
        {"net": "x", "endpoints": [{"cell": "dst", "port": "M", "delay": [5.5, 7.25]}]},
        {"net": "y", "endpoints": [{"cell": "dst", "port": "CE", "delay": 3.0}, {"cell": "other", "port": "A", "delay": 9.0}]}]}
    routed = L.routed_arrivals(report)
    assert routed[0][("dst", "M")] == 7.25 and routed[1]["dst"] == 7.25
    ends = L.analyse(net, 0.9, routed)
    assert [(e[0], e[1], e[2], e[3]) for e in ends] == [(7.25, "dst", "DI", ["src", "l"])]
    assert {e[1] for e in L.analyse(net, 0.9)} == {"dst", "ram"}
    (tmp_path / "top.json").write_text(json.dumps(net))
    (tmp_path / "r.json").write_text(json.dumps(report))
    L.main([str(tmp_path / "top.json"), "--routed", str(tmp_path / "r.json"), "--limit-ns", "7"])
    out = capsys.readouterr().out
    assert "routed arrivals at 3 end points" in out and "1 over 7 ns (routed arrivals; worst 7.25 ns)" in out
    (tmp_path / "r.json").write_text(json.dumps({"fmax": {}}))
    with pytest.raises(SystemExit, match="detailed_net_timings"):
        L.main([str(tmp_path / "top.json"), "--routed", str(tmp_path / "r.json")])
