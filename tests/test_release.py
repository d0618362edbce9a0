"""The released dataset folder: reading what Python 2 wrote, validation, and atomic writing."""

import os
import pickle
import struct

import numpy as np
import pytest

from zscrgan.data import release
from zscrgan.data.release import FILES, Dataset, load_dataset, validate, write_dataset
from zscrgan.data.safe_pickle import dump_pickle
from zscrgan.errors import UserError

IMG, TXT, SEEN, UNSEEN = FILES


def _vectors(n, dim, offset):
    return [np.arange(dim, dtype=np.float32) + offset + 10 * i for i in range(n)]


def _raw():
    """A small valid dataset as the released pickles hold it: seen 3, 1 (unsorted); unseen 2, 4."""
    image = {1: _vectors(3, 4, 0.5), 2: _vectors(2, 4, 1.5), 3: _vectors(2, 4, 2.5),
             4: _vectors(3, 4, 3.5)}
    text = {c: _vectors(2, 3, -c) for c in (1, 2, 3, 4)}
    return {IMG: image, TXT: text, SEEN: [3, 1], UNSEEN: [2, 4]}


def _write_raw(folder, raw):
    folder.mkdir(exist_ok=True)
    for name, obj in raw.items():
        dump_pickle(obj, folder / name)
    return folder


def _assert_matches(ds, raw):
    assert ds.seen == raw[SEEN] and ds.unseen == raw[UNSEEN]
    for loaded, stored in ((ds.image, raw[IMG]), (ds.text, raw[TXT])):
        assert set(loaded) == {1, 2, 3, 4}
        for c, matrix in loaded.items():
            assert matrix.dtype == np.float32
            np.testing.assert_array_equal(matrix, np.stack(stored[c]).astype(np.float32))


# --- What Python 2 wrote: protocol 2 opcodes built by hand, no memo (which is optional) ---

def _py2_int(v):
    return b"K" + bytes([v]) if 0 <= v < 256 else b"J" + struct.pack("<i", v)


def _py2_str(data: bytes):
    """A Python 2 `str` (bytes), as SHORT_BINSTRING or BINSTRING."""
    if len(data) < 256:
        return b"U" + bytes([len(data)]) + data
    return b"T" + struct.pack("<i", len(data)) + data


def _py2_global(module, name):
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _py2_dtype(dtype: np.dtype):
    return (_py2_global("numpy", "dtype") + _py2_str(dtype.str[1:].encode())
            + _py2_int(0) + _py2_int(1) + b"\x87R"
            + b"(" + _py2_int(3) + _py2_str(dtype.str[:1].encode()) + b"NNN"
            + _py2_int(-1) + _py2_int(-1) + _py2_int(0) + b"tb")


def _py2_array(a: np.ndarray):
    shape = b"(" + b"".join(_py2_int(n) for n in a.shape) + b"t"
    return (_py2_global("numpy.core.multiarray", "_reconstruct") + _py2_global("numpy", "ndarray")
            + _py2_int(0) + b"\x85" + _py2_str(b"b") + b"\x87R"
            + b"(" + _py2_int(1) + shape + _py2_dtype(a.dtype) + b"\x89"
            + _py2_str(a.tobytes()) + b"tb")


def _py2_int64(v):
    return (_py2_global("numpy.core.multiarray", "scalar") + _py2_dtype(np.dtype("<i8"))
            + _py2_str(struct.pack("<q", v)) + b"\x86R")


def _py2_list(items):
    return b"](" + b"".join(items) + b"e"


def _py2_dict(pairs):
    return b"}(" + b"".join(k + v for k, v in pairs) + b"u"


def _py2_pickle(body):
    return b"\x80\x02" + body + b"."


def test_loads_a_folder_written_by_python2(tmp_path):
    raw = _raw()
    # Image keys as numpy int64 scalars and float32 vectors; text keys as ints and float64
    # vectors (a 1-D vector over 255 bytes uses BINSTRING); unseen ids as numpy scalars.
    raw[TXT] = {c: [np.linspace(c, c + 1, 40), np.linspace(-c, 0, 40)] for c in (1, 2, 3, 4)}
    files = {
        IMG: _py2_dict(
            (_py2_int64(c), _py2_list(_py2_array(v) for v in vs))
            for c, vs in raw[IMG].items()),
        TXT: _py2_dict(
            (_py2_int(c), _py2_list(_py2_array(v) for v in vs))
            for c, vs in raw[TXT].items()),
        SEEN: _py2_list(_py2_int(c) for c in raw[SEEN]),
        UNSEEN: _py2_list(_py2_int64(c) for c in raw[UNSEEN]),
    }
    folder = tmp_path / "PY2"
    folder.mkdir()
    for name, body in files.items():
        (folder / name).write_bytes(_py2_pickle(body))
    assert b"numpy.core.multiarray\n_reconstruct" in (folder / IMG).read_bytes()

    ds = load_dataset(folder)

    _assert_matches(ds, raw)
    assert ds.name == "PY2"
    assert all(type(c) is int for c in [*ds.seen, *ds.unseen, *ds.image, *ds.text])
    assert (ds.image_dim, ds.text_dim) == (4, 40)


def test_accepts_digit_string_keys_matrix_values_and_id_arrays(tmp_path):
    raw = _raw()
    raw[IMG] = {str(c): np.stack(v) for c, v in raw[IMG].items()}
    raw[SEEN] = np.array([3, 1], dtype=np.int32)
    ds = load_dataset(_write_raw(tmp_path / "D", raw))
    assert ds.seen == [3, 1] and type(ds.seen[0]) is int
    np.testing.assert_array_equal(ds.image[2], np.stack(_raw()[IMG][2]))


def test_ignores_classes_outside_both_splits(tmp_path):
    raw = _raw()
    raw[IMG][99] = [np.full(7, np.nan)]  # wrong dimension and NaN: never read
    raw[TXT][98] = "not even vectors"
    ds = load_dataset(_write_raw(tmp_path / "D", raw))
    assert set(ds.image) == set(ds.text) == {1, 2, 3, 4}


def test_counts_and_description(tmp_path):
    ds = load_dataset(_write_raw(tmp_path / "D", _raw()))
    assert ds.n_images(ds.seen) == 5 and ds.n_images(ds.unseen) == 5
    assert ds.n_texts([1, 2, 3, 4]) == 8
    assert ds.describe() == "D: 2 seen / 2 unseen classes, 10 images (4-d), 8 texts (3-d)"


def test_missing_folder_says_how_to_get_one(tmp_path):
    with pytest.raises(UserError, match="NOPE: no such dataset folder.*python -m zscrgan.data"):
        load_dataset(tmp_path / "NOPE")


@pytest.mark.parametrize("name", FILES)
def test_missing_file_is_named(tmp_path, name):
    folder = _write_raw(tmp_path / "D", _raw())
    (folder / name).unlink()
    with pytest.raises(UserError, match=f"{name}: missing.*python -m zscrgan.data convert"):
        load_dataset(folder)


def _set(name, value):
    return lambda raw: raw.__setitem__(name, value)


def _edit_class(name, cid, vectors):
    return lambda raw: raw[name].__setitem__(cid, vectors)


def _drop_class(name, cid):
    return lambda raw: raw[name].pop(cid)


def _nan_in(name, cid):
    def edit(raw):
        raw[name][cid][0] = raw[name][cid][0].copy()
        raw[name][cid][0][1] = np.nan
    return edit


BAD_CASES = {
    "seen-not-a-list": (_set(SEEN, {3: 1}), SEEN, "list of integer class ids"),
    "seen-floats": (_set(SEEN, [3.0, 1.0]), SEEN, "3.0"),
    "seen-empty": (_set(SEEN, []), SEEN, "seen split is empty"),
    "unseen-empty": (_set(UNSEEN, []), UNSEEN, "unseen split is empty"),
    "seen-repeated": (_set(SEEN, [3, 1, 3]), SEEN, "class 3 is listed more than once"),
    "overlap": (_set(UNSEEN, [2, 3]), UNSEEN, "class 3 is also in trainids.pkl"),
    "image-not-a-dict": (_set(IMG, [1, 2]), IMG, "expected a dict"),
    "image-bad-key": (_edit_class(IMG, "one", _vectors(1, 4, 0)), IMG, "key 'one'"),
    "image-absent": (_drop_class(IMG, 4), IMG, "class 4 of the split has no entry"),
    "text-empty-class": (_edit_class(TXT, 2, []), TXT, "class 2 has no text vectors"),
    "image-other-dim": (_edit_class(IMG, 2, _vectors(2, 5, 0)), IMG, "class 2 has 5-d image"),
    "text-other-dim": (_edit_class(TXT, 1, _vectors(2, 2, 0)), TXT, "class 1 has 2-d text"),
    "image-ragged": (_edit_class(IMG, 1, _vectors(1, 4, 0) + _vectors(1, 3, 0)), IMG,
                     "class 1 holds vectors of different lengths"),
    "image-not-numeric": (_edit_class(IMG, 1, ["abcd"]), IMG, "class 1, item 0 is not"),
    "image-scalar-value": (_edit_class(IMG, 1, 3.0), IMG, "class 1 holds a float"),
    "image-nan": (_nan_in(IMG, 1), IMG, "class 1 has NaN or infinite"),
    "text-inf": (_edit_class(TXT, 4, [np.array([1.0, np.inf, 0.0])]), TXT,
                 "class 4 has NaN or infinite"),
}


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_names_file_and_problem(tmp_path, case):
    edit, name, problem = BAD_CASES[case]
    raw = _raw()
    edit(raw)
    folder = _write_raw(tmp_path / "D", raw)
    with pytest.raises(UserError) as err:
        load_dataset(folder)
    message = str(err.value)
    assert message.startswith(str(folder / name) + ":")
    assert problem in message
    assert "\n" not in message


def test_unreadable_pickle_is_named(tmp_path):
    folder = _write_raw(tmp_path / "D", _raw())
    (folder / UNSEEN).write_bytes(b"\x80\x02](K\x02")  # truncated
    with pytest.raises(UserError, match=f"{UNSEEN}: not a readable pickle"):
        load_dataset(folder)


def test_validate_checks_a_dataset_built_in_memory(tmp_path):
    ds = load_dataset(_write_raw(tmp_path / "D", _raw()))
    validate(ds, tmp_path / "D")
    ds.text[1] = np.zeros((2, 3), np.float32)
    ds.text[1][0, 0] = np.inf
    with pytest.raises(UserError, match="txt_embed_dict.pkl: class 1 has NaN"):
        validate(ds, tmp_path / "D")


def _hidden_entries(parent):
    return [p.name for p in parent.iterdir() if p.name.startswith(".")]


def test_write_round_trips_in_the_released_structure(tmp_path):
    raw = _raw()
    folder = tmp_path / "OUT"
    write_dataset(folder, raw[IMG], {c: np.stack(v) for c, v in raw[TXT].items()},
                  raw[SEEN], np.array(raw[UNSEEN]))
    assert sorted(os.listdir(folder)) == sorted(FILES)
    assert _hidden_entries(tmp_path) == []
    _assert_matches(load_dataset(folder), raw)
    # The structure itself, as the original code expects it.
    with open(folder / TXT, "rb") as f:
        assert f.read(2) == b"\x80\x02"
    with open(folder / TXT, "rb") as f:
        text = pickle.load(f)
    with open(folder / UNSEEN, "rb") as f:
        unseen = pickle.load(f)
    assert all(type(c) is int and type(v) is list for c, v in text.items())
    assert all(v.ndim == 1 and v.dtype == np.float32 for vs in text.values() for v in vs)
    assert unseen == [2, 4] and all(type(c) is int for c in unseen)


def test_write_replaces_an_existing_folder(tmp_path):
    folder = tmp_path / "OUT"
    write_dataset(folder, *_raw().values())
    (folder / "stale.txt").write_text("from before")
    raw = _raw()
    raw[IMG][1] = _vectors(3, 4, 100.0)
    write_dataset(folder, *raw.values())
    assert not (folder / "stale.txt").exists()
    _assert_matches(load_dataset(folder), raw)
    assert _hidden_entries(tmp_path) == []


@pytest.mark.parametrize("existing", [True, False])
def test_failure_mid_write_leaves_previous_state(tmp_path, monkeypatch, existing):
    folder = tmp_path / "OUT"
    if existing:
        write_dataset(folder, *_raw().values())
    calls = []

    def dump_then_fail(obj, path):
        calls.append(path)
        if len(calls) == 3:
            raise UserError(f"{path}: cannot write: disk full")
        dump_pickle(obj, path)

    monkeypatch.setattr(release, "dump_pickle", dump_then_fail)
    changed = _raw()
    changed[IMG][1] = _vectors(3, 4, 100.0)
    with pytest.raises(UserError, match="disk full"):
        write_dataset(folder, *changed.values())
    assert len(calls) == 3
    assert os.listdir(tmp_path) == (["OUT"] if existing else [])
    if existing:
        _assert_matches(load_dataset(folder), _raw())


def test_write_refuses_invalid_data_before_writing(tmp_path):
    raw = _raw()
    raw[UNSEEN] = [2, 3]
    with pytest.raises(UserError, match="testids.pkl: class 3 is also in trainids.pkl"):
        write_dataset(tmp_path / "OUT", *raw.values())
    assert os.listdir(tmp_path) == []


def test_dataset_dimensions():
    ds = Dataset("X", {1: np.zeros((2, 5), np.float32)}, {1: np.zeros((1, 3), np.float32)}, [1], [])
    assert (ds.image_dim, ds.text_dim) == (5, 3)


def test_written_folder_gets_the_usual_permissions(tmp_path):
    umask = os.umask(0)
    os.umask(umask)
    folder = tmp_path / "OUT"
    write_dataset(folder, *_raw().values())
    assert folder.stat().st_mode & 0o777 == 0o777 & ~umask
    assert all((folder / name).stat().st_mode & 0o777 == 0o666 & ~umask for name in FILES)
