"""Weight images: bit-exact round trip, and every kind of damage ends in a named error."""
import json
import subprocess
import sys

from helpers import exactly
import pytest
from safetensors.torch import save_file
import torch

from bcq.sim.runner import lint
from bcq.sim.vectors import random_codebooks
from bcq.sw.contract.image_layout import EngineLayout
from bcq.sw.formats.codebooks import default_codebooks
from bcq.sw.formats.config import BCQConfig
from bcq.sw.formats.errors import FileFormatError
from bcq.sw.formats.lobcq import encode
from bcq.sw.host.image import manifest_digest, read_image, write_image


@pytest.fixture
def image(tmp_path):
    cb = default_codebooks()
    layout = EngineLayout(cb.config, 4, 1)
    g = torch.Generator().manual_seed(0)
    layers = {"a.weight": torch.randn(10, 128, generator=g), "b.weight": torch.randn(4, 64, generator=g)}
    write_image(tmp_path / "img", layers, cb, layout)
    return tmp_path / "img", layers, cb, layout


@pytest.mark.parametrize("cfg,lanes,bpc", [(BCQConfig(), 4, 1), (BCQConfig(), 3, 2),
                                           (BCQConfig(block_len=4, n_codebooks=4), 16, 1),
                                           (BCQConfig(n_codebooks=1, scale_format="e8m0"), 2, 8)])
def test_round_trip_is_bit_exact(tmp_path, seed, cfg, lanes, bpc):
    cb = random_codebooks(cfg, torch.Generator().manual_seed(seed))
    layout = EngineLayout(cfg, lanes, bpc)
    g = torch.Generator().manual_seed(seed)
    w = {"w": torch.randn(1 + seed % 37, 2 * cfg.array_len, generator=g) * 10}
    write_image(tmp_path, w, cb, layout)
    img = read_image(tmp_path, layout)
    q, r = encode(w["w"], cb), img.layers["w"].weights
    assert torch.equal(q.indices, r.indices) and torch.equal(q.selectors, r.selectors)
    assert torch.equal(q.scales, r.scales) and q.tensor_scale == r.tensor_scale
    assert img.codebooks == cb


def test_hex_and_bin_hold_the_same_words(image):
    path, _, _, layout = image
    hexw = [int(l, 16) for l in (path / "a.weight.weights.hex").read_text().split()]
    raw = (path / "a.weight.weights.bin").read_bytes()
    n = (layout.weight_width + 7) // 8
    assert hexw == [int.from_bytes(raw[i:i + n], "little") for i in range(0, len(raw), n)]
    assert len(hexw) == layout.weight_depth(10, 128) == 3 * 16


def damage(path, how, rehash=False):
    m = json.loads((path / "manifest.json").read_text())
    if how == "missing file":
        (path / "a.weight.scales.bin").unlink()
    elif how == "bit flip":
        b = bytearray((path / "a.weight.weights.bin").read_bytes())
        b[5] ^= 0x10
        (path / "a.weight.weights.bin").write_bytes(bytes(b))
    elif how == "truncated":
        (path / "codebook.hex").write_text((path / "codebook.hex").read_text()[:-10])
    elif how == "magic":
        m["kind"] = "something-else"
    elif how == "version":
        m["version"] = 99
    elif how == "shape":
        m["layers"][0]["shape"] = [13, 128]
    elif how == "config":
        m["config"]["block_len"] = 3
    elif how == "layout":
        m["layout"]["lanes"] = 8
    elif how == "no manifest":
        (path / "manifest.json").unlink()
        return
    elif how == "whitespace":
        (path / "manifest.json").write_text((path / "manifest.json").read_text().rstrip("\n"))
        return
    elif how == "not json":
        (path / "manifest.json").write_text("{")
        return
    elif how == "path escape":
        m["layers"][0]["weights"]["bin"] = "../../etc/passwd"
    if rehash:  # a consistent-looking manifest with a wrong field: the deeper checks must catch it
        m["manifest_sha256"] = manifest_digest(m)
    (path / "manifest.json").write_text(json.dumps(m))


@pytest.mark.parametrize("how,where,words", [
    ("missing file", "a.weight.scales.bin", "missing"), ("bit flip", "a.weight.weights.bin", "SHA-256 mismatch"),
    ("truncated", "codebook.hex", "SHA-256 mismatch"), ("magic", "manifest.json", "field kind"),
    ("version", "manifest.json", "version 99"), ("shape", "manifest.json", "manifest_sha256: checksum mismatch"),
    ("no manifest", "manifest.json", "missing"), ("not json", "manifest.json", "not valid JSON"),
    ("whitespace", "manifest.json", "not the text this program writes"),
    ("shape+", "manifest.json", "do not match shape"), ("config+", "manifest.json", "block_len=3"),
    ("layout+", "manifest.json", "layout does not match"), ("path escape+", "manifest.json", "is not the file name a.weight.weights.bin the writer uses")])
def test_damage_is_a_named_error(image, how, where, words):
    path = image[0]
    damage(path, how.rstrip("+"), rehash=how.endswith("+"))
    with pytest.raises(FileFormatError) as e:
        read_image(path)
    assert where in str(e.value) and words in str(e.value), str(e.value)


def test_image_for_other_hardware_is_refused(image):
    path, _, cb, _ = image
    d = cb.config.describe()
    with pytest.raises(FileFormatError, match=exactly(
            f"{path / 'manifest.json'}: image is for lanes=4, blocks_per_cycle=1, {d}; "
            f"the hardware was built for lanes=16, blocks_per_cycle=1, {d}")):
        read_image(path, EngineLayout(cb.config, 16, 1))


def bcq(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "bcq.cli", *map(str, args)], capture_output=True, text=True, cwd=cwd)


def test_cli_weights_verify_show_and_verilog(tmp_path):
    torch.manual_seed(0)
    sd = torch.nn.Sequential(torch.nn.Linear(128, 16), torch.nn.ReLU(), torch.nn.Linear(16, 64)).state_dict()
    torch.save(sd, tmp_path / "m.pt")
    save_file(sd, str(tmp_path / "m.safetensors"))
    r = bcq("weights", tmp_path / "m.pt", "-o", tmp_path / "img")
    assert r.returncode == 0, r.stderr
    assert "0.weight: 16 x 128" in r.stdout and "2.weight" not in r.stdout  # 16 columns: not a multiple of 64
    r = bcq("weights", tmp_path / "m.safetensors", "-o", tmp_path / "img2", "--layers", "0.weight", "--lanes", "2")
    assert r.returncode == 0, r.stderr
    r = bcq("image", "verify", tmp_path / "img")
    assert r.returncode == 0 and "OK (1 layers" in r.stdout, r.stderr
    r = bcq("image", "show", tmp_path / "img2")
    assert r.returncode == 0 and "layer 0.weight: 16 x 128" in r.stdout and "2 lanes" in r.stdout
    r = bcq("verilog", "--unit", "gemv", "--image", tmp_path / "img", "-o", tmp_path / "rtl")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "rtl" / "gemv.v").exists() and (tmp_path / "rtl" / "0.weight.weights.hex").exists()
    ok, report = lint(tmp_path / "rtl" / "gemv.v")
    assert ok, report
    # damage -> verify fails with the reason
    (tmp_path / "img" / "0.weight.scales.hex").write_text("00\n")
    r = bcq("image", "verify", tmp_path / "img")
    assert r.returncode == 2 and "0.weight.scales.hex: SHA-256 mismatch" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("args,message", [
    (["weights", "nope.pt", "-o", "x"], "nope.pt: no such file"),
    (["weights", "m.pt", "-o", "x", "--layers", "zz"], "no layer 'zz'"),
    (["weights", "m.pt", "-o", "x", "--layers", "b"], "layer b: a 2-D floating-point weight"),
    (["weights", "m.pt", "-o", "x", "--lanes", "0"], "lanes=0"),
    (["image", "verify", "nodir"], "no such image directory")])
def test_cli_image_errors(tmp_path, args, message):
    torch.save({"w": torch.randn(4, 64), "b": torch.randn(4)}, tmp_path / "m.pt")
    r = bcq(*args, cwd=tmp_path)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr
