"""Published results and scratch workspaces (pgolf.research.workspace): a rerun of a notebook, with any
parameters, writes outside the repository and leaves ``git status`` as it was; the committed run folders' lock
files are untracked; a stored analysis table serves a subset of its runs without their weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from pgolf.core.paths import REPO_ROOT
from pgolf.research.tables import AnalysisTable, MissingWeightsError, write_table
from pgolf.research.workspace import WorkspaceError, prepare_workspace, workspace_path


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` (ignored ones too: weights, locks) with its size and mtime."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob("*") if p.is_file()} if root.is_dir() else {}


def _published_state() -> tuple[str, dict, dict]:
    return _git("status", "--porcelain"), _tree(REPO_ROOT / "runs"), _tree(REPO_ROOT / "figures")


def _env(scratch: Path) -> dict[str, str]:
    env = {**os.environ, "PGOLF_SCRATCH": str(scratch), "PYTHONPATH": str(REPO_ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    for key in ("PGOLF_OUT", "PGOLF_ABLATE_MODE"):  # the published study is the repository's own
        env.pop(key, None)
    return env


# ---- workspaces ---------------------------------------------------------------------------------

def test_workspace_names_and_the_repository_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("PGOLF_SCRATCH", str(tmp_path))
    assert workspace_path("try1") == tmp_path / "try1"
    assert workspace_path(str(tmp_path / "else" / "w")) == tmp_path / "else" / "w"
    assert workspace_path().parent == tmp_path  # a new timestamped one
    for inside in (str(REPO_ROOT), str(REPO_ROOT / "runs" / "x")):
        with pytest.raises(WorkspaceError, match="inside the repository"):
            workspace_path(inside)


def test_prepare_copies_published_runs_and_keeps_the_workspace_own(tmp_path):
    pub = tmp_path / "pub"
    run = pub / "runs" / "micro" / "control-s0-abc"
    run.mkdir(parents=True)
    (run / "summary.json").write_text("{}")
    (run / ".lock").write_text("")
    (pub / "runs" / "micro" / "control-s0-abc.replaced-1").mkdir()
    (pub / "runs" / "study" / "analysis").mkdir(parents=True)
    (pub / "runs" / "study" / "analysis" / "t.json").write_text("published")
    (pub / "runs" / "study" / "analysis" / "u.json").write_text("published")
    (pub / "runs" / "notebooks").mkdir()
    (pub / "runs" / "notebooks" / "03.ipynb").write_text("{}")
    before = _tree(pub)
    ws = tmp_path / "ws"
    (ws / "runs" / "study" / "analysis").mkdir(parents=True)
    (ws / "runs" / "study" / "analysis" / "t.json").write_text("mine")
    assert prepare_workspace(ws, pub) == 2
    assert (ws / "runs" / "micro" / "control-s0-abc" / "summary.json").is_file()
    assert not (ws / "runs" / "micro" / "control-s0-abc" / ".lock").exists()
    assert not (ws / "runs" / "micro" / "control-s0-abc.replaced-1").exists()
    assert not (ws / "runs" / "notebooks").exists()  # the workspace's executed notebooks are its own
    assert (ws / "runs" / "study" / "analysis" / "t.json").read_text() == "mine"
    assert (ws / "runs" / "study" / "analysis" / "u.json").read_text() == "published"
    assert (ws / "figures").is_dir()
    assert prepare_workspace(ws, pub) == 0  # again: nothing missing, nothing overwritten
    assert _tree(pub) == before  # the published tree was only read


NOTEBOOK = '''# %% tags=["parameters"]
seeds: list = [0, 1, 2]

# %%
from pgolf.core.paths import figures_dir, runs_dir
d = runs_dir() / "toy" / "analysis"
d.mkdir(parents=True, exist_ok=True)
(d / "table.json").write_text(str(seeds))
figures_dir().mkdir(parents=True, exist_ok=True)
(figures_dir() / "toy.svg").write_text("<svg/>")
print("wrote", runs_dir())
'''


def test_cli_rerun_goes_to_a_scratch_workspace_and_git_status_stays_clean(tmp_path):
    """`pgolf notebooks run` without --publish: the notebook's runs, tables, figure and executed notebook land
    in a new workspace under $PGOLF_SCRATCH, which it names; the repository is not touched."""
    nb = tmp_path / "nb" / "07_toy.py"
    nb.parent.mkdir()
    nb.write_text(NOTEBOOK)
    scratch = tmp_path / "scratch"
    before = _published_state()
    proc = subprocess.run([sys.executable, "-m", "pgolf", "notebooks", "run", str(nb), "-p", "seeds=[0, 1]",
                           "--quiet"], capture_output=True, text=True, env=_env(scratch), timeout=300)
    assert proc.returncode == 0, proc.stderr
    (ws,) = scratch.iterdir()
    assert f"scratch workspace {ws}" in proc.stdout and f"{ws}/runs/notebooks/07_toy.ipynb" in proc.stdout
    assert (ws / "runs" / "toy" / "analysis" / "table.json").read_text() == "[0, 1]"
    assert (ws / "figures" / "toy.svg").is_file() and (ws / "runs" / "notebooks" / "07_toy.ipynb").is_file()
    assert any((ws / "runs" / "micro").iterdir())  # the published runs, copied for reuse
    assert _published_state() == before


@pytest.mark.slow
def test_publish_writes_the_published_root(tmp_path):
    nb = tmp_path / "07_toy.py"
    nb.write_text(NOTEBOOK)
    env = {**_env(tmp_path / "scratch"), "PGOLF_OUT": str(tmp_path / "published")}
    proc = subprocess.run([sys.executable, "-m", "pgolf", "notebooks", "run", str(nb), "--publish", "--quiet"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "published" / "runs" / "toy" / "analysis" / "table.json").read_text() == "[0, 1, 2]"
    assert not (tmp_path / "scratch").exists()


@pytest.mark.slow
def test_rerun_of_notebook_03_with_fewer_seeds_leaves_git_status_clean(tmp_path):
    """The issue's rerun: 03 at micro with 2 seeds reuses the committed runs (nothing trains), takes the gates of
    those runs from the stored table (no weights on disk needed) and writes only into the workspace (~20 s)."""
    before = _published_state()
    proc = subprocess.run([sys.executable, "-m", "pgolf", "notebooks", "run", "03", "-p", 'scales=["micro"]',
                           "-p", 'seeds={"micro": [0, 1]}', "--workspace", "w03"], capture_output=True, text=True,
                          env=_env(tmp_path), timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "6 cached, 0 to train" in proc.stdout and "taking their rows (no weights needed)" in proc.stdout
    ws = tmp_path / "w03"
    inputs = json.loads((ws / "runs" / "smeargate" / "analysis" / "gates.json").read_text())["inputs"]
    assert len(inputs["runs"]) == 4  # 2 gated arms x 2 seeds
    assert (ws / "figures" / "smeargate.svg").is_file() and (ws / "runs" / "notebooks" / "03_smeargate.ipynb").is_file()
    assert _published_state() == before


# ---- lock files ---------------------------------------------------------------------------------

def test_run_folder_lock_files_are_not_tracked():
    assert not [p for p in _git("ls-files", "runs").splitlines() if p.endswith("/.lock")]
    assert _git("check-ignore", "runs/micro/control-s0-x/.lock").strip() == "runs/micro/control-s0-x/.lock"


# ---- a stored table serves a subset of its runs ---------------------------------------------------

@pytest.fixture
def table(tmp_path):
    from dataclasses import dataclass

    @dataclass
    class Row:
        run: str
        seed: int
        value: float

    t = AnalysisTable(study="s", name="t", row=Row, notebook="09")
    runs = ["micro/a-s0-k0", "micro/a-s1-k1", "micro/a-s2-k2"]
    rows = pd.DataFrame({"run": [r for r in runs for _ in (0, 1)], "seed": [0, 0, 1, 1, 2, 2],
                         "value": [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]})
    write_table(t.path(tmp_path), {"runs": runs, "eval_tokens": 10}, rows)
    return t, runs


def _no_weights():
    raise MissingWeightsError("no weights", Path("final_model.pt"))


def test_fewer_runs_take_the_stored_rows_without_weights(table, tmp_path):
    t, runs = table
    got = t.cached(runs_root=tmp_path, inputs={"runs": [runs[2], runs[0]], "eval_tokens": 10}, compute=_no_weights,
                   log=lambda s: None)
    assert got["value"].tolist() == [2.0, 2.5, 0.0, 0.5]  # in the order of the inputs' runs
    assert json.loads(t.path(tmp_path).read_text())["inputs"]["runs"] == [runs[2], runs[0]]


@pytest.mark.parametrize("inputs", [{"runs": ["micro/a-s3-k3"], "eval_tokens": 10},  # a run not in the table
                                    {"runs": ["micro/a-s0-k0"], "eval_tokens": 20}])  # another setting
def test_other_inputs_still_need_weights(table, tmp_path, inputs):
    t, _ = table
    with pytest.raises(MissingWeightsError, match="final_model.pt"):
        t.cached(runs_root=tmp_path, inputs=inputs, compute=_no_weights, log=lambda s: None)


def test_rows_named_by_scale_arm_and_seed(tmp_path):
    from dataclasses import dataclass

    @dataclass
    class Row:
        scale: str
        arm: str
        seed: int
        bits: int

    t = AnalysisTable(study="q", name="b", row=Row, notebook="02")
    runs = ["micro/control-s0-k0", "micro/control-s1-k1"]
    write_table(t.path(tmp_path), {"runs": runs, "bits": [8, 6]},
                pd.DataFrame({"scale": "micro", "arm": "control", "seed": [0, 0, 1, 1], "bits": [8, 6, 8, 6]}))
    got = t.cached(runs_root=tmp_path, inputs={"runs": runs[1:], "bits": [8, 6]}, compute=_no_weights,
                   log=lambda s: None)
    assert got["seed"].tolist() == [1, 1] and got["bits"].tolist() == [8, 6]


# ---- missing weights are restored by retraining, in a workspace only ---------------------------------

def test_missing_weights_are_retrained_in_a_workspace_only(micro, tmp_path, monkeypatch):
    from dataclasses import dataclass

    from pgolf.core.train import train
    from pgolf.research.rescore import load_final_state

    @dataclass
    class Row:
        run: str
        total: float

    ws = tmp_path / "ws"
    prepare_workspace(ws, tmp_path / "nothing_published")
    run = ws / "runs" / "micro" / "control-s0-k"
    train(micro(), run, console=False)
    weights = (run / "final_model.pt").read_bytes()
    (run / "final_model.pt").unlink()  # a fresh clone: raw weights are not committed
    t = AnalysisTable(study="s", name="t", row=Row, notebook="09")

    def compute():
        state = load_final_state(run)
        return t.frame([Row(run.name, float(sum(v.double().sum() for v in state.values())))])

    monkeypatch.setenv("PGOLF_ABLATE_MODE", "reuse")  # reuse mode (nbval) never trains
    with pytest.raises(MissingWeightsError):
        t.cached(runs_root=ws / "runs", inputs={"runs": ["micro/control-s0-k"]}, compute=compute, log=lambda s: None)
    monkeypatch.delenv("PGOLF_ABLATE_MODE")
    lines = []
    t.cached(runs_root=ws / "runs", inputs={"runs": ["micro/control-s0-k"]}, compute=compute, log=lines.append)
    assert any("byte-identical" in ln for ln in lines), lines
    assert (run / "final_model.pt").read_bytes() == weights
    assert not [p for p in run.parent.iterdir() if p.name.startswith(".")]  # the temp run is gone

    (run / "final_model.pt").unlink()
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**summary, "val_bpb": summary["val_bpb"] + 1e-9}))
    lines.clear()  # a run this machine does not reproduce exactly (another CPU's numerics): its weights are not used
    with pytest.raises(MissingWeightsError, match="rerun=True"):
        t.cached(runs_root=ws / "runs", inputs={"runs": ["micro/control-s0-k"], "y": 1}, compute=compute,
                 log=lines.append)
    assert any("differs from the recorded one" in ln for ln in lines) and not (run / "final_model.pt").exists()

    (run / "summary.json").write_text(json.dumps(summary))
    (ws / "pgolf-workspace.json").unlink()  # not a workspace (a published root): never retrained
    with pytest.raises(MissingWeightsError):
        t.cached(runs_root=ws / "runs", inputs={"runs": ["micro/control-s0-k"], "x": 1}, compute=compute,
                 log=lambda s: None)


def test_the_workflow_page_names_real_options():
    """docs/research-workflow.md's commands use options `pgolf notebooks run` has."""
    import argparse

    from pgolf.research import notebooks

    parser = argparse.ArgumentParser()
    notebooks.register(parser.add_subparsers(dest="command"))
    page = (REPO_ROOT / "docs" / "research-workflow.md").read_text()
    for argv in (["notebooks", "run", "03", "--publish"], ["notebooks", "run", "03", "--workspace", "explore"],
                 ["notebooks", "run", "03", "-p", "rerun=True", "--publish"]):
        assert " ".join(["pgolf", *argv]) in page
        parser.parse_args(argv)
    with pytest.raises(SystemExit):
        parser.parse_args(["notebooks", "run", "03", "--publish", "--workspace", "x"])  # one or the other
    assert "PGOLF_SCRATCH" in page and "~/.cache/pgolf/scratch" in page


def test_a_misspelled_parameter_fails_before_a_workspace_is_made(tmp_path, monkeypatch, capsys):
    from pgolf.running.cli import main

    nb = tmp_path / "07_toy.py"
    nb.write_text(NOTEBOOK)
    monkeypatch.setenv("PGOLF_SCRATCH", str(tmp_path / "scratch"))
    assert main(["notebooks", "run", str(nb), "-p", "sedes=[0]"]) == 2
    assert "Did you mean 'seeds'?" in capsys.readouterr().err and not (tmp_path / "scratch").exists()
