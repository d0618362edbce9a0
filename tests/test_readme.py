"""The README's quick-start test command is exactly what CI runs, and its config table names every key."""

from pathlib import Path

from zscrgan.config import DEFAULT_FILE, read_yaml

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_ci_runs_the_readme_test_command():
    ci_lines = [line for line in (ROOT / ".ci" / "run").read_text().splitlines()
                if line.strip() and not line.startswith(("#", "set ", "cd "))]
    assert len(ci_lines) == 1
    assert f"```bash\n{ci_lines[0]}\n```" in README


def test_readme_demo_command_installs_and_runs_main():
    assert ("```bash\npython3 -m venv .venv && .venv/bin/pip install -q -r requirements.txt "
            "&& .venv/bin/python main.py\n```") in README


def test_readme_documents_every_config_key():
    for key, value in read_yaml(DEFAULT_FILE).items():
        name = f"`{key}.*`" if isinstance(value, dict) else f"`{key}`"
        assert f"| {name} |" in README, key
