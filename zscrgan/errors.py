"""The one exception type that the command line turns into a single clear line and a non-zero exit."""

import re
import reprlib

# Longest value an error message shows: a message never hangs or floods on a huge or self-similar value.
MAX_SHOWN = 200


class _ShortRepr(reprlib.Repr):
    """reprlib's bounded repr (a few levels, a few items per container), numpy arrays by shape only
    (an object array's elements could be anything)."""

    def __init__(self):
        super().__init__()
        self.maxlevel = 3
        self.maxtuple = self.maxlist = self.maxarray = self.maxdict = 4
        self.maxset = self.maxfrozenset = self.maxdeque = 4
        self.maxstring = self.maxother = MAX_SHOWN
        self.maxlong = 40

    def repr_ndarray(self, x, level):
        return f"array(shape={x.shape}, dtype={x.dtype})"


_SHORT = _ShortRepr()


class UserError(Exception):
    """A problem with the user's input (a file, a config key, a flag) that they can fix.

    The message is one line: what is wrong, where, and what to do.
    """


def brief(value) -> str:
    """A value for an error message: a bounded repr (or str, for strings and exceptions) of at most
    MAX_SHOWN characters on one line, whatever the value's size, depth or shared references."""
    text = str(value) if isinstance(value, BaseException) else _SHORT.repr(value)
    text = text.replace("\n", " ")
    return text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN - 3] + "..."


def one_line(message: str, limit: int = 2000) -> str:
    """An error message as the command line prints it: one line, at most `limit` characters."""
    text = " ".join(str(message).splitlines())
    return text if len(text) <= limit else text[:limit - 3] + "..."


_TF_NOISE = (re.compile(r"\{\{function_node [^}]*\}\}\s*"), re.compile(r"\s*\[Op:[^\]]*\](\s*name:\s*\S*)?"))


def tf_message(err) -> str:
    """A TensorFlow error's message without TensorFlow's own decorations (the `{{function_node ...}}`
    prefix naming the op's wrapped function, the `[Op:SaveV2]` suffix), on one line of at most MAX_SHOWN
    characters (a longer one keeps its end, where the problem is):
    what is left names the file and the problem, e.g. "...ckpt_temp/part-00000...; No space left on device"."""
    text = " ".join(str(getattr(err, "message", err)).split())
    for pattern in _TF_NOISE:
        text = pattern.sub("", text)
    text = text.strip() or type(err).__name__
    # The problem comes last ("...; No space left on device"): a long message keeps its end.
    return text if len(text) <= MAX_SHOWN else "..." + text[-(MAX_SHOWN - 3):]
