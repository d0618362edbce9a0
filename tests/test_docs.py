"""Every shell command shown in the README, docs/ and the folders' READMEs names a real module, subcommand, flag and file, and
every relative link points to an existing file and heading.

Commands are the lines of ```bash / ```sh / ```shell blocks and the `$ `-prefixed lines of any block (a
```console block's other lines are output). A command's flags are checked against the parser the
command builds: the train parser (zscrgan.cli.build_parser over every config key), a module's own
build_parser(), or, for a module that has none or that starts TensorFlow on import, the flags its source
declares with add_argument (read, not imported, so the test stays fast).
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import importlib.util
import io
import re
import shlex
import sys
from functools import cache
from pathlib import Path

import pytest

from zscrgan.cli import COMMANDS, build_parser
from zscrgan.config import CONFIG_DIR, all_key_meanings, find_shipped, flatten, schema, shipped_dir
from zscrgan.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")), ROOT / "datasets" / "README.md",
         ROOT / "retrieved_res" / "README.md"]
SHELL_FENCES = {"bash", "sh", "shell"}
EXTERNAL = {"tensorboard", "ray"}  # other programs a page may show; their flags are not ours to check
SHIPPED_FOLDERS = ("configs/", "studies/", "benchmarks/")
STUDY_DIR = shipped_dir("studies")


# --- extracting commands ------------------------------------------------------------------------------
def shell_commands(text: str) -> list[tuple[int, str]]:
    """(line number, command) of every shell command of a markdown text; `\\`-continued lines joined."""
    out, fence, pending = [], None, None
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if pending is not None:
            pending = (pending[0], pending[1] + " " + stripped.rstrip("\\").strip())
            if not stripped.endswith("\\"):
                out.append(pending)
                pending = None
            continue
        if stripped.startswith("```"):
            fence = stripped[3:].strip().lower() if fence is None else None
            continue
        if stripped.startswith("$ "):
            command = stripped[2:]
        elif fence in SHELL_FENCES and stripped and not stripped.startswith("#"):
            command = stripped
        else:
            continue
        if command.endswith("\\"):
            pending = (number, command.rstrip("\\").strip())
        else:
            out.append((number, command))
    return out


def simple_commands(command: str) -> list[list[str]]:
    """The words of each simple command of a command line (split at &&, ||, ; and |; comments dropped)."""
    out = []
    for part in re.split(r"\s(?:&&|\|\||;|\|)\s", command):
        words = shlex.split(part, comments=True)
        while words and (words[0] == "time" or re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0])):
            words = words[1:]
        if words:
            out.append(words)
    return out


# --- what a command accepts ---------------------------------------------------------------------------
def declared_flags(path: Path) -> set[str]:
    """Every option string a source file declares with add_argument(...)."""
    flags = {"-h", "--help"}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument":
            flags |= {a.value for a in node.args if isinstance(a, ast.Constant) and str(a.value).startswith("-")}
    return flags


def module_file(module: str) -> Path | None:
    """The file `python -m module` runs (a package's __main__.py), or None when there is none."""
    try:
        spec = importlib.util.find_spec(module)
        if spec is not None and spec.submodule_search_locations is not None:
            spec = importlib.util.find_spec(f"{module}.__main__")
    except ModuleNotFoundError:
        return None
    return Path(spec.origin) if spec is not None and spec.origin else None


def starts_tensorflow(module: str) -> bool:
    return any(spec[0] == module and spec[3] for spec in COMMANDS.values())


@cache
def accepted(module: str):
    """An argparse parser for a zscrgan module's command line, or the set of flags its source declares."""
    if module == "zscrgan.cli":
        return build_parser(flatten(schema()), all_key_meanings())
    path = module_file(module)
    if path.name == "__main__.py" and not module.endswith(".__main__"):
        module = f"{module}.__main__"  # what `python -m PACKAGE` runs, as COMMANDS names it
    tree = ast.parse(path.read_text(encoding="utf-8"))
    has_builder = any(isinstance(n, ast.FunctionDef) and n.name == "build_parser" for n in tree.body)
    if has_builder and not starts_tensorflow(module):
        return importlib.import_module(module).build_parser()
    return declared_flags(path)


def check_arguments(module: str, args: list[str]) -> list[str]:
    """Problems with `args` given to the zscrgan module `module`: flags it does not accept, and shipped
    files it would not find (empty when there are none)."""
    parser = accepted(module)
    if isinstance(parser, set):
        return [f"{module} has no flag {a.split('=')[0]}" for a in args
                if a.startswith("-") and not _is_number(a) and a.split("=")[0] not in parser] + check_paths(args)
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            parsed = parser.parse_args(args)
    except SystemExit as e:
        return [f"{module}: {err.getvalue().strip().splitlines()[-1]}"] if e.code else []
    names = []  # (name, folder, flag): a name the command looks up among the shipped files
    if getattr(parsed, "config", None):
        names.append((parsed.config, CONFIG_DIR, "--config"))
    if module == "zscrgan.study":
        names.append((parsed.study, STUDY_DIR, "study"))
    problems = check_paths(args)
    for name, folder, flag in names:
        if "/" in name or name.endswith((".yaml", ".yml")):  # a path: the user's file, or checked above
            continue
        try:
            find_shipped(name, folder, flag)
        except UserError as e:
            problems.append(str(e))
    return problems


def _is_number(word: str) -> bool:
    return re.fullmatch(r"-[0-9.][0-9._eE+-]*", word) is not None


def check_paths(words: list[str]) -> list[str]:
    """Paths under configs/, studies/ and benchmarks/ that a command names exist."""
    return [f"{w}: no such file" for w in words if w.startswith(SHIPPED_FOLDERS) and not (ROOT / w).exists()]


def check_command(words: list[str]) -> list[str]:
    """Problems with one simple command (empty when it names real things only)."""
    program = Path(words[0]).name
    if program in ("python", "python3"):
        if len(words) > 2 and words[1] == "-m":
            module, args = words[2], words[3:]
            if module_file(module) is None:
                return [f"python -m {module}: no such module"]
            if not module.startswith("zscrgan"):
                return []
            return check_arguments(module, args)
        if len(words) > 1 and words[1].endswith(".py"):
            script, args = words[1], words[2:]
            if not (ROOT / script).is_file():
                return [f"{script}: no such file"]
            if script == "main.py":
                return check_arguments("zscrgan.cli", args)
            flags = declared_flags(ROOT / script)
            return [f"{script} has no flag {a}" for a in args
                    if a.startswith("--") and a.split("=")[0] not in flags] + check_paths(args)
        return [f"{' '.join(words)}: not python -m MODULE or python FILE.py"]
    if program == "zscrgan":
        if len(words) < 2 or words[1] not in COMMANDS:
            return [f"zscrgan {words[1] if len(words) > 1 else ''}: no such subcommand (one of {', '.join(COMMANDS)})"]
        module, _, prefix, *_ = COMMANDS[words[1]]
        args = [*prefix, *words[2:]]
        return check_arguments(module, args)
    if program == "pip":
        return [f"{value}: no such file" for flag, value in zip(words, words[1:])
                if flag in ("-r", "-c") and not (ROOT / value).is_file()]
    if program == "bash":
        return [] if len(words) > 1 and (ROOT / words[1]).is_file() else [f"{' '.join(words)}: no such script"]
    if program in EXTERNAL:
        return []
    return [f"{program}: not a command these pages may show (python, zscrgan, pip, bash, {', '.join(sorted(EXTERNAL))})"]


def page_problems(page: Path) -> list[str]:
    out = []
    for number, command in shell_commands(page.read_text(encoding="utf-8")):
        for words in simple_commands(command):
            out += [f"{page.relative_to(ROOT)}:{number}: {p}" for p in check_command(words)]
    return out


# --- links --------------------------------------------------------------------------------------------
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def prose(text: str) -> str:
    """The text without fenced blocks and inline code (neither holds links or headings)."""
    text = re.sub(r"^\s*```.*?^\s*```[^\n]*$", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces to hyphens,
    a repeated one numbered."""
    text = re.sub(r"^\s*```.*?^\s*```[^\n]*$", "", page.read_text(encoding="utf-8"), flags=re.S | re.M)
    seen, out = {}, set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*$", text, flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        out.add(slug if count == 0 else f"{slug}-{count}")
    return out


def link_problems(page: Path) -> list[str]:
    out = []
    for target in LINK.findall(prose(page.read_text(encoding="utf-8"))):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        where = f"{page.relative_to(ROOT)}: link {target}"
        if not file.exists():
            out.append(f"{where}: no such file")
        elif anchor and (file.suffix != ".md" or anchor not in anchors(file)):
            out.append(f"{where}: no heading #{anchor} in {file.relative_to(ROOT)}")
    return out


# --- tests --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_command_names_real_modules_flags_and_files(page):
    assert page_problems(page) == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    assert link_problems(page) == []


def test_the_pages_show_commands_of_every_kind():
    commands = [c for page in PAGES for _, c in shell_commands(page.read_text(encoding="utf-8"))]
    readme = [c for _, c in shell_commands(PAGES[0].read_text(encoding="utf-8"))]
    assert "python3 -m venv .venv && .venv/bin/pip install -q -r requirements.txt && .venv/bin/python main.py" in readme
    assert len(commands) >= 40
    programs = {Path(words[0]).name for c in commands for words in simple_commands(c)}
    assert {"python", "zscrgan", "pip", "bash"} <= programs


@pytest.mark.parametrize("command, problem", [
    ("python main.py --no_such_key 1", "unrecognized arguments"),
    ("python main.py --mm_reg 3", "unrecognized arguments"),  # abbreviations are refused
    ("zscrgan train --config no_such_config", "no such file"),
    ("zscrgan study no_such_study", "no such file"),
    ("zscrgan no_such_command", "no such subcommand"),
    ("python -m zscrgan.no_such_module", "no such module"),
    ("python -m zscrgan.data convert xlsa17 SRC --out D --no_such_flag", "unrecognized arguments"),
    ("zscrgan retrieve RUN --queries q.npy --gallery g.npy --out o.npz --no_such_flag", "has no flag --no_such_flag"),
    ("python benchmarks/bench_speed.py --no_such_flag", "has no flag --no_such_flag"),
    ("python benchmarks/no_such_bench.py", "no such file"),
    ("python main.py --config configs/no_such.yaml", "no such file"),
    ("pip install -r requirements-nothing.txt", "no such file"),
    ("bash benchmarks/no_such.sh", "no such script"),
    ("make all", "not a command"),
])
def test_a_wrong_command_is_caught(command, problem):
    found = [p for words in simple_commands(command) for p in check_command(words)]
    assert found and problem in found[0], found


@pytest.mark.parametrize("command", [
    "python main.py --config demo_cub_sizes --rounds 2",
    "zscrgan study demo --query_protocol per_class",
    "zscrgan convert arrays --npz mine.npz --unseen_fraction 0.25 --out datasets/MINE",
    "zscrgan diagnose runs/DEMO/<run> --draws 20",
    "RAY_AUTH_MODE=token time zscrgan inspect datasets/DEMO",
])
def test_a_right_command_passes(command):
    assert [p for words in simple_commands(command) for p in check_command(words)] == []


def test_a_broken_link_is_caught(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    (tmp_path / "other.md").write_text("# A heading\n\n## The `zscrgan` command\n")
    page = tmp_path / "page.md"
    page.write_text("[ok](other.md#the-zscrgan-command) [gone](missing.md) [bad](other.md#nowhere) "
                    "[self](#top) `[code](missing.md)`\n\n# Top\n")
    problems = link_problems(page)
    assert len(problems) == 2 and "missing.md: no such file" in problems[0] and "#nowhere" in problems[1]


def test_commands_are_read_from_shell_blocks_and_dollar_lines_only():
    text = "\n".join([
        "```bash", "# a comment", "zscrgan inspect datasets/DEMO   # trailing", "python main.py \\", "  --rounds 2", "```",
        "```console", "$ zscrgan study demo", "output line, not a command", "```",
        "```python", "import zscrgan", "```",
        "```", "$ python -m zscrgan.baseline datasets/DEMO", "```",
    ])
    assert [c for _, c in shell_commands(text)] == [
        "zscrgan inspect datasets/DEMO   # trailing", "python main.py --rounds 2", "zscrgan study demo",
        "python -m zscrgan.baseline datasets/DEMO"]
    assert simple_commands("zscrgan inspect datasets/DEMO   # trailing") == [["zscrgan", "inspect", "datasets/DEMO"]]
