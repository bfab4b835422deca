"""The main job in one command (``make demo`` / ``bcq demo``): a real layer's weights -> LO-BCQ
image -> engine Verilog with the image baked in -> Verilator simulation -> bit-exact check
against the golden model, and the error against FP32."""

import json
from pathlib import Path
import time

import torch
import torch.nn.functional as F

LAYER = "encoder.layer.0.attention.self.query.weight"


def run_demo(output="out/demo", *, lanes=4, vectors=4, waves=False):
    from hw.units import write_verilog
    from hw.gemv import GEMV
    from sw.codebooks import default_codebooks
    from sw.errors import BCQError
    from sw.golden import to_value
    from sw.image import read_image, write_image
    from sw.image_layout import EngineLayout
    from sw.lobcq import encode
    from sw.models import minilm_layer, minilm_path
    from .runner import build, run_cocotb

    out = Path(output).resolve()
    t0 = time.perf_counter()
    cb = default_codebooks()
    layout = EngineLayout(cb.config, lanes, 1)
    weight = minilm_layer(LAYER)
    print(f"[1/4] layer {LAYER} {tuple(weight.shape)} of all-MiniLM-L6-v2 ({minilm_path().parent.parent.name})")
    write_image(out / "image", {LAYER: weight}, cb, layout)
    img = read_image(out / "image", layout)
    print(f"[2/4] LO-BCQ image ({cb.config.describe()}) -> {out / 'image'}/")
    info = write_verilog("gemv", out / "rtl", config=cb.config, image=out / "image", layer=LAYER, options=["rom=true"])
    print(f"[3/4] {info.split(';  ports')[0]}")
    g = torch.Generator().manual_seed(0)
    xs = torch.randn(vectors, weight.shape[1], generator=g)
    torch.save(xs, out / "activations.pt")
    dut = GEMV(layout, max_rows=weight.shape[0], max_cols=weight.shape[1], codebooks=cb,
               image=img.layers[LAYER], rom=True)
    build_dir = build(dut, "gemv", waves=waves)
    params = {"image": str(out / "image"), "layer": LAYER, "activations": str(out / "activations.pt"),
              "load": "baked", "seed": 0, "stall": 0.0, "out": str((out / "results.json").resolve()),
              "acc_bits": dut.acc_bits}
    sim_dir = out / "sim"
    try:
        run_cocotb(build_dir, "gemv", "sim.tb_gemv", test_dir=sim_dir, env={"GEMV_TB": json.dumps(params)}, waves=waves)
    except AssertionError as e:
        raise BCQError(f"the simulation did not match the golden model; see {sim_dir / 'sim.log'}: {str(e)[:300]}") from None
    res = json.loads((out / "results.json").read_text())
    acc = torch.tensor(res["values"]).reshape(vectors, -1)
    q = img.layers[LAYER].weights
    y_hw = torch.stack([to_value(acc[v], q, encode(xs[v], cb)) for v in range(vectors)])
    y_fp = F.linear(xs.double(), weight.double())
    rel = float((y_hw - y_fp).norm() / y_fp.norm())
    macs = vectors * weight.numel()
    print(f"[4/4] Verilator: {vectors} activation vectors x {weight.shape[0]} rows, bit-exact against the golden "
          f"model; {res['cycles']} cycles ({macs / res['cycles']:.1f} MACs/cycle of {dut.macs_per_cycle})")
    print(f"\nrelative L2 error of the engine's output vs FP32 F.linear: {rel:.4f}")
    print(f"image: {out / 'image'}/   Verilog: {out / 'rtl' / 'gemv.v'}   simulation log: {sim_dir / 'sim.log'}")
    if waves:
        print(f"waveform: {sim_dir / 'dump.fst'}")
    print(f"done in {time.perf_counter() - t0:.0f} s")
    return rel
