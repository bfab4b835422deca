"""The MiniLM W4A4 evaluation plumbing (bench/minilm.py) on a few sentences: quantizing with
the identity changes nothing; a real 4-bit format lowers cosine and gives finite SQNRs."""

import math

from bcq.sw.formats.quantizers import get_format
from bench.minilm import evaluate, load_sentences


def test_shipped_sentences_are_enough():
    s = load_sentences()
    assert len(s) >= 200 and len(set(s)) == len(s)

def test_identity_quantizer_is_exact_and_int4_is_not():
    sentences = load_sentences()[:6]
    int4 = get_format("int4")
    r = evaluate({"identity": (32, lambda x: x.clone()), "int4": (int4.bits_per_scalar, int4.fake_quant)}, sentences)
    ident, q = r["identity"], r["int4"]
    assert ident["cosine_min"] > 0.99999
    assert all(math.isinf(l["weight_sqnr_db"]) or l["weight_sqnr_db"] > 100 for l in ident["layers"].values())
    assert len(q["layers"]) >= 36          # 6 encoder layers x 6 linears (+ pooler)
    assert 0.5 < q["cosine_mean"] < 0.9999
    assert all(5 < l["weight_sqnr_db"] < 40 and 0 < l["act_sqnr_db"] < 40 for l in q["layers"].values())
