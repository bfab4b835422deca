"""``make stress``: long randomized runs on Verilator, outside ``make test``.

Per unit configuration, ``--vectors`` (default 10**6) vectors with random stalls on both
streams (BCQ unit: default config, E8M0 scales, 2 blocks/cycle; Ax-BxP MAC: random mode and
signedness switches within vectors), all checked bit-exact against the golden model. Prints
vectors/s and writes results/stress.json.
"""

import argparse
import json
from pathlib import Path
import sys
import time

from bcq.hw.bcq_dot import BCQDot
from bcq.hw.bxp_mac import BxPMac
from bcq.sw.formats.axbxp import DEFAULT_BXP
from bcq.sw.formats.config import BCQConfig

from .runner import ROOT, build, run_cocotb


def _units():
    units = {}
    for name, cfg, bpc in (("bcq-default", BCQConfig(), 1), ("bcq-e8m0", BCQConfig(scale_format="e8m0"), 1),
                           ("bcq-2bpc", BCQConfig(), 2)):
        max_len = 8 * cfg.array_len
        units[name] = (lambda cfg=cfg, bpc=bpc, max_len=max_len: BCQDot(cfg, blocks_per_cycle=bpc, max_len=max_len),
                       "bcq_dot", {"unit": "bcq", "config": cfg.to_dict(), "blocks_per_cycle": bpc, "max_len": max_len})
    units["bxp-mac"] = (lambda: BxPMac(DEFAULT_BXP, max_len=16), "bxp_mac",
                        {"unit": "bxp", "config": {"n_bits": DEFAULT_BXP.n_bits, "block_bits": DEFAULT_BXP.block_bits}})
    return units


def main(argv=None):
    units = _units()
    ap = argparse.ArgumentParser(prog="python -m bcq.sim.stress", description=__doc__.split("\n\n")[0])
    ap.add_argument("--vectors", type=int, default=10 ** 6)
    ap.add_argument("--chunk", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--units", default=",".join(units), help="comma-separated: " + ", ".join(units))
    ap.add_argument("-o", "--output", default=str(ROOT / "results" / "stress.json"))
    args = ap.parse_args(argv)
    chosen = [u.strip() for u in args.units.split(",") if u.strip()]
    bad = [u for u in chosen if u not in units]
    if bad or args.vectors < 1 or args.chunk < 1:
        ap.error(f"unknown unit {', '.join(bad)} (choose from {', '.join(units)})" if bad
                 else "--vectors and --chunk must be positive")
    report = {}
    for name in chosen:
        make, top, params = units[name]
        params = dict(params, vectors=args.vectors, chunk=args.chunk, seed=args.seed,
                      stall_in=0.2, stall_out=0.3)
        test_dir = ROOT / "sim_build" / "stress" / name
        print(f"{name}: {args.vectors} vectors, stalls 20% in / 30% out ...", flush=True)
        t0 = time.monotonic()
        log = run_cocotb(build(make(), top), top, "bcq.sim.tb_stress", test_dir=test_dir,
                         env={"STRESS": json.dumps(params)})
        stats = json.loads((test_dir / "stats.json").read_text())
        stats["vectors_per_s"] = stats["vectors"] / stats["seconds"]
        stats["wall_s"] = time.monotonic() - t0
        report[name] = stats
        print(f"  {stats['vectors']} vectors bit-exact, {stats['cycles']} cycles, "
              f"{stats['vectors_per_s']:.0f} vectors/s ({stats['cycles'] / stats['seconds']:.0f} cycles/s); log {log}",
              flush=True)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    old = json.loads(out.read_text()) if out.exists() else {}
    old.update(report)
    out.write_text(json.dumps(old, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
