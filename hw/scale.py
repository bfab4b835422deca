"""Gateware decode of an 8-bit scale code into ``mant`` and ``exp - exp_min`` (see docs/arithmetic.md).

The golden model decodes the same codes in ``bcq.sw.formats.numerics.scale_decode``; tests compare the two.
"""

from amaranth import Mux, Signal, unsigned

from bcq.sw.formats.config import ScaleFormat

__all__ = ["decode_scale", "mant_shape", "exp_offset_shape"]


def mant_shape(fmt: ScaleFormat):
    return unsigned(max(1, fmt.mant_bits))


def exp_offset_shape(fmt: ScaleFormat):
    return unsigned(fmt.exp_bits)


def decode_scale(m, code, fmt: ScaleFormat, name):
    """Combinational: returns (mant, exp_off) signals with value = mant * 2**(exp_off + exp_min)."""
    mant = Signal(mant_shape(fmt), name=f"{name}_mant")
    exp_off = Signal(exp_offset_shape(fmt), name=f"{name}_exp_off")
    if fmt.name == "e4m3":
        e, frac = code[3:7], code[0:3]
        # exp = max(e, 1) - 10 and exp_min = -9, so exp - exp_min = max(e, 1) - 1.
        m.d.comb += [
            mant.eq(Mux(e != 0, frac | 0b1000, frac)),
            exp_off.eq(Mux(e != 0, e - 1, 0)),
        ]
    else:  # e8m0: exp = code - 127; codes outside [127 + exp_min, 127 + exp_max] are not accepted
        m.d.comb += [mant.eq(1), exp_off.eq(code - (127 + fmt.exp_min))]
    return mant, exp_off
