"""Small floating-point formats, exactly: rounding to E2M1/E4M3/FP16 and the 8-bit scale codes.

All functions work on float64 tensors (every value of these formats is exact in float64).
"""

import torch

from .config import ScaleFormat
from .errors import BCQError

__all__ = ["MiniFloat", "E2M1", "E4M3_ELEM", "scale_encode_ceil", "scale_decode", "scale_value"]


class MiniFloat:
    """A sign-magnitude float with ``exp_bits``/``man_bits``, IEEE-style bias, subnormals,
    no infinities, saturating at ``max_value``."""

    def __init__(self, exp_bits, man_bits, max_value):
        self.exp_bits, self.man_bits, self.max_value = exp_bits, man_bits, float(max_value)
        self.bias = (1 << (exp_bits - 1)) - 1
        self.emin = 1 - self.bias  # exponent of the smallest normal

    def round(self, x):
        """Round to nearest, ties to even, saturating to +-max_value."""
        x = x.to(torch.float64)
        a = x.abs()
        _, e = torch.frexp(a)  # a = m * 2**e, m in [0.5, 1): floor(log2 a) = e - 1
        e = torch.clamp(e - 1, min=self.emin)
        step = torch.ldexp(torch.ones_like(a), e - self.man_bits)
        q = torch.round(a / step) * step  # torch.round rounds half to even
        return torch.copysign(torch.clamp(q, max=self.max_value), x)


E2M1 = MiniFloat(2, 1, 6.0)         # FP4 elements of MXFP4 / NVFP4: 0, .5, 1, 1.5, 2, 3, 4, 6
E4M3_ELEM = MiniFloat(4, 3, 448.0)  # OCP FP8 E4M3 (finite max 448)


# -- 8-bit scale codes -------------------------------------------------------------------

def _e4m3_table():
    codes = torch.arange(0x7F)  # 0x00..0x7E: positive, finite
    e, m = codes >> 3, codes & 7
    mant = torch.where(e > 0, m + 8, m)
    exp = torch.clamp(e, min=1) - 10
    return torch.ldexp(mant.to(torch.float64), exp)


_E4M3_VALUES = _e4m3_table()  # increasing in the code


def scale_encode_ceil(s, fmt: ScaleFormat):
    """Smallest code whose value is >= ``s`` (so no scalar of the array clips), saturating at the
    largest code. ``s`` is a float64 tensor of non-negative scale values."""
    s = s.to(torch.float64)
    if fmt.name == "e4m3":
        return torch.clamp(torch.searchsorted(_E4M3_VALUES.to(s.device), s, side="left"), max=0x7E).to(torch.uint8)
    m, e = torch.frexp(s)
    ceil_log2 = torch.where(m == 0.5, e - 1, e)
    exp = torch.clamp(ceil_log2, fmt.exp_min, fmt.exp_max)
    exp = torch.where(s > 0, exp, torch.full_like(exp, fmt.exp_min))
    return (exp + 127).to(torch.uint8)


def scale_decode(codes, fmt: ScaleFormat, *, what="scale code", any_code=False):
    """8-bit codes -> (mant, exp) int64 tensors with value = mant * 2**exp.

    Raises :class:`BCQError` naming the bad code for a code the encoder never produces: E4M3
    with the sign bit set or NaN (0x7F), E8M0 outside the configured window. With ``any_code``
    every 8-bit code decodes as the hardware decodes it (docs/arithmetic.md section 5, "the
    contract at the edges"): E4M3 ignores the sign bit and reads 0x7F as 15 * 2**5 = 480;
    E8M0 saturates to the window ``[exp_min, exp_max]``.
    """
    c = torch.as_tensor(codes).to(torch.int64)
    if fmt.name == "e4m3":
        bad = (c < 0) | (c > 0x7E)
        if bad.any() and not any_code:
            raise BCQError(f"{what} {int(c[bad].flatten()[0]):#04x} is not a valid E4M3 scale "
                           f"(allowed 0x00..0x7E: positive, finite)")
        # Bits 6..0 only: the sign bit is not read, and 0x7F (NaN) follows the same formula.
        e, m = (c >> 3) & 0xF, c & 7
        mant = torch.where(e > 0, m + 8, m)
        exp = torch.clamp(e, min=1) - 10
        return mant, exp
    exp = c - 127
    bad = (exp < fmt.exp_min) | (exp > fmt.exp_max)
    if bad.any() and not any_code:
        raise BCQError(f"{what} {int(c[bad].flatten()[0])} is outside the E8M0 window "
                       f"[{fmt.exp_min + 127}, {fmt.exp_max + 127}] (exponents {fmt.exp_min}..{fmt.exp_max})")
    return torch.ones_like(exp), torch.clamp(exp, fmt.exp_min, fmt.exp_max)


def scale_value(codes, fmt: ScaleFormat):
    mant, exp = scale_decode(codes, fmt)
    return torch.ldexp(mant.to(torch.float64), exp)
