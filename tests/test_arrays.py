"""`convert arrays`: a user's own feature arrays in, a validated dataset folder out; bad arrays refused in one line."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from zscrgan.cli import main
from zscrgan.data.release import META_FILE, load_dataset

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["cat", "dog", "owl", "eel", "fox", "yak"]
CLASSES = [3, 5, 7, 8, 10, 12]  # not 0..n-1: ids are kept as given


def _arrays(seed=0):
    """Six classes of 8-d images (5 each) and 4-d texts (2 each); a row's class is readable from its values."""
    rng = np.random.default_rng(seed)
    image_labels = np.repeat(CLASSES, 5)
    text_labels = np.tile(CLASSES, 2)  # texts interleaved: a class's rows are not contiguous
    images = rng.normal(size=(30, 8)).astype(np.float32)
    images[:, 0] = image_labels  # column 0 carries the class
    texts = rng.normal(size=(12, 4))  # float64: converted to float32
    texts[:, 0] = text_labels
    return {"images": images, "image_labels": image_labels, "texts": texts, "text_labels": text_labels}


def _save(folder: Path, arrays: dict) -> list:
    """The four arrays as .npy files in `folder`; their flags."""
    folder.mkdir(exist_ok=True)
    flags = []
    for key, value in arrays.items():
        np.save(folder / f"{key}.npy", value, allow_pickle=True)
        flags += [f"--{key}", str(folder / f"{key}.npy")]
    return flags


def test_round_trip_keeps_every_row_under_its_class_with_the_class_names(tmp_path, capsys):
    arrays = _arrays()
    names = tmp_path / "names.txt"
    names.write_text("\n".join(NAMES) + "\n")
    out = tmp_path / "datasets" / "MINE"
    assert main(["convert", "arrays", *_save(tmp_path, arrays), "--unseen", "5,10",
                 "--class_names", str(names), "--out", str(out)]) == 0
    assert f"wrote {out}: 4 seen / 2 unseen classes, 30 images (8-d), 12 texts (4-d)" in capsys.readouterr().out
    ds = load_dataset(out)
    assert (ds.seen, ds.unseen) == ([3, 7, 8, 12], [5, 10])
    for c in CLASSES:
        np.testing.assert_array_equal(ds.image[c], arrays["images"][arrays["image_labels"] == c])
        np.testing.assert_array_equal(ds.text[c], arrays["texts"][arrays["text_labels"] == c].astype(np.float32))
    meta = json.loads((out / META_FILE).read_text())
    assert meta["converter"] == "arrays" and meta["class_names"] == {str(c): n for c, n in zip(CLASSES, NAMES)}
    assert meta["options"]["unseen"] == [5, 10] and meta["options"]["split_seed"] is None
    assert [s["file"] for s in meta["sources"]] == ["images.npy", "image_labels.npy", "texts.npy", "text_labels.npy",
                                                    "names.txt"]
    assert main(["inspect", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "seen classes: 3 cat, 7 owl, 8 eel, 12 yak\n" in shown and "unseen classes: 5 dog, 10 fox\n" in shown


def test_an_npz_and_a_split_drawn_by_seed(tmp_path, capsys):
    arrays = _arrays()
    npz = tmp_path / "mine.npz"
    np.savez(npz, **arrays, class_names=np.array(NAMES))
    folders = []
    for seed, name in ((1, "A"), (1, "B"), (2, "C")):
        folders.append(tmp_path / name)
        assert main(["convert", "arrays", "--npz", str(npz), "--split_seed", str(seed), "--unseen_fraction", "0.5",
                     "--out", str(folders[-1])]) == 0
    a, b, c = (load_dataset(f) for f in folders)
    assert a.unseen == b.unseen and len(a.unseen) == 3 and sorted(a.seen + a.unseen) == CLASSES
    assert c.unseen != a.unseen  # another seed, another draw
    meta = json.loads((folders[0] / META_FILE).read_text())
    assert meta["options"] == {"npz": "mine.npz", "unseen": None, "split_seed": 1, "unseen_fraction": 0.5}
    assert meta["class_names"]["12"] == "yak"
    assert main(["convert", "arrays", "--npz", str(npz), "--out", str(tmp_path / "D")]) == 0  # default: 1 of 4
    assert len(load_dataset(tmp_path / "D").unseen) == round(0.25 * 6)


@pytest.mark.slow
def test_a_converted_folder_trains(tmp_path):
    out = tmp_path / "data" / "MINE"
    assert main(["convert", "arrays", *_save(tmp_path / "arrays", _arrays()), "--unseen", "5,10",
                 "--out", str(out)]) == 0
    run = tmp_path / "run"
    p = subprocess.run([sys.executable, str(ROOT / "main.py"), "--dataset", "MINE", "--data_root", str(out.parent),
                        "--output_dir", str(run), "--results_root", str(tmp_path / "res"), "--rounds", "1",
                        "--e_step_iters", "2", "--m_step_iters", "2", "--batch_size", "4", "--gf_dim", "8",
                        "--df_dim", "8", "--embed_dim", "8", "--z_dim", "4", "--top_k", "5"],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.returncode == 0, p.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stopped"] == "completed 1 rounds" and summary["selected_round"] == 1
    assert 0 <= summary["test_at_selected_round"]["prec"] <= 1


def _bad(key, value):
    def change(arrays):
        arrays[key] = value
    return change


@pytest.mark.parametrize("change, words", [
    (_bad("images", np.array([np.zeros(8), np.zeros(7)], dtype=object)), "images.npy: holds Python objects"),
    (_bad("images", np.full((30, 8), np.nan, np.float32)), "images.npy: images has NaN or infinite values"),
    (_bad("texts", np.full((12, 4), "x")), "texts.npy: must be a non-empty 2-D numeric array"),
    (_bad("images", np.zeros((30, 8, 1))), "images.npy: must be a non-empty 2-D numeric array"),
    (_bad("image_labels", np.arange(29)), "image_labels.npy: 29 labels for the 30 rows of"),
    (_bad("text_labels", np.full(12, 0.5)), "text_labels.npy: text_labels must hold integers"),
    (_bad("text_labels", np.full(12, -1)), "text_labels.npy: class id -1 is negative"),
    (_bad("text_labels", np.tile([3, 5, 7, 8, 10, 10], 2)), "text_labels.npy: classes [12] have images but none"),
])
def test_bad_arrays_are_refused_in_one_line_and_nothing_is_written(tmp_path, capsys, change, words):
    arrays = _arrays()
    change(arrays)
    out = tmp_path / "OUT"
    assert main(["convert", "arrays", *_save(tmp_path / "arrays", arrays), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and words in err, err
    assert not out.exists() and sorted(os.listdir(tmp_path)) == ["arrays"]


@pytest.mark.parametrize("extra, words", [
    ({"images": np.array([[1.0], [2.0, 3.0]], dtype=object)}, "mine.npz: images: holds Python objects"),
    ({"image_labels": None}, "mine.npz: no array image_labels"),
    ({"images_": np.zeros(3)}, "mine.npz: unknown array 'images_'"),
    ({"class_names": np.array(NAMES[:5])}, "mine.npz: 5 class names for 6 classes"),
])
def test_bad_npz_is_refused_in_one_line(tmp_path, capsys, extra, words):
    arrays = {**_arrays(), **extra}
    np.savez(tmp_path / "mine.npz", **{k: v for k, v in arrays.items() if v is not None})
    assert main(["convert", "arrays", "--npz", str(tmp_path / "mine.npz"), "--out", str(tmp_path / "OUT")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err, err
    assert not (tmp_path / "OUT").exists()


@pytest.mark.parametrize("flags, words", [
    (["--unseen", "5,99"], "--unseen 5,99: classes must be distinct ids among"),
    (["--unseen", "3,5,7,8,10,12"], "--unseen must name at least one of the 6 classes and leave one seen"),
    (["--unseen", "5", "--split_seed", "1"], "give either --unseen or --split_seed/--unseen_fraction"),
    (["--unseen_fraction", "1.5"], "--unseen_fraction 1.5: must be between 0 and 1"),
    (["--split_seed", "-1"], "--split_seed -1: must be an integer >= 0"),
    (["--class_names", "absent.txt"], "absent.txt: no such file"),
])
def test_bad_split_or_names_flags(tmp_path, capsys, flags, words):
    assert main(["convert", "arrays", *_save(tmp_path, _arrays()), *flags, "--out", str(tmp_path / "OUT")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err, err
    assert not (tmp_path / "OUT").exists()
