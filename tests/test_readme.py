"""The README's quick-start test command is exactly what CI runs, and the configuration reference
(docs/configuration.md) names every config key, each method's own keys included."""

from pathlib import Path

from zscrgan.config import DEFAULT_FILE, METHOD_DIR, read_yaml

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
CONFIG_REFERENCE = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")


def test_ci_runs_the_readme_test_command():
    ci_lines = [line for line in (ROOT / ".ci" / "run").read_text().splitlines()
                if line.strip() and not line.startswith(("#", "set ", "cd "))]
    assert len(ci_lines) == 1
    assert f"```bash\n{ci_lines[0]}\n```" in README


def test_readme_demo_command_installs_and_runs_main():
    assert ("```bash\npython3 -m venv .venv && .venv/bin/pip install -q -r requirements.txt "
            "&& .venv/bin/python main.py\n```") in README


def test_configuration_reference_documents_every_config_key():
    for key, value in read_yaml(DEFAULT_FILE).items():
        name = f"`{key}.*`" if isinstance(value, dict) else f"`{key}`"
        assert f"| {name} |" in CONFIG_REFERENCE, key


def test_configuration_reference_documents_every_method_key():
    method_files = sorted(METHOD_DIR.glob("*.yaml"))
    assert method_files
    for path in method_files:
        own = read_yaml(path).get(path.stem) or {}
        for key in own:
            assert f"| `{path.stem}.{key}` |" in CONFIG_REFERENCE, f"{path.name}: {key}"
