"""LO-BCQ: encode/decode tensors with a frozen codebook set, and calibrate codebooks.

Encoding of a tensor ``x`` whose last dimension is a multiple of LA (``array_len``):

1. optional FP32 per-tensor scale ``ts = amax(|x|) / (entry_max * scale_max)`` (1 if x == 0);
2. per block array, the 8-bit scale is the smallest code whose value ``s`` satisfies
   ``s >= amax(|array|) / (ts * entry_max)``, so the array's largest scalar maps into the
   codebook range ``[-entry_max, entry_max]`` without clipping;
3. every block of the normalized array ``y = x / (ts * s)`` takes, for each codebook, the
   nearest entry per scalar (ties: the smaller entry value, then the lower index), and picks
   the codebook with the least squared error (ties: the lower codebook number).

Activations use the same rule on the fly, so the codebooks are "universal": calibrated once,
frozen, and used for weights and activations alike.
"""

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .codebooks import Codebooks
from .config import BCQConfig
from .errors import BCQError, ShapeError
from .numerics import scale_encode_ceil, scale_value

__all__ = ["BCQTensor", "encode", "decode", "fake_quant", "calibrate", "CalibrationResult",
           "check_tensor"]

_CHUNK_BLOCKS = 1 << 16


def check_tensor(x, multiple, what="tensor"):
    """Shared input checks: a floating tensor, finite, last dimension a multiple of ``multiple``."""
    if not isinstance(x, torch.Tensor):
        raise BCQError(f"{what} must be a torch.Tensor, not {type(x).__name__}")
    if not x.is_floating_point():
        raise BCQError(f"{what} has dtype {x.dtype}; a floating-point tensor is needed")
    if x.dim() == 0 or x.shape[-1] == 0 or x.shape[-1] % multiple:
        raise ShapeError(f"{what} has shape {tuple(x.shape)}: the last dimension must be a "
                         f"non-zero multiple of {multiple}")
    if not torch.isfinite(x).all():
        raise BCQError(f"{what} contains NaN or Inf: quantize finite values only")


@dataclass(eq=False)
class BCQTensor:
    """A LO-BCQ-encoded tensor: what the hardware stores and streams.

    Parameters
    ----------
    codebooks : :class:`Codebooks`
        The frozen codebooks (and so the config) it was encoded with.
    indices : uint8 tensor [..., n]
        4-bit index of every scalar.
    selectors : uint8 tensor [..., n / Lb]
        Codebook of every block.
    scales : uint8 tensor [..., n / LA]
        8-bit scale code of every block array.
    tensor_scale : float
        The FP32 per-tensor scale (1.0 when the config has none).
    """

    codebooks: Codebooks
    indices: torch.Tensor
    selectors: torch.Tensor
    scales: torch.Tensor
    tensor_scale: float = 1.0

    @property
    def config(self) -> BCQConfig:
        return self.codebooks.config

    @property
    def shape(self):
        return tuple(self.indices.shape)

    def __getitem__(self, item):
        """Select leading rows (the last, encoded dimension stays whole)."""
        return BCQTensor(self.codebooks, self.indices[item], self.selectors[item], self.scales[item],
                         self.tensor_scale)

    def codewords(self):
        """Integer codeword of every scalar (int64 [..., n]): ``entries[selector, index]``."""
        cfg = self.config
        sel = self.selectors.to(torch.int64).repeat_interleave(cfg.block_len, dim=-1)
        return self.codebooks.entries[sel, self.indices.to(torch.int64)]


def _tensor_scale(x, cfg):
    """FP32 per-tensor scale mapping amax(|x|) to the largest array scale times entry_max."""
    if not cfg.tensor_scale:
        return 1.0
    amax = float(x.abs().max())
    ts = float(torch.tensor(amax / (cfg.entry_max * cfg.scale.max_value), dtype=torch.float32))
    return ts if ts > 0 else 1.0


def _nearest(y, entries):
    """Per scalar, the index of the nearest entry (ties: smaller value, then lower index)."""
    vals, order = torch.sort(entries.to(y.dtype), stable=True)
    mids = (vals[1:] + vals[:-1]) / 2
    pos = torch.bucketize(y, mids, right=False)
    pos = torch.searchsorted(vals, vals, side="left")[pos]  # duplicate values: the first one
    return order[pos], vals[pos]


def _assign(blocks, entries):
    """blocks: float [nb, Lb] normalized. Returns selectors [nb], indices [nb, Lb], sq. error [nb]."""
    best_err = best_sel = best_idx = None
    for c in range(entries.shape[0]):
        idx, q = _nearest(blocks, entries[c])
        err = ((blocks - q) ** 2).sum(-1)
        if best_err is None:
            best_err, best_sel, best_idx = err, torch.zeros_like(err, dtype=torch.int64), idx
        else:
            better = err < best_err  # strict: ties keep the lower codebook number
            best_err = torch.where(better, err, best_err)
            best_sel = torch.where(better, c, best_sel)
            best_idx = torch.where(better.unsqueeze(-1), idx, best_idx)
    return best_sel, best_idx, best_err


def _normalize(x, cfg):
    """x float64 [..., n] -> (tensor scale, scale codes [..., n/LA], normalized y [..., n])."""
    ts = _tensor_scale(x, cfg)
    arrays = x.reshape(*x.shape[:-1], -1, cfg.array_len) / ts
    need = arrays.abs().amax(-1) / cfg.entry_max
    codes = scale_encode_ceil(need, cfg.scale)
    sv = scale_value(codes, cfg.scale).to(x.device)
    y = torch.where(sv.unsqueeze(-1) > 0, arrays / sv.unsqueeze(-1).clamp(min=1e-300), 0.0)
    return ts, codes, y.reshape(x.shape)


def encode(x, codebooks: Codebooks) -> BCQTensor:
    """Encode a float tensor (last dim a multiple of LA) with the frozen ``codebooks``."""
    cfg = codebooks.config
    check_tensor(x, cfg.array_len)
    x64 = x.detach().to(torch.float64)
    ts, codes, y = _normalize(x64, cfg)
    blocks = y.reshape(-1, cfg.block_len)
    entries = codebooks.entries.to(x64.device)
    sels, idxs = [], []
    for start in range(0, blocks.shape[0], _CHUNK_BLOCKS):
        s, i, _ = _assign(blocks[start:start + _CHUNK_BLOCKS], entries)
        sels.append(s)
        idxs.append(i)
    lead = x.shape[:-1]
    return BCQTensor(codebooks,
                     torch.cat(idxs).reshape(x.shape).to(torch.uint8).cpu(),
                     torch.cat(sels).reshape(*lead, -1).to(torch.uint8).cpu(),
                     codes.to(torch.uint8).cpu(), ts)


def decode(q: BCQTensor, dtype=torch.float32):
    cfg = q.config
    cw = q.codewords().to(torch.float64)
    sv = scale_value(q.scales, cfg.scale).repeat_interleave(cfg.array_len, dim=-1)
    return (cw * sv * q.tensor_scale).to(dtype)


def fake_quant(x, codebooks: Codebooks):
    """Quantize-dequantize (same shape and dtype), for simulating W4A4 in a torch model."""
    return decode(encode(x, codebooks), dtype=x.dtype).to(x.device)


# -- calibration ------------------------------------------------------------------------------

@dataclass
class CalibrationResult:
    """What :func:`calibrate` returns.

    Members
    -------
    codebooks : :class:`Codebooks`
        The calibrated set, on the integer grid.
    mse_history : list of float
        Normalized-domain MSE per scalar before iteration 1 and after each iteration.
    mse_final : float
        The same with the codebooks rounded to the integer grid.
    """

    codebooks: Codebooks
    mse_history: list  # normalized-domain MSE per scalar, before iteration 1 and after each
    mse_final: float   # the same, with the codebooks rounded to the integer grid


def _init_codebooks(blocks, cfg):
    """Deterministic start: sort blocks by their RMS, cut into Nc groups, and give codebook c
    the 16 quantiles of its group."""
    order = torch.argsort(blocks.pow(2).mean(-1), stable=True)
    groups = torch.tensor_split(blocks[order], cfg.n_codebooks)
    q = (torch.arange(cfg.n_entries, dtype=torch.float64, device=blocks.device) + 0.5) / cfg.n_entries
    init = []
    for g in groups:
        vals = g.flatten()
        if vals.numel() > 1 << 24:  # torch.quantile's input limit
            vals = vals[:: (vals.numel() >> 24) + 1]
        init.append(torch.quantile(vals, q) if vals.numel() else torch.zeros_like(q))
    return torch.stack(init)


def _lloyd_step(blocks, sel, entries):
    """One Lloyd-Max step per cluster: nearest-entry partition of the cluster's scalars, then
    each entry moves to the mean of its cell. Neither half can raise the squared error; empty
    cells keep their level."""
    nc, ne = entries.shape
    idx = torch.empty_like(blocks, dtype=torch.int64)
    for c in range(nc):
        mask = sel == c
        if mask.any():
            idx[mask] = _nearest(blocks[mask], entries[c])[0]
    key = (sel.unsqueeze(-1) * ne + idx).flatten()
    sums = torch.bincount(key, weights=blocks.flatten(), minlength=nc * ne)
    counts = torch.bincount(key, minlength=nc * ne)
    return torch.where(counts > 0, sums / counts.clamp(min=1), entries.flatten()).reshape(nc, ne)


def calibrate(data, config: BCQConfig, *, iters=30, seed=0, max_blocks=1 << 16, device="cpu",
              progress=True, log=None) -> CalibrationResult:
    """LO-BCQ: alternate (1) block clustering, each block to the codebook of least squared error,
    and (2) codebook design, one Lloyd-Max step per cluster. Both steps are optimal for the other's
    result, so the MSE (``mse_history``, in the normalized domain where codebook entries live)
    never increases. The final codebooks are rounded to the INT``entry_bits`` grid; the MSE
    they reach is ``mse_final``.

    ``data``: a float tensor or a list of them (each last dim a multiple of LA). At most
    ``max_blocks`` blocks (a seeded random subset) are used. The CPU path is the reference;
    a fixed seed reproduces its codebooks exactly. ``device="cuda"`` runs the same code on a GPU.
    """

    tensors = data if isinstance(data, (list, tuple)) else [data]
    if not tensors:
        raise BCQError("calibration needs at least one tensor")
    if not isinstance(iters, int) or iters < 1:
        raise BCQError(f"iters must be a positive integer, not {iters!r}")
    parts = []
    for i, t in enumerate(tensors):
        check_tensor(t, config.array_len, what=f"calibration tensor {i}")
        y = _normalize(t.detach().to("cpu", torch.float64), config)[2]
        parts.append(y.reshape(-1, config.block_len))
    blocks = torch.cat(parts)
    gen = torch.Generator().manual_seed(seed)
    if blocks.shape[0] > max_blocks:
        blocks = blocks[torch.randperm(blocks.shape[0], generator=gen)[:max_blocks]]
    blocks = blocks.to(device)
    n_scalars = blocks.numel()

    entries = _init_codebooks(blocks, config)
    sel, _, err = _assign(blocks, entries)
    history = [float(err.sum()) / n_scalars]
    bar = tqdm(range(iters), desc="LO-BCQ calibrate", disable=not progress, leave=False)
    for it in bar:
        entries = _lloyd_step(blocks, sel, entries)
        sel, _, err = _assign(blocks, entries)
        history.append(float(err.sum()) / n_scalars)
        bar.set_postfix(mse=f"{history[-1]:.5f}")
        if log is not None:
            log(f"iteration {it + 1}/{iters}: MSE {history[-1]:.6f} (normalized units)")
    grid = entries.round().clamp(config.entry_min, config.entry_max)
    sel, _, err = _assign(blocks, grid)
    mse_final = float(err.sum()) / n_scalars
    # Selector 0 is the busiest codebook; entries ascend within a codebook.
    counts = torch.bincount(sel, minlength=config.n_codebooks).cpu()
    order = torch.argsort(-counts, stable=True)
    grid = torch.sort(grid.cpu()[order], dim=-1).values.to(torch.int64)
    cb = Codebooks(config, grid, {"iters": iters, "seed": seed, "blocks": int(blocks.shape[0]),
                                  "mse": mse_final, "device": str(device)})
    return CalibrationResult(cb, history, mse_final)
