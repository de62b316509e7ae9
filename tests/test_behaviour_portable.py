"""The cache's reuse decision is the same on every CPU and thread count, and still sees real changes.

The behaviour fingerprint runs in float64 (``train.float64``), so the float noise between CPU kernels
(``ATEN_CPU_CAPABILITY=default|avx2|avx512``, 1 or 2 threads) stays orders of magnitude below
:data:`pgolf.research.behaviour.RTOL`, while a change of the code's behaviour at existing settings (an eps, an init
std, a schedule off by one step, an export rounding rule) moves some fingerprint value by far more than it."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import pgolf.core.export as export
import pgolf.core.optim as optim
from pgolf.core.config import Config, ConfigError
from pgolf.core.train import prepare_model
from pgolf.research import behaviour

ROOT = Path(__file__).resolve().parents[1]
# one committed run per kind of arm: the shared control, a wider MLP, late QAT at 4 bits, a SmearGate, depth
# recurrence, the `small` scale and the quickstart's tiny preset
REPRESENTATIVE = ["runs/micro/control-s0-5113400531", "runs/micro/swiglu_rounded-s0-9ef929c77f",
                  "runs/micro/qat_int4-s0-7247ba5e4e", "runs/micro/smear_scalar-s0-*",
                  "runs/micro/loop_last_layer-s0-f0448c68e1", "runs/small/control-s0-1b3997c0d4",
                  "runs/quickstart/tiny-s0-c727e153ca"]
MARGIN = 1000  # the measured noise must stay this far below RTOL, so that other CPUs keep a wide margin too


def _runs() -> list[Path]:
    out = []
    for pattern in REPRESENTATIVE:
        found = sorted(ROOT.glob(pattern))
        assert found, f"no committed run matches {pattern}"
        out.append(found[0])
    return out


def supported_capabilities() -> list[str]:
    """The ``ATEN_CPU_CAPABILITY`` values this CPU can run (``default`` everywhere; AVX2/AVX-512 on x86)."""
    caps = ["default"]
    if platform.machine() in ("x86_64", "AMD64"):
        flags = set()
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
        if "avx2" in flags:
            caps.append("avx2")
        if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags:
            caps.append("avx512")
    return caps


CHILD = """
import json, sys, torch
from pgolf.core.config import Config
from pgolf.research import behaviour
threads = int(sys.argv[1])
out = {"capability": torch.backends.cpu.get_cpu_capability(),
       "runs": {d: behaviour.fingerprint(Config.from_json(d + "/config.json"), threads=threads) for d in sys.argv[2:]}}
print(json.dumps(out))
"""


def _fingerprints_in_child(capability: str, threads: int) -> dict:
    env = {**os.environ, "ATEN_CPU_CAPABILITY": capability}
    res = subprocess.run([sys.executable, "-c", CHILD, str(threads), *map(str, _runs())], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def _max_relative_difference(a: dict, b: dict) -> float:
    worst = 0.0
    for k in behaviour.COMPARED[1:]:
        xs, ys = (a[k], b[k]) if isinstance(a[k], list) else ([a[k]], [b[k]])
        worst = max([worst] + [abs(x - y) / max(abs(x), 1e-300) for x, y in zip(xs, ys)])
    return worst


def test_fingerprint_is_the_same_under_every_cpu_capability_and_thread_count():
    """The committed runs' stored fingerprints match under every kernel this CPU has, at 1 and 2 threads, with
    a margin of MARGIN below the tolerance (so a CPU with other kernels, e.g. ARM, keeps a wide margin too)."""
    settings = [(cap, 1) for cap in supported_capabilities()] + [(supported_capabilities()[-1], 2)]
    results = {s: _fingerprints_in_child(*s) for s in settings}
    assert {r["capability"] for r in results.values()} >= {c.upper() for c in supported_capabilities()}
    first = results[settings[0]]["runs"]
    for setting, r in results.items():
        for d, fp in r["runs"].items():
            stored = json.loads((Path(d) / "behaviour.json").read_text())
            assert behaviour.compare(stored, fp) is None, (setting, d, behaviour.compare(stored, fp))
            assert _max_relative_difference(first[d], fp) < behaviour.RTOL / MARGIN, (setting, d)


@pytest.fixture(scope="module")
def control():
    cfg = Config.from_json(ROOT / "runs/micro/control-s0-5113400531/config.json")
    return cfg, behaviour.fingerprint(cfg)


def _fingerprint_with(monkeypatch, cfg, target, name, replacement):
    behaviour._cache.clear()
    with monkeypatch.context() as m:
        m.setattr(target, name, replacement)
        fp = behaviour.fingerprint(cfg)
    behaviour._cache.clear()
    return fp


def _ns_eps(orig):
    return lambda G, steps=10, eps=1e-7, dtype=torch.bfloat16: orig(G, steps, 1e-6, dtype)


def _init_std(orig):
    return lambda t, mean=0.0, std=1.0, generator=None: orig(t, mean, std * 1.01, generator)


def _schedule_one_step_late(orig):
    return lambda step, elapsed_ms, cfg: orig(step + 1, elapsed_ms, cfg)


def _truncated_codes(orig):
    def quantize_rows(t, spec):
        q, s = orig(t, spec)
        q = torch.clamp(torch.trunc(t.float() / s.float()[:, None]), -spec.qmax, spec.qmax).to(torch.int8)
        return q.contiguous(), s
    return quantize_rows


CHANGES = {  # a change of code at existing settings: (module, attribute, wrapper of the original)
    "newton_schulz_eps_1e-6": (optim, "zeropower_via_newtonschulz5", _ns_eps),
    "init_std_plus_1pct": (torch.nn.init, "normal_", _init_std),
    "schedule_one_step_late": (optim, "lr_multiplier", _schedule_one_step_late),
    "export_codes_truncated": (export, "quantize_rows", _truncated_codes),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_a_real_change_of_behaviour_is_still_detected(monkeypatch, control, change):
    cfg, before = control
    target, name, wrap = CHANGES[change]
    after = _fingerprint_with(monkeypatch, cfg, target, name, wrap(getattr(target, name)))
    assert behaviour.compare(before, after) is not None
    assert _max_relative_difference(before, after) > 1000 * behaviour.RTOL  # far outside the tolerance


def test_an_adam_eps_change_is_detected(control):
    cfg, before = control
    after = behaviour.fingerprint(cfg.replace({"optim.adam_eps": 1.1e-8}))
    assert behaviour.compare(before, after) is not None


def test_float64_mode_changes_nothing_by_default_and_is_cpu_only():
    cfg = Config.from_json(ROOT / "runs/micro/control-s0-5113400531/config.json")
    assert cfg.train.float64 is False and Config().train.float64 is False
    model = prepare_model(cfg.replace({"train.float64": True}), torch.device("cpu"))
    assert {p.dtype for p in model.parameters()} == {torch.float64}
    assert all(b.dtype == torch.float64 for b in model.buffers() if b.is_floating_point())
    assert {p.dtype for p in prepare_model(cfg, torch.device("cpu")).parameters()} == {torch.float32}
    with pytest.raises(ConfigError, match="train.float64"):
        prepare_model(cfg.replace({"train.float64": True}), torch.device("cuda"))


def test_stored_fingerprints_are_float64_and_record_their_migration():
    """Every committed run holds a version-3 (float64) fingerprint; the ones computed from a version-2 fingerprint
    that the code reproduced say so (``migrated``)."""
    for path in sorted(ROOT.glob("runs/*/*/behaviour.json")):
        fp = json.loads(path.read_text())
        assert fp["version"] == behaviour.VERSION, path
        if "migrated" in fp:
            assert fp["migrated"]["from_version"] == 2 and fp["migrated"]["version_2_matched"] is True, path

