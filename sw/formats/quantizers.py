"""Every 4-bit format behind one API, for fair comparisons.

``get_format(name, ...)`` returns an object with ``name``, ``bits_per_scalar``, ``group``
(the last dimension must be a multiple of it) and ``fake_quant(x)`` (quantize-dequantize,
same shape and dtype). Names: ``lobcq``, ``mxfp4``, ``nvfp4``, ``int4``.

Baselines, as specified:
- MXFP4 (OCP MX v1.0): E2M1 elements, one E8M0 scale per 32; the shared exponent is
  ``floor(log2(amax)) - 2`` (2 = E2M1's largest exponent), elements round to nearest even
  and saturate at +-6.
- NVFP4: E2M1 elements, one E4M3 scale per 16 (``amax/6``, round to nearest even) on top of an
  FP32 per-tensor scale ``amax_tensor / (6 * 448)``.
- INT4-g64: signed 4-bit integers in [-8, 7], one FP16 scale ``amax/7`` per 64.

The group size of MXFP4 and INT4 is a parameter, so that every format can be compared at equal
bits per scalar: :data:`EQUAL_BITS_BASELINES` adds MXFP4 with blocks of 16 and INT4 with groups of
32 (4.5 bits, as NVFP4 and the default LO-BCQ).
"""

from dataclasses import dataclass

import torch

from .codebooks import Codebooks, default_codebooks
from .errors import BCQError
from .lobcq import check_tensor
from .lobcq import fake_quant as lobcq_fake_quant
from .numerics import E2M1, E4M3_ELEM

__all__ = ["FORMATS", "BASELINES", "EQUAL_BITS_BASELINES", "get_format", "sqnr_db"]

FORMATS = ("lobcq", "mxfp4", "nvfp4", "int4")


def sqnr_db(x, xq):
    """10 log10(sum x^2 / sum (x - xq)^2) in float64 (inf when xq == x)."""
    signal = torch.linalg.vector_norm(x, dtype=torch.float64) ** 2
    noise = torch.linalg.vector_norm(x.to(torch.float64, copy=True).sub_(xq), dtype=torch.float64) ** 2
    if noise == 0:
        return float("inf")
    return float(10 * torch.log10(signal / noise))


def _groups(x, group):
    return x.to(torch.float64).reshape(*x.shape[:-1], -1, group)


@dataclass(frozen=True)
class MXFP4:
    """E2M1 elements, an E8M0 scale per ``group`` (OCP MX: 32)."""

    name: str = "mxfp4"
    group: int = 32

    @property
    def bits_per_scalar(self):
        return 4 + 8 / self.group

    def fake_quant(self, x):
        check_tensor(x, self.group)
        g = _groups(x, self.group)
        amax = g.abs().amax(-1, keepdim=True)
        _, e = torch.frexp(amax)  # floor(log2(amax)) = e - 1 for amax > 0
        shared = torch.clamp(e - 1 - 2, -127, 127)
        scale = torch.ldexp(torch.ones_like(amax), shared)
        return (E2M1.round(g / scale) * scale).reshape(x.shape).to(x.dtype)


@dataclass(frozen=True)
class NVFP4:
    """E2M1 elements, an E4M3 scale per 16, an FP32 tensor scale."""

    name: str = "nvfp4"
    group: int = 16

    @property
    def bits_per_scalar(self):
        return 4 + 8 / self.group

    def fake_quant(self, x):
        check_tensor(x, self.group)
        g = _groups(x, self.group)
        amax_t = float(g.abs().max())
        ts = float(torch.tensor(amax_t / (6 * 448), dtype=torch.float32)) or 1.0
        s = E4M3_ELEM.round(g.abs().amax(-1, keepdim=True) / (6 * ts)) * ts
        q = torch.where(s > 0, E2M1.round(g / torch.where(s > 0, s, 1.0)) * s, 0.0)
        return q.reshape(x.shape).to(x.dtype)


@dataclass(frozen=True)
class INT4:
    """INT4 in [-8, 7], an FP16 scale ``amax/7`` per ``group``."""

    name: str = "int4"
    group: int = 64

    @property
    def bits_per_scalar(self):
        return 4 + 16 / self.group

    def fake_quant(self, x):
        check_tensor(x, self.group)
        g = _groups(x, self.group)
        s = (g.abs().amax(-1, keepdim=True) / 7).to(torch.float16).to(torch.float64)
        if torch.isinf(s).any():  # the FP16 scale overflows: the group cannot be represented
            raise BCQError(f"int4: |x| up to {float(g.abs().max()):.3g} needs a scale beyond FP16's 65504 "
                           f"(INT4-g64 represents |x| up to about {7 * 65504:.3g})")
        s = torch.where(s > 0, s, 1.0)
        q = torch.clamp(torch.round(g / s), -8, 7) * s
        return q.reshape(x.shape).to(x.dtype)


@dataclass(frozen=True)
class LOBCQ:
    codebooks: Codebooks
    name: str = "lobcq"

    @property
    def group(self):
        return self.codebooks.config.array_len

    @property
    def bits_per_scalar(self):
        return self.codebooks.config.bits_per_scalar

    def fake_quant(self, x):
        return lobcq_fake_quant(x, self.codebooks)


# The baselines as the bench reports them: the standard ones, then variants at 4.5 bits.
BASELINES = {"nvfp4": NVFP4(), "mxfp4": MXFP4(), "int4-g64": INT4()}
EQUAL_BITS_BASELINES = {"mxfp4-b16": MXFP4("mxfp4-b16", 16), "int4-g32": INT4("int4-g32", 32)}


def get_format(name, codebooks=None):
    if name == "lobcq":
        return LOBCQ(codebooks if codebooks is not None else default_codebooks())
    if codebooks is not None:
        raise BCQError(f"--codebooks applies to the lobcq format only, not {name}")
    try:
        return {"mxfp4": MXFP4, "nvfp4": NVFP4, "int4": INT4}[name]()
    except KeyError:
        raise BCQError(f"unknown format {name!r}; allowed: {', '.join(FORMATS)}") from None
