"""`inspect`: the summary of a dataset folder, its chance level, and one clear line for a bad folder."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import make_wiki_folder
from zscrgan.data.inspect import chance_prec_at_50, format_summary, summarize
from zscrgan.data.release import load_dataset, write_dataset

REPO = Path(__file__).resolve().parents[1]


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "zscrgan.data", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def tiny(tmp_path):
    """Seen 1, 2; unseen 3, 4, 5 with 3, 1 and 4 images; 2-d images and 3-d texts of known norms."""
    image = {1: [[3, 4]], 2: [[0, 1], [0, 1]], 3: [[1, 0]] * 3, 4: [[0, -2]], 5: [[6, 8]] * 4}
    text = {1: [[1, 0, 0]], 2: [[0, 2, 0]], 3: [[0, 0, 2]] * 2, 4: [[1, 0, 0]], 5: [[0, 0, 1]]}
    as_arrays = {c: np.array(v, np.float32) for c, v in image.items()}
    write_dataset(tmp_path / "TINY", as_arrays, {c: np.array(v, np.float32) for c, v in text.items()},
                  [1, 2], [3, 4, 5])
    return load_dataset(tmp_path / "TINY")


def test_chance_level_is_the_mean_share_of_the_unseen_gallery(tiny):
    # Gallery of the unseen classes: 3 + 1 + 4 = 8 images; shares 3/8, 1/8, 4/8.
    assert chance_prec_at_50(tiny) == pytest.approx((3 / 8 + 1 / 8 + 4 / 8) / 3)


def test_summary_counts_dimensions_and_values(tiny):
    s = summarize(tiny)
    assert (s["image_dim"], s["text_dim"]) == (2, 3)
    assert s["splits"]["seen"] == {"classes": 2, "images": 3, "texts": 2,
                                   "images_per_class": {"min": 1, "median": 1.5, "max": 2},
                                   "texts_per_class": {"min": 1, "median": 1.0, "max": 1}}
    assert s["splits"]["unseen"]["images_per_class"] == {"min": 1, "median": 3.0, "max": 4}
    assert s["splits"]["unseen"]["texts"] == 4
    # Image norms: 5, 1, 1, 1, 1, 1, 2, 10 x 4 -> mean 52 / 11.
    assert s["values"]["image"] == pytest.approx({"min": -2, "max": 8, "mean_norm": 52 / 11})
    assert s["values"]["text"] == pytest.approx({"min": 0, "max": 2, "mean_norm": (1 + 2 + 2 + 2 + 1 + 1) / 6})
    text = format_summary(s)
    assert "chance Prec@50 on the unseen classes (random ranking): 0.3333" in text
    assert "dimensions: image 2, text 3" in text


def test_cli_inspect_on_the_real_wikipedia_folder(tmp_path):
    folder = make_wiki_folder(tmp_path)
    done = _cli("inspect", folder)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "dataset WIKI_lda: 5 seen / 5 unseen classes"
    # Seen 2, 3, 5, 9, 10: 360 + 340 + 267 + 285 + 451 images; unseen 1, 4, 6, 7, 8: 172 + 333 + 236 + 237 + 185.
    assert lines[3].split()[:7] == ["seen", "5", "1703", "267", "/", "340", "/"]
    assert lines[4].split()[:7] == ["unseen", "5", "1163", "172", "/", "236", "/"]
    assert lines[-1].endswith(f"{np.mean(np.array([172, 333, 236, 237, 185]) / 1163):.4f}")
    assert "seen classes: 2 biology, 3 geography & places, 5 literature & theatre, 9 sport & recreation, " \
           "10 warfare" in lines
    assert "unseen classes: 1 art & architecture, 4 history, 6 media, 7 music, 8 royalty & nobility" in lines


def test_cli_inspect_on_a_bad_folder_says_one_line(tiny, tmp_path):
    folder = tmp_path / "TINY"
    (folder / "testids.pkl").write_bytes(b"not a pickle")
    done = _cli("inspect", folder)
    assert done.returncode != 0 and done.stdout == ""
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1
    assert "testids.pkl" in done.stderr


def test_summary_lists_class_names_per_split_up_to_a_limit(tiny, monkeypatch):
    import zscrgan.data.inspect

    monkeypatch.setattr(zscrgan.data.inspect, "SHOWN_NAMES", 2)
    text = format_summary(summarize(tiny, {1: "one", 2: "two", 3: "three", 4: "four", 5: "five"}))
    assert "seen classes: 1 one, 2 two\n" in text and "unseen classes: 3 three, 4 four and 1 more\n" in text
    assert "classes:" not in format_summary(summarize(tiny)).split("\n", 1)[1]  # no names, no lines
