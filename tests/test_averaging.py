"""SWA's records-compatible switches: the sum dtype and the minimum number of snapshots."""

import torch
from torch import nn

from pgolf.core.config import AveragingConfig


def _snapshots(n: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [{"emb": torch.randn(64, 16, generator=g).bfloat16(), "w": torch.randn(16, 16, generator=g)} for _ in range(n)]


class _Holder(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Parameter(torch.zeros(64, 16, dtype=torch.bfloat16))
        self.w = nn.Parameter(torch.zeros(16, 16))


def _average(cfg: AveragingConfig, snaps) -> tuple[dict | None, _Holder]:
    from pgolf.core.averaging import WeightAverager
    m = _Holder()
    avg = WeightAverager(m, cfg)
    for step, sd in enumerate(snaps, start=1):
        m.load_state_dict(sd)
        assert avg.update(m, step, 0.0)
    return avg.averaged_state(m), m


def test_swa_sum_dtype():
    snaps = _snapshots(20)
    fp32, _ = _average(AveragingConfig(mode="swa", swa_every=1), snaps)
    param, _ = _average(AveragingConfig(mode="swa", swa_every=1, swa_dtype="param"), snaps)
    want32 = (sum(s["emb"].float() for s in snaps) / 20).bfloat16()
    acc = snaps[0]["emb"].clone()
    for s in snaps[1:]:
        acc += s["emb"]  # the records: summed in bf16
    assert torch.equal(fp32["emb"], want32) and torch.equal(param["emb"], (acc / 20).bfloat16())
    assert not torch.equal(fp32["emb"], param["emb"])
    assert torch.equal(fp32["w"], param["w"])  # fp32 tensors: the same either way


def test_swa_min_snapshots():
    one = _snapshots(1)
    assert _average(AveragingConfig(mode="swa", swa_every=1), one)[0] is not None
    assert _average(AveragingConfig(mode="swa", swa_every=1, swa_min_snapshots=2), one)[0] is None
    assert _average(AveragingConfig(mode="swa", swa_every=1, swa_min_snapshots=2), _snapshots(2))[0] is not None


def test_a_step_that_takes_no_sample_reads_no_state_dict() -> None:
    """mode=none, and SWA outside its sampling steps, do not build the model's state dict every step."""
    from pgolf.core.averaging import WeightAverager
    m = _Holder()
    calls = []
    m.state_dict = lambda *a, **k: calls.append(1) or nn.Module.state_dict(m, *a, **k)
    assert not WeightAverager(m, AveragingConfig(mode="none")).update(m, 1, 0.0)
    swa = WeightAverager(m, AveragingConfig(mode="swa", swa_start_lr_scale=0.5, swa_every=2))
    assert not swa.update(m, 1, 1.0) and not swa.update(m, 3, 0.1)
    assert calls == []
    assert swa.update(m, 2, 0.1) and calls == [1]
