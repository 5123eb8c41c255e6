"""Atomic file writes: a crash mid-write never destroys the previous good file.

A write goes to a hidden temporary beside the target, `.{base}.XXXXXXXX.tmp{ext}`, which is
fsynced and renamed over the target. A process killed mid-write leaves only such a
temporary behind; `remove_temporaries` clears them from a folder the next time it is used.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from typing import Iterator, List

# The names `atomic_path` gives its temporaries (mkstemp's random part is 8 characters).
_TEMPORARY = re.compile(r"^\..+\.[A-Za-z0-9_]+\.tmp(\.[^.]*)?$")

# The process umask, read once at import (reading it means setting it, which is not
# thread-safe, so it is not done per write).
_UMASK = os.umask(0o022)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yield a temporary path beside `path`; on success move it over `path` atomically.

    The temporary file keeps `path`'s extension because some writers (Keras' `.keras`
    saver, OpenCV's `imwrite`) choose the format by it. On error it is removed and `path`
    is left as it was.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    base, ext = os.path.splitext(os.path.basename(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=f".tmp{ext}", dir=directory)
    os.close(fd)
    # mkstemp makes the file private (0600); give it the mode a plain open() would.
    os.chmod(tmp, 0o666 & ~_UMASK)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_directory(directory)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _fsync_directory(directory: str) -> None:
    """Make a rename durable: callers order their commits by renames (state.json after the
    weights it names), and that order must survive a power cut, not only a killed process."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot fsync a folder; the rename itself is still atomic
    finally:
        os.close(fd)


def is_temporary(name: str) -> bool:
    """True for a file name that `atomic_path` gives its temporaries."""
    return bool(_TEMPORARY.match(os.path.basename(name)))


def remove_temporaries(directory: str) -> List[str]:
    """Delete the temporaries that killed writes left in `directory` (not recursive);
    returns their names. Only call it on a folder no other process is writing to."""
    removed = []
    for name in sorted(os.listdir(directory)) if os.path.isdir(directory) else []:
        path = os.path.join(directory, name)
        if is_temporary(name) and os.path.isfile(path):
            os.remove(path)
            removed.append(name)
    return removed


def os_error_reason(error: OSError) -> str:
    """The OS's words for a failed write ("No space left on device"), one line."""
    reason = error.strerror or str(error) or type(error).__name__
    return reason.strip().splitlines()[0] if reason.strip() else type(error).__name__


def atomic_write_bytes(path: str, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def atomic_write_text(path: str, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
