"""Studies: every (dataset, variant, seed) of a study file as a Ray Tune trial, then tables and plots.

    python -m zscrgan.study studies/demo.yaml                 # a local Ray, nothing to start by hand
    python -m zscrgan.study studies/ablations.yaml --dataset CUB --cpus_per_trial 2
    python -m zscrgan.study studies/ablations.yaml --address ray://head:10001   # an existing cluster
    python -m zscrgan.study studies/demo.yaml --search optuna --trials 8       # search on validation

A study file (YAML) has the keys of STUDY_KEYS: `datasets`, `seeds`, `variants` (name: config overrides,
applied over the released config and the study's `config`), `rounds` or `time_budget` (minutes) per
trial, `protocol`, and optionally `paper` (the slides' numbers per variant and dataset) and `search`
(a search space). Every trial is an ordinary run folder, `<study folder>/<dataset>/<variant>/seed<k>/`,
which is the one source of truth: running the same command again skips the trials whose run folder holds
a finished summary and resumes the others from their last checkpoint. The study folder gets
`results.csv`, `results.md` and one plot per dataset.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import shutil
import socket
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

from zscrgan.atomic import write_text_atomic
from zscrgan.config import CHOICES, MAX_INT, find_shipped, load_config, merge, read_yaml, schema, shipped_dir
from zscrgan.errors import UserError, brief, one_line
from zscrgan.files import not_a_folder, read_text_file
from zscrgan.flags import ArgumentParser
from zscrgan.provenance import SIDE_FILES, holds_run, lock_run_dir, release_run_dir
from zscrgan.tf_start import choose_kernels

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out of the log (workers inherit it)

STUDY_KEYS = {
    "description": "free text",
    "datasets": "list of dataset names (folders under --data_root; DEMO is made on first use)",
    "seeds": "list of seeds; every variant runs once per seed",
    "variants": "mapping of variant name to config overrides (an empty mapping is the released model)",
    "config": "config overrides applied to every variant (e.g. shorter phases for a demo)",
    "rounds": "rounds per trial (default: the config's rounds)",
    "time_budget": "minutes per trial (a trial stops before a round would end past it)",
    "protocol": f"{' | '.join(CHOICES['protocol'])}: how each trial selects its round",
    "query_protocol": f"{' | '.join(CHOICES['query_protocol'])}: every text a query, or one query per class "
                      "(its texts averaged); --query_protocol overrides it",
    "paper": "the published numbers, {variant: {dataset: {prec|map|top1: percent, queries: how the paper queried}}}, "
             "shown beside ours",
    "search": "search space for --search: {config key: [uniform|loguniform|int, low, high] or [choice, a, b, ...]}",
}
TRIAL_KEYS_FROM_STUDY = ("seed", "demo")  # set by the study itself, never by a variant
SPACE_KINDS = ("uniform", "loguniform", "int", "choice")
ERROR_FILE = "error.txt"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
DEMO = "DEMO"
STUDY_DIR = shipped_dir("studies")  # the study files shipped with zscrgan, found by name (`zscrgan study demo`)


# --- the study file ----------------------------------------------------------------------------------
@dataclass
class Trial:
    """One (dataset, variant, seed) and where its run folder is."""

    dataset: str
    variant: str
    seed: int
    overrides: dict
    run_dir: str

    @property
    def label(self) -> str:
        return f"{self.dataset}/{self.variant}/seed{self.seed}"


@dataclass
class Study:
    name: str
    file: str
    datasets: list
    seeds: list
    variants: dict
    config: dict
    rounds: int | None
    time_budget: float | None
    protocol: str
    paper: dict
    search: dict
    query_protocol: str = "per_text"

    def overrides(self, variant: str, seed: int) -> dict:
        """The config overrides of one trial: study config, variant, protocols, rounds, seed."""
        out = {**self.config, **self.variants[variant], "protocol": self.protocol,
               "query_protocol": self.query_protocol, "seed": seed}
        if self.rounds is not None:
            out["rounds"] = self.rounds
        elif self.time_budget is not None:
            out["rounds"] = 10 ** 9  # the time budget decides
        return out

    def trials(self, folder: Path) -> list[Trial]:
        return [Trial(ds, v, s, self.overrides(v, s), str(Path(folder).resolve() / ds / v / f"seed{s}"))
                for ds in self.datasets for v in self.variants for s in self.seeds]


def _need(cond: bool, where: str, problem: str) -> None:
    if not cond:
        raise UserError(f"{where}: {problem}")


def _names(value, where: str, what: str) -> list:
    _need(isinstance(value, list) and value and all(isinstance(v, str) and NAME.match(v) for v in value),
          where, f"'{what}' must be a non-empty list of names (letters, digits, _ . -), got {value!r}")
    return value


def load_study(path: Path, data_root: Path, only: list[str] | None = None, query_protocol: str | None = None) -> Study:
    """Read and validate a study file; every problem is a UserError naming the file and the key.

    Validates every variant's overrides against the config schema for every dataset, and that every
    dataset folder exists (DEMO is made on first use), so nothing starts on a study that would fail.
    `query_protocol` (the command line's) replaces the file's.
    """
    path = Path(path)
    where = str(path)
    raw = read_yaml(path)
    unknown = sorted(set(raw) - set(STUDY_KEYS))
    _need(not unknown, where, f"unknown key '{unknown[0] if unknown else ''}' (known keys: {', '.join(STUDY_KEYS)})")
    datasets = _names(raw.get("datasets"), where, "datasets")
    seeds = raw.get("seeds")
    _need(isinstance(seeds, list) and seeds and all(type(s) is int and 0 <= s <= MAX_INT for s in seeds)
          and len(set(seeds)) == len(seeds), where,
          f"'seeds' must be a non-empty list of distinct seeds (integers from 0 to {MAX_INT}), got {brief(seeds)}")
    variants = raw.get("variants", {"released": {}})
    _need(isinstance(variants, dict) and variants, where, "'variants' must be a mapping of name: config overrides")
    _names(list(variants), where, "variants")
    config = raw.get("config") or {}
    _need(isinstance(config, dict), where, "'config' must be a mapping of config keys")
    rounds, budget = raw.get("rounds"), raw.get("time_budget")
    _need(rounds is None or (type(rounds) is int and 0 < rounds <= MAX_INT), where,
          f"'rounds' must be a positive integer of at most {MAX_INT}, got {brief(rounds)}")
    _need(budget is None or (isinstance(budget, (int, float)) and not isinstance(budget, bool)
                             and math.isfinite(budget) and budget > 0),
          where, f"'time_budget' must be a positive finite number of minutes, got {brief(budget)}")
    protocol = raw.get("protocol", "released")
    _need(isinstance(protocol, str) and protocol in CHOICES["protocol"], where,
          f"'protocol' must be one of {', '.join(CHOICES['protocol'])}, got {brief(protocol)}")
    queries = query_protocol or raw.get("query_protocol", "per_text")
    _need(isinstance(queries, str) and queries in CHOICES["query_protocol"], where,
          f"'query_protocol' must be one of {', '.join(CHOICES['query_protocol'])}, got {brief(queries)}")
    defaults = schema()  # every method's own keys too; each trial's config is resolved below
    merge(defaults, config, f"{where}: config")
    for name, overrides in variants.items():
        source = f"{where}: variant '{name}'"
        _need(isinstance(overrides, dict), source, "must be a mapping of config overrides ({} for the released model)")
        for key in TRIAL_KEYS_FROM_STUDY + ("protocol", "query_protocol"):
            _need(key not in overrides, source, f"'{key}' is set by the study for all variants, not by one")
        merge(defaults, overrides, source)
    paper = raw.get("paper") or {}
    _need(isinstance(paper, dict) and all(v in variants and _is_paper_entry(by_ds) for v, by_ds in paper.items()),
          where, "'paper' must map variant names of 'variants' to {dataset: {prec|map|top1: percent, queries: text}}")
    search = _check_space(raw.get("search") or {}, defaults, where)

    if only:
        missing = [d for d in only if d not in datasets]
        _need(not missing, "--dataset", f"'{missing[0] if missing else ''}' is not in the study's datasets ({', '.join(datasets)})")
        datasets = [d for d in datasets if d in only]
    for ds in datasets:
        _need(ds == DEMO or (Path(data_root) / ds).is_dir(), where,
              f"unknown dataset '{ds}': no folder {Path(data_root) / ds} (see docs/data.md, 'Getting the data')")
        for name in variants:  # the dataset's own config file, then the variant, must resolve
            try:
                load_config(ds, overrides={**config, **variants[name], "protocol": protocol, "query_protocol": queries})
            except UserError as e:
                raise UserError(f"{where}: variant '{name}' on {ds}: {e}") from None
    return Study(path.stem, where, datasets, seeds, variants, config, rounds,
                 None if budget is None else float(budget), protocol, paper, search, queries)


def _is_paper_entry(by_dataset) -> bool:
    """{dataset: {prec|map|top1: a finite percent, queries: how the paper queried (text)}}, as the tables
    show it."""
    def figure(key, value):
        if key == "queries":
            return isinstance(value, str) and len(value) <= 200
        return (key in ("prec", "map", "top1") and isinstance(value, (int, float)) and not isinstance(value, bool)
                and math.isfinite(value))

    return isinstance(by_dataset, dict) and all(
        isinstance(figures, dict) and all(figure(k, v) for k, v in figures.items()) for figures in by_dataset.values())


def _check_space(space: dict, defaults: dict, where: str) -> dict:
    _need(isinstance(space, dict), where, "'search' must be a mapping of config key: [kind, ...]")
    for key, spec in space.items():
        source = f"{where}: search key '{key}'"
        _need(key in defaults and not isinstance(defaults[key], dict) and key not in TRIAL_KEYS_FROM_STUDY,
              source, "not a config key that a search can vary")
        _need(isinstance(spec, list) and len(spec) >= 2 and spec[0] in SPACE_KINDS, source,
              f"must be [kind, ...] with kind one of {', '.join(SPACE_KINDS)}")
        if spec[0] == "choice":
            for value in spec[1:]:
                merge(defaults, {key: value}, source)
        else:
            _need(len(spec) == 3 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in spec[1:])
                  and spec[1] < spec[2], source, f"{spec[0]} needs a low and a high bound, low < high")
            _need(spec[0] != "loguniform" or spec[1] > 0, source, "loguniform needs a low bound > 0")
            for bound in spec[1:]:  # both ends must be values the config accepts
                merge(defaults, {key: bound} if spec[0] == "int" else {key: float(bound)}, source)
    return space


# --- trial status, from the run folder ---------------------------------------------------------------
def trial_status(run_dir: Path) -> tuple[str, str]:
    """(`finished` | `failed` | `interrupted` | `not started`, detail) of a trial's run folder."""
    run_dir = Path(run_dir)
    try:
        summary = json.loads(read_text_file(run_dir / "summary.json", "run's summary.json"))
        cfg = read_yaml(run_dir / "config.yaml")
    except (ValueError, RecursionError, UserError):
        summary, cfg = None, {}
    if not isinstance(summary, dict) or not isinstance(summary.get("rounds_done"), int):
        summary = None  # not a summary a run wrote: the trial runs (or resumes) again
    if summary and _finished(summary, cfg):
        return "finished", summary["stopped"]
    if os.path.lexists(run_dir / ERROR_FILE):
        try:
            return "failed", read_text_file(run_dir / ERROR_FILE, "trial's error.txt", 1 << 16).strip()
        except UserError as e:
            return "failed", str(e)
    if (run_dir / "checkpoints" / "last").exists() or summary:
        return "interrupted", f"{summary['rounds_done'] if summary else 'some'} rounds done"
    return "not started", ""


def _finished(summary: dict, cfg: dict) -> bool:
    stopped, rounds = summary.get("stopped"), cfg.get("rounds", 0)
    return isinstance(stopped, str) and (stopped.startswith(("time budget", "early stop")) or (stopped.startswith("completed") and (
        summary.get("trained") or (isinstance(rounds, int) and summary["rounds_done"] >= rounds))))


# --- the trainable (runs in a Ray worker) ------------------------------------------------------------
def run_trial(config: dict) -> None:
    """Ray Tune function trainable: one ordinary run in the trial's run folder, new or resumed.

    Reports every round's unseen metrics (and validation Prec under the validated protocol) with
    `ray.tune.report`; `score` is the selection metric of the best round so far (validation Prec@K
    under the validated protocol). A failure is written to the run folder's error.txt and re-raised,
    so Ray marks the trial failed and the table shows why.
    """
    from ray import tune

    spec = config["trial"]
    overrides = {**spec["overrides"], **config.get("searched", {})}
    run_dir = Path(spec["run_dir"] or Path(spec["search_dir"]) / tune.get_context().get_trial_id())
    if trial_status(run_dir)[0] == "finished":
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    lock_run_dir(run_dir)  # held by this worker process until it ends
    (run_dir / ERROR_FILE).unlink(missing_ok=True)
    try:
        cfg = load_config(spec["dataset"], overrides=overrides)
        choose_kernels(cfg.deterministic)  # before this worker's first TensorFlow import
        _limit_threads(spec["cpus"])
        from zscrgan.run import Run

        with open(run_dir / "console.log", "a", encoding="utf-8") as console:
            def log(line):
                console.write(line + "\n")
                console.flush()

            run = Run(cfg, run_dir, Path(spec["data_root"]), results_root=None, log=log)
            if not run.resume() and holds_run(run_dir):
                _clear_unstarted(run_dir)  # it stopped before its first round ended: start it afresh
            run.start(overrides, spec["command"])

            def report(record):
                metrics = {"round": record["round"], **{f"test_{k}": v for k, v in record["test"].items()},
                           "score": run.best.score}
                metrics.update({f"val_{k}": v for k, v in record.get("val", {}).items()})
                tune.report(metrics)

            run.train(spec["time_budget"], on_round=report)
    except Exception as e:
        write_text_atomic(run_dir / ERROR_FILE, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}\n")
        (run_dir / "traceback.txt").write_text(traceback.format_exc(), encoding="utf-8")
        raise
    finally:
        release_run_dir(run_dir)


def _limit_threads(cpus: float) -> None:
    """TensorFlow's thread pools to the trial's CPUs (only possible before TensorFlow's first op)."""
    import tensorflow as tf

    n = max(1, int(cpus))
    try:
        tf.config.threading.set_intra_op_parallelism_threads(n)
        tf.config.threading.set_inter_op_parallelism_threads(n)
    except RuntimeError:
        pass  # a reused worker: TensorFlow is set up already, with the same count


def _clear_unstarted(run_dir: Path) -> None:
    for path in run_dir.iterdir():
        if path.name not in SIDE_FILES:
            shutil.rmtree(path) if path.is_dir() else path.unlink()


# --- running on Ray ----------------------------------------------------------------------------------
def _visible_gpus() -> int:
    """How many GPUs a local Ray would find: those CUDA_VISIBLE_DEVICES names if it is set, else those
    the NVIDIA driver lists (none without the driver)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    gpus = Path("/proc/driver/nvidia/gpus")
    return len(list(gpus.iterdir())) if gpus.is_dir() else 0


def _check_resources(args) -> None:
    """Refuse per-trial CPUs or GPUs that the local Ray would not have (a trial asking for them would
    wait for ever) before Ray starts; a cluster's are checked once connected (`_check_cluster`)."""
    for flag in ("num_cpus", "max_concurrent"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise UserError(f"--{flag} must be at least 1, got {value}")
    if not (0 < args.cpus_per_trial <= 1e6 and 0 <= args.gpus_per_trial <= 1e6):
        raise UserError("--cpus_per_trial must be > 0 and --gpus_per_trial >= 0")
    if args.address:
        return
    cpus = args.num_cpus or os.cpu_count()
    if args.cpus_per_trial > cpus:
        raise UserError(f"--cpus_per_trial {args.cpus_per_trial:g}: the local Ray has {cpus} CPUs "
                        f"({'--num_cpus' if args.num_cpus else 'this machine'}), so no trial could start")
    gpus = _visible_gpus()
    if args.gpus_per_trial > gpus:
        raise UserError(f"--gpus_per_trial {args.gpus_per_trial:g}: this machine has {gpus} GPU(s) visible, "
                        "so no trial could start; leave --gpus_per_trial at 0 to train on the CPUs")


def _check_cluster(args) -> None:
    """Refuse per-trial CPUs or GPUs beyond what the connected cluster has in all."""
    import ray

    have = ray.cluster_resources()
    for flag, key, want in (("--cpus_per_trial", "CPU", args.cpus_per_trial),
                            ("--gpus_per_trial", "GPU", args.gpus_per_trial)):
        if want > have.get(key, 0):
            raise UserError(f"{flag} {want:g}: the cluster at {args.address} has {have.get(key, 0):g} {key}(s) "
                            "in all, so no trial could start")


def _check_answers(address: str, timeout: float = 10.0) -> None:
    """A UserError unless something accepts a connection at `address` (HOST:PORT or ray://HOST:PORT;
    "auto" is left to Ray). Ray itself keeps retrying an address where nothing answers for minutes."""
    host_port = address[len("ray://"):] if address.startswith("ray://") else address
    host, _, port = host_port.rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise UserError(f"--address {address}: nothing answers at {host}:{port} ({e.strerror or brief(e)}); "
                        f"start the cluster there first (ray start --head) or correct the address") from None


# Ray's warnings that ask nothing of the user: (logger, the start of the message, why it is left out).
QUIET_RAY_NOTICES = (
    # Tune times its own bookkeeping and warns when a step of it is slow: on a busy machine that is
    # every few seconds, and there is nothing for the user to change.
    ("ray.tune.utils.util", "The `", "may be a performance bottleneck"),
    ("ray.tune.utils.util", "Processing trial results took", "may be a performance bottleneck"),
    # A Ray started by this command protects itself with a token by default; it ends with the command.
    ("ray._private.authentication.authentication_token_setup", "Token authentication is enabled for this Ray cluster", ""),
)


class _QuietRayNotices(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(record.name == name and message.startswith(start) and contains in message
                       for name, start, contains in QUIET_RAY_NOTICES)


_QUIET = _QuietRayNotices()


def _quiet_ray_notices() -> None:
    """Leave out of the console the warnings of QUIET_RAY_NOTICES (every other warning still shows)."""
    for name, _, _ in QUIET_RAY_NOTICES:
        logging.getLogger(name).addFilter(_QUIET)  # the same filter again adds nothing


def _start_ray(args) -> bool:
    """Connect to --address, or start a local Ray; returns whether this process started it."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # never contact the internet
    # Tune's own closing lines (where it saved its state; after Ctrl-C, how to resume through its
    # Python API, and that trials never started have no results) would contradict ours: a study
    # resumes by running the same command again, and our table says which trials did not finish.
    for name in ("ray.tune.tune", "ray.tune.analysis.experiment_analysis"):
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's console tables off (verbose=0); our lines instead
    _quiet_ray_notices()
    if ray.is_initialized():
        return False
    if args.address:
        _check_answers(args.address)
        try:
            ray.init(address=args.address, log_to_driver=False)
        except Exception as e:  # unreachable, refused, or an authentication token missing or wrong
            hint = ""
            if "auth" in str(e).lower() and os.environ.get("RAY_AUTH_MODE") != "token":
                hint = ("; a cluster started with token authentication (`ray start` does so by default "
                        "from Ray 2.59 on) needs RAY_AUTH_MODE=token and its token here as well")
            raise UserError(f"--address {args.address}: cannot connect to a Ray cluster there "
                            f"({type(e).__name__}: {brief(e)}){hint}") from None
        try:
            _check_cluster(args)
        except UserError:
            ray.shutdown()
            raise
        return True
    # Local workers import this package from where the driver found it.
    root = str(Path(__file__).resolve().parent.parent)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    # A local Ray lives and ends with this command: that it started (an INFO line) asks nothing of the user.
    ray.init(num_cpus=args.num_cpus or os.cpu_count(), include_dashboard=False, log_to_driver=False,
             logging_level=logging.WARNING,
             _temp_dir=os.path.join(tempfile.gettempdir(), f"zscrgan-ray-{os.getuid() if hasattr(os, 'getuid') else 0}"))
    return True


# A running trial's progress line comes at most this often; its round lines are in its console.log.
PROGRESS_EVERY_S = 30.0


class TrialProgress:
    """What the console says of one trial: its rounds, the best selection score so far, and the time
    left, estimated from its second round on (the first compiles)."""

    def __init__(self, label: str, rounds: int | None, time_budget: float | None, score_name: str):
        self.label, self.rounds, self.budget_s, self.score_name = label, rounds, time_budget and time_budget * 60, score_name
        self.started = time.monotonic()
        self.first: tuple[int, float] | None = None  # (round, time) of the first result this driver saw
        self.round, self.best, self.printed = 0, None, self.started

    def update(self, round_: int, score: float | None, now: float) -> None:
        if self.first is None:
            self.first = (round_, now)
        self.round, self.best = round_, score

    def left_s(self, now: float) -> float | None:
        """Seconds left: the rounds left at this trial's mean round time, or the time budget's rest."""
        if self.first is None or self.round <= self.first[0]:
            return None
        per_round = (now - self.first[1]) / (self.round - self.first[0])
        left = None if self.rounds is None else per_round * (self.rounds - self.round)
        if self.budget_s is not None:
            rest = max(self.budget_s - (now - self.started), 0.0)
            left = rest if left is None else min(left, rest)
        return left

    def line(self, now: float) -> str:
        of = f"/{self.rounds}" if self.rounds is not None else ""
        best = "" if self.best is None else f", best {self.score_name} {self.best:.4f}"
        left = self.left_s(now)
        eta = "~?" if left is None else f"~{_clock(left)}"
        return f"{self.label}: round {self.round}{of}{best}, {_clock(now - self.started)} elapsed, {eta} left"


def _clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m}:{s:02d}"


def _progress_callback(total: int):
    from ray import tune

    class Progress(tune.Callback):
        """The study's console: a line when a trial starts, a progress line per running trial at most
        every PROGRESS_EVERY_S seconds (round k/N, best so far, time left), and a line when it ends;
        instead of Tune's status tables and a line per round."""

        def __init__(self):
            self.done = 0
            self.trials: dict = {}

        def _label(self, trial):
            spec = trial.config["trial"]
            if spec["run_dir"]:
                return f"{spec['dataset']}/{spec['variant']}/seed{spec['seed']}"
            return f"{spec['dataset']}/search/{trial.trial_id}"

        def _progress(self, trial) -> TrialProgress:
            if trial.trial_id not in self.trials:
                spec = trial.config["trial"]
                rounds = spec["overrides"].get("rounds")
                validated = spec["overrides"].get("protocol") == "validated"
                self.trials[trial.trial_id] = TrialProgress(
                    self._label(trial), None if spec["time_budget"] is not None else rounds, spec["time_budget"],
                    "validation Prec" if validated else "unseen Prec")
            return self.trials[trial.trial_id]

        def on_trial_start(self, iteration, trials, trial, **info):
            self._progress(trial)
            print(f"started  {self._label(trial)}", flush=True)

        def on_trial_result(self, iteration, trials, trial, result, **info):
            progress, now = self._progress(trial), time.monotonic()
            progress.update(result["round"], result.get("score"), now)
            if now - progress.printed >= PROGRESS_EVERY_S:
                progress.printed = now
                print(f"         {progress.line(now)}", flush=True)

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.done += 1
            progress = self._progress(trial)
            rounds = f"round {progress.round}" if progress.round else "nothing left to run"
            best = "" if progress.best is None else f", best {progress.score_name} {progress.best:.4f}"
            print(f"finished {self._label(trial)} ({self.done}/{total}): {rounds}{best}, "
                  f"{_clock(time.monotonic() - progress.started)}", flush=True)

        def on_trial_error(self, iteration, trials, trial, **info):
            self.done += 1
            spec = trial.config["trial"]
            status = trial_status(Path(spec["run_dir"] or Path(spec["search_dir"]) / trial.trial_id))[1]
            print(f"FAILED   {self._label(trial)} ({self.done}/{total}): {status}", flush=True)

    return Progress()


def _tuner(trainable_config: dict, args, folder: Path, name: str, total: int, **tune_config):
    from ray import tune

    trainable = tune.with_resources(run_trial, {"cpu": args.cpus_per_trial, "gpu": args.gpus_per_trial})
    shutil.rmtree(folder / ".tune" / name, ignore_errors=True)  # the run folders, not Tune's records, are kept
    return tune.Tuner(
        trainable, param_space=trainable_config,
        tune_config=tune.TuneConfig(max_concurrent_trials=args.max_concurrent, reuse_actors=True,
                                    trial_dirname_creator=lambda trial: trial.trial_id, **tune_config),
        run_config=tune.RunConfig(name=name, storage_path=str((folder / ".tune").resolve()), verbose=0,
                                  callbacks=[_progress_callback(total)],
                                  failure_config=tune.FailureConfig(max_failures=0)))


def _trial_spec(study: Study, args, dataset: str, **fields) -> dict:
    return {"dataset": dataset, "data_root": str(Path(args.data_root).resolve()), "time_budget": study.time_budget,
            "cpus": args.cpus_per_trial, "command": args.command, "run_dir": None, **fields}


def pending(study: Study, folder: Path) -> list[Trial]:
    """The study's trials whose run folder holds no finished run."""
    return [t for t in study.trials(folder) if trial_status(Path(t.run_dir))[0] != "finished"]


def run_grid(study: Study, folder: Path, args) -> list[Trial]:
    """Every trial of the study that has not finished, on Ray Tune; returns the trials it ran (the
    run folders say how each ended)."""
    from ray import tune

    todo = pending(study, folder)
    if not todo:
        return []
    specs = [_trial_spec(study, args, t.dataset, variant=t.variant, seed=t.seed, overrides=t.overrides,
                         run_dir=t.run_dir) for t in todo]
    print(f"{len(todo)} trial(s) to run, {len(study.trials(folder)) - len(todo)} finished already", flush=True)
    _tuner({"trial": tune.grid_search(specs)}, args, folder, "grid", len(todo)).fit()
    return todo


def run_search(study: Study, folder: Path, args) -> tuple[dict, int]:
    """For each dataset, an Optuna search over `search` on seed `seeds[0]`, scored by validation Prec only.

    Returns, per dataset, the chosen configuration and its unseen metrics at its validation-selected
    round; and how many of the search's trials failed.
    """
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    chosen, failed = {}, 0
    for ds in study.datasets:
        search_dir = (folder / ds / "search").resolve()
        space = {k: _tune_domain(spec) for k, spec in study.search.items()}
        spec = _trial_spec(study, args, ds, variant="search", seed=study.seeds[0],
                           overrides=study.overrides(next(iter(study.variants)), study.seeds[0]),
                           search_dir=str(search_dir))
        done = sorted(search_dir.glob("*/summary.json")) if search_dir.exists() else []
        remaining = args.trials - len(done)
        if remaining > 0:
            searcher = OptunaSearch(metric="score", mode="max", seed=study.seeds[0])
            failed += _tuner({"trial": spec, "searched": space}, args, folder, f"search-{ds}", remaining,
                             search_alg=searcher, num_samples=remaining).fit().num_errors
        chosen[ds] = best_searched(search_dir)
    return chosen, failed


def _tune_domain(spec: list):
    from ray import tune

    kind, *values = spec
    if kind == "choice":
        return tune.choice(values)
    return {"uniform": tune.uniform, "loguniform": tune.loguniform, "int": tune.randint}[kind](*values)


def best_searched(search_dir: Path) -> dict | None:
    """The searched run with the best validation Prec at its selected round (never an unseen figure)."""
    best = None
    for summary_path in sorted(Path(search_dir).glob("*/summary.json")):
        try:  # a searched run whose files are not what a run writes is no candidate
            summary = json.loads(read_text_file(summary_path, "run's summary.json"))
            val = summary.get("val_at_selected_round") or {}
            if not isinstance(val.get("prec"), (int, float)) or (best is not None and val["prec"] <= best["val_prec"]):
                continue
            history = json.loads(read_text_file(summary_path.parent / "provenance.jsonl", "run's provenance.jsonl")
                                 .splitlines()[0])
            best = {"run_dir": str(summary_path.parent), "val_prec": val["prec"],
                    "overrides": dict(history["overrides"]), "test_at_selected_round": summary["test_at_selected_round"]}
        except (UserError, ValueError, RecursionError, IndexError, KeyError, TypeError, AttributeError):
            continue
    return best


# --- the command -------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m zscrgan.study", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("study", help="a study file (YAML), or the name of one shipped with zscrgan: "
                                 + ", ".join(sorted(f.stem for f in STUDY_DIR.glob("*.yaml"))))
    p.add_argument("--dataset", nargs="+", metavar="NAME", help="run only these of the study's datasets")
    p.add_argument("--output_dir", type=Path, help="study folder (default: runs/studies/<study file name>)")
    p.add_argument("--data_root", default=os.environ.get("ZSCRGAN_DATA_ROOT") or "datasets",
                   help="folder holding the dataset folders (default: $ZSCRGAN_DATA_ROOT if set, else ./datasets)")
    p.add_argument("--address", help="an existing Ray cluster (e.g. ray://head:10001 or auto); default: a local Ray")
    p.add_argument("--num_cpus", type=int, help="CPUs of the local Ray (default: all of this machine's)")
    p.add_argument("--cpus_per_trial", type=float, default=1.0, help="CPUs each trial holds (default 1)")
    p.add_argument("--gpus_per_trial", type=float, default=0.0, help="GPUs each trial holds, fractions allowed (default 0)")
    p.add_argument("--max_concurrent", type=int, help="at most this many trials at once (default: as resources allow)")
    p.add_argument("--query_protocol", choices=CHOICES["query_protocol"],
                   help="every text a query (per_text, the released metric) or one query per class, its texts "
                        "averaged (per_class) [default: the study file's, else per_text]; a per_class study's "
                        "default folder ends in -per_class")
    p.add_argument("--search", choices=("optuna",), help="search the study's 'search' space (validated protocol only)")
    p.add_argument("--trials", type=int, default=8, help="trials of a search, per dataset (default 8)")
    p.add_argument("--report_only", action="store_true", help="write the tables and plots from the run folders; run nothing")
    return p


def _check_installed(search: str | None) -> None:
    """Refuse, in one line saying what to install, a study whose trials need Ray Tune (and Optuna for
    --search) where they are not installed; both come with the package's `study` extra."""
    missing = [name for name, needed in (("ray", True), ("optuna", search)) if needed and not find_spec(name)]
    if missing:
        raise UserError(f"zscrgan study runs its trials with Ray Tune{' and Optuna' if search else ''}; "
                        f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed: pip install 'zscrgan[study]' "
                        "(or, in a checkout, pip install -r requirements-study.txt)")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    args.command = sys.argv if argv is None else ["zscrgan", "study", *argv]
    try:
        _check_resources(args)
        args.study = find_shipped(args.study, STUDY_DIR, "study")
        study = load_study(args.study, Path(args.data_root), args.dataset, args.query_protocol)
        if not args.report_only:
            _check_installed(args.search)
        if args.search:
            if study.protocol != "validated" or not study.search:
                raise UserError(f"{args.study}: --search needs 'protocol: validated' and a 'search' space in the "
                                "study file (a search never selects on the unseen classes)")
            if args.trials < 1:
                raise UserError("--trials must be at least 1")
        suffix = "" if study.query_protocol == "per_text" else f"-{study.query_protocol}"
        folder = args.output_dir or Path("runs") / "studies" / f"{study.name}{suffix}"
        problem = not_a_folder(folder)
        if problem:
            raise UserError(f"{'--output_dir ' if args.output_dir else ''}{folder}: {problem}; a study folder is a folder")
        folder.mkdir(parents=True, exist_ok=True)
        write_text_atomic(folder / "study.yaml", Path(args.study).read_text(encoding="utf-8"))
        if DEMO in study.datasets:  # made once here, not by concurrent trials
            from zscrgan.data.demo import DemoSpec, ensure_demo
            ensure_demo(Path(args.data_root) / DEMO, DemoSpec(**load_config(DEMO, overrides=study.config).demo))
    except UserError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    interrupted, chosen, search_failed = False, None, 0
    if not args.report_only and (args.search or pending(study, folder)):
        try:
            own_ray = _start_ray(args)
        except UserError as e:
            print(f"error: {one_line(e)}", file=sys.stderr)
            return 2
        try:
            if args.search:
                chosen, search_failed = run_search(study, folder, args)
            else:
                run_grid(study, folder, args)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            if own_ray:
                import ray
                ray.shutdown()
        if chosen is not None:
            write_text_atomic(folder / "search.json", json.dumps(chosen, indent=1))
    from zscrgan.report import write_study_tables

    try:
        statuses = write_study_tables(study, folder, Path(args.data_root))
    except UserError as e:  # a finished trial's run folder that report cannot read
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    grid = ", ".join(f"{n} {s}" for s, n in statuses.items())
    if args.search:  # the search's own trials are in search.json and the table's search row
        grid = f"search: {'interrupted' if interrupted else 'done'}; the study's grid of variants and seeds: {grid}"
    print(f"\n{(folder / 'results.md').read_text(encoding='utf-8')}")
    print(f"study folder: {folder} | {time.perf_counter() - started:.0f} s | {grid}")
    print(f"tables: {folder / 'results.md'}, {folder / 'results.csv'}")
    if interrupted or (not args.search and (statuses.get("interrupted") or statuses.get("not started"))):
        print("not every trial has finished: run the same command again to continue", flush=True)
    elif args.search and statuses.get("finished", 0) < sum(statuses.values()):
        print("the grid's trials run with the same command without --search", flush=True)
    if interrupted:
        return 130
    failed = search_failed if args.search else 0 if args.report_only else statuses.get("failed", 0)
    if failed:
        where = "the search folder" if args.search else "the table's notes and each failed run folder"
        print(f"error: {failed} trial(s) failed; why is in {where} ({ERROR_FILE}, traceback.txt)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
