"""Property-based robustness: damaged images, codebook files and manifests, and odd command
lines end in the project's own named errors, never a traceback or an accepted damaged image."""
import json
import shutil

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
import pytest
import torch

from bcq.cli import main
from bcq.sw.contract.image_layout import EngineLayout
from bcq.sw.formats.codebooks import Codebooks, default_codebooks
from bcq.sw.formats.errors import BCQError, FileFormatError
from bcq.sw.host.image import manifest_digest, read_image, write_image

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    cb = default_codebooks()
    path = tmp_path_factory.mktemp("pristine")
    write_image(path, {"fc": torch.randn(6, 128, generator=torch.Generator().manual_seed(0))}, cb,
                EngineLayout(cb.config, 4, 1))
    return path


def fresh_copy(pristine, tmp_path_factory):
    dst = tmp_path_factory.mktemp("img")
    shutil.rmtree(dst)
    shutil.copytree(pristine, dst)
    return dst


FILES = ["manifest.json", "codebook.hex", "codebook.bin", "fc.weights.hex", "fc.weights.bin",
         "fc.scales.hex", "fc.scales.bin"]


@FUZZ
@given(name=st.sampled_from(FILES), data=st.data())
def test_any_byte_damage_is_refused(pristine, tmp_path_factory, name, data):
    path = fresh_copy(pristine, tmp_path_factory)
    f = path / name
    raw = bytearray(f.read_bytes())
    how = data.draw(st.sampled_from(["flip", "truncate", "append", "empty"]))
    if how == "flip":
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] ^= 1 << data.draw(st.integers(0, 7))
    elif how == "truncate":
        raw = raw[:data.draw(st.integers(0, len(raw) - 1))]
    elif how == "append":
        raw += data.draw(st.binary(min_size=1, max_size=16))
    else:
        raw = bytearray()
    f.write_bytes(bytes(raw))
    with pytest.raises(FileFormatError):
        read_image(path)


JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=8),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
                    max_leaves=8)


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


@FUZZ
@given(data=st.data())
def test_edited_manifest_fields_get_named_errors(pristine, tmp_path_factory, data):
    """Even a re-hashed (self-consistent) manifest with a wrong-typed or huge field is refused
    with a named error, or, if the edit is legal, still reads back."""
    path = fresh_copy(pristine, tmp_path_factory)
    m = json.loads((path / "manifest.json").read_text())
    paths = [p for p in _paths(m) if p and p[0] != "manifest_sha256"]
    where = data.draw(st.sampled_from(paths))
    value = data.draw(JSON | st.sampled_from([2**40, -1, 0, [10**9, 64], "x" * 50]))
    target = m
    for key in where[:-1]:
        target = target[key]
    target[where[-1]] = value
    m["manifest_sha256"] = manifest_digest(m)
    (path / "manifest.json").write_text(json.dumps(m))
    try:
        read_image(path)
    except BCQError:
        pass


@FUZZ
@given(obj=JSON)
def test_codebook_reader_never_crashes(obj):
    try:
        cb = Codebooks.from_json(obj, source="fuzz.json")
    except BCQError:
        return
    assert isinstance(cb, Codebooks)


@FUZZ
@given(entries=st.lists(st.lists(st.integers(-100, 100), min_size=0, max_size=17), min_size=0, max_size=17))
def test_codebook_entries_are_checked(entries):
    obj = default_codebooks().to_json()
    obj["entries"] = entries
    try:
        cb = Codebooks.from_json(obj, source="fuzz.json")
    except FileFormatError as e:
        assert "fuzz.json" in str(e)
        return
    assert cb.entries.shape == (16, 16) and int(cb.entries.min()) >= -32 and int(cb.entries.max()) <= 31


WORDS = ["quantize", "verilog", "weights", "image", "verify", "show", "build", "--format", "lobcq",
         "int4", "--config", "block_len=3", "n_codebooks=4", "--unit", "bcq-dot", "gemv", "--option",
         "max_len=0", "lanes=x", "-o", "/proc/no-such-dir/x", "--json", "--codebooks", "missing.json", "--iters",
         "0", "--board", "nope", "--layers", "w", "--lanes", "-1", "x.pt", ""]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(argv=st.lists(st.sampled_from(WORDS), min_size=1, max_size=6))
def test_cli_arguments_end_in_usage_or_named_errors(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as e:  # argparse: usage error, exit 2
        code = e.code
    err = capsys.readouterr().err  # read (and reset) per example
    assert code in (0, 2), (argv, code, err)
    assert "Traceback" not in err
