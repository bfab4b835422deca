"""A real PyTorch layer end to end: weights -> LO-BCQ image -> engine on Verilator -> bit-exact
against the golden model (checked inside sim/tb_gemv.py); the error of the engine's output
against FP32 F.linear is reported."""
import pytest
import torch

from bcq.sim.engine_run import simulate_layer
from bcq.sw.host.models import minilm_layer

pytestmark = [pytest.mark.verilator]


def report(name, shape, r, stall):
    print(f"\n{name} {shape}: bit-exact; relative L2 error vs FP32 F.linear {r['rel_l2']:.4f}; "
          f"{r['cycles']} cycles, {r['macs_per_cycle']:.1f} of {r['peak_macs_per_cycle']} MACs/cycle (stalls {stall})")


def test_linear_256(tmp_path, seed):
    torch.manual_seed(0)
    w = torch.nn.Linear(256, 256, bias=False).weight.detach()
    r = simulate_layer(tmp_path, "linear", w, vectors=4, seed=seed, stall=0.2)
    report("nn.Linear", (256, 256), r, 0.2)
    assert r["rel_l2"] < 0.15  # W4A4 at 4.625 bits: about 8% on Gaussian-like data


def test_minilm_query_projection(tmp_path, seed):
    name = "encoder.layer.0.attention.self.query.weight"
    r = simulate_layer(tmp_path, name, minilm_layer(name), vectors=3, seed=seed, stall=0.1)
    report("MiniLM " + name, (384, 384), r, 0.1)
    assert r["rel_l2"] < 0.15
