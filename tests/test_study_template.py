"""The study template (docs/adding-a-technique.md) is a jupytext notebook that uses public helpers only, and
pytest never imports it, even when it is named on the command line."""

import os
import re
import subprocess
import sys
from pathlib import Path

import jupytext

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "notebooks" / "templates" / "study_template.py"


def test_template_is_a_notebook_with_parameters_and_no_private_call():
    nb = jupytext.read(TEMPLATE)
    assert any("parameters" in c.metadata.get("tags", []) for c in nb.cells)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert not re.search(r"\b\w+\._[a-z]\w*\(", code), "the template calls a private helper"
    for public in ("protocol.studies(", "figures.write_selection(", "figures.paired_figure("):
        assert public in code


def test_naming_the_template_to_pytest_collects_nothing_and_imports_nothing(tmp_path):
    """Without notebooks/templates/conftest.py pytest imports a named file as a module, which would run the
    study (train); here the kernel-free reuse mode would fail at once instead, so collection errors."""
    env = {**os.environ, "PGOLF_ABLATE_MODE": "reuse", "PGOLF_OUT": str(tmp_path), "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                           str(TEMPLATE)], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 5, proc.stdout + proc.stderr  # 5: no tests collected
    assert "error" not in proc.stdout.lower() and not list(tmp_path.iterdir())
