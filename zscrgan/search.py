"""Exact cosine top-K search over a gallery of any size, chunk by chunk with a running merge.

The gallery is read `chunk_rows` rows at a time (a numpy array, a memory-mapped `.npy`, anything
with `.shape` and row slicing), embedded by an optional `embed` function, L2-normalised and scored
against the L2-normalised queries; each chunk's candidates are merged into every query's running
best K. Memory holds one chunk, the queries and the [Q, K] running lists, whatever the gallery's
size. Ties rank the lower gallery row first, so the result is exactly a stable sort of all the
similarities, cut at K (the faiss `IndexFlatIP` shape: `search(...) -> (scores, indices)`).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import tensorflow as tf

from zscrgan.errors import UserError

GALLERY_CHUNK = 4096  # gallery rows embedded and scored at once
QUERY_BLOCK = 4096    # queries scored at once against a chunk: bounds the [queries, rows] similarities
# A chunk's similarities are cut into blocks of this many rows; only the K blocks with the highest
# maxima can hold a query's best K, so the exact top-K runs over K * BLOCK values instead of the chunk.
BLOCK = 16


@tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32)])
def unit_rows(x):
    """(x with rows scaled to L2 norm 1, whether every row's squared norm is finite); a zero row stays zero.

    Divided by the norm rather than multiplied by TensorFlow's rsqrt, whose vectorised and scalar
    forms differ in the last bit: equal rows must get bit-equal results wherever they are in a batch.
    (The floor on the norm keeps the division out of the optimiser's x / sqrt -> x * rsqrt rewrite.)
    """
    square_sum = tf.reduce_sum(tf.square(x), axis=1, keepdims=True)
    return x / tf.maximum(tf.sqrt(square_sum), 1e-6), tf.reduce_all(tf.math.is_finite(square_sum))


@tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32), tf.TensorSpec([None, None], tf.float32),
                              tf.TensorSpec([None, None], tf.float32), tf.TensorSpec([None, None], tf.int64),
                              tf.TensorSpec([], tf.int64), tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.int32)])
def _merge_chunk(query_unit, gallery_unit, best_scores, best_rows, first_row, n_rows, k):
    """The running best k (scores, gallery rows) of each query, merged with one chunk's first `n_rows` rows.

    `best_*` are the merge so far (earlier, so lower, rows; [Q, 0] at the start), `first_row` the
    gallery row of the chunk's first row; `k` is at most the number of rows seen with this chunk.
    """
    sims = tf.matmul(query_unit, gallery_unit, transpose_b=True)[:, :n_rows]
    n_queries = tf.shape(sims)[0]
    n_blocks = (n_rows + BLOCK - 1) // BLOCK
    # -inf padding to whole blocks; padded slots never outrank the >= k real candidates.
    padded = tf.pad(sims, [[0, 0], [0, n_blocks * BLOCK - n_rows]], constant_values=-np.inf)
    blocks = tf.reshape(padded, [n_queries, n_blocks, BLOCK])
    block_max = tf.reduce_max(blocks, axis=2)
    # Once k rows are kept, a block can add one only if its maximum beats the k-th kept score (an
    # equal score ranks after it: lower row); taking the most such blocks of any query is enough.
    kth = tf.cond(tf.shape(best_scores)[1] >= k, lambda: best_scores[:, -1],
                  lambda: tf.fill([n_queries], -np.inf))
    useful = tf.reduce_max(tf.reduce_sum(tf.cast(block_max > kth[:, None], tf.int32), axis=1))
    # The top blocks by maximum, back in row order, so that position order is gallery-row order.
    chosen = tf.sort(tf.math.top_k(block_max, tf.minimum(tf.minimum(k, n_blocks), useful)).indices, axis=1)
    cand_scores = tf.reshape(tf.gather(blocks, chosen, batch_dims=1), [n_queries, -1])
    cand_rows = tf.reshape(tf.cast(chosen[:, :, None] * BLOCK + tf.range(BLOCK)[None, None, :], tf.int64),
                           [n_queries, -1]) + first_row
    # Earlier chunks first: top_k ranks equal values by position, i.e. by lower gallery row.
    scores = tf.concat([best_scores, cand_scores], axis=1)
    rows = tf.concat([best_rows, cand_rows], axis=1)
    top = tf.math.top_k(scores, k, sorted=True)
    return top.values, tf.gather(rows, top.indices, batch_dims=1)


def unit_chunks(gallery, embed: Callable | None = None, chunk_rows: int = GALLERY_CHUNK,
                gallery_name: str = "gallery", normalized: bool = False):
    """The gallery as (first row, rows, unit rows [chunk_rows, E]) chunks, in row order: read
    `chunk_rows` rows at a time, embedded by `embed` (None: as they are) and L2-normalised
    (`normalized`: the rows are unit rows already, a saved index, and are taken as they are).

    Every chunk has `chunk_rows` rows, the last zero-padded: TensorFlow's kernels may take another
    summation order for another shape, and equal rows must get equal results wherever they are. A
    row whose embedding is not finite is a UserError naming `gallery_name` and the chunk's rows.
    """
    n_gallery = int(gallery.shape[0])
    chunk_rows = max(1, min(chunk_rows, n_gallery))
    for start in range(0, n_gallery, chunk_rows):
        stop = min(start + chunk_rows, n_gallery)
        with np.errstate(over="ignore", invalid="ignore"):  # beyond float32: inf, refused below by name
            rows = np.asarray(gallery[start:stop], dtype=np.float32)
        if stop - start < chunk_rows:
            rows = np.concatenate([rows, np.zeros((chunk_rows - len(rows), rows.shape[1]), np.float32)])
        rows = tf.convert_to_tensor(rows)
        if normalized:
            yield start, stop - start, rows
            continue
        gallery_unit, finite = unit_rows(rows if embed is None else embed(rows))
        if not finite:
            raise UserError(f"{gallery_name}: NaN or infinite values (or values too large) in rows {start}-{stop - 1}")
        yield start, stop - start, gallery_unit


def search(queries, gallery, k: int, embed: Callable | None = None,
           chunk_rows: int = GALLERY_CHUNK, gallery_name: str = "gallery",
           normalized: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Each query's k most cosine-similar gallery rows: (scores [Q, k'], rows [Q, k']), best first.

    k' = min(k, gallery rows); rows are int64 gallery row indices, ties ranked by lower row; scores
    are float32 cosines. `queries` [Q, E] are already embedded; `embed` maps a float32 tensor of
    gallery rows [n, D] to [n, E] (None: the rows are compared as they are). `normalized`: the gallery
    holds unit rows already (a saved index of `unit_chunks` rows, built with the same `chunk_rows`:
    then the search gives bit for bit what embedding the gallery again gives). A gallery row whose
    embedding is not finite (NaN or infinity in the input) stops the search with a UserError naming
    `gallery_name` and the chunk's rows.
    """
    n_gallery = int(gallery.shape[0])
    k = min(int(k), n_gallery)
    query_unit, finite = unit_rows(tf.convert_to_tensor(queries, tf.float32))
    if not finite:
        raise UserError("queries: NaN or infinite values")
    n_queries = int(query_unit.shape[0])
    query_blocks = [(q, tf.zeros([q.shape[0], 0], tf.float32), tf.zeros([q.shape[0], 0], tf.int64))
                    for q in (query_unit[i:i + QUERY_BLOCK] for i in range(0, n_queries, QUERY_BLOCK))]
    for start, n_rows, gallery_unit in unit_chunks(gallery, embed, chunk_rows, gallery_name, normalized):
        k_now = tf.constant(min(k, start + n_rows), tf.int32)
        first_row = tf.constant(start, tf.int64)
        n_rows = tf.constant(n_rows, tf.int32)
        query_blocks = [(q, *_merge_chunk(q, gallery_unit, s, r, first_row, n_rows, k_now))
                        for q, s, r in query_blocks]
    if not query_blocks:
        return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
    return (np.concatenate([s.numpy() for _, s, _ in query_blocks]),
            np.concatenate([r.numpy() for _, _, r in query_blocks]))
