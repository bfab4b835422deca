"""LO-BCQ encode speed and calibration time on a device (the same code as on the CPU, `device=`).

Run on a GPU: ``python -m bench.gpu_calibration`` (writes results/gpu.json). Targets (issue 17): on
a GPU, encode >= 1 G scalars/s (2^26 scalars, the tensor and the codes on the device, the
encoded tensor returned to the host as ``encode`` does) and calibration of a 4096 x 4096 tensor
(30 iterations) < 1 s. Every timing is the best of a few calls after a warm-up call, with the
device synchronized before the clock starts and before it stops. On CUDA it also checks that the
device's results equal the CPU reference bit for bit. A smoke test on any machine:
``python -m bench.gpu_calibration --device cpu --scalars 1048576 --calib-size 512`` (writes
results/gpu-cpu.json, so a CPU run never replaces the GPU figures); CI runs a smaller one.
"""
import argparse
import json
from pathlib import Path
import time

import torch

from bcq.sw.formats.calibdata import synthetic_calibration_data
from bcq.sw.formats.codebooks import default_codebooks
from bcq.sw.formats.config import DEFAULT
from bcq.sw.formats.files import atomic_write
from bcq.sw.formats.lobcq import calibrate, encode, fake_quant


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(device, f, repeat=3):
    """Best wall time of ``repeat`` calls (after a warm-up call), and the last result."""
    out = f()
    best = float("inf")
    for _ in range(repeat):
        _sync(device)
        t = time.perf_counter()
        out = f()
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return best, out


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.gpu_calibration", description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("-o", "--out", help="JSON figures (default: results/gpu.json, with --device cpu results/gpu-cpu.json)")
    p.add_argument("--scalars", type=int, default=1 << 26, help="encode test size (default 2^26)")
    p.add_argument("--calib-size", type=int, default=4096, help="calibrate an N x N tensor (default 4096)")
    args = p.parse_args(argv)
    dev = args.device
    if dev == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is available (a smoke test on the CPU: --device cpu)")
    cb = default_codebooks()
    fig = {"device": dev, "device_name": torch.cuda.get_device_name(0) if dev == "cuda" else "cpu",
           "threads": torch.get_num_threads(), "torch": torch.__version__, "config": DEFAULT.describe()}
    x = torch.randn(args.scalars // 4096, 4096, generator=torch.Generator().manual_seed(1)).to(dev)
    t_fq, y = timed(dev, lambda: fake_quant(x, cb))
    t_enc, q = timed(dev, lambda: encode(x, cb))
    fig["fake_quant_scalars_per_s"] = x.numel() / t_fq
    fig["encode_scalars_per_s"] = x.numel() / t_enc
    print(f"{dev}: LO-BCQ encode {x.numel() / t_enc / 1e9:.4g} G scalars/s (target on a GPU >= 1), "
          f"fake_quant {x.numel() / t_fq / 1e9:.4g} G scalars/s, {x.numel()} scalars, output on {y.device}")

    n = args.calib_size
    w = torch.randn(n, n, generator=torch.Generator().manual_seed(2)).to(dev)
    fig["calibration_tensor"] = [n, n]
    for label, max_blocks in (("default (2^16 blocks sampled)", 1 << 16), (f"all {n * n // DEFAULT.block_len} blocks", None)):
        t_cal, r = timed(dev, lambda: calibrate(w, DEFAULT, device=dev, max_blocks=max_blocks, progress=False), repeat=1)
        fig["calibration_s" + ("" if max_blocks else "_all_blocks")] = t_cal
        print(f"{dev}: calibration of a {n} x {n} tensor, {label}, 30 iterations: {t_cal:.2f} s "
              f"(target on a GPU < 1 s); MSE {r.mse_final:.5f}")
    if dev != "cpu":
        # Bit-for-bit agreement with the CPU reference on a smaller sample.
        xs = x[:256].cpu()
        same_fq = torch.equal(fake_quant(xs.to(dev), cb).cpu(), fake_quant(xs, cb))
        qd, qc = encode(xs.to(dev), cb), encode(xs, cb)
        same_enc = all(torch.equal(getattr(qd, k), getattr(qc, k)) for k in ("indices", "selectors", "scales"))
        data = synthetic_calibration_data(0)
        same_cal = calibrate(data, DEFAULT, device=dev, progress=False).codebooks == \
            calibrate(data, DEFAULT, device="cpu", progress=False).codebooks
        fig.update(encode_identical_to_cpu=same_enc, fake_quant_identical_to_cpu=same_fq,
                   calibration_identical_to_cpu=same_cal)
        print(f"identical to the CPU: encode {same_enc}, fake_quant {same_fq}, calibrated codebooks {same_cal}")
    out = Path(args.out or ("results/gpu.json" if dev == "cuda" else "results/gpu-cpu.json"))
    atomic_write(out, (json.dumps(fig, indent=1) + "\n").encode(), make_parents=True)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
