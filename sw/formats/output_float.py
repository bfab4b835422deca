"""The engine's row results as IEEE floats: ``acc * 2**exp`` rounded once to BF16 or FP32.

The golden model gives an exact integer accumulator whose LSB weighs ``2**out_exp``
(:class:`bcq.sw.formats.golden.Arithmetic`); a power-of-two tensor scale adds to that exponent.
:func:`float_bits` is the one definition of the conversion (docs/arithmetic.md section 8) that
the output converter (``bcq.hw.output_float``) must match bit for bit:

- round to nearest, ties to even, once, from the exact value;
- a result beyond the largest finite value is ``+-Inf`` (IEEE overflow under round-to-nearest);
- below the smallest normal the result is subnormal (gradual underflow), and a value that rounds
  to zero keeps its sign (``-0`` for a negative accumulator); ``acc = 0`` gives ``+0``.
"""

from dataclasses import dataclass

import torch

from .errors import BCQError

__all__ = ["OutputFormat", "OUTPUT_FORMATS", "float_bits", "float_bits_tensor"]


@dataclass(frozen=True)
class OutputFormat:
    """An IEEE binary format: ``exp_bits`` exponent bits, ``man_bits`` stored mantissa bits."""

    name: str
    exp_bits: int
    man_bits: int

    @property
    def width(self):
        return 1 + self.exp_bits + self.man_bits

    @property
    def bias(self):
        return (1 << (self.exp_bits - 1)) - 1

    @property
    def emin(self):
        """Exponent of the smallest normal value."""
        return 1 - self.bias

    @property
    def emax(self):
        return self.bias

    @property
    def inf(self):
        """The bits of +Inf."""
        return ((1 << self.exp_bits) - 1) << self.man_bits


OUTPUT_FORMATS = {"bf16": OutputFormat("bf16", 8, 7), "fp32": OutputFormat("fp32", 8, 23)}


def _format(fmt):
    if fmt not in OUTPUT_FORMATS:
        raise BCQError(f"output format {fmt!r} is not one of {', '.join(OUTPUT_FORMATS)}")
    return OUTPUT_FORMATS[fmt]


def float_bits(acc, exp, fmt="bf16"):
    """The bits (a Python int) of ``acc * 2**exp`` (integers) rounded to ``fmt`` (``"bf16"``,
    ``"fp32"``) as the module docstring says."""
    f = _format(fmt)
    if isinstance(acc, bool) or not isinstance(acc, int) or isinstance(exp, bool) or not isinstance(exp, int):
        raise BCQError(f"float_bits takes integers acc and exp, not {acc!r} and {exp!r}")
    if acc == 0:
        return 0
    sign = (1 << (f.width - 1)) if acc < 0 else 0
    mag = abs(acc)
    e = mag.bit_length() - 1 + exp                 # the value is in [2**e, 2**(e+1))
    # The quantum of the result: 2**(e - man_bits) for normals, 2**(emin - man_bits) below them.
    quantum = max(e, f.emin) - f.man_bits
    shift = quantum - exp                          # mag's bits below the quantum
    if shift <= 0:
        q = mag << -shift
    else:
        q, rest = mag >> shift, mag & ((1 << shift) - 1)
        half = 1 << (shift - 1)
        if rest > half or (rest == half and q & 1):
            q += 1
    # q has man_bits + 1 bits for a normal (the leading one adds 1 to the exponent field), fewer
    # for a subnormal (field 0); a carry out of rounding moves into the exponent field by itself.
    bits = ((max(e, f.emin) + f.bias - 1) << f.man_bits) + q
    return sign | min(bits, f.inf)


def float_bits_tensor(acc, exp, fmt="bf16"):
    """:func:`float_bits` of every element of an integer tensor (int64 result, same shape)."""
    flat = [float_bits(int(a), exp, fmt) for a in acc.reshape(-1).tolist()]
    return torch.tensor(flat, dtype=torch.int64).reshape(acc.shape)
