"""Formal proofs (SymbiYosys, ``make formal``): each proof passes, and each harness catches a
deliberate error (so a PASS means something)."""

from helpers import exactly
import pytest

from bcq.hw.bcq_block import BeatProducts, CodewordDecode
from bcq.sw.formats.config import DEFAULT
from sim import formal, formal_spec

pytestmark = pytest.mark.xdist_group("formal")

PROOFS = formal._proofs()


@pytest.mark.parametrize("name", list(PROOFS))
def test_proof_passes(name, tmp_path):
    r = formal.run_proof(PROOFS[name], workroot=tmp_path)
    assert r.status == "PASS", r.line()


def _fails(proof, tmp_path):
    r = formal.run_proof(proof, workroot=tmp_path)
    assert r.status == "FAIL", r.line()
    assert r.trace is not None and r.trace.exists()


def test_decode_proof_catches_wrong_address(tmp_path, monkeypatch):
    # Spec addressing one codebook further on: the real lookup no longer matches it.
    monkeypatch.setattr(formal_spec, "spec_address",
                        lambda cfg, idx, sel: (sel + 1) % cfg.n_codebooks * cfg.n_entries + idx)
    _fails(PROOFS["decode.3"], tmp_path)


def test_products_proof_catches_missing_lane(tmp_path, monkeypatch):
    real = formal_spec.spec_sum
    monkeypatch.setattr(formal_spec, "spec_sum", lambda w, x: real(w[:-1], x[:-1]))
    _fails(PROOFS["products"], tmp_path)


def test_stream_proof_catches_miscounted_beat(tmp_path, monkeypatch):
    real = formal_spec._per_beat
    monkeypatch.setattr(formal_spec, "_per_beat", lambda *a: real(*a) + 1)
    _fails(PROOFS["stream"], tmp_path)


def test_unknown_proof_name_is_a_clear_error(capsys):
    groups = sorted({k.split(".")[0] for k in PROOFS})
    with pytest.raises(SystemExit, match=exactly(
            f"python -m bcq.sim.formal: error: unknown proof bogus; choose from {', '.join(groups)} "
            f"or one of {', '.join(PROOFS)}")):
        formal.main(["bogus"])


def test_depths_follow_the_pipeline():
    # The argued depths are computed from the units' latencies, not typed in.
    assert formal_spec.decode_depth(DEFAULT) == 2 * CodewordDecode.latency + 2
    assert formal_spec.products_depth(DEFAULT) == BeatProducts(DEFAULT, DEFAULT.block_len).latency + 2
    assert formal_spec.stream_depth(DEFAULT) == DEFAULT.blocks_per_array + formal_spec.stream_dut(DEFAULT).latency + 2
