"""GAZSL: its losses and one update of each network against float64 NumPy written from the released
train_CUB.py / models.py; registered as a method (a run, a resume, retrieval from the run folder)."""

import numpy as np
import pytest
import tensorflow as tf

from feature_gan_reference import (assert_first_adam_step, f32, numeric_grads, records, tiny_config, tiny_data,
                                   values, without_times)
from main import main
from zscrgan.evaluate import evaluate
from zscrgan.methods.gazsl import GAZSL, visual_pivot_loss
from zscrgan.retrieve import load_run
from zscrgan.run import Run

OWN = {"hidden_dim": 5, "z_dim": 2, "text_reduction_dim": 3, "batch_size": 8, "steps_per_round": 2,
       "critic_iters": 2, "lr": 0.01}
RUN_FLAGS = ["--method", "gazsl", "--gazsl.hidden_dim", "16", "--gazsl.z_dim", "4", "--gazsl.text_reduction_dim", "8",
             "--gazsl.batch_size", "32", "--gazsl.steps_per_round", "3", "--demo.n_classes", "8", "--demo.n_seen", "6",
             "--demo.images_per_class", "12", "--demo.image_dim", "12", "--demo.text_dim", "6",
             "--demo.latent_dim", "4", "--demo.hidden_dim", "8"]


def _ce(logits, y):
    m = logits.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(logits - m).sum(axis=1))
    return np.mean(lse - logits[np.arange(len(y)), y])


def _np_generator(p, z, text):
    wr, br, w1, b1, w2, b2 = p
    h = np.concatenate([z, text @ wr + br], axis=1) @ w1 + b1
    return np.tanh(np.where(h > 0, h, 0.01 * h) @ w2 + b2)


def _np_critic(p, x):
    ws, bs, wd, bd, wc, bc = p
    h = np.maximum(x @ ws + bs, 0.0)
    return h @ wd + bd, h @ wc + bc


def _np_gp(p, real, fake, alpha):
    ws, bs, wd = p[:3]
    x = alpha * real + (1 - alpha) * fake
    grad = ((x @ ws + bs > 0) * wd[:, 0]) @ ws.T  # d score / dx by hand
    return np.mean((np.linalg.norm(grad, axis=1) - 1.0) ** 2)


def _np_pivot(g, y, centroids):
    total = sum(np.linalg.norm(g[y == j].mean(axis=0) - centroids[j]) for j in np.unique(y))
    return total / len(centroids)


@pytest.fixture
def method():
    m = GAZSL(tiny_config("gazsl", OWN), 4, 3)
    m.attach(tiny_data())
    return m


def _nets(m):
    g, c = m.generator, m.critic
    return ([g.reduce.kernel, g.reduce.bias, g.fc1.kernel, g.fc1.bias, g.fc2.kernel, g.fc2.bias],
            [c.shared.kernel, c.shared.bias, c.score.kernel, c.score.bias, c.classify.kernel, c.classify.bias])


def _batch(seed=1, b=6):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((b, 4)), np.array([0, 1, 2, 0, 2, 0]), rng.standard_normal((b, 3)),
            rng.standard_normal((b, 2)), rng.uniform(size=(b, 1)))


def test_visual_pivot_by_hand():
    g = tf.constant([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0]])
    centroids = tf.constant([[0.0, 0.0], [5.0, 5.0], [0.0, 0.0]])
    # class 0: mean (2, 0), distance 2; class 2: distance 2; class 1 absent; divided by all 3 classes.
    assert np.isclose(float(visual_pivot_loss(g, tf.constant([0, 0, 2]), centroids)), 4.0 / 3.0)


def test_feature_normalisation_is_the_released_one(method):
    images = tiny_data().stacked()[0].astype(np.float64)
    assert np.allclose(method.norm.shift.numpy(), images.mean()) and np.allclose(method.norm.scale.numpy(), images.var())
    centroid0 = ((tiny_data().image[10] - images.mean()) / images.var()).mean(axis=0)
    assert np.allclose(method.centroids.numpy()[0], centroid0, atol=1e-5)


def test_critic_loss_and_update_match_numpy(method):
    x, y, text, z, alpha = _batch()
    gen, crit = _nets(method)
    pg, pc = values(gen), values(crit)
    fake = _np_generator(pg, z, text)

    def loss():
        d_real, c_real = _np_critic(pc, x)
        d_fake, c_fake = _np_critic(pc, fake)
        return (-d_real.mean() + _ce(c_real, y) + d_fake.mean() + _ce(c_fake, y)
                + 10.0 * _np_gp(pc, x, fake, alpha))

    tx, tfake, talpha = f32(x, fake, alpha)
    got, w_dist, gp = method.critic_loss(tx, tf.constant(y), tfake, talpha)
    assert np.isclose(float(got), loss(), rtol=1e-5)
    assert np.isclose(float(gp), _np_gp(pc, x, fake, alpha), rtol=1e-5)
    grads = numeric_grads(loss, pc)
    method.critic_update(tx, tf.constant(y), tfake, talpha)
    assert_first_adam_step(pc, values(crit), grads, lr=0.01)
    assert all(np.array_equal(a, b) for a, b in zip(values(gen), pg))  # the generator is untouched


def test_generator_loss_and_update_match_numpy(method):
    x, y, text, z, _ = _batch(seed=2)
    gen, crit = _nets(method)
    pg, pc = values(gen), values(crit)
    centroids = method.centroids.numpy().astype(np.float64)

    def loss():
        g = _np_generator(pg, z, text)
        d_fake, c_fake = _np_critic(pc, g)
        _, c_real = _np_critic(pc, x)
        reg = 0.001 * sum(np.sum(w ** 2) for w in pg[0::2]) + 0.0001 * np.linalg.norm(pg[0], axis=1).sum()
        return -d_fake.mean() + (_ce(c_real, y) + _ce(c_fake, y)) / 2 + _np_pivot(g, y, centroids) + reg

    tx, ttext, tz = f32(x, text, z)
    got = method.generator_loss(tx, tf.constant(y), ttext, tz)[0]
    assert np.isclose(float(got), loss(), rtol=1e-5)
    grads = numeric_grads(loss, pg)
    method.generator_update(tx, tf.constant(y), ttext, tz)
    assert_first_adam_step(pg, values(gen), grads, lr=0.01)
    assert all(np.array_equal(a, b) for a, b in zip(values(crit), pc))  # the critic is untouched


def _main(tmp_path, name, *extra):
    out = tmp_path / name
    rc = main(["--data_root", str(tmp_path / "datasets"), "--results_root", str(tmp_path / "results"),
               "--output_dir", str(out), *RUN_FLAGS, *extra])
    return rc, out


def test_runs_resumes_identically_and_retrieves_from_its_folder(tmp_path):
    rc, a = _main(tmp_path, "a", "--rounds", "2")
    assert rc == 0
    recs = records(a)
    assert [r["round"] for r in recs] == [1, 2]
    assert set(GAZSL.loss_names) <= set(recs[0]["losses"])
    assert all(np.isfinite(v) for v in recs[-1]["losses"].values())
    assert list((a / "retrieved").iterdir())
    # One round, then a resume for the second: the same numbers as two rounds in one go.
    rc, b = _main(tmp_path, "b", "--rounds", "1")
    assert rc == 0 and main(["--resume", str(b), "--rounds", "2", "--data_root", str(tmp_path / "datasets"),
                             "--results_root", str(tmp_path / "results")]) == 0
    assert without_times(records(b)) == without_times(records(a))


def test_run_folder_ranks_as_the_trained_method(tmp_path):
    cfg = tiny_config("gazsl", OWN, rounds=1)
    run = Run(cfg, tmp_path / "run", tmp_path / "datasets", None, log=lambda *_: None)
    run.start()
    run.train()
    run.method.reset_noise(3)
    trained, trained_rows = evaluate(run.method, run.data.test, 50)
    loaded = load_run(tmp_path / "run", data_root=tmp_path / "datasets")
    loaded.method.reset_noise(3)
    metrics, rows = evaluate(loaded.method, run.data.test, 50)
    assert np.array_equal(rows, trained_rows) and metrics == trained
    _, indices = loaded.search(run.data.test.texts, run.data.test.images, k=50, seed=3)
    assert np.array_equal(indices, rows)  # evaluate returns gallery rows, as search does


def test_own_keys_are_flags_with_their_meanings(capsys):
    from zscrgan.cli import train_main
    with pytest.raises(SystemExit):
        train_main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--gazsl.pivot_weight FLOAT visual pivot regulariser weight (train_CUB.py CENT_LAMBDA) [default: 1.0, from configs/methods/gazsl.yaml]" in text
    assert "--gazsl.conditioning {text,class_mean}" in text


def test_a_size_that_is_not_positive_is_one_line(tmp_path, capsys):
    rc, out = _main(tmp_path, "run", "--gazsl.hidden_dim", "0")
    assert rc == 2 and not out.exists()
    assert capsys.readouterr().err.strip().endswith("config: key 'gazsl.hidden_dim' must be positive, got 0")
