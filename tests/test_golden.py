"""The golden dot product against independent references."""
from fractions import Fraction

from conftest import random_codebooks
from helpers import exactly
import pytest
import torch

from bcq.sw.formats.codebooks import Codebooks
from bcq.sw.formats.config import BCQConfig
from bcq.sw.formats.errors import BCQError, ConfigError, ShapeError
from bcq.sw.formats.golden import Arithmetic, dot_fixed, dot_value
from bcq.sw.formats.lobcq import BCQTensor, decode, encode
from bcq.sw.formats.numerics import scale_value

CONFIGS = [BCQConfig(), BCQConfig(block_len=4, n_codebooks=4), BCQConfig(n_codebooks=1),
           BCQConfig(scale_format="e8m0"), BCQConfig(entry_bits=8, tensor_scale=False)]


def random_bcq(cfg, cb, lead, n, gen, tensor_scale=1.0):
    """Random encoded fields over the whole legal range (extreme scale codes included)."""
    fmt = cfg.scale
    lo, hi = (0, 0x7E) if fmt.name == "e4m3" else (127 + fmt.exp_min, 127 + fmt.exp_max)
    scales = torch.randint(lo, hi + 1, (*lead, n // cfg.array_len), generator=gen)
    scales.view(-1)[0], scales.view(-1)[-1] = lo, hi
    return BCQTensor(cb, torch.randint(0, 16, (*lead, n), generator=gen).to(torch.uint8),
                     torch.randint(0, cfg.n_codebooks, (*lead, n // cfg.block_len), generator=gen).to(torch.uint8),
                     scales.to(torch.uint8), tensor_scale)


def python_int_reference(w, x):
    """Exact rational reference with Python integers and Fractions (no shared code path)."""
    cfg = w.config
    total = Fraction(0)
    cw, cx = w.codewords().tolist(), x.codewords().tolist()
    sw_, sx = scale_value(w.scales, cfg.scale).tolist(), scale_value(x.scales, cfg.scale).tolist()
    for i in range(len(cw)):
        a = i // cfg.array_len
        total += Fraction(cw[i] * cx[i]) * Fraction(sw_[a]) * Fraction(sx[a])
    return total


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c.describe().split(":")[0])
def test_fixed_point_equals_exact_rational(cfg, seed):
    gen = torch.Generator().manual_seed(seed)
    cb = random_codebooks(cfg, gen)
    ar = Arithmetic(cfg)
    for n_arrays in (1, 3, 8):
        n = n_arrays * cfg.array_len
        w, x = random_bcq(cfg, cb, (), n, gen), random_bcq(cfg, cb, (), n, gen)
        acc = int(dot_fixed(w, x))
        assert Fraction(acc) * Fraction(2) ** ar.out_exp == python_int_reference(w, x)
        assert abs(acc) < 1 << (ar.acc_bits - 1)


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c.describe().split(":")[0])
def test_matches_decode_then_float_dot_within_documented_bound(cfg, seed):
    gen = torch.Generator().manual_seed(seed)
    cb = random_codebooks(cfg, gen)
    w = encode(torch.randn(5, 4 * cfg.array_len, generator=gen), cb)
    x = encode(torch.randn(3, 4 * cfg.array_len, generator=gen) * 7, cb)
    got = dot_value(w, x)                                   # [3, 5]
    dw, dx = decode(w, torch.float64), decode(x, torch.float64)
    ref = dx @ dw.T
    # docs/arithmetic.md: |golden - float| <= n * 2**-52 * sum|w_i x_i| (float64 summation)
    bound = dw.shape[-1] * 2.0 ** -52 * (dx.abs() @ dw.abs().T)
    assert ((got - ref).abs() <= bound).all()


def test_batched_shapes_agree_with_single_vectors(default_cb, seed):
    gen = torch.Generator().manual_seed(seed)
    w = encode(torch.randn(4, 128, generator=gen), default_cb)
    x = encode(torch.randn(2, 128, generator=gen), default_cb)
    full = dot_fixed(w, x)
    assert full.shape == (2, 4)
    for v in range(2):
        assert dot_fixed(w, x[v]).tolist() == full[v].tolist()
        for r in range(4):
            assert int(dot_fixed(w[r], x[v])) == int(full[v, r])


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c.describe().split(":")[0])
def test_worst_case_magnitude_fits_the_declared_accumulator(cfg):
    """Longest vector, largest codeword products and scales, every term the same sign."""
    ar = Arithmetic(cfg, max_len=16 * cfg.array_len)
    cb = Codebooks(cfg, torch.full((cfg.n_codebooks, 16), cfg.entry_min))
    top = 0x7E if cfg.scale.name == "e4m3" else 127 + cfg.scale.exp_max
    n = ar.max_len
    ones = lambda k: torch.zeros(k, dtype=torch.uint8)
    w = BCQTensor(cb, ones(n), ones(n // cfg.block_len), torch.full((n // cfg.array_len,), top, dtype=torch.uint8))
    acc = int(dot_fixed(w, w, ar))
    mant, exp = (14, 5) if cfg.scale.name == "e4m3" else (1, 0)
    expect = n * cfg.entry_min ** 2 * mant * mant << (2 * exp - ar.out_exp)
    assert acc == expect and acc < 1 << (ar.acc_bits - 1)
    assert ar.max_arrays * ar.max_scaled >= acc   # the bound is a bound


def test_arithmetic_rejects_lengths_it_cannot_hold():
    with pytest.raises(ConfigError, match=exactly(
            "invalid config: max_len=100; allowed: a positive multiple of array_len=64")):
        Arithmetic(BCQConfig(), max_len=100)
    with pytest.raises(ConfigError, match=exactly(
            "invalid config: max_len=16777216; allowed: at most 149120 for this config (64-bit accumulator)")):
        Arithmetic(BCQConfig(), max_len=1 << 24)
    assert Arithmetic(BCQConfig()).acc_bits == 59


def test_mismatched_operands_are_clear_errors(default_cb):
    w = encode(torch.randn(128), default_cb)
    with pytest.raises(ShapeError, match=exactly("dot product of length 128 and 64: lengths differ")):
        dot_fixed(w, encode(torch.randn(64), default_cb))
    bad = BCQTensor(default_cb, w.indices, w.selectors, torch.tensor([0x7F, 0], dtype=torch.uint8))
    with pytest.raises(BCQError, match=exactly(
            "weight scale code 0x7f is not a valid E4M3 scale (allowed 0x00..0x7E: positive, finite)")):
        dot_fixed(bad, w)
