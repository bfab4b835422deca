"""``bcq trace``: golden and RTL stage by stage (docs/arithmetic.md section 6). A correct design
agrees at every tapped stage; a stage broken on purpose (in the golden model or in the design)
is the first stage reported."""
from helpers import exactly
import numpy as np
import pytest
import torch

from bcq.cli import main
from bcq.hw.bcq_dot import BCQDot
from bcq.sim.trace import format_trace, random_pair, trace_unit, trace_vector
from bcq.sim.vectors import random_codebooks
from bcq.sw.formats.codebooks import Codebooks
from bcq.sw.formats.config import BCQConfig
from bcq.sw.formats.errors import BCQError
from bcq.sw.formats.golden import TRACE_STAGES, dot_fixed
from bcq.sw.formats.golden import trace as golden_trace


@pytest.mark.parametrize("cfg,bpc", [(BCQConfig(), 1), (BCQConfig(), 2), (BCQConfig(scale_format="e8m0"), 1),
                                     (BCQConfig(n_codebooks=1), 1)], ids=["default", "2bpc", "e8m0", "nc1"])
def test_every_stage_is_tapped_and_agrees(cfg, bpc, seed):
    cb = random_codebooks(cfg, torch.Generator().manual_seed(seed))
    w, x = random_pair(cb, seed, arrays=3)
    r = trace_vector(BCQDot(cfg, blocks_per_cycle=bpc, max_len=4 * cfg.array_len, cells="model"), w, x)
    assert r.first_difference is None
    assert set(r.rtl) == set(TRACE_STAGES)
    assert r.rtl == r.golden
    assert r.golden["output"] == [int(dot_fixed(w, x, any_code=True))]
    assert len(r.golden["beat_sums"]) == w.shape[0] // (bpc * cfg.block_len) and len(r.golden["array_sums"]) == 3
    assert "every tapped stage equals the golden model" in format_trace(r)


def test_golden_trace_is_consistent_with_itself(default_cb, seed):
    """The stages against each other, independently of the RTL: codewords from the codebooks,
    products, sums by beat and array, terms, running sum."""
    w, x = random_pair(default_cb, seed, arrays=2)
    t = golden_trace(w, x, beat_len=16, any_code=True)   # random_pair draws edge scale codes too
    cb = default_cb.entries
    cw = [int(cb[int(w.selectors[i // 8]), int(w.indices[i])]) for i in range(128)]
    cx = [int(cb[int(x.selectors[i // 8]), int(x.indices[i])]) for i in range(128)]
    prods = [a * b for a, b in zip(cw, cx)]
    assert (t["w_codewords"], t["x_codewords"], t["products"]) == (cw, cx, prods)
    assert t["beat_sums"] == [sum(prods[k:k + 16]) for k in range(0, 128, 16)]
    assert t["array_sums"] == [sum(prods[:64]), sum(prods[64:])]
    terms = [p * m << s for p, m, s in zip(t["array_sums"], t["scale_mants"], t["scale_shifts"])]
    assert t["scaled_sums"] == terms and t["accumulator"] == [terms[0], terms[0] + terms[1]]


def test_a_broken_golden_stage_is_pinpointed(seed):
    cfg = BCQConfig()
    cb = random_codebooks(cfg, torch.Generator().manual_seed(seed))
    w, x = random_pair(cb, seed, arrays=2)

    def broken(*args, **kwargs):
        t = golden_trace(*args, **kwargs)
        t["products"][37] += 1          # and nothing downstream: the RTL differs from here on
        return t

    r = trace_vector(BCQDot(cfg, max_len=256, cells="model"), w, x, golden=broken)
    assert r.first_difference == ("products", 37)
    text = format_trace(r)
    assert "== products: cw_i * cx_i of each scalar (128 values) == DIFFERS at index 37   <<< first stage" in text
    assert text.count("<<<") == 1
    assert "== w_codewords: codeword cw_i = entries[sel_w][idx_w] of each scalar of w (128 values) == same" in text


def test_a_wrong_codebook_entry_in_the_design_is_pinpointed(seed):
    """The design's ROM differs from the golden model's codebooks in one entry that x uses."""
    cfg = BCQConfig()
    cb = random_codebooks(cfg, torch.Generator().manual_seed(seed))
    w, x = random_pair(cb, seed, arrays=1)
    sel, idx = int(x.selectors[5]), int(x.indices[5 * 8 + 3])
    entries = cb.entries.clone()
    entries[sel, idx] = entries[sel, idx] + 1 if entries[sel, idx] < cfg.entry_max else entries[sel, idx] - 1
    dut = BCQDot(cfg, max_len=256, codebooks=Codebooks(cfg, entries), codebook_rom=True, cells="model")
    r = trace_vector(dut, w, x)
    first_use_x = min(i for i in range(64) if (int(x.selectors[i // 8]), int(x.indices[i])) == (sel, idx))
    uses_w = [i for i in range(64) if (int(w.selectors[i // 8]), int(w.indices[i])) == (sel, idx)]
    assert r.first_difference == (("w_codewords", uses_w[0]) if uses_w else ("x_codewords", first_use_x))


def test_a_wrong_scale_decode_in_the_design_is_pinpointed(monkeypatch, seed):
    import bcq.hw.bcq_dot as bcq_dot_module
    real = bcq_dot_module.decode_scale

    def off_by_one(m, code, fmt, name):
        mant, exp = real(m, code, fmt, name)
        return mant, (exp + 1)[:len(exp)] if name == "w_scale" else exp

    monkeypatch.setattr(bcq_dot_module, "decode_scale", off_by_one)
    cfg = BCQConfig()
    cb = random_codebooks(cfg, torch.Generator().manual_seed(seed))
    w, x = random_pair(cb, seed, arrays=2, scales=(0x30, 0x38))
    r = trace_vector(BCQDot(cfg, max_len=256, cells="model"), w, x)
    assert r.first_difference == ("scale_shifts", 0)
    for stage in ("w_codewords", "x_codewords", "products", "beat_sums", "array_sums", "scale_mants"):
        assert r.rtl[stage] == r.golden[stage]


def test_bcq_trace_command(capsys):
    assert main(["trace", "--seed", "3", "--option", "blocks_per_cycle=2", "--scales", "0x7f,0xff"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("bcq trace: bcq-dot, LO-BCQ Lb=8 LA=64 Nc=8 INT6 entries, E4M3 array scales (ceil) + FP32 "
                          "tensor scale: 4.5 bits/scalar, 2 block(s)/cycle; one vector of 64 scalars (1 block array), seed 3; "
                          "scale codes w ['0x7f'], x ['0xff']\n")
    assert out.count(" == same") == len(TRACE_STAGES)
    assert out.endswith("every tapped stage equals the golden model\n")


@pytest.mark.parametrize("argv,message", [
    (["--unit", "gemv"], "unit 'gemv' has no trace taps; traced units: bcq-dot"),
    (["--scales", "0x7f"], "--scales 0x7f: two scale codes W,X (e.g. 0x7f,0x38) are needed"),
    (["--scales", "1,x"], "--scales 1,x: two scale codes W,X (e.g. 0x7f,0x38) are needed"),
    (["--scales", "300,1"], "--scales (300, 1): two 8-bit scale codes (0..255) are needed"),
    (["--arrays", "0"], "--arrays 0: a positive number of block arrays is needed"),
    (["--arrays", "100"], "--arrays 100: the unit's max_len=4096 holds at most 64 block arrays"),
    (["--option", "blocks_per_cycle=3"], "invalid config: blocks_per_cycle=3; allowed: a divisor of blocks_per_array=8"),
])
def test_bcq_trace_errors_are_one_line(argv, message, capsys):
    assert main(["trace", *argv]) == 2
    assert capsys.readouterr().err == f"bcq: error: {message}\n"


def test_bcq_trace_seed_out_of_range_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["trace", "--seed", "-5"])
    assert e.value.code == 2
    assert capsys.readouterr().err == ("bcq: error: bcq trace: argument --seed: -5 is out of range; "
                                       "allowed: 0..18446744073709551615 (see 'bcq trace --help')\n")


def test_trace_reports_a_difference_as_an_error(monkeypatch, capsys):
    import bcq.sim.trace as trace_module

    def broken(*args, **kwargs):
        t = golden_trace(*args, **kwargs)
        t["array_sums"][0] -= 1
        return t

    monkeypatch.setattr(trace_module, "golden_trace", broken)
    assert main(["trace", "--seed", "1"]) == 2
    captured = capsys.readouterr()
    assert "<<< first stage that differs" in captured.out
    assert captured.err == "bcq: error: the RTL differs from the golden model, first at stage array_sums (index 0)\n"


def test_trace_unit_checks_its_arguments():
    with pytest.raises(BCQError, match=exactly(
            "--config does not match the codebooks' config (LO-BCQ Lb=8 LA=64 Nc=8 INT6 entries, E4M3 array "
            "scales (ceil) + FP32 tensor scale: 4.5 bits/scalar)")):
        trace_unit(config=BCQConfig(n_codebooks=4), codebooks=random_codebooks(BCQConfig(), torch.Generator()))
    assert np.array_equal(random_pair(random_codebooks(BCQConfig(), torch.Generator()), 5)[0].indices,
                          random_pair(random_codebooks(BCQConfig(), torch.Generator()), 5)[0].indices)
