"""The Trainer's public stages: the golden run through setup/step/evaluate/finish, every attribute made in
set-up, the QAT controller (decided once, kept across a resume), the fault hooks, and no private access from
outside pgolf/core/train.py."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
from pgolf_testing import raise_at

from pgolf.core.config import QATConfig
from pgolf.core.model.layers import CastedLinear
from pgolf.core.qat import QATController, qat_active
from pgolf.core.runs import read_status
from pgolf.core.train import (
    NonFiniteLossError,
    StepResult,
    Trainer,
    TrainerHooks,
    train,
)
from pgolf.running.worker import hooks_from_args, parse_labels

REPO = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).parent / "assets" / "golden_micro.json"  # written by test_train.py::test_golden_losses


def rows(run: Path, key: str) -> dict[int, float]:
    out = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        if key in r:
            out[r["step"]] = r[key]
    return out


def test_public_stages_reproduce_the_golden_run(micro, tmp_path):
    """setup, 8 x step, evaluate, finish: the same numbers as test_train.py's golden run through train()."""
    cfg = micro()
    with Trainer(cfg, tmp_path / "run", console=False) as tr:
        tr.setup()
        results = [tr.step() for _ in range(cfg.train.iterations)]
        val = tr.evaluate()
        summary = tr.finish()
    want = json.loads(GOLDEN.read_text())
    assert [r.step for r in results] == list(range(1, 9)) and all(isinstance(r, StepResult) for r in results)
    assert [r.train_loss for r in results] == pytest.approx(want["train_loss"], rel=1e-4, abs=1e-4)
    assert summary["val_loss"] == val.val_loss == pytest.approx(want["val_loss"], rel=1e-4)
    assert summary["q_val_loss"] == pytest.approx(want["q_val_loss"], rel=1e-4)
    assert rows(tmp_path / "run", "train_loss") == {r.step: r.train_loss for r in results}
    assert summary["steps"] == 8 and read_status(tmp_path / "run")["status"] == "finished"


def test_setup_creates_every_attribute_the_stages_use(micro, tmp_path):
    cfg = micro(**{"train.iterations": 3, "averaging.mode": "ema"})
    with Trainer(cfg, tmp_path / "run", console=False) as tr:
        tr.setup()
        made = set(vars(tr))
        assert {"base", "model", "optimizers", "muon", "averager", "qat", "loader", "luts", "val_periodic",
                "val_final", "dataset_id", "steps_done", "training_time_ms", "stop_after", "last_val",
                "compile_ms", "n_params"} <= made
        with pytest.raises(RuntimeError, match=r"setup\(\) was already called"):
            tr.setup()
        for _ in range(3):
            tr.step()
        tr.checkpoint()
        tr.evaluate()
        tr.wallclock_reached()
        tr.finish()
        assert set(vars(tr)) == made  # no stage adds an attribute


def test_trainer_marks_a_failing_stage_and_releases_the_folder(micro, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(RuntimeError, match="boom"), Trainer(micro(), run, console=False) as tr:
        tr.setup()
        tr.step()
        raise RuntimeError("boom")
    assert read_status(run)["status"] == "failed" and "boom" in read_status(run)["error"]
    assert tr.lock is None  # released: another process may take the folder


def test_fault_hook_raises_before_the_requested_step(micro, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(RuntimeError, match="injected"):
        train(micro(), run, console=False, hooks=TrainerHooks(before_step=raise_at(3, RuntimeError("injected"))))
    assert sorted(rows(run, "train_loss")) == [1, 2, 3]  # steps 0, 1, 2 were trained, step 3 was not
    assert read_status(run)["status"] == "failed"


def test_fault_hook_can_poison_the_learning_rate(micro, tmp_path):
    hooks = TrainerHooks(before_step=lambda step: float("nan") if step == 2 else None)
    with pytest.raises(NonFiniteLossError, match="at step 4"):  # step 3 trains with NaN, step 4's loss is NaN
        train(micro(), tmp_path / "run", console=False, hooks=hooks)
    assert math.isnan(rows(tmp_path / "run", "lr_scale")[3])


def test_worker_builds_the_hooks_from_its_flags(capsys):
    hooks, desc = hooks_from_args(1, "1:3:raise", "1:250")
    assert desc == "TEST FAULT ARMED: rank 1 mode raise at step 3" and hooks.clock_skew_ms == 250.0
    hooks.before_step(2)
    with pytest.raises(RuntimeError, match="test fault injected on rank 1 at step 3"):
        hooks.before_step(3)
    other, desc = hooks_from_args(0, "1:3:raise", "1:250")
    assert desc is None and other == TrainerHooks()  # another rank's faults
    assert math.isnan(hooks_from_args(0, "all:0:nan")[0].before_step(0))
    assert "TEST CLOCK SKEW: rank 1" in capsys.readouterr().err
    for bad in ("1:3", "x:3:raise", "1:3:explode"):
        with pytest.raises(ValueError, match="--test-fail"):
            hooks_from_args(0, bad)
    with pytest.raises(ValueError, match="--test-clock-skew"):
        hooks_from_args(0, None, "1")
    assert parse_labels('{"arm": "a"}') == {"arm": "a"} and parse_labels(None) == {}
    with pytest.raises(ValueError, match="--labels-json: expected a JSON object"):
        parse_labels("[1]")


# -- QAT: one owner -------------------------------------------------------------------------------------------


class _Two(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = CastedLinear(4, 4, bias=False), CastedLinear(4, 4, bias=False)
        self.a.qat_spec = self.b.qat_spec = object()  # any spec: only the on/off state is exercised here


def _controller(model, events, start_frac=0.5):
    return QATController(model, QATConfig(enabled=True, start_frac=start_frac), distributed=False,
                         device=torch.device("cpu"), recompile=lambda: events.append("recompile"),
                         log=events.append, metric=lambda **row: events.append(row))


def test_qat_controller_decides_once_and_restores_its_decision():
    model, events = _Two(), []
    qat = _controller(model, events)
    assert not qat.maybe_switch(1, 0.49) and not qat.active and events == []
    assert qat.maybe_switch(2, 0.5) and qat.active and qat.qat_step == 2
    assert events == ["recompile", "qat:enabled step:2 layers:2 recompile:1",
                      {"event": "qat_enabled", "step": 2, "layers": 2, "recompile": True}]
    assert not qat.maybe_switch(3, 0.9) and len(events) == 3  # decided once
    state = qat.state_dict()
    assert state == {"qat_active": True, "qat_step": 2}
    assert qat.switch_off() == 2 and not qat_active(model) and qat.qat_step == 2 and len(events) == 3

    restored_model, restored_events = _Two(), []
    restored = _controller(restored_model, restored_events)
    restored.load_state_dict(state)
    assert restored.active and restored.qat_step == 2 and restored_events == ["recompile"]  # no second log line
    assert not restored.maybe_switch(5, 1.0)


def test_qat_controller_keeps_a_decision_that_found_no_layer():
    events = []
    qat = _controller(torch.nn.Linear(2, 2), events)
    assert qat.maybe_switch(4, 0.6) and qat.qat_step == 4 and not qat.active
    assert not qat.maybe_switch(5, 0.7)  # not active, yet decided: no second decision
    restored = _controller(torch.nn.Linear(2, 2), [])
    restored.load_state_dict(qat.state_dict())
    assert restored.qat_step == 4 and not restored.maybe_switch(6, 0.8)


@pytest.mark.parametrize("start_frac,qat_step", [(0.5, 4), (0.0, 0)])
def test_qat_decision_survives_an_interrupted_run(micro, tmp_path, start_frac, qat_step):
    """Interrupted after the switch, resumed from the checkpoint: one qat:enabled line, the same step, the same
    losses as without the interruption (also when QAT is on from step 0, decided before compile priming)."""
    cfg = micro(**{"qat.enabled": True, "qat.start_frac": start_frac, "export.keep_float_max_numel": 1000,
                   "train.checkpoint_every": 5})
    full = train(cfg, tmp_path / "full", console=False)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "cut", console=False, hooks=TrainerHooks(before_step=raise_at(6, KeyboardInterrupt)))
    s = train(cfg, tmp_path / "cut", resume=True, console=False)
    log = (tmp_path / "cut" / "train.log").read_text()
    assert s["qat_step"] == full["qat_step"] == qat_step
    assert log.count("qat:enabled") == 1 and f"qat:enabled step:{qat_step} layers:12" in log
    assert sum(1 for line in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
               if "qat_enabled" in line) == 1
    assert rows(tmp_path / "cut", "train_loss") == rows(tmp_path / "full", "train_loss")


# -- no private access from outside the trainer ---------------------------------------------------------------

PRIVATE = re.compile(r"\b(?:tr|trainer|Trainer)\._[a-z]")


def test_no_code_outside_the_trainer_calls_a_private_trainer_member():
    hits = []
    for path in sorted([*REPO.glob("pgolf/**/*.py"), *REPO.glob("tests/*.py")]):
        if path == REPO / "pgolf" / "core" / "train.py" or path == Path(__file__).resolve():
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if PRIVATE.search(line):
                hits.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert not hits, "\n".join(hits)
