"""Atomic writes: a reader sees the old file or folder or the complete new one, never a partial one.

Temporary names are random siblings created exclusively (not mkstemp / mkdtemp, which would make
the result private to the user), so the final file or folder gets the usual permissions.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import uuid
from contextlib import contextmanager, suppress
from pathlib import Path


# Names `_sibling` and `retired_name` give: what `remove_debris` recognises.
_DEBRIS = re.compile(r"\..+\.(new|tmp)-[0-9a-f]{12}")
_RETIRED = re.compile(r"\.(.+)\.old")


def _sibling(path: Path, tag: str) -> Path:
    return path.with_name(f".{path.name}.{tag}-{uuid.uuid4().hex[:12]}")


@contextmanager
def atomic_file(path, mode: str = "wb"):
    """Yield a file open for writing; on success it is flushed, synced and renamed to `path`.

    The folder must exist (an error there is the caller's to report).
    """
    path = Path(path)
    tmp = _sibling(path, "tmp")
    try:
        with open(tmp, mode.replace("w", "x"), **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with suppress(OSError):  # a failing clean-up must not hide the error that stopped the write
            tmp.unlink(missing_ok=True)  # gone after the rename; debris otherwise


def write_text_atomic(path, text: str) -> None:
    with atomic_file(path, "w") as f:
        f.write(text)


def append_line(path, line: str) -> None:
    """Append one complete line and sync it to disk (a JSON-lines log survives a crash line by line).

    If the write fails (a full disk), the file is cut back to its previous length, so no half line
    stays behind; the error is raised. A kill in the middle can still leave a torn last line, which
    readers of the log drop (`read_lines`).
    """
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        start = os.fstat(fd).st_size
        try:
            data = (line + "\n").encode("utf-8")
            while data:
                data = data[os.write(fd, data):]
            os.fsync(fd)
        except OSError as err:
            with suppress(OSError):
                os.ftruncate(fd, start)
            raise OSError(err.errno, err.strerror, str(path)) from None
    finally:
        os.close(fd)


def read_lines(path) -> list[str]:
    """The complete lines of a log written by `append_line`: a torn last line (no newline) is left out."""
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    return text.split("\n")[:-1]


def retired_name(folder: Path) -> Path:
    """Where `staged_folder` keeps the previous version of `folder` while it swaps the new one in."""
    return folder.with_name(f".{folder.name}.old")


@contextmanager
def staged_folder(folder):
    """Yield an empty staging folder; on success it replaces `folder` as a whole.

    The previous `folder` is kept (under `retired_name`) until the new one is in place, and put
    back if the swap fails; on any error the staging folder is removed and `folder` is untouched.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    clear_stale_staging(folder)
    staging = _sibling(folder, "new")
    staging.mkdir()
    # Locked while it is written (the lock ends with this process, however it ends): what a killed
    # writer left is then told from another writer's folder in progress (`clear_stale_staging`).
    held = os.open(staging, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(held, fcntl.LOCK_EX)
    try:
        yield staging
        if folder.exists():
            retired = retired_name(folder)
            shutil.rmtree(retired, ignore_errors=True)
            os.rename(folder, retired)
            try:
                os.rename(staging, folder)
            except OSError:
                os.rename(retired, folder)
                raise
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.rename(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone after the rename; debris otherwise
        os.close(held)


def _abandoned(path: Path) -> bool:
    """Whether the staging folder `path` has no living writer (none holds its lock)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return False  # gone, or not a folder: not ours to remove
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def clear_stale_staging(folder) -> None:
    """Remove the staging folders of `folder` (its `.NAME.new-*` siblings) that a killed `staged_folder`
    left behind, and put back its retired version (`.NAME.old`) when the folder itself is missing.
    A staging folder whose writer still runs is left alone, so this is safe beside other writers."""
    folder = Path(folder)
    if not folder.parent.is_dir():
        return
    staging = re.compile(re.escape(f".{folder.name}.new-") + "[0-9a-f]{12}")
    live_writer = False
    for entry in folder.parent.iterdir():
        if staging.fullmatch(entry.name) and entry.is_dir() and not entry.is_symlink():
            if _abandoned(entry):
                shutil.rmtree(entry, ignore_errors=True)
            else:
                live_writer = True
    retired = retired_name(folder)
    if not live_writer and retired.is_dir() and not retired.is_symlink():
        if folder.exists() or folder.is_symlink():
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.rename(retired, folder)


def remove_debris(folder) -> None:
    """Clear what writers killed mid-write left in `folder` (not below it): temporary files and
    staging folders are removed, and a retired folder whose replacement never arrived is put back.

    Only for folders that one process writes at a time (a run folder), since another writer's
    temporary names look the same.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return
    for entry in folder.iterdir():
        if _DEBRIS.fullmatch(entry.name):
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
        elif (retired := _RETIRED.fullmatch(entry.name)) and entry.is_dir():
            live = folder / retired.group(1)
            if live.exists():
                shutil.rmtree(entry)
            else:
                os.rename(entry, live)


def publish_copy(src, dst) -> bool:
    """Give the complete file `src` the further name `dst`, unless `dst` already exists; returns whether it did.

    Never replaces a file: a hard link where the file system allows one, otherwise a copy that is
    linked into place, so `dst` appears complete or not at all.
    """
    src, dst = Path(src), Path(dst)
    try:
        os.link(src, dst)
        return True
    except FileExistsError:
        return False
    except OSError:  # another file system, or no hard links there
        tmp = _sibling(dst, "tmp")
        try:
            shutil.copyfile(src, tmp)
            os.link(tmp, dst)
            return True
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)
