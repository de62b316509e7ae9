"""The quickstart's pieces: the thread calibration, the progress bar (terminals only) and the trainer's on_step."""

from __future__ import annotations

import io

from pgolf.core.train import TrainerHooks, train
from pgolf.running.quickstart import calibrate_threads, progress, usable_cpus


def test_calibration_times_one_thread_and_every_usable_cpu(micro):
    ms = calibrate_threads(micro(), steps=1)
    assert set(ms) == {1, usable_cpus()} and all(v > 0 for v in ms.values())


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_only_on_a_terminal_and_lines_stay_readable():
    log = io.StringIO()
    with progress(3, log) as on_step:
        assert on_step is None
        print("a line", file=log)
    assert log.getvalue() == "a line\n"  # no bar characters in a log

    term = _Terminal()
    with progress(3, term) as on_step:
        for step in (1, 2, 3):
            print(f"step:{step}/3")  # the trainer prints to stdout; it lands above the bar
            on_step(step, 3)
    out = term.getvalue()
    assert "3/3" in out and "train: 100%" in out
    assert [ln for ln in out.replace("\r", "\n").splitlines() if ln.startswith("step:")] == [
        "step:1/3", "step:2/3", "step:3/3"]


def test_trainer_reports_each_step_with_the_budget(micro, tmp_path):
    calls = []
    train(micro(), tmp_path / "run", console=False,
          hooks=TrainerHooks(on_step=lambda step, total: calls.append((step, total))))
    assert calls == [(s, 8) for s in range(1, 9)]


def test_first_line_arrives_early_through_a_pipe(tmp_path):
    """Piped (``pgolf quickstart | tee log``), the first line comes within seconds, long before training ends;
    a block-buffered stdout used to show nothing until the run was over."""
    import os
    import select
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PGOLF_OUT": str(tmp_path / "out"), "PGOLF_DATA": str(tmp_path / "data"),
           "PYTHONPATH": str(repo)}
    env.pop("PYTHONUNBUFFERED", None)
    proc = subprocess.Popen([sys.executable, "-m", "pgolf", "quickstart"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, env=env, cwd=tmp_path)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready, "no output within 30 s through a pipe"
        first = proc.stdout.readline().decode()
        assert first.startswith("pgolf quickstart:") and proc.poll() is None  # still working: not the final flush
    finally:
        proc.kill()
        proc.wait()
