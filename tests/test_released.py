"""The released program's output names: Python 2's str() of a score summed class by class."""

import numpy as np

from zscrgan.metrics import class_mean, retrieval_metrics
from zscrgan.released import py2_float_str, retrieval_file_name


def test_file_names_are_python2_str_of_the_score():
    # Expected strings as Python 2.7's str() prints these floats.
    cases = {
        0.5007933333333334: "acc0.500793333333.pkl",
        0.3264000000000001: "acc0.3264.pkl",
        0.5217333333333333: "acc0.521733333333.pkl",
        0.5: "acc0.5.pkl",
        1.0: "acc1.0.pkl",
        0.0: "acc0.0.pkl",
        0.1 + 0.2: "acc0.3.pkl",
        1e-05: "acc1e-05.pkl",
        0.0001: "acc0.0001.pkl",
        2.0 / 3.0: "acc0.666666666667.pkl",
        0.12345678901249: "acc0.123456789012.pkl",
        100.0: "acc100.0.pkl",
        123456789012.0: "acc123456789012.0.pkl",
        1e12: "acc1e+12.pkl",
        1.5e-07: "acc1.5e-07.pkl",
    }
    assert {x: retrieval_file_name(x) for x in cases} == cases
    assert [py2_float_str(x) for x in (float("nan"), float("inf"), -0.0)] == ["nan", "inf", "-0.0"]


def test_score_is_summed_class_by_class_in_ascending_class_order():
    # Ten per-class precisions whose pairwise mean (numpy's) and running sum differ in the last digit.
    per_class = [0.3, 0.74, 0.68, 0.16, 0.46, 0.76, 0.6, 0.8, 0.74, 0.08]
    assert np.mean(per_class) == 0.532
    assert class_mean(per_class) == class_mean(np.array(per_class)) == 0.5320000000000001
    # retrieval_metrics takes its means that way, classes ascending whatever the query order.
    queries = np.array([7, 3, 7, 3, 5])
    retrieved = np.array([[7, 3], [3, 3], [3, 3], [3, 7], [5, 5]])
    m = retrieval_metrics(queries, retrieved)
    assert list(m["per_class"]) == [3, 5, 7]
    assert m["prec"] == (m["per_class"][3]["prec"] + m["per_class"][5]["prec"] + m["per_class"][7]["prec"]) / 3


def test_best_starts_at_zero_and_diverged_rounds_are_never_selected(tmp_path, monkeypatch):
    """A round scoring 0.0 writes nothing (strict comparison with 0.0); a round whose losses went NaN
    is logged with nulls and never selected."""
    import json

    import zscrgan.run
    import zscrgan.train
    from main import main

    precs = iter([0.0, 0.4, 0.3])
    rounds = iter([1, 2, 3])

    def fake_evaluate(trainer, rset, k):
        p = next(precs)
        rows = np.tile(np.arange(k), (len(rset.query_labels), 1))
        return {"prec": p, "map": p, "top1": p, "per_class": {}}, rows

    real_e_step = zscrgan.train.Trainer.e_step

    def e_step(self, *args, **kwargs):
        out = real_e_step(self, *args, **kwargs)
        return out * float("nan") if next(rounds) == 2 else out

    monkeypatch.setattr(zscrgan.run, "evaluate", fake_evaluate)
    monkeypatch.setattr(zscrgan.train.Trainer, "e_step", e_step)
    out = tmp_path / "run"
    assert main(["--data_root", str(tmp_path / "datasets"), "--results_root", str(tmp_path / "results"),
                 "--output_dir", str(out), "--rounds", "3", "--e_step_iters", "1", "--m_step_iters", "1"]) == 0
    text = (out / "metrics.jsonl").read_text()
    assert "NaN" not in text and "Infinity" not in text
    recs = [json.loads(line) for line in text.splitlines()]
    assert [r["new_best"] for r in recs] == [False, False, True]
    assert recs[1]["losses"]["L_G"] is None and recs[1]["losses"]["L_C_M"] is not None
    assert json.loads((out / "summary.json").read_text())["selected_round"] == 3
    assert [p.name for p in (tmp_path / "results" / "DEMO_res").iterdir()] == ["acc0.3.pkl"]
