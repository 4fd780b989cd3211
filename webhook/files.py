"""Reading and writing the files podmutate follows (its configuration, its certificates): bounded,
never blocking, never half-written."""

import os
import stat
import tempfile


class FileRefused(OSError):
    """A file that is not read: not a regular file, or larger than the bound."""


def read_bounded(path: str, limit: int) -> bytes:
    """The content of the regular file at `path`, of at most `limit` bytes.

    Opened without blocking and checked before it is read: a FIFO or a device would hang the
    reader, and an endless file would fill its memory. Raises OSError (FileRefused for those).
    """
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(descriptor, "rb") as stream:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise FileRefused(f"{path}: not a regular file")
        data = stream.read(limit + 1)
    if len(data) > limit:
        raise FileRefused(f"{path}: larger than {limit} bytes")
    return data


def write_atomically(path: str, data: bytes, mode: int = 0o644) -> None:
    """Write `data` to `path` through a temporary file and a rename: never a half-written file."""
    directory = os.path.dirname(path) or "."
    descriptor, temporary = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.")
    try:
        os.fchmod(descriptor, mode)
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
