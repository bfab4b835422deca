"""One layer through the Ax-BxP matrix-vector engine on Verilator in several MAC modes: an int8
image per mode, one engine build (weights loaded through its write port, mode set per run), a
cocotb run bit-exact against the golden model (checked inside ``bcq.sim.tb_bxp_engine``), and
per mode the error against FP32 and the cycles. Used by the tests and ``make bench``."""

import json
from pathlib import Path

import torch
import torch.nn.functional as F

from bcq.hw.bxp_engine import BxPEngine
from bcq.sw.contract.image_layout import BxPLayout
from bcq.sw.formats.axbxp import DEFAULT_BXP, quantize_symmetric
from bcq.sw.formats.errors import BCQError
from bcq.sw.host.image import read_int8_image, write_int8_image

from .engine_run import rel_l2
from .runner import build, run_cocotb

__all__ = ["simulate_bxp_layer"]


def simulate_bxp_layer(workdir, name, weight, modes, *, rows=4, vectors=2, seed=0, stall=0.0, cfg=DEFAULT_BXP):
    """Returns {mode: {rel_l2, cycles, products_per_cycle, peak_products_per_cycle}} and the
    build under key ``build_dir``. Activations: Gaussian vectors, quantized per vector to the
    mode's precision (symmetric, as the weights per output channel)."""
    work = Path(workdir).resolve()
    layout = BxPLayout(cfg, rows)
    xs = torch.randn(vectors, weight.shape[1], generator=torch.Generator().manual_seed(seed))
    runs, quant = [], {}
    for mode in modes:
        write_int8_image(work / mode, {name: weight}, layout, mode)
        qx, sx = quantize_symmetric(xs, layout.mode(mode).precision)
        torch.save(qx, work / f"{mode}.activations.pt")
        runs.append({"image": str(work / mode), "activations": str(work / f"{mode}.activations.pt")})
        quant[mode] = sx
    dut = BxPEngine(layout, max_rows=weight.shape[0], max_cols=weight.shape[1])
    build_dir = build(dut, "bxp_engine")
    params = {"runs": runs, "seed": seed, "stall": stall, "out": str(work / "results.json"), "acc_bits": dut.acc_bits}
    try:
        run_cocotb(build_dir, "bxp_engine", "bcq.sim.tb_bxp_engine", test_dir=work / "sim",
                   env={"BXP_ENGINE_TB": json.dumps(params)})
    except AssertionError as e:
        raise BCQError(f"the Ax-BxP engine did not match the golden model; see {work / 'sim' / 'sim.log'}: "
                       f"{str(e)[:300]}") from None
    y_fp = F.linear(xs.double(), weight.double())
    out = {"build_dir": build_dir}
    for mode, res in zip(modes, json.loads((work / "results.json").read_text())):
        layer = read_int8_image(work / mode).layer()
        acc = torch.tensor(res["values"], dtype=torch.float64).reshape(vectors, -1)
        y = acc * quant[mode].double() * layer.scales.double().T
        out[mode] = {"rel_l2": rel_l2(y, y_fp), "cycles": res["cycles"],
                     "products_per_cycle": vectors * weight.numel() / res["cycles"],
                     "peak_products_per_cycle": dut.products_per_cycle(mode)}
    return out
