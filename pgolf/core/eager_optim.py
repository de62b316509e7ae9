"""torch.optim without torch._dynamo, for runs that compile nothing.

``torch.optim.Optimizer`` wraps ``add_param_group``, ``zero_grad``, ``state_dict`` and ``load_state_dict`` in
``torch._disable_dynamo``, and ``Adam.step`` imports ``torch._dynamo`` to place graph breaks. Both only matter
to a compiled caller, yet the first call imports ``torch._dynamo`` (with sympy and pandas): about 1.7 CPU-s of
every process, about 5% of a ``micro`` run. The classes here run the same methods' undecorated bodies
(:func:`inspect.unwrap`), so every update is computed by the same code (``tests/test_eager_optim.py`` checks
the bits and that nothing imports ``torch._dynamo``). :func:`pgolf.core.optim.build_optimizers` uses them for
a model that is not compiled.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

_Optimizer = torch.optim.Optimizer
_ADD_PARAM_GROUP = inspect.unwrap(_Optimizer.add_param_group)
_ZERO_GRAD = inspect.unwrap(_Optimizer.zero_grad)
_STATE_DICT = inspect.unwrap(_Optimizer.state_dict)
_LOAD_STATE_DICT = inspect.unwrap(_Optimizer.load_state_dict)
_ADAM_STEP = inspect.unwrap(torch.optim.Adam.step)  # the body under the differentiable-mode graph breaks


class DynamoFree:
    """Mixed in before a ``torch.optim.Optimizer`` subclass: its bookkeeping without the dynamo wrappers."""

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        _ADD_PARAM_GROUP(self, param_group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        _ZERO_GRAD(self, set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return _STATE_DICT(self)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        _LOAD_STATE_DICT(self, state_dict)


class Adam(DynamoFree, torch.optim.Adam):
    """``torch.optim.Adam`` (fused, foreach or single-tensor as torch picks), its step without graph breaks."""

    def __init__(self, params, **kw: Any):
        if kw.get("differentiable"):
            raise ValueError("eager_optim.Adam: differentiable=True needs torch.optim.Adam's graph breaks")
        super().__init__(params, **kw)

    @torch.no_grad()  # what the wrapped step does for differentiable=False
    def step(self, closure=None):
        return _ADAM_STEP(self, closure)


class AdamW(Adam, torch.optim.AdamW):
    """``torch.optim.AdamW`` (Adam with decoupled weight decay), as :class:`Adam`."""
