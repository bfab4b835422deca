"""MiniLM-L6 with integer linear layers computed by the Ax-BxP golden model, one run per mode
(``make bench`` section ``minilm_bxp``).

The pretrained all-MiniLM-L6-v2 encodes the fixed sentences of ``bench/data/sentences.txt``
(as ``bench/minilm.py`` does). In a mode of precision p, every linear layer that runs computes
``y = (Q(x) @ Q(W).T) * s_x * s_w + b`` where ``Q`` is symmetric p-bit quantization
(``quantize_symmetric``: weights per output channel, activations per token, both dynamic
range ``max|.|``), and the integer matrix product is ``bcq.sw.formats.axbxp.matmul``, the
golden model of what the MAC computes in that mode (exact8 is plain W8A8, exact4 W4A4).
Everything else (attention softmax, layer norm, GELU) stays FP32.

Figures per mode: the MAC's products per cycle; sentence-embedding cosine to FP32 (mean,
min); retrieval agreement (for every sentence, its nearest other sentence by cosine is the
same as FP32's: the closest thing to a task accuracy this set offers); and per layer the
relative L2 error of the layer's output against the FP32 layer on the same input.
"""

import torch

from bcq.sw.formats.axbxp import DEFAULT_BXP, matmul, quantize_symmetric
from bench.minilm import load_model, load_sentences

__all__ = ["evaluate_modes", "nearest_agreement"]


def nearest_agreement(emb, ref):
    """Fraction of rows whose most similar other row (cosine; ``emb``/``ref`` normalized) is the
    same in ``emb`` as in ``ref``."""
    def nearest(e):
        sim = e @ e.T
        sim.fill_diagonal_(-2.0)
        return sim.argmax(-1)
    return float((nearest(emb) == nearest(ref)).double().mean())


class _IntegerLinears:
    """Forward hooks that replace every ``nn.Linear`` output by the mode's integer computation
    and record each layer's error power against the FP32 output on the same input.

    Parameters
    ----------
    linears : list of (str, torch.nn.Linear)
        The layers to replace.
    cfg : BxPConfig
        The MAC's configuration.
    mode : Mode
        The mode whose golden model computes the products.
    """

    def __init__(self, linears, cfg, mode):
        self.cfg, self.mode = cfg, mode
        self.qw = {n: quantize_symmetric(mod.weight.data, mode.precision) for n, mod in linears}
        self.power = {n: [0.0, 0.0] for n, _ in linears}        # FP32 output signal, error
        self.hooks = [mod.register_forward_hook(lambda mod, args, out, name=n: self._hook(mod, args, out, name))
                      for n, mod in linears]

    def _hook(self, mod, args, out, name):
        x = args[0].reshape(-1, args[0].shape[-1]).float()
        qx, sx = quantize_symmetric(x, self.mode.precision)
        qw, sw = self.qw[name]
        y = matmul(qx, qw, self.cfg, self.mode).double() * sx.double() * sw.double().T
        y = y.float() + (mod.bias.float() if mod.bias is not None else 0)
        ref = out.reshape(y.shape).double()
        self.power[name][0] += float(ref.pow(2).sum())
        self.power[name][1] += float((y.double() - ref).pow(2).sum())
        return y.reshape(out.shape).to(out.dtype)

    def remove(self):
        for h in self.hooks:
            h.remove()


def evaluate_modes(cfg=DEFAULT_BXP, modes=None, sentences=None, batch_size=64):
    """Per mode (default: all of ``cfg``): products/cycle, cosine to FP32 (mean, min), nearest-
    neighbour agreement with FP32, and per layer the relative L2 error of its output."""
    sentences = sentences or load_sentences()
    model = load_model()
    enc = dict(batch_size=batch_size, convert_to_tensor=True, normalize_embeddings=True, show_progress_bar=False)
    with torch.no_grad():
        ref = model.encode(sentences, **enc)
    linears = [(n, mod) for n, mod in model.named_modules() if isinstance(mod, torch.nn.Linear)]
    results = {"sentences": len(sentences), "modes": {}}
    for mode in modes or cfg.modes:
        hooks = _IntegerLinears(linears, cfg, mode)
        try:
            with torch.no_grad():
                emb = model.encode(sentences, **enc)
        finally:
            hooks.remove()
        cos = (emb * ref).sum(-1)
        layers = {n: (p[1] / p[0]) ** 0.5 for n, p in hooks.power.items() if p[0] > 0}  # layers that ran
        results["modes"][mode.name] = {
            "precision": mode.precision, "kind": mode.kind, "products_per_cycle": cfg.products_per_cycle(mode),
            "cosine_mean": float(cos.mean()), "cosine_min": float(cos.min()),
            "nearest_agreement": nearest_agreement(emb, ref), "layer_rel_l2": layers,
            "layer_rel_l2_mean": sum(layers.values()) / len(layers), "layer_rel_l2_max": max(layers.values())}
    return results
