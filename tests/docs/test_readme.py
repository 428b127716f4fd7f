"""The README's generated sections (node catalog, sampler table, performance table) match the code."""
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_readme_generated_sections_are_current():
    result = subprocess.run([sys.executable, "scripts/update_readme.py", "--check"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_readme_commands_name_files_that_exist():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    for workflow in sorted({w for w in re.findall(r"workflows/[a-z0-9_]+\.json", text)}):
        assert (ROOT / workflow).is_file(), workflow
