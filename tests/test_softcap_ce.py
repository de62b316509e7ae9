"""pgolf.core.model.softcap_ce: the softcapped cross-entropy keeps every bit of autograd's expression."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pgolf.core.config import Config
from pgolf.core.model import build_model
from pgolf.core.model.softcap_ce import SoftcapCrossEntropy, softcap_cross_entropy


def _expression(z: torch.Tensor, target: torch.Tensor, cap: float, reduction: str) -> torch.Tensor:
    """What the model computed before: the softcap, then cross-entropy, through autograd."""
    return F.cross_entropy(cap * torch.tanh(z / cap), target, reduction=reduction)


def _loss_and_grads(fn, h0: torch.Tensor, w0: torch.Tensor, target: torch.Tensor, reduction: str):
    h, w = h0.clone().requires_grad_(), w0.clone().requires_grad_()
    loss = fn(F.linear(h, w), target, 30.0, reduction)
    (loss.sum() * 1.0).backward()
    return loss.detach(), h.grad, w.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("reduction", ["mean", "none", "sum"])
def test_same_bits_as_the_expression(dtype: torch.dtype, reduction: str) -> None:
    g = torch.Generator().manual_seed(0)
    h = (torch.randn(300, 24, generator=g) * 4).to(dtype)  # large enough that the cap bends the logits
    w = torch.randn(136, 24, generator=g).to(dtype)
    target = torch.randint(0, 136, (300,), generator=g)
    ours = _loss_and_grads(SoftcapCrossEntropy.apply, h, w, target, reduction)
    theirs = _loss_and_grads(_expression, h, w, target, reduction)
    for a, b in zip(ours, theirs, strict=True):
        assert a.dtype == b.dtype and torch.equal(a, b)
    with torch.inference_mode():  # the evaluators' path: no autograd
        assert torch.equal(softcap_cross_entropy(F.linear(h, w), target, 30.0, reduction), theirs[0])


def test_model_loss_and_gradients_unchanged() -> None:
    """A GPT's training loss and every parameter's gradient equal the softcap-then-cross-entropy expression's."""
    cfg = Config().replace({"model.num_layers": 2, "model.model_dim": 32, "model.num_heads": 2,
                            "model.num_kv_heads": 1, "model.vocab_size": 96})
    torch.manual_seed(0)
    model = build_model(cfg)
    x = torch.randint(0, 96, (3, 16))
    y = torch.randint(0, 96, (3, 16))
    ours = model(x, y)
    ours.backward()
    ours_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    theirs = F.cross_entropy(model.logits(model.hidden(x).reshape(-1, 32)), y.reshape(-1))
    theirs.backward()
    assert torch.equal(ours, theirs)
    for n, p in model.named_parameters():
        assert torch.equal(ours_grads[n], p.grad), n
