"""The weight search (``encode_weights``): weights encoded offline choose each array's scale code
among the max-based one and its neighbours, and each block's codebook, by the error weighted by
the input channels' energy. Checked against a slow Python reference, against ``encode``, and for
never being worse than the max-based encoding."""

from conftest import random_codebooks
from helpers import exactly
import lobcq_reference as reference
import pytest
import torch

from bcq.sw.formats.codebooks import default_codebooks
from bcq.sw.formats.config import BCQConfig
from bcq.sw.formats.errors import BCQError, ShapeError
from bcq.sw.formats.lobcq import (WEIGHT_SCALE_OFFSETS, decode, encode, encode_weights, fake_quant,
                                  fake_quant_weights)

CONFIGS = [BCQConfig(), BCQConfig(scale_rule="nearest"), BCQConfig(block_len=4, n_codebooks=4),
           BCQConfig(scale_format="e8m0", e8m0_min_exp=-6), BCQConfig(tensor_scale=False, entry_bits=8)]


def _energy(n, gen):
    """Channel energies with a mean of exactly 1 (pairs 1 - d, 1 + d), so that the normalization
    by the mean is exact and the reference can take them as they are."""
    d = torch.tensor([0.0, 0.5, 0.75, 1.0])[torch.randint(0, 4, (n // 2,), generator=gen)]
    h = torch.stack([1 - d, 1 + d], -1).reshape(n)
    return h[torch.randperm(n, generator=gen)].double()


def _weights(rows, n, gen):
    return torch.randn(rows, n, generator=gen) * torch.rand(rows, n // 64 + 1, generator=gen).repeat_interleave(64, -1)[:, :n] ** 2


def reference_search(rows, cb, h, offsets):
    """Slow reference: per array and candidate code, every block's codebook by the h-weighted
    error summed in scalar order (ties: the lower codebook); the candidate of least
    sum_j h_j (q_j s - x_j / ts)**2, per block in order, then over blocks (ties: the earlier offset)."""
    cfg = cb.config
    books = cb.entries.tolist()
    table = reference.scale_table(cfg)
    ts = reference.tensor_scale([v for r in rows for v in r], cfg)
    out = ([], [], [], [])
    for r in rows:
        sc, sl, ix = [], [], []
        for a in range(0, len(r), cfg.array_len):
            arr = r[a:a + cfg.array_len]
            code0, _ = reference.choose_scale(max(abs(v) for v in arr) / ts / cfg.entry_max, cfg)
            k0 = [c for c, _ in table].index(code0)
            best = None
            for o in offsets:
                code, s = table[min(max(k0 + o, 0), len(table) - 1)]
                ys = [v / ts / s if s > 0 else 0.0 for v in arr]
                total, sels, idxs = 0.0, [], []
                for b in range(0, cfg.array_len, cfg.block_len):
                    blk = None
                    for c, book in enumerate(books):
                        idx = [reference.nearest_entry(y, book) for y in ys[b:b + cfg.block_len]]
                        err = 0.0
                        for j, (y, i) in enumerate(zip(ys[b:b + cfg.block_len], idx)):
                            err += (book[i] - y) ** 2 * h[a + b + j]
                        if blk is None or err < blk[0]:
                            blk = (err, c, idx)
                    out_err = 0.0
                    for j, i in enumerate(blk[2]):
                        out_err += (books[blk[1]][i] * s - arr[b + j] / ts) ** 2 * h[a + b + j]
                    total += out_err
                    sels.append(blk[1])
                    idxs += blk[2]
                if best is None or total < best[0]:
                    best = (total, code, sels, idxs)
            sc.append(best[1])
            sl += best[2]
            ix += best[3]
        for lst, v in zip(out, (sc, sl, ix)):
            lst.append(v)
    return ts, *out[:3]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c.describe().split(":")[0])
@pytest.mark.parametrize("seed", range(3))
def test_search_matches_slow_reference(cfg, seed):
    gen = torch.Generator().manual_seed(seed)
    cb = random_codebooks(cfg, gen)
    n = 2 * cfg.array_len
    w, h = _weights(3, n, gen), _energy(n, gen)
    ts, scales, sels, idxs = reference_search(w.double().tolist(), cb, h.tolist(), WEIGHT_SCALE_OFFSETS)
    q = encode_weights(w, cb, channel_energy=h)
    print(f"replay: seed={seed} cfg={cfg}")
    assert q.tensor_scale == ts
    assert q.scales.tolist() == scales
    assert q.selectors.tolist() == sels
    assert q.indices.tolist() == idxs
    assert torch.equal(fake_quant_weights(w, cb, channel_energy=h), decode(q, w.dtype))


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c.describe().split(":")[0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_without_energy_and_offsets_it_is_the_encoder(cfg, dtype):
    gen = torch.Generator().manual_seed(7)
    cb = random_codebooks(cfg, gen)
    w = _weights(9, 4 * cfg.array_len, gen).to(dtype)
    w[0, :cfg.array_len] = 0.0
    a, b = encode(w, cb), encode_weights(w, cb, scale_offsets=(0,))
    assert a.tensor_scale == b.tensor_scale
    for f in ("scales", "selectors", "indices"):
        assert torch.equal(getattr(a, f), getattr(b, f)), f
    assert torch.equal(fake_quant(w, cb), fake_quant_weights(w, cb, scale_offsets=(0,)))


@pytest.mark.parametrize("seed", range(20))
def test_search_is_never_worse_than_the_max_based_scale(seed):
    """Per array, the weighted squared error of the search is at most that of ``encode`` (its
    candidates include the max-based code, and its selectors minimize the weighted error)."""
    gen = torch.Generator().manual_seed(seed)
    cb = default_codebooks()
    w = _weights(16, 256, gen).double()   # float64: the values are not rounded to a narrower dtype
    h = torch.rand(256, generator=gen, dtype=torch.float64) ** 4 * 10
    hn = h / h.mean()
    def err(q):
        return ((q.double() - w.double()) ** 2 * hn).view(16, -1, 64).sum(-1)
    base, search = err(fake_quant(w, cb)), err(fake_quant_weights(w, cb, channel_energy=h))
    print(f"replay: seed={seed}")
    assert (search <= base * (1 + 1e-12)).all()
    assert search.sum() < base.sum()
    plain = ((fake_quant_weights(w, cb).double() - w.double()) ** 2).sum()
    assert plain <= ((fake_quant(w, cb).double() - w.double()) ** 2).sum()


def test_zero_weights_encode_to_zero():
    cb = default_codebooks()
    w = torch.zeros(2, 128)
    assert torch.equal(fake_quant_weights(w, cb), w)
    assert encode_weights(w, cb).scales.tolist() == encode(w, cb).scales.tolist()


@pytest.mark.parametrize("kwargs, message", [
    ({"channel_energy": torch.ones(63)},
     "channel_energy must be a float tensor of shape (128,) (one value per input channel of the weight), "
     "not torch.float32 (63,)"),
    ({"channel_energy": torch.ones(128, dtype=torch.int64)},
     "channel_energy must be a float tensor of shape (128,) (one value per input channel of the weight), "
     "not torch.int64 (128,)"),
    ({"channel_energy": -torch.ones(128)}, "channel_energy must be finite, non-negative and not all zero"),
    ({"channel_energy": torch.zeros(128)}, "channel_energy must be finite, non-negative and not all zero"),
    ({"channel_energy": torch.full((128,), float("nan"))},
     "channel_energy must be finite, non-negative and not all zero"),
    ({"scale_offsets": ()}, "scale_offsets must be a non-empty sequence of integers in -8..8, not ()"),
    ({"scale_offsets": (0, 9)}, "scale_offsets must be a non-empty sequence of integers in -8..8, not (0, 9)"),
    ({"scale_offsets": (0.5,)}, "scale_offsets must be a non-empty sequence of integers in -8..8, not (0.5,)"),
])
@pytest.mark.parametrize("fn", [encode_weights, fake_quant_weights])
def test_bad_arguments_get_clear_errors(fn, kwargs, message):
    with pytest.raises(BCQError, match=exactly(message)):
        fn(torch.randn(2, 128), default_codebooks(), **kwargs)


def test_bad_weight_tensor_is_named():
    with pytest.raises(ShapeError, match=exactly("weight tensor has shape (2, 100): the last dimension "
                                                 "must be a non-zero multiple of 64")):
        encode_weights(torch.randn(2, 100), default_codebooks())
