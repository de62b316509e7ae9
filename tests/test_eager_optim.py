"""pgolf.core.eager_optim: torch.optim's updates, bit for bit, without importing torch._dynamo."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import torch

from pgolf.core import eager_optim
from pgolf.core.optim import EagerMuon, Muon


def _params(seed: int) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(8, 16, generator=g)), torch.nn.Parameter(torch.randn(16, generator=g))]


def _run(make, steps: int = 4) -> tuple[list[torch.Tensor], dict]:
    """Parameters after ``steps`` updates on fixed gradients, and the optimizer's state dict."""
    params = _params(0)
    opt = make(params)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=g)
        opt.step()
        opt.zero_grad()
    return [p.detach().clone() for p in params], opt.state_dict()


def _assert_same(a: tuple[list[torch.Tensor], dict], b: tuple[list[torch.Tensor], dict]) -> None:
    for x, y in zip(a[0], b[0], strict=True):
        assert torch.equal(x, y)
    sa, sb = a[1]["state"], b[1]["state"]
    assert sa.keys() == sb.keys()
    for k in sa:
        for name in sa[k]:
            assert torch.equal(sa[k][name], sb[k][name]), name
    assert a[1]["param_groups"] == b[1]["param_groups"]


def test_adam_and_adamw_update_as_torch_optim() -> None:
    kw = dict(lr=0.05, betas=(0.9, 0.95), eps=1e-8)
    _assert_same(_run(lambda ps: eager_optim.Adam(ps, **kw)), _run(lambda ps: torch.optim.Adam(ps, **kw)))
    _assert_same(_run(lambda ps: eager_optim.AdamW(ps, weight_decay=0.1, **kw)),
                 _run(lambda ps: torch.optim.AdamW(ps, weight_decay=0.1, **kw)))


def test_eager_muon_updates_as_muon_and_loads_its_state() -> None:
    kw = dict(lr=0.04, momentum=0.95, backend_steps=5, ns_dtype=torch.float32)
    ours, theirs = _run(lambda ps: EagerMuon(ps[:1], **kw)), _run(lambda ps: Muon(ps[:1], **kw))
    _assert_same(ours, theirs)
    fresh = EagerMuon(_params(0)[:1], **kw)
    fresh.load_state_dict(theirs[1])
    _assert_same((ours[0], fresh.state_dict()), theirs)


def test_training_step_does_not_import_dynamo() -> None:
    """A process that builds the trainer's optimizers for an uncompiled model and steps them never imports
    torch._dynamo (torch.optim's classes do, in add_param_group)."""
    code = textwrap.dedent("""
        import sys, torch
        from pgolf.core.config import Config
        from pgolf.core.model import build_model
        from pgolf.core.optim import build_optimizers
        cfg = Config().replace({"model.num_layers": 2, "model.model_dim": 32, "model.num_heads": 2,
                                "model.num_kv_heads": 1, "model.vocab_size": 64})
        model = build_model(cfg)
        opts, _ = build_optimizers(model, cfg, fused=False, eager=True)
        x = torch.randint(0, 64, (2, 8))
        model(x, x).backward()
        for o in opts:
            o.step()
            o.zero_grad()
        print("dynamo" if "torch._dynamo" in sys.modules else "no dynamo")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "no dynamo"
