"""Reading and writing the project's files safely: the one place that opens them.

Readers take regular files only (a FIFO, a device or a directory is refused before a byte is
read, so ``/dev/zero`` or a named pipe can neither eat memory nor hang the reader), resolve
symbolic links and can confine them to a directory, and cap the size before reading. JSON is
parsed with a nesting-depth limit (no ``RecursionError``), without ``NaN``/``Infinity`` and with
every problem reported as a :class:`FileFormatError` naming the file.

Writers are atomic: the data goes to a temporary file beside the target, is flushed to disk
(``fsync``) and renamed over the target, so a crash or a full disk leaves either the old file or
the new one, never half of one. New files get the permissions the user's umask allows (like any
``open(..., "w")``); a replaced file keeps its mode.
"""

import json
import os
from pathlib import Path
import re
import secrets
import stat

from .errors import FileFormatError

__all__ = ["read_regular", "check_regular", "loads_json", "read_json", "atomic_write", "write_new", "fsync_dir",
           "file_kind", "check_writable_file", "MAX_JSON_DEPTH"]

MAX_JSON_DEPTH = 32
_O_NONBLOCK, _O_NOFOLLOW, _O_CLOEXEC = (getattr(os, n, 0) for n in ("O_NONBLOCK", "O_NOFOLLOW", "O_CLOEXEC"))
_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symbolic link"))


def file_kind(mode):
    """What a ``st_mode`` is, in words (``"a FIFO (named pipe)"``); ``"a regular file"`` for one."""
    for test, words in _KINDS:
        if test(mode):
            return words
    return "a regular file" if stat.S_ISREG(mode) else "not a regular file"


def _is_inside(path, root):
    return os.path.commonpath([path, root]) == root


def read_regular(path, *, max_bytes=None, size=None, inside=None, what="file"):
    """The bytes of a regular file, checked before reading.

    Parameters
    ----------
    path : path-like
        The file. Symbolic links are followed, and the real path must be a regular file.
    max_bytes : int, optional
        Refuse a larger file (checked with ``fstat`` before reading).
    size : int, optional
        The exact size the file must have (a size that differs is damage).
    inside : path-like, optional
        The real path (symbolic links resolved) must lie within this directory.
    what : str
        What the file is, for the size message (``"manifest"``).

    Raises
    ------
    FileFormatError
        Missing, not a regular file, outside ``inside``, too large, of the wrong size or
        unreadable; the message names ``path``.
    """
    path = Path(path)
    real = os.path.realpath(path)
    if inside is not None:
        root = os.path.realpath(inside)
        if not _is_inside(real, root):
            raise FileFormatError(path, f"a symbolic link to {real}, outside {inside}; only files inside it are read")
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; O_NOFOLLOW: the path was resolved.
        fd = os.open(real, os.O_RDONLY | _O_NONBLOCK | _O_NOFOLLOW | _O_CLOEXEC)
    except FileNotFoundError:
        raise FileFormatError(path, "no such file") from None
    except OSError as e:
        raise FileFormatError(path, f"cannot read: {e.strerror}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise FileFormatError(path, f"is {file_kind(st.st_mode)}, not a regular file")
    with os.fdopen(fd, "rb", buffering=0) as f:
        if size is not None and st.st_size != size:
            raise FileFormatError(path, f"{st.st_size} bytes; the {what} must be {size} bytes")
        if max_bytes is not None and st.st_size > max_bytes:
            raise FileFormatError(path, f"{st.st_size} bytes; a {what} is at most {max_bytes} bytes")
        limit = st.st_size if size is not None else (max_bytes if max_bytes is not None else st.st_size)
        try:
            data = f.read(limit + 1)  # one byte more: a file that grew while read is noticed
        except OSError as e:
            raise FileFormatError(path, f"cannot read: {e.strerror}") from None
    if len(data) > limit or (size is not None and len(data) != size):
        raise FileFormatError(path, "changed size while being read")
    return data


def check_regular(path):
    """``path`` (a :class:`Path`) after checking that it names a regular file (links followed),
    for readers that open it themselves (``torch.load``, safetensors): a FIFO would hang them."""
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise FileFormatError(path, "no such file") from None
    except OSError as e:
        raise FileFormatError(path, f"cannot read: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise FileFormatError(path, f"is {file_kind(st.st_mode)}, not a regular file")
    return path


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_BRACKET = re.compile(r"[\[\]{}]")


def _depth(text):
    depth = deepest = 0
    for m in _BRACKET.finditer(_STRING.sub('""', text)):
        depth += 1 if m.group() in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def _no_constant(name):
    raise ValueError(f"{name} is not a number JSON allows")


def loads_json(data, *, source, max_depth=MAX_JSON_DEPTH):
    """Parse JSON ``data`` (bytes or str) whose nesting is at most ``max_depth``.

    Raises :class:`FileFormatError` naming ``source`` for text that is not UTF-8, not JSON,
    nested too deep, or uses ``NaN``/``Infinity`` or integers of more than 4300 digits.
    """
    try:
        text = data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data
    except UnicodeDecodeError as e:
        raise FileFormatError(source, f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    if _depth(text) > max_depth:
        raise FileFormatError(source, f"JSON nested deeper than {max_depth} levels")
    try:
        return json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as e:
        raise FileFormatError(source, f"not valid JSON ({e})") from None
    except (ValueError, RecursionError) as e:  # huge integers, NaN, nesting the scan missed
        raise FileFormatError(source, f"not valid JSON ({e})") from None


def read_json(path, *, max_bytes, max_depth=MAX_JSON_DEPTH, inside=None, what="JSON file"):
    """``loads_json(read_regular(path, ...))``: a small JSON file, read with every check."""
    return loads_json(read_regular(path, max_bytes=max_bytes, inside=inside, what=what), source=path,
                      max_depth=max_depth)


def fsync_dir(path):
    """Flush a directory's entries (a rename or a new file in it) to disk; a no-op where the
    platform cannot open directories."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_new(path, payload):
    """Create ``path`` (it must not exist), write ``payload`` and flush it to disk. The mode is
    0666 less the umask, like any newly created file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_CLOEXEC, 0o666)
    with os.fdopen(fd, "wb") as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())


def check_writable_file(path, *, parents=False):
    """The real path a writer will replace and its ``stat`` (None if new), checked before any
    work: not a directory or a special file, and its directory exists (or, with ``parents``,
    may be created). Raises :class:`FileFormatError` naming ``path``."""
    path = Path(path)
    real = Path(os.path.realpath(path))
    try:
        st = os.stat(real)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise FileFormatError(path, f"cannot write: {e.strerror}") from None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise FileFormatError(path, "is a directory; give a file name")
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise FileFormatError(path, f"is {file_kind(st.st_mode)}; only a regular file is replaced")
    if not parents and not real.parent.is_dir():
        raise FileFormatError(path, f"cannot write: no directory {real.parent}")
    return real, st


def atomic_write(path, payload, *, make_parents=False):
    """Replace (or create) the file ``path`` with ``payload`` (bytes) atomically.

    The bytes go to a temporary file in the same directory, are flushed to disk and renamed
    over ``path``; on any error the temporary file is removed and the old file stays as it was.
    A new file's mode follows the umask; a replaced file keeps its mode. A symbolic link is
    followed (its target is replaced). Raises :class:`FileFormatError` naming ``path``.
    """
    path = Path(path)
    if make_parents:
        try:
            Path(os.path.realpath(path)).parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise FileFormatError(path, f"cannot create its directory: {e.strerror}") from None
    real, st = check_writable_file(path)
    tmp = real.parent / f".{real.name}.{secrets.token_hex(4)}.tmp"
    try:
        write_new(tmp, payload)
        if st is not None:
            os.chmod(tmp, stat.S_IMODE(st.st_mode))
        os.replace(tmp, real)
    except OSError as e:
        _unlink_quietly(tmp)
        raise FileFormatError(path, f"cannot write: {e.strerror}") from None
    except BaseException:
        _unlink_quietly(tmp)
        raise
    fsync_dir(real.parent)


def _unlink_quietly(path):
    try:
        os.unlink(path)
    except OSError:
        pass
