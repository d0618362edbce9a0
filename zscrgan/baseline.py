"""A linear reference for any dataset folder: ridge regression from text to image space.

    python -m zscrgan.baseline datasets/WIKI [--pairs item] [--alpha 1.0] [--input_scaling l2_sqrt_dim]
        [--query_protocol per_class]

The same model as `--method ridge` of training (zscrgan.methods.ridge), without a run folder.

Fitted on the seen classes only: every seen text is regressed onto its class's mean image vector
(`--pairs class_mean`, the default, for any dataset), or onto the image stored at the same position
in its class (`--pairs item`, for datasets of aligned image-text pairs such as Wikipedia, whose
converter keeps each class's items in file order). Then every unseen text is a query and its predicted image vector ranks the unseen gallery by cosine,
as training ranks it, scored with the same Prec@K / mAP@K / Top-1 code as training: a reference to read
a ZSCRGAN run's numbers against.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from sklearn.linear_model import Ridge

from zscrgan.data.release import load_dataset
from zscrgan.data.scaling import MODES, scale_modality
from zscrgan.errors import UserError
from zscrgan.flags import ArgumentParser
from zscrgan.metrics import chance_prec, retrieval_metrics


# Queries are ranked in chunks of this many rows, bounding the similarity matrix held at once.
QUERY_CHUNK = 4096


def rank_by_cosine(queries: np.ndarray, gallery: np.ndarray, k: int) -> np.ndarray:
    """Indices [Q, min(k, G)] of each query's most cosine-similar gallery rows, best first.

    In NumPy, so the reference runs without TensorFlow; it ranks as training's TensorFlow retrieval
    (`zscrgan.evaluate.top_k_cosine`) does, ties to the lower index.
    """
    def unit(x):
        return x / np.sqrt(np.maximum((x * x).sum(axis=1, keepdims=True), 1e-12))

    k = min(int(k), len(gallery))
    gallery_unit = unit(np.asarray(gallery, np.float32))
    queries = np.asarray(queries, np.float32)
    return np.concatenate([np.argsort(-(unit(queries[i:i + QUERY_CHUNK]) @ gallery_unit.T), axis=1, kind="stable")[:, :k]
                           for i in range(0, len(queries), QUERY_CHUNK)])


def regression_targets(image: dict, text: dict, seen, pairs: str) -> np.ndarray:
    """The image-space target of every seen text, in class then text order."""
    if pairs == "item":
        unequal = [c for c in seen if len(text[c]) != len(image[c])]
        if unequal:
            raise UserError(f"--pairs item needs as many texts as images per class; class {unequal[0]} has "
                            f"{len(text[unequal[0]])} texts and {len(image[unequal[0]])} images: use --pairs class_mean")
        return np.concatenate([image[c] for c in seen])
    return np.concatenate([np.repeat(image[c].mean(axis=0, keepdims=True), len(text[c]), axis=0) for c in seen])


def ridge_baseline(image: dict, text: dict, seen, unseen, alpha: float = 1.0, k: int = 50,
                   pairs: str = "class_mean", per_class: bool = False) -> dict:
    """Fit text -> image on `seen`, retrieve the `unseen` gallery; returns `retrieval_metrics` + chance.

    `per_class`: one query per unseen class, the mean of its texts (else every text is a query)."""
    x = np.concatenate([text[c] for c in seen])
    y = regression_targets(image, text, seen, pairs)
    model = Ridge(alpha=alpha).fit(x, y)
    if per_class:
        queries = model.predict(np.stack([np.asarray(text[c], np.float64).mean(axis=0) for c in unseen]))
        q_labels = np.asarray(list(unseen))
    else:
        queries = model.predict(np.concatenate([text[c] for c in unseen]))
        q_labels = np.concatenate([np.full(len(text[c]), c) for c in unseen])
    gallery = np.concatenate([image[c] for c in unseen])
    g_labels = np.concatenate([np.full(len(image[c]), c) for c in unseen])
    metrics = retrieval_metrics(q_labels, g_labels[rank_by_cosine(queries, gallery, k)])
    metrics["chance_prec"] = chance_prec(g_labels, q_labels)
    return metrics


def main(argv=None) -> int:
    p = ArgumentParser(prog="python -m zscrgan.baseline", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", help="a dataset folder in the released format")
    p.add_argument("--pairs", choices=("class_mean", "item"), default="class_mean",
                   help="regression target of a seen text: its class's mean image (default) or its own image")
    p.add_argument("--alpha", type=float, default=1.0, help="ridge penalty (default 1.0)")
    p.add_argument("--input_scaling", choices=MODES, default="none", help="as the config key of that name")
    p.add_argument("--top_k", type=int, default=50)
    p.add_argument("--query_protocol", choices=("per_text", "per_class"), default="per_text",
                   help="every unseen text a query (default), or one query per class: the mean of its texts")
    args = p.parse_args(argv)
    try:
        ds = load_dataset(args.folder)
        image = scale_modality(ds.image, ds.seen, args.input_scaling)
        text = scale_modality(ds.text, ds.seen, args.input_scaling)
        m = ridge_baseline(image, text, ds.seen, ds.unseen, args.alpha, args.top_k, args.pairs,
                           per_class=args.query_protocol == "per_class")
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    k = args.top_k
    print(f"ridge baseline on {ds.name} ({args.pairs} targets, alpha {args.alpha:g}, scaling {args.input_scaling}, "
          f"{args.query_protocol.replace('_', ' ')} queries): "
          f"unseen Prec@{k} {m['prec']:.4f} mAP@{k} {m['map']:.4f} Top-1 {m['top1']:.4f} "
          f"| chance Prec@{k} {m['chance_prec']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
