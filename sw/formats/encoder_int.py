"""The hardware-exact activation encoder: LO-BCQ encoding of BF16 or FP16 bit patterns in integer
arithmetic only, the specification the on-chip encoder (``bcq.hw.bcq_encoder``) is tested against.

docs/arithmetic.md section 7 is the definition; in short, per block array of LA scalars:

1. each 16-bit pattern decodes to ``x = +-m * 2**e`` (integers; subnormals exact); ``+-Inf`` reads
   as the largest finite value of its sign, ``NaN`` as zero;
2. the array's scale code counts the code values below (``"ceil"``) or midpoints at or below
   (``"nearest"``) ``need = amax / (2**ts_exp * entry_max)``, by exact integer comparisons
   (:func:`bcq.sw.formats.numerics.scale_code` is the same search on floats);
3. each scalar's normalized magnitude ``|y| = |x| / (2**ts_exp * s)`` is kept as
   ``Y = floor(|y| * 2**FRAC_BITS)`` (saturating at ``2**(entry_bits + FRAC_BITS) - 1``) and an
   exactness flag (``sticky``: ``|y| * 2**FRAC_BITS`` was not an integer);
4. per codebook, the nearest entry of each scalar comes from ``t = ceil(2 y)`` (exact, from ``Y``
   and ``sticky``): the index ``i`` of least ``|2t - 1 - 4 entry_i|``, the first such index on a tie
   (the float encoder's rule: the smaller value, then the lower index);
5. per block and codebook the error ``sum_j (entry * 2**FRAC_BITS - sign_j * Y_j)**2`` (integers),
   and the selector is the codebook of least error, the lower one on a tie.

The tensor scale is a power of two ``2**ts_exp`` (a register of the encoder, set by the host); the
float encoder (:func:`bcq.sw.formats.lobcq.encode`, kept for calibration) takes any FP32 tensor
scale. Where both are defined they agree except in the block errors, which the float encoder
forms from the float64 ``y`` and this one from ``Y`` (docs/arithmetic.md section 7 says when a
selector can differ).
"""

from dataclasses import dataclass
from fractions import Fraction

import torch

from .codebooks import Codebooks
from .config import BCQConfig
from .errors import BCQError, ShapeError
from .lobcq import BCQTensor
from .numerics import scale_code_values, scale_decode

__all__ = ["FRAC_BITS", "TS_EXP_RANGE", "InputFormat", "INPUT_FORMATS", "EncoderArithmetic",
           "decode_bits", "scale_thresholds", "array_scale_codes", "normalize", "ceil_twice",
           "nearest_entries", "encode_bits", "encode_int", "tensor_scale_exp", "float_bits"]

# Fractional bits of the normalized magnitude Y (docs/arithmetic.md section 7 gives the SQNR and
# agreement figures that chose it).
FRAC_BITS = 8
# The power-of-two tensor scale's exponent register: a signed 8-bit field.
TS_EXP_RANGE = (-128, 127)


@dataclass(frozen=True)
class InputFormat:
    """A 16-bit IEEE-style input: ``exp_bits`` exponent bits with bias ``2**(exp_bits-1) - 1``,
    ``man_bits`` stored mantissa bits, subnormals, all-ones exponent for Inf/NaN."""

    name: str
    exp_bits: int
    man_bits: int
    dtype: torch.dtype

    @property
    def bias(self):
        return (1 << (self.exp_bits - 1)) - 1

    @property
    def exp_all_ones(self):
        return (1 << self.exp_bits) - 1

    @property
    def mag_max_finite(self):
        """Magnitude bits (sign cleared) of the largest finite value."""
        return ((self.exp_all_ones - 1) << self.man_bits) | ((1 << self.man_bits) - 1)

    @property
    def e_min(self):
        """Exponent of the LSB of subnormals: a subnormal is ``M * 2**e_min``."""
        return 1 - self.bias - self.man_bits


INPUT_FORMATS = {"bf16": InputFormat("bf16", 8, 7, torch.bfloat16),
                 "fp16": InputFormat("fp16", 5, 10, torch.float16)}


@dataclass(frozen=True)
class EncoderArithmetic:
    """Widths of the encoder's integers, derived from the config (the gateware reads them here).

    Parameters
    ----------
    config : :class:`BCQConfig`

    Members
    -------
    frac_bits : int
        Fractional bits of ``Y`` (:data:`FRAC_BITS`).
    y_bits : int
        Unsigned width of ``Y``: ``entry_bits + frac_bits`` (``Y`` saturates at ``2**y_bits - 1``).
    t_bits : int
        Signed width of ``t = ceil(2 y)``: ``|t| <= 2**(entry_bits + 1)``.
    key_bits : int
        Unsigned width of the nearest-entry key ``|2t - 1 - 4 entry|``.
    err_bits : int
        Unsigned width of a block's error ``sum_j (entry * 2**frac_bits - y_j)**2``.
    """

    config: BCQConfig

    @property
    def frac_bits(self):
        return FRAC_BITS

    @property
    def y_bits(self):
        return self.config.entry_bits + FRAC_BITS

    @property
    def y_max(self):
        return (1 << self.y_bits) - 1

    @property
    def t_bits(self):
        return self.config.entry_bits + 3

    @property
    def key_bits(self):
        # For every t of t_bits: |2t - 1 - 4e| <= 2**(entry_bits + 3) + 1 + 2**(entry_bits + 1)
        return self.config.entry_bits + 4

    @property
    def diff_bits(self):
        """Signed width of ``entry * 2**frac_bits - y``: |.| < 2**y_bits + 2**(y_bits - 1)."""
        return self.y_bits + 2

    @property
    def err_bits(self):
        return 2 * (self.y_bits + 1) + (self.config.block_len - 1).bit_length()


# -- 1. inputs ---------------------------------------------------------------------------------

def _input_format(fmt):
    if fmt not in INPUT_FORMATS:
        raise BCQError(f"input format {fmt!r} is not one of {', '.join(INPUT_FORMATS)}")
    return INPUT_FORMATS[fmt]


def decode_bits(bits, fmt="bf16"):
    """16-bit patterns (int64 tensor, 0..65535) -> (negative bool, m int64, e int64, magnitude
    bits int64) with ``x = -+ m * 2**e``. ``+-Inf`` becomes the largest finite magnitude, ``NaN``
    zero; ``magnitude bits`` (the pattern without its sign, after those substitutions) orders the
    values by magnitude."""
    f = _input_format(fmt)
    neg = (bits >> 15) & 1 == 1
    mag = bits & 0x7FFF
    exp_field = mag >> f.man_bits
    special = exp_field == f.exp_all_ones
    mag = torch.where(special & ((mag & ((1 << f.man_bits) - 1)) == 0), f.mag_max_finite, mag)
    mag = torch.where(special & (mag != f.mag_max_finite), 0, mag)   # NaN (Inf already replaced)
    exp_field = mag >> f.man_bits
    man = mag & ((1 << f.man_bits) - 1)
    m = torch.where(exp_field > 0, man | (1 << f.man_bits), man)
    e = exp_field.clamp(min=1) - 1 + f.e_min
    return neg, m, e, mag


# -- 2. scale codes ----------------------------------------------------------------------------

def scale_thresholds(config: BCQConfig):
    """The constants of the scale search as exact integers ``(num, exp)`` (threshold =
    ``num * 2**exp``) in increasing order: ``"ceil"``: ``V_k * entry_max`` for every code value
    but the last; ``"nearest"``: ``(V_k + V_{k+1}) / 2 * entry_max``. The code is
    ``first_code + (number of thresholds below need * entry_max)`` ("below" is ``<`` for ceil,
    ``<=`` for nearest)."""
    first, values = scale_code_values(config.scale)
    fmt = config.scale
    mant, exp = scale_decode(torch.arange(first, first + len(values)), fmt)
    # Every value is mant * 2**exp with exp >= exp_min: count in units of 2**(exp_min - 1).
    units = (mant << (exp - fmt.exp_min + 1)).tolist()
    if config.scale_rule == "ceil":
        nums = units[:-1]
    else:
        nums = [(a + b) // 2 for a, b in zip(units[:-1], units[1:])]
    return [(n * config.entry_max, fmt.exp_min - 1) for n in nums]


def _compare(m, e, num, exp):
    """Sign of ``m * 2**e - num * 2**exp`` for int64 tensors ``0 <= m < 2**11``, ``e`` and Python
    ints ``0 <= num < 2**40``, ``exp``. Exact without overflow: a shift that is clamped was already
    large enough to decide the sign (``m << 40 > num``, ``num << 16 > m``)."""
    assert 0 <= num < 1 << 40
    d = e - exp
    left = m << d.clamp(0, 40)
    right = torch.full_like(m, num) << (-d).clamp(0, 16)
    return torch.sign(left - right)


def array_scale_codes(m_max, e_max, config: BCQConfig, ts_exp=0):
    """Per array, from its largest magnitude ``m_max * 2**e_max`` (int64 tensors): the scale code
    (int64), by exact comparison against :func:`scale_thresholds` scaled by ``2**ts_exp``."""
    first, _ = scale_code_values(config.scale)
    count = torch.zeros_like(m_max)
    strict = config.scale_rule == "ceil"
    for num, exp in scale_thresholds(config):
        c = _compare(m_max, e_max, num, exp + ts_exp)
        count += (c > 0) if strict else (c >= 0)
    return count + first


# -- 3. normalized values ----------------------------------------------------------------------

def normalize(m, e, s_mant, s_exp, arith: EncoderArithmetic, ts_exp=0):
    """``(Y, sticky)`` of ``|y| = m * 2**e / (s_mant * 2**(s_exp + ts_exp))`` (int64 tensors,
    broadcast): ``Y = floor(|y| * 2**frac_bits)`` saturated at ``y_max``; ``sticky``: ``|y| *
    2**frac_bits`` is not an integer (or saturated). A zero scale (``s_mant = 0``) gives 0."""
    sh = e - s_exp - ts_exp + arith.frac_bits
    up = sh.clamp(0, 40)
    down = (-sh).clamp(0, 40)
    num = (m << up) >> down
    lost = (m & ((torch.ones_like(m) << down) - 1)) != 0
    d = s_mant.clamp(min=1)
    y, r = num // d, num % d
    sticky = lost | (r != 0)
    sat = y > arith.y_max
    y = torch.where(sat, arith.y_max, y)
    sticky = sticky | sat
    zero = s_mant == 0
    return torch.where(zero, 0, y), sticky & ~zero


def ceil_twice(y, sticky, negative, frac_bits=FRAC_BITS):
    """``t = ceil(2 y)`` exactly, from ``|y|``'s ``(Y, sticky)`` and its sign."""
    half = frac_bits - 1
    floor2 = y >> half
    inexact = ((y & ((1 << half) - 1)) != 0) | sticky
    return torch.where(negative, -floor2, floor2 + inexact.to(torch.int64))


# -- 4. nearest entries, 5. selectors -----------------------------------------------------------

def nearest_entries(t, entries):
    """Per scalar ``t`` [n] and codebook row [Nc, 16]: index [n, Nc] of least
    ``|2t - 1 - 4 entry|``, the first on a tie."""
    key = (2 * t.unsqueeze(-1).unsqueeze(-1) - 1 - 4 * entries).abs()   # [n, Nc, 16]
    return key.argmin(-1)   # first minimum


def _check_bits(bits, config):
    if not isinstance(bits, torch.Tensor) or bits.is_floating_point() or bits.dtype == torch.bool:
        raise BCQError("bits must be an integer torch.Tensor of 16-bit patterns")
    if bits.dim() == 0 or bits.shape[-1] == 0 or bits.shape[-1] % config.array_len:
        raise ShapeError(f"bits has shape {tuple(bits.shape)}: the last dimension must be a "
                         f"non-zero multiple of {config.array_len}")
    b = bits.to(torch.int64)
    if bits.dtype == torch.int16:
        b = b & 0xFFFF
    elif bits.numel() and (b.min() < 0 or b.max() > 0xFFFF):
        raise BCQError(f"bits holds {int(b[(b < 0) | (b > 0xFFFF)].flatten()[0])}: 16-bit patterns "
                       f"are 0..65535 (or an int16 tensor)")
    return b


def _check_ts_exp(ts_exp, config):
    if not isinstance(ts_exp, int) or isinstance(ts_exp, bool) or not TS_EXP_RANGE[0] <= ts_exp <= TS_EXP_RANGE[1]:
        raise BCQError(f"ts_exp {ts_exp!r}: an integer in {TS_EXP_RANGE[0]}..{TS_EXP_RANGE[1]}")
    if ts_exp and not config.tensor_scale:
        raise BCQError(f"ts_exp {ts_exp}: the config has no tensor scale (tensor_scale=false), so it must be 0")


def _encode_arrays(flat, codebooks, arith, fmt, ts_exp):
    """Arrays ``flat`` [na, LA] of patterns -> (scale codes [na], selectors [nb], indices [nb, Lb])."""
    cfg = codebooks.config
    lb, nc = cfg.block_len, cfg.n_codebooks
    neg, m, e, mag = decode_bits(flat, fmt)
    _, m_max, e_max, _ = decode_bits(mag.max(-1).values, fmt)
    codes = array_scale_codes(m_max, e_max, cfg, ts_exp)
    s_mant, s_exp = scale_decode(codes, cfg.scale)
    y, sticky = normalize(m, e, s_mant.unsqueeze(-1), s_exp.unsqueeze(-1), arith, ts_exp)
    t = ceil_twice(y, sticky, neg, arith.frac_bits).reshape(-1)
    entries = codebooks.entries
    idx = nearest_entries(t, entries)                                        # [n, Nc]
    q = entries[torch.arange(nc), idx]                                       # [n, Nc]
    ys = torch.where(neg, -y, y).reshape(-1, 1)
    err = ((q << arith.frac_bits) - ys).square().reshape(-1, lb, nc).sum(1)  # [nb, Nc]
    sel = err.argmin(-1)                                                     # first minimum
    pick = idx.reshape(-1, lb, nc).gather(2, sel.view(-1, 1, 1).expand(-1, lb, 1)).squeeze(-1)
    return codes, sel, pick


def encode_bits(bits, codebooks: Codebooks, *, fmt="bf16", ts_exp=0) -> BCQTensor:
    """Encode 16-bit patterns ``bits`` (an int16 tensor, or integers 0..65535; last dimension a
    multiple of LA) of format ``fmt`` (``"bf16"``, ``"fp16"``) with ``codebooks`` and the tensor
    scale ``2**ts_exp``. Returns a :class:`BCQTensor` (``tensor_scale = 2.0**ts_exp``)."""
    cfg = codebooks.config
    _input_format(fmt)
    b = _check_bits(bits, cfg)
    _check_ts_exp(ts_exp, cfg)
    arith = EncoderArithmetic(cfg)
    la = cfg.array_len
    flat = b.reshape(-1, la)
    step = max(1, (1 << 14) // la)          # arrays per chunk: the [n, Nc, 16] keys stay small
    parts = [_encode_arrays(flat[a:a + step], codebooks, arith, fmt, ts_exp) for a in range(0, flat.shape[0], step)]
    codes, sel, pick = (torch.cat(p) for p in zip(*parts))
    lead = bits.shape[:-1]
    return BCQTensor(codebooks, pick.reshape(bits.shape).to(torch.uint8),
                     sel.reshape(*lead, -1).to(torch.uint8), codes.reshape(*lead, -1).to(torch.uint8),
                     float(2.0 ** ts_exp))


def tensor_scale_exp(bits, config: BCQConfig, *, fmt="bf16"):
    """The exponent of the power-of-two tensor scale for a vector (or tensor) of 16-bit patterns
    ``bits``: the least ``ts_exp`` with ``amax <= 2**ts_exp * entry_max * (largest scale)``, so no
    array needs a scale beyond the largest (the float encoder's FP32 scale ``amax / (entry_max *
    largest scale)`` rounded up to a power of two, here exactly). ``amax`` is the largest
    magnitude as decoded (Inf: the largest finite value, NaN: zero). Clamped to
    :data:`TS_EXP_RANGE`; 0 for an all-zero input or a config without tensor scale."""
    cfg = config
    _input_format(fmt)
    b = _check_bits(bits, cfg)
    if not cfg.tensor_scale:
        return 0
    _, _, _, mag = decode_bits(b, fmt)
    _, m, e, _ = decode_bits(mag.max().reshape(1), fmt)
    m, e = int(m[0]), int(e[0])
    if m == 0:
        return 0
    first, values = scale_code_values(cfg.scale)
    s_mant, s_exp = (int(v[0]) for v in scale_decode(torch.tensor([first + len(values) - 1]), cfg.scale))
    ratio = Fraction(m) * Fraction(2) ** e / (cfg.entry_max * s_mant * Fraction(2) ** s_exp)
    k = ratio.numerator.bit_length() - ratio.denominator.bit_length()   # 2**(k-1) < ratio < 2**(k+1)
    if Fraction(2) ** k < ratio:
        k += 1
    return min(max(k, TS_EXP_RANGE[0]), TS_EXP_RANGE[1])


def float_bits(x, fmt="bf16"):
    """The 16-bit patterns (int64, 0..65535) of a float tensor rounded to ``fmt`` (round to
    nearest even, as torch casts)."""
    f = _input_format(fmt)
    return x.to(f.dtype).view(torch.int16).to(torch.int64) & 0xFFFF


def encode_int(x, codebooks: Codebooks, *, fmt="bf16", ts_exp=0) -> BCQTensor:
    """:func:`encode_bits` of ``x`` rounded to ``fmt``."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise BCQError("x must be a floating-point torch.Tensor")
    return encode_bits(float_bits(x, fmt), codebooks, fmt=fmt, ts_exp=ts_exp)
