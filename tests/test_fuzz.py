"""Property-based robustness: damaged images, codebook files and manifests, link replies and
odd command lines end in the project's own named errors, never a traceback, a hang or an
accepted damaged image."""
from contextlib import contextmanager
import json
import os
import shutil
import signal

from helpers import Board, reply
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
import pytest
import torch

from bcq import cli
from bcq.cli import main
from bcq.hw.gemv import GEMV
from bcq.hw.host_link import status_payload
from bcq.sw.contract import protocol as P
from bcq.sw.contract.image_layout import EngineLayout
from bcq.sw.formats.codebooks import Codebooks, default_codebooks, load_codebooks
from bcq.sw.formats.errors import BCQError, FileFormatError
from bcq.sw.host.driver import Accelerator, LinkError
from bcq.sw.host.image import _manifest_text, manifest_digest, read_image, write_image

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


@contextmanager
def no_hang(seconds=20):
    """Fail (instead of hanging the suite) if the body blocks, e.g. on a FIFO."""
    def alarm(signum, frame):
        raise AssertionError(f"blocked for {seconds} s")
    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


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
    # Written as the writer writes it, so that only the field checks stand between the edit
    # and an accepted image.
    (path / "manifest.json").write_text(_manifest_text(m))
    try:
        read_image(path)
    except BCQError:
        pass


@FUZZ
@given(name=st.sampled_from(FILES), how=st.sampled_from(["/dev/zero", "/dev/null", "fifo", "directory", "outside",
                                                        "sparse", "self-loop"]))
def test_a_file_that_is_not_a_regular_file_inside_the_image_is_refused(pristine, tmp_path_factory, name, how):
    """Links to devices, FIFOs, directories, copies outside the image, huge sparse files: each
    refused before it is read, and nothing blocks."""
    path = fresh_copy(pristine, tmp_path_factory)
    f = path / name
    original = f.read_bytes()
    f.unlink()
    if how.startswith("/dev/"):
        f.symlink_to(how)
    elif how == "fifo":
        os.mkfifo(f)
    elif how == "directory":
        f.mkdir()
    elif how == "outside":  # the very same bytes, but outside the image directory
        copy = tmp_path_factory.mktemp("elsewhere") / name
        copy.write_bytes(original)
        f.symlink_to(copy)
    elif how == "sparse":
        with open(f, "wb") as out:
            out.truncate(1 << 34)  # 16 GiB that take no disk space; must not be read
    else:
        f.symlink_to(f)
    with no_hang(), pytest.raises(FileFormatError) as e:
        read_image(path)
    assert str(e.value).startswith(str(f)), str(e.value)


@FUZZ
@given(manifest=st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=8),
                             lambda c: st.lists(c, max_size=4) | st.dictionaries(
                                 st.sampled_from(["kind", "version", "config", "layout", "codebook", "layers",
                                                  "sha256", "name", "shape", "weights", "scales", "depth", "width",
                                                  "hex", "bin", "tensor_scale"]), c, max_size=6), max_leaves=30))
def test_any_manifest_is_refused_or_read(pristine, tmp_path_factory, manifest):
    path = fresh_copy(pristine, tmp_path_factory)
    if isinstance(manifest, dict):
        manifest.update(kind="bcq-image", version=1)
        manifest["manifest_sha256"] = manifest_digest(manifest)
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BCQError):
        read_image(path)


@FUZZ
@given(text=st.one_of(st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
                      st.integers(1, 5000).map(lambda n: "[" * n + "]" * n),
                      st.integers(1, 5000).map(lambda n: '{"a":' * n + "1" + "}" * n),
                      st.sampled_from([1, 100, 5000, 2 << 20]).map(
                          lambda n: '{"kind": "bcq-codebooks", "version": 1, "entries": [[' + "9" * n + "]]}"),
                      st.just('{"x": NaN}'), st.just('{"x": Infinity}')))
def test_codebook_file_reader_never_crashes(tmp_path_factory, text):
    p = tmp_path_factory.mktemp("cb") / "cb.json"
    p.write_text(text, encoding="latin-1")
    with pytest.raises(FileFormatError) as e:
        load_codebooks(p)
    assert str(e.value).startswith(f"{p}: "), str(e.value)


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


WORDS = ["quantize", "verilog", "weights", "image", "verify", "show", "build", "calibrate", "demo", "--format",
         "lobcq", "int4", "mxfp4", "--config", "block_len=3", "n_codebooks=4", "--unit", "bcq-dot", "gemv",
         "mxfp4-dot", "--option", "max_len=0", "max_len=-1", "lanes=x", "-o", "/proc/no-such-dir/x", "--json",
         "--codebooks", "missing.json", "--iters", "0", "--board", "nope", "--layers", "w", "--lanes", "-1",
         "--image", "--layer", "--seed", "99999999999999999999999", "--max-blocks", "--vectors", "--force",
         "--quiet", "x.pt", "/dev/zero", ""]


@pytest.fixture
def demo_calls(monkeypatch):
    """``bcq demo`` with valid arguments runs the whole flow (a minute or more, under ``out/``):
    here the command records its call instead; ``make demo`` runs it, and its Verilator stages
    run in tests/test_gemv_cocotb.py and tests/test_board_cocotb.py."""
    calls = []
    monkeypatch.setattr(cli, "run_demo", lambda output, **options: calls.append((output, options)))
    return calls


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(argv=st.lists(st.sampled_from(WORDS), min_size=1, max_size=6))
@example(argv=["demo", "--quiet"])
def test_cli_arguments_end_in_usage_or_named_errors(argv, capsys, demo_calls):
    del demo_calls[:]
    try:
        code = main(argv)
    except SystemExit as e:  # argparse: usage error, exit 2
        code = e.code
    err = capsys.readouterr().err  # read (and reset) per example
    assert code in (0, 2), (argv, code, err)
    assert "Traceback" not in err
    if demo_calls:   # only a parsed demo command gets there, with arguments in their ranges
        assert argv[0] == "demo" and code == 0, (argv, code)
        (output, options), = demo_calls
        assert options["lanes"] >= 1 and options["vectors"] >= 1 and isinstance(output, str), (argv, options)


# -- the link protocol: the decoder and the driver's reply handling -----------------------------

@FUZZ
@given(frame=st.one_of(st.binary(max_size=40),
                       st.tuples(st.integers(0, 255), st.binary(max_size=30), st.data()).map(
                           lambda t: bytearray(reply(t[1], t[0])))))
def test_parse_reply_accepts_only_whole_frames(frame):
    frame = bytes(frame)
    try:
        status, payload = P.parse_reply(frame)
    except ValueError:
        return
    assert reply(payload, status) == frame  # accepted: exactly a well-formed frame


@FUZZ
@given(payload=st.binary(min_size=0, max_size=2 * P.STATUS_BYTES))
def test_parse_status_round_trips_or_refuses(payload):
    try:
        fields = P.parse_status(payload)
    except ValueError:
        assert len(payload) != P.STATUS_BYTES
        return
    assert P.status_payload(**fields) == payload


LAYOUT = EngineLayout(default_codebooks().config, 2, 1)
GOOD_STATUS = status_payload(GEMV(LAYOUT, max_rows=8, max_cols=128), build_id=1)


def _damaged(data):
    """A reply: random bytes, or a good STATUS frame with random damage."""
    good = bytearray(reply(GOOD_STATUS))
    how = data.draw(st.sampled_from(["random", "flip", "truncate", "append", "header"]))
    if how == "random":
        return data.draw(st.binary(max_size=40))
    if how == "flip":
        i = data.draw(st.integers(0, len(good) - 1))
        good[i] ^= 1 << data.draw(st.integers(0, 7))
    elif how == "truncate":
        good = good[:data.draw(st.integers(0, len(good) - 1))]
    elif how == "append":
        good += data.draw(st.binary(min_size=1, max_size=8))
    else:
        good[2:4] = data.draw(st.integers(0, 0xFFFF)).to_bytes(2, "little")
    return bytes(good)


@settings(max_examples=100, deadline=None)
@given(data=st.data(), chunk=st.sampled_from([None, 1, 3]))
def test_driver_refuses_every_damaged_reply(data, chunk):
    frame = _damaged(data)
    acc = Accelerator(Board(frame, chunk=chunk), timeout=0.02)
    try:
        info = acc.status()
    except LinkError:
        return
    # Accepted: then it was a whole, well-formed STATUS frame of this protocol version.
    assert frame.startswith(reply(bytes(P.STATUS_BYTES))[:4]) and P.parse_reply(frame[:P.STATUS_BYTES + 6])[0] == 0
    assert P.status_payload(**vars(info)) == frame[4:4 + P.STATUS_BYTES]
