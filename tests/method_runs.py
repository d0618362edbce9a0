"""Shared checks of a comparison method inside the harness: tiny DEMO runs through main() and Run,
resume, and retrieval of a trained run."""

import json

import numpy as np

from main import main
from zscrgan.config import load_config
from zscrgan.data.release import load_dataset
from zscrgan.evaluate import RetrievalSet
from zscrgan.metrics import retrieval_metrics
from zscrgan.retrieve import load_run
from zscrgan.run import Run

# A DEMO small enough for seconds: 8 classes (6 seen), 16-d images, 8-d text.
TINY_DEMO = {"n_classes": 8, "n_seen": 6, "images_per_class": 12, "texts_per_class": 3, "image_dim": 16,
             "text_dim": 8, "latent_dim": 4, "hidden_dim": 8}


def records(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in ("seconds", "retrieval_file")} for line in lines]


def main_run(tmp_path, method: str, own: dict, rounds: int = 2):
    """`python main.py --method <method> --rounds <rounds>` on the tiny DEMO with `own` method keys."""
    import yaml
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({"demo": TINY_DEMO, method: own}))
    out = tmp_path / "run"
    rc = main(["--method", method, "--rounds", str(rounds), "--config", str(config), "--data_root", str(tmp_path),
               "--results_root", str(tmp_path / "res"), "--output_dir", str(out)])
    return rc, out


def run_object(tmp_path, name, method: str, own: dict, rounds: int):
    cfg = load_config("DEMO", overrides={"method": method, "rounds": rounds, "demo": TINY_DEMO, method: own})
    return Run(cfg, tmp_path / name, tmp_path / "datasets", None, log=lambda *a: None)


def resume_repeats_uninterrupted(tmp_path, method: str, own: dict) -> None:
    whole = run_object(tmp_path, "whole", method, own, 2)
    whole.start()
    whole.train()
    part = run_object(tmp_path, "part", method, own, 1)
    part.start()
    part.train()
    again = run_object(tmp_path, "part", method, own, 2)
    assert again.resume()
    again.train()
    assert records(tmp_path / "part") == records(tmp_path / "whole")
    assert len(records(tmp_path / "whole")) == 2


def retrieval_of_trained_run(run_dir, data_root):
    """(Prec@50 of the unseen classes searched through zscrgan.retrieve, the run's own summary)."""
    ds = load_dataset(data_root / "DEMO")
    rset = RetrievalSet.from_classes(ds.image, ds.text, ds.unseen)
    retriever = load_run(run_dir, data_root=data_root)
    _, idx = retriever.search(rset.texts, rset.images, k=50)
    prec = retrieval_metrics(rset.query_labels, rset.gallery_labels[idx])["prec"]
    return prec, json.loads((run_dir / "summary.json").read_text())
