import itertools

from conftest import random_codebooks
from helpers import exactly
import pytest
import torch

from bcq.sw.formats.codebooks import Codebooks
from bcq.sw.formats.config import BCQConfig
from bcq.sw.formats.errors import BCQError, ShapeError
from bcq.sw.formats.lobcq import calibrate, decode, encode, fake_quant
from bcq.sw.formats.numerics import scale_value

CONFIGS = [BCQConfig(), BCQConfig(block_len=4, n_codebooks=4), BCQConfig(n_codebooks=1),
           BCQConfig(scale_format="e8m0"), BCQConfig(block_len=2, array_len=16, n_codebooks=2, entry_bits=4),
           BCQConfig(tensor_scale=False, entry_bits=8)]


def brute_force_block(y, entries):
    """Independent reference: try every codebook, every scalar against every entry, with the
    documented tie rules (smaller value, then lower index; lower codebook number)."""
    best = None
    for c, book in enumerate(entries.tolist()):
        idx, err = [], 0.0
        for v in y.tolist():
            cands = sorted(range(len(book)), key=lambda i: ((v - book[i]) ** 2, book[i], i))
            idx.append(cands[0])
            err += (v - book[cands[0]]) ** 2
        if best is None or err < best[0]:
            best = (err, c, idx)
    return best


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c.describe().split(":")[0])
def test_encode_picks_least_error_codebook_and_nearest_entries(cfg, seed):
    gen = torch.Generator().manual_seed(seed)
    cb = random_codebooks(cfg, gen)
    x = torch.randn(3, 2 * cfg.array_len, generator=gen) * torch.rand(3, 1, generator=gen) * 10
    q = encode(x, cb)
    ts = q.tensor_scale
    sv = scale_value(q.scales, cfg.scale).repeat_interleave(cfg.array_len, -1)
    y = (x.double() / ts / sv).reshape(-1, cfg.block_len)
    sel = q.selectors.flatten()
    idx = q.indices.reshape(-1, cfg.block_len)
    for b in range(y.shape[0]):
        err, c, ref_idx = brute_force_block(y[b], cb.entries)
        got_err = float(((y[b] - cb.entries[sel[b].long(), idx[b].long()].double()) ** 2).sum())
        assert got_err == pytest.approx(err, rel=1e-12, abs=1e-12), f"block {b}"
        assert int(sel[b]) == c and idx[b].tolist() == ref_idx, f"block {b}: tie rule"


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c.describe().split(":")[0])
def test_array_scale_is_smallest_code_covering_the_array(cfg, seed):
    gen = torch.Generator().manual_seed(seed)
    cb = random_codebooks(cfg, gen)
    x = torch.randn(4, 4 * cfg.array_len, generator=gen) * torch.logspace(-3, 2, 4).unsqueeze(-1)
    q = encode(x, cb)
    need = (x.double() / q.tensor_scale).reshape(4, -1, cfg.array_len).abs().amax(-1) / cfg.entry_max
    codes = q.scales.long()
    fmt = cfg.scale
    top = 0x7E if fmt.name == "e4m3" else 127 + fmt.exp_max
    bottom = 0 if fmt.name == "e4m3" else 127 + fmt.exp_min
    val = scale_value(codes, fmt)
    assert ((val >= need * (1 - 1e-12)) | (codes == top)).all()
    lower = scale_value(torch.clamp(codes - 1, min=bottom), fmt)
    assert ((lower < need) | (codes == bottom)).all()


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
