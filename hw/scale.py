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
        # Edge contract (docs/arithmetic.md section 5): only bits 6..0 are read, so the sign bit
        # is ignored, and 0x7F (NaN) decodes by the same formula to 15 * 2**5 = 480, which the
        # accumulator widths already cover (mant_max = 15, exp_max = 5). No extra logic.
        e, frac = code[3:7], code[0:3]
        # exp = max(e, 1) - 10 and exp_min = -9, so exp - exp_min = max(e, 1) - 1.
        m.d.comb += [
            mant.eq(Mux(e != 0, frac | 0b1000, frac)),
            exp_off.eq(Mux(e != 0, e - 1, 0)),
        ]
    else:  # e8m0: exp = code - 127
        # Edge contract (docs/arithmetic.md section 5): a code outside the window
        # [127 + exp_min, 127 + exp_max] saturates to its nearer end. Without the two compares the
        # offset wrapped modulo 2**exp_bits and could shift past the accumulator's width.
        lo, hi = 127 + fmt.exp_min, 127 + fmt.exp_max
        m.d.comb += [mant.eq(1), exp_off.eq(Mux(code < lo, 0, Mux(code > hi, hi - lo, code - lo)))]
    return mant, exp_off
