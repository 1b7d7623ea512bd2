"""The repository keeps its promises: documented settings, layered imports, the CI entry point."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cluster.config.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def _readme() -> str:
    return (ROOT / "README.md").read_text()


@pytest.mark.parametrize("field", sorted(Settings.model_fields))
def test_every_setting_is_documented_in_the_readme_table(field: str) -> None:
    row = re.compile(rf"^\|\s*`DEPTHMILL_{field.upper()}`\s*\|", re.MULTILINE)
    assert row.search(_readme()), f"DEPTHMILL_{field.upper()} is missing from the README table"


def test_readme_documents_no_setting_that_does_not_exist() -> None:
    documented = set(re.findall(r"^\|\s*`DEPTHMILL_([A-Z0-9_]+)`", _readme(), re.MULTILINE))
    assert documented == {name.upper() for name in Settings.model_fields}


def test_readme_has_exactly_two_setup_commands_and_ci_runs_the_test_one() -> None:
    blocks = re.findall(r"```sh\n(.*?)```", _readme(), re.DOTALL)
    quick_start = [b.strip() for b in blocks[:2]]
    assert len(quick_start) == 2 and all("\n" not in b for b in quick_start)
    test_command = quick_start[1].split("&& ", 1)[1]
    assert test_command in (ROOT / ".ci" / "run").read_text()


def test_import_contracts_hold() -> None:
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint, "import-linter is part of the test extra"
    result = subprocess.run([lint], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
