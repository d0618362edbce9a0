"""A readable summary of a released dataset folder: split sizes, dimensions, value ranges, chance level."""

import numpy as np

from zscrgan.data.release import Dataset
from zscrgan.metrics import chance_prec


def chance_prec_at_50(ds: Dataset) -> float:
    """Chance level of Prec@50 on the unseen classes.

    The expected precision of a random ranking of the unseen gallery: the mean, over unseen
    classes, of the class's share of that gallery (as `zscrgan.metrics.chance_prec` defines it).
    """
    gallery = np.repeat(ds.unseen, [len(ds.image[c]) for c in ds.unseen])
    return chance_prec(gallery, np.asarray(ds.unseen))


# Class names an `inspect` line lists per split before it says how many more there are.
SHOWN_NAMES = 12


def summarize(ds: Dataset, names: dict[int, str] | None = None) -> dict:
    """Split sizes, per-class counts (min/median/max), dimensions, value ranges and chance Prec@50;
    with `names` (class id -> name, as meta.json keeps them), each split's classes with their names."""
    splits = {}
    for split, ids in (("seen", ds.seen), ("unseen", ds.unseen)):
        splits[split] = {
            "classes": len(ids),
            "images": ds.n_images(ids),
            "texts": ds.n_texts(ids),
            "images_per_class": _spread([len(ds.image[c]) for c in ids]),
            "texts_per_class": _spread([len(ds.text[c]) for c in ids]),
        }
        if names:
            splits[split]["class_names"] = {str(c): names.get(c, "") for c in ids}
    classes = ds.seen + ds.unseen
    return {
        "name": ds.name,
        "image_dim": ds.image_dim,
        "text_dim": ds.text_dim,
        "splits": splits,
        "values": {
            "image": _value_range([ds.image[c] for c in classes]),
            "text": _value_range([ds.text[c] for c in classes]),
        },
        "chance_prec_at_50": chance_prec_at_50(ds),
    }


def format_summary(summary: dict) -> str:
    """The summary as a short table for the terminal."""
    splits = summary["splits"]
    lines = [
        f"dataset {summary['name']}: {splits['seen']['classes']} seen / {splits['unseen']['classes']} unseen classes",
        f"dimensions: image {summary['image_dim']}, text {summary['text_dim']}",
        f"{'split':<8}{'classes':>8}{'images':>9}  {'per class min/median/max':<26}{'texts':>8}"
        "  per class min/median/max",
    ]
    for split, s in splits.items():
        lines.append(f"{split:<8}{s['classes']:>8}{s['images']:>9}  {_fmt_spread(s['images_per_class']):<26}"
                     f"{s['texts']:>8}  {_fmt_spread(s['texts_per_class'])}")
    for split, s in splits.items():
        if "class_names" in s:
            shown = [f"{c} {name}".strip() for c, name in list(s["class_names"].items())[:SHOWN_NAMES]]
            more = len(s["class_names"]) - len(shown)
            lines.append(f"{split} classes: {', '.join(shown)}" + (f" and {more} more" if more > 0 else ""))
    for modality, v in summary["values"].items():
        lines.append(f"{modality} values: min {v['min']:.4g}, max {v['max']:.4g}, mean L2 norm {v['mean_norm']:.4g}")
    lines.append(f"chance Prec@50 on the unseen classes (random ranking): {summary['chance_prec_at_50']:.4f}")
    return "\n".join(lines)


def _spread(counts):
    return {"min": int(np.min(counts)), "median": float(np.median(counts)), "max": int(np.max(counts))}


def _fmt_spread(s):
    return f"{s['min']} / {s['median']:g} / {s['max']}"


def _value_range(matrices):
    return {
        "min": float(min(m.min() for m in matrices)),
        "max": float(max(m.max() for m in matrices)),
        "mean_norm": float(np.concatenate([np.linalg.norm(m, axis=1) for m in matrices]).mean()),
    }
