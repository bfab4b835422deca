"""The bit-exact golden dot product: what the BCQ hardware must output, in integers.

See ``docs/arithmetic.md``. For operands ``w`` and ``x`` (each LO-BCQ encoded, same config),
per block array ``a``:

    P_a   = sum_{i in array a} cw_i * cx_i                  (integer codeword products)
    T_a   = P_a * (mw_a * mx_a) << (ew_a + ex_a - 2*exp_min)  (scales: mantissa multiply,
                                                              exponent add, as a left shift)
    acc   = sum_a T_a                                        (exact, acc_bits wide)

and the real dot product is ``acc * 2**(2*exp_min) * ts_w * ts_x`` (``out_exp`` = 2*exp_min;
the per-tensor FP32 scales are applied by the host). Every width below is derived from the
config and ``max_len`` so that no overflow is possible up to that vector length.
"""

from dataclasses import dataclass

import torch

from .config import BCQConfig
from .errors import BCQError, ConfigError, ShapeError
from .lobcq import BCQTensor
from .numerics import scale_decode

__all__ = ["Arithmetic", "dot_fixed", "dot_value", "to_value", "DEFAULT_MAX_LEN"]

DEFAULT_MAX_LEN = 4096


def _signed_bits(max_abs):
    """Bits of a two's-complement signal holding every value in [-max_abs, max_abs]."""
    return max_abs.bit_length() + 1


@dataclass(frozen=True)
class Arithmetic:
    """Widths of every intermediate of the dot product (all signed unless noted).

    Parameters
    ----------
    config : :class:`BCQConfig`
    max_len : int
        Longest vector (a multiple of LA); every width is chosen so that no overflow is possible
        up to it (``acc_bits`` at most 64).

    Members
    -------
    product_bits, array_sum_bits, mant_product_bits, exp_sum_bits, scaled_bits, acc_bits : int
        Widths of the products, array sums, scale mantissa product, exponent sum, scaled array
        sums and accumulator (docs/arithmetic.md section 2).
    out_exp : int
        The accumulator's LSB weighs ``2**out_exp`` (times both per-tensor scales).
    """

    config: BCQConfig
    max_len: int = DEFAULT_MAX_LEN

    def __post_init__(self):
        cfg = self.config
        if not isinstance(self.max_len, int) or self.max_len <= 0 or self.max_len % cfg.array_len:
            raise ConfigError("max_len", self.max_len, f"a positive multiple of array_len={cfg.array_len}")
        if self.acc_bits > 64:
            raise ConfigError("max_len", self.max_len,
                              f"at most {self.max_len_for_bits(64)} for this config (64-bit accumulator)")

    # Magnitude bounds -----------------------------------------------------------------
    @property
    def max_product(self):      # |cw * cx|, entries in [entry_min, entry_max]
        return self.config.entry_min ** 2

    @property
    def max_arrays(self):
        return self.max_len // self.config.array_len

    @property
    def shift_max(self):        # ew + ex - 2*exp_min
        s = self.config.scale
        return 2 * (s.exp_max - s.exp_min)

    @property
    def max_scaled(self):       # |T_a|
        return self.config.array_len * self.max_product * self.config.scale.mant_max ** 2 << self.shift_max

    # Widths -----------------------------------------------------------------------------
    @property
    def entry_bits(self):
        return self.config.entry_bits

    @property
    def product_bits(self):
        return _signed_bits(self.max_product)

    def block_sum_bits(self, n_products):
        return _signed_bits(n_products * self.max_product)

    @property
    def array_sum_bits(self):
        return _signed_bits(self.config.array_len * self.max_product)

    @property
    def mant_product_bits(self):  # unsigned
        return (self.config.scale.mant_max ** 2).bit_length()

    @property
    def exp_sum_bits(self):       # unsigned, holds 0..shift_max
        return max(1, self.shift_max.bit_length())

    @property
    def scaled_bits(self):
        return _signed_bits(self.max_scaled)

    @property
    def acc_bits(self):
        return _signed_bits(self.max_arrays * self.max_scaled)

    @property
    def out_exp(self):
        """The accumulator's LSB weighs 2**out_exp (times the two per-tensor scales)."""
        return 2 * self.config.scale.exp_min

    def max_len_for_bits(self, bits):
        n = ((1 << (bits - 1)) - 1) // self.max_scaled
        return n * self.config.array_len


def _check_pair(w: BCQTensor, x: BCQTensor):
    if w.config != x.config:
        raise BCQError("operands were encoded with different configs")
    if w.shape[-1] != x.shape[-1]:
        raise ShapeError(f"dot product of length {w.shape[-1]} and {x.shape[-1]}: lengths differ")


def dot_fixed(w: BCQTensor, x: BCQTensor, arith: Arithmetic | None = None):
    """Exact accumulator value(s): w [R, n] (or [n]) with x [V, n] (or [n]) -> int64 [V, R]
    (dimensions of size 1 squeezed as the inputs had none)."""
    _check_pair(w, x)
    cfg = w.config
    n = w.shape[-1]
    arith = arith or Arithmetic(cfg, max(DEFAULT_MAX_LEN, n))
    if n > arith.max_len:
        raise ShapeError(f"vector length {n} exceeds max_len={arith.max_len} of the arithmetic")
    wv, xv = w.shape[:-1] == (), x.shape[:-1] == ()
    cw = w.codewords().reshape(-1, n // cfg.array_len, cfg.array_len)   # [R, A, LA]
    cx = x.codewords().reshape(-1, n // cfg.array_len, cfg.array_len)   # [V, A, LA]
    mw, ew = scale_decode(w.scales.reshape(cw.shape[:2]), cfg.scale, what="weight scale code")
    mx, ex = scale_decode(x.scales.reshape(cx.shape[:2]), cfg.scale, what="activation scale code")
    exp_min = cfg.scale.exp_min
    acc = torch.zeros(cx.shape[0], cw.shape[0], dtype=torch.int64)
    for a in range(cw.shape[1]):
        p = cx[:, a] @ cw[:, a].T                                   # [V, R] array sums P_a
        mant = mx[:, a, None] * mw[None, :, a]
        shift = ex[:, a, None] + ew[None, :, a] - 2 * exp_min
        acc += (p * mant) << shift
    if wv:
        acc = acc[:, 0]
    if xv:
        acc = acc[0]
    return acc


def to_value(acc, w: BCQTensor, x: BCQTensor):
    """Real value of accumulator(s), in float64: ``acc * 2**out_exp * ts_w * ts_x``."""
    out_exp = 2 * w.config.scale.exp_min
    return torch.ldexp(acc.to(torch.float64), torch.tensor(out_exp)) * w.tensor_scale * x.tensor_scale


def dot_value(w: BCQTensor, x: BCQTensor):
    return to_value(dot_fixed(w, x), w, x)
