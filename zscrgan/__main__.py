"""`python -m zscrgan` is the `zscrgan` command (zscrgan/cli.py)."""

import sys

from zscrgan.cli import console

sys.exit(console())
