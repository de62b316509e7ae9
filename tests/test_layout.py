"""The package layout is the architecture: the training core stands alone, and its raw code bytes are the folder."""

import ast
from pathlib import Path

from pgolf.core import accounting

PACKAGE = Path(__file__).resolve().parents[1] / "pgolf"


def _imported_modules(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import; pgolf uses absolute imports"
            out.add(node.module or "")
    return out


def test_core_imports_nothing_from_running_research_or_data_building():
    bad = {}
    for f in sorted((PACKAGE / "core").rglob("*.py")):
        outside = {m for m in _imported_modules(f)
                   if m.startswith(("pgolf.running", "pgolf.research")) or m == "pgolf.data" or m.startswith("pgolf.data.")}
        if outside:
            bad[str(f.relative_to(PACKAGE))] = sorted(outside)
    assert not bad, f"the training core must stand alone: {bad}"


def test_raw_code_bytes_are_the_core_folder():
    """The raw count (``pgolf size`` shows it beside the packed script's size, which code_bytes counts)."""
    files = accounting.core_sources()
    assert {f.name for f in files} >= {"train.py", "config.py", "export.py", "gpt.py", "loader.py"}
    assert all(PACKAGE / "core" in f.parents for f in files)
    assert accounting.raw_code_bytes() == sum(len(f.read_bytes()) for f in files)
