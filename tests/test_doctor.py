"""``pgolf doctor``: the CPU subset passes here, a failing check fails the command, the report is JSON."""

import json

import pytest
import torch

from pgolf.running import doctor
from pgolf.running.cli import main

CPU = torch.device("cpu")


def test_cpu_checks_pass():
    assert doctor.check_export_roundtrip()["status"] == "pass"
    assert doctor.check_dtype_layout(CPU)["status"] == "pass"
    flip = doctor.check_qat_flip(CPU, compiled=False)
    assert flip["status"] == "pass" and flip["layers"] > 0 and flip["loss_qat_on"] != flip["loss_qat_off"]
    rows = doctor.check_presets(CPU, steps=0)["presets"]
    assert rows["baseline"]["model_params"] == 17_059_912


def test_a_failing_check_fails_the_command_and_is_reported(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(doctor, "check_presets", lambda device, steps: {"status": "fail", "error": "boom"})
    monkeypatch.setattr(doctor, "check_cpu_steps", lambda: {"status": "pass"})
    monkeypatch.setattr(doctor, "check_qat_flip", lambda device, compiled: {"status": "pass"})
    monkeypatch.setattr(doctor, "check_sliding_eval", lambda device, compiled: {"status": "pass"})
    out = tmp_path / "r.json"
    assert main(["doctor", "--cpu", "--out", str(out)]) == 1
    report = json.loads(out.read_text())
    assert report["status"] == "fail" and report["checks"]["presets"]["error"] == "boom"
    assert "doctor:presets status:fail" in capsys.readouterr().out


@pytest.mark.gpu
def test_gpu_doctor(tmp_path):
    assert torch.cuda.is_available()
    report = doctor.run_checks(torch.device("cuda"))
    assert report["status"] == "pass", json.dumps(report, indent=1, default=str)[:4000]
