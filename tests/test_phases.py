"""A phase run as several compiled chunks gives the same losses, weights and noise as one call, and
can be stopped between chunks."""

import numpy as np
import pytest
import tensorflow as tf

from test_train_steps import B, I, T, _cfg, _packed, _schedule
from zscrgan.train import Trainer

ITERS = 7  # chunks of 3 leave a short last chunk


@pytest.fixture(scope="module")
def packed():
    return _packed()


def _phases(packed, chunk_iters):
    """E-step then M-step on fixed schedules; returns the losses, every variable after, and next noise."""
    cfg = _cfg()
    trainer = Trainer(cfg, I, T)
    e_sched = _schedule(packed, (ITERS, cfg.critic_steps + 1, B), seed=1)
    m_sched = _schedule(packed, (ITERS, B), seed=2)
    e_out = trainer.e_step(packed.images, packed.texts, *e_sched, chunk_iters=chunk_iters).numpy()
    l_c = trainer.m_step(packed.images, packed.texts, *m_sched, chunk_iters=chunk_iters).numpy()
    state = [v.numpy() for v in trainer.variables]
    return e_out, l_c, state, trainer.noise.normal([3]).numpy()


@pytest.mark.slow
def test_chunked_phases_equal_one_call_bit_for_bit(packed):
    e_whole, l_whole, state_whole, noise_whole = _phases(packed, None)
    for chunk in (3,):
        e_out, l_c, state, noise = _phases(packed, chunk)
        np.testing.assert_array_equal(e_out, e_whole)
        assert l_c == l_whole
        assert len(state) == len(state_whole)
        for a, b in zip(state, state_whole):  # weights, optimiser slots, noise generator state
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(noise, noise_whole)


def test_a_phase_stops_between_chunks_when_asked(packed):
    cfg = _cfg()
    trainer = Trainer(cfg, I, T)
    e_sched = _schedule(packed, (ITERS, cfg.critic_steps + 1, B), seed=1)
    asked = []

    def stop(done):
        asked.append(done)
        return done >= 6

    assert trainer.e_step(packed.images, packed.texts, *e_sched, chunk_iters=3, stop=stop) is None
    assert asked == [3, 6]  # asked between chunks only, with the iterations done so far
    m_sched = _schedule(packed, (ITERS, B), seed=2)
    never = trainer.m_step(packed.images, packed.texts, *m_sched, chunk_iters=3, stop=lambda done: False)
    assert np.isfinite(float(never))
    assert isinstance(never, tf.Tensor)
