"""Calibration data for the universal codebooks: the synthetic mix, and real tensors of a model.

Synthetic: a fixed, seeded mix of bell-shaped and heavy-tailed data, the shapes LLM weights and
activations take once cut into scaled block arrays (``bcq calibrate --synthetic``).

Real data (:func:`model_calibration_data`): every ``nn.Linear`` weight of a torch model and the
inputs those layers see while the model runs on calibration data, recorded by forward pre-hooks,
with blocks along the reduction dimension exactly as W4A4 inference quantizes them. Loading a
particular model and its calibration sentences is the host layer's job
(:mod:`bcq.sw.host.minilm`); this module only needs the module and a function that runs it.
"""

import torch

__all__ = ["synthetic_calibration_data", "record_linear_inputs", "model_calibration_data"]


def synthetic_calibration_data(seed=0, rows=4096, cols=256):
    g = torch.Generator().manual_seed(seed)
    gauss = torch.randn(rows, cols, generator=g, dtype=torch.float64)
    u = torch.rand(rows // 2, cols, generator=g, dtype=torch.float64) - 0.5
    laplace = -torch.sign(u) * torch.log1p(-2 * u.abs())
    # Student-t(3): normal / sqrt(chi2_3 / 3)
    z = torch.randn(rows // 4, cols, generator=g, dtype=torch.float64)
    chi2 = torch.randn(rows // 4, cols, 3, generator=g, dtype=torch.float64).pow(2).sum(-1)
    student = z / torch.sqrt(chi2 / 3)
    return [gauss, laplace, student]


def _linears(model):
    return [(name, m) for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)]


def record_linear_inputs(model, run):
    """Call ``run()`` (which runs ``model``) with a forward pre-hook on every ``nn.Linear``; return
    ``{layer name: float32 tensor [rows, in_features]}`` of the inputs each layer saw, in call
    order (layers that never ran are left out). The hooks are removed afterwards, always."""
    seen = {}

    def hook(mod, args, name):
        x = args[0].detach()
        seen.setdefault(name, []).append(x.reshape(-1, x.shape[-1]).float().cpu())

    hooks = [m.register_forward_pre_hook(lambda mod, args, name=n: hook(mod, args, name))
             for n, m in _linears(model)]
    try:
        with torch.no_grad():
            run()
    finally:
        for h in hooks:
            h.remove()
    return {n: torch.cat(v) for n, v in seen.items()}


def model_calibration_data(model, run, multiple):
    """Real calibration tensors of ``model``: its ``nn.Linear`` weights and their recorded inputs
    (:func:`record_linear_inputs` over ``run``), each a 2-D float32 tensor whose last dimension
    (the reduction dimension, the one the format cuts into blocks) is a multiple of ``multiple``;
    layers whose width is not are left out. Returns ``(tensors, names)``, in layer order, each
    weight before the inputs of the same layer."""
    acts = record_linear_inputs(model, run)
    tensors, names = [], []
    for n, m in _linears(model):
        if m.in_features % multiple:
            continue
        tensors.append(m.weight.detach().float().cpu())
        names.append(f"{n}.weight")
        if n in acts:
            tensors.append(acts[n])
            names.append(f"{n}:input")
    return tensors, names
