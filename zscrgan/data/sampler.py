"""The released class-batch sampler (host side, pure numpy).

A training batch is a list of B seen classes; each row then uses the class's next image (a cyclic
pointer per class) and the class's first text vector, and takes a wrong class and image (`wrong_pairs`).
This module decides *which* class and *which* image go into each row; the training loop turns those
indices into feature rows (`to_rows`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from zscrgan.errors import UserError

PAD = -1  # class and image index of a zero-padded row

_STATE_VERSION = 1


class ClassBatchSampler:
    """Draws batches of seen classes, and one image per row, as the released ZSCRGAN code did.

    Classes are referred to by their position j (0..n-1) in the split file's order, and
    ``images_per_class[j]`` is the number of images of class j.

    Released behaviour (reproduced by default; the released code drew its randomness from Python's
    ``random`` and NumPy's global generator, so batches match it in distribution, not bit for bit):

    - n <= B: every batch holds every class floor(B/n) times plus B mod n distinct classes drawn
      without replacement, in shuffled row order. Classes repeat within a batch.
    - n > B: a walk over the class list in slices of B. The first walk uses the split-file order
      0..n-1; the next slice after the walk's end reshuffles the (previous) walk order and starts a
      new walk. The check happens before a slice is cut and tests ``position >= n``, so when n is an
      exact multiple of B the last slice is full and no empty batch is ever produced. A last slice
      shorter than B keeps its missing rows as padding: the released code left them as all-zero
      image, all-zero text and label 0, and they still entered every loss (n = 150, B = 32: batches
      1-4 are full, batch 5 has 22 real rows and 10 padded rows, batch 6 starts a reshuffled walk).
      Here padded rows carry class and image index -1 (see `to_rows`).
    - Per class, a pointer starting at 0 is advanced by one (mod the class's image count) *before*
      each use, so the first use of a class takes image 1 (image 0 if it has a single image), the
      next use image 2, and so on, wrapping. A class that appears twice in one batch advances twice,
      in row order.

    ``pad_short_batches=False`` is a documented deviation: a short last slice is completed with the
    first classes of the next, reshuffled walk, so every batch has B real rows (a class may then
    appear twice in the batch that straddles two walks).

    The wrong pair of each row (`wrong_pairs`) follows `wrong_class`: ``shift`` (released) and
    ``distinct`` take another row of the same batch (`wrong_pairing`); ``random``, ``similar_text``
    and ``kmeans`` choose a seen class outside the batch too (`wrong_class_candidates`) and a
    uniformly drawn image of it. `class_texts` (one vector per class, in class order) is needed by
    ``similar_text`` and ``kmeans``.

    The batches come from ``np.random.Generator(np.random.PCG64(seed))``; the wrong choices from a
    second generator seeded from (seed, 1), so the batches do not depend on `wrong_class`.
    `state_dict` captures everything needed for a resumed run to continue with identical batches.
    """

    def __init__(
        self,
        images_per_class: Sequence[int],
        batch_size: int,
        seed: int,
        *,
        pad_short_batches: bool = True,
        wrong_class: str = "shift",
        class_texts: np.ndarray | None = None,
        kmeans_clusters: int = 10,
    ) -> None:
        counts = np.asarray(images_per_class, dtype=np.int64)
        if counts.ndim != 1 or counts.size == 0:
            raise ValueError("images_per_class must be a non-empty list of image counts, one per seen class")
        if np.any(counts < 1):
            bad = np.flatnonzero(counts < 1).tolist()
            raise ValueError(f"every seen class needs at least one image; classes at positions {bad} have none")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self._counts = counts
        self._batch_size = int(batch_size)
        self._pad_short_batches = bool(pad_short_batches)
        self._rng = np.random.Generator(np.random.PCG64(seed))
        self._walk_order = np.arange(counts.size, dtype=np.int64)
        self._walk_position = 0
        self._pointers = np.zeros(counts.size, dtype=np.int64)
        self._wrong_class = wrong_class
        self._wrong_rng = np.random.Generator(np.random.PCG64([seed, 1]))
        self._candidates = None
        if wrong_class not in ("shift", "distinct"):
            self._candidates = wrong_class_candidates(wrong_class, counts.size, class_texts, kmeans_clusters,
                                                      np.random.Generator(np.random.PCG64([seed, 2])))

    @property
    def num_classes(self) -> int:
        """Number of seen classes n."""
        return int(self._counts.size)

    @property
    def batch_size(self) -> int:
        """Rows per batch B, padded rows included."""
        return self._batch_size

    def next_batch(self) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(cls, img)``, two int64 arrays of shape [B].

        ``cls[i]`` is the seen-class position of row i, ``img[i]`` the index of the image within that
        class; both are -1 on a zero-padded row.
        """
        if self.num_classes <= self._batch_size:
            cls = self._repeated_classes()
        else:
            cls = self._walk_slice()
        img, self._pointers = take_images(cls, self._pointers, self._counts)
        return cls, img

    def schedule(self, steps: int) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(cls, img)`` of shape [steps, B]: the next `steps` batches, in order."""
        if steps < 0:
            raise ValueError(f"steps must be non-negative, got {steps}")
        batches = [self.next_batch() for _ in range(steps)]
        shape = (steps, self._batch_size)
        cls = np.array([b[0] for b in batches], dtype=np.int64).reshape(shape)
        img = np.array([b[1] for b in batches], dtype=np.int64).reshape(shape)
        return cls, img

    def wrong_pairs(self, cls: np.ndarray, img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For batches ``(cls, img)`` of shape [..., B], each row's wrong class and image, same shape.

        A padded row's wrong pair is padded (-1) under the out-of-batch choices; under ``shift`` and
        ``distinct`` a row takes whatever the chosen row holds, padding included, as released.
        """
        cls, img = np.asarray(cls, dtype=np.int64), np.asarray(img, dtype=np.int64)
        if self._candidates is None:
            rows = wrong_pairing(cls, distinct=self._wrong_class == "distinct")
            return np.take_along_axis(cls, rows, axis=-1), np.take_along_axis(img, rows, axis=-1)
        table, sizes = self._candidates
        # Two uniform draws per row, padded rows included, so the stream depends on the shape only.
        u_class, u_image = self._wrong_rng.random(cls.shape), self._wrong_rng.random(cls.shape)
        real = cls >= 0
        c = np.where(real, cls, 0)
        wrong_cls = table[c, (u_class * sizes[c]).astype(np.int64)]
        wrong_img = (u_image * self._counts[wrong_cls]).astype(np.int64)
        return np.where(real, wrong_cls, PAD), np.where(real, wrong_img, PAD)

    def state_dict(self) -> dict:
        """Return the full state as plain JSON-serialisable values (ints, bools, lists, dicts)."""
        return {
            "version": _STATE_VERSION,
            "images_per_class": self._counts.tolist(),
            "batch_size": self._batch_size,
            "pad_short_batches": self._pad_short_batches,
            "walk_order": self._walk_order.tolist(),
            "walk_position": self._walk_position,
            "image_pointers": self._pointers.tolist(),
            "rng": _plain(self._rng.bit_generator.state),
            "wrong_class": self._wrong_class,
            "wrong_rng": _plain(self._wrong_rng.bit_generator.state),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a state from `state_dict`, so the following batches equal the saved run's.

        Raises `UserError` when the state was saved for different data or a different batch
        configuration, since continuing from it would silently change the run.
        """
        if state.get("version") != _STATE_VERSION:
            raise UserError(
                f"sampler state has version {state.get('version')!r}, expected {_STATE_VERSION}; "
                "start from a fresh output folder"
            )
        saved = {"wrong_class": "shift", **state}  # states saved before wrong_class existed were "shift"
        for key, here in (
            ("images_per_class", self._counts.tolist()),
            ("batch_size", self._batch_size),
            ("pad_short_batches", self._pad_short_batches),
            ("wrong_class", self._wrong_class),
        ):
            if saved[key] != here:
                raise UserError(
                    f"sampler state was saved with {key}={_short(saved[key])} but this run has "
                    f"{key}={_short(here)}; resume with the same data and config, or use a fresh output folder"
                )
        order = np.asarray(state["walk_order"], dtype=np.int64)
        if sorted(order.tolist()) != list(range(self.num_classes)):
            raise UserError("sampler state's walk_order is not a permutation of the seen classes")
        self._walk_order = order
        self._walk_position = int(state["walk_position"])
        self._pointers = np.asarray(state["image_pointers"], dtype=np.int64)
        self._rng.bit_generator.state = state["rng"]
        if "wrong_rng" in state:
            self._wrong_rng.bit_generator.state = state["wrong_rng"]

    def _repeated_classes(self) -> np.ndarray:
        """n <= B: every class floor(B/n) times plus B mod n distinct extra classes, shuffled."""
        n = self.num_classes
        repeats, extra = divmod(self._batch_size, n)
        chosen = self._rng.choice(n, size=extra, replace=False)
        rows = np.concatenate([np.tile(np.arange(n, dtype=np.int64), repeats), chosen.astype(np.int64)])
        return self._rng.permutation(rows)

    def _walk_slice(self) -> np.ndarray:
        """n > B: the next slice of the walk, padded with -1 or completed from the next walk."""
        if self._walk_position >= self.num_classes:
            self._start_new_walk()
        start = self._walk_position
        cls = self._walk_order[start : start + self._batch_size]
        self._walk_position = start + self._batch_size
        missing = self._batch_size - cls.size
        if missing == 0:
            return cls.copy()
        if self._pad_short_batches:
            return np.concatenate([cls, np.full(missing, PAD, dtype=np.int64)])
        self._start_new_walk()
        self._walk_position = missing
        return np.concatenate([cls, self._walk_order[:missing]])

    def _start_new_walk(self) -> None:
        # The released code shuffled its current class list in place, so each walk permutes the last.
        self._walk_order = self._rng.permutation(self._walk_order)
        self._walk_position = 0


def take_images(
    cls: np.ndarray, pointers: np.ndarray, counts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Advance the per-class image pointers over one batch, in row order.

    Each real row of class c advances c's pointer by one (mod ``counts[c]``) and uses the new value;
    rows with class -1 take image -1 and advance nothing. Returns ``(img, new_pointers)``; the
    inputs are not modified.
    """
    cls = np.asarray(cls, dtype=np.int64)
    img = np.full(cls.shape, PAD, dtype=np.int64)
    real = cls >= 0
    c = cls[real]
    img[real] = (pointers[c] + _occurrence_number(c)) % counts[c]
    new_pointers = (pointers + np.bincount(c, minlength=pointers.size)) % counts
    return img, new_pointers


def _occurrence_number(values: np.ndarray) -> np.ndarray:
    """For each element, 1 + how many earlier elements hold the same value (1 for a first use)."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    group_start = np.searchsorted(ordered, ordered, side="left")
    number = np.empty_like(values)
    number[order] = np.arange(values.size) - group_start + 1
    return number


def to_rows(cls: np.ndarray, img: np.ndarray, class_offsets: np.ndarray, pad_row: int) -> np.ndarray:
    """Map a schedule to row indices of a packed image-feature matrix.

    Class c's images occupy rows ``class_offsets[c] .. class_offsets[c] + count - 1``, so a real row
    maps to ``class_offsets[cls] + img``; a padded row (cls -1) maps to `pad_row`, the index of an
    all-zero row. The result has the shape of `cls`.
    """
    cls = np.asarray(cls, dtype=np.int64)
    img = np.asarray(img, dtype=np.int64)
    if cls.shape != img.shape:
        raise ValueError(f"cls and img must have the same shape, got {cls.shape} and {img.shape}")
    offsets = np.asarray(class_offsets, dtype=np.int64)
    real = cls >= 0
    return np.where(real, offsets[np.where(real, cls, 0)] + img, pad_row).astype(np.int64)


def text_rows(cls: np.ndarray, pad_row: int) -> np.ndarray:
    """Map a schedule's classes to rows of a per-class text matrix (row c = class c's first text).

    A padded row (cls -1) maps to `pad_row`, the index of an all-zero row. Same shape as `cls`.
    """
    cls = np.asarray(cls, dtype=np.int64)
    return np.where(cls >= 0, cls, pad_row).astype(np.int64)


def wrong_pairing(cls: np.ndarray, distinct: bool = False) -> np.ndarray:
    """For batches of classes `cls` [..., B], the row each row takes its wrong text and image from.

    Released: row i pairs with row i-1 (row 0 with row B-1), even where that row has the same class.
    distinct=True: row i pairs with the nearest earlier row (cyclically) of another class, if any.
    """
    b = cls.shape[-1]
    shifted = (np.arange(b) - 1) % b
    out = np.broadcast_to(shifted, cls.shape).copy()
    if not distinct:
        return out
    flat_cls, flat_out = cls.reshape(-1, b), out.reshape(-1, b)
    for row_cls, row_out in zip(flat_cls, flat_out):
        for i in range(b):
            for back in range(1, b):
                j = (i - back) % b
                if row_cls[j] != row_cls[i]:
                    row_out[i] = j
                    break
    return flat_out.reshape(cls.shape)


def wrong_class_candidates(mode: str, n: int, class_texts: np.ndarray | None, kmeans_clusters: int,
                           rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The classes each class's wrong class is drawn from, uniformly: ``(table, sizes)``.

    Row c of `table` [n, n - 1] holds class c's candidates in its first ``sizes[c]`` entries.

    - ``random``: every other seen class;
    - ``similar_text``: the one other class whose text has the highest cosine with c's (ties: the
      lower class position);
    - ``kmeans``: the other classes of c's cluster when the L2-normalised texts are clustered into
      ``min(kmeans_clusters, n)`` clusters (`kmeans`); every other class when c is alone in its cluster.
    """
    if n < 2:
        raise UserError(f"wrong_class {mode} needs at least 2 seen classes, got {n}")
    others = np.array([[j for j in range(n) if j != c] for c in range(n)], dtype=np.int64)
    sizes = np.full(n, n - 1, dtype=np.int64)
    if mode == "random":
        return others, sizes
    texts = _unit_rows(np.asarray(class_texts, dtype=np.float64)[:n])
    if mode == "similar_text":
        similarity = texts @ texts.T
        np.fill_diagonal(similarity, -np.inf)
        table = np.zeros_like(others)
        table[:, 0] = np.argmax(similarity, axis=1)
        return table, np.ones(n, dtype=np.int64)
    if mode == "kmeans":
        labels = kmeans(texts, min(kmeans_clusters, n), rng)
        table = others.copy()
        for c in range(n):
            mates = np.flatnonzero((labels == labels[c]) & (np.arange(n) != c))
            if mates.size:
                table[c, : mates.size], sizes[c] = mates, mates.size
        return table, sizes
    raise ValueError(f"unknown wrong_class {mode!r}")


def kmeans(x: np.ndarray, k: int, rng: np.random.Generator, iterations: int = 100) -> np.ndarray:
    """Lloyd's k-means on the rows of `x` from a k-means++ start; returns each row's cluster (0..k-1).

    Deterministic for a given `rng` state. A cluster that empties keeps its previous centre.
    """
    centres = [x[rng.integers(len(x))]]
    for _ in range(1, k):
        d2 = np.min([np.sum((x - c) ** 2, axis=1) for c in centres], axis=0)
        # k-means++: the next centre with probability proportional to the squared distance.
        centres.append(x[rng.choice(len(x), p=d2 / d2.sum())] if d2.sum() > 0 else x[rng.integers(len(x))])
    centres = np.array(centres)
    labels = np.full(len(x), -1)
    for _ in range(iterations):
        new = np.argmin(((x[:, None, :] - centres[None]) ** 2).sum(axis=2), axis=1)
        if np.array_equal(new, labels):
            break
        labels = new
        for j in range(k):
            if np.any(labels == j):
                centres[j] = x[labels == j].mean(axis=0)
    return labels


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _plain(value):
    """Turn numpy scalars inside nested dicts into Python values so json.dumps accepts them."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    return value


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
