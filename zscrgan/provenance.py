"""A run folder's identity and history: who owns it, and what made each start or resume of it.

A run folder belongs to exactly one run: it is claimed by creating it (or, for an empty folder the user
named, its `provenance.jsonl`) exclusively, so two runs started at the same moment never share one.
`provenance.jsonl` gets one JSON line per start and per resume: the command line, the overrides, the
resolved config, the package versions, the project's git commit, the device and a fingerprint of the
dataset's files.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import itertools
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Mapping

from zscrgan import __version__
from zscrgan.atomic import append_line
from zscrgan.config import config_hash, to_plain
from zscrgan.errors import UserError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
HISTORY = "provenance.jsonl"
# Files a study writes into a trial's folder before the run claims it (.lock: older versions' trial lock).
SIDE_FILES = (".lock", "console.log", "error.txt", "traceback.txt")
# Files whose presence means a folder already holds a run.
RUN_FILES = (HISTORY, "config.yaml", "metrics.jsonl", "summary.json")
# Config keys that fix what a run's saved state is: a resume cannot change them (each method adds
# the keys that fix its weights' shapes, `Method.architecture_keys`).
ARCHITECTURE_KEYS = ("method", "demo")

def holds_run(folder: Path) -> bool:
    return any((Path(folder) / name).exists() for name in RUN_FILES)


def new_folder(folder: Path) -> Path:
    """Create `folder`, or the first of `folder-2`, `folder-3`, ... that does not exist yet; returns it."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    for candidate in itertools.chain([folder], (folder.with_name(f"{folder.name}-{i}") for i in itertools.count(2))):
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue


def claim_run_dir(folder: Path, numbered: bool) -> Path:
    """Create and own a new run folder; returns it.

    `numbered`: `folder` is a default name, so a taken one becomes `folder-2`, ... (see `new_folder`).
    Otherwise (a folder the user named) an existing folder is accepted only if it is empty, or holds
    only what a start killed before writing the run's config left (an empty history file); it is
    claimed by creating its history file exclusively. A folder holding a run, or other files, is refused.
    """
    folder = Path(folder)
    if numbered:
        folder = new_folder(folder)
        (folder / HISTORY).touch(exist_ok=False)
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    entries = sorted(set(os.listdir(folder)) - set(SIDE_FILES))
    if entries == [HISTORY] and _unstarted_history(folder / HISTORY):
        lock_run_dir(folder)  # refused while the start that claimed it is still alive
        (folder / HISTORY).unlink()
        entries = []
    if entries and not holds_run(folder):
        shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        raise UserError(f"{folder}: holds other files ({shown}), not a run; give a new or empty --output_dir")
    try:
        if holds_run(folder):
            raise FileExistsError
        (folder / HISTORY).touch(exist_ok=False)
    except FileExistsError:
        raise UserError(f"{folder}: already holds a run; continue it with --resume {folder}, "
                        "or choose another --output_dir") from None
    return folder


def _unstarted_history(path: Path) -> bool:
    """Whether a history file holds no complete record (a start was killed right after the claim)."""
    try:
        return path.is_file() and b"\n" not in path.read_bytes()[:1 << 16]
    except OSError:
        return False


_LOCKS: dict = {}  # run folder -> the descriptor of the folder this process holds its lock by


def lock_run_dir(folder: Path) -> None:
    """Hold a lock on `folder` itself for the rest of this process (the OS releases it when the process
    ends), so that two processes never train one run folder at once; a second one gets one clear error.
    Taking a lock this process already holds does nothing."""
    folder = Path(folder).resolve()
    if folder in _LOCKS:
        return
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as err:
        raise UserError(f"{folder}: cannot open the run folder ({err.strerror or err})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise UserError(f"{folder}: another process is training this run folder right now; wait for it "
                        "to end (or stop it) before resuming") from None
    _LOCKS[folder] = fd


def release_run_dir(folder: Path) -> None:
    """Give up the lock `lock_run_dir` took (a no-op if this process does not hold it)."""
    fd = _LOCKS.pop(Path(folder).resolve(), None)
    if fd is not None:
        os.close(fd)


def default_run_name(cfg: Mapping, label: str | None = None, seeds: bool = False) -> str:
    """`<time>-<label>-seed<k>` (`-seeds` for a multi-seed folder); the label is the user's --name or
    `cfg<short hash of the config without the seed>`, so runs of different configs never look alike."""
    return (f"{time.strftime('%Y%m%d-%H%M%S')}-{label or 'cfg' + config_hash(cfg)}-"
            + ("seeds" if seeds else f"seed{cfg['seed']}"))


def architecture_change(saved: Mapping, cfg: Mapping, keys=("gf_dim", "df_dim", "embed_dim", "z_dim")) -> str | None:
    """The first key of ARCHITECTURE_KEYS and `keys` (dotted for a method's own keys) whose value
    differs between a run's saved config and `cfg`, if any. A saved config without `method` was
    trained by zscrgan (the only method before the key existed)."""
    saved, cfg = ({"method": "zscrgan", **c} for c in (saved, cfg))
    for key in ARCHITECTURE_KEYS + tuple(keys):
        was, now = dotted_value(saved, key), dotted_value(cfg, key)
        if was is not _MISSING and was != now:
            return key
    return None


_MISSING = object()


def dotted_value(cfg: Mapping, key: str):
    """cfg's value at a dotted key, or _MISSING."""
    node = cfg
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _MISSING
        node = node[part]
    return node

def dataset_fingerprint(folder: Path) -> dict:
    """SHA-256 of every file in the dataset folder (not recursing), by file name."""
    out = {}
    for path in sorted(Path(folder).iterdir()):
        if path.is_file() and not path.name.startswith("."):
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
            out[path.name] = digest.hexdigest()
    return out


def git_commit() -> str | None:
    """The project's git commit (with `+dirty` when files differ from it), or None outside a git checkout."""
    if not (PROJECT_ROOT / ".git").exists():
        return None
    try:
        def git(*args):
            return subprocess.run(["git", "-C", str(PROJECT_ROOT), *args], capture_output=True, text=True,
                                  timeout=10, check=True).stdout.strip()
        commit = git("rev-parse", "HEAD")
        return commit + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.SubprocessError):
        return None


# Packages whose versions a run's numbers depend on (requirements.txt's runtime part and TensorFlow's own
# numerics); constraints.txt pins them all.
RECORDED_PACKAGES = ("tensorflow", "keras", "numpy", "ml_dtypes", "scipy", "scikit-learn", "pyyaml", "easydict",
                     "tensorboard", "matplotlib")


def versions() -> dict:
    """This package's, Python's and the installed RECORDED_PACKAGES' versions (None where one is absent)."""
    out = {"zscrgan": __version__, "python": platform.python_version()}
    for name in RECORDED_PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def record_start(run_dir: Path, event: str, cfg: Mapping, overrides: Mapping | None, command: list[str] | None,
                 device: str, dataset_dir: Path) -> None:
    """Append one history line for a start (`event` "start") or resume ("resume") of the run in `run_dir`."""
    entry = {"event": event, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
             "command": list(command if command is not None else sys.argv), "cwd": os.getcwd(),
             "overrides": dict(overrides or {}), "config": to_plain(cfg), "versions": versions(),
             "git_commit": git_commit(), "device": device, "host": platform.node(),
             "dataset": {"folder": str(dataset_dir), "sha256": dataset_fingerprint(dataset_dir)}}
    append_line(Path(run_dir) / HISTORY, json.dumps(entry))
