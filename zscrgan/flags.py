"""The argument parser of every zscrgan command: whole flag names only, and a wrong flag said in one line."""

import argparse

from zscrgan.errors import one_line


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser that never completes an abbreviated flag (`--mm_reg 3` is refused, not read as
    `--mm_reg_coeff 3`) and reports a flag it cannot read as one line on stderr with exit status 2.

    Subcommands' parsers (add_subparsers) are of this class too.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.exit(2, f"error: {self.prog}: {one_line(message)} ({self.prog} --help lists the flags)\n")
