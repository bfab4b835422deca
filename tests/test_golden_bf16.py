"""The golden model of a layer BF16 in, BF16 out (bcq.sw.formats.golden_bf16) and the power-of-two
tensor scales it needs: the activation's (encoder_int.tensor_scale_exp) and the weight's
(lobcq.encode(..., pow2_tensor_scale=True))."""
from fractions import Fraction
import math

from helpers import exactly
import pytest
import torch

from bcq.sw.formats.encoder_int import TS_EXP_RANGE, encode_bits, float_bits, tensor_scale_exp
from bcq.sw.formats.errors import BCQError
from bcq.sw.formats.golden_bf16 import bf16_from_bits, gemv_bf16, gemv_bf16_bits, pow2_exponent
from bcq.sw.formats.lobcq import decode, encode


def exact_values(q):
    """Every scalar of an encoded tensor as an exact Fraction (codeword x scale x tensor scale:
    float64 holds each exactly)."""
    return [[Fraction(v) for v in row] for row in decode(q, torch.float64).reshape(-1, q.shape[-1]).tolist()]


def bf16_value(bits):
    """The value of a BF16 pattern: a Fraction, or +-inf."""
    v = float(bf16_from_bits(torch.tensor([bits])).float())
    return v if math.isinf(v) else Fraction(v)


def assert_nearest(bits, exact):
    """``bits`` is a BF16 pattern nearest to ``exact`` (round to nearest; on a tie the even one)."""
    y = bf16_value(bits)
    largest = bf16_value(0x7F7F)
    if isinstance(y, float):                      # +-Inf: the exact value is beyond the largest finite
        assert abs(exact) >= largest and (y > 0) == (exact > 0), (hex(bits), float(exact))
        return
    for nb in (bits - 1, bits + 1):               # the neighbours on either side (same sign)
        if nb & 0x7FFF in (0x7FFF, 0x7F80) or nb < 0 or (nb ^ bits) & 0x8000:
            continue
        n = bf16_value(nb)
        d, dn = abs(y - exact), abs(n - exact)
        assert d < dn or (d == dn and bits % 2 == 0), (hex(bits), float(exact), hex(nb))


@pytest.mark.parametrize("scale", [1.0, 0.25])
def test_gemv_bf16_is_the_exact_product_rounded_once(default_cb, seed, scale):
    gen = torch.Generator().manual_seed(seed)
    w = encode(torch.randn(8, 128, generator=gen), default_cb, pow2_tensor_scale=True)
    x = torch.randn(128, generator=gen) * scale
    x[::17] *= 50                                  # a few outliers, as in real activations
    y, ts = gemv_bf16(w, x)
    assert y.dtype == torch.bfloat16 and y.shape == (8,) and ts == tensor_scale_exp(float_bits(x), default_cb.config)
    # Independently: the exact sum of the decoded operands' products, as Fractions.
    xq = encode_bits(float_bits(x), default_cb, ts_exp=ts)
    xs = exact_values(xq)[0]
    for r, row in enumerate(exact_values(w)):
        exact = sum(a * b for a, b in zip(row, xs))
        assert_nearest(int(y.view(torch.int16)[r]) & 0xFFFF, exact)


def test_gemv_bf16_bits_overflow_and_subnormal_outputs(default_cb):
    w = encode(torch.ones(2, 64), default_cb, pow2_tensor_scale=True)
    big = float_bits(torch.full((64,), 3.0e38))
    ts = tensor_scale_exp(big, default_cb.config)
    assert gemv_bf16_bits(w, big, ts_exp=ts).tolist() == [0x7F80, 0x7F80]            # 64 x 3e38: +Inf
    assert gemv_bf16_bits(w, float_bits(-torch.full((64,), 3.0e38)), ts_exp=ts).tolist() == [0xFF80, 0xFF80]
    tiny = float_bits(torch.full((64,), 1e-40))
    out = gemv_bf16_bits(w, tiny, ts_exp=tensor_scale_exp(tiny, default_cb.config))
    for bits in out.tolist():
        assert 0 < bits < 0x0080                    # a positive subnormal
        assert_nearest(bits, sum(a * b for a, b in zip(exact_values(w)[0], exact_values(encode_bits(
            tiny, default_cb, ts_exp=tensor_scale_exp(tiny, default_cb.config)))[0])))


def test_tensor_scale_exp_is_the_least_that_fits(default_cb, seed):
    cfg = default_cb.config
    top = cfg.entry_max * 448                       # entry_max x the largest E4M3 scale
    gen = torch.Generator().manual_seed(seed)
    vectors = [torch.randn(128, generator=gen) * 10.0 ** float(torch.randint(-30, 30, (1,), generator=gen))
               for _ in range(50)]
    vectors += [torch.full((64,), float(top)), torch.full((64,), float(top) * 1.01), torch.full((64,), 1e-39),
                torch.tensor([float("inf")] + [0.0] * 63), torch.tensor([float("nan"), 2.0] + [0.0] * 62)]
    for x in vectors:
        k = tensor_scale_exp(float_bits(x), cfg)
        amax = Fraction(float(x.to(torch.bfloat16).float().nan_to_num(0.0, 3.3895313892515355e38).abs().max()))
        assert amax <= Fraction(2) ** k * top or k == TS_EXP_RANGE[1]
        assert amax > Fraction(2) ** (k - 1) * top or k == TS_EXP_RANGE[0], (float(amax), k)
    assert tensor_scale_exp(float_bits(torch.zeros(64)), cfg) == 0


def test_pow2_tensor_scale_encoding_agrees_with_the_integer_encoder(default_cb, seed):
    """With a power-of-two tensor scale the float encoder and the integer one (the on-chip
    encoder's specification) take the same tensor scale and scale codes, and the same indices
    wherever they take the same selector (docs/arithmetic.md section 7)."""
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(16, 256, generator=gen) * 3).to(torch.bfloat16).float()
    q = encode(x, default_cb, pow2_tensor_scale=True)
    fp32 = encode(x, default_cb).tensor_scale
    assert q.tensor_scale == 2.0 ** math.ceil(math.log2(fp32))
    k = tensor_scale_exp(float_bits(x), default_cb.config)
    assert q.tensor_scale == 2.0 ** k
    qi = encode_bits(float_bits(x), default_cb, ts_exp=k)
    assert torch.equal(q.scales, qi.scales)
    same = (q.selectors == qi.selectors).repeat_interleave(default_cb.config.block_len, -1)
    assert same.float().mean() > 0.95
    assert torch.equal(q.indices[same], qi.indices[same])


def test_pow2_exponent():
    assert [pow2_exponent(v) for v in (1.0, 0.5, 2.0 ** -128, 2.0 ** 127, 4)] == [0, -1, -128, 127, 2]
    for bad in (0.75, 0.0, -2.0, 2.0 ** -129, 2.0 ** 128, float("nan"), True, "1"):
        with pytest.raises(BCQError, match=exactly(
                f"tensor scale {bad!r} is not a power of two 2**e with e in -128..127: the board's BF16 output "
                "adds the scale's exponent and has no multiplier (write the image with pow2_tensor_scale=True, "
                "bcq weights --pow2-tensor-scale)")):
            pow2_exponent(bad)


def test_gemv_bf16_refuses_a_weight_without_a_pow2_scale(default_cb):
    w = encode(torch.randn(2, 64) * 3, default_cb)
    with pytest.raises(BCQError, match=exactly(
            f"the weight's tensor scale {w.tensor_scale!r} is not a power of two 2**e with e in -128..127: the "
            "board's BF16 output adds the scale's exponent and has no multiplier (write the image with "
            "pow2_tensor_scale=True, bcq weights --pow2-tensor-scale)")):
        gemv_bf16(w, torch.randn(64))
    with pytest.raises(BCQError, match=exactly("gemv_bf16: x must be a 1-D floating-point torch.Tensor")):
        gemv_bf16(w, torch.zeros(64, dtype=torch.int64))
