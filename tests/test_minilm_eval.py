"""The MiniLM W4A4 evaluation plumbing (bench/minilm.py) on a few sentences: quantizing with
the identity changes nothing; a real 4-bit format lowers cosine and gives finite SQNRs. The
real-data calibration never sees an evaluation sentence."""

import json
import math

import pytest
import torch

from bcq.sw.formats.calibdata import model_calibration_data, record_linear_inputs
from bcq.sw.formats.quantizers import get_format
from bcq.sw.host.minilm import encode_sentences, load_minilm, minilm_channel_energy
from bcq.sw.host.minilm import load_sentences as calibration_sentences
from bench.minilm import evaluate, load_sentences, spearman


def test_shipped_sentences_are_enough_and_calibration_is_held_out():
    s, c = load_sentences(), calibration_sentences()
    assert len(s) >= 200 and len(set(s)) == len(s)
    assert len(c) >= 100 and len(set(c)) == len(c)
    assert not set(s) & set(c)


def test_identity_quantizer_is_exact_and_int4_is_not():
    sentences = load_sentences()[:6]
    int4 = get_format("int4")
    r = evaluate({"identity": (32, lambda x: x.clone()), "int4": (int4.bits_per_scalar, int4.fake_quant)}, sentences)
    ident, q = r["identity"], r["int4"]
    assert ident["cosine_min"] > 0.99999 and ident["spearman"] == pytest.approx(1.0)
    assert all(math.isinf(l["weight_sqnr_db"]) or l["weight_sqnr_db"] > 100 for l in ident["layers"].values())
    assert len(q["layers"]) >= 36          # 6 encoder layers x 6 linears (+ pooler)
    assert 0.5 < q["cosine_mean"] < 0.9999 and q["spearman"] < 1
    assert all(5 < l["weight_sqnr_db"] < 40 and 0 < l["act_sqnr_db"] < 40 for l in q["layers"].values())


def test_spearman_against_hand_examples():
    a = torch.tensor([0.1, 0.5, 0.3, 0.9])
    assert spearman(a, a * 2 + 1) == pytest.approx(1.0)
    assert spearman(a, -a) == pytest.approx(-1.0)
    # ranks 0 2 1 3 vs 0 1 2 3: 1 - 6 * 2 / (4 * 15) = 0.8
    assert spearman(a, torch.tensor([1.0, 2.0, 3.0, 4.0])) == pytest.approx(0.8)


def test_recording_hooks_see_every_linear_input_and_are_removed():
    g = torch.Generator().manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 64),
                                torch.nn.Linear(64, 3))
    xs = [torch.randn(5, 64, generator=g), torch.randn(2, 7, 64, generator=g)]
    acts = record_linear_inputs(model, lambda: [model(x) for x in xs])
    assert torch.equal(acts["0"], torch.cat([xs[0], xs[1].reshape(-1, 64)]))
    assert torch.equal(acts["2"], torch.cat([torch.relu(model[0](x)).reshape(-1, 128) for x in xs]))
    assert all(not m._forward_pre_hooks for m in model)
    tensors, names = model_calibration_data(model, lambda: model(xs[0]), 64)
    # Layer 3 (64 -> 3) takes 64 inputs: its weight is 3 x 64, a multiple of 64.
    assert names == ["0.weight", "0:input", "2.weight", "2:input", "3.weight", "3:input"]
    assert [tuple(t.shape) for t in tensors] == [(128, 64), (5, 64), (64, 128), (5, 128), (3, 64), (5, 64)]


def test_gpu_benchmark_runs_on_the_cpu(tmp_path, capsys):
    """bench/gpu_calibration.py is run by hand on a GPU; its CPU path must work everywhere."""
    from bench.gpu_calibration import main
    out = tmp_path / "gpu.json"
    main(["--device", "cpu", "--scalars", str(1 << 14), "--calib-size", "64", "-o", str(out)])
    fig = json.loads(out.read_text())
    assert fig["device"] == "cpu" and fig["calibration_tensor"] == [64, 64]
    assert fig["encode_scalars_per_s"] > 0 and fig["calibration_s"] > 0 and fig["calibration_s_all_blocks"] > 0
    assert "G scalars/s" in capsys.readouterr().out


def test_a_weight_quantizer_replaces_fake_quant_for_the_weights_only():
    """(bits, fq, wq): every layer's weight goes through wq(layer name, weight); activations through fq."""
    sentences = load_sentences()[:4]
    int4 = get_format("int4")
    seen = []

    def wq(name, w):
        seen.append(name)
        return int4.fake_quant(w)
    r = evaluate({"w-int4": (4.5, lambda x: x.clone(), wq)}, sentences)["w-int4"]
    assert len(seen) == len(set(seen)) >= 36 and all(n in seen for n in r["layers"])
    assert all(math.isinf(l["act_sqnr_db"]) for l in r["layers"].values())
    assert all(5 < l["weight_sqnr_db"] < 40 for l in r["layers"].values())
    assert 0.5 < r["cosine_mean"] < 0.9999


def test_channel_energy_is_the_mean_square_of_each_layers_input():
    sentences = calibration_sentences()[:3]
    e = minilm_channel_energy(sentences)
    model = load_minilm()
    acts = record_linear_inputs(model, lambda: encode_sentences(model, sentences))
    assert set(e) == set(acts)
    for n, x in acts.items():
        assert torch.equal(e[n], x.double().pow(2).mean(0))
