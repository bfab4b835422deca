"""Replacing a directory of files atomically: a weight image (``bcq weights -o DIR``) is either
wholly the old one or wholly the new one, whenever the writer stops (an error, Ctrl-C, a full
disk, SIGKILL, a power cut after the data reached the disk).

How (:class:`DirectoryUpdate`):

1. The new files go into a fresh sibling directory ``.DIR.bcq-<pid>-<token>`` (same file system,
   so renames are atomic), which first gets a marker file ``.bcq-incomplete``. Every file is
   created new (mode 0666 less the umask) and flushed to disk.
2. Files in ``DIR`` that the previous writer did not create (``owned`` does not list them) are
   kept: they are hard-linked into the new directory, so they stay the same files.
3. The marker is removed, the directory flushed, and the new directory takes the place of
   ``DIR`` in one ``renameat2(RENAME_EXCHANGE)`` (Linux); elsewhere ``DIR`` is renamed aside and
   the new one renamed in, and a later run renames a stranded old one back.
4. The old directory (now under the sibling name) loses the files the previous writer created
   and the links of the kept files, and is removed.

A later run removes what an interrupted one left (only siblings of a dead process): with the
marker, everything in it was created by the writer; without it, only the files its own image
lists and the links whose twins are in ``DIR``. Anything else stays and is reported.
"""

import ctypes
import errno
import os
from pathlib import Path
import re
import secrets
import stat
import sys

from bcq.sw.formats.errors import FileFormatError
from bcq.sw.formats.files import file_kind, fsync_dir, write_new

__all__ = ["DirectoryUpdate", "MARKER"]

MARKER = ".bcq-incomplete"
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
USE_EXCHANGE = sys.platform.startswith("linux")  # tests switch it off to run the portable path


def _exchange(a, b):
    """Swap two paths atomically (Linux renameat2); False where the system cannot."""
    if not USE_EXCHANGE:
        return False
    fn = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if fn is None:
        return False
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _alive(pid):
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, another user's
        return True
    return True


def _same_file(a, b):
    try:
        sa, sb = os.lstat(a), os.lstat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def _owned_or_empty(owned, directory):
    try:
        return set(owned(directory))
    except FileFormatError:
        return set()


class DirectoryUpdate:
    """One atomic replacement of the directory ``target`` (see the module docstring).

    Parameters
    ----------
    target : path-like
        The directory to create or replace (a symbolic link to one is followed).
    owned : callable
        ``owned(directory)`` returns the names of the files a previous writer of this kind
        created in ``directory`` (they may be removed), or raises :class:`FileFormatError` when
        the directory holds no such set (its message says why).
    anchor : str
        The file ``owned`` reads (``manifest.json``): written last, removed last.
    force : bool
        Also write into a non-empty directory that ``owned`` refuses; its files are kept.
    what : str
        What the directory holds, for messages (``"image"``).
    log : callable, optional
        Called with one line for each thing worth telling (leftovers removed or kept).

    Members
    -------
    path : Path
        The final directory (``target`` with links resolved).

    Use as a context manager: ``write(name, payload)`` for each file, then ``commit()``; leaving
    the block without ``commit()`` (an exception) removes the new files and keeps ``target``.
    """

    def __init__(self, target, owned, *, anchor, force=False, what="image", log=None):
        self.shown = Path(target)
        self.anchor = anchor
        self.path = Path(os.path.realpath(target))
        self.owned, self.force, self.what = owned, force, what
        self.log = log or (lambda message: None)
        self.tmp = None
        self.names = set()
        self.foreign = set()
        self.old_owned = set()
        self.mode = None
        self.exists = False

    # -- set-up -------------------------------------------------------------------------------

    def __enter__(self):
        parent = self.path.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise FileFormatError(self.shown, f"cannot create its parent directory: {e.strerror}") from None
        self._clean_leftovers()
        self._classify()
        self.tmp = parent / f".{self.path.name}.bcq-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            os.mkdir(self.tmp)
            write_new(self.tmp / MARKER, b"")
        except OSError as e:
            self._remove_tmp()
            raise FileFormatError(self.shown, f"cannot write beside it in {parent}: {e.strerror}") from None
        return self

    def _classify(self):
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return
        except OSError as e:
            raise FileFormatError(self.shown, f"cannot read: {e.strerror}") from None
        if not stat.S_ISDIR(st.st_mode):
            raise FileFormatError(self.shown, f"exists and is {file_kind(st.st_mode)}; the {self.what} is a directory")
        try:
            entries = set(os.listdir(self.path))
        except OSError as e:
            raise FileFormatError(self.shown, f"cannot read: {e.strerror}") from None
        if not entries:
            return  # an empty directory is replaced by a rename
        self.exists, self.mode = True, stat.S_IMODE(st.st_mode)
        try:
            owned = set(self.owned(self.path))
        except FileFormatError as e:
            if not self.force:
                reason = f"{Path(e.path).name}: {e.problem}"
                raise FileFormatError(self.shown, f"is not empty and holds no {self.what} ({reason}); "
                                      "choose a "
                                      f"new or empty directory, or pass --force to write the {self.what} beside "
                                      "its files (they are kept)") from None
            owned = set()
        self.old_owned = owned & entries
        self.foreign = entries - owned
        for name in sorted(self.foreign):
            kind = file_kind(os.lstat(self.path / name).st_mode)
            if kind == "a directory" or name == MARKER:
                raise FileFormatError(self.shown / name, f"is {kind if name != MARKER else 'a name bcq reserves'}, "
                                      f"not part of the {self.what}; only plain files are kept beside it: move it "
                                      "away or choose another directory")

    def _clean_leftovers(self):
        pattern = re.compile(r"\." + re.escape(self.path.name) + r"\.bcq-(\d+)-[0-9a-f]{8}")
        try:
            siblings = os.listdir(self.path.parent)
        except OSError:
            return
        for entry in sorted(siblings):
            m = pattern.fullmatch(entry)
            if not m or _alive(int(m.group(1))):
                continue
            left = self.path.parent / entry
            if not os.path.isdir(left) or os.path.islink(left):
                continue
            if os.path.lexists(left / MARKER):
                kept = self._remove_entries(left, set(os.listdir(left)))
            elif not os.path.lexists(self.path) and _owned_or_empty(self.owned, left):
                os.rename(left, self.path)  # a previous run stopped between its two renames
                fsync_dir(self.path.parent)
                self.log(f"restored the previous {self.what} {self.shown} from {left} (an interrupted write)")
                continue
            else:
                known = _owned_or_empty(self.owned, left)
                kept = self._remove_entries(left, {n for n in os.listdir(left)
                                                   if n in known or _same_file(left / n, self.path / n)})
            if kept:
                self.log(f"kept {left}, left by an interrupted write: it holds files that are not part of "
                         f"an {self.what} ({', '.join(sorted(kept)[:5])})")
            else:
                self.log(f"removed {left}, left by an interrupted write")

    def _remove_entries(self, directory, names):
        """Unlink ``names`` (files and links only) in ``directory``, then the directory if it is
        empty; the names that stay. The file that identifies the directory (``anchor``, then the
        marker) goes last, so a removal cut short can be finished by a later run."""
        for name in sorted(names, key=lambda n: (n == MARKER, n == self.anchor, n)):
            p = directory / name
            if not os.path.isdir(p) or os.path.islink(p):
                try:
                    os.unlink(p)
                except FileNotFoundError:
                    pass
        try:
            os.rmdir(directory)
            return set()
        except OSError:
            return set(os.listdir(directory))

    # -- writing ------------------------------------------------------------------------------

    def write(self, name, payload):
        """Create the file ``name`` (a plain name) with ``payload`` in the new directory."""
        if name in self.foreign:
            raise FileFormatError(self.shown / name, f"exists and was not written as part of an {self.what}; the "
                                  f"{self.what} needs this name: move the file away or choose another directory")
        if name in self.names or Path(name).name != name or name in (MARKER, ".", ".."):
            raise FileFormatError(self.shown / name, "written twice or not a plain file name")
        try:
            write_new(self.tmp / name, payload)
        except OSError as e:
            raise FileFormatError(self.shown / name, f"cannot write: {e.strerror}") from None
        self.names.add(name)

    def commit(self):
        """Put the new directory in place of the old one (atomically) and remove the old one."""
        try:
            for name in sorted(self.foreign):
                os.link(self.path / name, self.tmp / name, follow_symlinks=False)
            if self.mode is not None:
                os.chmod(self.tmp, self.mode)
            fsync_dir(self.tmp)
            os.unlink(self.tmp / MARKER)
            fsync_dir(self.tmp)
            old = self._swap()
        except OSError as e:
            raise FileFormatError(self.shown, f"cannot replace: {e.strerror}"
                                  + (f" ({e.filename})" if e.filename else "")) from None
        self.tmp = None
        fsync_dir(self.path.parent)
        if old is not None:
            kept = self._remove_entries(old, self.old_owned | self.foreign)
            if kept:
                self.log(f"kept {old}: files appeared in {self.shown} while it was written "
                         f"({', '.join(sorted(kept)[:5])})")

    def _swap(self):
        if not self.exists:
            os.rename(self.tmp, self.path)  # onto nothing or an empty directory: atomic
            return None
        if _exchange(self.tmp, self.path):
            return self.tmp
        old = self.path.parent / f".{self.path.name}.bcq-{os.getpid()}-{secrets.token_hex(4)}"
        os.rename(self.path, old)
        try:
            os.rename(self.tmp, self.path)
        except OSError:
            os.rename(old, self.path)
            raise
        return old

    def _remove_tmp(self):
        if self.tmp is not None and os.path.isdir(self.tmp):
            self._remove_entries(self.tmp, set(os.listdir(self.tmp)))
        self.tmp = None

    def __exit__(self, exc_type, exc, tb):
        self._remove_tmp()  # after commit() there is nothing left to remove
        return False
