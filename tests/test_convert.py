"""Converters: real side files give the real splits and texts; bad sources stop cleanly and write nothing."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import scipy.sparse

from helpers import make_wiki_folder, require_real_data
import zscrgan.atomic
from zscrgan.data.convert import META_FILE, convert_gazsl, convert_wikipedia, convert_xlsa17
from zscrgan.data.release import FILES, load_dataset
from zscrgan.data.safe_pickle import dump_pickle, load_pickle
from zscrgan.errors import UserError

REPO = Path(__file__).resolve().parents[1]
WIKI_COUNTS = [172, 360, 340, 333, 267, 236, 237, 185, 285, 451]


def _sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _meta(folder):
    return json.loads((folder / META_FILE).read_text())


def _row_ids(matrix):
    """Stand-in features carry their 0-based source row in column 0."""
    return matrix[:, 0].astype(np.int64).tolist()


# ---- Wikipedia, real release ----------------------------------------------------------------------


@pytest.mark.parametrize("text, text_dim", [("lda", 10), ("tfidf", 1000)])
def test_wikipedia_real(tmp_path, text, text_dim):
    out = make_wiki_folder(tmp_path, text=text)
    src = require_real_data("wikipedia_svcl")
    ds = load_dataset(out)
    assert sorted(ds.image) == list(range(1, 11))
    assert (ds.seen, ds.unseen) == ([2, 3, 5, 9, 10], [1, 4, 6, 7, 8])
    assert [len(ds.image[c]) for c in range(1, 11)] == WIKI_COUNTS
    assert [len(ds.text[c]) for c in range(1, 11)] == WIKI_COUNTS
    assert (ds.image_dim, ds.text_dim) == (128, text_dim)

    # Items keep file order, train before test: the first item of category 1 is the first list line with it.
    mat = scipy.io.loadmat(src / "raw_features.mat")
    cats = np.array([int(line.split("\t")[2]) for name in ("trainset_txt_img_cat.list", "testset_txt_img_cat.list")
                     for line in (src / name).read_text().splitlines()])
    images = np.concatenate([mat["I_tr"], mat["I_te"]])
    text_keys = ("T_tr", "T_te") if text == "lda" else ("T_tfidf_tr", "T_tfidf_te")
    texts = np.concatenate([mat[key] for key in text_keys])
    for c in (1, 10):
        np.testing.assert_allclose(ds.image[c], images[cats == c], rtol=1e-6)
        np.testing.assert_allclose(ds.text[c], texts[cats == c], rtol=1e-6, atol=1e-9)

    meta = _meta(out)
    assert meta["converter"] == "wikipedia" and meta["options"]["text"] == text
    assert {s["file"]: s["sha256"] for s in meta["sources"]} == {
        name: _sha256(src / name)
        for name in ("raw_features.mat", "trainset_txt_img_cat.list", "testset_txt_img_cat.list")}
    assert (meta["seen"], meta["unseen"]) == (ds.seen, ds.unseen)
    assert meta["images_per_class"] == {str(c): n for c, n in zip(range(1, 11), WIKI_COUNTS)}
    # SIFT histograms (and LDA proportions) are L1-normalised: the released model needs them scaled.
    assert meta["recommended_input_scaling"] == "l2_sqrt_dim"
    # The usual category names, said to be unchecked (the release has no names file).
    assert meta["class_names"]["1"] == "art & architecture" and meta["class_names"]["10"] == "warfare"
    assert len(meta["class_names"]) == 10 and "not checked" in meta["class_names_note"]


def test_wikipedia_seeded_split_is_reproducible_and_recorded(tmp_path):
    src = require_real_data("wikipedia_svcl")
    a = load_dataset(convert_wikipedia(src, tmp_path / "a", split_seed=7))
    b = load_dataset(convert_wikipedia(src, tmp_path / "b", split_seed=7))
    assert (a.seen, a.unseen) == (b.seen, b.unseen)
    assert len(a.seen) == 5 and sorted(a.seen + a.unseen) == list(range(1, 11))
    assert _meta(tmp_path / "a")["options"] == {"text": "lda", "seen": None, "split_seed": 7, "n_seen": 5}
    three = load_dataset(convert_wikipedia(src, tmp_path / "c", split_seed=7, n_seen=3))
    assert (len(three.seen), len(three.unseen)) == (3, 7)


# ---- xlsa17, real att_splits / sent_splits with a stand-in res101.mat ------------------------------


def _class_list(folder, name):
    return [line.strip() for line in (folder / name).read_text().splitlines() if line.strip()]


def _standin_res101(path, splits, seen, unseen, dim=16):
    """A res101.mat with the real file's structure, one row per index the real _loc arrays use.

    Rows of trainval_loc / test_seen_loc get seen labels and rows of test_unseen_loc unseen labels,
    round-robin; column 0 of each feature vector holds its 0-based row.
    """
    n = max(int(splits[k].max()) for k in splits if k.endswith("_loc"))
    labels = np.full(n, seen[0])
    for key, ids in (("trainval_loc", seen), ("test_seen_loc", seen), ("test_unseen_loc", unseen)):
        rows = splits[key].ravel().astype(np.int64) - 1
        labels[rows] = np.resize(ids, rows.size)
    features = np.random.default_rng(0).random((dim, n))
    features[0] = np.arange(n)
    scipy.io.savemat(path, {"features": features, "labels": labels[:, None].astype(np.float64)})
    return labels


@pytest.mark.parametrize("name, text, n_seen, n_unseen, text_dim", [
    ("AWA2", "att", 40, 10, 85),
    ("AWA1", "att", 40, 10, 85),
    ("CUB", "att", 150, 50, 312),
    ("CUB", "sent", 150, 50, 1024),
    # FLO ships no class lists: the stand-in takes classes 1..82 as seen (82 / 20 as in xlsa17).
    ("FLO", "att", 82, 20, 1024),
])
def test_xlsa17_real_side_files(tmp_path, name, text, n_seen, n_unseen, text_dim):
    real = require_real_data("xlsa17_side", name)
    src = tmp_path / name
    shutil.copytree(real, src)
    splits = scipy.io.loadmat(src / "att_splits.mat")
    if "allclasses_names" in splits:
        names = [str(n[0][0]) for n in splits["allclasses_names"]]
        seen = [names.index(n) + 1 for n in _class_list(src, "trainvalclasses.txt")]
        unseen = [names.index(n) + 1 for n in _class_list(src, "testclasses.txt")]
    else:
        names, seen, unseen = None, list(range(1, 83)), list(range(83, 103))
    labels = _standin_res101(src / "res101.mat", splits, seen, unseen)

    out = convert_xlsa17(src, tmp_path / "out", text=text)
    ds = load_dataset(out)
    assert (len(ds.seen), len(ds.unseen)) == (n_seen, n_unseen)
    assert (sorted(ds.seen), sorted(ds.unseen)) == (sorted(seen), sorted(unseen))
    assert (ds.image_dim, ds.text_dim) == (16, text_dim)

    att = scipy.io.loadmat(src / ("sent_splits.mat" if text == "sent" else "att_splits.mat"))["att"]
    for c in ds.seen + ds.unseen:
        assert ds.text[c].shape == (1, text_dim)
        np.testing.assert_allclose(ds.text[c][0], att[:, c - 1], rtol=1e-6, atol=1e-7)

    # Seen classes take their trainval_loc rows, unseen classes their test_unseen_loc rows, in loc order.
    trainval = splits["trainval_loc"].ravel().astype(np.int64) - 1
    test_unseen = splits["test_unseen_loc"].ravel().astype(np.int64) - 1
    assert ds.n_images(ds.seen) == trainval.size and ds.n_images(ds.unseen) == test_unseen.size
    for c in (ds.seen[0], ds.unseen[-1]):
        rows = trainval if c in seen else test_unseen
        assert _row_ids(ds.image[c]) == rows[labels[rows] == c].tolist()

    meta = _meta(out)
    assert meta["options"] == {"text": text, "with_test_seen": False}
    assert meta["recommended_input_scaling"] == "none"
    assert {s["file"] for s in meta["sources"]} == {"att_splits.mat", "res101.mat"} | (
        {"sent_splits.mat"} if text == "sent" else set())
    assert next(s["sha256"] for s in meta["sources"] if s["file"] == "att_splits.mat") == _sha256(
        real / "att_splits.mat")
    if names:
        assert {meta["class_names"][str(c)] for c in ds.seen} == set(_class_list(src, "trainvalclasses.txt"))
        assert {meta["class_names"][str(c)] for c in ds.unseen} == set(_class_list(src, "testclasses.txt"))


def test_xlsa17_with_test_seen_adds_the_seen_test_images(tmp_path):
    src = tmp_path / "AWA1"
    shutil.copytree(require_real_data("xlsa17_side", "AWA1"), src)
    splits = scipy.io.loadmat(src / "att_splits.mat")
    _standin_res101(src / "res101.mat", splits, list(range(1, 41)), list(range(41, 51)))
    ds = load_dataset(convert_xlsa17(src, tmp_path / "out", with_test_seen=True))
    assert ds.n_images(ds.seen) == splits["trainval_loc"].size + splits["test_seen_loc"].size
    assert ds.n_images(ds.unseen) == splits["test_unseen_loc"].size


# ---- GAZSL, real split and label files with stand-in features and TF-IDF ----------------------------

GAZSL_CASES = {
    # folder, split: (split file, label files, GAZSL feature file names, n_seen, n_unseen)
    ("CUB2011", "easy"): ("train_test_split_easy.mat", ("labels_train.pkl", "labels_test.pkl"),
                          ("pfc_feat_train.mat", "pfc_feat_test.mat"), 150, 50),
    ("CUB2011", "hard"): ("train_test_split_hard.mat", ("labels_train_hard.pkl", "labels_test_hard.pkl"),
                          ("pfc_feat_train_hard.mat", "pfc_feat_test_hard.mat"), 160, 40),
    ("NABird", "easy"): ("train_test_split_NABird_easy.mat", ("labels_train.pkl", "labels_test.pkl"),
                         ("pfc_feat_train_easy.mat", "pfc_feat_test_easy.mat"), 323, 81),
    ("NABird", "hard"): ("train_test_split_NABird_hard.mat", ("labels_train_hard.pkl", "labels_test_hard.pkl"),
                         ("pfc_feat_train_hard.mat", "pfc_feat_test_hard.mat"), 323, 81),
}


def _gazsl_standin(tmp_path, bird, split):
    """Real split + label files, stand-in features (column 0 = row) and a random sparse-ish TF-IDF."""
    real = require_real_data("gazsl_cub_nab", bird)
    split_file, label_files, feat_files, _, _ = GAZSL_CASES[(bird, split)]
    src = tmp_path / bird
    src.mkdir()
    for name in (split_file, *label_files):
        shutil.copy(real / name, src / name)
    for label_file, feat_file in zip(label_files, feat_files):
        n = np.asarray(load_pickle(src / label_file)).size
        feat = np.random.default_rng(1).random((n, 8)).astype(np.float32)
        feat[:, 0] = np.arange(n)
        scipy.io.savemat(src / feat_file, {"pfc_feat": feat})
    if bird == "CUB2011":  # dense, under ZEST's name
        tfidf = scipy.sparse.random(200, 7551, density=0.01, random_state=2).toarray()
        scipy.io.savemat(src / "CUB_Porter_7551D_TFIDF_new_original.mat", {"PredicateMatrix": tfidf})
    else:  # sparse, under GAZSL's own name
        tfidf = scipy.sparse.random(404, 13217, density=0.005, random_state=2, format="csc")
        scipy.io.savemat(src / "NAB_Porter_13217D_TFIDF_new.mat", {"PredicateMatrix": tfidf})
        tfidf = tfidf.toarray()
    return src, tfidf


@pytest.mark.parametrize("bird, split", list(GAZSL_CASES))
def test_gazsl_real_splits_and_labels(tmp_path, bird, split):
    src, tfidf = _gazsl_standin(tmp_path, bird, split)
    split_file, label_files, _, n_seen, n_unseen = GAZSL_CASES[(bird, split)]
    cids = scipy.io.loadmat(src / split_file)
    train_cid, test_cid = cids["train_cid"].ravel().astype(int), cids["test_cid"].ravel().astype(int)

    ds = load_dataset(convert_gazsl(src, tmp_path / "out", split=split))
    assert (len(ds.seen), len(ds.unseen)) == (n_seen, n_unseen)
    assert (ds.seen, ds.unseen) == (sorted(train_cid.tolist()), sorted(test_cid.tolist()))
    assert (ds.image_dim, ds.text_dim) == (8, tfidf.shape[1])
    for cid, label_file in ((train_cid, label_files[0]), (test_cid, label_files[1])):
        labels = np.asarray(load_pickle(src / label_file)).astype(int)
        for position, c in enumerate(cid):
            assert _row_ids(ds.image[c]) == np.flatnonzero(labels == position).tolist()
    for c in ds.seen + ds.unseen:
        np.testing.assert_allclose(ds.text[c][0], tfidf[c - 1], rtol=1e-6)
    meta = _meta(tmp_path / "out")
    assert meta["options"]["split"] == split
    assert len(meta["sources"]) == 6 and all(len(s["sha256"]) == 64 for s in meta["sources"])


def test_gazsl_tfidf_option_takes_the_real_human_matrix(tmp_path):
    src, _ = _gazsl_standin(tmp_path, "CUB2011", "easy")
    name = "CUB_Porter_7551D_TFIDF_new_HUMAN.mat"
    shutil.copy(require_real_data("gazsl_cub_nab", "CUB2011", name), src / name)
    ds = load_dataset(convert_gazsl(src, tmp_path / "out", tfidf=name))
    human = scipy.io.loadmat(src / name)["PredicateMatrix"]
    assert ds.text_dim == 1272
    np.testing.assert_allclose(ds.text[ds.unseen[0]][0], human[ds.unseen[0] - 1], rtol=1e-6)


# ---- bad sources: one clear line naming the file, nothing written -----------------------------------


def _tiny_xlsa17(src, **override):
    """4 classes (1, 2 seen; 3, 4 unseen), 12 images of 5 dims, 3-d att."""
    labels = np.array([1, 1, 2, 2, 1, 2, 3, 3, 4, 3, 4, 1])
    mats = {
        "res101.mat": {"features": np.random.default_rng(0).random((5, 12)), "labels": labels[:, None]},
        "att_splits.mat": {"att": np.random.default_rng(1).random((3, 4)),
                           "trainval_loc": np.array([[1, 2, 3, 4, 5]]).T, "test_seen_loc": np.array([[6, 12]]).T,
                           "test_unseen_loc": np.array([[7, 8, 9, 10, 11]]).T},
    }
    src.mkdir(parents=True, exist_ok=True)
    for name, content in mats.items():
        content.update(override.get(name, {}))
        for key in [k for k, v in content.items() if v is None]:
            del content[key]
        scipy.io.savemat(src / name, content)
    return src


def _tiny_gazsl(src, train_cid=(1, 2), test_cid=(3, 4), labels_train=(0, 1, 0, 1), labels_test=(0, 1, 1),
                feat_train_rows=4, tfidf_rows=4):
    src.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(src / "train_test_split_easy.mat",
                     {"train_cid": np.array([train_cid]), "test_cid": np.array([test_cid])})
    dump_pickle(np.array(labels_train, np.uint8), src / "labels_train.pkl")
    dump_pickle(np.array(labels_test, np.uint8), src / "labels_test.pkl")
    scipy.io.savemat(src / "pfc_feat_train.mat", {"pfc_feat": np.ones((feat_train_rows, 3))})
    scipy.io.savemat(src / "pfc_feat_test.mat", {"pfc_feat": np.ones((len(labels_test), 3))})
    scipy.io.savemat(src / "CUB_Porter_7551D_TFIDF_new_original.mat", {"PredicateMatrix": np.ones((tfidf_rows, 6))})
    return src


def _tiny_wiki(src, n_train_lines=4):
    src.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    scipy.io.savemat(src / "raw_features.mat", {
        "I_tr": rng.random((4, 6)), "I_te": rng.random((2, 6)), "T_tr": rng.random((4, 3)),
        "T_te": rng.random((2, 3))})
    (src / "trainset_txt_img_cat.list").write_text("".join(f"t{i}\ti{i}\t{i % 2 + 1}\n" for i in range(n_train_lines)))
    (src / "testset_txt_img_cat.list").write_text("u0\tv0\t1\nu1\tv1\t2\n")
    return src


BAD_XLSA17 = {
    "missing res101.mat": ({"res101.mat": None}, "res101.mat"),
    "missing key labels": ({"res101.mat": {"labels": None}}, "res101.mat"),
    "labels of the wrong length": ({"res101.mat": {"labels": np.ones((11, 1))}}, "res101.mat"),
    "label out of range": ({"res101.mat": {"labels": np.array([[1, 1, 2, 2, 1, 2, 3, 3, 5, 3, 4, 1]]).T}},
                           "res101.mat"),
    "loc index past the images": ({"att_splits.mat": {"test_unseen_loc": np.array([[7, 8, 9, 13]]).T}},
                                  "att_splits.mat"),
    "loc rows overlap": ({"att_splits.mat": {"test_unseen_loc": np.array([[5, 7, 8, 9]]).T}}, "att_splits.mat"),
    "class in both splits": ({"att_splits.mat": {"test_unseen_loc": np.array([[6, 7, 8, 9]]).T}},
                             "att_splits.mat"),
    "att with too few classes": ({"att_splits.mat": {"att": np.ones((3, 3))}}, "att_splits.mat"),
    "att class without images": ({"att_splits.mat": {"att": np.ones((3, 5))}}, "att_splits.mat"),
    "NaN features": ({"res101.mat": {"features": np.full((5, 12), np.nan)}}, "res101.mat"),
}


def _tiny_xlsa17_bad(src, override):
    missing = [name for name, content in override.items() if content is None]
    _tiny_xlsa17(src, **{k: v for k, v in override.items() if v is not None})
    for name in missing:
        (src / name).unlink()


BAD_GAZSL = {
    "split classes overlap": ({"test_cid": (2, 4)}, "train_test_split_easy.mat"),
    "class without images": ({"labels_train": (0, 0, 0, 0)}, "labels_train.pkl"),
    "label out of range": ({"labels_test": (0, 1, 2)}, "labels_test.pkl"),
    "feature rows do not match labels": ({"feat_train_rows": 5}, "pfc_feat_train.mat"),
    "TF-IDF with the wrong number of classes": ({"tfidf_rows": 3}, "CUB_Porter_7551D_TFIDF_new_original.mat"),
}


def _bad_cases():
    for case, (override, file) in BAD_XLSA17.items():
        yield pytest.param(lambda src, o=override: _tiny_xlsa17_bad(src, o), convert_xlsa17, {}, file,
                           id=f"xlsa17: {case}")
    for case, (override, file) in BAD_GAZSL.items():
        yield pytest.param(lambda src, o=override: _tiny_gazsl(src, **o), convert_gazsl, {}, file,
                           id=f"gazsl: {case}")
    yield pytest.param(lambda src: (_tiny_gazsl(src), (src / "pfc_feat_test.mat").unlink()), convert_gazsl, {},
                       "pfc_feat_test.mat", id="gazsl: missing feature file")
    yield pytest.param(lambda src: _tiny_wiki(src, n_train_lines=3), convert_wikipedia, {},
                       "raw_features.mat", id="wikipedia: list and features disagree")
    yield pytest.param(_tiny_wiki, convert_wikipedia, {"text": "tfidf"}, "raw_features.mat",
                       id="wikipedia: missing key")
    yield pytest.param(_tiny_wiki, convert_wikipedia, {"seen": [1, 3]}, "trainset_txt_img_cat.list",
                       id="wikipedia: unknown seen class")
    yield pytest.param(lambda src: (_tiny_wiki(src), (src / "testset_txt_img_cat.list").write_text("x\t1\n")),
                       convert_wikipedia, {}, "testset_txt_img_cat.list", id="wikipedia: malformed list")


@pytest.mark.parametrize("make, convert, options, file", list(_bad_cases()))
def test_bad_source_names_the_file_and_writes_nothing(tmp_path, make, convert, options, file):
    make(tmp_path / "src")
    datasets = tmp_path / "datasets"
    datasets.mkdir()
    with pytest.raises(UserError) as err:
        convert(tmp_path / "src", datasets / "OUT", **options)
    message = str(err.value)
    assert file in message and "\n" not in message
    assert list(datasets.iterdir()) == []  # no partial folder, no staging folder


def test_failed_conversion_keeps_the_existing_folder(tmp_path):
    datasets = tmp_path / "datasets"
    good = convert_xlsa17(_tiny_xlsa17(tmp_path / "good"), datasets / "OUT")
    before = {name: (good / name).read_bytes() for name in (*FILES, META_FILE)}
    _tiny_xlsa17_bad(tmp_path / "bad", {"res101.mat": {"labels": np.ones((11, 1))}})

    with pytest.raises(UserError, match="already exists"):
        convert_xlsa17(tmp_path / "good", datasets / "OUT")
    with pytest.raises(UserError, match="res101.mat"):
        convert_xlsa17(tmp_path / "bad", datasets / "OUT", overwrite=True)
    assert [p.name for p in datasets.iterdir()] == ["OUT"]
    assert {name: (good / name).read_bytes() for name in before} == before

    # A successful overwrite replaces the folder as a whole.
    convert_xlsa17(tmp_path / "good", datasets / "OUT", overwrite=True, with_test_seen=True)
    assert [p.name for p in datasets.iterdir()] == ["OUT"]
    assert _meta(good)["options"]["with_test_seen"] is True
    assert load_dataset(good).n_images([1, 2]) == 7


def test_failure_while_moving_into_place_keeps_the_existing_folder(tmp_path, monkeypatch):
    datasets = tmp_path / "datasets"
    src = _tiny_xlsa17(tmp_path / "src")
    out = convert_xlsa17(src, datasets / "OUT")
    before = (out / META_FILE).read_bytes()
    real_rename = os.rename

    def failing_final_move(source, target):
        # The new folder's move into place fails after the old one was moved aside.
        if Path(target) == out and Path(source).name != ".OUT.old":
            raise OSError(28, "No space left on device")
        return real_rename(source, target)

    monkeypatch.setattr(zscrgan.atomic.os, "rename", failing_final_move)
    with pytest.raises(UserError, match="No space left"):
        convert_xlsa17(src, out, overwrite=True, with_test_seen=True)
    assert [p.name for p in datasets.iterdir()] == ["OUT"]
    assert (out / META_FILE).read_bytes() == before and load_dataset(out).n_images([1, 2]) == 5


def test_tiny_xlsa17_rows_and_counts(tmp_path):
    ds = load_dataset(convert_xlsa17(_tiny_xlsa17(tmp_path / "src"), tmp_path / "out"))
    features = scipy.io.loadmat(tmp_path / "src" / "res101.mat")["features"].T
    assert (ds.seen, ds.unseen) == ([1, 2], [3, 4])
    np.testing.assert_allclose(ds.image[1], features[[0, 1, 4]], rtol=1e-6)  # trainval rows 1, 2, 5
    np.testing.assert_allclose(ds.image[3], features[[6, 7, 9]], rtol=1e-6)  # test_unseen rows 7, 8, 10
    assert [len(ds.image[c]) for c in (1, 2, 3, 4)] == [3, 2, 3, 2]


# ---- command line --------------------------------------------------------------------------------


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "zscrgan.data", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def test_cli_convert_and_error_exit(tmp_path):
    src = _tiny_xlsa17(tmp_path / "src")
    done = _cli("convert", "xlsa17", src, "--out", tmp_path / "OUT")
    assert done.returncode == 0, done.stderr
    assert "2 seen / 2 unseen classes" in done.stdout
    assert load_dataset(tmp_path / "OUT").unseen == [3, 4]

    (src / "att_splits.mat").unlink()
    failed = _cli("convert", "xlsa17", src, "--out", tmp_path / "OUT2")
    assert failed.returncode == 2 and failed.stdout == ""
    assert failed.stderr.count("\n") == 1 and failed.stderr.startswith("error: ")
    assert "att_splits.mat" in failed.stderr
    assert not (tmp_path / "OUT2").exists()
