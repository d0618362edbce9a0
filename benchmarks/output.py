"""How a benchmark reports: its result as indented JSON on stdout, and into a file when asked."""

from __future__ import annotations

import json
from pathlib import Path


def print_json(result: dict, path: Path | None = None) -> None:
    text = json.dumps(result, indent=1)
    print(text)
    if path:
        Path(path).write_text(text)
