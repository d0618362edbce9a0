"""What a path is, in words, when it is not the regular file or folder a command needs.

Opening a FIFO blocks, reading /dev/zero never ends and a symbolic link loop fails with a bare errno:
each is said as what it is, before anything tries to read it.
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
from pathlib import Path

from zscrgan.errors import UserError, brief

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def not_a_file(path) -> str | None:
    """None when `path` is a regular file (or a link to one); otherwise what it is, e.g.
    "missing", "a FIFO (named pipe), not a regular file", "a symbolic link loop"."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "a symbolic link to a missing file" if path.is_symlink() else "missing"
    except OSError as err:
        return "a symbolic link loop" if err.errno == errno.ELOOP else f"unreadable ({err.strerror})"
    if stat.S_ISREG(mode):
        return None
    kind = next((name for test, name in _KINDS if test(mode)), "a special file")
    return f"{kind}, not a regular file"


def not_a_folder(path) -> str | None:
    """None when `path` is a folder or could be made one (its nearest existing ancestor is a folder);
    otherwise what is in the way, e.g. "is a file"."""
    path = Path(path)
    for part in (path, *path.parents):
        if os.path.lexists(part):
            if part.is_dir():
                return None
            what = not_a_file(part) or "a file"
            return f"is {what}" if part == path else f"cannot be made: {part} is {what}"
    return None


# A file of a run folder that a command reads whole (summary.json, metrics.jsonl, config.yaml, ...) is
# refused beyond this size: the largest real one (metrics.jsonl of 100k rounds) is a few tens of MB.
MAX_READ_BYTES = 256 << 20


def read_file(path, what: str = "file", limit: int = MAX_READ_BYTES) -> bytes:
    """The bytes of `path`, which must be a regular file of at most `limit` bytes; otherwise a UserError
    naming the path and what is there instead ("a FIFO (named pipe), not a regular file", "missing", ...).

    The file is opened without blocking and checked on the open descriptor, so a FIFO, device or socket
    put in its place is refused as what it is, never waited on or read without end. `what` names the
    file in the message (e.g. "run file").
    """
    from zscrgan.errors import UserError

    path = Path(path)
    problem = not_a_file(path)
    if problem is None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
        except OSError as err:
            problem = not_a_file(path) or f"unreadable ({err.strerror or err})"
    if problem is not None:
        raise UserError(f"{path}: {'not found' if problem == 'missing' else problem}; expected a {what}")
    try:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):  # swapped for something else since the check above
            raise UserError(f"{path}: not a regular file; expected a {what}")
        if status.st_size > limit:
            raise UserError(f"{path}: {status.st_size} bytes, over the limit of {limit} for a {what}")
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read(status.st_size)  # what it held when opened (a log may grow meanwhile)
    except OSError as err:
        raise UserError(f"{path}: cannot read: {err.strerror or err}") from None
    finally:
        os.close(fd)


def read_text_file(path, what: str = "file", limit: int = MAX_READ_BYTES) -> str:
    """`read_file` decoded as UTF-8; a file that is not UTF-8 text is a UserError naming it."""
    from zscrgan.errors import UserError

    try:
        return read_file(path, what, limit).decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{Path(path)}: not UTF-8 text; expected a {what}") from None


def not_an_output_file(path) -> str | None:
    """None when a file could be written (atomically, by rename) at `path`: its folder exists and
    `path` is absent or a regular file; otherwise what is in the way, e.g. "is a directory",
    "is a character device, not a regular file", "its folder nope does not exist"."""
    path = Path(path)
    if os.path.lexists(path):
        problem = not_a_file(path)
        if problem is not None:
            return f"is {problem}"
    parent = path.parent
    if not parent.is_dir():
        return f"its folder {parent} does not exist" if not os.path.lexists(parent) else f"{parent} is not a folder"
    return None


_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def not_a_name(name: str) -> str | None:
    """None when `name` can be one folder's name inside another (letters, digits, _ . -, not starting
    with a dot or dash); otherwise why not, so a label never places a folder elsewhere ("../x")."""
    if _PLAIN_NAME.fullmatch(name) and len(name) <= 200:
        return None
    return "must be a plain name (letters, digits, _ . -, starting with a letter or digit, at most 200 characters)"


def read_json(path, what: str, advice: str = "") -> object:
    """The JSON value in `path` (a regular file, read by `read_text_file`); one clear UserError naming
    the file otherwise (missing, a FIFO or device, too large, not UTF-8 JSON, nested too deeply)."""
    tail = f"; {advice}" if advice else ""
    try:
        text = read_text_file(path, what)
    except UserError as err:
        raise UserError(f"{err}{tail}") from None
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as err:
        raise UserError(f"{path}: unreadable as {what} ({brief(err)}){tail}") from None
