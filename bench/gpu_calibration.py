"""Calibration and encode speed on CPU and, when present, CUDA (the same code, `device=`).
Run: python -m bench.gpu_calibration (prints a table; CI has no GPU and does not run it)."""
import time

import torch

from sw.calibdata import synthetic_calibration_data
from sw.config import DEFAULT
from sw.lobcq import calibrate


def main():
    data = synthetic_calibration_data(0)
    rows = []
    results = {}
    for device in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
        t = time.perf_counter()
        r = calibrate(data, DEFAULT, iters=30, device=device, progress=False)
        dt = time.perf_counter() - t
        results[device] = r
        rows.append((device, dt, r.mse_history[0], r.mse_history[-1], r.mse_final))
    for d, dt, m0, m1, mf in rows:
        print(f"{d:5s} calibration 30 iters, 2^16 blocks: {dt:6.2f} s; MSE {m0:.5f} -> {m1:.5f}, grid {mf:.5f}")
    if "cuda" in results:
        same = results["cpu"].codebooks == results["cuda"].codebooks
        diff = int((results["cpu"].codebooks.entries != results["cuda"].codebooks.entries).sum())
        print(f"CUDA codebooks identical to the CPU reference: {same} ({diff} of 256 entries differ)")
        print(torch.cuda.get_device_name(0))


if __name__ == "__main__":
    main()
