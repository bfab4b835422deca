"""`bcq weights --search / --channel-energy / --pow2-tensor-scale`: the image holds the weight search's encoding
(bcq.sw.formats.lobcq.encode_weights, itself checked against a slow reference in
tests/test_weight_search.py), layer by layer, and bad energy files get named errors."""

import math

import pytest
import torch

from bcq.cli import main
from bcq.sw.contract.image_layout import EngineLayout, weight_words
from bcq.sw.formats.codebooks import shipped_codebooks
from bcq.sw.formats.lobcq import encode, encode_weights
from bcq.sw.host.image import read_image


@pytest.fixture
def model(tmp_path):
    cb = shipped_codebooks("w4a4-4.5")
    la = cb.config.array_len
    g = torch.Generator().manual_seed(7)
    state = {"l1.weight": torch.randn(12, 2 * la, generator=g), "l2.weight": torch.randn(5, la, generator=g) * 3}
    # Energies from a forward hook are named by module ("l1"); by weight name works too ("l2.weight").
    energy = {"l1": torch.rand(2 * la, generator=g, dtype=torch.float64) * 4,
              "l2.weight": torch.rand(la, generator=g, dtype=torch.float64)}
    torch.save(state, tmp_path / "m.pt")
    torch.save(energy, tmp_path / "e.pt")
    return tmp_path, cb, state, energy


def _words(img, name):
    return img.layers[name].weight_words


def test_channel_energy_image_is_the_weight_search(model):
    tmp, cb, state, energy = model
    layout = EngineLayout(cb.config, 4, 1)
    assert main(["weights", str(tmp / "m.pt"), "-o", str(tmp / "img"), "--channel-energy", str(tmp / "e.pt"),
                 "--quiet"]) == 0
    img = read_image(tmp / "img")
    for name, h in (("l1.weight", energy["l1"]), ("l2.weight", energy["l2.weight"])):
        want = weight_words(encode_weights(state[name], cb, channel_energy=h), layout)
        assert _words(img, name) == want, name
    # The energies matter: the plain encoding and the unweighted search differ from it somewhere.
    plain = weight_words(encode(state["l1.weight"], cb), layout)
    assert _words(img, "l1.weight") != plain


def test_search_without_energies_and_default_encoding(model):
    tmp, cb, state, _ = model
    layout = EngineLayout(cb.config, 4, 1)
    assert main(["weights", str(tmp / "m.pt"), "-o", str(tmp / "s"), "--search", "--quiet"]) == 0
    assert main(["weights", str(tmp / "m.pt"), "-o", str(tmp / "p"), "--quiet"]) == 0
    s, p = read_image(tmp / "s"), read_image(tmp / "p")
    for name, w in state.items():
        assert _words(s, name) == weight_words(encode_weights(w, cb), layout)
        assert _words(p, name) == weight_words(encode(w, cb), layout)


def test_energy_file_errors(model, capsys):
    tmp, cb, state, energy = model
    torch.save({"l1": energy["l1"]}, tmp / "short.pt")
    assert main(["weights", str(tmp / "m.pt"), "-o", str(tmp / "x"), "--channel-energy", str(tmp / "short.pt"),
                 "--quiet"]) == 2
    assert capsys.readouterr().err == (
        f"bcq: error: {tmp / 'short.pt'}: no channel energies for layer 'l2.weight' (keys are layer names, with or "
        "without .weight; the file has 1: l1)\n")
    torch.save({"l1": energy["l1"][:-1], "l2": energy["l2.weight"]}, tmp / "bad.pt")
    assert main(["weights", str(tmp / "m.pt"), "-o", str(tmp / "x"), "--channel-energy", str(tmp / "bad.pt"),
                 "--quiet"]) == 2
    n = state["l1.weight"].shape[1]
    assert capsys.readouterr().err == (
        f"bcq: error: layer l1.weight: channel_energy must be a float tensor of shape ({n},) (one value per input "
        f"channel of the weight), not torch.float64 ({n - 1},)\n")
    assert not (tmp / "x").exists()
    assert main(["weights", str(tmp / "m.pt"), "-o", str(tmp / "x"), "--format", "int8", "--search", "--quiet"]) == 2
    assert capsys.readouterr().err == "bcq: error: --search applies to --format lobcq only, not int8\n"


def test_pow2_tensor_scale(model, capsys):
    """`--pow2-tensor-scale`: each layer's tensor scale is the power of two at or above the FP32 one
    (what the board's BF16 output needs), with the plain encoding and with the search."""
    tmp, cb, state, _ = model
    layout = EngineLayout(cb.config, 4, 1)
    assert main(["weights", str(tmp / "m.pt"), "-o", str(tmp / "p2"), "--pow2-tensor-scale", "--quiet"]) == 0
    assert main(["weights", str(tmp / "m.pt"), "-o", str(tmp / "s2"), "--pow2-tensor-scale", "--search",
                 "--quiet"]) == 0
    p, s = read_image(tmp / "p2"), read_image(tmp / "s2")
    for name, w in state.items():
        mant, exp = math.frexp(encode(w, cb).tensor_scale)
        pow2 = 2.0 ** (exp - 1 if mant == 0.5 else exp)          # the power of two at or above it
        for img, want in ((p, encode(w, cb, pow2_tensor_scale=True)),
                          (s, encode_weights(w, cb, pow2_tensor_scale=True))):
            ts = img.layers[name].weights.tensor_scale
            assert ts == want.tensor_scale == pow2
            assert _words(img, name) == weight_words(want, layout)
    assert main(["weights", str(tmp / "m.pt"), "-o", str(tmp / "x"), "--format", "int8", "--pow2-tensor-scale",
                 "--quiet"]) == 2
    assert capsys.readouterr().err == "bcq: error: --pow2-tensor-scale applies to --format lobcq only, not int8\n"
