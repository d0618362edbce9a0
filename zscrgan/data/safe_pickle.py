"""Pickle I/O for dataset files: a loader admitting only what such files need; an atomic writer.

Loading a pickle can call any importable function, so a downloaded dataset file could run code.
The loader therefore resolves globals from a short whitelist: numpy arrays, dtypes and scalars
(under both the numpy 1 and numpy 2 module names, since files come from either), including the
buffer reconstructor numpy writes at protocol 5, plus the latin-1 bytes constructor and the empty
`bytes()` that Python 3 writes for bytes at protocol 2. Each admitted global checks its arguments,
so none can run code or allocate more than the file describes. Containers, numbers and strings need
no globals at all.
"""

import codecs
import io
import pickle
import pickletools
from pathlib import Path

import numpy as np

from zscrgan.atomic import atomic_file
from zscrgan.errors import UserError, brief
from zscrgan.files import not_a_file, read_file

# The largest dataset file read (the released CUB image features are about 100 MB).
MAX_FILE_BYTES = 4 << 30
# Protocol 2 is what the released Python 2 files use, and what Python 2 tools can still read.
PROTOCOL = 2

# Take numpy's own reconstructors from its reductions: their module moved from numpy.core to
# numpy._core in numpy 2, and this finds them under either version without importing a shim.
_RECONSTRUCT_ARRAY = np.empty(0).__reduce__()[0]
_RECONSTRUCT_SCALAR = np.float32(0).__reduce__()[0]


class _RefusedGlobal(Exception):
    """A pickle asked for a global (or a use of one) outside the whitelist; carries which."""


def _latin1_bytes(text, encoding):
    """Rebuild bytes the way Python 3 pickles them at protocol 2, and only that way."""
    if encoding != "latin1":
        raise _RefusedGlobal(f"_codecs.encode with encoding {encoding!r}")
    return codecs.encode(text, "latin1")


def _empty_bytes(*args):
    """`bytes()`, which Python 3 writes for an empty bytes object at protocol 2 (a zero-length
    array's data); any argument (bytes(n) allocates n bytes) is refused."""
    if args:
        raise _RefusedGlobal("builtins.bytes with arguments")
    return b""


def _array_from_buffer(buffer, dtype, shape, order):
    """What numpy writes for an array at protocol 5: its bytes, dtype, shape and order. Only numeric
    dtypes, in-band bytes and a shape those bytes fill are admitted."""
    if not isinstance(buffer, (bytes, bytearray)):
        raise _RefusedGlobal("numpy _frombuffer without its bytes in the file")
    if not isinstance(dtype, np.dtype) or dtype.kind not in "biufc" or order not in ("C", "F"):
        raise _RefusedGlobal(f"numpy _frombuffer of dtype {dtype!r:.40}")
    if not (isinstance(shape, tuple) and all(isinstance(n, int) and n >= 0 for n in shape)):
        raise _RefusedGlobal("numpy _frombuffer with a malformed shape")
    if int(np.prod(shape, dtype=object)) * dtype.itemsize != len(buffer):
        raise ValueError(f"array of shape {shape} does not match its {len(buffer)} bytes")
    return np.frombuffer(buffer, dtype=dtype).reshape(shape, order=order)


_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT_ARRAY,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT_ARRAY,
    ("numpy.core.multiarray", "scalar"): _RECONSTRUCT_SCALAR,
    ("numpy._core.multiarray", "scalar"): _RECONSTRUCT_SCALAR,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_bytes,
    ("__builtin__", "bytes"): _empty_bytes,
    ("builtins", "bytes"): _empty_bytes,
    ("numpy.core.numeric", "_frombuffer"): _array_from_buffer,
    ("numpy._core.numeric", "_frombuffer"): _array_from_buffer,
}


# A dataset file nests a few levels (a dict of lists of arrays); hashing a tuple nested thousands deep as
# a dict key or set member recurses in C until the process dies, before any check could run.
MAX_DEPTH = 100
# What the objects of a file may take once every shared reference is expanded (as converting them to
# arrays does), per byte of the file: a number written in 2 bytes becomes 8; a memo reference of a few
# bytes to a long list would become the whole list again.
MAX_EXPANSION = 8
_IN_PLACE = {"APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS", "BUILD"}


def _stream_problem(data: bytes) -> str | None:
    """Why the pickle `data` must not be loaded, found from its opcodes without building anything:
    containers nested over MAX_DEPTH deep, or objects that expand (through memo references) to over
    MAX_EXPANSION times the file's size. None when neither; a malformed stream is left to the
    unpickler to report."""
    limit = MAX_EXPANSION * len(data) + (1 << 20)
    stack: list[list[int]] = []  # [nesting depth, expanded size] of each object; shared with the memo
    marks: list[int] = []
    memo: dict = {}
    try:
        for op, arg, _pos in pickletools.genops(io.BytesIO(data)):
            name = op.name
            if name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[arg] = stack[-1]
                continue
            if name == "MEMOIZE":
                memo[len(memo)] = stack[-1]
                continue
            if name in ("GET", "BINGET", "LONG_BINGET"):
                stack.append(memo[arg])
                continue
            if name == "DUP":
                stack.append(stack[-1])
                continue
            before = op.stack_before
            sliced: list = []
            if pickletools.markobject in before:
                start = marks.pop()
                sliced, stack[start:] = stack[start:], []
                before = before[:before.index(pickletools.markobject)]
            popped = stack[len(stack) - len(before):] if before else []
            del stack[len(stack) - len(popped):]
            children = popped + sliced
            if name in _IN_PLACE:  # the container changes, and so does every memo reference to it
                children, container = children[1:], children[0]
            else:
                container = [0, 8 + (len(arg) if isinstance(arg, (str, bytes, bytearray)) else 0)]
            depth = max([container[0]] + [d + 1 for d, _ in children])
            size = min(container[1] + sum(n for _, n in children), limit + 1)
            container[:] = depth, size
            if depth > MAX_DEPTH:
                return f"containers nested over {MAX_DEPTH} deep, which a dataset file never holds"
            if size > limit:
                return (f"objects that would expand to over {MAX_EXPANSION} times the file's size through "
                        "shared references, which a dataset file never holds")
            for item in op.stack_after:
                if item is pickletools.markobject:
                    marks.append(len(stack))
                else:
                    stack.append(container)
    except (ValueError, IndexError, KeyError):  # malformed or truncated: the unpickler says so
        return None
    return None


class _DatasetUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise _RefusedGlobal(f"{module}.{name}") from None


def load_pickle(path):
    """Load a dataset pickle (Python 2 or 3) without letting it run code.

    Python 2 `str` comes back as `str` (decoded as latin-1), numpy arrays as numpy arrays.
    Raises UserError naming the file when it is missing, unreadable, not a pickle, truncated,
    or references anything beyond numpy arrays, dtypes and scalars.
    """
    path = Path(path)
    problem = not_a_file(path)
    if problem == "missing":
        raise UserError(f"{path}: no such file")
    if problem:
        raise UserError(f"{path}: {problem}; a dataset file must be a regular pickle file")
    try:
        data = read_file(path, "dataset file (a pickle)", MAX_FILE_BYTES)
        problem = _stream_problem(data)
        if problem:
            raise UserError(f"{path}: refusing to load pickle: it holds {problem}")
        return _DatasetUnpickler(io.BytesIO(data), encoding="latin1").load()
    except UserError:
        raise
    except _RefusedGlobal as refused:
        raise UserError(
            f"{path}: refusing to load pickle: it references {brief(refused)}, which a dataset file "
            "never needs (a pickle can run code when loaded)"
        ) from None
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except OSError as err:
        raise UserError(f"{path}: cannot read: {err.strerror or err}") from None
    # A corrupt or truncated stream can fail in the unpickler or in numpy in many different
    # ways (EOFError, KeyError on a memo, ValueError, ...); to the user they are all one problem.
    except Exception as err:
        raise UserError(
            f"{path}: not a readable pickle ({type(err).__name__}: {brief(err)}); "
            "the file is truncated or corrupt: replace it with a fresh copy"
        ) from None


def dump_pickle(obj, path):
    """Write `obj` to `path` as a protocol-2 pickle, atomically.

    The file appears complete or not at all: it is written to a temporary file in the same
    folder and renamed into place; the temporary file is removed if anything fails.
    Raises UserError when the folder cannot be written.
    """
    path = Path(path)
    try:
        with atomic_file(path, "wb") as f:
            pickle.dump(obj, f, protocol=PROTOCOL)
    except OSError as err:
        raise _cannot_write(path, err) from None


def _cannot_write(path, err):
    return UserError(
        f"{path}: cannot write: {err.strerror or err}; check that its folder exists and is writable"
    )
