"""Weight images: bit-exact round trip, and every kind of damage ends in a named error."""
import json
import os
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
from bcq.sw.host.image import MAX_MANIFEST_BYTES, _manifest_text, manifest_digest, read_image, write_image


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
    elif how == "no layers":
        m["layers"] = []
    elif how == "duplicate name":
        m["layers"][1] = json.loads(json.dumps(m["layers"][0]))
    elif how.startswith("name "):
        m["layers"][0]["name"] = how[5:]
    elif how == "extra checksum":
        m["sha256"]["notes.txt"] = m["sha256"]["codebook.hex"]
    elif how == "depth bool":
        m["layers"][1]["scales"]["depth"] = True
    if rehash:  # a consistent-looking manifest with a wrong field: the deeper checks must catch it
        m["manifest_sha256"] = manifest_digest(m)
        (path / "manifest.json").write_text(_manifest_text(m))  # as the writer writes it
        return
    (path / "manifest.json").write_text(json.dumps(m))


@pytest.mark.parametrize("how,where,message", [
    ("missing file", "a.weight.scales.bin", "missing (listed in manifest.json)"),
    ("bit flip", "a.weight.weights.bin", "SHA-256 mismatch: the file is damaged or was changed"),
    ("truncated", "codebook.hex", "374 bytes; the hex file of 128 words of 6 bits must be 384 bytes"),  # Nc=8
    ("magic", "manifest.json", "field kind must be 'bcq-image'"),
    ("version", "manifest.json", "field version 99 is not supported (this program reads version 2)"),
    ("shape", "manifest.json", "field manifest_sha256: checksum mismatch, the manifest was damaged or edited"),
    ("no manifest", "manifest.json", "missing: not an image directory (or an interrupted write)"),
    ("not json", "manifest.json", "not valid JSON (Expecting property name enclosed in double quotes: line 1 column 2 "
                                  "(char 1))"),
    ("whitespace", "manifest.json", "not the text this program writes (edited or damaged)"),
    ("shape+", "manifest.json", "field layers[0].weights.depth/width 48/204 do not match shape [13, 128] (64/204 "
                                "expected)"),
    ("config+", "manifest.json", "invalid config: block_len=3; allowed: (2, 4, 8, 16)"),
    ("layout+", "manifest.json", "field layout does not match the word layout this program writes"),
    ("path escape+", "manifest.json", "field layers[0].weights.bin: '../../etc/passwd' is not the file name "
                                      "a.weight.weights.bin the writer uses"),
    ("no layers+", "manifest.json", "field layers is empty: an image holds at least one layer"),
    ("duplicate name+", "manifest.json", "field layers[1].name: layer 'a.weight' appears twice"),
    ("name ../a.weight+", "manifest.json", "field layers[0].name: layer name '../a.weight': use letters, digits, "
                                           "'.', '_' and '-' only (not first '.'), at most 200 characters"),
    ("name .hidden+", "manifest.json", "field layers[0].name: layer name '.hidden': use letters, digits, '.', '_' "
                                       "and '-' only (not first '.'), at most 200 characters"),
    ("name +", "manifest.json", "field layers[0].name: layer name '': use letters, digits, '.', '_' and '-' only "
                                "(not first '.'), at most 200 characters"),
    ("name b.weight+", "manifest.json", "field layers[0].weights.hex: 'a.weight.weights.hex' is not the file name "
                                        "b.weight.weights.hex the writer uses"),
    ("extra checksum+", "manifest.json", "field sha256 lists 'notes.txt', which no layer uses"),
    ("depth bool+", "manifest.json", "field layers[1].scales.depth must be an integer, not True"),
])
def test_damage_is_a_named_error(image, how, where, message):
    """Byte damage, and re-hashed manifests whose fields are wrong (empty or duplicate layers,
    odd names, unused checksums): each refused, naming the file and the field."""
    path = image[0]
    damage(path, how.rstrip("+"), rehash=how.endswith("+"))
    with pytest.raises(FileFormatError, match=exactly(f"{path / where}: {message}")):
        read_image(path)


@pytest.mark.parametrize("name", ["manifest.json", "codebook.bin", "a.weight.weights.hex"])
@pytest.mark.parametrize("target", ["/dev/zero", "fifo"])
def test_verify_of_a_link_to_dev_zero_or_a_fifo_ends_at_once(image, name, target):
    """`bcq image verify` neither reads /dev/zero until memory runs out nor waits on a FIFO."""
    path = image[0]
    f = path / name
    f.unlink()
    if target == "fifo":
        os.mkfifo(f)
        problem = "is a FIFO (named pipe), not a regular file"
    else:
        f.symlink_to(target)
        problem = f"a symbolic link to /dev/zero, outside {path}; only files inside it are read"
    r = subprocess.run([sys.executable, "-m", "bcq.cli", "image", "verify", str(path)], capture_output=True, text=True,
                       timeout=120)
    assert (r.returncode, r.stderr) == (2, f"bcq: error: {f}: {problem}\n")


def test_a_huge_manifest_is_not_read(image):
    path = image[0]
    with open(path / "manifest.json", "r+b") as f:
        f.truncate(MAX_MANIFEST_BYTES + 1)  # sparse: no disk used, and never read
    with pytest.raises(FileFormatError, match=exactly(
            f"{path / 'manifest.json'}: {MAX_MANIFEST_BYTES + 1} bytes; a manifest is at most {MAX_MANIFEST_BYTES} "
            "bytes")):
        read_image(path)


def test_a_deeply_nested_manifest_is_refused(image):
    path = image[0]
    (path / "manifest.json").write_text('{"kind": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(FileFormatError, match=exactly(f"{path / 'manifest.json'}: JSON nested deeper than 8 levels")):
        read_image(path)


def test_verilog_of_an_image_without_layers_is_an_error(image):
    path = image[0]
    damage(path, "no layers", rehash=True)
    r = bcq("verilog", "--unit", "gemv", "--image", path, "-o", path.parent / "rtl")
    assert (r.returncode, r.stderr) == (2, f"bcq: error: {path / 'manifest.json'}: field layers is empty: an image "
                                           "holds at least one layer\n")


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
    la, layout = default_codebooks().config.array_len, EngineLayout(default_codebooks().config)
    assert r.stdout.splitlines()[:3] == [
        "  skipped 2 tensors that are not 2-D floating-point weights (*.weight): 0.bias 16, 2.bias 64",
        f"  skipped 1 weights whose columns are not a multiple of array_len={la}: 2.weight 64 x 16",
        f"  0.weight: 16 x 128 -> 0.weight.weights.bin ({layout.weight_depth(16, 128)} x {layout.weight_width} bits), "
        "0.weight.scales.bin"]
    r = bcq("weights", tmp_path / "m.safetensors", "-o", tmp_path / "img2", "--layers", "0.weight", "--lanes", "2")
    assert r.returncode == 0, r.stderr
    r = bcq("image", "verify", tmp_path / "img")
    assert r.returncode == 0 and "OK (1 layers" in r.stdout, r.stderr
    r = bcq("image", "show", tmp_path / "img2")
    assert r.returncode == 0 and "layer 0.weight: 16 x 128" in r.stdout and "2 lanes" in r.stdout
    r = bcq("verilog", "--unit", "gemv", "--image", tmp_path / "img", "-o", tmp_path / "rtl")
    assert r.returncode == 0, r.stderr
    # The memories' contents are in the Verilog: nothing else is copied (no stale .hex/.bin).
    assert sorted(os.listdir(tmp_path / "rtl")) == ["gemv.v"]
    ok, report = lint(tmp_path / "rtl" / "gemv.v")
    assert ok, report
    # damage -> verify fails with the reason
    damaged = tmp_path / "img" / "0.weight.scales.hex"
    text = damaged.read_text()
    damaged.write_text(("1" if text[0] != "1" else "2") + text[1:])  # same size, one digit changed
    r = bcq("image", "verify", tmp_path / "img")
    assert (r.returncode, r.stderr) == (2, f"bcq: error: {damaged}: SHA-256 mismatch: the file is damaged or was "
                                           "changed\n")


@pytest.mark.parametrize("args,message", [
    (["weights", "nope.pt", "-o", "x"], "bcq: error: nope.pt: no such file"),
    (["weights", "m.pt", "-o", "x", "--layers", "zz"], "bcq: error: no layer 'zz' in the file; 2-D tensors: w"),
    (["weights", "m.pt", "-o", "x", "--layers", "b"],
     "bcq: error: layer b: a 2-D floating-point weight is needed, got (4,) of torch.float32"),
    (["weights", "m.pt", "-o", "x", "--lanes", "0"],
     "bcq: error: bcq weights: argument --lanes: 0 is out of range; allowed: an integer >= 1 "
     "(see 'bcq weights --help')"),
    (["weights", "m.pt", "-o", "x", "--lanes", "65"], "bcq: error: invalid config: lanes=65; allowed: 1..64"),
    (["image", "verify", "nodir"], "bcq: error: nodir: no such image directory"),
    (["image", "verify", "m.pt"], "bcq: error: m.pt: not a directory")])
def test_cli_image_errors(tmp_path, args, message):
    torch.save({"w": torch.randn(4, 64), "b": torch.randn(4)}, tmp_path / "m.pt")
    r = bcq(*args, cwd=tmp_path)
    assert (r.returncode, r.stderr) == (2, message + "\n")
