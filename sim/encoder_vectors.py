"""Test vectors for the activation encoder: BF16 vectors (random and directed) with expected beats
taken only from the integer encoder specification (``bcq.sw.formats.encoder_int``).

Reproducible from ``(config, seed, count)``; a failure names the vector and the seed.
"""

import random

import torch

from bcq.sw.contract.beats import activation_beats
from bcq.sw.contract.bf16_beats import float16_beats
from bcq.sw.contract.geometry import BeatGeometry
from bcq.sw.formats.codebooks import Codebooks
from bcq.sw.formats.config import BCQConfig
from bcq.sw.formats.encoder_int import INPUT_FORMATS, encode_bits, float_bits
from bcq.sw.formats.numerics import scale_code_values

__all__ = ["EncoderCase", "encoder_codebooks", "encoder_cases", "directed_vectors"]

BF16 = INPUT_FORMATS["bf16"]
INF, NAN, MAX_FINITE, MIN_SUB = 0x7F80, 0x7FC1, 0x7F7F, 0x0001


class EncoderCase:
    """One vector: its BF16 patterns, input beats of ``lanes`` patterns, expected output beats
    (spec); ``groups``: the input beats of each output beat."""

    __slots__ = ("name", "bits", "beats", "expected")

    def __init__(self, name, bits, codebooks, geometry, ts_exp, lanes):
        self.name, self.bits = name, [int(b) for b in bits]
        q = encode_bits(torch.tensor(self.bits), codebooks, ts_exp=ts_exp)
        self.beats = float16_beats(self.bits, lanes)
        self.expected = activation_beats(q, geometry)

    @property
    def groups(self):
        per = len(self.beats) // len(self.expected)
        return [self.beats[k * per:(k + 1) * per] for k in range(len(self.expected))]

    def describe(self):
        return f"{self.name}: n={len(self.bits)} bits={[f'{b:04x}' for b in self.bits]}"


def encoder_codebooks(cfg: BCQConfig, gen: torch.Generator):
    """Random entries over the full INT range with ties built in: codebook 1 (if any) repeats
    codebook 0, and codebook 0 holds a repeated value and both extremes."""
    e = torch.randint(cfg.entry_min, cfg.entry_max + 1, (cfg.n_codebooks, cfg.n_entries), generator=gen)
    e[0, 0], e[0, 1], e[0, 2], e[0, 5] = cfg.entry_min, cfg.entry_max, 0, 0
    if cfg.n_codebooks > 2:
        e[2] = e[0]
    return Codebooks(cfg, e)


def _bf16(values):
    return float_bits(torch.tensor(values, dtype=torch.float64)).tolist()


def _tie_array(cfg: BCQConfig, rng):
    """An array whose maximum makes the scale exactly a code value V (need = V), and whose other
    scalars sit exactly on half-integer multiples of V (every nearest-entry decision is a tie or
    an exact entry)."""
    first, values = scale_code_values(cfg.scale)
    v = float(values[rng.randrange(1, len(values))])
    xs = [v * cfg.entry_max] + [v * rng.randint(-2 * cfg.entry_max, 2 * cfg.entry_max) / 2
                                for _ in range(cfg.array_len - 1)]
    rng.shuffle(xs)
    return _bf16(xs)


def directed_vectors(cfg: BCQConfig, rng):
    """``[(name, bits)]``: zeros, signed zeros, subnormals, Inf/NaN, the largest and smallest
    arrays, exact ties."""
    la = cfg.array_len
    out = [("zeros", [0] * la), ("negative zeros", [0x8000] * la),
           ("smallest subnormal", [MIN_SUB] * la),
           ("subnormals", [rng.randrange(1, 0x80) | rng.choice((0, 0x8000)) for _ in range(la)]),
           ("largest finite", [MAX_FINITE | rng.choice((0, 0x8000)) for _ in range(la)]),
           ("inf and nan", [rng.choice((INF, INF | 0x8000, NAN, NAN | 0x8000, 0x3F80, 0xBF80)) for _ in range(la)]),
           ("one nonzero", [0] * (la - 1) + [0x3F80]),
           ("largest and smallest", [MAX_FINITE] + [MIN_SUB] * (la - 1))]
    out += [(f"ties {k}", _tie_array(cfg, rng)) for k in range(4)]
    return out


def _random_vector(cfg: BCQConfig, rng, max_arrays):
    arrays = rng.randint(1, max_arrays)
    xs = []
    for _ in range(arrays):
        mag = 2.0 ** rng.uniform(-30, 30) if rng.random() < 0.3 else 2.0 ** rng.uniform(-6, 10)
        kind = rng.random()
        for _ in range(cfg.array_len):
            v = rng.gauss(0, 1) if kind < 0.6 else rng.uniform(-1, 1) ** 5
            xs.append(v * mag)
    bits = _bf16(xs)
    for k in range(len(bits)):          # sprinkle raw patterns: subnormals, Inf, NaN, zeros
        r = rng.random()
        if r < 0.003:
            bits[k] = rng.choice((INF, NAN, 0x8000, MIN_SUB, rng.randrange(0x10000)))
    return bits


def encoder_cases(cfg: BCQConfig, codebooks: Codebooks, *, seed, count, max_arrays=4, blocks_per_cycle=1,
                  lanes=None, ts_exp=0, directed=True):
    """Directed vectors first (unless ``directed`` is False), then ``count`` random vectors, in
    input beats of ``lanes`` patterns (None: one output beat's ``B * Lb``)."""
    rng = random.Random(seed)
    geometry = BeatGeometry(cfg, blocks_per_cycle)
    named = directed_vectors(cfg, rng) if directed else []
    named += [(f"random {k}", _random_vector(cfg, rng, max_arrays)) for k in range(count)]
    lanes = geometry.scalars_per_beat if lanes is None else lanes
    return [EncoderCase(name, bits, codebooks, geometry, ts_exp, lanes) for name, bits in named]
