"""The synthetic demo dataset: deterministic, CNN-like images, remade only when its spec changes,
and learnable zero-shot (a linear text-to-image map fitted on seen classes transfers)."""

import dataclasses
import json

import numpy as np
import pytest

from zscrgan.data.demo import CUB_LIKE, SPEC_FILE, DemoSpec, ensure_demo, make_demo
from zscrgan.data.release import FILES, load_dataset
from zscrgan.errors import UserError

SMALL = DemoSpec(n_classes=8, n_seen=5, images_per_class=6, texts_per_class=2, image_dim=12,
                 text_dim=7, latent_dim=3, hidden_dim=5)


def _same(a, b):
    image_a, text_a, seen_a, unseen_a = a
    image_b, text_b, seen_b, unseen_b = b
    return (seen_a == seen_b and unseen_a == unseen_b
            and all(np.array_equal(image_a[c], image_b[c]) for c in image_a)
            and all(np.array_equal(text_a[c], text_b[c]) for c in text_a))


def test_deterministic_for_a_seed_and_different_across_seeds():
    assert _same(make_demo(SMALL), make_demo(SMALL))
    assert not _same(make_demo(SMALL), make_demo(dataclasses.replace(SMALL, seed=1)))


def test_sizes_split_and_value_ranges():
    spec = DemoSpec()
    image, text, seen, unseen = make_demo(spec)
    assert sorted(seen + unseen) == list(range(1, spec.n_classes + 1))
    assert len(seen) == spec.n_seen and seen != sorted(seen)
    assert all(type(c) is int for c in seen + unseen)
    counts = [len(image[c]) for c in image]
    assert min(counts) >= 45 and max(counts) <= 75 and len(set(counts)) > 1
    assert all(m.shape[1] == spec.image_dim and m.dtype == np.float32 for m in image.values())
    assert all(m.shape == (spec.texts_per_class, spec.text_dim) for m in text.values())
    images = np.concatenate(list(image.values()))
    assert images.min() >= 0.0
    assert 0.2 < np.mean(images == 0.0) < 0.8  # sparse like ReLU features, not degenerate


def test_cub_like_preset_has_benchmark_sizes():
    assert (CUB_LIKE.n_classes, CUB_LIKE.n_seen) == (200, 150)
    assert (CUB_LIKE.image_dim, CUB_LIKE.text_dim) == (2048, 1024)


@pytest.mark.parametrize("change", [dict(n_seen=0), dict(n_seen=40), dict(image_dim=0),
                                    dict(image_count_spread=1.0), dict(text_noise=-1.0)])
def test_bad_spec_is_a_user_error(change):
    with pytest.raises(UserError, match="demo spec"):
        DemoSpec(**change)


def test_ensure_demo_writes_a_valid_folder_and_keeps_it_while_the_spec_holds(tmp_path):
    folder = tmp_path / "demo"
    ensure_demo(folder, SMALL)
    ds = load_dataset(folder)
    assert (ds.image_dim, ds.text_dim) == (12, 7) and len(ds.seen) == 5
    assert json.loads((folder / SPEC_FILE).read_text())["seed"] == 0

    sentinel = folder / "sentinel"
    sentinel.write_text("still here")
    ensure_demo(folder, SMALL)
    assert sentinel.exists()

    ensure_demo(folder, dataclasses.replace(SMALL, seed=3))
    assert not sentinel.exists()
    assert json.loads((folder / SPEC_FILE).read_text())["seed"] == 3
    remade = load_dataset(folder)
    _, _, seen, _ = make_demo(dataclasses.replace(SMALL, seed=3))
    assert remade.seen == seen


@pytest.mark.parametrize("damage", ["spec", "dataset_file"])
def test_ensure_demo_remakes_an_incomplete_folder(tmp_path, damage):
    folder = tmp_path / "demo"
    ensure_demo(folder, SMALL)
    (folder / (SPEC_FILE if damage == "spec" else FILES[0])).unlink()
    (folder / "sentinel").write_text("")
    ensure_demo(folder, SMALL)
    assert not (folder / "sentinel").exists()
    load_dataset(folder)


def _ridge_prec_at_50(image, text, seen, unseen, shuffle_gallery=False):
    """Ridge text->image on seen class means, then cosine retrieval of unseen images per text."""
    x = np.stack([text[c].mean(0) for c in seen])
    y = np.stack([image[c].mean(0) for c in seen])
    x_mean, y_mean = x.mean(0), y.mean(0)
    xc = x - x_mean
    weights = np.linalg.solve(xc.T @ xc + np.eye(x.shape[1]), xc.T @ (y - y_mean))

    queries = np.concatenate([text[c] for c in unseen])
    query_class = np.repeat(unseen, [len(text[c]) for c in unseen])
    gallery = np.concatenate([image[c] for c in unseen])
    gallery_class = np.repeat(unseen, [len(image[c]) for c in unseen])
    if shuffle_gallery:
        gallery_class = np.random.default_rng(0).permutation(gallery_class)

    predicted = (queries - x_mean) @ weights + y_mean
    predicted /= np.linalg.norm(predicted, axis=1, keepdims=True)
    gallery = gallery / np.maximum(np.linalg.norm(gallery, axis=1, keepdims=True), 1e-12)
    top = np.argsort(-(predicted @ gallery.T), axis=1)[:, :50]
    return np.mean(gallery_class[top] == query_class[:, None])


@pytest.mark.parametrize("seed", [0, 1])
def test_zero_shot_transfer_is_learnable_but_not_trivial(seed):
    spec = dataclasses.replace(DemoSpec(), seed=seed)
    data = make_demo(spec)
    chance = 1 / (spec.n_classes - spec.n_seen)
    learned = _ridge_prec_at_50(*data)
    assert 4 * chance < learned < 0.9
    assert _ridge_prec_at_50(*data, shuffle_gallery=True) < 1.5 * chance
