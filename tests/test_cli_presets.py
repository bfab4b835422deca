"""``--preset`` and ``--source`` on the command line (in-process through bcq.cli.main, as the
subprocess tests in test_cli.py cover the process plumbing)."""
import json

import pytest
import torch

from bcq.cli import main
from bcq.sw.formats.codebooks import shipped_codebooks
from bcq.sw.formats.config import PRESETS
from bcq.sw.formats.lobcq import fake_quant


@pytest.fixture
def tensor_file(tmp_path):
    p = tmp_path / "w.pt"
    torch.save(torch.randn(16, 256, generator=torch.Generator().manual_seed(0)), p)
    return p


@pytest.mark.parametrize("preset", list(PRESETS))
@pytest.mark.parametrize("source", ["synthetic", "minilm"])
def test_quantize_with_a_preset_uses_its_shipped_codebooks(preset, source, tensor_file, tmp_path, capsys):
    out = tmp_path / "q.pt"
    assert main(["quantize", str(tensor_file), "--preset", preset, "--source", source, "-o", str(out), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["bits_per_scalar"] == PRESETS[preset].bits_per_scalar
    want = fake_quant(torch.load(tensor_file), shipped_codebooks(preset, source))
    assert torch.equal(torch.load(out), want)


def test_config_changes_fields_of_the_preset(tensor_file, capsys):
    # The preset with another scale rule has no shipped set: the error says so and what to do.
    assert main(["quantize", str(tensor_file), "--preset", "w4a4-4.625", "--config", "scale_rule=nearest"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bcq: error: no shipped codebooks for LO-BCQ Lb=8 LA=64 Nc=16 INT6 entries, "
                          "E4M3 array scales (nearest)")
    assert err.endswith("calibrate a set with 'bcq calibrate' and pass --codebooks")


def test_preset_applies_to_lobcq_only(tensor_file, capsys):
    assert main(["quantize", str(tensor_file), "--format", "nvfp4", "--preset", "w4a4-4.5"]) == 2
    assert capsys.readouterr().err == "bcq: error: --preset applies to --format lobcq only, not nvfp4\n"


def test_calibrate_with_a_preset_records_its_command(tensor_file, tmp_path):
    out = tmp_path / "cb.json"
    assert main(["calibrate", str(tensor_file), "--preset", "w4a4-4.375", "--iters", "2", "--quiet", "-o", str(out)]) == 0
    obj = json.loads(out.read_text())
    assert obj["config"] == PRESETS["w4a4-4.375"].to_dict()
    assert obj["calibration"]["command"] == f"bcq calibrate {tensor_file} --preset w4a4-4.375 --iters 2"


def test_unknown_preset_is_refused(capsys):
    with pytest.raises(SystemExit) as e:
        main(["quantize", "x.pt", "--preset", "w4a4-9"])
    assert e.value.code == 2
    assert "argument --preset: invalid choice: 'w4a4-9'" in capsys.readouterr().err


def test_weights_with_a_preset_writes_its_config_and_codebooks(tmp_path, capsys):
    from bcq.sw.host.image import read_image
    model = tmp_path / "m.pt"
    torch.save({"a.weight": torch.randn(4, 128, generator=torch.Generator().manual_seed(1))}, model)
    assert main(["weights", str(model), "-o", str(tmp_path / "img"), "--preset", "w4a4-4.375", "--source", "minilm",
                 "--quiet"]) == 0
    img = read_image(tmp_path / "img")
    assert img.layout.config == PRESETS["w4a4-4.375"]
    assert torch.equal(img.codebooks.entries, shipped_codebooks("w4a4-4.375", "minilm").entries)


def test_preset_against_a_codebook_file_of_another_config(tensor_file, tmp_path, capsys):
    cb_path = tmp_path / "cb.json"
    shipped_codebooks("w4a4-4.5").save(cb_path)
    assert main(["quantize", str(tensor_file), "--codebooks", str(cb_path), "--preset", "w4a4-4.375"]) == 2
    assert capsys.readouterr().err == (
        f"bcq: error: --preset ({PRESETS['w4a4-4.375'].describe()}) does not match the codebooks in {cb_path} "
        f"({PRESETS['w4a4-4.5'].describe()}); leave --preset out\n")
    # The same preset as the file's config is accepted.
    assert main(["quantize", str(tensor_file), "--codebooks", str(cb_path), "--preset", "w4a4-4.5", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["bits_per_scalar"] == 4.5


def test_verilog_takes_a_preset(tmp_path, capsys):
    out = tmp_path / "dot.v"
    assert main(["verilog", "--unit", "bcq-dot", "--preset", "w4a4-4.375", "-o", str(out), "--quiet"]) == 0
    assert "Nc=4" in capsys.readouterr().out and out.stat().st_size > 0
