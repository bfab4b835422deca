"""The bcq command line, run as a user runs it (a subprocess), errors included."""
import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios

import pytest
import torch

from bcq.sw.formats.codebooks import default_codebooks
from bcq.sw.formats.quantizers import get_format, sqnr_db
from bcq.sw.host.image import read_image


def bcq(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "bcq.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


@pytest.fixture
def tensor_file(tmp_path):
    p = tmp_path / "w.pt"
    torch.save(torch.randn(32, 256, generator=torch.Generator().manual_seed(0)), p)
    return p


@pytest.mark.parametrize("fmt", ["lobcq", "mxfp4", "nvfp4", "int4"])
def test_quantize_json(tensor_file, tmp_path, fmt):
    out = tmp_path / f"{fmt}.pt"
    r = bcq("quantize", "--format", fmt, tensor_file, "-o", out, "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["format"] == fmt and rep["numel"] == 32 * 256
    assert 15 < rep["sqnr_db"] < 30 and 4 < rep["bits_per_scalar"] <= 4.625
    x = torch.load(tensor_file)
    assert torch.equal(torch.load(out), get_format(fmt).fake_quant(x))
    assert rep["sqnr_db"] == pytest.approx(sqnr_db(x, torch.load(out)))


def test_calibrate_then_quantize_with_codebooks(tensor_file, tmp_path):
    cbf = tmp_path / "cb.json"
    r = bcq("calibrate", tensor_file, "-o", cbf, "--config", "block_len=4,n_codebooks=4", "--iters", "3", "--quiet")
    assert r.returncode == 0, r.stderr
    obj = json.loads(cbf.read_text())
    assert obj["config"]["block_len"] == 4 and len(obj["entries"]) == 4
    r = bcq("quantize", tensor_file, "--codebooks", cbf)
    assert r.returncode == 0, r.stderr
    assert "4.625 bits/scalar" in r.stdout  # 4 + 2/4 + 8/64


def test_calibrate_shows_progress_and_mse(tmp_path):
    r = bcq("calibrate", "-o", tmp_path / "cb.json", "--iters", "2", "--max-blocks", "2048")
    assert r.returncode == 0, r.stderr
    assert "iteration 1/2: MSE" in r.stderr and "LO-BCQ calibrate" in r.stderr


@pytest.mark.parametrize("setup,args,message", [
    (None, ["quantize", "missing.pt"], "missing.pt: no such file"),
    ("garbage", ["quantize", "bad.pt"], "bad.pt: not a tensor saved with torch.save"),
    ("dict", ["quantize", "bad.pt"], "holds a dict, not a tensor"),
    ("shape", ["quantize", "bad.pt"], "multiple of 64"),
    ("nan", ["quantize", "bad.pt"], "NaN or Inf"),
    ("ok", ["quantize", "bad.pt", "--config", "block_len=3"], "block_len=3; allowed: (2, 4, 8, 16)"),
    ("ok", ["quantize", "bad.pt", "--config", "block_len=4"], "calibrate a set"),
    ("ok", ["quantize", "bad.pt", "--codebooks", "nope.json"], "nope.json: no such file"),
    ("cbjunk", ["quantize", "bad.pt", "--codebooks", "cb.json"], "cb.json: not valid JSON"),
    ("cbrange", ["quantize", "bad.pt", "--codebooks", "cb.json"], "INT6 allows [-32, 31]"),
    ("ok", ["calibrate", "bad.pt", "-o", "x.json", "--device", "cuda9"], "allowed cpu, cuda"),
])
def test_bad_input_is_one_line_and_nonzero(tmp_path, setup, args, message):
    p = tmp_path / "bad.pt"
    if setup == "garbage":
        p.write_bytes(b"\x00not a pickle")
    elif setup == "dict":
        torch.save({"w": torch.randn(64)}, p)
    elif setup == "shape":
        torch.save(torch.randn(3, 10), p)
    elif setup == "nan":
        torch.save(torch.full((64,), float("nan")), p)
    elif setup in ("ok", "cbjunk", "cbrange"):
        torch.save(torch.randn(64), p)
    if setup == "cbjunk":
        (tmp_path / "cb.json").write_text("{oops")
    if setup == "cbrange":
        obj = default_codebooks().to_json()
        obj["entries"][0][0] = -40
        (tmp_path / "cb.json").write_text(json.dumps(obj))
    r = bcq(*args, cwd=tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bcq: error:") and message in lines[0], r.stderr


# -- progress on long work, on a terminal only ---------------------------------------------------

def on_a_terminal(*args, cwd=None):
    """(exit status, what the user's terminal shows on stderr) of ``bcq ARGS`` with stderr a tty."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # a terminal has a size
    p = subprocess.Popen([sys.executable, "-m", "bcq.cli", *map(str, args)], stdout=subprocess.DEVNULL, stderr=slave,
                         cwd=cwd)
    os.close(slave)
    seen = bytearray()
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    return p.wait(timeout=300), seen.decode(errors="replace")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    d = tmp_path_factory.mktemp("model")
    la = default_codebooks().config.array_len
    torch.save({f"l{i}.weight": torch.randn(8, la, generator=torch.Generator().manual_seed(i)) for i in range(3)},
               d / "m.pt")
    return d


def test_weights_and_verify_show_progress_on_a_terminal(model):
    code, shown = on_a_terminal("weights", "m.pt", "-o", "img", cwd=model)
    assert code == 0 and "encode + write" in shown and "layer" in shown, shown
    code, shown = on_a_terminal("image", "verify", "img", cwd=model)
    assert code == 0 and "verify" in shown, shown
    code, shown = on_a_terminal("verilog", "--unit", "int-mac", "-o", "m.v", cwd=model)
    assert code == 0 and "int-mac: Verilog (Amaranth + Yosys)" in shown, shown


def test_no_progress_with_quiet_or_without_a_terminal(model):
    code, shown = on_a_terminal("weights", "m.pt", "-o", "img-q", "--quiet", cwd=model)
    assert (code, shown) == (0, "")
    r = bcq("weights", "m.pt", "-o", "img-p", cwd=model)  # stderr is a pipe
    assert (r.returncode, r.stderr) == (0, "")
    r = bcq("image", "verify", "img-p", cwd=model)
    assert (r.returncode, r.stderr) == (0, "")


# -- verilog -o -------------------------------------------------------------------------------------

def test_verilog_output_is_the_file_named_or_a_file_in_the_directory(model, tmp_path):
    r = bcq("weights", model / "m.pt", "-o", tmp_path / "img", "--layers", "l1.weight")
    assert r.returncode == 0, r.stderr
    (tmp_path / "img" / "stale.hex").write_text("0\n")  # left by someone: must not travel
    r = bcq("verilog", "--unit", "gemv", "--image", tmp_path / "img", "-o", tmp_path / "v" / "gemv.v")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"wrote {tmp_path / 'v' / 'gemv.v'}: module gemv (")
    assert sorted(os.listdir(tmp_path / "v")) == ["gemv.v"]
    # The memories hold the image's words in the Verilog itself.
    img = read_image(tmp_path / "img")
    layer = img.layers["l1.weight"]
    text = (tmp_path / "v" / "gemv.v").read_text()
    init = dict((int(a), int(v, 16)) for a, v in re.findall(r"^\s*wmem\[(\d+)\] = \d+'h([0-9a-f]+);", text, re.M))
    assert init == dict(enumerate(layer.weight_words))
    r = bcq("verilog", "--unit", "bcq-dot", "-o", tmp_path / "d")
    assert r.returncode == 0 and os.listdir(tmp_path / "d") == ["bcq_dot.v"], r.stderr
