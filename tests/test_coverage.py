"""The coverage summary (``bcq.sim.coverage``) on a hand-written Verilator coverage file: points
merged over instances, the Yosys backend's never-taken branch excluded, uncovered lines listed
with the Python line behind the signal they assign; and the stress command's argument errors."""
import pytest

from bcq.sim.coverage import format_summary, read_points, summarize
from bcq.sim.stress import main as stress_main

VERILOG = '''module top(clk, a, y);
  reg \\$auto$verilog_backend.cc:2355:dump_module$1  = 0;
  (* src = "/somewhere/hw/thing.py:42" *)
  reg [3:0] count = 4'h0;
  always @* begin
    if (\\$auto$verilog_backend.cc:2355:dump_module$1 ) begin end
    y = a;
  end
  always @(posedge clk) begin
    if (a) count <= count + 1;
    else count <= 4'h0;
  end
endmodule
'''


def point(kind, module, line, span, comment, count, hier="TOP.top"):
    page = {"line": "v_line", "branch": "v_branch", "toggle": "v_toggle"}[kind]
    kv = {"f": "design.v", "l": str(line), "n": "3", "t": kind, "page": f"{page}/{module}", "o": comment,
          "S": span, "h": hier}
    return "C '" + "".join(f"\x01{k}\x02{v}" for k, v in kv.items()) + f"' {count}\n"


def test_summary_per_module(tmp_path):
    (tmp_path / "design.v").write_text(VERILOG)
    dat = tmp_path / "coverage.dat"
    dat.write_text("# SystemC::Coverage-3\n" + "".join([
        point("branch", "top", 6, "6", "if", 0),                 # the backend's artifact: excluded
        point("line", "top", 7, "7", "block", 10),
        point("branch", "top", 10, "10", "if", 0, "TOP.top.u0"),   # two instances of one module: merged
        point("branch", "top", 10, "10", "if", 0, "TOP.top.u1"),
        point("branch", "top", 11, "11", "else", 3),
        point("toggle", "top", 4, "4", "count[0]:0->1", 5),
        point("toggle", "top", 4, "4", "count[3]:0->1", 0),
        point("toggle", "top", 2, "2", "__024auto__024verilog_backend.cc:0->1", 0),
    ]))
    assert len(read_points(dat)) == 7
    s = summarize(dat, tmp_path / "design.v")
    m = s["top"]
    assert (m["lines_hit"], m["lines"], m["toggles_hit"], m["toggles"], m["excluded"]) == (2, 3, 1, 2, 2)
    assert m["uncovered"] == [{"verilog_lines": "10", "kind": "branch if", "text": "if (a) count <= count + 1;",
                               "source": "thing.py:42"}]
    assert m["untoggled"] == ["count[3]:0->1"]
    text = format_summary(s)
    assert "| top | 2 / 3 | 66.7 (below 95 %) | 1 / 2 | 50.0 |" in text
    assert "  design.v:10 branch if: if (a) count <= count + 1;  [thing.py:42]" in text
    assert "never toggled in top: count[3]:0->1" in text


@pytest.mark.parametrize("argv,message", [
    (["--configs", "nope"], "unknown config nope (choose from bcq-default, bcq-e8m0, bcq-2bpc, bcq-lb4-nc4, "
                            "bcq-nc1, bxp-mac, gemv)"),
    (["--vectors", "0"], "--vectors and --workers must be positive"),
])
def test_stress_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        stress_main(argv)
    assert e.value.code == 2
    assert capsys.readouterr().err.endswith(f"python -m bcq.sim.stress: error: {message}\n")
