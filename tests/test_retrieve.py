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
    metrics, rows = evaluate(run.method, rset, 50)
    _, indices = run.search(rset.texts, rset.images, k=50, seed=3)
    assert np.array_equal(indices, rows)
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
        "beyond float32": (np.full((4, dim), 1e300), "NaN or infinite values"),
        "not 2-D": (np.ones(dim, np.float32), "must be a 2-D array"),
        "not float": (np.ones((4, dim), np.int64), "must hold floating-point numbers, got int64"),
        "no rows": (np.ones((0, dim), np.float32), "has no rows"),
        "objects": (np.array([[None]], object), "not a readable .npy array"),
        "not npy": (b"id,feature\n1,0.5\n", "not a readable .npy array"),
    }[problem]


@pytest.mark.filterwarnings("error::RuntimeWarning")  # one line, no warning printed before it
@pytest.mark.parametrize("problem", ["wrong dimension", "NaN", "beyond float32", "not 2-D", "not float", "no rows",
                                     "objects", "not npy"])
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


def test_a_full_disk_while_writing_out_is_one_line_and_leaves_no_file(trained, monkeypatch, capsys):
    import errno
    import os

    tmp, _ = trained

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    assert cli(tmp, out="full.npz") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {tmp / 'full.npz'}: cannot write: No space left on device"], err
    assert not list(tmp.glob("*full.npz*"))  # no file, no temporary


# --- a saved gallery index, one query vector, bad shapes through the Python API, the rows file -----------
def test_a_saved_index_gives_the_rankings_of_embedding_the_gallery_again(trained, capsys):
    tmp, rset = trained
    ids = np.array([f"img{i:04d}" for i in range(len(rset.images))])
    np.save(tmp / "ids.npy", ids)
    assert main([str(tmp / "run"), "--gallery", str(tmp / "images.npy"), "--ids", str(tmp / "ids.npy"),
                 "--save_index", str(tmp / "index"), "--chunk_rows", "100"]) == 0
    assert "index of %d gallery rows" % len(rset.images) in capsys.readouterr().out
    assert cli(tmp, "--top_k", "25", "--chunk_rows", "100", out="again.npz") == 0
    assert main([str(tmp / "run"), "--index", str(tmp / "index"), "--queries", str(tmp / "texts.npy"),
                 "--out", str(tmp / "indexed.npz"), "--top_k", "25"]) == 0
    with np.load(tmp / "again.npz") as again, np.load(tmp / "indexed.npz") as indexed:
        assert np.array_equal(again["indices"], indexed["indices"])
        assert np.array_equal(again["scores"], indexed["scores"])  # bit for bit
        assert np.array_equal(indexed["ids"], ids[indexed["indices"]])
    embeddings = np.load(tmp / "index" / "embeddings.npy", mmap_mode="r")
    assert embeddings.shape[0] == len(rset.images) and np.allclose(np.linalg.norm(embeddings, axis=1), 1, atol=1e-6)
    meta = json.loads((tmp / "index" / "index.json").read_text())
    gallery_file = tmp / "images.npy"
    assert meta["run"]["run_dir"] == str((tmp / "run").resolve()) and meta["run"]["method"] == "zscrgan"
    assert meta["embed_dim"] == embeddings.shape[1] and meta["gallery"]["size"] == gallery_file.stat().st_size
    assert meta["gallery"]["sha256"] == __import__("hashlib").sha256(gallery_file.read_bytes()).hexdigest()
    # The Python API: the same index, opened again, and the run's own search agree.
    run = load_run(tmp / "run")
    from zscrgan.gallery_index import GalleryIndex
    scores, indices = run.search(rset.texts, GalleryIndex.open(tmp / "index"), k=25)
    assert np.array_equal(indices, np.load(tmp / "indexed.npz")["indices"])


def test_an_index_of_another_run_is_refused_in_one_line(trained, tmp_path, capsys):
    tmp, rset = trained
    other = tmp_path / "other"
    cfg = load_config("DEMO", overrides={"rounds": 1, "e_step_iters": 2, "m_step_iters": 2, "seed": 1})
    run = Run(cfg, other, tmp / "datasets", None, log=lambda *_: None)
    run.start()
    run.train()
    assert main([str(other), "--gallery", str(tmp / "images.npy"), "--save_index", str(tmp_path / "index")]) == 0
    capsys.readouterr()
    assert main([str(tmp / "run"), "--index", str(tmp_path / "index"), "--queries", str(tmp / "texts.npy"),
                 "--out", str(tmp_path / "ranked.npz")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"error: {tmp_path / 'index'}: an index of another run ({other}")
    assert not (tmp_path / "ranked.npz").exists()


def test_one_query_vector_is_one_query(trained):
    tmp, rset = trained
    run = load_run(tmp / "run")
    images = np.load(tmp / "images.npy", mmap_mode="r")
    scores, indices = run.search(rset.texts[3], images, k=10, seed=2)
    many_scores, many_indices = run.search(rset.texts[3:4], images, k=10, seed=2)
    assert indices.shape == (1, 10) and np.array_equal(indices, many_indices) and np.array_equal(scores, many_scores)
    assert np.array_equal(run.embed_images(rset.images[5]), run.embed_images(rset.images[5:6]))


@pytest.mark.parametrize("call, message", [
    (lambda run, r: run.search(r.texts[:, :10], r.images), "queries: must be [n, 64] text vectors (or one vector [64]), got shape ({q}, 10)"),
    (lambda run, r: run.search(r.texts[None], r.images), "queries: must be [n, 64] text vectors (or one vector [64]), got shape (1, {q}, 64)"),
    (lambda run, r: run.search(r.texts, r.images[:, :10]), "gallery: must be [rows, 256] image features (at least one row), got shape ({g}, 10)"),
    (lambda run, r: run.search(r.texts, r.images[0]), "gallery: must be [rows, 256] image features (at least one row), got shape (256,)"),
    (lambda run, r: run.embed_texts(["a", "b"]), "queries: not an array of numbers"),
    (lambda run, r: run.embed_images(np.ones((2, 3))), "images: must be [n, 256] image features (or one vector [256]), got shape (2, 3)"),
])
def test_bad_shapes_through_the_api_are_one_user_error(trained, call, message):
    from zscrgan.errors import UserError

    tmp, rset = trained
    with pytest.raises(UserError) as err:
        call(load_run(tmp / "run"), rset)
    message = message.format(q=len(rset.texts), g=len(rset.images))
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_retrieval_files_have_their_gallery_rows_beside_them(trained):
    from zscrgan.data.safe_pickle import load_pickle
    from zscrgan.run import retrieval_rows_file

    tmp, rset = trained
    pickles = sorted((tmp / "run" / "retrieved").glob("acc*.pkl"))
    assert pickles
    for pickle_file in pickles:
        rows = np.load(retrieval_rows_file(pickle_file))
        assert rows.dtype == np.int64 and rows.shape == (len(rset.query_labels), 50)
        records = load_pickle(pickle_file)
        assert [list(r.values())[0] for r in records] == rset.gallery_labels[rows].tolist()
        assert [list(r)[0] for r in records] == rset.query_labels.tolist()


def test_save_index_never_replaces_a_folder_that_is_not_an_index(trained, tmp_path, capsys):
    tmp, _ = trained
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    assert main([str(tmp / "run"), "--gallery", str(tmp / "images.npy"), "--save_index", str(tmp_path / "mine")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {tmp_path / 'mine'}: exists and is not a gallery index (which would be replaced); give a new folder"
    assert [p.name for p in tmp_path.iterdir()] == ["mine"] and (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_ids_of_another_length_are_one_line(trained, tmp_path, capsys):
    tmp, rset = trained
    np.save(tmp_path / "ids.npy", np.arange(3))
    assert main([str(tmp / "run"), "--gallery", str(tmp / "images.npy"), "--ids", str(tmp_path / "ids.npy"),
                 "--save_index", str(tmp_path / "index")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: {tmp_path / 'ids.npy'}: must be a 1-D array of {len(rset.images)} numbers or strings "
                   "(one per gallery row), got int64 of shape (3,)")
    assert not (tmp_path / "index").exists()
