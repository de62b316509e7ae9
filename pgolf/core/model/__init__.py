"""The pgolf GPT: ``build_model(cfg)`` gives the official baseline model at default settings."""

from __future__ import annotations

from pgolf.core.config import Config
from pgolf.core.model.gpt import GPT, Block
from pgolf.core.model.init import reseed_per_name
from pgolf.core.model.layers import CastedLinear, Rotary, ntk_base
from pgolf.core.model.mlp import MLPS, mlp_hidden


def build_model(cfg: Config) -> GPT:
    """The model for a run: RoPE's NTK scaling is keyed on the real training length; with
    ``model.init_seeding="per_name"`` its random parameters are re-drawn per name from ``train.seed``."""
    model = GPT(cfg.model, train_seq_len=cfg.train.train_seq_len, ntk=cfg.eval.ntk)
    if cfg.model.init_seeding == "per_name":
        reseed_per_name(model, cfg.model, cfg.train.seed)
    return model


__all__ = ["GPT", "Block", "CastedLinear", "Rotary", "ntk_base", "MLPS", "mlp_hidden", "build_model", "reseed_per_name"]
