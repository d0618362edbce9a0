"""What a path is, in words, when it is not the regular file or folder a command needs.

Opening a FIFO blocks, reading /dev/zero never ends and a symbolic link loop fails with a bare errno:
each is said as what it is, before anything tries to read it.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path

from zscrgan.errors import UserError, brief

MAX_JSON_BYTES = 64 << 20  # a run folder's JSON files are a few kilobytes; a larger one is not ours

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


def read_json(path, what: str, advice: str = "") -> object:
    """The JSON value in `path`, a regular file of at most MAX_JSON_BYTES; one clear UserError naming
    the file otherwise (missing, a FIFO or device, too large, not UTF-8 JSON, nested too deeply)."""
    tail = f"; {advice}" if advice else ""
    problem = not_a_file(path)
    if problem:
        raise UserError(f"{path}: {problem} ({what}){tail}")
    try:
        if os.stat(path).st_size > MAX_JSON_BYTES:
            raise UserError(f"{path}: larger than {MAX_JSON_BYTES >> 20} MB, not {what}{tail}")
        with open(path, encoding="utf-8") as f:
            return json.loads(f.read(MAX_JSON_BYTES + 1))
    except (OSError, ValueError, RecursionError) as err:  # UnicodeDecodeError is a ValueError
        raise UserError(f"{path}: unreadable as {what} ({brief(err)}){tail}") from None
