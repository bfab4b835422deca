"""MXFP4 as the hardware baseline sees it: element and scale codes, and the exact fixed-point
dot product that :class:`bcq.hw.mx_dot.MXFP4Dot` must produce bit for bit.

Codes: an element is 4 bits, sign in bit 3 and a magnitude index in bits 0-2 naming
0, 0.5, 1, 1.5, 2, 3, 4, 6 (E2M1). A block of ``block`` (32) elements shares an E8M0 scale
code ``c`` = 2**(c - 127). The hardware accepts shared exponents in ``[exp_min, exp_max]``
(the encoder clamps to that window). Rounding is that of ``bcq.sw.formats.quantizers.MXFP4``.

Exact arithmetic: with doubled magnitudes ``m`` in {0, 1, 2, 3, 4, 6, 8, 12}, an element is
``m/2 * 2**e``, so ``w . x = acc * 2**(2 * exp_min - 2)`` with
``acc = sum_blocks (sum_i m_w m_x) << (e_w + e_x - 2 * exp_min)``.
"""

from dataclasses import dataclass

import torch

from .errors import ConfigError, ShapeError
from .lobcq import check_tensor
from .numerics import E2M1

__all__ = ["MXConfig", "MXTensor", "encode", "decode", "dot_fixed", "DOUBLED"]

DOUBLED = (0, 1, 2, 3, 4, 6, 8, 12)          # 2 * E2M1 magnitude, by magnitude index
_VALUES = torch.tensor([d / 2 for d in DOUBLED], dtype=torch.float64)


@dataclass(frozen=True)
class MXConfig:
    """MXFP4 as the baseline hardware takes it.

    Parameters
    ----------
    block : int
        Elements per shared E8M0 scale (32).
    exp_min, exp_max : int
        The shared exponents the hardware accepts (the encoder clamps to this window).
    """

    block: int = 32
    exp_min: int = -16
    exp_max: int = 15

    def __post_init__(self):
        if self.block < 1 or self.block & (self.block - 1):
            raise ConfigError("block", self.block, "a power of two")
        if not -127 <= self.exp_min <= self.exp_max <= 127:
            raise ConfigError("exp_min/exp_max", (self.exp_min, self.exp_max), "-127 <= exp_min <= exp_max <= 127")

    @property
    def bits_per_scalar(self):
        return 4 + 8 / self.block

    @property
    def shift_max(self):
        return 2 * (self.exp_max - self.exp_min)

    def max_acc(self, max_len):
        return (max_len // self.block) * self.block * 144 << self.shift_max


@dataclass(frozen=True)
class MXTensor:
    """An MXFP4-encoded tensor: ``codes`` (uint8 [..., n], 4-bit E2M1 codes) and ``scales``
    (uint8 [..., n / block], E8M0 codes), for the ``config`` it was encoded with."""

    config: MXConfig
    codes: torch.Tensor     # uint8 [..., n]
    scales: torch.Tensor    # uint8 [..., n / block]


def encode(x, config: MXConfig = MXConfig()) -> MXTensor:
    check_tensor(x, config.block)
    g = x.to(torch.float64).reshape(*x.shape[:-1], -1, config.block)
    amax = g.abs().amax(-1, keepdim=True)
    _, e = torch.frexp(amax)
    shared = torch.clamp(e - 1 - 2, config.exp_min, config.exp_max)
    r = E2M1.round(g / torch.ldexp(torch.ones_like(amax), shared))
    mag = torch.searchsorted(_VALUES, r.abs().contiguous())
    codes = (mag | ((r < 0).to(torch.int64) << 3)).to(torch.uint8).reshape(x.shape)
    return MXTensor(config, codes, (shared[..., 0] + 127).to(torch.uint8))


def _doubled(codes):
    m = torch.tensor(DOUBLED, dtype=torch.int64)[(codes & 7).long()]
    return torch.where((codes & 8) != 0, -m, m)


def decode(t: MXTensor):
    cfg = t.config
    m = _doubled(t.codes).reshape(*t.codes.shape[:-1], -1, cfg.block).to(torch.float64) / 2
    e = t.scales.to(torch.int64) - 127
    return torch.ldexp(m, e[..., None]).reshape(t.codes.shape)


def dot_fixed(w: MXTensor, x: MXTensor) -> int:
    """Exact accumulator of two 1-D operands (see the module docstring)."""
    cfg = w.config
    if w.codes.shape != x.codes.shape or w.codes.dim() != 1:
        raise ShapeError(f"dot_fixed takes two 1-D operands of equal length, got {tuple(w.codes.shape)} "
                         f"and {tuple(x.codes.shape)}")
    for t in (w, x):
        e = t.scales.to(torch.int64) - 127
        if bool(((e < cfg.exp_min) | (e > cfg.exp_max)).any()):
            raise ShapeError(f"scale exponent outside the window [{cfg.exp_min}, {cfg.exp_max}]")
    p = (_doubled(w.codes) * _doubled(x.codes)).reshape(-1, cfg.block).sum(-1)
    shift = (w.scales.to(torch.int64) - 127) + (x.scales.to(torch.int64) - 127) - 2 * cfg.exp_min
    return sum(int(b) << int(s) for b, s in zip(p.tolist(), shift.tolist()))


def to_value(acc, config: MXConfig):
    return acc * 2.0 ** (2 * config.exp_min - 2)
