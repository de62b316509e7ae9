"""Embedding-side options: SmearGate and BigramHash. Both are causal by construction."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pgolf.core.model.layers import CastedLinear

SMEAR_INIT_LOGIT = {"identity": 3.0, "half": 0.0}  # sigmoid(3) ~ 0.95 on x_t; sigmoid(0) = 0.5


class SmearGate(nn.Module):
    """x_t <- g * x_t + (1 - g) * x_{t-1}, g = sigmoid(gate), scalar or per dimension.

    ``gate_on="previous"`` is the records' parametrization (PR #194 and later), (1 - g) * x_t + g * x_{t-1},
    with their op order (the gate cast to the activation dtype before the sigmoid): the same family with the
    gate's sign flipped, kept so their checkpoints load and their forward is bitwise. The init logit is
    negated so that an init name means the same mix in both forms.
    Position 0 of a sequence has a zero predecessor. A BOS token (a document start) never takes
    anything from the previous position, so nothing leaks across documents in a packed stream.
    """

    def __init__(self, dim: int, mode: str, init: str, bos_id: int, gate_on: str = "current"):
        super().__init__()
        n = dim if mode == "per_dim" else 1
        logit = SMEAR_INIT_LOGIT[init]  # the same start either way: 0.0 - logit keeps +0.0 for "half"
        self.gate = nn.Parameter(torch.full((n,), logit if gate_on == "current" else 0.0 - logit, dtype=torch.float32))
        self.bos_id, self.gate_on = bos_id, gate_on

    def forward(self, x: Tensor, input_ids: Tensor) -> Tensor:
        prev = F.pad(x[:, :-1], (0, 0, 1, 0))  # (B, T, D): x_{t-1}, zeros at t=0
        if self.bos_id >= 0:
            prev = prev * (input_ids != self.bos_id).unsqueeze(-1).to(x.dtype)
        if self.gate_on == "previous":
            g = torch.sigmoid(self.gate.to(x.dtype))
            return (1 - g) * x + g * prev
        g = torch.sigmoid(self.gate).to(x.dtype)
        return g * x + (1 - g) * prev


class InputSmearGate(nn.Module):
    """x_t <- x_t + lam * sigmoid(w . x_t[:window]) * x_{t-1} (PR #1855, after PR #1667): how much of the previous
    embedding a token takes depends on the token itself. ``w`` and ``lam`` start at zero, so the gate is the
    identity at init (and draws nothing from the RNG). Position 0 and a BOS token take nothing from before them
    (the record's BOS fix), so nothing crosses a document boundary in a packed stream."""

    def __init__(self, window: int, bos_id: int):
        super().__init__()
        self.window, self.bos_id = window, bos_id
        self.weight = nn.Parameter(torch.zeros(1, window, dtype=torch.float32))
        self.lam = nn.Parameter(torch.zeros(1, dtype=torch.float32))

    def forward(self, x: Tensor, input_ids: Tensor) -> Tensor:
        prev = F.pad(x[:, :-1], (0, 0, 1, 0))  # (B, T, D): x_{t-1}, zeros at t=0
        g = self.lam.to(x.dtype) * torch.sigmoid(F.linear(x[..., :self.window], self.weight.to(x.dtype)))  # (B, T, 1)
        if self.bos_id < 0:
            return x + g * prev
        return x + g * prev * (input_ids != self.bos_id).to(x.dtype).unsqueeze(-1)


class BigramHash(nn.Module):
    """Hashed (previous, current) input-token embedding, projected to the model width and scaled.

    bucket = (36313 * cur XOR 27191 * prev) mod (buckets - 1); position 0 (and a BOS token) use the
    reserved bucket buckets - 1. Only input tokens at t and t-1 are read, so it is causal.
    ``init="normal_table"``: the table starts N(0, 0.01) and the projection at zero: with both at zero (as
    in some records) neither would ever receive a gradient. ``init="ortho_proj"`` (records #314/#326): the
    table starts at zero and the GPT gives the projection an orthogonal init (see GPT._option_init).
    """

    def __init__(self, buckets: int, dim: int, model_dim: int, scale_init: float, bos_id: int,
                 init: str = "normal_table"):
        super().__init__()
        self.buckets, self.bos_id = buckets, bos_id
        self.table = nn.Embedding(buckets, dim)
        if init == "normal_table":
            nn.init.normal_(self.table.weight, std=0.01)
        else:
            nn.init.zeros_(self.table.weight)
        self.proj = CastedLinear(dim, model_dim, zero_init=True)
        nn.init.zeros_(self.proj.weight)
        self.scale = nn.Parameter(torch.tensor(scale_init, dtype=torch.float32))

    def bucket_ids(self, input_ids: Tensor) -> Tensor:
        prev = F.pad(input_ids[:, :-1], (1, 0))
        h = torch.bitwise_xor(36313 * input_ids, 27191 * prev) % (self.buckets - 1)
        first = torch.zeros_like(input_ids, dtype=torch.bool)
        first[:, 0] = True
        if self.bos_id >= 0:
            first = first | (input_ids == self.bos_id)
        return torch.where(first, torch.full_like(h, self.buckets - 1), h)

    def forward(self, input_ids: Tensor) -> Tensor:
        return self.proj(self.table(self.bucket_ids(input_ids))) * self.scale
