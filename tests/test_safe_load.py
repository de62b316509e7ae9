"""No code runs from a file pgolf loads: crafted artifacts and checkpoints are refused, not unpickled.

Each payload below creates a marker file when unpickled (its ``__reduce__`` calls ``open(marker, "w")``
or ``os.system("touch marker")``). ``test_payloads_are_live`` shows that an unrestricted ``torch.load``
does run them, so the other tests would fail if pgolf still unpickled with ``weights_only=False``.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import random
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from pgolf.core.config import DEFAULT_CONTROL_PATTERNS, ExportConfig
from pgolf.core.export import OFFICIAL_FORMAT, export_artifact, load_artifact, quantize_state_dict
from pgolf.core.runs import CHECKPOINT, read_status
from pgolf.core.safe_load import UnsafeFileError
from pgolf.core.train import CHECKPOINT_FORMAT, rng_state, set_rng_state, train


class OpenMarker:
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


class SystemMarker(OpenMarker):
    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


PAYLOADS = {"open": OpenMarker, "os.system": SystemMarker}


def torch_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def malicious_artifact_object(payload) -> dict:
    """An official-looking artifact object with the payload hidden among its tensors."""
    return {"__quant_format__": OFFICIAL_FORMAT, "quantized": {}, "scales": {}, "dtypes": {},
            "passthrough": {"tok_emb.weight": torch.zeros(2, 2), "evil": payload}}


@pytest.mark.parametrize("kind", sorted(PAYLOADS))
def test_payloads_are_live(tmp_path, kind):
    marker = tmp_path / "marker"
    torch.load(io.BytesIO(torch_bytes(PAYLOADS[kind](marker))), weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("kind", sorted(PAYLOADS))
def test_malicious_artifact_is_refused(tmp_path, kind):
    marker = tmp_path / "marker"
    blob = zlib.compress(torch_bytes(malicious_artifact_object(PAYLOADS[kind](marker))), 9)
    with pytest.raises(UnsafeFileError, match=r"final_model\.int8_zlib\.ptz: not a pgolf or official artifact"):
        load_artifact(blob, name="final_model.int8_zlib.ptz")
    assert not marker.exists()


def test_official_format_artifact_loads_weights_only():
    """The official int8_clean_per_row_v1 object (dicts of tensors and strings) passes the restricted loader."""
    sd = {"blocks.0.attn.c_q.weight": torch.randn(256, 512), "blocks.0.attn_scale": torch.randn(512),
          "tok_emb.weight": torch.randn(64, 32)}
    obj, _ = quantize_state_dict(sd, ExportConfig(), control=DEFAULT_CONTROL_PATTERNS)
    assert obj["__quant_format__"] == OFFICIAL_FORMAT and "qmeta" in obj
    official_style_blob = zlib.compress(torch_bytes(obj), level=9)  # what the official script writes
    pgolf_blob, _ = export_artifact(sd, ExportConfig(), control=DEFAULT_CONTROL_PATTERNS)
    assert official_style_blob == pgolf_blob
    loaded = load_artifact(official_style_blob)
    assert set(loaded) == set(sd) and torch.equal(loaded["blocks.0.attn_scale"], sd["blocks.0.attn_scale"])


def _crashed_run(run: Path, cfg, checkpoint: bytes) -> None:
    """A run folder as an interrupted run leaves it: status running, its config, a checkpoint."""
    run.mkdir()
    (run / "status.json").write_text(json.dumps({"status": "running"}))
    (run / "config.json").write_text(cfg.to_json())
    (run / CHECKPOINT).write_bytes(checkpoint)


@pytest.mark.parametrize("container", ["torch.save", "raw pickle"])
@pytest.mark.parametrize("kind", sorted(PAYLOADS))
def test_malicious_checkpoint_is_refused_on_resume(micro, tmp_path, kind, container):
    marker = tmp_path / "marker"
    cfg = micro(**{"train.checkpoint_every": 2})
    ck = {"format": CHECKPOINT_FORMAT, "step": 2, "config": cfg.to_dict(), "rng": PAYLOADS[kind](marker)}
    data = torch_bytes(ck) if container == "torch.save" else pickle.dumps(ck)
    run = tmp_path / "run"
    _crashed_run(run, cfg, data)
    with pytest.raises(UnsafeFileError, match=rf"{run / CHECKPOINT}: not a pgolf checkpoint"):
        train(cfg, run, resume=True, console=False)
    assert not marker.exists()
    assert read_status(run)["status"] == "failed"


def test_checkpoint_of_another_format_is_refused(micro, tmp_path):
    cfg = micro(**{"train.checkpoint_every": 2})
    run = tmp_path / "run"
    _crashed_run(run, cfg, torch_bytes({"step": 2, "config": cfg.to_dict()}))
    with pytest.raises(ValueError, match=rf"{run / CHECKPOINT}: not a {CHECKPOINT_FORMAT} checkpoint"):
        train(cfg, run, resume=True, console=False)


def test_rng_state_round_trips_through_a_weights_only_load():
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.standard_normal()  # leaves a cached gaussian in numpy's legacy state
    random.gauss(0.0, 1.0)  # and one in python's
    saved = torch.load(io.BytesIO(torch_bytes(rng_state())), weights_only=True)
    expected = (random.random(), random.gauss(0.0, 1.0), np.random.standard_normal(), np.random.rand(3).tolist(),
                torch.rand(3).tolist())
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    set_rng_state(saved)
    assert (random.random(), random.gauss(0.0, 1.0), np.random.standard_normal(), np.random.rand(3).tolist(),
            torch.rand(3).tolist()) == expected
