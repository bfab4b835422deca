"""The BCQ format: one frozen, validated config object.

This is the single definition of every format parameter. The golden model (``bcq.sw.formats.lobcq``,
``bcq.sw.formats.golden``), the gateware generators (``hw.*``) and the image writer all take a
:class:`BCQConfig` and derive widths from it; nothing is typed twice.

Paper symbols (LO-BCQ, arXiv 2502.05376): Lb = ``block_len``, LA = ``array_len``,
Nc = ``n_codebooks``. A tensor's last dimension is cut into block arrays of LA scalars that
share one 8-bit scale factor; each array into blocks of Lb scalars; each block carries a
``selector`` of log2(Nc) bits naming one of Nc codebooks; each scalar is a 4-bit index into
that codebook, whose 16 entries are signed ``entry_bits``-bit integers.
"""

from dataclasses import asdict, dataclass
import math

from .errors import ConfigError
from .options import parse_assignments

__all__ = ["BCQConfig", "ScaleFormat", "SCALE_FORMATS", "DEFAULT"]

ALLOWED_BLOCK_LEN = (2, 4, 8, 16)
ALLOWED_N_CODEBOOKS = (1, 2, 4, 8, 16)
ALLOWED_ENTRY_BITS = (4, 5, 6, 7, 8)
INDEX_BITS = 4  # W4: every scalar is a 4-bit index, so a codebook has 16 entries


@dataclass(frozen=True)
class ScaleFormat:
    """An 8-bit unsigned scale encoding, seen by the hardware as ``mant * 2**exp``.

    ``mant`` is an unsigned integer of ``mant_bits`` bits and ``exp`` an integer in
    ``[exp_min, exp_max]``; both come from the 8-bit code by :mod:`sw.scales`.
    """

    name: str
    mant_bits: int  # width of the integer significand (0: the significand is always 1)
    exp_min: int
    exp_max: int
    max_value: float  # largest finite scale value

    @property
    def exp_bits(self):
        return max(1, (self.exp_max - self.exp_min).bit_length())

    @property
    def mant_max(self):
        return (1 << self.mant_bits) - 1 if self.mant_bits else 1


# E4M3 (OCP FP8): value = 2**(e-7) * (1 + m/8) for e > 0, 2**-6 * m/8 for e = 0.
# As an integer significand times a power of two: mant = (8 + m) or m (4 bits),
# exp = max(e, 1) - 10, so exp in [-9, 5]; the largest finite value 0x7E = 14 * 2**5 = 448.
# Sign must be 0 (scales are magnitudes) and 0x7F (NaN) is not a scale: the encoder writes
# neither; docs/arithmetic.md section 5 says what the hardware makes of them.
E4M3 = ScaleFormat("e4m3", mant_bits=4, exp_min=-9, exp_max=5, max_value=448.0)


def e8m0(min_exp):
    """E8M0 (OCP MX): value = 2**(code - 127). The hardware accumulates in fixed point, so
    the exponents it supports are the window ``[min_exp, 0]``; the encoder saturates to it."""
    return ScaleFormat("e8m0", mant_bits=0, exp_min=min_exp, exp_max=0, max_value=1.0)


SCALE_FORMATS = ("e4m3", "e8m0")


@dataclass(frozen=True)
class BCQConfig:
    """Parameters of one BCQ format (see module docstring for the paper's symbols).

    Parameters
    ----------
    block_len : Lb, scalars per block (one selector each). Allowed: 2, 4, 8, 16.
    array_len : LA, scalars per block array (one scale each). A multiple of ``block_len``.
    n_codebooks : Nc, codebooks to choose from. Allowed: 1, 2, 4, 8, 16.
    entry_bits : width of a signed integer codebook entry. Allowed: 4..8.
    scale_format : ``"e4m3"`` (default) or ``"e8m0"`` (power-of-two scales).
    e8m0_min_exp : lowest exponent of the E8M0 window ``[e8m0_min_exp, 0]`` (-30..0).
    tensor_scale : whether an FP32 per-tensor scale is applied on top of the array scales.
    """

    block_len: int = 8
    array_len: int = 64
    n_codebooks: int = 16
    entry_bits: int = 6
    scale_format: str = "e4m3"
    e8m0_min_exp: int = -16
    tensor_scale: bool = True

    def __post_init__(self):
        for name in ("block_len", "array_len", "n_codebooks", "entry_bits", "e8m0_min_exp"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ConfigError(name, value, "an integer")
        if self.block_len not in ALLOWED_BLOCK_LEN:
            raise ConfigError("block_len", self.block_len, ALLOWED_BLOCK_LEN)
        if self.array_len <= 0 or self.array_len % self.block_len or self.array_len > 4096:
            raise ConfigError("array_len", self.array_len,
                              f"a positive multiple of block_len={self.block_len}, at most 4096")
        if self.n_codebooks not in ALLOWED_N_CODEBOOKS:
            raise ConfigError("n_codebooks", self.n_codebooks, ALLOWED_N_CODEBOOKS)
        if self.entry_bits not in ALLOWED_ENTRY_BITS:
            raise ConfigError("entry_bits", self.entry_bits, "4..8")
        if self.scale_format not in SCALE_FORMATS:
            raise ConfigError("scale_format", self.scale_format, SCALE_FORMATS)
        if not -30 <= self.e8m0_min_exp <= 0:
            raise ConfigError("e8m0_min_exp", self.e8m0_min_exp, "-30..0")
        if not isinstance(self.tensor_scale, bool):
            raise ConfigError("tensor_scale", self.tensor_scale, "true or false")

    # -- derived quantities (the only place they are computed) -------------------------

    @property
    def index_bits(self):
        return INDEX_BITS

    @property
    def n_entries(self):
        return 1 << INDEX_BITS

    @property
    def selector_bits(self):
        return (self.n_codebooks - 1).bit_length()

    @property
    def scale_bits(self):
        return 8

    @property
    def blocks_per_array(self):
        return self.array_len // self.block_len

    @property
    def entry_min(self):
        return -(1 << (self.entry_bits - 1))

    @property
    def entry_max(self):
        return (1 << (self.entry_bits - 1)) - 1

    @property
    def scale(self):
        """The :class:`ScaleFormat` of the block-array scales."""
        return E4M3 if self.scale_format == "e4m3" else e8m0(self.e8m0_min_exp)

    @property
    def bits_per_scalar(self):
        """Effective storage: 4 + log2(Nc)/Lb + scale_bits/LA (4.625 for the default)."""
        return self.index_bits + self.selector_bits / self.block_len + self.scale_bits / self.array_len

    # -- serialization -------------------------------------------------------------------

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d, *, source="config"):
        if not isinstance(d, dict):
            raise ConfigError(source, type(d).__name__, "a JSON object of config fields")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"{source}.{unknown[0]}", d[unknown[0]], f"one of the fields {sorted(known)}")
        return cls(**d)

    @classmethod
    def parse(cls, text):
        """Parse ``"block_len=4,n_codebooks=4,scale_format=e8m0"`` (the CLI's ``--config``)."""
        types = {name: f.type if f.type in (int, bool) else str for name, f in cls.__dataclass_fields__.items()}
        return cls(**parse_assignments(text.split(","), types, what="--config"))

    def describe(self):
        return (f"LO-BCQ Lb={self.block_len} LA={self.array_len} Nc={self.n_codebooks} "
                f"INT{self.entry_bits} entries, {self.scale_format.upper()} array scales"
                f"{' + FP32 tensor scale' if self.tensor_scale else ''}: "
                f"{self.bits_per_scalar:g} bits/scalar")


DEFAULT = BCQConfig()
assert math.isclose(DEFAULT.bits_per_scalar, 4.625)
