"""A new study reaches `pgolf results` without editing pgolf: declared by its notebook, or registered in code."""

import json

import pytest

from pgolf.research import figures, results_table
from pgolf.research.results import load_runs
from pgolf.running.cli import main


def _write_run(root, arm, seed, q):
    run = root / f"{arm}-s{seed}"
    run.mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps({
        "status": "finished", "name": run.name, "arm": arm, "seed": seed, "steps": 10, "val_bpb": q - 0.01,
        "q_val_bpb": q, "q_val_loss": q / 0.6, "val_loss": q / 0.6, "artifact_bytes": 1, "code_bytes": 1}))


@pytest.fixture
def toy_root(tmp_path):
    root = tmp_path / "runs"
    for seed in range(3):
        _write_run(root / "toy", "control", seed, 2.0 + 0.01 * seed)
        _write_run(root / "toy", "toy_half", seed, 2.0 + 0.01 * seed - 0.02 - 0.001 * seed)
    return root


def test_a_study_declared_by_its_notebook_is_in_the_table(toy_root, capsys):
    figures.write_selection(toy_root, "toy", load_runs(toy_root / "toy"))
    assert not [r for r in results_table.results_rows(toy_root) if "toy" in r]  # not declared: not listed
    figures.write_selection(toy_root, "toy", load_runs(toy_root / "toy"), number="07",
                            references=[("toy_half", "control")])
    rows = [r for r in results_table.results_rows(toy_root) if r.startswith("| 07 toy |")]
    assert len(rows) == 2 and all("| `toy_half` | `control` | 3 |" in r for r in rows)
    assert "| -0.0210 |" in rows[0]
    doc = toy_root.parent / "results.md"
    doc.write_text("intro\n<!-- RESULTS -->\nold\n<!-- /RESULTS -->\nafter\n")
    assert main(["results", "--runs-root", str(toy_root), "--update", str(doc)]) == 0
    text = doc.read_text()
    assert text.startswith("intro\n<!-- RESULTS -->\n| study |") and text.endswith("|\n<!-- /RESULTS -->\nafter\n")
    assert rows[0] in text and "old" not in text
    doc.write_text("no markers\n")
    assert main(["results", "--runs-root", str(toy_root), "--update", str(doc)]) == 2
    assert "expected one <!-- RESULTS -->" in capsys.readouterr().err


def test_register_study_in_code(toy_root, monkeypatch):
    monkeypatch.setattr(results_table, "STUDIES", dict(results_table.STUDIES))
    figures.write_selection(toy_root, "toy", load_runs(toy_root / "toy"))
    results_table.register_study("toy", "07")
    rows = [r for r in results_table.results_rows(toy_root) if r.startswith("| 07 toy |")]
    assert len(rows) == 1 and "| toy | `toy_half` | `control` |" in rows[0]
    with pytest.raises(ValueError, match="registered twice"):
        results_table.register_study("toy", "08")


def test_a_declared_study_gets_its_figure_from_pgolf_figures(toy_root, tmp_path):
    figures.write_selection(toy_root, "toy", load_runs(toy_root / "toy"), number="07", title="Toy scale")
    paths = figures.regenerate(runs_root=toy_root, out_dir=tmp_path / "figs")
    assert [p.name for p in paths] == ["toy.svg"] and "Toy scale" in paths[0].read_text()
    assert [p.name for p in figures.regenerate(["toy"], runs_root=toy_root, out_dir=tmp_path / "f2")] == ["toy.svg"]


def test_verdicts_use_the_holm_adjusted_p_over_the_whole_table(toy_root, monkeypatch):
    """Alone, the toy arm's p (below 0.01) gives "lower"; beside many other tests, Holm multiplies it past
    alpha and the verdict says not significant, with both p values shown."""
    monkeypatch.setattr(results_table, "STUDIES", {})
    figures.write_selection(toy_root, "toy", load_runs(toy_root / "toy"), number="07")
    (alone,) = results_table.results_rows(toy_root)
    p = float(alone.split(" | ")[8])
    assert p < 0.01 and alone.split(" | ")[9] == alone.split(" | ")[8] and "| lower" in alone
    others = results_table.table_tests(toy_root) * 40  # the same test 41 times: a family of 41
    monkeypatch.setattr(results_table, "table_tests", lambda *a, **k: others)
    crowded = results_table.results_rows(toy_root)[0]
    assert float(crowded.split(" | ")[9]) == pytest.approx(min(1.0, 40 * p), rel=0.02)
    assert "not significant at α = 0.01" in crowded
