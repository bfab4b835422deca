import itertools

from conftest import random_codebooks
from helpers import exactly
import lobcq_reference as reference
import pytest
import torch

from bcq.sw.formats.codebooks import Codebooks, default_codebooks
from bcq.sw.formats.config import DEFAULT, BCQConfig
from bcq.sw.formats.errors import BCQError, ShapeError
from bcq.sw.formats.lobcq import _assign, _normalize, calibrate, decode, encode, fake_quant
from bcq.sw.formats.numerics import scale_value
from bcq.sw.formats.quantizers import sqnr_db

CONFIGS = [BCQConfig(), BCQConfig(scale_rule="ceil"), BCQConfig(block_len=4, n_codebooks=4),
           BCQConfig(n_codebooks=1), BCQConfig(scale_format="e8m0"),
           BCQConfig(scale_format="e8m0", scale_rule="ceil", e8m0_min_exp=-4),
           BCQConfig(block_len=2, array_len=16, n_codebooks=2, entry_bits=4),
           BCQConfig(tensor_scale=False, entry_bits=8), BCQConfig(tensor_scale=False, scale_rule="ceil"),
           BCQConfig(block_len=16, array_len=128, n_codebooks=16)]


def _check_against_reference(x, cb):
    """The fast encoder and fake_quant against the slow Python reference, bit for bit."""
    ts, scales, sels, idxs, deq = reference.encode(x.double().tolist(), cb)
    q = encode(x, cb)
    assert q.tensor_scale == ts
    assert q.scales.tolist() == scales
    assert q.selectors.tolist() == sels
    assert q.indices.tolist() == idxs
    want = torch.tensor(deq, dtype=torch.float64).to(x.dtype)
    assert torch.equal(fake_quant(x, cb), want)
    assert torch.equal(decode(q, x.dtype), want)


def _tie_data(cfg, gen, kind):
    """Inputs that put scalars exactly on entry midpoints and blocks on exact codebook ties."""
    n = 2 * cfg.array_len
    if kind == "integers":     # with ts = 1 and power-of-two scales, y lands on k and k + 1/2
        x = torch.randint(-2 * cfg.entry_max, 2 * cfg.entry_max + 1, (4, n), generator=gen) / 2.0
    elif kind == "quarters":
        x = torch.randint(-64, 65, (4, n), generator=gen) / 4.0
    elif kind == "mirrored":   # each block next to its mirror image: permuted equal errors
        h = torch.randn(4, n // 2, generator=gen) * 8
        x = torch.stack([h, -h.flip(-1)], -1).reshape(4, n)
    else:                      # tiny, zero and huge arrays side by side
        x = torch.randn(4, n, generator=gen)
        x[0, :cfg.array_len] = 0.0
        x[1, :cfg.array_len] *= 1e-9
        x[2] *= 1e6
        x[3, ::3] = -0.0
    return x


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c.describe().split(":")[0])
def test_encoder_matches_slow_reference_bit_for_bit(cfg, seed):
    gen = torch.Generator().manual_seed(seed)
    cb = random_codebooks(cfg, gen)
    x = torch.randn(3, 2 * cfg.array_len, generator=gen) * torch.rand(3, 1, generator=gen) * 10
    _check_against_reference(x, cb)


@pytest.mark.parametrize("kind", ["integers", "quarters", "mirrored", "extremes"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c.describe().split(":")[0])
def test_encoder_ties_match_slow_reference(cfg, kind, seed):
    gen = torch.Generator().manual_seed(seed)
    cb = random_codebooks(cfg, gen)
    if kind == "mirrored":     # codebooks that are mirror images of each other tie exactly
        e = cb.entries.clone()
        e[1::2] = -e[0::2][: e[1::2].shape[0]].clamp(min=cfg.entry_min + 1)
        cb = Codebooks(cfg, e)
    if kind == "quarters":     # duplicate entries and identical codebooks
        e = cb.entries.clone()
        e[:, 1] = e[:, 0]
        e[-1] = e[0]
        cb = Codebooks(cfg, e)
    _check_against_reference(_tie_data(cfg, gen, kind), cb)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_encoder_takes_other_float_dtypes(dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    cb = random_codebooks(BCQConfig(), gen)
    _check_against_reference((torch.randn(2, 128, generator=gen) * 3).to(dtype), cb)


def test_encoder_many_seeds_default(default_cb):
    """The shipped codebooks over many seeds and scales (one larger sample per seed)."""
    for s in range(12):
        gen = torch.Generator().manual_seed(1000 + s)
        x = torch.randn(4, 256, generator=gen) * 10.0 ** torch.randint(-3, 4, (4, 1), generator=gen)
        _check_against_reference(x, default_cb)


def test_calibration_assignment_equals_encoder(seed):
    """The calibration's general nearest-entry search and the encoder's integer tables agree."""
    gen = torch.Generator().manual_seed(seed)
    for cfg in CONFIGS:
        cb = random_codebooks(cfg, gen)
        x = torch.randn(4, 2 * cfg.array_len, generator=gen).round() * 0.5
        _, codes, y = _normalize(x, cfg)
        sel, idx, _ = _assign(y.reshape(-1, cfg.block_len), cb.entries)
        q = encode(x, cb)
        assert torch.equal(codes, q.scales)
        assert sel.tolist() == q.selectors.flatten().tolist()
        assert idx.flatten().tolist() == q.indices.flatten().tolist()


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c.describe().split(":")[0])
def test_array_scale_follows_the_scale_rule(cfg, seed):
    gen = torch.Generator().manual_seed(seed)
    cb = random_codebooks(cfg, gen)
    x = torch.randn(4, 4 * cfg.array_len, generator=gen) * torch.logspace(-3, 2, 4).unsqueeze(-1)
    q = encode(x, cb)
    need = (x.double().abs().reshape(4, -1, cfg.array_len).amax(-1) / q.tensor_scale) / cfg.entry_max
    want = [[reference.choose_scale(float(v), cfg)[0] for v in row] for row in need]
    assert q.scales.tolist() == want
    val = scale_value(q.scales.long(), cfg.scale)
    top = reference.scale_table(cfg)[-1][0]
    if cfg.scale_rule == "ceil":   # nothing clips
        assert ((val >= need) | (q.scales.long() == top)).all()


def test_decode_matches_loop_reference(default_cb, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 128, generator=gen)
    q = encode(x, default_cb)
    ref = torch.empty(2, 128, dtype=torch.float64)
    for r, i in itertools.product(range(2), range(128)):
        c = default_cb.entries[int(q.selectors[r, i // 8]), int(q.indices[r, i])]
        ref[r, i] = float(c) * float(scale_value(q.scales[r, i // 64], default_cb.config.scale)) * q.tensor_scale
    assert torch.equal(decode(q, torch.float64), ref)


def test_round_trip_error_is_bounded(default_cb, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(16, 256, generator=gen)
    xq = fake_quant(x, default_cb)
    assert xq.shape == x.shape and xq.dtype == x.dtype
    rel = float((x - xq).norm() / x.norm())
    assert rel < 0.08, rel


def test_zeros_encode_to_exact_zero(default_cb):
    x = torch.zeros(2, 64)
    x[1, :] = 0.0
    assert torch.equal(fake_quant(x, default_cb), x)
    x[1, 3] = -2.5  # one array zero, the next not
    y = fake_quant(torch.cat([torch.zeros(1, 64), x[1:]], 1), default_cb)
    assert torch.equal(y[0, :64], torch.zeros(64))


def test_encode_is_deterministic(default_cb, seed):
    x = torch.randn(8, 512, generator=torch.Generator().manual_seed(seed))
    a, b = encode(x, default_cb), encode(x.clone(), default_cb)
    assert torch.equal(a.indices, b.indices) and torch.equal(a.selectors, b.selectors)
    assert torch.equal(a.scales, b.scales) and a.tensor_scale == b.tensor_scale


_SHAPE = "tensor has shape {}: the last dimension must be a non-zero multiple of 64"
_NAN = "tensor contains NaN or Inf: quantize finite values only"


@pytest.mark.parametrize("bad,message", [
    (torch.randn(3, 65), _SHAPE.format((3, 65))), (torch.randn(64, 0), _SHAPE.format((64, 0))),
    (torch.tensor(1.0), _SHAPE.format(())),
    (torch.randint(0, 5, (64,)), "tensor has dtype torch.int64; a floating-point tensor is needed"),
    (torch.tensor([float("nan")] + [0.0] * 63), _NAN), (torch.full((64,), float("inf")), _NAN)])
def test_bad_tensors_get_clear_errors(default_cb, bad, message):
    with pytest.raises(BCQError, match=exactly(message)):
        encode(bad, default_cb)


def test_shape_error_is_a_bcq_error():
    assert issubclass(ShapeError, BCQError)


@pytest.mark.parametrize("cfg", CONFIGS[:4], ids=lambda c: c.describe().split(":")[0])
def test_calibration_mse_never_increases_and_is_seed_deterministic(cfg):
    g = torch.Generator().manual_seed(3)
    data = [torch.randn(256, 256, generator=g), torch.randn(128, 256, generator=g) ** 3]
    r1 = calibrate(data, cfg, iters=8, seed=7, max_blocks=4096, progress=False)
    h = r1.mse_history
    assert all(b <= a * (1 + 1e-12) for a, b in zip(h, h[1:])), h
    assert h[-1] < h[0]
    r2 = calibrate(data, cfg, iters=8, seed=7, max_blocks=4096, progress=False)
    assert r1.codebooks == r2.codebooks
    e = r1.codebooks.entries
    assert e.dtype == torch.int64 and e.min() >= cfg.entry_min and e.max() <= cfg.entry_max
    # The rounded codebooks are what encode uses: their MSE is reported honestly.
    assert r1.mse_final >= h[-1] * (1 - 1e-9) or cfg.n_codebooks == 1


def test_calibrated_codebooks_beat_a_uniform_grid(default_cb):
    """Sanity of the shipped set: on Gaussian data it must beat one uniform INT codebook."""
    cfg = default_cb.config
    uniform = Codebooks(cfg, torch.linspace(-31, 31, 16).round().long().repeat(cfg.n_codebooks, 1))
    x = torch.randn(64, 1024, generator=torch.Generator().manual_seed(0))
    e_cal = (fake_quant(x, default_cb) - x).pow(2).sum()
    e_uni = (fake_quant(x, uniform) - x).pow(2).sum()
    assert e_cal < 0.7 * e_uni


def test_calibration_weights_blocks_by_their_arrays_energy(seed):
    """Each block weighs 2**e with e = log2((s * ts)**2 / mean(x**2)) rounded (frexp), clamped."""
    import math

    from bcq.sw.formats.lobcq import _E_MAX, _E_MIN, _block_weights, _normalize_arrays, _tensor_scale
    cfg = BCQConfig()
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 4 * cfg.array_len, generator=gen) * torch.tensor([1e-4, 1.0, 30.0, 0.0]).unsqueeze(-1)
    ts = _tensor_scale(x, cfg)
    _, sv, _ = _normalize_arrays(x.reshape(-1, cfg.array_len), ts, cfg)
    e = _block_weights(x, ts, sv, cfg).view(-1, cfg.blocks_per_array)
    ms = sum(v * v for v in x.double().flatten().tolist()) / x.numel()
    for a, s in enumerate(sv.tolist()):
        assert (e[a] == e[a, 0]).all()
        if s == 0:
            assert int(e[a, 0]) == _E_MIN - 1
            continue
        m, k = math.frexp((s * ts) ** 2 / ms)
        want = min(max(k - 1 if m < 2 ** -0.5 else k, _E_MIN), _E_MAX)
        assert int(e[a, 0]) == want


def test_calibration_fits_the_energetic_arrays():
    """Large arrays of one shape and many tiny arrays of another: the weighted fit serves the
    large ones, whose error is nearly all of the tensor's (SQNR close to a fit on them alone)."""
    g = torch.Generator().manual_seed(5)
    big = torch.randn(64, 256, generator=g) * 10
    tiny = (torch.rand(1024, 256, generator=g) - 0.5) * 0.01
    x = torch.cat([big, tiny])
    cfg = BCQConfig(n_codebooks=2)
    mixed = calibrate([x], cfg, progress=False).codebooks
    alone = calibrate([big], cfg, progress=False).codebooks
    assert sqnr_db(x, fake_quant(x, mixed)) > sqnr_db(x, fake_quant(x, alone)) - 0.3


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_calibration_and_encoding_leave_their_input_alone(dtype):
    # Calibration once divided a float64 input in place (``.to(float64)`` returns the tensor
    # itself), so the energy weights were taken from normalized values.
    x = torch.randn(64, 256, generator=torch.Generator().manual_seed(3)).to(dtype)
    before = x.clone()
    calibrate(x, DEFAULT, iters=1, progress=False)
    encode(x, default_codebooks())
    fake_quant(x, default_codebooks())
    assert torch.equal(x, before)
