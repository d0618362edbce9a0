"""Where a trained run wins and loses: its selected weights scored in every space it offers.

    python -m zscrgan.diagnose RUN_DIR [--draws 20] [--seed 0] [--data_root datasets] [--json FILE]
    zscrgan diagnose RUN_DIR

On the run's own unseen classes (its dataset, split and input scaling), Prec@K / mAP@K / Top-1 of:

- the method's retrieval (as training evaluates it: queries `embed_queries`, gallery `embed_gallery`),
  with 1 noise draw per query and with `--draws` draws averaged;
- for a method that predicts image vectors (ZSCRGAN's generator, the generative baselines, the ridge
  map): those predictions against the raw gallery images, with 1 and with `--draws` draws;
- two upper bounds with perfect queries, each unseen class's true mean image: in the method's gallery
  space (ZSCRGAN: CSEM(mean image) against CSEM(image)) and in the raw image space;
- the ridge reference fitted on the run's training classes.

It also gives, per unseen class, the cosine between the class's mean prediction (all its texts,
`--draws` draws each) and its true mean image. Prints a table and writes JSON (default
RUN_DIR/diagnosis.json, atomically); nothing else in the run folder changes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from zscrgan.tf_start import start_tensorflow

tf = start_tensorflow()

from zscrgan.atomic import write_text_atomic  # noqa: E402
from zscrgan.cli import DATA_ROOT_ENV  # noqa: E402
from zscrgan.errors import UserError, one_line  # noqa: E402
from zscrgan.evaluate import RetrievalSet, in_chunks  # noqa: E402
from zscrgan.metrics import chance_prec, retrieval_metrics  # noqa: E402
from zscrgan.search import search  # noqa: E402

MAX_DRAWS = 1000


def class_means(images: np.ndarray, labels: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """The mean image vector [len(classes), I] of each class, in `classes` order."""
    return np.stack([images[labels == c].astype(np.float64).mean(axis=0) for c in classes]).astype(np.float32)


def score(queries, query_labels, gallery, gallery_labels, k: int) -> dict:
    """Prec@K / mAP@K / Top-1 of queries ranking the gallery by cosine (vectors already in one space)."""
    _, rows = search(np.asarray(queries, np.float32), np.asarray(gallery, np.float32), k)
    m = retrieval_metrics(np.asarray(query_labels), np.asarray(gallery_labels)[rows])
    return {"prec": m["prec"], "map": m["map"], "top1": m["top1"]}


def upper_bounds(rset: RetrievalSet, k: int, embed_gallery=None) -> dict:
    """Perfect queries: each class's true mean image, as one query per class, against the gallery, in
    the raw image space and (with `embed_gallery`) in the method's gallery space."""
    classes = np.unique(rset.query_labels)
    means = class_means(rset.images, rset.gallery_labels, classes)
    out = {"upper_raw": score(means, classes, rset.images, rset.gallery_labels, k)}
    if embed_gallery is not None:
        gallery = in_chunks(embed_gallery, rset.images).numpy()
        out["upper_method_space"] = score(in_chunks(embed_gallery, means).numpy(), classes, gallery,
                                          rset.gallery_labels, k)
    return out


def mean_cosines(predicted: np.ndarray, query_labels: np.ndarray, rset: RetrievalSet) -> dict:
    """{class: cosine between the mean of its queries' predictions and its true mean image}."""
    classes = np.unique(query_labels)
    true = class_means(rset.images, rset.gallery_labels, classes).astype(np.float64)
    out = {}
    for c, t in zip(classes, true):
        p = predicted[query_labels == c].astype(np.float64).mean(axis=0)
        out[int(c)] = float(p @ t / max(np.linalg.norm(p) * np.linalg.norm(t), 1e-12))
    return out


def ridge_on(training, rset: RetrievalSet, k: int, alpha: float = 1.0) -> dict:
    """The ridge reference (class-mean targets) fitted on the training classes, scored on `rset`."""
    from sklearn.linear_model import Ridge

    from zscrgan.baseline import regression_targets

    x = np.concatenate([training.text[c] for c in training.classes])
    y = regression_targets(training.image, training.text, training.classes, "class_mean")
    predicted = Ridge(alpha=alpha).fit(x, y).predict(rset.texts)
    return score(predicted, rset.query_labels, rset.images, rset.gallery_labels, k)


def diagnose(run_dir: Path, data_root: Path, draws: int = 20, seed: int = 0) -> dict:
    """The diagnosis of a run folder's selected weights (see the module docstring), as a dict."""
    from zscrgan.config import load_run_config
    from zscrgan.retrieve import load_run
    from zscrgan.run import prepare_data

    run_dir, data_root = Path(run_dir), Path(data_root)
    method = load_run(run_dir, data_root).method
    cfg = load_run_config(run_dir)
    data = prepare_data(cfg, data_root)
    rset, k = data.test, cfg.top_k

    def embedded(fn, n):
        method.reset_noise(seed)
        return in_chunks(lambda rows: fn(rows, n), rset.texts).numpy()

    spaces = {}
    gallery = in_chunks(method.embed_gallery, rset.images).numpy()
    for n in sorted({1, draws}):
        spaces[f"method, {n} draw(s)"] = score(embedded(method.embed_queries, n), rset.query_labels, gallery,
                                               rset.gallery_labels, k)
    cosines = None
    if method.generate(tf.constant(rset.texts[:1]), 1) is not None:
        for n in sorted({1, draws}):
            predicted = embedded(method.generate, n)
            spaces[f"predicted image vectors, {n} draw(s)"] = score(predicted, rset.query_labels, rset.images,
                                                                 rset.gallery_labels, k)
        cosines = mean_cosines(predicted, rset.query_labels, rset)
    bounds = upper_bounds(rset, k, method.embed_gallery)
    spaces["upper bound, method's gallery space"] = bounds["upper_method_space"]
    spaces["upper bound, raw image space"] = bounds["upper_raw"]
    spaces["ridge reference (same split)"] = ridge_on(data.training, rset, k)
    return {"run_dir": str(run_dir), "method": cfg.method, "dataset": cfg.dataset, "top_k": k, "draws": draws,
            "seed": seed, "query_protocol": cfg.query_protocol,
            "chance_prec": chance_prec(rset.gallery_labels, rset.query_labels), "spaces": spaces,
            "mean_cosine_predicted_vs_true_mean": None if cosines is None else float(np.mean(list(cosines.values()))),
            "per_class_cosine": None if cosines is None else {str(c): v for c, v in cosines.items()}}


def format_table(d: dict) -> str:
    k = d["top_k"]
    rows = [f"diagnosis of {d['run_dir']} ({d['method']} on {d['dataset']}, unseen classes, "
            f"{d['query_protocol'].replace('_', ' ')} queries; chance Prec@{k} {d['chance_prec']:.4f})",
            "", f"| retrieval | Prec@{k} | mAP@{k} | Top-1 |", "|---|---|---|---|"]
    rows += [f"| {name} | {m['prec']:.4f} | {m['map']:.4f} | {m['top1']:.4f} |" for name, m in d["spaces"].items()]
    if d["mean_cosine_predicted_vs_true_mean"] is not None:
        cos = d["per_class_cosine"].values()
        rows += ["", f"cosine of each unseen class's mean prediction ({d['draws']} draws per text) with its true mean "
                     f"image: mean {d['mean_cosine_predicted_vs_true_mean']:.3f}, min {min(cos):.3f}, max {max(cos):.3f}"]
    return "\n".join(rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m zscrgan.diagnose", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder written by training (any method)")
    p.add_argument("--draws", type=int, default=20, help="noise draws averaged per query in the many-draw rows (default 20)")
    p.add_argument("--seed", type=int, default=0, help="seed of the query noise (default 0)")
    p.add_argument("--data_root", default=os.environ.get(DATA_ROOT_ENV) or "datasets",
                   help=f"folder holding the run's dataset folder (default: ${DATA_ROOT_ENV} if set, else ./datasets)")
    p.add_argument("--json", metavar="FILE", help="where the JSON goes (default: RUN_DIR/diagnosis.json)")
    args = p.parse_args(argv)
    try:
        if not 1 <= args.draws <= MAX_DRAWS:
            raise UserError(f"--draws: must be between 1 and {MAX_DRAWS}, got {args.draws}")
        if args.seed < 0:
            raise UserError(f"--seed: must be >= 0, got {args.seed}")
        out = Path(args.json) if args.json else Path(args.run_dir) / "diagnosis.json"
        if not out.parent.is_dir():
            raise UserError(f"{out}: folder {out.parent} does not exist")
        if out.exists() and not out.is_file():
            raise UserError(f"{out}: exists and is not a regular file")
        result = diagnose(Path(args.run_dir), Path(args.data_root), args.draws, args.seed)
        write_text_atomic(out, json.dumps(result, indent=1))
    except UserError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    print(format_table(result))
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
