"""Every method is a peer in one harness: it trains through the same run folder, resumes exactly,
and its weights search a gallery through `zscrgan.retrieve` as training-time evaluation ranks it.

Parametrised over every method in configs/methods/, so a new method is checked here as soon as it
exists; TINY holds the overrides that make each one small enough for these tests.
"""

import json

import numpy as np
import pytest

from zscrgan.config import CHOICES, load_config

DEMO = {"n_classes": 12, "n_seen": 8, "images_per_class": 20, "texts_per_class": 3, "image_dim": 24,
        "text_dim": 12, "latent_dim": 4, "hidden_dim": 16}
# Per method: overrides that shrink it (its own keys under its own section).
TINY = {
    "zscrgan": {"gf_dim": 16, "df_dim": 16, "embed_dim": 8, "z_dim": 4, "e_step_iters": 3, "m_step_iters": 3,
                "batch_size": 8},
    "ridge": {},
    "gazsl": {"gazsl": {"steps_per_round": 2, "batch_size": 32, "hidden_dim": 16, "text_reduction_dim": 8,
                        "z_dim": 4}},
    "clswgan": {"clswgan": {"steps_per_round": 2, "batch_size": 16, "ngh": 16, "ndh": 16,
                            "classifier_epochs": 2}},
    "dssje": {"dssje": {"steps_per_round": 20, "batch_size": 6}},
    "sezsl": {"sezsl": {"steps_per_round": 20, "hidden_dim": 16, "z_dim": 4, "batch_size": 16}},
}
METHODS = CHOICES["method"]


def tiny_config(method: str, **more):
    return load_config("DEMO", overrides={"method": method, "demo": DEMO, "rounds": 2, **TINY.get(method, {}), **more})


def _run(cfg, root, name):
    from zscrgan.run import Run

    run = Run(cfg, root / name, data_root=root / "datasets", results_root=None, log=lambda line: None)
    return run


def _records(run_dir):
    out = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        r.pop("seconds")
        r.pop("retrieval_file", None)
        out.append(r)
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Per method: a finished 2-round run folder (its root holds the datasets)."""
    root = tmp_path_factory.mktemp("methods")
    out = {}
    for method in METHODS:
        run = _run(tiny_config(method), root, method)
        run.start()
        run.train()
        out[method] = root / method
    return root, out


def test_every_method_has_a_module_and_a_config_file():
    from zscrgan.methods import method_class
    from zscrgan.methods.base import Method

    assert METHODS[0] == "zscrgan" and "ridge" in METHODS
    for method in METHODS:
        cls = method_class(method)
        assert issubclass(cls, Method) and cls.loss_names


@pytest.mark.parametrize("method", METHODS)
def test_a_run_writes_its_losses_metrics_and_retrieval_file(trained, method):
    from zscrgan.methods import method_class

    _, runs = trained
    records = _records(runs[method])
    assert records and list(records[0]["losses"]) == list(method_class(method).loss_names)
    assert all(0.0 <= r["test"]["prec"] <= 1.0 for r in records)
    summary = json.loads((runs[method] / "summary.json").read_text())
    assert summary["retrieval_files"] and (runs[method] / summary["retrieval_files"][0]).is_file()


@pytest.mark.parametrize("method", METHODS)
def test_resume_after_round_one_repeats_the_uninterrupted_run(trained, method):
    root, runs = trained
    first = _run(tiny_config(method, rounds=1), root, f"{method}-resumed")
    first.start()
    first.train()
    again = _run(tiny_config(method), root, f"{method}-resumed")
    assert again.resume()
    again.start()
    again.train()
    assert _records(root / f"{method}-resumed") == _records(runs[method])


@pytest.mark.parametrize("method", METHODS)
def test_retrieval_of_a_run_ranks_as_training_time_evaluation(trained, method):
    from zscrgan.evaluate import evaluate
    from zscrgan.retrieve import load_run
    from zscrgan.run import prepare_data

    root, runs = trained
    run = load_run(runs[method], root / "datasets")
    data = prepare_data(tiny_config(method), root / "datasets")
    rset = data.test
    run.method.reset_noise(3)
    metrics, rows = evaluate(run.method, rset, 10)
    _, indices = run.search(rset.texts, rset.images, k=10, seed=3)
    assert np.array_equal(indices, rows)


def test_a_resume_cannot_change_the_method(trained):
    from zscrgan.errors import UserError

    root, runs = trained
    cfg = tiny_config("ridge")
    with pytest.raises(UserError, match="method"):
        _run(cfg, root, "zscrgan").resume()


def test_method_zscrgan_is_the_default_and_trains_the_same_numbers(trained):
    """`method: zscrgan` named explicitly is the default run, bit for bit."""
    root, runs = trained
    cfg = load_config("DEMO", overrides={"demo": DEMO, "rounds": 2, **TINY["zscrgan"]})
    assert cfg.method == "zscrgan"
    run = _run(cfg, root, "default")
    run.start()
    run.train()
    assert _records(root / "default") == _records(runs["zscrgan"])


def test_another_methods_keys_are_refused_with_one_line():
    from zscrgan.errors import UserError

    with pytest.raises(UserError, match="'ridge.\\*' keys apply to method ridge"):
        load_config("DEMO", overrides={"ridge": {"alpha": 2.0}})
    with pytest.raises(UserError, match="'method' must be one of"):
        load_config("DEMO", overrides={"method": "nope"})


def test_the_ridge_method_is_the_ridge_reference(trained):
    from zscrgan.baseline import ridge_baseline
    from zscrgan.data.release import load_dataset
    from zscrgan.run import float32_digits

    root, runs = trained
    ds = load_dataset(root / "datasets" / "DEMO")
    reference = ridge_baseline(ds.image, ds.text, ds.seen, ds.unseen, k=50)
    # metrics.jsonl writes floats with the digits of a float32
    assert _records(runs["ridge"])[0]["test"]["prec"] == float32_digits(reference["prec"])
    summary = json.loads((runs["ridge"] / "summary.json").read_text())
    assert summary["rounds_done"] == 1 and summary["trained"]


def test_per_class_queries_average_each_classes_texts_and_rank_as_by_hand():
    """Two classes in 2-D: per text, class 1's second text is nearer class 2's images; per class, the
    mean of class 1's texts points at its own images."""
    from zscrgan.evaluate import RetrievalSet
    from zscrgan.metrics import retrieval_metrics
    from zscrgan.search import search

    image = {1: np.array([[1.0, 0.1], [1.0, 0.2]], np.float32), 2: np.array([[0.1, 1.0], [0.2, 1.0]], np.float32)}
    text = {1: np.array([[1.0, 0.0], [0.3, 1.0]], np.float32), 2: np.array([[0.0, 1.0]], np.float32)}
    per_text = RetrievalSet.from_classes(image, text, [1, 2])
    per_class = RetrievalSet.from_classes(image, text, [1, 2], per_class=True)
    assert per_text.query_labels.tolist() == [1, 1, 2]
    assert per_class.query_labels.tolist() == [1, 2]
    np.testing.assert_allclose(per_class.texts, [[0.65, 0.5], [0.0, 1.0]])
    # By hand (angles from the first axis): queries at 0, 73.3 and 90 degrees per text, 37.6 and 90 per
    # class; gallery rows at 5.7, 11.3, 84.3 and 78.7 degrees.
    _, rows = search(per_text.texts, per_text.images, 1)
    assert rows[:, 0].tolist() == [0, 3, 2]
    _, rows = search(per_class.texts, per_class.images, 1)
    assert rows[:, 0].tolist() == [1, 2]
    top1 = lambda rset, rows: retrieval_metrics(rset.query_labels, rset.gallery_labels[rows])["top1"]  # noqa: E731
    assert top1(per_text, search(per_text.texts, per_text.images, 1)[1]) == pytest.approx(0.75)  # (1/2 + 1) / 2
    assert top1(per_class, search(per_class.texts, per_class.images, 1)[1]) == 1.0
