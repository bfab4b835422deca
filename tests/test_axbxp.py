"""The Ax-BxP golden model against independent per-digit references."""
import random

from helpers import exactly
import pytest
import torch

from bcq.sw.formats.axbxp import DEFAULT_BXP, BxPConfig, Mode, dot, matmul, product, quantize_symmetric
from bcq.sw.formats.errors import BCQError, ConfigError

ALL8 = torch.arange(-128, 128)


def pairs(lo, hi):
    v = torch.arange(lo, hi + 1)
    return tuple(t.flatten() for t in torch.meshgrid(v, v, indexing="ij"))


def digits(v, k, n):
    return [(v >> (k * b)) & ((1 << k) - 1) for b in range(n)]


def ref_static(x, w, k, kb, keep_pairs):
    mx, mw = digits(abs(x), k, kb), digits(abs(w), k, kb)
    mag = sum(mx[i] * mw[j] << (k * (i + j)) for i, j in keep_pairs)
    return -mag if (x < 0) != (w < 0) else mag


def ref_dynamic(x, w, k, d):
    def trunc(v):
        v = abs(v)
        if v == 0:
            return 0
        lead = (v.bit_length() - 1) // k
        low = max(0, lead - d + 1)
        return v >> (k * low) << (k * low)
    mag = trunc(x) * trunc(w)
    return -mag if (x < 0) != (w < 0) else mag


@pytest.mark.parametrize("signed", [True, False])
def test_exact_modes_are_exact_over_every_pair(signed):
    for mode in (m for m in DEFAULT_BXP.modes if m.kind == "exact"):
        x, w = pairs(*DEFAULT_BXP.operand_range(mode, signed))
        assert torch.equal(product(x, w, DEFAULT_BXP, mode, signed), x * w), mode.name


def test_static_positions_are_whole_top_diagonals():
    c = DEFAULT_BXP
    assert c.static_positions(c.modes[c.mode_index("static1")]) == [(3, 3)]
    assert sorted(c.static_positions(c.modes[c.mode_index("static3")])) == [(2, 3), (3, 2), (3, 3)]
    assert len(c.static_positions(c.modes[c.mode_index("static6")])) == 6


@pytest.mark.parametrize("name", [m.name for m in DEFAULT_BXP.modes if m.kind != "exact"])
def test_approximate_modes_match_per_digit_reference(name, seed):
    c = DEFAULT_BXP
    mode = c.modes[c.mode_index(name)]
    rng = random.Random(seed)
    xs = [rng.randint(-128, 127) for _ in range(3000)] + [-128, 127, 0, 1, -1, 64, -64, 3]
    ws = [rng.randint(-128, 127) for _ in range(3000)] + [-128, -128, 5, 0, 127, 64, 3, -64]
    got = product(torch.tensor(xs), torch.tensor(ws), c, mode, True).tolist()
    for x, w, g in zip(xs, ws, got):
        if mode.kind == "static":
            want = ref_static(x, w, 2, 4, c.static_positions(mode))
        else:
            want = ref_dynamic(x, w, 2, mode.keep)
        assert g == want, (name, x, w)


def test_error_shrinks_as_more_blocks_are_kept():
    x, w = pairs(-128, 127)
    exact = (x * w).double()
    def mean_rel(name):
        p = product(x, w, DEFAULT_BXP, name, True).double()
        nz = exact != 0
        return float(((p - exact).abs()[nz] / exact.abs()[nz]).mean())
    assert mean_rel("dynamic3") < mean_rel("dynamic2") < mean_rel("dynamic1") < 1
    assert mean_rel("static6") < mean_rel("static3") < mean_rel("static1")
    # Dynamic keeps the leading blocks: its error is bounded, and tiny operands are exact.
    assert torch.equal(product(torch.tensor([3, -2]), torch.tensor([-3, 1]), DEFAULT_BXP, "dynamic1", True),
                       torch.tensor([-9, -2]))


def test_dot_sums_products():
    x = torch.tensor([[1, -2, 3], [127, -128, 0]])
    w = torch.tensor([[4, 5, -6], [1, 1, 1]])
    assert dot(x, w).tolist() == [4 - 10 - 18, -1]


def test_products_per_cycle_scale_with_precision():
    c = DEFAULT_BXP
    ppc = {m.name: c.products_per_cycle(m) for m in c.modes}
    assert ppc["exact8"] == 1 and ppc["exact4"] == 4 and ppc["exact2"] == 16
    assert ppc["dynamic2"] == 4 and ppc["dynamic1"] == 16 and ppc["static3"] == 5


@pytest.mark.parametrize("kwargs,message", [
    ({"n_bits": 7}, "n_bits=7; allowed: a multiple of block_bits=2, at most 16"),
    ({"block_bits": 0}, "block_bits=0; allowed: a positive integer"),
    ({"modes": (Mode("a", "exact", 8), Mode("a", "exact", 4))}, "modes=['a', 'a']; allowed: distinct mode names"),
    ({"modes": (Mode("a", "fuzzy", 8),)}, "modes[a].kind='fuzzy'; allowed: exact, static, dynamic"),
    ({"modes": (Mode("a", "exact", 3),)}, "modes[a].precision=3; allowed: a multiple of 2 up to 8"),
    ({"modes": (Mode("a", "static", 8, 17),)}, "modes[a].keep=17; allowed: 1..16 block products"),
    ({"modes": (Mode("a", "dynamic", 8, 5),)}, "modes[a].keep=5; allowed: 1..4 blocks per operand"),
    ({"modes": ()}, "modes=(); allowed: at least one mode")])
def test_bad_configs(kwargs, message):
    with pytest.raises(ConfigError, match=exactly(f"invalid config: {message}")):
        BxPConfig(**kwargs)


def test_bad_operands():
    with pytest.raises(BCQError, match=exactly("x: values span [9, 9]; mode exact4 (signed 4-bit) allows [-8, 7]")):
        product(torch.tensor([9]), torch.tensor([1]), DEFAULT_BXP, "exact4", True)
    with pytest.raises(BCQError, match=exactly("x: values span [-1, -1]; mode exact8 (unsigned 8-bit) allows [0, 255]")):
        product(torch.tensor([-1]), torch.tensor([1]), DEFAULT_BXP, "exact8", False)
    with pytest.raises(BCQError, match=exactly("unknown mode 'exact9'; allowed: exact8, exact4, exact2, static6, "
                                               "static3, static1, dynamic3, dynamic2, dynamic1")):
        product(torch.tensor([1]), torch.tensor([1]), DEFAULT_BXP, "exact9")
    with pytest.raises(BCQError, match=exactly("x: integer tensor needed, got torch.float32")):
        product(torch.tensor([1.5]), torch.tensor([1]), DEFAULT_BXP)


CONFIGS = [DEFAULT_BXP, BxPConfig(n_bits=8, block_bits=4),
           BxPConfig(n_bits=6, block_bits=2, modes=(Mode("e6", "exact", 6), Mode("s4", "static", 6, 4),
                                                    Mode("d2", "dynamic", 6, 2)))]


@pytest.mark.parametrize("cfg", CONFIGS, ids=["N8k2", "N8k4", "N6k2"])
@pytest.mark.parametrize("signed", [True, False])
def test_matmul_equals_the_scalar_products(cfg, signed, seed):
    """The vectorized form (float64 matrix products of signed digit terms) is bit-exact with the
    element-wise golden model in every mode, extremes included."""
    g = torch.Generator().manual_seed(seed)
    for mode in cfg.modes:
        lo, hi = cfg.operand_range(mode, signed)
        n = int(torch.randint(1, 80, (1,), generator=g))
        x = torch.randint(lo, hi + 1, (2, 3, n), generator=g)
        w = torch.randint(lo, hi + 1, (7, n), generator=g)
        x[0, 0] = lo                      # the extremes: -2^(p-1) (or 0) and 2^(p-1) - 1
        w[0], w[1] = lo, hi
        want = torch.stack([torch.stack([product(x[a, b], w[r], cfg, mode, signed).sum() for r in range(7)])
                            for a in range(2) for b in range(3)]).reshape(2, 3, 7)
        assert torch.equal(matmul(x, w, cfg, mode, signed), want), (mode.name, seed)


def test_matmul_errors():
    with pytest.raises(BCQError, match=exactly("matmul: x (..., n) and w (m, n) needed, got (2, 3) and (4, 2)")):
        matmul(torch.zeros(2, 3, dtype=torch.int64), torch.zeros(4, 2, dtype=torch.int64))
    with pytest.raises(BCQError, match=exactly("w: values span [-9, -9]; mode exact4 (signed 4-bit) allows [-8, 7]")):
        matmul(torch.zeros(1, 2, dtype=torch.int64), torch.full((1, 2), -9), DEFAULT_BXP, "exact4")


def test_quantize_symmetric(seed):
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(9, 33, generator=g) * torch.rand(9, 1, generator=g) * 10
    t[3] = 0
    for bits in (8, 4, 2):
        q, s = quantize_symmetric(t, bits)
        qmax = 2 ** (bits - 1) - 1
        assert q.dtype == torch.int64 and s.shape == (9, 1)
        for r in range(9):
            amax = float(t[r].abs().max())
            assert float(s[r]) == pytest.approx(amax / qmax if amax else 1.0, rel=1e-6)
            assert int(q[r].abs().max()) == (qmax if amax else 0)        # the largest lands on qmax
            assert float((q[r] * s[r] - t[r]).abs().max()) <= float(s[r]) / 2 * (1 + 1e-5)
    with pytest.raises(ConfigError, match=exactly("invalid config: bits=1; allowed: an integer 2..16")):
        quantize_symmetric(t, 1)
    with pytest.raises(BCQError, match=exactly("quantize_symmetric: the tensor holds NaN or infinite values")):
        quantize_symmetric(torch.tensor([1.0, float("nan")]))
