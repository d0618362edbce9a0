"""One training run: data, rounds of E-step / M-step / evaluation, and everything written to disk.

The method the config names (`zscrgan.methods`) trains; this loop never names one.
A run folder holds `config.yaml` (the resolved config), `input_scaling.json` (the input scaling and
its factors, which `zscrgan.retrieve` applies to a user's vectors), `metrics.jsonl` (one JSON line per round),
`summary.json`, `provenance.jsonl` (what started and resumed it), `checkpoints/` (best round's weights
and the last round's full state, for resume), TensorBoard scalars under `tb/` and, at every new best
round, the retrieval file `retrieved/acc<score>.pkl` (the released content: each query's retrieved
classes) with, beside it, `retrieved/acc<score>.rows.npy` (int64 [queries, top_k]: the gallery rows of
the retrieved images, see `retrieval_rows_file`). A copy also goes to the released path
`<results_root>/<DATASET>_res/acc<score>.pkl` unless a file of that name exists (another run's: it is
never replaced). Every file is written atomically, so an interrupted run never leaves a half-written result.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tensorflow as tf
import yaml

from zscrgan import __version__
from zscrgan.atomic import append_line, atomic_file, publish_copy, read_lines, remove_debris, retired_name, staged_folder, write_text_atomic
from zscrgan.config import read_yaml, to_plain
from zscrgan.data.demo import DemoSpec, ensure_demo
from zscrgan.data.release import load_dataset
from zscrgan.data.safe_pickle import dump_pickle
from zscrgan.data.scaling import scale_modality, scaling_record, unscaled_warning
from zscrgan.device import describe_device, kernels_note, select_device, set_determinism
from zscrgan.errors import UserError, brief, tf_message
from zscrgan.evaluate import RetrievalSet, evaluate, retrieval_records
from zscrgan.files import not_a_file, read_json
from zscrgan.methods import build_method
from zscrgan.methods.base import Phases, TrainingData
from zscrgan.metrics import chance_prec
from zscrgan.provenance import HISTORY, architecture_change, claim_run_dir, dotted_value, lock_run_dir, record_start
from zscrgan.released import retrieval_file_name

DEMO = "DEMO"
SCALING_FILE = "input_scaling.json"  # the run's input scaling and its factors, for scaling a user's vectors


def retrieval_rows_file(retrieval_file: Path) -> Path:
    """The file beside a retrieval file `acc<score>.pkl` that records which images it retrieved:
    `acc<score>.rows.npy`, int64 [queries, top_k], each query's retrieved gallery rows, best first.

    Rows and queries are numbered as evaluation orders them: the unseen classes by ascending class id
    and, within a class, its images (texts) in the dataset's order; the pickle holds the same
    retrievals as class ids.
    """
    return Path(retrieval_file).with_suffix(".rows.npy")


# --- checkpoints ------------------------------------------------------------------------------------
def save_checkpoint(checkpoint: tf.train.Checkpoint, folder: Path, extra: dict) -> None:
    """Write a checkpoint and its JSON side file into `folder`, which appears complete or not at all."""
    try:
        with staged_folder(folder) as staging:
            checkpoint.write(str(staging / "ckpt"))
            (staging / "state.json").write_text(json.dumps(extra, indent=1), encoding="utf-8")
    except tf.errors.OpError as err:  # TensorFlow's own file errors (a full disk, a read-only folder)
        raise UserError(f"{folder}: cannot write the checkpoint: {tf_message(err)}") from None


def read_state(folder: Path) -> dict:
    """A checkpoint folder's state.json as a dict; one clear error if it is not a readable JSON object."""
    state = read_json(folder / "state.json", "a checkpoint's state", CORRUPT)
    if not isinstance(state, dict):
        raise UserError(f"{folder / 'state.json'}: not a JSON object; {CORRUPT}")
    return state


def read_checkpoint(checkpoint: tf.train.Checkpoint, folder: Path) -> dict:
    """Restore `checkpoint` from `folder` and return its state.json; one clear error if either is
    unreadable, truncated or does not fit the model."""
    state = read_state(folder)
    for path in sorted(folder.iterdir()):  # TensorFlow's reader would block on a FIFO
        problem = not_a_file(path)
        if problem:
            raise UserError(f"{path}: {problem}; {CORRUPT}")
    try:
        checkpoint.read(str(folder / "ckpt")).assert_existing_objects_matched()
    # A damaged checkpoint fails inside TensorFlow in many ways (DataLossError, IndexError on a short
    # read, ValueError or AssertionError on a mismatch); to the user they are all one problem.
    except Exception as err:
        raise UserError(f"{folder}: the checkpoint cannot be restored ({brief(err)}); {CORRUPT}") from None
    return state


CORRUPT = "the checkpoint is truncated or corrupt (or from another model): start a new run"


def find_checkpoint(folder: Path) -> Path | None:
    """The complete checkpoint folder at `folder`, or its previous version if a swap was interrupted."""
    for candidate in (folder, retired_name(folder)):
        if (candidate / "state.json").exists():
            return candidate
    return None


# --- set-up ------------------------------------------------------------------------------------------
# The validated protocol holds out at least this many seen classes, and trains on at least as many:
# with one validation class, Prec@K is 1.0 from the first round on and selects nothing.
MIN_SPLIT_CLASSES = 2


def split_validation(seen: list[int], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Hold out a seeded share of the seen classes for validation: at least MIN_SPLIT_CLASSES, leaving
    at least as many to train on. Returns (training classes, validation classes)."""
    n_val = min(max(MIN_SPLIT_CLASSES, round(fraction * len(seen))), len(seen) - MIN_SPLIT_CLASSES)
    if n_val < MIN_SPLIT_CLASSES:
        raise UserError(f"--protocol validated: needs at least {2 * MIN_SPLIT_CLASSES} seen classes "
                        f"({MIN_SPLIT_CLASSES} held out for validation, {MIN_SPLIT_CLASSES} to train on); "
                        f"the dataset has {len(seen)}: use --protocol released")
    rng = np.random.default_rng(seed)
    val = set(rng.choice(np.array(seen), size=n_val, replace=False).tolist())
    return [c for c in seen if c not in val], [c for c in seen if c in val]


@dataclass
class Data:
    """What training and evaluation read: scaled features, the training classes, the retrieval sets."""

    name: str
    train_classes: list[int]
    training: TrainingData
    test: RetrievalSet
    val: RetrievalSet | None
    image_dim: int
    text_dim: int
    scaling: dict  # `scaling_record` of the dataset: how a user's vectors must be scaled for this run


def prepare_data(cfg, data_root: Path) -> Data:
    """Load (or, for DEMO, make) the dataset, scale it and split it by protocol."""
    folder = Path(data_root) / cfg.dataset
    if cfg.dataset == DEMO:
        ensure_demo(folder, DemoSpec(**cfg.demo))
    ds = load_dataset(folder)
    warning = unscaled_warning(ds.image, ds.text, folder) if cfg.input_scaling == "none" else None
    if warning:
        print(warning, file=sys.stderr)
    image = scale_modality(ds.image, ds.seen, cfg.input_scaling)
    text = scale_modality(ds.text, ds.seen, cfg.input_scaling)
    per_class = cfg.query_protocol == "per_class"
    if cfg.protocol == "validated":
        train_classes, val_classes = split_validation(list(ds.seen), cfg.val_fraction, cfg.seed)
        val = RetrievalSet.from_classes(image, text, sorted(val_classes), per_class)
    else:
        train_classes, val = list(ds.seen), None
    training = TrainingData(train_classes, {c: image[c] for c in train_classes}, {c: text[c] for c in train_classes},
                            ds.image_dim, ds.text_dim)
    # Queries and gallery in ascending class id order, the order the released code's dicts iterated.
    test = RetrievalSet.from_classes(image, text, sorted(ds.unseen), per_class)
    return Data(ds.name, train_classes, training, test, val, ds.image_dim, ds.text_dim,
                scaling_record(ds.image, ds.text, ds.seen, cfg.input_scaling))


# --- the run -----------------------------------------------------------------------------------------
@dataclass
class Best:
    """The selected round so far: by unseen Prec@K (released) or by validation Prec@K (validated).

    As released, the best score starts at 0.0 and a round must beat it strictly, so a round scoring
    0.0 selects (and writes) nothing.
    """

    round: int = 0
    score: float = 0.0
    test: dict = field(default_factory=dict)
    val: dict = field(default_factory=dict)
    best_test_any_round: float = -math.inf  # the released figure, kept beside the validated one


class StopFlag:
    """Turns the first Ctrl-C (SIGINT) or SIGTERM (what Slurm, Kubernetes and `timeout` send) into a
    request to stop at the next chunk boundary; a second one aborts.

    After the first signal the default dispositions are restored, so the second one ends the process
    at once, even inside a compiled call (a Python handler would wait for the call to return).
    `cause` names the first signal ("Ctrl-C" or "SIGTERM") for the summary and the exit status.
    """

    SIGNALS = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}

    # How long a stop waits for the compiled call in flight before the run stops without it.
    GRACE_S = 1.0

    def __init__(self):
        self.requested = False
        self.cause = ""
        self.where = ""
        self.signalled_at: float | None = None  # when a signal (not a caller) asked to stop
        self._previous: dict = {}

    def __enter__(self):
        if threading.current_thread() is not threading.main_thread():
            return self  # signals reach only the main thread (a Ray Tune trial runs in another one)

        def handler(signum, frame):
            self.requested, self.cause = True, self.SIGNALS[signum]
            self.signalled_at = time.monotonic()
            for number in self.SIGNALS:
                signal.signal(number, signal.SIG_DFL)
            again = "press Ctrl-C again" if signum == signal.SIGINT else "a second SIGTERM or Ctrl-C"
            print(f"\n{self.cause}: stopping within seconds and writing what the run has "
                  f"({again} to abort at once; the run stays resumable from its last round)", flush=True)

        for number in self.SIGNALS:
            self._previous[number] = signal.getsignal(number)
            signal.signal(number, handler)
        return self

    def __exit__(self, *exc):
        for number, previous in self._previous.items():
            signal.signal(number, previous)
        return False

    def given_up(self, phase: str) -> bool:
        """Whether to stop waiting for `phase`'s compiled call in flight: a signal asked to stop more than
        GRACE_S ago (the first call of a phase compiles, which can take many seconds). Notes where."""
        if self.signalled_at is None or time.monotonic() - self.signalled_at < self.GRACE_S:
            return False
        self.where = f"the {phase}, its compiled call in flight left unfinished"
        return True

    def between_chunks(self, phase: str, total: int):
        """A `stop` callback for a chunked phase: True once a stop was requested, noting how far it got."""
        def stop(done: int) -> bool:
            if self.requested:
                self.where = f"the {phase} after {done} of {total} iterations"
            return self.requested
        return stop


class Run:
    """A training run in `run_dir`, new or resumed from that folder's last checkpoint.

    `results_root`: where the released copies of retrieval files go (None: only into the run folder).
    """

    def __init__(self, cfg, run_dir: Path, data_root: Path = Path("datasets"),
                 results_root: Path | None = Path("retrieved_res"), log=print):
        self.cfg, self.run_dir, self.log = cfg, Path(run_dir), log
        self.dataset_dir = Path(data_root) / cfg.dataset
        self.results_dir = None if results_root is None else Path(results_root) / f"{cfg.dataset}_res"
        select_device(cfg.device)
        set_determinism(cfg.deterministic)
        with _memory_errors():
            self.data = prepare_data(cfg, data_root)
            self.method = build_method(cfg, self.data.image_dim, self.data.text_dim)
            self.method.attach(self.data.training)
        self.full_state = tf.train.Checkpoint(**self.method.checkpoint_objects())
        self.weights = tf.train.Checkpoint(**self.method.weight_objects())
        self.best = Best()
        self.round = 0
        self.last_test: dict = {}
        self.files: dict = {"retrieval_files": [], "released_copies": []}
        self.resumed = False
        self._tb = None
        self._copies = {"copied": 0, "kept": 0}  # this process's copies to the released layout

    # checkpoint layout
    @property
    def last_dir(self) -> Path:
        return self.run_dir / "checkpoints" / "last"

    @property
    def best_dir(self) -> Path:
        return self.run_dir / "checkpoints" / "best"

    def resume(self) -> bool:
        """Continue the run in `run_dir` from its last checkpoint. Returns whether there was a run to continue.

        A run stopped before its first checkpoint (during round 1) has nothing to restore: it starts
        again from round 0 in its own folder, which gives what the uninterrupted run would have given.
        Refuses (UserError) a config that changes an architecture key of the saved run, data other than
        the run's, and a checkpoint that is corrupt or does not fit.
        """
        config = self.run_dir / "config.yaml"
        if not os.path.lexists(config):
            return False
        # Everything is checked before anything in the folder changes: a refused resume leaves it as it was.
        self._check_folder_entries()
        saved = read_yaml(config)
        lock_run_dir(self.run_dir)
        changed = architecture_change(saved, self.cfg, self.method.architecture_keys)
        if changed:
            was = dotted_value({"method": "zscrgan", **saved}, changed)
            raise UserError(f"--{changed}: a resume cannot change an architecture key ({changed} is "
                            f"{brief(was)} in {config}, {brief(dotted_value(self.cfg, changed))} given)")
        folder = find_checkpoint(self.last_dir)
        if folder is None:
            self._log_rounds()  # readable, or refused
            self.resumed = True
            self._tidy_after_checkpoint()
            self.log(f"no checkpoint in {self.last_dir} yet (the run stopped during its first round): "
                     f"starting it again from round 1")
            return True
        self._check_same_data(folder)
        state = read_checkpoint(self.full_state, folder)
        try:
            try:
                self.method.load_host_state(state)
            except UserError as err:
                raise UserError(f"{folder / 'state.json'}: {err}") from None
            round_, best, last_test = state["round"], state["best"], state["last_test"]
            files = state.get("files", self.files)
            if not (type(round_) is int and round_ >= 0 and isinstance(best, dict)
                    and isinstance(last_test, dict) and isinstance(files, dict)):
                raise TypeError("round, best, last_test or files of the wrong type")
            best = Best(**best)
            if not (type(best.round) is int and all(type(v) in (int, float) for v in (best.score, best.best_test_any_round))
                    and isinstance(best.test, dict) and isinstance(best.val, dict)):
                raise TypeError("best of the wrong type")
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as err:
            raise UserError(f"{folder / 'state.json'}: missing or malformed entry ({brief(err)}); {CORRUPT}") from None
        self._log_rounds()
        self.round, self.best, self.last_test, self.files = round_, best, dict(last_test), files
        self.resumed = True
        self._tidy_after_checkpoint()
        self.log(f"resumed from {folder} after round {self.round}")
        return True

    def _check_folder_entries(self) -> None:
        """Refuse a run folder whose files are not regular files (a FIFO, a device: reading them would
        block or never end) or whose checkpoints are not folders."""
        for name in ("config.yaml", "metrics.jsonl", HISTORY, "summary.json", SCALING_FILE):
            path = self.run_dir / name
            problem = os.path.lexists(path) and not_a_file(path)
            if problem:
                raise UserError(f"{path}: {problem}; the run folder is damaged")
        for folder in (self.run_dir / "checkpoints", self.last_dir, self.best_dir):
            if os.path.lexists(folder) and not folder.is_dir():
                raise UserError(f"{folder}: not a folder; the run folder is damaged")

    def _log_rounds(self) -> list[str]:
        """The complete lines of metrics.jsonl (none if it does not exist)."""
        log = self.run_dir / "metrics.jsonl"
        try:
            return read_lines(log) if log.exists() else []
        except (OSError, UnicodeDecodeError) as err:
            raise UserError(f"{log}: unreadable ({brief(err)}); the run folder is damaged") from None

    def _tidy_after_checkpoint(self) -> None:
        for folder in (self.run_dir, self.run_dir / "checkpoints"):
            remove_debris(folder)
        self._drop_rounds_after_checkpoint()

    def _drop_rounds_after_checkpoint(self) -> None:
        """Rounds logged after the checkpoint (a kill between the log line and the checkpoint swap) are
        run again: drop their lines, and any torn last line, so that every round is logged once."""
        log = self.run_dir / "metrics.jsonl"
        if log.exists():
            kept = [line for line in self._log_rounds() if _logged_round(line) <= self.round]
            write_text_atomic(log, "".join(line + "\n" for line in kept))

    def _data_identity(self) -> dict:
        d = self.data
        return {"dataset": d.name, "image_dim": d.image_dim, "text_dim": d.text_dim,
                "train_classes": list(d.train_classes)}

    def _check_same_data(self, folder: Path) -> None:
        """Refuse to resume on data other than the run's (another dataset, other dimensions or classes)."""
        saved = read_state(folder).get("data", {})
        if not isinstance(saved, dict):
            raise UserError(f"{folder / 'state.json'}: malformed entry 'data'; {CORRUPT}")
        for key, now in self._data_identity().items():
            if key in saved and saved[key] != now:
                raise UserError(f"{folder / 'state.json'}: the run was trained with {key} {brief(saved[key])}, "
                                f"the data now gives {brief(now)}; resume on the same data or start a new run")

    def evaluate_best(self) -> dict:
        """Metrics of the selected round's saved weights, with the config's `eval_draws` per query.

        Writes them to `evaluation-draws<N>.json` in the run folder and returns them.
        """
        folder = find_checkpoint(self.best_dir)
        if folder is None:
            raise UserError(f"{self.best_dir}: no saved weights; is {self.run_dir} a run folder of main.py?")
        state = read_checkpoint(self.weights, folder)
        if not isinstance(state.get("round"), int):
            raise UserError(f"{folder / 'state.json'}: no round number; {CORRUPT}")
        round_ = state["round"]
        test, _ = evaluate(self.method, self.data.test, self.cfg.top_k)
        out = {"round": round_, "eval_draws": self.cfg.eval_draws, "test": _headline(test),
               "per_class": test["per_class"]}
        if self.data.val is not None:
            out["val"] = _headline(evaluate(self.method, self.data.val, self.cfg.top_k)[0])
        write_text_atomic(self.run_dir / f"evaluation-draws{self.cfg.eval_draws}.json", json.dumps(out, indent=1))
        return out

    def _write_retrievals(self, rows: np.ndarray, score: float) -> Path:
        """The retrieval file (and its rows file) into the run folder, and a copy to the released path
        if no file is there."""
        name = retrieval_file_name(score)
        path = self.run_dir / "retrieved" / name
        path.parent.mkdir(exist_ok=True)
        copy = None if self.results_dir is None else self.results_dir / name
        # A released copy linked to this run's own file was made before a kill: this round is being repeated.
        ours = copy is not None and path.exists() and copy.exists() and os.path.samefile(path, copy)
        with atomic_file(retrieval_rows_file(path), "wb") as f:
            np.save(f, np.asarray(rows, np.int64))
        dump_pickle(retrieval_records(self.data.test.query_labels, self.data.test.gallery_labels[rows]), path)
        self.files["retrieval_files"].append(str(path.relative_to(self.run_dir)))
        if copy is not None:
            self.results_dir.mkdir(parents=True, exist_ok=True)
            if publish_copy(path, copy) or ours:
                self.files["released_copies"].append(os.path.relpath(copy.resolve(), self.run_dir.resolve()))
                self._copies["copied"] += 1
            else:
                self._copies["kept"] += 1
        return path

    def _say_what_the_copies_did(self) -> None:
        """One line for the copies this process made to the released layout (none: no line)."""
        copied, kept = self._copies["copied"], self._copies["kept"]
        if copied or kept:
            line = f"released layout: {copied} retrieval file(s) copied to {self.results_dir}"
            if kept:
                line += (f"; {kept} not copied, as a file of the same name there is another run's and is kept "
                         f"(this run's are in {self.run_dir / 'retrieved'})")
            self.log(line)

    def _summary(self, stop_reason: str) -> dict:
        cfg = self.cfg
        b = self.best
        out = {"dataset": cfg.dataset, "protocol": cfg.protocol, "rounds_done": self.round, "stopped": stop_reason,
               "selected_round": b.round, "test_at_selected_round": b.test, "test_at_last_round": self.last_test,
               "best_test_prec_any_round": None if b.best_test_any_round == -math.inf else b.best_test_any_round,
               "chance_prec": chance_prec(self.data.test.gallery_labels, self.data.test.query_labels),
               "top_k": cfg.top_k, "run_dir": str(self.run_dir.resolve()), **self.files}
        if self.method.done():  # a closed-form method: its rounds are all done, whatever `rounds` asked
            out["trained"] = True
        if cfg.protocol == "validated":
            out["val_at_selected_round"] = b.val
        return out

    def _tensorboard(self, record: dict) -> None:
        try:
            if self._tb is None:
                self._tb = tf.summary.create_file_writer(str(self.run_dir / "tb"))
            with self._tb.as_default(step=record["round"]):
                for group in ("losses", "test", "val"):
                    for name, value in record.get(group, {}).items():
                        if isinstance(value, (int, float)):
                            tf.summary.scalar(f"{group}/{name}", value)
            self._tb.flush()
        except tf.errors.OpError as err:  # TensorFlow's own file errors (a full disk, a read-only folder)
            raise UserError(f"{self.run_dir / 'tb'}: cannot write TensorBoard events: {tf_message(err)}") from None

    def _evaluate_round(self, losses: dict, seconds_train: float) -> dict:
        cfg = self.cfg
        t0 = time.perf_counter()
        test, rows = evaluate(self.method, self.data.test, cfg.top_k)
        record = {"round": self.round, "losses": losses, "test": _headline(test)}
        self.last_test = record["test"]
        if self.data.val is not None:
            val, _ = evaluate(self.method, self.data.val, cfg.top_k)
            record["val"] = _headline(val)
        record["seconds"] = {"train": round(seconds_train, 3), "eval": round(time.perf_counter() - t0, 3)}
        b = self.best
        b.best_test_any_round = max(b.best_test_any_round, test["prec"])
        score = record["val"]["prec"] if self.data.val is not None else test["prec"]
        # A round whose losses went NaN or infinite has diverged: it is never selected.
        record["new_best"] = score > b.score and all(v is not None for v in losses.values())
        if record["new_best"]:
            b.round, b.score, b.test, b.val = self.round, score, record["test"], record.get("val", {})
            record["retrieval_file"] = str(self._write_retrievals(rows, test["prec"]).relative_to(self.run_dir))
            save_checkpoint(self.weights, self.best_dir, {"round": self.round, "test": b.test, "val": b.val,
                                                          "image_dim": self.data.image_dim,
                                                          "text_dim": self.data.text_dim})
        return record

    def _print_round(self, r: dict, elapsed: float, previous: list[float], budget_s: float | None) -> None:
        """One line per round, with the time left: the rounds left at the mean time of the last rounds
        (`previous`: this process's earlier round times; its first, which compiled the phases, is left
        out), or the time budget's rest if that ends sooner. The first round of a process has no
        estimate ("~?"): it compiled, and would overstate the time left several times over."""
        k, rounds = self.cfg.top_k, self.cfg.rounds
        losses = " ".join(f"{n} {_fmt(v)}" for n, v in r["losses"].items())
        t = r["test"]
        line = (f"round {r['round']:4d}/{rounds} | {losses} | Prec@{k} {t['prec']:.4f} mAP@{k} {t['map']:.4f} "
                f"Top-1 {t['top1']:.4f}")
        if "val" in r:
            line += f" | val Prec@{k} {r['val']['prec']:.4f}"
        seconds = r["seconds"]["train"] + r["seconds"]["eval"]
        if previous or r["round"] >= rounds:
            recent = (previous[1:] + [seconds])[-3:]
            left = sum(recent) / len(recent) * (rounds - r["round"])
            if budget_s is not None:
                left = min(left, max(budget_s - elapsed, 0.0))
            estimate = f"~{_clock(left)} left"
        else:
            estimate = "~? left (estimated from the next round on: this one compiled)"
        line += f" | {seconds:.1f}s, {_clock(elapsed)} elapsed, {estimate}"
        if r["new_best"]:
            line += " | new best"
        self.log(line)

    def start(self, overrides: dict | None = None, command: list[str] | None = None, numbered: bool = False) -> None:
        """Claim the run folder (unless resumed), record the start in its history, save the resolved config.

        `numbered`: `run_dir` is a default name, so a taken one gets a suffix (see `claim_run_dir`);
        otherwise a folder that already holds a run is refused. `overrides` and `command` (default:
        this process's) go into `provenance.jsonl`. Prints what the run is.
        """
        if not self.resumed:
            self.run_dir = claim_run_dir(self.run_dir, numbered)
            lock_run_dir(self.run_dir)
        record_start(self.run_dir, "resume" if self.resumed else "start", self.cfg, overrides, command,
                     describe_device(), self.dataset_dir)
        for folder in (self.run_dir, self.run_dir / "checkpoints"):
            remove_debris(folder)
        write_text_atomic(self.run_dir / "config.yaml", yaml.safe_dump(to_plain(self.cfg), sort_keys=False))
        write_text_atomic(self.run_dir / SCALING_FILE, json.dumps(self.data.scaling, indent=1))
        d = self.data
        chance = chance_prec(d.test.gallery_labels, d.test.query_labels)
        self.log(f"zscrgan {__version__} | dataset {d.name}: {len(d.train_classes)} training classes, "
                 f"{len(set(d.test.query_labels.tolist()))} unseen classes, image dim {d.image_dim}, "
                 f"text dim {d.text_dim} | {len(d.test.query_labels)} queries, {len(d.test.gallery_labels)} gallery "
                 f"images | chance Prec@{self.cfg.top_k} ~ {chance:.4f}")
        self.log(f"device: {describe_device()} | protocol {self.cfg.protocol} | output {self.run_dir}")
        note = kernels_note(self.cfg.deterministic, bool(self.cfg.get("jit_compile", False)))
        if note:
            self.log(note)

    def train(self, time_budget_min: float | None = None, on_round=None) -> dict:
        """Run rounds until `rounds`, the time budget, Ctrl-C or SIGTERM; returns the summary (also written).

        `on_round(record)` is called after each round is written and checkpointed.
        """
        cfg = self.cfg
        started = time.perf_counter()
        round_times: list[float] = []
        stop_reason = f"completed {cfg.rounds} rounds"
        with StopFlag() as stop, _memory_errors():
            phases = Phases(stop, cfg.deterministic)
            while True:
                if self.round >= cfg.rounds:
                    break
                if self.round and self.method.done():
                    stop_reason = f"completed: {cfg.method} is trained after round {self.round} (more rounds would change nothing)"
                    break
                if time_budget_min is not None and round_times:
                    elapsed = time.perf_counter() - started
                    if elapsed + max(round_times[-3:]) > time_budget_min * 60:
                        stop_reason = f"time budget of {time_budget_min:g} min reached"
                        break
                t0 = time.perf_counter()
                round_losses = self.method.train_round(phases)
                if round_losses is None:  # the last checkpoint still holds the previous round: resume repeats this one
                    stop_reason = (f"interrupted ({stop.cause}) in round {self.round + 1}, {stop.where or 'between phases'}; "
                                   "that round was not kept")
                    break
                self.round += 1
                losses = {n: _finite_or_none(round_losses[n]) for n in self.method.loss_names}
                record = self._evaluate_round(losses, time.perf_counter() - t0)
                append_line(self.run_dir / "metrics.jsonl", json.dumps(float32_digits(record), allow_nan=False))
                self._tensorboard(record)
                self._print_round(record, time.perf_counter() - started, round_times,
                                  None if time_budget_min is None else time_budget_min * 60)
                save_checkpoint(self.full_state, self.last_dir, {
                    "round": self.round, **self.method.host_state(), "best": vars(self.best),
                    "last_test": self.last_test, "files": self.files, "data": self._data_identity()})
                round_times.append(time.perf_counter() - t0)
                if on_round is not None:
                    on_round(record)
                if stop.requested:
                    stop_reason = f"interrupted ({stop.cause}) after round {self.round}"
                    break
                if cfg.early_stop_patience and self.round - self.best.round >= cfg.early_stop_patience:
                    stop_reason = (f"early stop after round {self.round}: no new selected round in "
                                   f"{cfg.early_stop_patience} rounds")
                    break
        self._say_what_the_copies_did()
        summary = float32_digits(self._summary(stop_reason))
        write_text_atomic(self.run_dir / "summary.json", json.dumps(summary, indent=1))
        return summary


@contextmanager
def _memory_errors():
    """Running out of memory (TensorFlow's or numpy's) becomes one line saying what to lower."""
    try:
        yield
    except (tf.errors.ResourceExhaustedError, MemoryError) as err:
        raise UserError(f"out of memory ({brief(err)}); lower the network sizes, batch_size or the data's "
                        "dimensions, or use a machine with more memory") from None


def _logged_round(line: str) -> float:
    """The round of a metrics.jsonl line; infinity for a line that is not a complete record."""
    try:
        return int(json.loads(line)["round"])
    except (ValueError, TypeError, KeyError, OverflowError, RecursionError):
        return math.inf


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def float32_digits(value):
    """`value` (JSON-able: dicts, lists, numbers) with every float cut to the digits a float32 carries
    (0.5200000000000001 -> 0.52), the shortest that reads back as the same float32; a float beyond
    float32's range is kept as it is. Two equal values stay equal, so runs still compare bit for bit."""
    if isinstance(value, float):
        return float(str(np.float32(value))) if abs(value) <= _FLOAT32_MAX else value
    if isinstance(value, dict):
        return {k: float32_digits(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [float32_digits(v) for v in value]
    return value


def _finite_or_none(value) -> float | None:
    """A loss as a plain float, or None (JSON null) when it is NaN or infinite."""
    value = float(value)
    return value if math.isfinite(value) else None


def _fmt(value: float | None) -> str:
    return "nan" if value is None else f"{value:.4f}"


def _clock(seconds: float) -> str:
    """Seconds as m:ss, or h:mm:ss from an hour on."""
    m, s = divmod(int(round(seconds)), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m}:{s:02d}"


def _headline(metrics: dict) -> dict:
    return {"prec": metrics["prec"], "map": metrics["map"], "top1": metrics["top1"]}
