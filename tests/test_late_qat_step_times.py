"""late_qat.step_times: QAT's step-time cost measured inside each run, split where fake quantization switched on."""

import json

import pandas as pd
import pytest

from pgolf.research import late_qat


def _run(root, name, ms_per_step, switch=None, slower=1.0, steps=10):
    """A run folder whose training rows have cumulative train_time_ms; after ``switch`` steps take ``slower``x."""
    run_dir = root / name
    run_dir.mkdir()
    total, rows = 0.0, []
    for step in range(1, steps + 1):
        total += ms_per_step * (slower if switch is not None and step > switch else 1.0)
        rows.append({"step": step, "train_loss": 3.0, "train_time_ms": total})
    rows.append({"step": steps, "val_loss": 3.0, "val_bpb": 2.0})  # validation rows carry no step time
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(run_dir)


def test_split_at_the_qat_step_and_the_control_at_its_scales_step(tmp_path):
    runs = pd.DataFrame([
        {"scale": "micro", "arm": "control", "seed": 0, "qat_step": None, "path": _run(tmp_path, "c0", 100.0)},
        {"scale": "micro", "arm": "qat_int6", "seed": 0, "qat_step": 8,
         "path": _run(tmp_path, "q0", 50.0, switch=8, slower=1.5)},
    ])
    t = late_qat.step_times(runs, {6: "qat_int6"}).set_index("arm")
    assert t.loc["control", "split_step"] == 8 and t.loc["control", "after_over_before"] == pytest.approx(1.0)
    assert t.loc["qat_int6", "ms_before"] == pytest.approx(50.0) and t.loc["qat_int6", "ms_after"] == pytest.approx(75.0)
    assert t.loc["qat_int6", "after_over_before"] == pytest.approx(1.5)  # the other run's speed does not enter


def test_a_run_without_steps_after_the_switch_is_left_out(tmp_path):
    runs = pd.DataFrame([
        {"scale": "micro", "arm": "control", "seed": 0, "qat_step": None, "path": _run(tmp_path, "c0", 10.0, steps=2)},
        {"scale": "micro", "arm": "qat_int4", "seed": 0, "qat_step": 2, "path": _run(tmp_path, "q0", 10.0, steps=2)},
    ])
    assert late_qat.step_times(runs, {4: "qat_int4"}).empty
    never = runs.assign(qat_step=None)  # QAT never switched on: nothing to split at
    assert late_qat.step_times(never, {4: "qat_int4"}).empty
