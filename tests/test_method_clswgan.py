"""f-CLSWGAN: its losses and one update of each network against float64 NumPy written from the released
clswgan.py / model.py, the preprocessing against scikit-learn's MinMaxScaler, the classifier pretrained
once and frozen; registered as a method (a run, a resume, retrieval from the run folder)."""

import numpy as np
import pytest
import tensorflow as tf
from sklearn.preprocessing import MinMaxScaler

from feature_gan_reference import (assert_first_adam_step, f32, numeric_grads, records, tiny_config, tiny_data,
                                   values, without_times)
from main import main
from zscrgan.evaluate import evaluate
from zscrgan.methods.base import Phases
from zscrgan.methods.clswgan import CLSWGAN, min_max_norm
from zscrgan.retrieve import load_run
from zscrgan.run import Run

OWN = {"ngh": 5, "ndh": 6, "nz": 0, "batch_size": 8, "steps_per_round": 2, "critic_iters": 2, "lr": 0.01,
       "classifier_epochs": 2, "classifier_batch_size": 5}
RUN_FLAGS = ["--method", "clswgan", "--clswgan.ngh", "16", "--clswgan.ndh", "16", "--clswgan.steps_per_round", "3",
             "--clswgan.classifier_epochs", "2", "--demo.n_classes", "8", "--demo.n_seen", "6",
             "--demo.images_per_class", "12", "--demo.image_dim", "12", "--demo.text_dim", "6",
             "--demo.latent_dim", "4", "--demo.hidden_dim", "8"]


def _ce(logits, y):
    m = logits.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(logits - m).sum(axis=1))
    return np.mean(lse - logits[np.arange(len(y)), y])


def _leaky(h):
    return np.where(h > 0, h, 0.2 * h)


def _np_generator(p, z, c):
    w1, b1, w2, b2 = p
    return np.maximum(_leaky(np.concatenate([z, c], axis=1) @ w1 + b1) @ w2 + b2, 0.0)


def _np_critic(p, x, c):
    w1, b1, w2, b2 = p
    return _leaky(np.concatenate([x, c], axis=1) @ w1 + b1) @ w2 + b2


def _np_gp(p, real, fake, c, alpha):
    w1, b1, w2, _ = p
    x = alpha * real + (1 - alpha) * fake
    slope = np.where(np.concatenate([x, c], axis=1) @ w1 + b1 > 0, 1.0, 0.2)
    grad = (slope * w2[:, 0]) @ w1[:x.shape[1]].T  # d score / dx by hand (c held fixed)
    return np.mean((np.linalg.norm(grad, axis=1) - 1.0) ** 2)


@pytest.fixture
def method():
    m = CLSWGAN(tiny_config("clswgan", OWN), 4, 3)
    m.attach(tiny_data())
    return m


def _nets(m):
    g, c, k = m.generator, m.critic, m.classifier
    return [g.fc1.kernel, g.fc1.bias, g.fc2.kernel, g.fc2.bias], [c.fc1.kernel, c.fc1.bias, c.fc2.kernel, c.fc2.bias], \
        [k.kernel, k.bias]


def _batch(seed=1, b=6):
    rng = np.random.default_rng(seed)
    return (rng.uniform(size=(b, 4)), np.array([0, 1, 2, 0, 2, 1]), rng.standard_normal((b, 3)),
            rng.standard_normal((b, 3)), rng.uniform(size=(b, 1)))


def test_preprocessing_is_min_max_scaling_fitted_on_the_training_features():
    images = tiny_data().stacked()[0].astype(np.float64)
    images[:, 1] = 3.0  # a constant dimension keeps scale 1, as in scikit-learn
    shift, scale = min_max_norm(images)
    assert np.allclose((images - shift) / scale, MinMaxScaler().fit_transform(images))


def test_nz_zero_is_the_text_size():
    assert CLSWGAN(tiny_config("clswgan", OWN), 4, 3).z_dim == 3
    assert CLSWGAN(tiny_config("clswgan", {**OWN, "nz": 7}), 4, 3).z_dim == 7


def test_critic_loss_and_update_match_numpy(method):
    x, _, c, z, alpha = _batch()
    gen, crit, _ = _nets(method)
    pg, pc = values(gen), values(crit)
    fake = _np_generator(pg, z, c)

    def loss():
        return (_np_critic(pc, fake, c).mean() - _np_critic(pc, x, c).mean()
                + 10.0 * _np_gp(pc, x, fake, c, alpha))

    tx, tc, tfake, talpha = f32(x, c, fake, alpha)
    got, _, gp = method.critic_loss(tx, tc, tfake, talpha)
    assert np.isclose(float(got), loss(), rtol=1e-5)
    assert np.isclose(float(gp), _np_gp(pc, x, fake, c, alpha), rtol=1e-5)
    grads = numeric_grads(loss, pc)
    method.critic_update(tx, tc, tfake, talpha)
    assert_first_adam_step(pc, values(crit), grads, lr=0.01)
    assert all(np.array_equal(a, b) for a, b in zip(values(gen), pg))


def test_generator_loss_and_update_match_numpy(method):
    _, y, c, z, _ = _batch(seed=2)
    gen, crit, cls = _nets(method)
    pg, pc, pk = values(gen), values(crit), values(cls)

    def loss():
        g = _np_generator(pg, z, c)
        return -_np_critic(pc, g, c).mean() + 0.01 * _ce(g @ pk[0] + pk[1], y)

    tc, tz = f32(c, z)
    got = method.generator_loss(tf.constant(y), tc, tz)[0]
    assert np.isclose(float(got), loss(), rtol=1e-5)
    grads = numeric_grads(loss, pg)
    method.generator_update(tf.constant(y), tc, tz)
    assert_first_adam_step(pg, values(gen), grads, lr=0.01)
    # The critic and the pretrained classifier are untouched.
    assert all(np.array_equal(a, b) for a, b in zip(values(crit) + values(cls), pc + pk))


class _NoStop:
    requested = False

    def between_chunks(self, name, total):
        return lambda done: False


def test_classifier_is_pretrained_in_the_first_round_only_and_frozen_after(method):
    _, _, cls = _nets(method)
    x = method.rows.images.numpy().astype(np.float64)
    y = method.rows.labels.numpy()
    k0 = values(cls)
    phases = Phases(_NoStop(), deterministic=True)
    first = method.train_round(phases)
    k1 = values(cls)
    # 2 epochs of ceil(15 / 5) = 3 batches of Adam (lr 0.001): the classifier moved and fits better.
    assert method.classifier_steps == 6 and float(method.opt_classifier.step.numpy()) == 6
    assert _ce(x @ k1[0] + k1[1], y) < _ce(x @ k0[0] + k0[1], y)
    second = method.train_round(phases)
    assert all(np.array_equal(a, b) for a, b in zip(values(cls), k1))
    assert first["pretrain_ce"] == second["pretrain_ce"] > 0


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
    assert set(CLSWGAN.loss_names) <= set(recs[0]["losses"])
    assert all(np.isfinite(v) for v in recs[-1]["losses"].values())
    assert list((a / "retrieved").iterdir())
    rc, b = _main(tmp_path, "b", "--rounds", "1")
    assert rc == 0 and main(["--resume", str(b), "--rounds", "2", "--data_root", str(tmp_path / "datasets"),
                             "--results_root", str(tmp_path / "results")]) == 0
    assert without_times(records(b)) == without_times(records(a))


def test_run_folder_ranks_as_the_trained_method(tmp_path):
    run = Run(tiny_config("clswgan", OWN, rounds=1), tmp_path / "run", tmp_path / "datasets", None,
              log=lambda *_: None)
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
