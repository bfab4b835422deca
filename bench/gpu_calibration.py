"""Calibration and encode speed on CPU and, when present, CUDA (the same code, `device=`).
Run: python -m bench.gpu_calibration [OUT.json] (prints a table and writes the figures, by
default to results/gpu.json, which the bench report includes; CI has no GPU and does not run it)."""
import json
from pathlib import Path
import sys
import time

import torch

from bcq.sw.formats.calibdata import synthetic_calibration_data
from bcq.sw.formats.codebooks import default_codebooks
from bcq.sw.formats.config import DEFAULT
from bcq.sw.formats.lobcq import calibrate, fake_quant


def encode_rate(device, n=1 << 22):
    """Scalars/s of LO-BCQ encode + decode (fake_quant) on ``device``."""
    cb = default_codebooks()
    x = torch.randn(n // 1024, 1024, generator=torch.Generator().manual_seed(1)).to(device)
    fake_quant(x[:64], cb)
    if device == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    y = fake_quant(x, cb)
    if device == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t), str(y.device)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    out_path = Path(argv[0] if argv else "results/gpu.json")
    data = synthetic_calibration_data(0)
    rows = []
    results = {}
    figures = {}
    for device in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
        t = time.perf_counter()
        r = calibrate(data, DEFAULT, iters=30, device=device, progress=False)
        dt = time.perf_counter() - t
        results[device] = r
        rows.append((device, dt, r.mse_history[0], r.mse_history[-1], r.mse_final))
        figures[device] = {"calibration_s": dt, "mse_final": r.mse_final}
        try:
            rate, ran_on = encode_rate(device)
            figures[device]["fake_quant_scalars_per_s"] = rate
            figures[device]["fake_quant_ran_on"] = ran_on
            print(f"{device:5s} LO-BCQ fake_quant: {rate / 1e6:.1f} Mscalars/s (output on {ran_on})")
        except Exception as e:  # report, do not hide, a path that does not run on this device
            figures[device]["fake_quant_error"] = f"{type(e).__name__}: {e}"
            print(f"{device:5s} LO-BCQ fake_quant failed: {type(e).__name__}: {e}")
    for d, dt, m0, m1, mf in rows:
        print(f"{d:5s} calibration 30 iters, 2^16 blocks: {dt:6.2f} s; MSE {m0:.5f} -> {m1:.5f}, grid {mf:.5f}")
    if "cuda" in results:
        same = results["cpu"].codebooks == results["cuda"].codebooks
        diff = int((results["cpu"].codebooks.entries != results["cuda"].codebooks.entries).sum())
        print(f"CUDA codebooks identical to the CPU reference: {same} ({diff} of 256 entries differ)")
        print(torch.cuda.get_device_name(0))
        figures["cuda"].update(device=torch.cuda.get_device_name(0), codebooks_identical_to_cpu=same,
                               entries_differing=diff)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(figures, indent=1) + "\n")
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
