"""The shipped codebook sets: one per preset and calibration source, whose codebooks the command
line recorded in each rebuilds bit for bit (the default preset's two sets are rebuilt here; the
others use the same code path with another --preset)."""

import json
import shlex

import pytest

from bcq.cli import main
from bcq.sw.formats.codebooks import (CODEBOOK_SOURCES, DEFAULT_CODEBOOKS_PATH, default_codebooks,
                                      shipped_codebooks, shipped_codebooks_path)
from bcq.sw.formats.config import DEFAULT, PRESETS


@pytest.mark.parametrize("source", CODEBOOK_SOURCES)
@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_preset_ships_both_sets(preset, source):
    cb = shipped_codebooks(preset, source)
    assert cb.config == PRESETS[preset]
    cmd = cb.provenance["command"]
    assert cmd == f"bcq calibrate --preset {preset} --{source}"
    # Codebook 0 is the busiest; entries ascend within a codebook.
    assert all(row == sorted(row) for row in cb.entries.tolist())


def test_default_codebooks_are_the_default_presets_synthetic_set():
    assert default_codebooks() == shipped_codebooks("w4a4-4.5", "synthetic")
    assert default_codebooks().config == DEFAULT
    assert shipped_codebooks_path("w4a4-4.5") == DEFAULT_CODEBOOKS_PATH


@pytest.mark.parametrize("source", CODEBOOK_SOURCES)
def test_recorded_command_rebuilds_the_default_sets_bit_for_bit(source, tmp_path):
    path = shipped_codebooks_path("w4a4-4.5", source)
    cmd = json.loads(path.read_text())["calibration"]["command"]
    out = tmp_path / "rebuilt.json"
    assert main(shlex.split(cmd)[1:] + ["-o", str(out), "--quiet"]) == 0
    rebuilt, shipped = json.loads(out.read_text()), json.loads(path.read_text())
    # The codebooks, config and provenance bit for bit. The recorded MSE is a float32 sum, whose
    # last bits depend on how torch splits and vectorizes it on the machine (threads, SIMD width:
    # 1.1e-7 apart between two of this project's machines, also with one thread): to 1e-6.
    mse_rebuilt, mse_shipped = rebuilt["calibration"].pop("mse"), shipped["calibration"].pop("mse")
    assert rebuilt == shipped
    assert mse_rebuilt == pytest.approx(mse_shipped, rel=1e-6)
