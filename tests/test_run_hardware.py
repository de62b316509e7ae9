"""Every run records the hardware its numbers may depend on (environment.json): the CPU model, the CPU kernels
torch dispatches to, the thread count and, on CUDA, the GPU names, driver and CUDA version."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch

from pgolf.core import runs


def test_environment_records_cpu_model_capability_and_threads():
    env = runs.environment()
    assert env["cpu_model"] and isinstance(env["cpu_model"], str)
    assert env["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert env["torch_threads"] == torch.get_num_threads()
    assert env["gpus"] == [] and "gpu_driver" not in env  # no CUDA here


def test_a_forced_cpu_capability_is_recorded():
    code = "import json; from pgolf.core.runs import environment; e = environment(); " \
           "print(json.dumps([e['cpu_capability'], e['aten_cpu_capability_env']]))"
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "ATEN_CPU_CAPABILITY": "default"},
                         capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == ["DEFAULT", "default"]


def test_cuda_machines_record_gpu_driver_and_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: f"NVIDIA H100 80GB HBM3 #{i}")
    monkeypatch.setattr(torch.backends.cudnn, "version", lambda: 90100)
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setattr(runs, "gpu_driver", lambda: "570.86.15")
    hw = runs.hardware()
    assert hw["gpus"] == ["NVIDIA H100 80GB HBM3 #0", "NVIDIA H100 80GB HBM3 #1"]
    assert (hw["gpu_driver"], hw["cuda_runtime"], hw["cudnn"]) == ("570.86.15", "12.8", 90100)


def test_gpu_driver_is_none_without_nvidia_smi(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    assert runs.gpu_driver() is None
