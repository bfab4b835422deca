"""Formal proofs (SymbiYosys, ``make formal``): each proof passes, and each harness catches a
deliberate error (so a PASS means something)."""

from helpers import exactly
import pytest

from dataclasses import replace

from bcq.hw.bcq_block import CodewordDecode, PlaneSum, ProductPlanes
from bcq.hw.bcq_encoder import BCQEncoder
from bcq.sw.formats.config import DEFAULT, BCQConfig
from sim import formal, formal_encoder_spec, formal_spec

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
    monkeypatch.setattr(formal_spec, "spec_word_address",
                        lambda cfg, sel, a, b: ((sel + 1) % cfg.n_codebooks * cfg.n_entries + a) * 8 + b // 2)
    _fails(PROOFS["decode.3"], tmp_path)


def test_decode_proof_catches_swapped_candidates(tmp_path, monkeypatch):
    # Spec reading the other candidate of the odd lane's pair (b's low bit ignored the wrong way).
    real = formal_spec.spec_field
    monkeypatch.setattr(formal_spec, "spec_field", lambda cfg, word, k: real(cfg, word, 3 - k if k else 0))
    _fails(PROOFS["decode.3"], tmp_path)


def test_planes_proof_catches_wrong_weight_bit(tmp_path, monkeypatch):
    real = formal_spec.spec_plane
    monkeypatch.setattr(formal_spec, "spec_plane", lambda cfg, w, x, b, i: real(cfg, w, x, (b + 1) % cfg.entry_bits, i))
    _fails(PROOFS["planes"], tmp_path)


def test_products_proof_catches_a_wrong_adder(tmp_path, monkeypatch):
    # An adder spec that adds where a sign-bit plane must be subtracted.
    real = formal_spec.spec_adder
    monkeypatch.setattr(formal_spec, "spec_adder",
                        lambda u, v, cin=None: real(replace(u, neg=False), replace(v, neg=False), cin))
    _fails(PROOFS["products"], tmp_path)


@pytest.mark.parametrize("entry_bits", [4, 5, 6, 7, 8])
@pytest.mark.parametrize("lanes", [2, 4, 8, 16, 32])
def test_tree_structure_sums_every_plane_once(lanes, entry_bits):
    cfg = BCQConfig(entry_bits=entry_bits)
    assert formal_spec.tree_structure_holds(cfg, lanes)
    assert formal_spec.plane_identity_holds(cfg)


def test_tree_structure_check_catches_a_wrong_sign_and_a_lost_plane():
    dut = PlaneSum(DEFAULT, 8, cells="model")
    dut.elaborate(None)._MustUse__silence = True
    leaves, log, total = dut._structure
    flipped = [replace(t, neg=not t.neg) if k == 3 else t for k, t in enumerate(leaves)]
    assert not formal_spec.tree_structure_holds(DEFAULT, 8, (flipped, log, total))
    # An adder that drops its second operand.
    k = next(i for i, e in enumerate(log) if e[0] == "add")
    _, out, u, v, cin = log[k]
    lost = log[:k] + [("add", out, u, replace(v, value=u.value, neg=u.neg), cin)] + log[k + 1:]
    assert not formal_spec.tree_structure_holds(DEFAULT, 8, (leaves, lost, total))


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
    assert formal_spec.planes_depth(DEFAULT) == ProductPlanes.latency + 2
    assert formal_spec.products_depth(DEFAULT) == PlaneSum(DEFAULT, DEFAULT.block_len).latency + 2
    assert formal_spec.stream_depth(DEFAULT) == DEFAULT.blocks_per_array + formal_spec.stream_dut(DEFAULT).latency + 2
    # The nearest-entry proof runs the stage as the encoder's table fill builds it.
    assert formal_encoder_spec.NEAREST_LATENCY == BCQEncoder.FILL_SEARCH_LATENCY
    assert formal_encoder_spec.NEAREST_DEPTH == BCQEncoder.FILL_SEARCH_LATENCY + 1


def test_nearest_proof_catches_wrong_tie_rule(tmp_path, monkeypatch):
    # A spec that breaks value ties towards the larger entry: the gateware's choice must fail it.
    def larger_on_tie(t, ei, i, ek, k):
        di, dk = abs(t - 2 * ei), abs(t - 2 * ek)
        return (di < dk) | ((di == dk) & (ei > ek)) | ((di == dk) & (ei == ek) & (i <= k))
    monkeypatch.setattr(formal_encoder_spec, "spec_prefers", larger_on_tie)
    _fails(PROOFS["nearest"], tmp_path)


def test_nearest_proof_catches_a_wrong_delay(tmp_path, monkeypatch):
    # The pipelined stage checked against inputs one edge too recent: the proof must fail.
    delayed = formal_encoder_spec._delayed
    monkeypatch.setattr(formal_encoder_spec, "_delayed", lambda m, en, value, stages, name: delayed(m, en, value, stages - 1, name))
    _fails(PROOFS["nearest"], tmp_path)
