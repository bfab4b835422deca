"""The integer activation encoder specification (bcq.sw.formats.encoder_int): against a slow
exact-rational reference written from docs/arithmetic.md section 7, against the float encoder
where both are defined, edge cases and errors."""
import dataclasses
from fractions import Fraction
import math
import random
import struct

import pytest
import torch

from bcq.sim.encoder_vectors import directed_vectors, encoder_codebooks
from bcq.sw.formats.codebooks import Codebooks, default_codebooks
from bcq.sw.formats.config import BCQConfig
from bcq.sw.formats.encoder_int import FRAC_BITS, encode_bits, encode_int, float_bits
from bcq.sw.formats.errors import BCQError, ShapeError
from bcq.sw.formats.lobcq import encode
from bcq.sw.formats.numerics import scale_code_values
from helpers import exactly

CONFIGS = [BCQConfig(), BCQConfig(scale_rule="nearest"), BCQConfig(scale_format="e8m0", e8m0_min_exp=-12),
           BCQConfig(scale_format="e8m0", scale_rule="nearest"), BCQConfig(block_len=4, array_len=16, n_codebooks=2),
           BCQConfig(n_codebooks=1, entry_bits=8, array_len=32)]
IDS = ["default", "nearest", "e8m0", "e8m0-nearest", "lb4-nc2", "nc1-int8"]


# -- the reference: exact rationals, the rules as docs/arithmetic.md states them ----------------

def _value(b, fmt):
    """The exact value of a 16-bit pattern, Inf as the largest finite value, NaN as 0."""
    if fmt == "bf16":
        v = struct.unpack("<f", struct.pack("<I", b << 16))[0]
        big = struct.unpack("<f", struct.pack("<I", 0x7F7F << 16))[0]
    else:
        v = struct.unpack("<e", struct.pack("<H", b))[0]
        big = 65504.0
    if math.isnan(v):
        return Fraction(0)
    if math.isinf(v):
        return Fraction(math.copysign(big, v))
    return Fraction(v)


def _reference(bits, codebooks, ts_exp=0, fmt="bf16"):
    cfg = codebooks.config
    first, values = scale_code_values(cfg.scale)
    values = [Fraction(float(v)) for v in values]
    entries = codebooks.entries.tolist()
    codes, sels, idxs = [], [], []
    for a in range(0, len(bits), cfg.array_len):
        xs = [_value(b, fmt) for b in bits[a:a + cfg.array_len]]
        negs = [(b >> 15) & 1 for b in bits[a:a + cfg.array_len]]
        need = max(abs(x) for x in xs) / (Fraction(2) ** ts_exp * cfg.entry_max)
        if cfg.scale_rule == "ceil":
            k = next((k for k, v in enumerate(values) if v >= need), len(values) - 1)
        else:   # nearest value, a tie to the larger, saturating
            k = min(range(len(values)), key=lambda k: (abs(values[k] - need), -k))
        codes.append(first + k)
        s = values[k] * Fraction(2) ** ts_exp
        ys = [x / s if s else Fraction(0) for x in xs]
        big = (1 << (cfg.entry_bits + FRAC_BITS)) - 1
        yq = [min(math.floor(abs(y) * 2 ** FRAC_BITS), big) * (-1 if n else 1) for y, n in zip(ys, negs)]
        for b in range(0, cfg.array_len, cfg.block_len):
            best = None
            for c, row in enumerate(entries):
                pick = [min(range(16), key=lambda i: (abs(y - row[i]), row[i], i)) for y in ys[b:b + cfg.block_len]]
                err = sum((row[i] * 2 ** FRAC_BITS - q) ** 2 for i, q in zip(pick, yq[b:b + cfg.block_len]))
                if best is None or err < best[0]:
                    best = (err, c, pick)
            sels.append(best[1])
            idxs += best[2]
    return codes, sels, idxs


def _random_bits(cfg, rng, arrays):
    xs = []
    for _ in range(arrays):
        mag = 2.0 ** rng.uniform(-25, 25)
        xs += [rng.gauss(0, 1) * mag for _ in range(cfg.array_len)]
    bits = float_bits(torch.tensor(xs, dtype=torch.float64)).tolist()
    for k in range(len(bits)):
        if rng.random() < 0.02:
            bits[k] = rng.randrange(0x10000)
    return bits


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_matches_exact_reference(cfg, seed):
    rng = random.Random(seed)
    cb = encoder_codebooks(cfg, torch.Generator().manual_seed(seed))
    vectors = [bits for _, bits in directed_vectors(cfg, rng)] + [_random_bits(cfg, rng, 2) for _ in range(3)]
    ts_exp = rng.randint(-4, 4) if cfg.tensor_scale else 0
    for bits in vectors:
        q = encode_bits(torch.tensor(bits), cb, ts_exp=ts_exp)
        got = (q.scales.tolist(), q.selectors.tolist(), q.indices.tolist())
        assert got == _reference(bits, cb, ts_exp), f"bits {bits}, ts_exp {ts_exp}"


def test_fp16_matches_exact_reference(seed):
    cfg = BCQConfig(block_len=4, array_len=16, n_codebooks=4)
    rng = random.Random(seed)
    cb = encoder_codebooks(cfg, torch.Generator().manual_seed(seed))
    for _ in range(4):
        xs = [rng.gauss(0, 1) * 2.0 ** rng.uniform(-20, 12) for _ in range(cfg.array_len)]
        bits = torch.tensor(xs).to(torch.float16).view(torch.int16)
        bits[rng.randrange(16)] = rng.choice((0x7C00, 0x7E01, 0x0001, -32768))   # Inf, NaN, subnormal, -0
        q = encode_bits(bits, cb, fmt="fp16")
        ref = _reference((bits.to(torch.int64) & 0xFFFF).tolist(), cb, fmt="fp16")
        assert (q.scales.tolist(), q.selectors.tolist(), q.indices.tolist()) == ref


# -- against the float encoder ----------------------------------------------------------------

def _exact_block_error(y, row):
    return sum(min((y_ - e) ** 2 for e in row) for y_ in y)


@pytest.mark.parametrize("cfg", CONFIGS[:4], ids=IDS[:4])
@pytest.mark.parametrize("fmt", ["bf16", "fp16"])
def test_agrees_with_float_encoder(cfg, fmt, seed):
    """Same scale codes and nearest entries always; a different selector only where the two
    codebooks' exact block errors are within the integer encoder's truncation of y (docs,
    section 7): ``|err_a - err_b| <= 2**(1 - FRAC_BITS) * sum |q_a - q_b|``."""
    cfg = dataclasses.replace(cfg, tensor_scale=False)
    cb = Codebooks(cfg, default_codebooks(BCQConfig()).entries if cfg.entry_bits == 6
                   else encoder_codebooks(cfg, torch.Generator().manual_seed(seed)).entries)
    g = torch.Generator().manual_seed(seed)
    dtype = torch.bfloat16 if fmt == "bf16" else torch.float16
    for trial in range(4):
        x = torch.randn(64, 4 * cfg.array_len, generator=g, dtype=torch.float64)
        x = x * torch.exp2(torch.randint(-8 if fmt == "fp16" else -20, 4, (64, 1), generator=g).double())
        if trial % 2:
            x = x.pow(3)
        x = x.to(dtype)
        qi, qf = encode_int(x, cb, fmt=fmt), encode(x, cb)
        assert torch.equal(qi.scales, qf.scales)
        same = (qi.selectors == qf.selectors).repeat_interleave(cfg.block_len, -1)
        assert torch.equal(qi.indices[same], qf.indices[same])
        diff = (qi.selectors != qf.selectors).nonzero().tolist()
        assert len(diff) <= qi.selectors.numel() // 50, f"{len(diff)} selectors differ"
        first, values = scale_code_values(cfg.scale)
        for r, b in diff:
            s = Fraction(float(values[int(qi.scales[r, b * cfg.block_len // cfg.array_len]) - first]))
            y = [Fraction(float(v)) / s for v in x[r, b * cfg.block_len:(b + 1) * cfg.block_len].double()]
            rows = [cb.entries[int(q.selectors[r, b])].tolist() for q in (qi, qf)]
            qa = [min(rows[0], key=lambda e: (abs(v - e), e)) for v in y]
            qb = [min(rows[1], key=lambda e: (abs(v - e), e)) for v in y]
            gap = abs(_exact_block_error(y, rows[0]) - _exact_block_error(y, rows[1]))
            assert gap <= Fraction(2, 2 ** FRAC_BITS) * sum(abs(a - b_) for a, b_ in zip(qa, qb)), (r, b, gap)


def test_power_of_two_tensor_scale_is_exact(seed):
    """``ts_exp = k`` encodes x exactly as ``ts_exp = 0`` encodes ``x * 2**-k``."""
    cfg = BCQConfig()
    cb = encoder_codebooks(cfg, torch.Generator().manual_seed(seed))
    x = torch.randn(8, 128, generator=torch.Generator().manual_seed(seed)).to(torch.bfloat16) * 64
    for k in (-3, 1, 5):
        a = encode_int(x, cb, ts_exp=k)
        b = encode_int(x.double() * 2.0 ** -k, cb)
        assert a.tensor_scale == 2.0 ** k
        assert torch.equal(a.indices, b.indices) and torch.equal(a.selectors, b.selectors)
        assert torch.equal(a.scales, b.scales)


# -- edge cases -------------------------------------------------------------------------------

def test_zero_array_takes_the_lowest_code(default_cb):
    q = encode_bits(torch.zeros(64, dtype=torch.int64), default_cb)
    assert q.scales.tolist() == [0]
    e8 = BCQConfig(scale_format="e8m0", e8m0_min_exp=-12)
    q = encode_bits(torch.full((64,), 0x8000), Codebooks(e8, default_cb.entries))
    assert q.scales.tolist() == [127 - 12]


def test_inf_encodes_as_the_largest_finite_value_and_nan_as_zero(default_cb, seed):
    bits = float_bits(torch.randn(64, generator=torch.Generator().manual_seed(seed)))
    for special, same in ((0x7F80, 0x7F7F), (0xFF80, 0xFF7F), (0x7FC0, 0x0000), (0xFFFF, 0x0000)):
        a, b = bits.clone(), bits.clone()
        a[7], b[7] = special, same
        qa, qb = encode_bits(a, default_cb), encode_bits(b, default_cb)
        assert (qa.scales.tolist(), qa.selectors.tolist(), qa.indices.tolist()) == \
               (qb.scales.tolist(), qb.selectors.tolist(), qb.indices.tolist())


def test_identical_codebooks_tie_to_the_lower_selector(seed):
    cfg = BCQConfig(n_codebooks=4)
    g = torch.Generator().manual_seed(seed)
    row = torch.randint(cfg.entry_min, cfg.entry_max + 1, (16,), generator=g)
    cb = Codebooks(cfg, torch.stack([row + 0 * c for c in range(4)]))
    q = encode_int(torch.randn(4, 64, generator=g), cb)
    assert q.selectors.unique().tolist() == [0]


# -- errors -----------------------------------------------------------------------------------

def test_errors(default_cb):
    with pytest.raises(BCQError, match=exactly("input format 'fp8' is not one of bf16, fp16")):
        encode_bits(torch.zeros(64, dtype=torch.int64), default_cb, fmt="fp8")
    with pytest.raises(ShapeError, match=exactly("bits has shape (60,): the last dimension must be a non-zero multiple of 64")):
        encode_bits(torch.zeros(60, dtype=torch.int64), default_cb)
    with pytest.raises(BCQError, match=exactly("bits holds 65536: 16-bit patterns are 0..65535 (or an int16 tensor)")):
        encode_bits(torch.full((64,), 65536), default_cb)
    with pytest.raises(BCQError, match=exactly("bits must be an integer torch.Tensor of 16-bit patterns")):
        encode_bits(torch.zeros(64), default_cb)
    with pytest.raises(BCQError, match=exactly("ts_exp 128: an integer in -128..127")):
        encode_bits(torch.zeros(64, dtype=torch.int64), default_cb, ts_exp=128)
    no_ts = Codebooks(BCQConfig(tensor_scale=False), default_cb.entries)
    with pytest.raises(BCQError, match=exactly("ts_exp 2: the config has no tensor scale (tensor_scale=false), so it must be 0")):
        encode_bits(torch.zeros(64, dtype=torch.int64), no_ts, ts_exp=2)
    with pytest.raises(BCQError, match=exactly("x must be a floating-point torch.Tensor")):
        encode_int(torch.zeros(64, dtype=torch.int64), default_cb)
