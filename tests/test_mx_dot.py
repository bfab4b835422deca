"""MXFP4 baseline: codes against the float fake-quantizer, the exact dot product against float
arithmetic, and the gateware (Amaranth simulator, random stalls) against the exact dot."""
import random

from helpers import exactly
import pytest
import torch

from bcq.hw.mx_dot import MXFP4Dot
from bcq.sim.amaranth_streams import run_streams
from bcq.sw.contract.beats import mx_vector_beats
from bcq.sw.formats import mxfp4
from bcq.sw.formats.errors import ConfigError, ShapeError
from bcq.sw.formats.quantizers import get_format


def test_codes_decode_to_the_mxfp4_fake_quantizer(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(8, 256, generator=g) * torch.logspace(-2, 2, 8)[:, None]
    assert torch.equal(mxfp4.decode(mxfp4.encode(x)).float(), get_format("mxfp4").fake_quant(x))


def test_exact_dot_matches_float_of_the_decoded_operands(seed):
    g = torch.Generator().manual_seed(seed)
    for _ in range(20):
        n = 32 * int(torch.randint(1, 9, (1,), generator=g))
        w = mxfp4.encode(torch.randn(n, generator=g, dtype=torch.float64))
        x = mxfp4.encode(torch.randn(n, generator=g, dtype=torch.float64) * 50)
        ref = float((mxfp4.decode(w) * mxfp4.decode(x)).sum())
        assert mxfp4.to_value(mxfp4.dot_fixed(w, x), w.config) == pytest.approx(ref, rel=1e-12, abs=1e-300)


def _random_operand(cfg, n, rng, extreme=False):
    codes = torch.tensor([rng.choice([7, 15]) if extreme else rng.randrange(16) for _ in range(n)], dtype=torch.uint8)
    scales = torch.tensor([(cfg.exp_max if extreme else rng.randint(cfg.exp_min, cfg.exp_max)) + 127
                           for _ in range(n // cfg.block)], dtype=torch.uint8)
    return mxfp4.MXTensor(cfg, codes, scales)


@pytest.mark.parametrize("lanes", [8, 4])
def test_gateware_is_bit_exact_with_stalls(lanes, seed):
    cfg = mxfp4.MXConfig()
    rng = random.Random(seed)
    max_len = 8 * cfg.block
    cases = [(_random_operand(cfg, max_len, rng, True), _random_operand(cfg, max_len, rng, True))]  # largest magnitude
    cases += [(_random_operand(cfg, n, rng), _random_operand(cfg, n, rng))
              for n in (cfg.block * rng.randint(1, 8) for _ in range(60))]
    expected = [mxfp4.dot_fixed(w, x) for w, x in cases]
    dut = MXFP4Dot(cfg, lanes=lanes, max_len=max_len)
    assert max(abs(e) for e in expected) < 2 ** (dut.acc_bits - 1)
    got = run_streams(dut, [b for w, x in cases for b in mx_vector_beats(w, x, lanes)], len(cases), rng, 0.3, 0.3)
    assert got == expected, f"seed {seed}: first mismatch at {next(k for k, (a, b) in enumerate(zip(got, expected)) if a != b)}"


def test_bad_parameters_are_named():
    with pytest.raises(ConfigError, match=exactly("invalid config: lanes=5; allowed: a divisor of the block size 32")):
        MXFP4Dot(lanes=5)
    with pytest.raises(ShapeError, match=exactly("scale exponent outside the window [-16, 15]")):
        cfg = mxfp4.MXConfig()
        t = mxfp4.MXTensor(cfg, torch.zeros(32, dtype=torch.uint8), torch.tensor([127 + 40], dtype=torch.uint8))
        mxfp4.dot_fixed(t, t)
