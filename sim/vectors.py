"""Test vectors for the BCQ dot-product unit: random and directed operand pairs, with expected
results taken only from the golden model (``bcq.sw.formats.golden.dot_fixed``).

A case list is reproducible from ``(config, seed, count)``; the testbenches print the seed and
the failing case's index so a failure replays with one command.
"""

import random

import torch

from bcq.sw.formats.axbxp import dot as bxp_dot
from bcq.sw.formats.codebooks import Codebooks
from bcq.sw.formats.config import BCQConfig
from bcq.sw.formats.golden import Arithmetic, dot_fixed
from bcq.sw.formats.lobcq import BCQTensor, encode

__all__ = ["random_codebooks", "make_cases", "Case", "scale_code_range", "bxp_random_vectors"]


class Case:
    __slots__ = ("name", "w", "x", "expected")

    def __init__(self, name, w, x, arith):
        self.name, self.w, self.x = name, w, x
        self.expected = int(dot_fixed(w, x, arith))

    def describe(self):
        return (f"{self.name}: n={self.w.shape[-1]} w.idx={self.w.indices.tolist()} w.sel={self.w.selectors.tolist()} "
                f"w.scale={self.w.scales.tolist()} x.idx={self.x.indices.tolist()} "
                f"x.sel={self.x.selectors.tolist()} x.scale={self.x.scales.tolist()} expected={self.expected}")


def scale_code_range(cfg: BCQConfig):
    fmt = cfg.scale
    return (0, 0x7E) if fmt.name == "e4m3" else (127 + fmt.exp_min, 127 + fmt.exp_max)


def random_codebooks(cfg: BCQConfig, gen: torch.Generator):
    """Random entries over the full INT range; codebook 0 holds both extremes and a zero."""
    e = torch.randint(cfg.entry_min, cfg.entry_max + 1, (cfg.n_codebooks, cfg.n_entries), generator=gen)
    e[0, 0], e[0, 1], e[0, 2] = cfg.entry_min, cfg.entry_max, 0
    return Codebooks(cfg, e)


def _fields(cb, n, rng, *, idx=None, sel=None, scale=None):
    cfg = cb.config
    lo, hi = scale_code_range(cfg)

    def t(values):
        return torch.tensor(values, dtype=torch.uint8)
    return BCQTensor(
        cb,
        t([rng.randrange(16) if idx is None else idx for _ in range(n)]),
        t([rng.randrange(cfg.n_codebooks) if sel is None else sel for _ in range(n // cfg.block_len)]),
        t([rng.randint(lo, hi) if scale is None else scale for _ in range(n // cfg.array_len)]))


def make_cases(cfg: BCQConfig, codebooks: Codebooks, *, seed: int, count: int, max_len: int, directed=True):
    """Directed edge cases first (unless ``directed`` is False), then ``count`` random vectors
    of mixed lengths."""
    rng = random.Random(seed)
    arith = Arithmetic(cfg, max_len)
    la = cfg.array_len
    cases = []
    add = lambda name, w, x: cases.append(Case(name, w, x, arith))  # noqa: E731
    if directed:
        _directed_cases(cfg, codebooks, rng, seed, max_len, add)
    max_arrays = max_len // la
    for k in range(count):
        n_arrays = rng.choice([1, 1, 2, 3, 4, 5, 8]) if rng.random() < 0.98 else rng.randint(1, max_arrays)
        n_arrays = min(n_arrays, max_arrays)
        add(f"random #{k}", _fields(codebooks, n_arrays * la, rng), _fields(codebooks, n_arrays * la, rng))
    return cases


def _directed_cases(cfg, codebooks, rng, seed, max_len, add):
    la = cfg.array_len
    lo, hi = scale_code_range(cfg)
    # Index 0/1/2 of codebook 0 hold entry_min, entry_max and 0 (random_codebooks).
    add("all-zero (zero tensors)", encode(torch.zeros(la), codebooks), encode(torch.zeros(2 * la)[:la], codebooks))
    add("zero codewords", _fields(codebooks, 2 * la, rng, idx=2, sel=0), _fields(codebooks, 2 * la, rng))
    for wi, xi, name in ((0, 0, "max positive products"), (0, 1, "max negative products"),
                         (1, 1, "max codewords of both signs")):
        add(name, _fields(codebooks, max_len, rng, idx=wi, sel=0, scale=hi),
            _fields(codebooks, max_len, rng, idx=xi, sel=0, scale=hi))
    add("smallest scales", _fields(codebooks, 2 * la, rng, scale=lo), _fields(codebooks, 2 * la, rng, scale=lo))
    add("largest x smallest scale", _fields(codebooks, la, rng, scale=hi), _fields(codebooks, la, rng, scale=lo))
    add("length-1 vector", _fields(codebooks, la, rng), _fields(codebooks, la, rng))
    add("longest vector", _fields(codebooks, max_len, rng), _fields(codebooks, max_len, rng))
    g = torch.Generator().manual_seed(seed)
    add("encoded gaussian", encode(torch.randn(4 * la, generator=g), codebooks),
        encode(torch.randn(4 * la, generator=g) * 100, codebooks))


def bxp_random_vectors(cfg, rng, count, max_beats=4):
    """Ax-BxP MAC vectors of random beats, as (beats, expected) with beats in ``bcq.sw.contract.beats.mac_beats``
    form; mode and signedness change between and within vectors; operands favour the extremes."""
    vectors = []
    for _ in range(count):
        beats, expected = [], 0
        n = rng.randint(1, max_beats)
        for b in range(n):
            mode = rng.choice(cfg.modes)
            sgn = rng.random() < 0.5
            lo, hi = cfg.operand_range(mode, sgn)
            ppc = cfg.products_per_cycle(mode)
            xs = [rng.choice([lo, hi, 0, rng.randint(lo, hi)]) for _ in range(ppc)]
            ws = [rng.choice([lo, hi, 0, rng.randint(lo, hi)]) for _ in range(ppc)]
            beats.append((xs, ws, mode.name, sgn, b == n - 1))
            expected += int(bxp_dot(torch.tensor(xs), torch.tensor(ws), cfg, mode, sgn))
        vectors.append((beats, expected))
    return vectors
