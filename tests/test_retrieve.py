"""Searching a user's gallery with a trained run: the command, the Python API, the run's input scaling,
the same ranking as training-time evaluation, and one clear line for every bad .npy input."""

import json
import shutil

import numpy as np
import pytest
import yaml

from zscrgan.config import load_config
from zscrgan.data.release import load_dataset
from zscrgan.data.scaling import scaling_record
from zscrgan.evaluate import RetrievalSet, evaluate
from zscrgan.metrics import retrieval_metrics
from zscrgan.retrieve import Retriever, load_run, main
from zscrgan.run import SCALING_FILE, Run


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A one-round demo run (short phases), and the demo's unseen classes as a user's .npy files."""
    tmp = tmp_path_factory.mktemp("retrieve")
    cfg = load_config("DEMO", overrides={"rounds": 1, "e_step_iters": 2, "m_step_iters": 2})
    run = Run(cfg, tmp / "run", tmp / "datasets", tmp / "results", log=lambda *_: None)
    run.start()
    run.train()
    ds = load_dataset(tmp / "datasets" / "DEMO")
    rset = RetrievalSet.from_classes(ds.image, ds.text, ds.unseen)
    np.save(tmp / "texts.npy", rset.texts)
    np.save(tmp / "images.npy", rset.images)
    return tmp, rset


def cli(tmp, *extra, queries="texts.npy", gallery="images.npy", out="ranked.npz"):
    return main([str(tmp / "run"), "--queries", str(tmp / queries), "--gallery", str(tmp / gallery),
                 "--out", str(tmp / out), *extra])


def test_command_writes_indices_and_scores_best_first(trained, capsys):
    tmp, rset = trained
    assert cli(trained[0], "--top_k", "20", "--chunk_rows", "100") == 0
    assert "top 20 written to" in capsys.readouterr().out
    with np.load(tmp / "ranked.npz") as f:
        indices, scores = f["indices"], f["scores"]
    assert indices.shape == scores.shape == (len(rset.texts), 20)
    assert indices.dtype == np.int64 and scores.dtype == np.float32
    assert np.all(np.diff(scores, axis=1) <= 0) and np.all(np.abs(scores) <= 1 + 1e-6)
    assert all(len(set(row)) == 20 for row in indices.tolist())
    assert not list(tmp.glob(".ranked.npz*"))  # written atomically, no debris


def test_api_equals_the_command_and_a_brute_force_ranking(trained):
    tmp, rset = trained
    assert cli(tmp, "--top_k", "30", "--seed", "5") == 0
    with np.load(tmp / "ranked.npz") as f:
        indices, scores = f["indices"], f["scores"]
    run = load_run(tmp / "run")
    api_scores, api_indices = run.search(rset.texts, np.load(tmp / "images.npy", mmap_mode="r"), k=30, seed=5)
    assert np.array_equal(api_indices, indices) and np.array_equal(api_scores, scores)
    q, g = run.embed_texts(rset.texts, seed=5), run.embed_images(rset.images)
    sims = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (g / np.linalg.norm(g, axis=1, keepdims=True)).T
    assert np.allclose(scores, -np.sort(-sims, axis=1)[:, :30], atol=1e-5)
    assert (np.argsort(-sims, axis=1, kind="stable")[:, :30] == indices).mean() > 0.99  # float32 near-ties


def test_seed_fixes_the_query_noise(trained):
    tmp, rset = trained
    run = load_run(tmp / "run")
    assert np.array_equal(run.embed_texts(rset.texts, seed=1), run.embed_texts(rset.texts, seed=1))
    assert not np.allclose(run.embed_texts(rset.texts, seed=1), run.embed_texts(rset.texts, seed=2))
    three = run.embed_texts(rset.texts, seed=1, draws=3)
    run.method.reset_noise(1)
    singles = [run.method.trainer._embed_query_once(rset.texts).numpy() for _ in range(3)]
    assert np.allclose(three, np.mean(singles, axis=0), atol=1e-6)


def test_same_ranking_as_training_time_evaluation(trained):
    tmp, rset = trained
    run = load_run(tmp / "run")
    run.method.reset_noise(3)
    metrics, retrieved = evaluate(run.method, rset, 50)
    _, indices = run.search(rset.texts, rset.images, k=50, seed=3)
    assert np.array_equal(rset.gallery_labels[indices], retrieved)
    assert retrieval_metrics(rset.query_labels, rset.gallery_labels[indices])["prec"] == metrics["prec"]


def test_run_records_its_scaling_and_retrieval_applies_it(trained, tmp_path):
    tmp, rset = trained
    ds = load_dataset(tmp / "datasets" / "DEMO")
    assert json.loads((tmp / "run" / SCALING_FILE).read_text()) == scaling_record(ds.image, ds.text, ds.seen, "none")
    # A seen_rms run folder from before the scaling was recorded: factors recomputed from its dataset.
    old = tmp_path / "old_run"
    shutil.copytree(tmp / "run", old)
    (old / SCALING_FILE).unlink()
    cfg = yaml.safe_load((old / "config.yaml").read_text())
    (old / "config.yaml").write_text(yaml.safe_dump({**cfg, "input_scaling": "seen_rms"}))
    scaled = load_run(old, data_root=tmp / "datasets")
    want = scaling_record(ds.image, ds.text, ds.seen, "seen_rms")
    assert scaled.scaling == want and want["image_factor"] != 1.0
    plain = load_run(tmp / "run")
    assert np.allclose(scaled.embed_images(rset.images[:7]),
                       plain.embed_images(rset.images[:7] * want["image_factor"]), atol=1e-6)
    assert np.allclose(scaled.embed_texts(rset.texts[:7]),
                       plain.embed_texts(rset.texts[:7] * want["text_factor"]), atol=1e-6)


def test_retriever_reports_the_run_dimensions(trained):
    run = load_run(trained[0] / "run")
    assert isinstance(run, Retriever) and (run.text_dim, run.image_dim) == (64, 256)


def bad_input(problem: str, dim: int):
    """(array, or raw bytes, and the message expected) for one problem with a file of `dim`-d rows."""
    return {
        "wrong dimension": (np.ones((4, dim + 1), np.float32), f"rows of dimension {dim + 1}, but the run's model takes {dim}-d"),
        "NaN": (np.full((4, dim), np.nan, np.float32), "NaN or infinite values"),
        "not 2-D": (np.ones(dim, np.float32), "must be a 2-D array"),
        "not float": (np.ones((4, dim), np.int64), "must hold floating-point numbers, got int64"),
        "no rows": (np.ones((0, dim), np.float32), "has no rows"),
        "objects": (np.array([[None]], object), "not a readable .npy array"),
        "not npy": (b"id,feature\n1,0.5\n", "not a readable .npy array"),
    }[problem]


@pytest.mark.parametrize("problem", ["wrong dimension", "NaN", "not 2-D", "not float", "no rows", "objects", "not npy"])
@pytest.mark.parametrize("which, dim", [("queries", 64), ("gallery", 256)])
def test_bad_npy_input_is_one_line_and_exit_status_2(trained, problem, which, dim, capsys):
    tmp, _ = trained
    content, message = bad_input(problem, dim)
    bad = tmp / f"bad_{which}.npy"
    if isinstance(content, bytes):
        bad.write_bytes(content)
    else:
        np.save(bad, content, allow_pickle=True)
    assert cli(tmp, **{which: bad.name}) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"error: {bad}: ") and message in err, err
