"""ZSCRGAN's training command, run from a checkout: `python main.py [flags]` is `zscrgan train [flags]`.

    python main.py                          # the built-in demo dataset (made on first use)
    python main.py --dataset CUB            # configs/default.yaml + configs/CUB.yaml, datasets/CUB/
    python main.py --help                   # every flag and config key, with its default

The command line lives in zscrgan/cli.py (installed as the `zscrgan` command by `pip install .`).
"""

import sys

from zscrgan.cli import exit_status
from zscrgan.cli import train_main as main

if __name__ == "__main__":
    sys.exit(exit_status(main()))
