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

from dataclasses import dataclass, replace

import torch

from .config import BCQConfig
from .errors import BCQError, ConfigError, ShapeError
from .lobcq import BCQTensor
from .numerics import scale_decode

__all__ = ["Arithmetic", "dot_fixed", "dot_pairs", "dot_value", "to_value", "trace", "TRACE_STAGES", "DEFAULT_MAX_LEN"]

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
            fmt = cfg.scale
            if fmt.name == "e8m0":
                # The window's width sets the shift (2 * -e8m0_min_exp), which is what outgrows 64 bits.
                lowest = next(e for e in range(fmt.exp_min, 1)
                              if _max_len_for_bits(replace(cfg, e8m0_min_exp=e), 64) >= self.max_len)
                fits = self.max_len_for_bits(64)
                raise ConfigError("e8m0_min_exp", fmt.exp_min,
                                  f"{lowest}..0 at max_len={self.max_len}: the exact accumulator would need "
                                  f"{self.acc_bits} bits (shifts up to {self.shift_max}) and the golden model "
                                  f"computes in 64-bit integers ("
                                  + (f"or keep {fmt.exp_min} with max_len at most {fits})" if fits else
                                     f"{fmt.exp_min} does not fit even one block array)"))
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
        return _max_scaled(self.config)

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
        return _max_len_for_bits(self.config, bits)


def _max_scaled(cfg: BCQConfig):
    """|T_a| at most: LA worst-case products times the largest mantissa product, shifted by the
    largest exponent sum."""
    s = cfg.scale
    return cfg.array_len * cfg.entry_min ** 2 * s.mant_max ** 2 << 2 * (s.exp_max - s.exp_min)


def _max_len_for_bits(cfg: BCQConfig, bits):
    return ((1 << (bits - 1)) - 1) // _max_scaled(cfg) * cfg.array_len


def _check_pair(w: BCQTensor, x: BCQTensor):
    if w.config != x.config:
        raise BCQError("operands were encoded with different configs")
    if w.shape[-1] != x.shape[-1]:
        raise ShapeError(f"dot product of length {w.shape[-1]} and {x.shape[-1]}: lengths differ")
    cfg, n = w.config, w.shape[-1]
    if n == 0 or n % cfg.block_len:
        raise ShapeError(f"vector length {n}: a positive multiple of block_len={cfg.block_len} is needed")
    arrays = -(-n // cfg.array_len)
    for q, what in ((w, "w"), (x, "x")):
        if q.selectors.shape[-1] != n // cfg.block_len or q.scales.shape[-1] != arrays:
            raise ShapeError(f"{what} has {q.selectors.shape[-1]} selectors and {q.scales.shape[-1]} scale codes "
                             f"for {n} scalars; {n // cfg.block_len} and {arrays} are needed")
    return arrays


def _arrays(q: BCQTensor, arrays):
    """Codewords as int64 [..., arrays, LA]; a short final array (docs/arithmetic.md section 5)
    is padded with zero products."""
    cfg = q.config
    cw = q.codewords()
    pad = arrays * cfg.array_len - cw.shape[-1]
    if pad:
        cw = torch.nn.functional.pad(cw, (0, pad))
    return cw.reshape(*cw.shape[:-1], arrays, cfg.array_len)


def _scales(q: BCQTensor, what, any_code):
    return scale_decode(q.scales, q.config.scale, what=what, any_code=any_code)


def dot_fixed(w: BCQTensor, x: BCQTensor, arith: Arithmetic | None = None, *, any_code=False):
    """Exact accumulator value(s): w [R, n] (or [n]) with x [V, n] (or [n]) -> int64 [V, R]
    (dimensions of size 1 squeezed as the inputs had none).

    ``n`` is normally a multiple of LA; otherwise the final block array is short (as a ``last``
    before an array's end makes it in the unit). ``any_code``: decode every scale code as the
    hardware does (see :func:`bcq.sw.formats.numerics.scale_decode`) instead of rejecting the
    codes the encoder never produces.
    """
    arrays = _check_pair(w, x)
    cfg = w.config
    n = w.shape[-1]
    arith = arith or Arithmetic(cfg, max(DEFAULT_MAX_LEN, arrays * cfg.array_len))
    if n > arith.max_len:
        raise ShapeError(f"vector length {n} exceeds max_len={arith.max_len} of the arithmetic")
    wv, xv = w.shape[:-1] == (), x.shape[:-1] == ()
    cw = _arrays(w, arrays).reshape(-1, arrays, cfg.array_len)   # [R, A, LA]
    cx = _arrays(x, arrays).reshape(-1, arrays, cfg.array_len)   # [V, A, LA]
    mw, ew = (t.reshape(cw.shape[:2]) for t in _scales(w, "weight scale code", any_code))
    mx, ex = (t.reshape(cx.shape[:2]) for t in _scales(x, "activation scale code", any_code))
    exp_min = cfg.scale.exp_min
    acc = torch.zeros(cx.shape[0], cw.shape[0], dtype=torch.int64)
    for a in range(arrays):
        p = cx[:, a] @ cw[:, a].T                                   # [V, R] array sums P_a
        mant = mx[:, a, None] * mw[None, :, a]
        shift = ex[:, a, None] + ew[None, :, a] - 2 * exp_min
        acc += (p * mant) << shift
    if wv:
        acc = acc[:, 0]
    if xv:
        acc = acc[0]
    return acc


def dot_pairs(w: BCQTensor, x: BCQTensor, arith: Arithmetic | None = None, *, any_code=False):
    """Exact accumulator of each pair of rows: w [N, n] with x [N, n] -> int64 [N] (``w[k] . x[k]``,
    what the unit outputs for N vectors in a row). Same arithmetic as :func:`dot_fixed` (one
    vectorized pass, for generating many test vectors at once)."""
    arrays = _check_pair(w, x)
    if w.shape != x.shape:
        raise ShapeError(f"pairs of shapes {w.shape} and {x.shape}: shapes differ")
    cfg = w.config
    arith = arith or Arithmetic(cfg, max(DEFAULT_MAX_LEN, arrays * cfg.array_len))
    if w.shape[-1] > arith.max_len:
        raise ShapeError(f"vector length {w.shape[-1]} exceeds max_len={arith.max_len} of the arithmetic")
    p = (_arrays(w, arrays) * _arrays(x, arrays)).sum(-1)           # [..., A] array sums P_a
    mw, ew = _scales(w, "weight scale code", any_code)
    mx, ex = _scales(x, "activation scale code", any_code)
    return ((p * (mw * mx)) << (ew + ex - 2 * cfg.scale.exp_min)).sum(-1)


# Stages of one dot product, in pipeline order (docs/arithmetic.md section 6): the names a traced
# gateware unit's taps use (``bcq trace``), each with what one of its values is.
TRACE_STAGES = {
    "w_codewords": "codeword cw_i = entries[sel_w][idx_w] of each scalar of w",
    "x_codewords": "codeword cx_i of each scalar of x",
    "products": "cw_i * cx_i of each scalar",
    "beat_sums": "sum of the products of each beat (B blocks; the block sums when B = 1)",
    "array_sums": "P_a, sum of the products of each block array",
    "scale_mants": "mw_a * mx_a, the scale mantissa product of each array",
    "scale_shifts": "ew_a + ex_a - 2 * exp_min, the shift of each array",
    "scaled_sums": "T_a = P_a * mw_a * mx_a << shift, each array's term",
    "accumulator": "the running sum of T_a after each array",
    "output": "the vector's result (the final accumulator)",
}


def trace(w: BCQTensor, x: BCQTensor, *, beat_len=None, arith: Arithmetic | None = None, any_code=False):
    """Every intermediate of one dot product, stage by stage (:data:`TRACE_STAGES`): a dict
    stage -> list of ints in stream order. ``w``, ``x`` are 1-D; ``beat_len`` is the scalars per
    beat of ``beat_sums`` (default ``block_len``). The last entry of ``accumulator`` and
    ``output`` equal :func:`dot_fixed`."""
    if len(w.shape) != 1 or len(x.shape) != 1:
        raise ShapeError(f"trace takes 1-D operands, not shapes {w.shape} and {x.shape}")
    arrays = _check_pair(w, x)
    cfg = w.config
    beat_len = beat_len or cfg.block_len
    if w.shape[0] % beat_len:
        raise ShapeError(f"vector length {w.shape[0]} is not a whole number of beats of {beat_len}")
    arith = arith or Arithmetic(cfg, max(DEFAULT_MAX_LEN, arrays * cfg.array_len))
    cw, cx = w.codewords(), x.codewords()
    prod = cw * cx
    p = (_arrays(w, arrays) * _arrays(x, arrays)).sum(-1)
    mw, ew = _scales(w, "weight scale code", any_code)
    mx, ex = _scales(x, "activation scale code", any_code)
    mant, shift = mw * mx, ew + ex - 2 * cfg.scale.exp_min
    terms = (p * mant) << shift
    acc = torch.cumsum(terms, 0)
    out = dot_fixed(w, x, arith, any_code=any_code)
    assert int(acc[-1]) == int(out)   # one arithmetic, two ways round
    return {"w_codewords": cw.tolist(), "x_codewords": cx.tolist(), "products": prod.tolist(),
            "beat_sums": prod.reshape(-1, beat_len).sum(-1).tolist(), "array_sums": p.tolist(),
            "scale_mants": mant.tolist(), "scale_shifts": shift.tolist(), "scaled_sums": terms.tolist(),
            "accumulator": acc.tolist(), "output": [int(out)]}


def to_value(acc, w: BCQTensor, x: BCQTensor):
    """Real value of accumulator(s), in float64: ``acc * 2**out_exp * ts_w * ts_x``."""
    out_exp = 2 * w.config.scale.exp_min
    return torch.ldexp(acc.to(torch.float64), torch.tensor(out_exp)) * w.tensor_scale * x.tensor_scale


def dot_value(w: BCQTensor, x: BCQTensor):
    return to_value(dot_fixed(w, x), w, x)
