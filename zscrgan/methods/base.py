"""The contract every method meets, so that the run loop, studies, report, search and diagnosis never
name a method (the shape of scikit-learn's estimator contract: build, fit a round, embed).

A method is a `tf.Module` built from the resolved config and the data's dimensions. Training reads
the seen classes through `attach(TrainingData)`, then calls `train_round(phases)` once per round.
Retrieval needs only `embed_queries` and `embed_gallery`: both map vectors into one space where
cosine similarity ranks the gallery. Everything a resume needs is in TensorFlow variables reachable
from `checkpoint_objects()` (weights, optimiser slots, random-generator states) plus the JSON-able
`host_state()` (e.g. a sampler's position); `weight_objects()` is what retrieval restores.
"""

from __future__ import annotations

import os
import sys
import threading
from dataclasses import dataclass
from typing import Callable

import numpy as np
import tensorflow as tf

from zscrgan.device import run_deterministic

# A phase runs as compiled calls of about this many optimisation steps each, so that Ctrl-C is acted
# on within about a second (at CUB sizes on two CPU cores); chunking costs no measurable time
# (benchmarks/bench_chunks.py).
CHUNK_STEPS = 60


@dataclass
class TrainingData:
    """The classes a method trains on (seen classes, less any validation classes), scaled as the run
    scales its inputs. `classes` keeps the split file's order; `image[c]` is [n_c, I], `text[c]` [m_c, T]."""

    classes: list[int]
    image: dict
    text: dict
    image_dim: int
    text_dim: int

    def stacked(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Every image and every text row with its class's position in `classes`:
        (images [N, I], image labels [N], texts [M, T], text labels [M]), float32 and int32."""
        images = np.concatenate([self.image[c] for c in self.classes]).astype(np.float32)
        texts = np.concatenate([self.text[c] for c in self.classes]).astype(np.float32)
        image_labels = np.concatenate([np.full(len(self.image[c]), j, np.int32) for j, c in enumerate(self.classes)])
        text_labels = np.concatenate([np.full(len(self.text[c]), j, np.int32) for j, c in enumerate(self.classes)])
        return images, image_labels, texts, text_labels


# Phase workers the main thread stopped waiting for (`off_main_thread`'s `give_up`): a process that
# leaves them running ends without waiting for them (`exit_leaving_workers`).
LEFT_RUNNING: list[threading.Thread] = []


def off_main_thread(fn, *args, give_up: Callable[[], bool] | None = None, **kwargs):
    """`fn(*args, **kwargs)` in a worker thread while the main thread waits for it.

    Python runs a signal handler only in the main thread and only between bytecodes, so a Ctrl-C
    handler would wait for a whole compiled call; a waiting main thread runs it at once. The worker's
    result or exception is handed back unchanged. Once `give_up()` is true (a stop was asked for and the
    compiled call in flight, e.g. the first one, which compiles, has not ended within a grace period),
    the main thread stops waiting and returns None, the phase's "stopped" (the round in flight is
    dropped: nothing the worker computes is kept), leaving the worker in LEFT_RUNNING. Off the main
    thread (a Ray Tune trial) `fn` runs in place.
    """
    if threading.current_thread() is not threading.main_thread():
        return fn(*args, **kwargs)
    outcome = {}

    def work():
        try:
            outcome["value"] = fn(*args, **kwargs)
        except BaseException as e:  # handed to the main thread, which raises it
            outcome["error"] = e

    worker = threading.Thread(target=work, name="zscrgan-phase", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(0.1)
        if give_up is not None and worker.is_alive() and give_up():
            LEFT_RUNNING.append(worker)
            return None
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


class Phases:
    """How a method runs the compiled parts of a round: off the main thread (so Ctrl-C acts at once),
    under the run's determinism setting, and with a `stop(done)` callback that ends a phase between
    two chunks once a stop was requested."""

    def __init__(self, stop_flag, deterministic: bool):
        self._flag, self._deterministic = stop_flag, deterministic

    @property
    def stopping(self) -> bool:
        return self._flag.requested

    def run(self, name: str, total: int, fn: Callable, *args, **kwargs):
        """`fn(*args, stop=..., **kwargs)`: a phase of `total` iterations called `name` in messages.
        Returns what `fn` returns (None by convention when the stop callback ended it)."""
        give_up = getattr(self._flag, "given_up", None)
        with run_deterministic(self._deterministic):
            return off_main_thread(fn, *args, stop=self._flag.between_chunks(name, total),
                                   give_up=give_up and (lambda: give_up(name)), **kwargs)


def exit_leaving_workers(status: int) -> int:
    """End the process now with `status` if a phase worker was left running (after a Ctrl-C or SIGTERM,
    once every file is written), so that exit does not wait for its compiled call; else return `status`.
    For command-line entry points only: it never returns when it ends the process."""
    if any(worker.is_alive() for worker in LEFT_RUNNING):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    return status


def apply_after(reported, *updates) -> None:
    """Apply each (optimizer, gradients) of `updates` only once every tensor in `reported` (the losses a
    step returns for the log) is computed.

    Nothing else orders them: a reported loss is no input of the update, so TensorFlow may compute it
    while, or after, the update rewrites the weights it reads. Measured at the released sizes (a step's
    losses flipped in their last bit between two runs of one seed, weights identical) and closed by this
    order: docs/determinism.md.
    """
    with tf.control_dependencies([r for r in tf.nest.flatten(reported) if r is not None]):
        for optimizer, grads in updates:
            optimizer.apply(grads)


def run_steps(step_chunk: Callable[[tf.Tensor], tf.Tensor], total: int, n_losses: int,
              stop: Callable[[int], bool] | None = None, chunk: int = CHUNK_STEPS):
    """`total` optimisation steps as compiled calls of `chunk` steps each: `step_chunk(n)` runs n steps
    and returns the sums of its `n_losses` losses. Returns the per-step means [n_losses], or None when
    `stop(steps done)` ended the phase between two calls."""
    sums = tf.zeros([n_losses])
    for start in range(0, total, chunk):
        if start and stop is not None and stop(start):
            return None
        sums += step_chunk(tf.constant(min(chunk, total - start)))
    return sums / float(max(total, 1))


class Method(tf.Module):
    """One retrieval method. Subclasses set `loss_names` (the order round lines show them) and
    implement `attach`, `train_round`, `embed_queries` and `embed_gallery`."""

    loss_names: tuple[str, ...] = ()
    # Dotted config keys that fix the shapes of the saved variables: a resume cannot change them.
    architecture_keys: tuple[str, ...] = ()

    def __init__(self, cfg, image_dim: int, text_dim: int, name: str | None = None):
        super().__init__(name=name or type(self).__name__.lower())
        self.image_dim, self.text_dim = int(image_dim), int(text_dim)
        self.eval_draws = int(cfg.eval_draws)

    # --- training ------------------------------------------------------------------------------------
    def attach(self, data: TrainingData) -> None:
        """Take what training reads (called before the first round of a new or resumed run)."""
        raise NotImplementedError

    def train_round(self, phases: Phases) -> dict | None:
        """Train one round; its losses by name (phase means, as floats), or None when `phases.stopping`
        ended it early (the round is then dropped and a resume repeats it)."""
        raise NotImplementedError

    def done(self) -> bool:
        """True once more rounds would change nothing (a closed-form fit): the run stops there."""
        return False

    # --- state ----------------------------------------------------------------------------------------
    def checkpoint_objects(self) -> dict:
        """tf.train.Checkpoint keyword arguments for everything a resume restores."""
        return {"method": self}

    def weight_objects(self) -> dict:
        """tf.train.Checkpoint keyword arguments for what retrieval restores (the selected round's weights)."""
        return {"method": self}

    def host_state(self) -> dict:
        """JSON-able state outside TensorFlow variables, saved beside the last checkpoint."""
        return {}

    def load_host_state(self, state: dict) -> None:
        """Restore `host_state()` from a checkpoint's state.json (raise UserError if it is malformed)."""

    # --- retrieval ------------------------------------------------------------------------------------
    def reset_noise(self, seed: int) -> None:
        """Reset the noise drawn by `embed_queries` (methods without noise ignore it)."""

    def embed_queries(self, texts: tf.Tensor, draws: int | None = None) -> tf.Tensor:
        """Query vectors [n, d] of scaled text vectors [n, T]; a method that draws noise averages
        `draws` draws (default: the config's eval_draws)."""
        raise NotImplementedError

    def embed_gallery(self, images: tf.Tensor) -> tf.Tensor:
        """Gallery vectors [n, d] of scaled image vectors [n, I], in the queries' space."""
        raise NotImplementedError

    # --- diagnosis (optional) --------------------------------------------------------------------------
    def generate(self, texts: tf.Tensor, draws: int = 1) -> tf.Tensor | None:
        """Image-space vectors [n, I] the method predicts for texts (averaged over `draws` noise draws),
        or None for a method that predicts none."""
        return None


def mean_over_draws(once: Callable[[tf.Tensor], tf.Tensor], texts: tf.Tensor, draws: int) -> tf.Tensor:
    """The mean of `draws` calls of `once(texts)` (each drawing its own noise)."""
    total = once(texts)
    for _ in range(draws - 1):
        total += once(texts)
    return total / float(draws)
