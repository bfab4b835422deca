"""The bcq command line, run as a user runs it (a subprocess), errors included."""
import json
import subprocess
import sys

import pytest
import torch

from bcq.sw.formats.codebooks import default_codebooks
from bcq.sw.formats.quantizers import get_format, sqnr_db


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
