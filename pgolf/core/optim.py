"""Muon (official Newton-Schulz iteration, rank-sharded update), the Adam groups, and schedules."""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import Tensor, nn

from pgolf.core import eager_optim
from pgolf.core.config import Config, ScheduleConfig
from pgolf.core.precision import at_least_fp32

NS_COEFFS = (3.4445, -4.7750, 2.0315)
# Polar Express (Amsel, Persson, Musco, Gower 2025, https://arxiv.org/abs/2505.16932): one minimax-optimal quintic
# per iteration, for 5 iterations, as the 2026-04-27 record uses them (PR #1855, after PR #1344 / #1787).
POLAR_EXPRESS_COEFFS = (
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
)


def ns_coefficients(kind: str, steps: int) -> tuple[tuple[float, float, float], ...]:
    """The (a, b, c) of each Newton-Schulz iteration. ``official``: the fixed quintic ``steps`` times.
    ``polar_express``: the first ``steps`` Polar Express tuples; asked for more than the 5 there are, all 5
    (5 iterations, as the record's slice guard does)."""
    if kind == "official":
        return (NS_COEFFS,) * steps
    if kind == "polar_express":
        return POLAR_EXPRESS_COEFFS[:steps]
    raise ValueError(f"Newton-Schulz coefficients: expected 'official' or 'polar_express', got {kind!r}")


def zeropower_via_newtonschulz5(G: Tensor, steps: int = 10, eps: float = 1e-7,
                                dtype: torch.dtype = torch.bfloat16, coeffs: str = "official") -> Tensor:
    """Approximately orthogonalize G (quintic Newton-Schulz, as in modded-nanogpt; bf16 officially), with the
    coefficients of :func:`ns_coefficients` (``coeffs``).

    fp32 is offered for CPUs: bf16 matmuls ran ~20x slower than fp32 on this AVX2 machine."""
    X = G.to(dtype)
    X /= X.norm() + eps
    transposed = G.size(0) > G.size(1)
    if transposed:
        X = X.T
    # the official quintic groups c * A @ A as (c * A) @ A; the record's Polar Express as c * (A @ A): in bf16
    # the two round differently, so each keeps its own
    polar = coeffs == "polar_express"
    for a, b, c in ns_coefficients(coeffs, steps):
        A = X @ X.T
        B = b * A + c * (A @ A) if polar else b * A + c * A @ A
        X = a * X + B @ X
    return X.T if transposed else X


def row_normalize(g: Tensor, eps: float = 1e-7) -> Tensor:
    """MuonEq-R (PR #1394): each row divided by its fp32 L2 norm (floored at eps), in g's dtype, before
    Newton-Schulz, so every output unit enters the orthogonalization with the same weight."""
    return g / at_least_fp32(g).norm(dim=-1, keepdim=True).clamp_min(eps).to(g.dtype)


def _shape_scale(p: Tensor) -> float:
    """Muon's update scale for a (rows, cols) matrix: sqrt(max(1, rows / cols))."""
    return max(1, p.size(0) / p.size(1)) ** 0.5


class Muon(torch.optim.Optimizer):
    """Momentum + Nesterov, orthogonalized update scaled by sqrt(max(1, rows/cols)).

    Under torch.distributed each rank orthogonalizes every world_size-th matrix and the updates are
    summed with one all-reduce (the official sharding). Decoupled weight decay p *= 1 - lr * wd is
    applied before the update.

    ``momentum_dtype``: ``grad`` (official) keeps the momentum in the gradient's dtype and multiplies the
    orthogonalized update by the shape scale in the Newton-Schulz dtype; ``bf16`` is the 2026-04-27 record's
    step (PR #1855): the gradient cast to bf16, the momentum kept in bf16, and the scale folded into the step
    size of the final fp32 add (its update leaves Newton-Schulz unscaled).
    """

    def __init__(self, params, lr: float, momentum: float, backend_steps: int, nesterov: bool = True,
                 weight_decay: float = 0.0, ns_dtype: torch.dtype = torch.bfloat16, row_normalize: bool = False,
                 ns_coeffs: str = "official", momentum_dtype: str = "grad"):
        super().__init__(params, dict(lr=lr, momentum=momentum, backend_steps=backend_steps, nesterov=nesterov,
                                      weight_decay=weight_decay, row_normalize=row_normalize))
        ns_coefficients(ns_coeffs, 1)  # an unknown name fails here, not at the first step
        if momentum_dtype not in ("grad", "bf16"):
            raise ValueError(f"Muon momentum dtype: expected 'grad' or 'bf16', got {momentum_dtype!r}")
        self.bf16_momentum = momentum_dtype == "bf16"
        self.orthogonalize = zeropower_via_newtonschulz5
        self.ns_dtype = ns_dtype
        self.ns_coeffs = ns_coeffs

    @torch.no_grad()
    def step(self, closure=None):
        distributed = dist.is_available() and dist.is_initialized()
        world_size = dist.get_world_size() if distributed else 1
        rank = dist.get_rank() if distributed else 0
        # the official coefficients: the call the official code makes (a replaced orthogonalize keeps working)
        ns_kw = {} if self.ns_coeffs == "official" else {"coeffs": self.ns_coeffs}
        for group in self.param_groups:
            params = group["params"]
            if not params:
                continue
            lr, momentum = group["lr"], group["momentum"]
            total = sum(int(p.numel()) for p in params)
            updates_flat = torch.zeros(total, device=params[0].device, dtype=self.ns_dtype)
            curr = 0
            for i, p in enumerate(params):
                if i % world_size == rank and p.grad is not None:
                    g = p.grad.bfloat16() if self.bf16_momentum else p.grad
                    state = self.state[p]
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = torch.zeros_like(g)
                    buf = state["momentum_buffer"]
                    buf.mul_(momentum).add_(g)
                    if group["nesterov"]:
                        g = g.add(buf, alpha=momentum)
                    if group.get("row_normalize", False):
                        g = row_normalize(g)
                    g = self.orthogonalize(g, steps=group["backend_steps"], dtype=self.ns_dtype, **ns_kw)
                    if not self.bf16_momentum:  # bf16: the scale joins the step size below
                        g *= _shape_scale(p)
                    updates_flat[curr: curr + p.numel()] = g.reshape(-1)
                curr += p.numel()
            if distributed:
                dist.all_reduce(updates_flat, op=dist.ReduceOp.SUM)
            curr = 0
            wd = group["weight_decay"]
            for p in params:
                if wd:
                    p.mul_(1 - lr * wd)
                alpha = -lr * _shape_scale(p) if self.bf16_momentum else -lr
                p.add_(updates_flat[curr: curr + p.numel()].view_as(p).to(dtype=p.dtype), alpha=alpha)
                curr += p.numel()
        return None


class EagerMuon(eager_optim.DynamoFree, Muon):
    """:class:`Muon` without torch.optim's dynamo wrappers, for a model that is not compiled
    (:mod:`pgolf.core.eager_optim`)."""


def split_params(model: nn.Module, control_patterns: tuple[str, ...]) -> dict[str, list[nn.Parameter]]:
    """Route every parameter to exactly one optimizer group (official rules, plus the options)."""
    groups: dict[str, list[nn.Parameter]] = {"embed": [], "head": [], "matrix": [], "scalar": []}
    for name, p in model.named_parameters():
        is_control = any(pat in name for pat in control_patterns)
        if name in ("tok_emb.weight", "bigram.table.weight"):
            groups["embed"].append(p)
        elif name == "lm_head.weight":
            groups["head"].append(p)
        elif p.ndim == 2 and not is_control and (name.startswith("blocks.") or name.startswith("bigram.")):
            groups["matrix"].append(p)
        else:
            groups["scalar"].append(p)
    return groups


def ns_dtype(cfg: Config, device: torch.device) -> torch.dtype:
    name = cfg.optim.muon_ns_dtype
    if name == "auto":
        name = "bfloat16" if device.type == "cuda" else "float64" if cfg.train.float64 else "float32"
    return getattr(torch, name)


def build_optimizers(model: nn.Module, cfg: Config, fused: bool,
                     eager: bool = False) -> tuple[list[torch.optim.Optimizer], Muon]:
    """The optimizers in the official order (token Adam, [head Adam,] Muon, scalar Adam[, SmearGate Adam]) and
    the Muon among them. ``fused``: torch's fused Adam (CUDA). ``eager``: the classes of
    :mod:`pgolf.core.eager_optim` (the same updates, no ``torch._dynamo`` import), for a model that is not
    compiled."""
    o = cfg.optim
    device = next(model.parameters()).device
    groups = split_params(model, cfg.model.control_patterns)
    token_lr = o.tied_embed_lr if cfg.model.tie_embeddings else o.embed_lr

    def adam(params: list[nn.Parameter], lr: float, beta2: float = o.beta2,
             wd: float = o.adam_weight_decay) -> torch.optim.Optimizer:
        kw = dict(betas=(o.beta1, beta2), eps=o.adam_eps, fused=fused)
        group = [{"params": params, "lr": lr, "base_lr": lr}]
        adam_cls, adamw_cls = (eager_optim.Adam, eager_optim.AdamW) if eager else (torch.optim.Adam, torch.optim.AdamW)
        if wd:
            return adamw_cls(group, weight_decay=wd, **kw)
        return adam_cls(group, **kw)

    smear = [p for n, p in model.named_parameters() if n.startswith("smear.")] if o.smear_beta2 > 0 else []
    groups["scalar"] = [p for p in groups["scalar"] if all(p is not q for q in smear)]
    embed_wd = o.adam_weight_decay if o.embed_weight_decay < 0 else o.embed_weight_decay
    opt_tok = adam(groups["embed"], token_lr, wd=embed_wd)
    muon = (EagerMuon if eager else Muon)(
        groups["matrix"], lr=o.matrix_lr, momentum=o.muon_momentum, backend_steps=o.muon_backend_steps,
        weight_decay=o.muon_weight_decay, ns_dtype=ns_dtype(cfg, device), row_normalize=o.muon_row_normalize,
        ns_coeffs=o.muon_ns_coeffs, momentum_dtype=o.muon_momentum_dtype)
    for g in muon.param_groups:
        g["base_lr"] = o.matrix_lr
    opt_scalar = adam(groups["scalar"], o.scalar_lr)
    optimizers: list[torch.optim.Optimizer] = [opt_tok, muon, opt_scalar]
    if groups["head"]:
        optimizers.insert(1, adam(groups["head"], o.head_lr))
    if smear:  # PR #194: the gate's own Adam with a longer second-moment memory, appended last
        optimizers.append(adam(smear, o.scalar_lr, o.smear_beta2))
    return optimizers, muon


def muon_momentum(step: int, cfg: Config) -> float:
    o = cfg.optim
    frac = min(step / o.muon_momentum_warmup_steps, 1.0) if o.muon_momentum_warmup_steps > 0 else 1.0
    return (1 - frac) * o.muon_momentum_warmup_start + frac * o.muon_momentum


def _cosine(t: float) -> float:
    """Cosine decay at progress t (0 -> 1 over the warmdown)."""
    return 0.5 * (1.0 + math.cos(math.pi * min(max(t, 0.0), 1.0)))


def _shape(remaining: float, sched: ScheduleConfig) -> float:
    """Map the linear remaining fraction (1 -> 0 over the warmdown) to the configured shape."""
    remaining = min(max(remaining, 0.0), 1.0)
    if sched.warmdown == "cosine":
        return _cosine(1.0 - remaining)
    return remaining


def lr_multiplier(step: int, elapsed_ms: float, cfg: Config) -> float:
    """LR scale for this step.

    - warmdown_frac > 0: decay over the last fraction of wallclock (or of iterations without a cap);
    - else the official rule: warmdown_iters steps, converted to wallclock with the running
      average step time when a cap is set.
    """
    s, t = cfg.schedule, cfg.train
    cap_s = cfg.training_cap_seconds  # less the GPTQ reserve, as PR #1394's schedule (equal without GPTQ)
    max_ms = 1000.0 * cap_s if cap_s > 0 else None
    if s.warmdown_frac > 0:
        progress = elapsed_ms / max_ms if max_ms else step / t.iterations
        start = 1.0 - s.warmdown_frac
        mult = 1.0 if progress < start else _shape((1.0 - progress) / s.warmdown_frac, s)
    elif s.warmdown_iters <= 0:
        mult = 1.0
    elif max_ms is None:
        warmdown_start = max(t.iterations - s.warmdown_iters, 0)
        if not warmdown_start <= step < t.iterations:
            mult = 1.0
        elif s.warmdown == "cosine":  # PR #326's progress formula (also when warmdown_iters > iterations)
            mult = _cosine((step - warmdown_start) / max(s.warmdown_iters, 1))
        else:
            mult = _shape((t.iterations - step) / max(s.warmdown_iters, 1), s)
    else:
        step_ms = elapsed_ms / max(step, 1)
        warmdown_ms = s.warmdown_iters * step_ms
        if s.warmdown_cap_frac > 0:
            warmdown_ms = min(warmdown_ms, max_ms * s.warmdown_cap_frac)
        remaining_ms = max(max_ms - elapsed_ms, 0.0)
        mult = _shape(remaining_ms / max(warmdown_ms, 1e-9), s) if remaining_ms <= warmdown_ms else 1.0
    return max(mult, s.min_lr_frac)
