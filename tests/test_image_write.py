"""Writing images over existing directories: nothing lost, nothing overwritten that the writer did
not create, permissions from the umask. (Crashes at every step and SIGKILL: test_image_kill.py.)"""
import errno
import hashlib
import os
from pathlib import Path
import stat
import subprocess
import sys

from helpers import exactly
import pytest
import torch

from bcq.cli import main
from bcq.sw.contract.image_layout import EngineLayout
from bcq.sw.formats.codebooks import default_codebooks
from bcq.sw.formats.errors import FileFormatError
from bcq.sw.host import atomic_dir
from bcq.sw.host import image as image_module
from bcq.sw.host.image import read_image, write_image


def snapshot(directory):
    """{name: (SHA-256, mode, inode)} of every entry of a directory."""
    out = {}
    for p in sorted(Path(directory).iterdir()):
        st = os.lstat(p)
        out[p.name] = (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None,
                       stat.S_IMODE(st.st_mode), st.st_ino)
    return out


def siblings(directory):
    """What lies beside ``directory`` (leftovers of the writer would show here)."""
    return sorted(p.name for p in Path(directory).parent.iterdir())


def layers(seed, names=("a.weight", "b.weight")):
    g = torch.Generator().manual_seed(seed)
    return {n: torch.randn(4 + 4 * i, 64 * (i + 1), generator=g) for i, n in enumerate(names)}


@pytest.fixture
def old(tmp_path):
    """An existing image (and a user's file beside its files), as ``bcq weights`` left it."""
    cb = default_codebooks()
    img = tmp_path / "out" / "img"
    write_image(img, layers(1), cb, EngineLayout(cb.config, 4, 1))
    return img


def dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def model_file(tmp_path, tensors, name="m.pt"):
    torch.save(tensors, tmp_path / name)
    return tmp_path / name


# -- a failed write keeps the old image -------------------------------------------------------

def test_nan_in_a_later_tensor_keeps_the_old_image(tmp_path, old, capsys):
    before = snapshot(old)
    bad = {"a.weight": torch.randn(8, 64), "b.weight": torch.randn(8, 64)}
    bad["b.weight"][3, 5] = float("nan")
    assert main(["weights", str(model_file(tmp_path, bad)), "-o", str(old)]) == 2
    assert capsys.readouterr().err == "bcq: error: layer b.weight contains NaN or Inf: quantize finite values only\n"
    assert snapshot(old) == before and siblings(old) == ["img"]
    read_image(old)


def test_ctrl_c_during_the_write_keeps_the_old_image(tmp_path, old, capsys, monkeypatch):
    before = snapshot(old)
    real, calls = image_module.encode, []

    def encode_then_interrupt(w, cb, **options):
        calls.append(w)
        if len(calls) == 2:  # Ctrl-C while the second layer is encoded (the first is on disk)
            raise KeyboardInterrupt
        return real(w, cb, **options)
    monkeypatch.setattr(image_module, "encode", encode_then_interrupt)
    assert main(["weights", str(model_file(tmp_path, layers(2))), "-o", str(old)]) == 130
    assert capsys.readouterr().err == "bcq: interrupted\n"
    assert len(calls) == 2
    assert snapshot(old) == before and siblings(old) == ["img"]


def count_writes(tmp_path, monkeypatch):
    """How many files a write of layers(2) creates (the disk-full test fails each in turn)."""
    n = {"files": 0}
    real = atomic_dir.write_new

    def counting(path, payload):
        n["files"] += 1
        return real(path, payload)
    monkeypatch.setattr(atomic_dir, "write_new", counting)
    cb = default_codebooks()
    write_image(tmp_path / "count", layers(2), cb, EngineLayout(cb.config, 4, 1))
    monkeypatch.setattr(atomic_dir, "write_new", real)
    return n["files"]


def test_disk_full_at_any_file_keeps_the_old_image(tmp_path, old, capsys, monkeypatch):
    before = snapshot(old)
    model = model_file(tmp_path, layers(2))
    total = count_writes(tmp_path, monkeypatch)
    names = ["codebook.hex", "codebook.bin"] + [f"{layer}.{part}.{ext}" for layer in ("a.weight", "b.weight")
                                                for part in ("weights", "scales") for ext in ("hex", "bin")]
    names.append("manifest.json")
    assert total == 1 + len(names)  # the marker first
    real = atomic_dir.write_new
    for k in range(1, total + 1):
        seen = {"n": 0}

        def full(path, payload, k=k):
            seen["n"] += 1
            if seen["n"] == k:
                with open(path, "wb") as f:  # a partial file, as a full disk leaves one
                    f.write(payload[: len(payload) // 2])
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
            return real(path, payload)
        monkeypatch.setattr(atomic_dir, "write_new", full)
        assert main(["weights", str(model), "-o", str(old), "--quiet"]) == 2
        problem = (f"{old}: cannot write beside it in {old.parent}" if k == 1  # the marker
                   else f"{old}/{names[k - 2]}: cannot write")
        assert capsys.readouterr().err == f"bcq: error: {problem}: No space left on device\n"
        assert snapshot(old) == before, f"file {k}: the old image changed"
        assert siblings(old) == ["img"], f"file {k}: left {siblings(old)}"


def test_a_failed_swap_keeps_the_old_image(tmp_path, old, monkeypatch):
    before = snapshot(old)

    def refuse(a, b):
        raise OSError(errno.EIO, os.strerror(errno.EIO), str(b))
    monkeypatch.setattr(atomic_dir, "_exchange", refuse)
    cb = default_codebooks()
    with pytest.raises(FileFormatError, match=exactly(f"{old}: cannot replace: Input/output error ({old})")):
        write_image(old, layers(2), cb, EngineLayout(cb.config, 4, 1))
    assert snapshot(old) == before and siblings(old) == ["img"]


# -- files the writer did not create --------------------------------------------------------------

def test_files_beside_the_image_are_kept_and_stale_layers_removed(tmp_path, old):
    (old / "notes.txt").write_text("mine\n")
    os.symlink("notes.txt", old / "link-to-notes")
    kept = {k: v for k, v in snapshot(old).items() if k in ("notes.txt", "link-to-notes")}
    cb = default_codebooks()
    write_image(old, layers(3, names=("c.weight",)), cb, EngineLayout(cb.config, 4, 1))
    after = snapshot(old)
    assert {k: after[k] for k in kept} == kept  # the very same files (same inodes)
    assert os.readlink(old / "link-to-notes") == "notes.txt"
    assert not any(n.startswith(("a.weight", "b.weight")) for n in after)  # the old image's layers are gone
    assert list(read_image(old).layers) == ["c.weight"] and siblings(old) == ["img"]


def test_a_non_empty_directory_without_an_image_is_refused(tmp_path):
    d = tmp_path / "project"
    d.mkdir()
    (d / "README").write_text("my project\n")
    cb = default_codebooks()
    with pytest.raises(FileFormatError, match=exactly(
            f"{d}: is not empty and holds no image (manifest.json: missing: not an image directory (or an "
            "interrupted write)); choose a new or empty directory, or pass --force to write the image beside its "
            "files (they are kept)")):
        write_image(d, layers(2), cb, EngineLayout(cb.config, 4, 1))
    assert sorted(p.name for p in d.iterdir()) == ["README"]
    # --force: the image goes beside the file, which stays as it was.
    inode = os.stat(d / "README").st_ino
    write_image(d, layers(2), cb, EngineLayout(cb.config, 4, 1), force=True)
    assert (d / "README").read_text() == "my project\n" and os.stat(d / "README").st_ino == inode
    assert list(read_image(d).layers) == ["a.weight", "b.weight"]


def test_a_file_the_writer_did_not_create_is_never_overwritten(tmp_path):
    d = tmp_path / "project"
    d.mkdir()
    (d / "codebook.hex").write_text("my own table\n")
    cb = default_codebooks()
    with pytest.raises(FileFormatError, match=exactly(
            f"{d}/codebook.hex: exists and was not written as part of an image; the image needs this name: "
            "move the file away or choose another directory")):
        write_image(d, layers(2), cb, EngineLayout(cb.config, 4, 1), force=True)
    assert sorted(p.name for p in d.iterdir()) == ["codebook.hex"]
    assert (d / "codebook.hex").read_text() == "my own table\n" and siblings(d) == ["project"]


def test_a_subdirectory_is_refused(tmp_path, old):
    (old / "rtl").mkdir()
    before = snapshot(old)
    cb = default_codebooks()
    with pytest.raises(FileFormatError, match=exactly(
            f"{old}/rtl: is a directory, not part of the image; only plain files are kept beside it: move it away "
            "or choose another directory")):
        write_image(old, layers(2), cb, EngineLayout(cb.config, 4, 1))
    assert snapshot(old) == before


def test_a_file_in_place_of_the_directory_is_refused(tmp_path):
    f = tmp_path / "img"
    f.write_text("x")
    cb = default_codebooks()
    with pytest.raises(FileFormatError, match=exactly(f"{f}: exists and is a regular file; the image is a directory")):
        write_image(f, layers(2), cb, EngineLayout(cb.config, 4, 1))
    assert f.read_text() == "x"


def test_a_link_to_an_image_directory_is_followed(tmp_path, old):
    link = tmp_path / "current"
    link.symlink_to(old)
    cb = default_codebooks()
    write_image(link, layers(4, names=("z.weight",)), cb, EngineLayout(cb.config, 4, 1))
    assert link.is_symlink() and list(read_image(old).layers) == ["z.weight"]


# -- permissions ----------------------------------------------------------------------------------

@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_written_files_follow_the_umask(tmp_path, umask):
    old_mask = os.umask(umask)
    try:
        cb = default_codebooks()
        write_image(tmp_path / "img", layers(2), cb, EngineLayout(cb.config, 4, 1))
        cb.save(tmp_path / "cb.json")
        t = tmp_path / "t.pt"
        torch.save(torch.randn(4, 64), t)
        assert main(["quantize", str(t), "-o", str(tmp_path / "q.pt")]) == 0
        assert main(["verilog", "--unit", "int-mac", "-o", str(tmp_path / "m.v"), "--quiet"]) == 0
    finally:
        os.umask(old_mask)
    files = [*(tmp_path / "img").iterdir(), tmp_path / "cb.json", tmp_path / "q.pt", tmp_path / "m.v"]
    assert {p.name: stat.S_IMODE(os.stat(p).st_mode) for p in files} == {p.name: 0o666 & ~umask for p in files}
    assert stat.S_IMODE(os.stat(tmp_path / "img").st_mode) == 0o777 & ~umask


def test_a_replaced_file_or_image_keeps_its_mode(tmp_path, old):
    cb = default_codebooks()
    cb.save(tmp_path / "cb.json")
    os.chmod(tmp_path / "cb.json", 0o640)
    os.chmod(old, 0o750)
    cb.save(tmp_path / "cb.json")
    write_image(old, layers(2), cb, EngineLayout(cb.config, 4, 1))
    assert stat.S_IMODE(os.stat(tmp_path / "cb.json").st_mode) == 0o640
    assert stat.S_IMODE(os.stat(old).st_mode) == 0o750


# -- leftovers of interrupted runs ---------------------------------------------------------------

def test_leftovers_of_a_dead_writer_are_removed_and_unknown_files_kept(tmp_path, old):
    pid = dead_pid()
    unfinished = old.parent / f".img.bcq-{pid}-0123abcd"  # a new image cut short: has the marker
    unfinished.mkdir()
    (unfinished / atomic_dir.MARKER).write_bytes(b"")
    (unfinished / "codebook.hex").write_text("half")
    swapped = old.parent / f".img.bcq-{pid}-4567cdef"  # an old image swapped out, not yet removed
    swapped.mkdir()
    for p in old.iterdir():
        os.link(p, swapped / p.name)
    (swapped / "appeared.txt").write_text("created in the directory during that write\n")
    live = old.parent / f".img.bcq-{os.getpid()}-89abcdef"  # a writer that is still running
    live.mkdir()
    lines = []
    cb = default_codebooks()
    write_image(old, layers(2), cb, EngineLayout(cb.config, 4, 1), log=lines.append)
    assert not unfinished.exists() and live.exists()
    assert sorted(p.name for p in swapped.iterdir()) == ["appeared.txt"]
    assert lines == [f"removed {unfinished}, left by an interrupted write",
                     f"kept {swapped}, left by an interrupted write: it holds files that are not part of an image "
                     "(appeared.txt)"]


def test_the_portable_swap_and_its_recovery(tmp_path, old, monkeypatch):
    """Where RENAME_EXCHANGE is missing the old image is renamed aside first; a run killed
    between the two renames leaves no image at the target, and the next run puts it back."""
    monkeypatch.setattr(atomic_dir, "USE_EXCHANGE", False)
    cb, layout = default_codebooks(), EngineLayout(default_codebooks().config, 4, 1)
    write_image(old, layers(5), cb, layout)
    assert sorted(read_image(old).layers) == ["a.weight", "b.weight"] and siblings(old) == ["img"]
    before = snapshot(old)
    aside = old.parent / f".img.bcq-{dead_pid()}-0badcafe"
    os.rename(old, aside)  # the state after the first rename
    lines = []

    def full(path, payload):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    monkeypatch.setattr(atomic_dir, "write_new", full)
    with pytest.raises(FileFormatError):
        write_image(old, layers(6), cb, layout, log=lines.append)
    assert lines == [f"restored the previous image {old} from {aside} (an interrupted write)"]
    assert {k: v[:2] for k, v in snapshot(old).items()} == {k: v[:2] for k, v in before.items()}
    assert siblings(old) == ["img"]
