"""The dataset pickle loader admits Python 2 numpy pickles and refuses what could run code."""

import os
import pickle
import threading

import numpy as np
import pytest
from helpers import require_real_data

from zscrgan.data.safe_pickle import dump_pickle, load_pickle
from zscrgan.errors import UserError

# np.int64(7) as Python 2 / numpy 1 pickled it at protocol 2: module numpy.core.multiarray,
# dtype args as ints, and the raw bytes as a Python 2 `str` (SHORT_BINSTRING).
PY2_INT64_SEVEN = (
    b"\x80\x02cnumpy.core.multiarray\nscalar\ncnumpy\ndtype\nU\x02i8K\x00K\x01\x87R"
    b"(K\x03U\x01<NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
    b"U\x08\x07\x00\x00\x00\x00\x00\x00\x00\x86R."
)

# np.array([1.0, 2.0], dtype=float32) as Python 2 pickled it at protocol 2.
PY2_FLOAT32_ARRAY = (
    b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85U\x01b\x87R"
    b"(K\x01K\x02\x85cnumpy\ndtype\nU\x02f4K\x00K\x01\x87R"
    b"(K\x03U\x01<NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
    b"\x89U\x08\x00\x00\x80?\x00\x00\x00@tb."
)


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def test_loads_python2_numpy_scalar_and_array(tmp_path):
    scalar = load_pickle(_write(tmp_path / "s.pkl", PY2_INT64_SEVEN))
    array = load_pickle(_write(tmp_path / "a.pkl", PY2_FLOAT32_ARRAY))
    assert scalar == 7 and isinstance(scalar, np.integer)
    assert array.dtype == np.float32
    np.testing.assert_array_equal(array, [1.0, 2.0])


def test_python2_str_comes_back_as_text(tmp_path):
    # {'name': 'caf\xe9'} written by Python 2: BINSTRING bytes decode as latin-1.
    data = b"\x80\x02}U\x04nameU\x04caf\xe9s."
    assert load_pickle(_write(tmp_path / "d.pkl", data)) == {"name": "caf\u00e9"}


def test_refuses_os_system_without_running_it(tmp_path):
    marker = tmp_path / "ran"
    evil = f"cos\nsystem\n(S'touch {marker}'\ntR.".encode()
    path = _write(tmp_path / "evil.pkl", evil)
    with pytest.raises(UserError, match="refusing to load pickle: it references os.system") as err:
        load_pickle(path)
    assert str(path) in str(err.value)
    assert not marker.exists()


class _Eval:
    """Pickles as a call of builtins.eval that would create a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return eval, (f"open({str(self.marker)!r}, 'w').close()",)


def test_refuses_code_nested_deep_inside_data(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "nested.pkl"
    with open(path, "wb") as f:
        pickle.dump({1: [np.zeros(3, np.float32), _Eval(marker)]}, f, protocol=2)
    # Protocol 2 names it __builtin__.eval, as Python 2 would have.
    with pytest.raises(UserError, match=r"references __builtin__\.eval"):
        load_pickle(path)
    assert not marker.exists()


def test_refuses_codecs_other_than_latin1(tmp_path):
    # _codecs.encode is admitted only as Python 3's latin-1 bytes constructor.
    data = b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x05\x00\x00\x00rot13\x86R."
    with pytest.raises(UserError, match="r.pkl: refusing .* encoding 'rot13'"):
        load_pickle(_write(tmp_path / "r.pkl", data))


def test_refuses_other_numpy_functions(tmp_path):
    data = b"\x80\x02cnumpy\nload\nX\x01\x00\x00\x00x\x85R."
    with pytest.raises(UserError, match="numpy.load"):
        load_pickle(_write(tmp_path / "n.pkl", data))


@pytest.mark.parametrize(
    "content",
    [b"", b"this is a text file\n", PY2_FLOAT32_ARRAY[:40], b"\x80\x02}q\x00(K\x01h\x07u."],
    ids=["empty", "text", "truncated", "bad-memo"],
)
def test_unreadable_pickles_name_the_file(tmp_path, content):
    path = _write(tmp_path / "broken.pkl", content)
    with pytest.raises(UserError, match="broken.pkl: not a readable pickle"):
        load_pickle(path)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(UserError, match="absent.pkl: no such file"):
        load_pickle(tmp_path / "absent.pkl")


def test_dump_writes_protocol_2_that_loads_back(tmp_path):
    obj = {3: [np.arange(4, dtype=np.float32)], "ids": [1, 2], "raw": b"\x00\xff"}
    path = tmp_path / "x.pkl"
    dump_pickle(obj, path)
    assert path.read_bytes()[:2] == b"\x80\x02"
    back = load_pickle(path)
    np.testing.assert_array_equal(back[3][0], obj[3][0])
    assert back["ids"] == [1, 2] and back["raw"] == b"\x00\xff"


def test_failed_dump_keeps_previous_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "x.pkl"
    dump_pickle([1, 2, 3], path)
    with pytest.raises(TypeError, match="pickle"):
        dump_pickle([1, threading.Lock()], path)
    assert load_pickle(path) == [1, 2, 3]
    assert os.listdir(tmp_path) == ["x.pkl"]


def test_dump_into_missing_folder_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="nowhere"):
        dump_pickle([1], tmp_path / "nowhere" / "x.pkl")



@pytest.mark.parametrize(
    "name, count, n_classes",
    [("labels_test.pkl", 2933, 50), ("labels_train.pkl", 8855, 150),
     ("labels_test_hard.pkl", 2378, 40), ("labels_train_hard.pkl", 9410, 160)],
)
def test_loads_real_python2_pickles(name, count, n_classes):
    # GAZSL's CUB labels were written by Python 2: a list of numpy scalars, or a numpy array.
    labels = load_pickle(require_real_data("gazsl_cub_nab", "CUB2011", name))
    assert len(labels) == count
    assert set(int(v) for v in labels) == set(range(n_classes))


def test_admits_what_numpy_writes_at_every_protocol(tmp_path):
    """Protocol 5 rebuilds arrays with numpy's _frombuffer; protocol 2 writes a zero-length array's
    data as builtins.bytes(). Both are admitted, with their arguments checked."""
    arrays = [np.ones(3, np.float32), np.zeros(0, np.float32), np.arange(6.0).reshape(2, 3).T, np.arange(4)]
    for protocol in (2, 3, 4, 5):
        path = tmp_path / f"p{protocol}.pkl"
        path.write_bytes(pickle.dumps({1: arrays}, protocol=protocol))
        for got, want in zip(load_pickle(path)[1], arrays):
            assert got.dtype == want.dtype and got.shape == want.shape and np.array_equal(got, want)
    # bytes(n) would allocate n bytes; an object dtype from a buffer would hold pointers.
    bomb = b"\x80\x02c__builtin__\nbytes\nJ\x00\x00\x00\x40\x85R."
    with pytest.raises(UserError, match="refusing to load pickle: it references builtins.bytes with arguments"):
        load_pickle(_write(tmp_path / "bytes_bomb.pkl", bomb))
    objects = pickle.dumps(np.zeros(2), protocol=5).replace(b"f8", b"O8")  # the same bytes as object pointers
    assert b"_frombuffer" in objects
    with pytest.raises(UserError, match="refusing to load pickle"):
        load_pickle(_write(tmp_path / "object_buffer.pkl", objects))
