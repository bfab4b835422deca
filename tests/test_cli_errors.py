"""Every user mistake of issue 16 ends in exit status 2 and one whole, named line on stderr:
no traceback, nothing silently accepted, no option ignored. (Run in-process through
``bcq.cli.main``, the function behind the ``bcq`` script; test_cli.py runs it as a subprocess.)"""
import json
import os
from pathlib import Path

import pytest
import torch

from bcq.cli import MAX_SEED, main
from bcq.hw.board import BOARDS
from bcq.sw.formats.codebooks import MAX_FILE_BYTES, default_codebooks
from bcq.sw.formats.config import ALLOWED_N_CODEBOOKS
from bcq.sw.host import image as image_module
from bcq.sw.host.image import FLOAT_DTYPES

BOARD = next(iter(BOARDS))


def run(capsys, *args):
    """(exit status, stderr) of ``bcq ARGS``."""
    try:
        code = main([str(a) for a in args])
    except SystemExit as e:  # argparse's usage errors
        code = e.code
    return code, capsys.readouterr().err


@pytest.fixture
def files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = default_codebooks().config
    torch.save(torch.randn(4, cfg.array_len), "ok.pt")
    torch.save(torch.zeros(0, cfg.array_len), "empty.pt")
    torch.save(torch.randn(4, cfg.array_len).to(torch.float8_e4m3fn), "fp8.pt")
    torch.save(torch.zeros(8, cfg.array_len), "zeros.pt")
    torch.save(torch.full((2, 64), 3e38), "huge.pt")
    Path("adir").mkdir()
    for name, value in (("cb63.json", 2**63), ("cb1e30int.json", 10**30), ("cb1e30.json", 1e30)):
        obj = default_codebooks().to_json()
        obj["entries"][0][0] = value
        Path(name).write_text(json.dumps(obj))
    Path("deep.json").write_text("[" * 100_000 + "]" * 100_000)
    torch.save({"a.weight": torch.randn(4, cfg.array_len)}, "m.pt")
    assert main(["weights", "m.pt", "-o", "img", "--quiet"]) == 0
    return cfg


def usage(command, message):
    return f"bcq: error: bcq {command}: {message} (see 'bcq {command} --help')\n"


def test_every_listed_mistake_is_one_named_line(files, capsys, tmp_path):
    cfg = files
    ints = ", ".join(str(d) for d in FLOAT_DTYPES)
    other_nc = next(n for n in ALLOWED_N_CODEBOOKS if n != cfg.n_codebooks)
    other = cfg.__class__(**{**cfg.to_dict(), "n_codebooks": other_nc})
    rows = default_codebooks().entries.tolist()
    allowed = f"INT{cfg.entry_bits} allows [{cfg.entry_min}, {cfg.entry_max}]"
    rest_min = min(v for i, row in enumerate(rows) for j, v in enumerate(row) if (i, j) != (0, 0))
    cases = [
        # tracebacks before
        (["quantize", "ok.pt", "-o", "adir"], "bcq: error: adir: is a directory; give a file name\n"),
        (["quantize", "empty.pt"], f"bcq: error: empty.pt: holds an empty tensor of shape (0, {cfg.array_len}): "
                                   "nothing to quantize\n"),
        (["calibrate", "empty.pt", "-o", "c.json"], f"bcq: error: empty.pt: holds an empty tensor of shape "
                                                    f"(0, {cfg.array_len}): nothing to quantize\n"),
        (["quantize", "fp8.pt"], f"bcq: error: fp8.pt: holds a tensor of dtype torch.float8_e4m3fn; allowed: {ints}\n"),
        (["calibrate", "ok.pt", "-o", "c.json", "--max-blocks", "0"],
         usage("calibrate", "argument --max-blocks: 0 is out of range; allowed: an integer >= 1")),
        (["calibrate", "ok.pt", "-o", "c.json", "--seed", str(MAX_SEED + 1)],
         usage("calibrate", f"argument --seed: {MAX_SEED + 1} is out of range; allowed: 0..{MAX_SEED}")),
        (["quantize", "ok.pt", "--codebooks", "cb63.json"],
         f"bcq: error: cb63.json: field 'entries': codebook entries span [{rest_min}, 9.22e+18]; {allowed}\n"),
        (["quantize", "ok.pt", "--codebooks", "cb1e30int.json"],
         f"bcq: error: cb1e30int.json: field 'entries': codebook entries span [{rest_min}, 1e+30]; {allowed}\n"),
        (["quantize", "ok.pt", "--codebooks", "cb1e30.json"],
         "bcq: error: cb1e30.json: field 'entries' must be a list of lists of integers\n"),
        (["quantize", "ok.pt", "--codebooks", "deep.json"],
         "bcq: error: deep.json: JSON nested deeper than 32 levels\n"),
        (["demo", "--vectors", "0"], usage("demo", "argument --vectors: 0 is out of range; allowed: an integer >= 1")),
        (["demo", "--vectors", "-1"],
         usage("demo", "argument --vectors: -1 is out of range; allowed: an integer >= 1")),
        (["build", "--board", BOARD, "-o", "b", "--json", "nodir/report.json"],
         f"bcq: error: nodir/report.json: cannot write: no directory {tmp_path / 'nodir'}\n"),
        # nonsense accepted before
        (["verilog", "--unit", "mxfp4-dot", "--option", "max_len=0", "-o", "x.v"],
         "bcq: error: invalid config: --option max_len=0; allowed: a positive integer\n"),
        (["verilog", "--unit", "bcq-dot", "--option", "max_len=-1", "-o", "x.v"],
         "bcq: error: invalid config: --option max_len=-1; allowed: a positive integer\n"),
        (["verilog", "--unit", "gemv", "--image", "img", "--option", "lanes=8", "-o", "x.v"],
         "bcq: error: --option lanes=8 does not match the image img, written for lanes=4; leave it out (the image "
         "decides)\n"),
        (["verilog", "--unit", "gemv", "--image", "img", "--config", f"n_codebooks={other_nc}", "-o", "x.v"],
         f"bcq: error: --config ({other.describe()}) does not match the image img ({cfg.describe()}); leave it out "
         "(the image decides)\n"),
        (["verilog", "--unit", "gemv", "--layer", "a.weight", "-o", "x.v"],
         "bcq: error: --layer names a layer of --image; give --image too\n"),
        (["verilog", "--unit", "bcq-dot", "--image", "img", "-o", "x.v"],
         "bcq: error: --image applies to --unit gemv or bxp-engine only, not bcq-dot\n"),
        (["build", "--board", BOARD, "-o", "b", "--layer", "a.weight"],
         "bcq: error: --layer names a layer of --image; give --image too\n"),
        (["calibrate", "zeros.pt", "-o", "c.json", "--quiet"],
         "bcq: error: zeros.pt: every value is zero; codebooks calibrated on zeros are all zero (add non-zero data, "
         "--synthetic or --minilm)\n"),
        (["quantize", "--format", "int4", "huge.pt"],
         "bcq: error: int4: |x| up to 3e+38 needs a scale beyond FP16's 65504 (INT4-g64 represents |x| up to about "
         "4.59e+05)\n"),
        (["quantize", "--format", "mxfp4", "ok.pt", "--codebooks", "cb.json"],
         "bcq: error: --codebooks applies to --format lobcq only, not mxfp4\n"),
        (["quantize", "--format", "int4", "ok.pt", "--config", "block_len=4"],
         "bcq: error: --config applies to --format lobcq only, not int4\n"),
    ]
    for args, want in cases:
        assert run(capsys, *args) == (2, want), args
    assert sorted(os.listdir(tmp_path)) == sorted(["ok.pt", "empty.pt", "fp8.pt", "zeros.pt", "huge.pt", "adir",
                                                   "cb63.json", "cb1e30int.json", "cb1e30.json", "deep.json", "m.pt",
                                                   "img"])  # nothing written by a refused command


def test_an_unwritable_output_directory_is_one_line(files, capsys, monkeypatch):
    """A read-only directory (root ignores modes, so the kernel's answer is simulated)."""
    ro = Path("ro").absolute()
    ro.mkdir()
    real_mkdir, real_open = os.mkdir, os.open

    def mkdir(path, *a, **k):
        if Path(path).parent == ro:
            raise PermissionError(13, "Permission denied", str(path))
        return real_mkdir(path, *a, **k)

    def open_(path, flags, *a, **k):
        if Path(path).parent == ro and flags & os.O_CREAT:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *a, **k)
    monkeypatch.setattr(os, "mkdir", mkdir)
    monkeypatch.setattr(os, "open", open_)
    assert run(capsys, "weights", "m.pt", "-o", "ro/img", "--quiet") == (
        2, f"bcq: error: ro/img: cannot write beside it in {ro}: Permission denied\n")
    assert run(capsys, "quantize", "ok.pt", "-o", "ro/q.pt") == (
        2, "bcq: error: ro/q.pt: cannot write: Permission denied\n")
    assert run(capsys, "calibrate", "ok.pt", "-o", "ro/cb.json", "--iters", "1", "--quiet") == (
        2, "bcq: error: ro/cb.json: cannot write: Permission denied\n")
    assert run(capsys, "verilog", "--unit", "int-mac", "-o", "ro/m.v", "--quiet") == (
        2, "bcq: error: ro/m.v: cannot write: Permission denied\n")
    assert os.listdir(ro) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_a_real_read_only_directory(files, capsys):
    ro = Path("ro").absolute()
    ro.mkdir(mode=0o555)
    assert run(capsys, "weights", "m.pt", "-o", "ro/img", "--quiet") == (
        2, f"bcq: error: ro/img: cannot write beside it in {ro}: Permission denied\n")


def test_an_operating_system_error_anywhere_is_one_line(files, capsys, monkeypatch):
    def fail(*a, **k):
        raise PermissionError(13, "Permission denied", "img/manifest.json")
    monkeypatch.setattr("bcq.cli.read_image", fail)
    assert run(capsys, "image", "verify", "img") == (2, "bcq: error: img/manifest.json: Permission denied\n")


def test_a_bug_is_one_line_and_debug_shows_the_traceback(files, capsys, monkeypatch):
    def bug(*a, **k):
        raise ZeroDivisionError("float division by zero")
    monkeypatch.setattr("bcq.cli.read_image", bug)
    assert run(capsys, "image", "verify", "img") == (
        1, "bcq: internal error: ZeroDivisionError: float division by zero (a bug; 'bcq --debug ...' shows the "
           "traceback)\n")
    with pytest.raises(ZeroDivisionError):
        main(["--debug", "image", "verify", "img"])
    code, err = run(capsys, "quantize", "missing.pt", "--debug")  # after the command too
    assert code == 2 and err.startswith("Traceback (most recent call last):\n")
    assert err.endswith("bcq: error: missing.pt: no such file\n")


def test_argparse_mistakes_are_one_line(files, capsys):
    assert run(capsys, "weights", "m.pt", "-o", "x", "--lanes", "four") == (
        2, usage("weights", "argument --lanes: 'four' is not an integer"))
    code, err = run(capsys)
    assert (code, err) == (2, "bcq: error: bcq: the following arguments are required: command (see 'bcq --help')\n")


# -- weights: what it takes and what it leaves out ---------------------------------------------------

def test_weights_skips_embedding_tables_and_says_so(tmp_path, capsys):
    cfg = default_codebooks().config
    la = cfg.array_len
    g = torch.Generator().manual_seed(0)
    state = {"embeddings.word_embeddings.weight": torch.randn(300, la, generator=g),
             "embeddings.position_embeddings.weight": torch.randn(16, la, generator=g),
             "embeddings.LayerNorm.weight": torch.randn(la, generator=g),
             "encoder.layer.0.attention.self.query.weight": torch.randn(la, la, generator=g),
             "encoder.layer.0.attention.self.query.bias": torch.randn(la, generator=g),
             "encoder.layer.0.output.dense.weight": torch.randn(la, 2 * la, generator=g),
             "pooler.odd.weight": torch.randn(8, la + 1, generator=g)}
    torch.save(state, tmp_path / "m.pt")
    assert main(["weights", str(tmp_path / "m.pt"), "-o", str(tmp_path / "img"), "--quiet"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:3] == [
        f"  skipped 2 embedding tables the engine does not use (name them with --layers to include them): "
        f"embeddings.word_embeddings.weight 300 x {la}, embeddings.position_embeddings.weight 16 x {la}",
        f"  skipped 2 tensors that are not 2-D floating-point weights (*.weight): embeddings.LayerNorm.weight {la}, "
        f"encoder.layer.0.attention.self.query.bias {la}",
        f"  skipped 1 weights whose columns are not a multiple of array_len={la}: pooler.odd.weight 8 x {la + 1}"]
    assert list(image_module.read_image(tmp_path / "img").layers) == [
        "encoder.layer.0.attention.self.query.weight", "encoder.layer.0.output.dense.weight"]
    # Named, an embedding table is taken.
    assert main(["weights", str(tmp_path / "m.pt"), "-o", str(tmp_path / "emb"), "--quiet", "--layers",
                 "embeddings.position_embeddings.weight"]) == 0
    assert list(image_module.read_image(tmp_path / "emb").layers) == ["embeddings.position_embeddings.weight"]


def test_weights_refuses_a_fifo_instead_of_hanging(tmp_path, capsys):
    os.mkfifo(tmp_path / "m.pt")
    assert run(capsys, "weights", tmp_path / "m.pt", "-o", tmp_path / "img") == (
        2, f"bcq: error: {tmp_path / 'm.pt'}: is a FIFO (named pipe), not a regular file\n")


def test_device_and_fifo_inputs_are_refused_at_once(files, capsys):
    os.mkfifo("cb.fifo")
    assert run(capsys, "quantize", "ok.pt", "--codebooks", "/dev/zero") == (
        2, "bcq: error: /dev/zero: is a character device, not a regular file\n")
    assert run(capsys, "quantize", "ok.pt", "--codebooks", "cb.fifo") == (
        2, "bcq: error: cb.fifo: is a FIFO (named pipe), not a regular file\n")
    assert run(capsys, "quantize", "/dev/zero") == (2, "bcq: error: /dev/zero: is a character device, not a regular file\n")
    Path("big.json").write_bytes(b" " * (MAX_FILE_BYTES + 1))
    assert run(capsys, "quantize", "ok.pt", "--codebooks", "big.json") == (
        2, f"bcq: error: big.json: {MAX_FILE_BYTES + 1} bytes; a codebook file is at most {MAX_FILE_BYTES} bytes\n")
