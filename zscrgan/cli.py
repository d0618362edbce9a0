"""The `zscrgan` command: train a model, and the tools around it, as subcommands.

`zscrgan train --help` shows the training examples (TRAIN_DOC below) and every config flag.
`python main.py [flags]` in a checkout is `zscrgan train [flags]`. Datasets, runs and retrieval files
are found and written relative to the current folder unless flags say otherwise.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import signal
import sys
import threading
from pathlib import Path

DATA_ROOT_ENV = "ZSCRGAN_DATA_ROOT"
TRAIN_DOC = """Train ZSCRGAN on a dataset's seen classes and retrieve unseen-class images from their text.

    zscrgan train                           # the built-in demo dataset (made on first use)
    zscrgan train --dataset CUB             # configs/default.yaml + configs/CUB.yaml, datasets/CUB/
    zscrgan train --dataset CUB --mm_reg_coeff 1.0 --rounds 300 --time_budget 60
    zscrgan train --resume runs/CUB/<run>   # continue a run from its last checkpoint
    zscrgan train --dataset CUB --protocol validated --seeds 0 1 2   # mean +- std over seeds
    zscrgan train --evaluate runs/CUB/<run> --eval_draws 10          # re-score the selected weights

Every key of configs/default.yaml is also a flag (--key value). The defaults shown are those the given
--dataset (DEMO if none) and --config would use, each with the file that sets it.
"""


def _shown(value) -> str:
    """A default as it is written in YAML and on the command line."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def _data_root_default() -> str:
    return os.environ.get(DATA_ROOT_ENV) or "datasets"


def build_parser(defaults: dict, meanings: dict, prog: str | None = None,
                 sources: dict | None = None) -> argparse.ArgumentParser:
    """The train command's flags: its own, then one per config key (dotted for nested keys).

    `defaults` are the values the help shows, `sources` (optional) the file that set each.
    """
    from zscrgan.config import CHOICES
    from zscrgan.flags import ArgumentParser

    p = ArgumentParser(prog=prog, description=TRAIN_DOC, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset",
                   help="dataset folder name under --data_root; configs/<DATASET>.yaml applies if it exists "
                        "[default: DEMO]")
    p.add_argument("--config", metavar="FILE",
                   help="a YAML file of config keys, or the name of one shipped in configs/ (e.g. demo_cub_sizes), "
                        "applied over configs/<DATASET>.yaml")
    p.add_argument("--profile", metavar="NAME",
                   help="a named profile shipped in configs/profiles/ (docs/beyond.md), applied over "
                        "configs/<DATASET>.yaml and under --config")
    p.add_argument("--time_budget", type=float, metavar="MINUTES",
                   help="stop before a round would end past this many minutes (the first round always runs)")
    p.add_argument("--data_root", metavar="DIR", default=_data_root_default(),
                   help=f"folder holding the dataset folders [default: ${DATA_ROOT_ENV} if set, else ./datasets]")
    p.add_argument("--results_root", metavar="DIR", default="retrieved_res",
                   help="where <DATASET>_res/acc<score>.pkl files go [default: ./retrieved_res]")
    p.add_argument("--output_dir", metavar="DIR",
                   help="run folder, new or empty [default: ./runs/<DATASET>/<time>-<label>-seed<seed>]")
    p.add_argument("--name", metavar="LABEL",
                   help="label in the default run folder name [default: cfg<hash of the config without the seed>]")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    p.add_argument("--evaluate", metavar="RUN_DIR",
                   help="evaluate the selected round's weights of RUN_DIR (with --eval_draws N per query)")
    p.add_argument("--seeds", type=int, nargs="+", metavar="SEED",
                   help="one run per seed (folders seed<k> under the output folder), then mean +- std")
    p.add_argument("--print_config", action="store_true",
                   help="print the resolved config (defaults, dataset file, --config, flags) and exit")
    groups = {"": p.add_argument_group(
        "config keys (configs/default.yaml; a flag overrides the dataset's file and --config)")}
    sources = sources or {}
    for name, default in defaults.items():
        section = name.rpartition(".")[0]
        if section not in groups:
            groups[section] = p.add_argument_group(f"{section}.* config keys")
        choices = CHOICES.get(name) or (("true", "false") if isinstance(default, bool) else None)
        metavar = "{%s}" % ",".join(choices) if choices else type(default).__name__.upper()
        where = f", from {sources[name]}" if name in sources else ""
        shown = f"{meanings.get(name, '')} [default: {_shown(default)}{where}]"
        groups[section].add_argument(f"--{name}", dest=f"cfg_{name}", metavar=metavar, help=shown.replace("%", "%%"))
    return p


def _run_class(cfg):
    """zscrgan.run.Run, imported (with TensorFlow, its kernels chosen by `cfg.deterministic`) only once
    the arguments are known to be good."""
    from zscrgan.tf_start import start_tensorflow

    start_tensorflow(cfg.deterministic)
    from zscrgan.run import Run

    return Run


def train_one(cfg, run_dir: Path, args, overrides: dict, resume: bool = False, numbered: bool = False) -> dict:
    """One run (new, or resumed from run_dir); prints its outcome and returns its summary.

    `numbered`: run_dir is a default name, which gets a suffix if taken; otherwise an existing run there is refused.
    """
    from zscrgan.errors import UserError

    run = _run_class(cfg)(cfg, run_dir, Path(args.data_root), Path(args.results_root))
    if resume and not run.resume():
        raise UserError(f"{run_dir}: not a training run folder (no config.yaml)")
    run.start(overrides, args.command, numbered=numbered)
    summary = run.train(args.time_budget)
    k = cfg.top_k
    test = summary["test_at_selected_round"]
    print(f"stopped: {summary['stopped']}")
    if test:
        label = "best round" if cfg.protocol == "released" else "round selected on validation classes"
        print(f"{label}: {summary['selected_round']} | unseen Prec@{k} {test['prec']:.4f} mAP@{k} {test['map']:.4f} "
              f"Top-1 {test['top1']:.4f} | chance Prec@{k} {summary['chance_prec']:.4f}")
    print(f"run folder: {summary['run_dir']}")
    files = summary["retrieval_files"]
    if files:  # the copies to the released layout: Run says what they did, in one line
        print(f"retrieval files: {len(files)} in {Path(summary['run_dir']) / Path(files[0]).parent}")
    return summary


def evaluate_one(cfg, run_dir: Path, args) -> None:
    """Re-evaluate a run's selected weights (e.g. with more noise draws per query) and print the metrics."""
    out = _run_class(cfg)(cfg, run_dir, Path(args.data_root), Path(args.results_root)).evaluate_best()
    k, t = cfg.top_k, out["test"]
    line = (f"round {out['round']} weights, {out['eval_draws']} draw(s) per query | unseen Prec@{k} {t['prec']:.4f} "
            f"mAP@{k} {t['map']:.4f} Top-1 {t['top1']:.4f}")
    if "val" in out:
        line += f" | val Prec@{k} {out['val']['prec']:.4f}"
    print(line)
    print(f"written: {run_dir / ('evaluation-draws%d.json' % out['eval_draws'])}")


def train_seeds(cfg, base: Path, seeds, args, overrides: dict) -> dict:
    """One run per seed under base/seed<k>, then mean and standard deviation across them; returns the
    last run's summary."""
    from zscrgan.atomic import write_text_atomic
    from zscrgan.report import aggregate, format_report, read_run

    done = []
    for seed in seeds:
        cfg.seed = seed
        summary = train_one(cfg, base / f"seed{seed}", args, overrides)
        done.append(read_run(base / f"seed{seed}"))
        if summary["stopped"].startswith("interrupted"):
            break
    print(format_report(done))
    write_text_atomic(base / "seeds_summary.json",
                      json.dumps({"seeds": [r["seed"] for r in done], "aggregate": aggregate(done)}, indent=1))
    return summary


def _check_flags(args) -> None:
    """Refuse flags that contradict each other or name a folder where a file is (UserError, one line)."""
    from zscrgan.config import MAX_INT
    from zscrgan.errors import UserError, brief
    from zscrgan.files import not_a_folder, not_a_name

    budget = args.time_budget
    if budget is not None and not (math.isfinite(budget) and budget > 0):
        raise UserError(f"--time_budget must be a positive number of minutes, got {budget}")
    if args.seeds and args.cfg_seed is not None:
        raise UserError("give either --seed or --seeds, not both")
    if args.dataset is not None and (args.resume or args.evaluate):
        flag = "--resume" if args.resume else "--evaluate"
        raise UserError(f"--dataset with {flag}: the run folder's config.yaml names its dataset; drop --dataset")
    if args.config is not None and (args.resume or args.evaluate):
        flag = "--resume" if args.resume else "--evaluate"
        raise UserError(f"--config with {flag}: the run folder's config.yaml is its config; drop --config")
    if args.profile is not None and (args.resume or args.evaluate):
        flag = "--resume" if args.resume else "--evaluate"
        raise UserError(f"--profile with {flag}: the run folder's config.yaml is its config; drop --profile")
    for flag, name in (("--name", args.name), ("--dataset", args.dataset)):
        problem = name is not None and not_a_name(name)
        if problem:
            raise UserError(f"{flag} {brief(name)}: {problem}")
    if args.seeds:
        bad = next((s for s in args.seeds if not 0 <= s <= MAX_INT), None)
        if bad is not None:
            raise UserError(f"--seeds: {brief(bad)} is not a seed (an integer from 0 to {MAX_INT})")
        if len(set(args.seeds)) < len(args.seeds):
            raise UserError(f"--seeds: each seed once, got {brief(args.seeds)}")
    for flag, folder in (("--output_dir", args.output_dir), ("--results_root", args.results_root),
                         ("--data_root", args.data_root)):
        problem = folder is not None and not_a_folder(folder)
        if problem:
            raise UserError(f"{flag} {folder}: {problem}; give a folder")


# Exit status of a run stopped by Ctrl-C or SIGTERM: 128 + the signal's number, as a shell reports it.
EXIT_INTERRUPTED = {"Ctrl-C": 130, "SIGTERM": 143}


class Terminated(BaseException):
    """SIGTERM outside the training loop (loading data, compiling, writing): the command stops as
    Ctrl-C stops it (a BaseException, like KeyboardInterrupt, so no `except Exception` swallows it)."""


def _raise_terminated(signum, frame):
    raise Terminated()


def interrupted_status(stopped: str) -> int | None:
    """The exit status of a run whose summary's `stopped` is `stopped`: 130 or 143 if it was interrupted."""
    for cause, status in EXIT_INTERRUPTED.items():
        if stopped.startswith(f"interrupted ({cause})"):
            return status
    return None


def dataset_recommendation(args) -> dict:
    """load_config's arguments for what the dataset folder's meta.json recommends (input scaling)."""
    from zscrgan.data.scaling import recommended_scaling

    folder = Path(args.data_root) / args.dataset
    scaling = recommended_scaling(folder)
    if scaling is None:
        return {}
    return {"recommended": {"input_scaling": scaling}, "recommended_source": str(folder / "meta.json")}


def _help_defaults(argv: list) -> tuple[dict, dict]:
    """What `--help` shows for the --dataset, --profile, --config and --data_root in `argv`: each config
    key's value as a run would resolve it, and the file that set it (configs/default.yaml, the dataset
    folder's meta.json, configs/<DATASET>.yaml, --profile or --config)."""
    from zscrgan.config import (CHOICES, CONFIG_DIR, DEFAULT_FILE, PROFILE_DIR, find_shipped, flatten, load_config,
                                method_file, read_yaml, schema, to_plain)
    from zscrgan.flags import ArgumentParser

    pre = ArgumentParser(add_help=False)
    pre.add_argument("--dataset", default="DEMO")
    pre.add_argument("--config")
    pre.add_argument("--profile")
    pre.add_argument("--data_root", default=_data_root_default())
    args, _ = pre.parse_known_args(argv)
    config = args.config and find_shipped(args.config, CONFIG_DIR, "--config")
    profile = args.profile and find_shipped(args.profile, PROFILE_DIR, "--profile")
    recommendation = dataset_recommendation(args)
    cfg = load_config(args.dataset, config, profile=profile, **recommendation)
    resolved = flatten(to_plain(cfg))
    # Every key, `dataset` aside; another method's own keys show that method's defaults.
    values = {key: resolved.get(key, default) for key, default in flatten(schema()).items()}

    def shipped_name(path: Path) -> str:
        return f"configs/{path.relative_to(CONFIG_DIR)}"

    layers = [(shipped_name(DEFAULT_FILE), read_yaml(DEFAULT_FILE))]
    for method in CHOICES["method"]:  # each method's file sets its own keys; the run's method's file, more
        layer = read_yaml(method_file(method))
        layer.pop("choices", None)
        layers.append((shipped_name(method_file(method)), layer if method == cfg.method else {method: layer.get(method, {})}))
    if recommendation:
        layers.append((recommendation["recommended_source"], recommendation["recommended"]))
    dataset_file = CONFIG_DIR / f"{args.dataset}.yaml"
    if dataset_file.is_file():
        layers.append((shipped_name(dataset_file), read_yaml(dataset_file)))
    for given in (profile, config):
        if given:
            layers.append((shipped_name(given) if given.is_relative_to(CONFIG_DIR) else str(given), read_yaml(given)))
    sources, last = {}, {}
    for source, layer in layers:
        for key, value in flatten(layer).items():
            sources[key], last[key] = source, value
    # A value no listed file gave (a layer load_config has and this list lacks) is shown without a source.
    return values, {key: source for key, source in sources.items() if last[key] == values[key]}


def train_main(argv=None, prog: str | None = None) -> int:
    """`zscrgan train` (and `python main.py`): parse the flags, then train, resume or evaluate.

    Returns the exit status: 0 done (rounds or time budget), 2 bad input (one line on stderr), 130 Ctrl-C,
    143 SIGTERM (handled as Ctrl-C is: the round in flight is dropped, every file is complete).
    """
    if threading.current_thread() is not threading.main_thread():
        return _train_main(argv, prog)
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        return _train_main(argv, prog)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _train_main(argv, prog: str | None) -> int:
    import yaml

    from zscrgan.config import (CONFIG_DIR, PROFILE_DIR, all_key_meanings, find_shipped, flatten, load_config,
                                load_run_config, parse_flag_value, schema, to_plain, unflatten)
    from zscrgan.errors import UserError, one_line
    from zscrgan.provenance import default_run_name, new_folder

    defaults, sources = flatten(schema()), None
    given = sys.argv[1:] if argv is None else list(argv)
    if "-h" in given or "--help" in given:
        try:
            defaults, sources = _help_defaults(given)
        except UserError as e:
            print(f"error: {one_line(e)}", file=sys.stderr)
            return 2
    args = build_parser(defaults, all_key_meanings(), prog, sources).parse_args(argv)
    args.command = sys.argv if argv is None else [prog or "main.py", *argv]  # recorded in the run's provenance
    overrides = unflatten({k: parse_flag_value(getattr(args, f"cfg_{k}")) for k in defaults
                           if getattr(args, f"cfg_{k}") is not None})
    summary = None
    try:
        _check_flags(args)
        if args.config is not None:
            args.config = find_shipped(args.config, CONFIG_DIR, "--config")
        if args.profile is not None:
            args.profile = find_shipped(args.profile, PROFILE_DIR, "--profile")
        args.dataset = args.dataset or "DEMO"
        if args.resume or args.evaluate:
            if args.resume and args.evaluate:
                raise UserError("give either --resume or --evaluate, not both")
            if args.seeds:
                raise UserError("--resume and --evaluate take one run folder; --seeds starts new runs")
            run_dir = Path(args.resume or args.evaluate)
            cfg = load_run_config(run_dir, overrides)
        else:
            recommendation = dataset_recommendation(args)
            cfg = load_config(args.dataset, args.config, overrides, profile=args.profile, **recommendation)
            if recommendation and not args.print_config and \
                    cfg.input_scaling == recommendation["recommended"]["input_scaling"] != "none":
                print(f"input_scaling {cfg.input_scaling}: as {recommendation['recommended_source']} recommends "
                      f"(--input_scaling none uses the features as given)")
        if args.print_config:
            print(yaml.safe_dump(to_plain(cfg), sort_keys=False), end="")
        elif args.resume:
            summary = train_one(cfg, run_dir, args, overrides, resume=True)
        elif args.evaluate:
            evaluate_one(cfg, run_dir, args)
        elif args.seeds:
            if args.output_dir:
                base = Path(args.output_dir)
            else:
                base = new_folder(Path("runs") / cfg.dataset / default_run_name(cfg, args.name, seeds=True))
            summary = train_seeds(cfg, base, args.seeds, args, overrides)
        else:
            run_dir = Path(args.output_dir or Path("runs") / cfg.dataset / default_run_name(cfg, args.name))
            summary = train_one(cfg, run_dir, args, overrides, numbered=not args.output_dir)
    except UserError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    except OSError as e:  # a disk problem the writers did not name themselves (a full or read-only disk)
        where = e.filename or "output"
        print(f"error: {one_line(f'{where}: {e.strerror or e}')}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C before training started (loading data, compiling)
        print("interrupted (Ctrl-C)", file=sys.stderr)
        return EXIT_INTERRUPTED["Ctrl-C"]
    except Terminated:
        print("interrupted (SIGTERM)", file=sys.stderr)
        return EXIT_INTERRUPTED["SIGTERM"]
    return (summary is not None and interrupted_status(summary["stopped"])) or 0


# Subcommands: (module, function, arguments put before the user's, imports TensorFlow, one-line help).
# Each module is imported only when its subcommand runs, so a tool never pays for another's imports.
COMMANDS = {
    "train": ("zscrgan.cli", "train_main", (), False, "train a model (the default flags run the demo)"),
    "report": ("zscrgan.report", "main", (), False, "mean +- std and Prec@K curves of finished runs"),
    "convert": ("zscrgan.data.__main__", "main", ("convert",), False,
                "convert a public feature release, or your own arrays, into a dataset folder"),
    "inspect": ("zscrgan.data.__main__", "main", ("inspect",), False, "validate a dataset folder and summarise it"),
    "baseline": ("zscrgan.baseline", "main", (), False, "the ridge-regression reference on a dataset folder"),
    "study": ("zscrgan.study", "main", (), False, "many runs over datasets, variants and seeds"),
    "retrieve": ("zscrgan.retrieve", "main", (), True,
                 "rank a gallery of image features for text queries with a trained run (or save and search an index)"),
    "diagnose": ("zscrgan.diagnose", "main", (), True,
                 "score a trained run in every space it offers, with upper bounds and the ridge reference"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: zscrgan COMMAND [flags]   (zscrgan COMMAND --help for its flags)", "", "commands:"]
    lines += [f"  {name:<{width}}  {spec[-1]}" for name, spec in COMMANDS.items()]
    return "\n".join(lines)


def main(argv=None) -> int:
    """The `zscrgan` console script: dispatch to a subcommand's own parser."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from zscrgan import __version__
        print(f"zscrgan {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"error: {name}: unknown command (one of {', '.join(COMMANDS)})", file=sys.stderr)
        return 2
    module_name, function, prefix, uses_tensorflow, _ = COMMANDS[name]
    if uses_tensorflow:
        from zscrgan.tf_start import start_tensorflow

        start_tensorflow()
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name != module_name:
            raise  # a missing dependency inside the module is a real fault, not an absent command
        print(f"error: {name}: not available in this version of zscrgan", file=sys.stderr)
        return 2
    entry = getattr(module, function)
    if name == "train":
        return entry(rest, prog="zscrgan train")
    if module_name == "zscrgan.data.__main__":  # its subcommands name themselves: usage reads "zscrgan convert ..."
        return entry([*prefix, *rest], prog="zscrgan")
    return entry([*prefix, *rest])


def exit_status(status: int) -> int:
    """`status`, for a command-line entry point to exit with; after a Ctrl-C or SIGTERM that left a phase's
    compiled call running (see `zscrgan.methods.base.off_main_thread`), the process ends here at once,
    every file already written, instead of waiting for that call on its way out."""
    base = sys.modules.get("zscrgan.methods.base")
    return base.exit_leaving_workers(status) if base is not None else status


def console() -> int:
    """The installed `zscrgan` command."""
    return exit_status(main())


if __name__ == "__main__":
    sys.exit(console())
