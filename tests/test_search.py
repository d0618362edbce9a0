"""Chunked cosine top-K: equal to a brute-force ranking (ties by lower row) for any chunk size, and
memory that does not grow with the gallery."""

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import zscrgan.search
from zscrgan.errors import UserError
from zscrgan.search import BLOCK, search

CHUNKS = [1, 3, BLOCK, BLOCK + 1, 64, 10_000]


def brute_force(queries, gallery, k):
    """Cosines in float64 and a stable sort: the reference ranking."""
    def unit(x):
        norms = np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)
        return x / np.where(norms > 0, norms, 1.0)
    sims = unit(queries) @ unit(gallery).T
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, order, 1), order


@pytest.mark.parametrize("chunk", CHUNKS)
@pytest.mark.parametrize("k", [1, 7, 30, 500])
def test_exact_ties_rank_the_lower_row_first(chunk, k):
    # Every gallery row is a one-hot vector or zero: each cosine is one query coordinate (or 0),
    # computed exactly, and every value is shared by many rows.
    rng = np.random.default_rng(0)
    dim, n_gallery = 5, 120
    hot = rng.integers(-1, dim, n_gallery)  # -1: an all-zero row, cosine 0
    gallery = np.zeros((n_gallery, dim), np.float32)
    gallery[hot >= 0, hot[hot >= 0]] = 1.0
    queries = rng.standard_normal((9, dim)).astype(np.float32)
    scores, rows = search(queries, gallery, k, chunk_rows=chunk)
    key = np.where(hot[None, :] >= 0, queries[:, np.maximum(hot, 0)], 0.0)
    want = np.argsort(-key, axis=1, kind="stable")[:, :min(k, n_gallery)]
    assert rows.shape == (9, min(k, n_gallery)) and rows.dtype == np.int64
    assert np.array_equal(rows, want)
    assert np.all(np.diff(scores, axis=1) <= 0)


@pytest.mark.parametrize("chunk", CHUNKS)
def test_identical_rows_come_back_in_row_order(chunk):
    gallery = np.tile(np.array([[0.5, 2.0, 1.0]], np.float32), (100, 1))
    scores, rows = search(np.array([[1.0, 1.0, 1.0], [-1.0, 0.0, 0.0]], np.float32), gallery, 10, chunk_rows=chunk)
    assert rows.tolist() == [list(range(10))] * 2
    assert np.all(scores == scores[:, :1])


@pytest.mark.parametrize("chunk", CHUNKS)
def test_random_gallery_matches_brute_force(chunk, monkeypatch):
    monkeypatch.setattr(zscrgan.search, "QUERY_BLOCK", 8)  # several query blocks as well
    rng = np.random.default_rng(1)
    queries = rng.standard_normal((21, 12)).astype(np.float32)
    gallery = rng.standard_normal((300, 12)).astype(np.float32)
    scores, rows = search(queries, gallery, 40, chunk_rows=chunk)
    want_scores, want_rows = brute_force(queries, gallery, 40)
    assert np.allclose(scores, want_scores, atol=1e-6)
    gaps = np.diff(want_scores, axis=1)
    clear = np.minimum(np.pad(-gaps, ((0, 0), (1, 0)), constant_values=1), np.pad(-gaps, ((0, 0), (0, 1)),
                                                                                  constant_values=1)) > 1e-5
    assert np.array_equal(rows[clear], want_rows[clear])  # float32 near-ties may swap neighbours


def test_gallery_smaller_than_k_returns_every_row():
    gallery = np.array([[1, 0], [0, 1], [1, 1]], np.float32)
    scores, rows = search(np.array([[1, 0.5]], np.float32), gallery, 50, chunk_rows=2)
    assert rows.tolist() == [[2, 0, 1]]
    assert np.allclose(scores, [[np.cos(np.pi / 4 - np.arctan(0.5)), np.cos(np.arctan(0.5)),
                                 np.cos(np.pi / 2 - np.arctan(0.5))]])
    scores, rows = search(np.ones((2, 2), np.float32), np.zeros((0, 2), np.float32), 5)
    assert scores.shape == rows.shape == (2, 0)


def test_embed_is_applied_chunk_by_chunk_as_to_the_whole_gallery():
    rng = np.random.default_rng(2)
    w = tf.constant(rng.standard_normal((10, 6)), tf.float32)
    gallery = rng.random((100, 10)).astype(np.float32)
    queries = rng.standard_normal((5, 6)).astype(np.float32)
    chunked = search(queries, gallery, 20, embed=lambda x: tf.nn.relu(x @ w), chunk_rows=7)
    whole = search(queries, tf.nn.relu(gallery @ w).numpy(), 20, chunk_rows=1000)
    assert np.allclose(chunked[0], whole[0], atol=1e-6)
    assert (chunked[1] == whole[1]).mean() > 0.99


def test_non_finite_gallery_row_is_a_user_error_naming_its_rows():
    gallery = np.ones((10, 3), np.float32)
    gallery[7, 1] = np.nan
    with pytest.raises(UserError, match=r"g\.npy: NaN or infinite values .* rows 6-8"):
        search(np.ones((2, 3), np.float32), gallery, 5, chunk_rows=3, gallery_name="g.npy")


class RecordingRows:
    """A gallery that records every row range read and the process's anonymous memory at each read."""

    def __init__(self, rows):
        self.rows, self.shape, self.reads, self.anon = rows, rows.shape, [], []

    def __getitem__(self, index):
        self.reads.append((index.start, index.stop))
        self.anon.append(rss_anon())
        return self.rows[index]


def rss_anon() -> int:
    """Resident anonymous memory of this process in bytes (file-backed pages, e.g. a memory map, excluded)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("RssAnon:"))


def test_reads_are_chunks_in_order_whatever_the_gallery_size():
    for n_gallery in (10, 1000):
        gallery = RecordingRows(np.random.default_rng(3).random((n_gallery, 4)).astype(np.float32))
        search(np.ones((3, 4), np.float32), gallery, 5, chunk_rows=64)
        starts = list(range(0, n_gallery, 64))
        assert gallery.reads == [(s, min(s + 64, n_gallery)) for s in starts]


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads Linux /proc/self/status")
def test_anonymous_memory_does_not_grow_with_a_memory_mapped_gallery(tmp_path):
    # 10,000 rows x 512 (20 MB) and ten times that (200 MB), written in chunks and memory-mapped:
    # a search that held the gallery, or its embeddings, would add hundreds of MB of anonymous memory.
    dim, small, factor = 512, 10_000, 10
    path = tmp_path / "gallery.npy"
    big = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(small * factor, dim))
    rng = np.random.default_rng(4)
    for start in range(0, len(big), small):
        big[start:start + small] = rng.random((small, dim), np.float32)
    big.flush()
    del big
    gallery = np.load(path, mmap_mode="r")
    queries = rng.standard_normal((100, dim)).astype(np.float32)
    peaks = []
    for rows in (gallery[:small], gallery):
        recorded = RecordingRows(rows)
        search(queries, recorded, 50, chunk_rows=4096)
        peaks.append(max(recorded.anon))
    grown = peaks[1] - peaks[0]
    assert grown < 0.2 * gallery.nbytes, f"anonymous memory grew by {grown / 2**20:.0f} MB"
