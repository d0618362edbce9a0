"""The one exception type that the command line turns into a single clear line and a non-zero exit."""


class UserError(Exception):
    """A problem with the user's input (a file, a config key, a flag) that they can fix.

    The message is one line: what is wrong, where, and what to do.
    """
