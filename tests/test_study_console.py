"""What a study prints: a progress line per trial at most every PROGRESS_EVERY_S seconds (round k/N,
best so far, time left from the second round on), a line when a trial ends, and its table at the end."""

from types import SimpleNamespace

import pytest
import yaml

import zscrgan.study as study_module
from zscrgan.study import TrialProgress, main

TINY = {"datasets": ["DEMO"], "seeds": [0], "rounds": 2, "protocol": "validated",
        "config": {"demo": {"n_classes": 12, "n_seen": 8, "images_per_class": 10, "image_dim": 16, "text_dim": 8}},
        "variants": {"released": {}, "without_R": {"mm_reg_coeff": 0.0}}}


def test_trial_progress_estimates_from_the_second_round_on():
    p = TrialProgress("DEMO/released/seed0", 10, None, "validation Prec")
    p.started = 0.0
    p.update(1, 0.25, now=30.0)  # round 1 compiled
    assert p.line(30.0) == "DEMO/released/seed0: round 1/10, best validation Prec 0.2500, 0:30 elapsed, ~? left"
    p.update(3, 0.5, now=40.0)  # two rounds in 10 s
    assert p.line(40.0) == "DEMO/released/seed0: round 3/10, best validation Prec 0.5000, 0:40 elapsed, ~0:35 left"
    budget = TrialProgress("x", None, 1.0, "unseen Prec")  # a time budget of a minute
    budget.started = 0.0
    budget.update(1, None, now=5.0)
    budget.update(2, None, now=10.0)
    assert budget.line(10.0) == "x: round 2, 0:10 elapsed, ~0:50 left"


def test_the_console_shows_a_line_per_trial_not_per_round(monkeypatch, capsys):
    pytest.importorskip("ray.tune")
    clock = iter(range(0, 10_000, 5))  # every event 5 s after the previous one
    monkeypatch.setattr(study_module.time, "monotonic", lambda: float(next(clock)))
    progress = study_module._progress_callback(total=1)
    spec = {"dataset": "DEMO", "variant": "released", "seed": 0, "run_dir": "r", "time_budget": None,
            "overrides": {"rounds": 20, "protocol": "validated"}}
    trial = SimpleNamespace(config={"trial": spec}, trial_id="t1")
    progress.on_trial_start(0, [], trial)
    for k in range(1, 21):
        progress.on_trial_result(0, [], trial, {"round": k, "score": k / 100, "test_prec": 0.1})
    progress.on_trial_complete(0, [], trial)
    lines = capsys.readouterr().out.splitlines()
    # 20 rounds 5 s apart: a progress line every 30 s, not one per round.
    assert lines[0] == "started  DEMO/released/seed0"
    assert len(lines) == 2 + 100 // 30 and all(" round " in line and "/20" in line for line in lines[1:-1])
    assert lines[-1] == "finished DEMO/released/seed0 (1/1): round 20, best validation Prec 0.2000, 1:45"


def test_a_study_ends_by_printing_its_table(tmp_path, capsys):
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    assert main([str(tmp_path / "tiny.yaml"), "--output_dir", str(tmp_path / "out"), "--data_root",
                 str(tmp_path / "datasets"), "--report_only"]) == 0
    out = capsys.readouterr().out
    table = (tmp_path / "out" / "results.md").read_text()
    assert table in out and "| DEMO | without_R | 0/1 |" in table


def test_rays_notices_that_ask_nothing_of_the_user_are_left_out(caplog):
    import logging

    study_module._quiet_ray_notices()
    tune_util = logging.getLogger("ray.tune.utils.util")
    with caplog.at_level(logging.WARNING):
        tune_util.warning("The `on_step_begin` operation took 2.341 s, which may be a performance bottleneck.")
        logging.getLogger("ray._private.authentication.authentication_token_setup").warning(
            "Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=disabled to opt out.")
        tune_util.warning("Install psutil to monitor system performance.")
    assert [r.getMessage() for r in caplog.records] == ["Install psutil to monitor system performance."]
