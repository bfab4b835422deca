"""Int8 weight images for the Ax-BxP engine: round trip, damage refused with the file and field
named, format confusion refused, and the CLI path (bcq weights --format int8, bcq image,
bcq verilog --unit bxp-engine --image)."""
import hashlib
import json

from helpers import exactly
import pytest
import torch

from bcq.cli import main
from bcq.sw.contract.image_layout import BxPLayout, bxp_words_to_tensor
from bcq.sw.formats.axbxp import DEFAULT_BXP, BxPConfig, Mode, quantize_symmetric
from bcq.sw.formats.codebooks import default_codebooks
from bcq.sw.formats.errors import BCQError, FileFormatError
from bcq.sw.host.image import (_manifest_text, image_format, manifest_digest, read_image, read_int8_image,
                               write_image, write_int8_image)


@pytest.mark.parametrize("cfg", [DEFAULT_BXP, BxPConfig(n_bits=6, block_bits=2, modes=(Mode("e6", "exact", 6),
                                                                                      Mode("s2", "static", 6, 2)))],
                         ids=["N8k2", "N6k2"])
def test_round_trip_every_mode(tmp_path, seed, cfg):
    g = torch.Generator().manual_seed(seed)
    R = int(torch.randint(1, 6, (1,), generator=g))
    layout = BxPLayout(cfg, R)
    w = {"a.weight": torch.randn(7, 19, generator=g), "b": torch.randn(1, 3, generator=g).double()}
    w["a.weight"][2] = 0                                             # an all-zero channel
    for mode in cfg.modes:
        write_int8_image(tmp_path / mode.name, w, layout, mode.name)
        img = read_int8_image(tmp_path / mode.name, layout)
        assert image_format(tmp_path / mode.name) == "int8"
        for name, t in w.items():
            q, s = quantize_symmetric(t, mode.precision)
            layer = img.layer(name)
            assert layer.mode == mode and layer.shape == tuple(t.shape)
            assert torch.equal(layer.q, q) and torch.equal(layer.scales, s)
            assert len(layer.weight_words) == layout.weight_depth(*t.shape, mode)
            # every field of every word independently: row r lane l at (r * max_lanes + l) * N
            n, L, P = cfg.n_bits, cfg.max_lanes, layout.lanes(mode)
            for a, word in enumerate(layer.weight_words):
                grp, beat = divmod(a, layout.beats_per_row(t.shape[1], mode))
                for r in range(R):
                    for lane in range(L):
                        v = (word >> ((r * L + lane) * n)) & ((1 << n) - 1)
                        v -= (1 << n) if v >> (n - 1) else 0
                        row, col = grp * R + r, beat * P + lane
                        inside = lane < P and row < t.shape[0] and col < t.shape[1]
                        assert v == (int(q[row, col]) if inside else 0), (mode.name, a, r, lane)


@pytest.fixture
def img(tmp_path):
    write_int8_image(tmp_path / "img", {"fc": torch.randn(6, 10, generator=torch.Generator().manual_seed(1))},
                     BxPLayout(DEFAULT_BXP, 4), "dynamic2")
    return tmp_path / "img"


def rewrite(path, m):
    m["manifest_sha256"] = manifest_digest(m)
    (path / "manifest.json").write_text(_manifest_text(m))


def rehash(path, name):
    m = json.loads((path / "manifest.json").read_text())
    m["sha256"][name] = hashlib.sha256((path / name).read_bytes()).hexdigest()
    rewrite(path, m)


def test_damage_is_a_named_error(img):
    b = bytearray((img / "fc.weights.bin").read_bytes())
    b[3] ^= 1
    (img / "fc.weights.bin").write_bytes(bytes(b))
    with pytest.raises(FileFormatError, match=exactly(f"{img / 'fc.weights.bin'}: SHA-256 mismatch: the file is "
                                                      "damaged or was changed")):
        read_int8_image(img)


def test_values_past_the_symmetric_range_are_refused(img):
    """-128 fits the field but not the symmetric INT8 range the writer uses (and an engine fed
    by another tool must not get it silently)."""
    words = (img / "fc.weights.bin").read_bytes()
    (img / "fc.weights.bin").write_bytes(b"\x80" + words[1:])
    (img / "fc.weights.hex").write_text("".join(f"{int.from_bytes((img / 'fc.weights.bin').read_bytes()[i:i + 64], 'little'):0128x}\n"
                                                for i in range(0, len(words), 64)))
    rehash(img, "fc.weights.bin")
    rehash(img, "fc.weights.hex")
    with pytest.raises(FileFormatError, match=exactly(f"{img / 'fc.weights.bin'}: holds values outside the "
                                                      "symmetric 8-bit range of mode dynamic2 or set padding bits")):
        read_int8_image(img)


def test_bad_scale_and_mode_are_refused(img):
    m = json.loads((img / "manifest.json").read_text())
    m["layers"][0]["mode"] = "exact9"
    rewrite(img, m)
    with pytest.raises(FileFormatError, match=exactly(
            f"{img / 'manifest.json'}: field layers[0].: unknown mode 'exact9'; allowed: exact8, exact4, exact2, "
            "static6, static3, static1, dynamic3, dynamic2, dynamic1")):
        read_int8_image(img)


def test_formats_are_not_confused(tmp_path, img):
    with pytest.raises(FileFormatError, match=exactly(
            f"{img / 'manifest.json'}: field format is 'int8': this image is for the Ax-BxP engine (bcq verilog "
            "--unit bxp-engine); the BCQ engine reads format lobcq")):
        read_image(img)
    from bcq.sw.contract.image_layout import EngineLayout
    cb = default_codebooks()
    write_image(tmp_path / "bcq", {"fc": torch.randn(4, cb.config.array_len)}, cb, EngineLayout(cb.config, 4))
    with pytest.raises(FileFormatError, match=exactly(
            f"{tmp_path / 'bcq' / 'manifest.json'}: field format is 'lobcq': the Ax-BxP engine reads format int8 "
            "(bcq weights --format int8)")):
        read_int8_image(tmp_path / "bcq")
    with pytest.raises(FileFormatError, match=exactly(
            f"{img / 'manifest.json'}: image is for rows=4 and its own MAC config; the hardware was built for "
            "rows=2, N=8, k=2, modes exact8, exact4, exact2, static6, static3, static1, dynamic3, dynamic2, dynamic1")):
        read_int8_image(img, BxPLayout(DEFAULT_BXP, 2))


def test_writer_errors(tmp_path):
    layout = BxPLayout(DEFAULT_BXP, 4)
    with pytest.raises(BCQError, match=exactly("layer fc contains NaN or Inf: quantize finite values only")):
        write_int8_image(tmp_path / "x", {"fc": torch.tensor([[1.0, float("inf")]])}, layout)
    with pytest.raises(BCQError, match=exactly("layer fc: a 2-D floating-point weight is needed, got (3,) of "
                                               "torch.float32")):
        write_int8_image(tmp_path / "x", {"fc": torch.ones(3)}, layout)
    assert not (tmp_path / "x").exists()


def test_words_decode_sign_extends():
    layout = BxPLayout(DEFAULT_BXP, 1)
    word = 0x81 | (0x7F << 8)       # lanes 0, 1 of row 0 in a 16-lanes-per-beat mode
    assert bxp_words_to_tensor([word], (1, 2), layout, "exact2").tolist() == [[-127, 127]]


def run(capsys, *args):
    try:
        code = main([str(a) for a in args])
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_int8_weights_show_verify_verilog(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"fc.weight": torch.randn(5, 24), "emb.word_embeddings.weight": torch.randn(9, 24)}, "m.pt")
    code, out, err = run(capsys, "weights", "m.pt", "-o", "img", "--format", "int8", "--mode", "static3", "--lanes",
                         2, "--quiet")
    assert (code, err) == (0, "")
    assert "wrote image img/ (1 layers, INT8 per channel for mode static3, 5 columns/beat, rows=2)" in out
    layer = read_int8_image("img").layer("fc.weight")
    assert layer.mode.name == "static3" and torch.equal(layer.q, quantize_symmetric(torch.load("m.pt")["fc.weight"])[0])
    code, out, err = run(capsys, "image", "show", "img")
    assert code == 0 and "layer fc.weight: 5 x 24, mode static3 (INT8, 5 columns/beat), weights 15 words" in out
    code, out, err = run(capsys, "image", "verify", "img")
    assert (code, out) == (0, "img: OK (1 layers, 20 words, every SHA-256 and shape checked)\n")
    code, out, err = run(capsys, "verilog", "--unit", "bxp-engine", "--image", "img", "-o", "rtl", "--quiet")
    assert code == 0 and "module bxp_engine (N=8 k=2; 2 rows of the Ax-BxP MAC, up to 5 x 24" in out
    assert "memory from the image (layer mode static3)" in out and (tmp_path / "rtl" / "bxp_engine.v").exists()


@pytest.mark.parametrize("args,message", [
    (["weights", "m.pt", "-o", "x", "--format", "int8", "--codebooks", "c.json"],
     "--codebooks applies to --format lobcq only, not int8"),
    (["weights", "m.pt", "-o", "x", "--format", "int8", "--blocks-per-cycle", "2"],
     "--blocks-per-cycle applies to --format lobcq only, not int8"),
    (["weights", "m.pt", "-o", "x", "--mode", "exact4"],
     "--mode applies to --format int8 only (the Ax-BxP engine's MAC mode)"),
    (["weights", "m.pt", "-o", "x", "--format", "int8", "--mode", "fast"],
     "unknown mode 'fast'; allowed: exact8, exact4, exact2, static6, static3, static1, dynamic3, dynamic2, dynamic1"),
    (["verilog", "--unit", "bxp-engine", "--option", "rom=true", "-o", "x.v"],
     "--option rom=true needs --image (the memory contents to bake in)"),
])
def test_cli_int8_errors(tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    torch.save({"fc.weight": torch.randn(5, 24)}, "m.pt")
    assert run(capsys, *args)[::2] == (2, f"bcq: error: {message}\n")
