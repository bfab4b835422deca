"""A real PyTorch layer end to end: weights -> LO-BCQ image -> engine on Verilator -> bit-exact
against the golden model; error of the engine's output against FP32 F.linear is reported."""
import json

import pytest
import torch
import torch.nn.functional as F

from hw.gemv import GEMV
from sim.runner import build, run_cocotb
from sw.codebooks import default_codebooks
from sw.golden import to_value
from sw.image import read_image, write_image
from sw.image_layout import EngineLayout
from sw.lobcq import encode
from sw.models import minilm_layer

pytestmark = [pytest.mark.verilator]
LANES = 4


def run_layer(tmp_path, name, weight, n_vectors, seed, stall):
    cb = default_codebooks()
    layout = EngineLayout(cb.config, LANES, 1)
    write_image(tmp_path / "image", {name: weight}, cb, layout)
    img = read_image(tmp_path / "image", layout)
    g = torch.Generator().manual_seed(seed)
    xs = torch.randn(n_vectors, weight.shape[1], generator=g)
    torch.save(xs, tmp_path / "x.pt")
    # One build serves every layer up to 384 x 384: weights arrive through the write ports.
    dut = GEMV(layout, max_rows=384, max_cols=384)
    build_dir = build(dut, "gemv")
    params = {"image": str(tmp_path / "image"), "layer": name, "activations": str(tmp_path / "x.pt"),
              "load": "ports", "seed": seed, "stall": stall, "out": str(tmp_path / "out.json"),
              "acc_bits": dut.acc_bits}
    run_cocotb(build_dir, "gemv", "sim.tb_gemv", test_dir=tmp_path / "run", env={"GEMV_TB": json.dumps(params)})
    res = json.loads((tmp_path / "out.json").read_text())
    acc = torch.tensor(res["values"]).reshape(n_vectors, -1)
    q = img.layers[name].weights
    y_hw = torch.stack([to_value(acc[v], q, encode(xs[v], cb)) for v in range(n_vectors)])
    y_fp = F.linear(xs.double(), weight.double())
    rel = float((y_hw - y_fp).norm() / y_fp.norm())
    macs = n_vectors * weight.numel()
    print(f"{name} {tuple(weight.shape)}: {n_vectors} vectors bit-exact; relative L2 error vs FP32 "
          f"F.linear {rel:.4f}; {res['cycles']} cycles, {macs / res['cycles']:.1f} MACs/cycle with stalls {stall}")
    return rel


@pytest.mark.xdist_group("verilator")
def test_linear_256(tmp_path, seed):
    torch.manual_seed(0)
    layer = torch.nn.Linear(256, 256, bias=False)
    rel = run_layer(tmp_path, "linear", layer.weight.detach(), 4, seed, 0.2)
    assert rel < 0.15  # W4A4 at 4.625 bits: about -18 dB


@pytest.mark.xdist_group("verilator")
def test_minilm_query_projection(tmp_path, seed):
    rel = run_layer(tmp_path, "encoder.layer.0.attention.self.query.weight", minilm_layer(), 3, seed, 0.1)
    assert rel < 0.15
