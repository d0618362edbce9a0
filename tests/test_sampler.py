"""The class-batch sampler reproduces the released batch construction (spec/algorithm.md, "Sampler")."""

import json

import numpy as np
import pytest

from zscrgan.data.sampler import ClassBatchSampler, take_images, text_rows, to_rows
from zscrgan.errors import UserError


def _uses(cls, img, c):
    """Image indices taken by class c, in the order the rows were drawn (batch by batch, row by row)."""
    flat_cls, flat_img = cls.ravel(), img.ravel()
    return flat_img[flat_cls == c].tolist()


# ---- fewer seen classes than the batch size (n <= B) ----------------------------------------------


def test_few_classes_every_class_twice_plus_two_distinct_extras():
    sampler = ClassBatchSampler([3, 1, 4], batch_size=8, seed=0)
    cls, img = sampler.schedule(50)
    assert cls.shape == img.shape == (50, 8)
    assert cls.dtype == img.dtype == np.int64
    extras = set()
    for row in cls:
        counts = np.bincount(row, minlength=3)
        # floor(8/3) = 2 of each class, plus 8 mod 3 = 2 extra classes drawn without replacement.
        assert sorted(counts.tolist()) == [2, 3, 3]
        extras.add(tuple(np.flatnonzero(counts == 3)))
    # The extra classes are random, so over 50 batches every possible pair shows up.
    assert extras == {(0, 1), (0, 2), (1, 2)}
    # Row order is shuffled: any class can open a batch.
    assert set(cls[:, 0].tolist()) == {0, 1, 2}


def test_few_classes_image_pointer_walks_each_class_from_index_one():
    sampler = ClassBatchSampler([3, 1, 4], batch_size=8, seed=1)
    cls, img = sampler.schedule(5)
    # Pointer starts at 0 and is advanced before use: first use is image 1, then 2, ..., wrapping.
    assert _uses(cls, img, 0)[:10] == [1, 2, 0, 1, 2, 0, 1, 2, 0, 1]
    assert _uses(cls, img, 1)[:10] == [0] * 10  # a class with one image always takes image 0
    assert _uses(cls, img, 2)[:10] == [1, 2, 3, 0, 1, 2, 3, 0, 1, 2]


def test_n_equal_to_batch_size_gives_a_permutation_per_batch():
    cls, _ = ClassBatchSampler([2, 2, 2, 2], batch_size=4, seed=3).schedule(20)
    for row in cls:
        assert sorted(row.tolist()) == [0, 1, 2, 3]


# ---- more seen classes than the batch size (n > B) ------------------------------------------------


def test_more_classes_first_walk_in_split_order_then_padded_then_reshuffled():
    sampler = ClassBatchSampler([2, 3, 1, 2, 4], batch_size=2, seed=0)
    cls, img = sampler.schedule(6)
    # First walk: split-file order, the short last slice padded with -1.
    np.testing.assert_array_equal(cls[:3], [[0, 1], [2, 3], [4, -1]])
    np.testing.assert_array_equal(img[:3], [[1, 1], [0, 1], [1, -1]])
    # Batch 4 starts a new walk (the padded batch ended the old one): a permutation of 0..4.
    second_walk = cls[3:6].ravel()
    assert second_walk[-1] == -1
    assert sorted(second_walk[:-1].tolist()) == [0, 1, 2, 3, 4]
    # Second use of each class: counts [2, 3, 1, 2, 4] -> pointers 2 mod count = [0, 2, 0, 0, 2].
    second_use = {c: i for c, i in zip(second_walk[:-1], img[3:6].ravel()[:-1])}
    assert second_use == {0: 0, 1: 2, 2: 0, 3: 0, 4: 2}


def test_more_classes_every_walk_is_a_permutation_with_a_padded_last_slice():
    counts = [1, 2, 3, 4, 5, 6, 7]
    cls, img = ClassBatchSampler(counts, batch_size=3, seed=5).schedule(30)
    np.testing.assert_array_equal(cls[:3], [[0, 1, 2], [3, 4, 5], [6, -1, -1]])
    np.testing.assert_array_equal(img[:3], [[0, 1, 1], [1, 1, 1], [1, -1, -1]])
    walks = cls.reshape(10, 9)  # 7 classes = 3 + 3 + 1 real rows, 2 padded rows per walk
    for walk in walks:
        np.testing.assert_array_equal(walk[-2:], [-1, -1])
        assert sorted(walk[:7].tolist()) == list(range(7))
    assert np.all(img[cls == -1] == -1)
    # Walks after the first are reshuffled (all ten equal to 0..6 would mean no reshuffle).
    assert any(not np.array_equal(walk[:7], np.arange(7)) for walk in walks[1:])
    # Uses 1..4 of class k (k + 1 images): image u mod (k + 1).
    assert _uses(cls, img, 0)[:4] == [0, 0, 0, 0]
    assert _uses(cls, img, 1)[:4] == [1, 0, 1, 0]
    assert _uses(cls, img, 2)[:4] == [1, 2, 0, 1]
    assert _uses(cls, img, 6)[:4] == [1, 2, 3, 4]


def test_n_multiple_of_batch_size_never_pads_and_never_yields_an_empty_batch():
    cls, _ = ClassBatchSampler([2] * 6, batch_size=3, seed=2).schedule(20)
    assert cls.shape == (20, 3)
    assert np.all(cls >= 0)
    np.testing.assert_array_equal(cls[:2], [[0, 1, 2], [3, 4, 5]])
    for walk in cls.reshape(10, 6):
        assert sorted(walk.tolist()) == list(range(6))


def test_the_released_cub_shape_pads_every_fifth_batch_with_ten_rows():
    cls, _ = ClassBatchSampler([3] * 150, batch_size=32, seed=0).schedule(10)
    padded_per_batch = (cls == -1).sum(axis=1)
    np.testing.assert_array_equal(padded_per_batch, [0, 0, 0, 0, 10] * 2)


def test_no_padding_option_fills_the_short_slice_from_the_next_walk():
    sampler = ClassBatchSampler([1, 2, 3, 4, 5, 6, 7], batch_size=3, seed=4, pad_short_batches=False)
    cls, img = sampler.schedule(28)
    assert np.all(cls >= 0) and np.all(img >= 0)
    stream = cls.ravel()
    np.testing.assert_array_equal(stream[:7], np.arange(7))
    # Every consecutive block of 7 rows is one walk, even where a batch straddles two walks.
    for walk in stream.reshape(12, 7):
        assert sorted(walk.tolist()) == list(range(7))


# ---- determinism and resuming ---------------------------------------------------------------------


@pytest.mark.parametrize("counts,batch_size", [([3, 1, 4], 8), ([1, 2, 3, 4, 5, 6, 7], 3)])
def test_same_seed_same_schedule_different_seed_different_schedule(counts, batch_size):
    a = ClassBatchSampler(counts, batch_size, seed=11).schedule(40)
    b = ClassBatchSampler(counts, batch_size, seed=11).schedule(40)
    c = ClassBatchSampler(counts, batch_size, seed=12).schedule(40)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


@pytest.mark.parametrize(
    "counts,batch_size,pad,warmup",
    [([3, 1, 4], 8, True, 7), ([1, 2, 3, 4, 5, 6, 7], 3, True, 4), ([1, 2, 3, 4, 5, 6, 7], 3, False, 5)],
)
def test_state_dict_round_trip_through_json_continues_identically(counts, batch_size, pad, warmup):
    original = ClassBatchSampler(counts, batch_size, seed=21, pad_short_batches=pad)
    original.schedule(warmup)  # stop mid-walk, with advanced pointers
    saved = json.loads(json.dumps(original.state_dict()))
    resumed = ClassBatchSampler(counts, batch_size, seed=999, pad_short_batches=pad)
    resumed.load_state_dict(saved)
    expected, got = original.schedule(25), resumed.schedule(25)
    np.testing.assert_array_equal(expected[0], got[0])
    np.testing.assert_array_equal(expected[1], got[1])


def test_state_dict_is_a_snapshot_not_a_live_view():
    sampler = ClassBatchSampler([1, 2, 3, 4, 5], batch_size=2, seed=0)
    state = sampler.state_dict()
    first = sampler.schedule(6)
    sampler.load_state_dict(state)
    again = sampler.schedule(6)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])


def test_loading_a_state_saved_for_other_data_is_refused():
    state = ClassBatchSampler([2, 2, 2], batch_size=2, seed=0).state_dict()
    with pytest.raises(UserError, match="images_per_class"):
        ClassBatchSampler([2, 2, 3], batch_size=2, seed=0).load_state_dict(state)
    with pytest.raises(UserError, match="batch_size"):
        ClassBatchSampler([2, 2, 2], batch_size=4, seed=0).load_state_dict(state)


def test_invalid_arguments_are_rejected():
    with pytest.raises(ValueError, match="at least one image"):
        ClassBatchSampler([2, 0, 1], batch_size=2, seed=0)
    with pytest.raises(ValueError, match="non-empty"):
        ClassBatchSampler([], batch_size=2, seed=0)
    with pytest.raises(ValueError, match="batch_size"):
        ClassBatchSampler([1, 1], batch_size=0, seed=0)


# ---- pure helpers ---------------------------------------------------------------------------------


def test_take_images_advances_twice_for_a_class_repeated_in_one_batch():
    cls = np.array([2, 0, 2, -1, 2])
    pointers = np.array([0, 0, 1])
    counts = np.array([1, 2, 3])  # class 0 has a single image
    img, new_pointers = take_images(cls, pointers, counts)
    # Class 2 starts at pointer 1: rows take 2, 0, 1 in row order and leave the pointer at 1.
    np.testing.assert_array_equal(img, [2, 0, 0, -1, 1])
    np.testing.assert_array_equal(new_pointers, [0, 0, 1])
    np.testing.assert_array_equal(pointers, [0, 0, 1])  # input untouched


def test_to_rows_maps_class_and_image_to_packed_rows_and_padding_to_the_zero_row():
    offsets = np.array([0, 2, 5])  # counts [2, 3, 1]; row 6 is the zero row
    cls = np.array([[0, 1, -1], [2, 0, 1]])
    img = np.array([[1, 0, -1], [0, 0, 2]])
    np.testing.assert_array_equal(to_rows(cls, img, offsets, pad_row=6), [[1, 2, 6], [5, 0, 4]])
    np.testing.assert_array_equal(text_rows(cls, pad_row=3), [[0, 1, 3], [2, 0, 1]])
    with pytest.raises(ValueError, match="same shape"):
        to_rows(cls, img[:1], offsets, pad_row=6)


def test_schedule_rows_point_at_the_intended_images():
    counts = [2, 3, 1, 4, 2]
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    labels = np.repeat(np.arange(5), counts)  # class of each packed image row
    labels = np.append(labels, -1)  # the zero row
    cls, img = ClassBatchSampler(counts, batch_size=2, seed=0).schedule(12)
    rows = to_rows(cls, img, offsets, pad_row=len(labels) - 1)
    np.testing.assert_array_equal(labels[rows], cls)


def test_wrong_pairing_released_shift_and_distinct_option():
    from zscrgan.data.sampler import wrong_pairing

    cls = np.array([[4, 4, 7, 2], [1, 1, 1, 1]])
    # Released: row i takes row i-1's wrong pair (row 0 takes the last row), even of the same class.
    assert wrong_pairing(cls).tolist() == [[3, 0, 1, 2], [3, 0, 1, 2]]
    # distinct: the nearest earlier row (cyclically) of another class; none exists in the second batch.
    assert wrong_pairing(cls, distinct=True).tolist() == [[3, 3, 1, 2], [3, 0, 1, 2]]
    padded = np.array([[5, -1, -1]])
    assert wrong_pairing(padded, distinct=True).tolist() == [[2, 0, 0]]


# ---- the wrong class of each row (`wrong_class`) ---------------------------------------------------
COUNTS = [3, 1, 4, 2, 5, 2, 3, 1, 2, 4]  # ten classes


def _texts(n=len(COUNTS), dim=6, seed=3):
    return np.random.default_rng(seed).standard_normal((n, dim))


def _sampler(mode, counts=COUNTS, batch_size=4, seed=5, **kwargs):
    kwargs.setdefault("class_texts", _texts(len(counts)))
    return ClassBatchSampler(counts, batch_size, seed, wrong_class=mode, **kwargs)


@pytest.mark.parametrize("distinct", [False, True])
def test_shift_and_distinct_wrong_pairs_are_rows_of_the_same_batch(distinct):
    from zscrgan.data.sampler import wrong_pairing
    sampler = _sampler("distinct" if distinct else "shift")
    cls, img = sampler.schedule(12)  # 10 classes, B = 4: every third batch has two padded rows
    assert np.any(cls < 0)
    wrong_cls, wrong_img = sampler.wrong_pairs(cls, img)
    rows = wrong_pairing(cls, distinct=distinct)
    for b in range(len(cls)):
        assert wrong_cls[b].tolist() == [cls[b, j] for j in rows[b]]
        assert wrong_img[b].tolist() == [img[b, j] for j in rows[b]]


@pytest.mark.parametrize("mode", ["random", "similar_text", "kmeans"])
def test_batches_do_not_depend_on_wrong_class(mode):
    a, b = _sampler("shift"), _sampler(mode)
    for _ in range(3):
        sa, sb = a.schedule(7), b.schedule(7)
        b.wrong_pairs(*sb)  # drawing wrong pairs leaves the batch stream alone
        np.testing.assert_array_equal(sa[0], sb[0])
        np.testing.assert_array_equal(sa[1], sb[1])


def test_random_wrong_class_is_a_uniform_other_class_and_a_uniform_image():
    sampler = _sampler("random", seed=8)
    cls, img = sampler.schedule(3000)
    wrong_cls, wrong_img = sampler.wrong_pairs(cls, img)
    real = cls >= 0
    assert np.all(wrong_cls[~real] == -1) and np.all(wrong_img[~real] == -1)
    assert not np.any(wrong_cls[real] == cls[real])
    counts = np.asarray(COUNTS)
    assert np.all((0 <= wrong_img[real]) & (wrong_img[real] < counts[wrong_cls[real]]))
    # Per row class c, every other class about equally often: (rows of c) / 9 each.
    for c in range(len(COUNTS)):
        seen = np.bincount(wrong_cls[cls == c], minlength=len(COUNTS))
        assert seen[c] == 0
        expected = np.sum(cls == c) / (len(COUNTS) - 1)
        assert np.all(np.abs(np.delete(seen, c) - expected) < 5 * np.sqrt(expected))
    # And every image of class 4 (5 images) about equally often.
    uses = np.bincount(wrong_img[wrong_cls == 4], minlength=5)
    assert np.all(np.abs(uses - uses.mean()) < 5 * np.sqrt(uses.mean()))


def test_similar_text_wrong_class_is_the_other_class_of_highest_text_cosine():
    texts = _texts()
    # Independently: cosines by plain Python sums over the vectors.
    def cos(a, b):
        return sum(x * y for x, y in zip(a, b)) / (sum(x * x for x in a) * sum(y * y for y in b)) ** 0.5
    nearest = [max((j for j in range(len(texts)) if j != c), key=lambda j: cos(texts[c], texts[j]))
               for c in range(len(texts))]
    sampler = _sampler("similar_text", class_texts=3.0 * texts)  # cosine: the scale of the texts is irrelevant
    cls, img = sampler.schedule(200)
    wrong_cls, wrong_img = sampler.wrong_pairs(cls, img)
    real = cls >= 0
    assert wrong_cls[real].tolist() == [nearest[c] for c in cls[real]]
    assert np.all(wrong_cls[~real] == -1)
    assert np.all(wrong_img[real] < np.asarray(COUNTS)[wrong_cls[real]])


def _grouped_texts(groups, dim=8, seed=4):
    """Texts in tight groups around orthogonal directions: groups[c] is class c's group."""
    r = np.random.default_rng(seed)
    return np.eye(dim)[groups] + 0.01 * r.standard_normal((len(groups), dim))


def test_kmeans_finds_well_separated_groups():
    from zscrgan.data.sampler import kmeans
    groups = np.array([0, 1, 2, 0, 1, 2, 2, 0, 1, 2])
    labels = kmeans(_grouped_texts(groups), 3, np.random.default_rng(0))
    # The same partition, up to the clusters' names.
    assert len({(g, l) for g, l in zip(groups, labels)}) == 3 == len(set(labels))


def test_kmeans_wrong_class_comes_from_the_rows_text_cluster():
    groups = np.array([0, 1, 2, 0, 1, 2, 2, 0, 1, 3])  # class 9 alone in its cluster
    sampler = _sampler("kmeans", class_texts=_grouped_texts(groups), kmeans_clusters=4, seed=2)
    cls, img = sampler.schedule(2000)
    wrong_cls, _ = sampler.wrong_pairs(cls, img)
    for c in range(len(COUNTS)):
        chosen = set(wrong_cls[cls == c].tolist())
        mates = {j for j in range(len(COUNTS)) if groups[j] == groups[c] and j != c}
        # Each mate is drawn; a class alone in its cluster draws from every other class.
        assert chosen == (mates or set(range(len(COUNTS))) - {c})


@pytest.mark.parametrize("mode", ["random", "kmeans"])
def test_wrong_pairs_resume_identically_from_a_saved_state(mode):
    original = _sampler(mode)
    original.wrong_pairs(*original.schedule(9))
    saved = json.loads(json.dumps(original.state_dict()))
    resumed = _sampler(mode, seed=77)
    resumed.load_state_dict(saved)
    for _ in range(2):
        a, b = original.schedule(5), resumed.schedule(5)
        np.testing.assert_array_equal(original.wrong_pairs(*a), resumed.wrong_pairs(*b))


def test_wrong_class_choices_refuse_what_they_cannot_do():
    with pytest.raises(UserError, match="wrong_class"):
        _sampler("shift").load_state_dict(_sampler("random").state_dict())
    with pytest.raises(UserError, match="at least 2 seen classes"):
        _sampler("random", counts=[3])
    # A state saved before wrong_class existed is a shift sampler's.
    old = _sampler("shift").state_dict()
    del old["wrong_class"], old["wrong_rng"]
    _sampler("shift").load_state_dict(old)
    with pytest.raises(UserError, match="wrong_class"):
        _sampler("random").load_state_dict(old)
