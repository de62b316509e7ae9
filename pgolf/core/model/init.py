"""Per-parameter-name init seeding (``model.init_seeding="per_name"``): common random numbers across arms.

With the default ``"global"`` every random init comes from the global torch RNG in module-creation order, so
an arm that adds a module (a SwiGLU gate, a BigramHash table built before the blocks) shifts the draws of
every tensor created after it. ``"per_name"`` re-draws, after the model is built normally, every randomly
initialized parameter from its own generator seeded by :func:`name_seed` ``(init_seed, name)``, with the
distribution the normal init gives it; parameters with a constant init (zeros, ones, gate logits, gains)
are left as built. Two arms then share every tensor they have in common, bit for bit.

The rules (:data:`RULES`, by module type) mirror :mod:`pgolf.core.model.gpt`, ``layers`` and ``embed``:

- ``CastedLinear``: nn.Linear's default, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (kaiming_uniform, a=sqrt(5));
  zero-init ones stay zero; with ``model.init="orthogonal"``: orthogonal(gain 1) when the smaller side is
  >= ortho_min_dim, zero-init ones orthogonal(proj_init_gain / sqrt(2L)) when proj_init_gain > 0, and
  ``bigram.proj`` orthogonal(1 / sqrt(2L)) with ``bigram_init="ortho_proj"``.
- ``tok_emb``: N(0, tied_embed_init_std) when tied, N(0, 1) (nn.Embedding's default) when not;
  ``embed_init="overtone"``: N(0, tied_embed_init_std) reshaped to the spectrum S_k = S_1 k^-1/2.
- ``bigram.table``: N(0, 0.01) (``normal_table``) or zeros (``ortho_proj``).

A module type with parameters that has no rule is a :class:`~pgolf.core.config.ConfigError`, never a silent
fall-back to the global RNG.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from pgolf.core.config import ConfigError, ModelConfig
from pgolf.core.model.embed import BigramHash, SmearGate
from pgolf.core.model.gpt import GPT, Block
from pgolf.core.model.layers import CastedLinear, CausalSelfAttention

# A rule fills a tensor in place from a generator; None: the parameter's init is constant, left as built.
Draw = Callable[[Tensor, torch.Generator], None]


def name_seed(init_seed: int, name: str) -> int:
    """A parameter's generator seed: the first 8 bytes of sha256(f"{init_seed}/{name}"), little-endian."""
    return int.from_bytes(hashlib.sha256(f"{init_seed}/{name}".encode()).digest()[:8], "little")


def _uniform_fan_in(w: Tensor, g: torch.Generator) -> None:
    nn.init.kaiming_uniform_(w, a=math.sqrt(5), generator=g)  # nn.Linear's default: U(+-1/sqrt(fan_in))


def _orthogonal(gain: float) -> Draw:
    return lambda w, g: nn.init.orthogonal_(w, gain=gain, generator=g)


def _normal(std: float) -> Draw:
    return lambda w, g: nn.init.normal_(w, mean=0.0, std=std, generator=g)


def _overtone(std: float) -> Draw:
    def draw(w: Tensor, g: torch.Generator) -> None:
        x = torch.randn(w.shape, generator=g, dtype=w.dtype) * std
        u, s, vh = torch.linalg.svd(x, full_matrices=False)
        k = torch.arange(1, s.numel() + 1, dtype=s.dtype)
        w.copy_(u @ torch.diag(s[0] * k.pow(-0.5)) @ vh)
    return draw


def _linear_rule(name: str, m: CastedLinear, cfg: ModelConfig) -> dict[str, Draw | None]:
    if m.bias is not None:
        raise ConfigError(f"model.init_seeding: {name}.bias has no per_name rule (pgolf linears have no bias)")
    depth_gain = 1.0 / math.sqrt(2 * cfg.num_layers)
    rule: Draw | None
    if name.endswith("bigram.proj"):
        ortho = cfg.init == "orthogonal" and cfg.bigram_init == "ortho_proj"
        rule = _orthogonal(depth_gain) if ortho else None
    elif m.zero_init:
        rule = _orthogonal(cfg.proj_init_gain * depth_gain) if cfg.init == "orthogonal" and cfg.proj_init_gain > 0 else None
    elif cfg.init == "orthogonal" and min(m.weight.shape) >= cfg.ortho_min_dim:
        rule = _orthogonal(1.0)
    else:
        rule = _uniform_fan_in
    return {"weight": rule}


def _embedding_rule(name: str, m: nn.Embedding, cfg: ModelConfig) -> dict[str, Draw | None]:
    if name.endswith("bigram.table"):
        return {"weight": _normal(0.01) if cfg.bigram_init == "normal_table" else None}
    if name != "tok_emb":
        raise ConfigError(f"model.init_seeding: embedding {name!r} has no per_name rule")
    if cfg.embed_init == "overtone":
        return {"weight": _overtone(cfg.tied_embed_init_std)}
    return {"weight": _normal(cfg.tied_embed_init_std if cfg.tie_embeddings else 1.0)}


def _constant(*names: str):
    return lambda name, m, cfg: dict.fromkeys(names)


def _gpt_rule(name: str, m: nn.Module, cfg: ModelConfig) -> dict[str, Draw | None]:
    return dict.fromkeys(n for n, _ in m.named_parameters(recurse=False) if n in ("skip_weights", "skip_gates"))


def _block_rule(name: str, m: nn.Module, cfg: ModelConfig) -> dict[str, Draw | None]:
    return dict.fromkeys(("attn_scale", "mlp_scale", "resid_mix"))


# module type -> (qualified name, module, cfg) -> {direct parameter name: rule or None (constant init)}
RULES: dict[type, Callable[[str, nn.Module, ModelConfig], dict[str, Draw | None]]] = {
    CastedLinear: _linear_rule,
    nn.Embedding: _embedding_rule,
    GPT: _gpt_rule,
    Block: _block_rule,
    CausalSelfAttention: _constant("q_gain"),
    SmearGate: _constant("gate"),
    BigramHash: _constant("scale"),
}
INIT_CHOICES = {"init": ("default", "orthogonal"), "embed_init": ("normal", "overtone"),
                "bigram_init": ("normal_table", "ortho_proj")}


def _rules_for(name: str, m: nn.Module, cfg: ModelConfig) -> dict[str, Draw | None]:
    rule = RULES.get(type(m))
    own = [n for n, _ in m.named_parameters(recurse=False)]
    if rule is None:
        if own:
            raise ConfigError(f"model.init_seeding: no per_name rule for {type(m).__name__} {name!r} "
                              f"(parameters {own}); use model.init_seeding='global'")
        return {}
    rules = rule(name, m, cfg)
    missing = [n for n in own if n not in rules]
    if missing:
        raise ConfigError(f"model.init_seeding: no per_name rule for {name!r} parameters {missing}")
    return rules


def random_parameters(model: nn.Module, cfg: ModelConfig) -> dict[str, Draw]:
    """Qualified name -> draw rule of every randomly initialized parameter (constant ones are left out)."""
    for key, choices in INIT_CHOICES.items():
        if getattr(cfg, key) not in choices:
            raise ConfigError(f"model.init_seeding: per_name cannot reproduce model.{key}={getattr(cfg, key)!r}")
    out: dict[str, Draw] = {}
    for mod_name, m in model.named_modules():
        for p_name, rule in _rules_for(mod_name, m, cfg).items():
            if rule is not None:
                out[f"{mod_name}.{p_name}" if mod_name else p_name] = rule
    return out


@torch.no_grad()
def reseed_per_name(model: nn.Module, cfg: ModelConfig, init_seed: int) -> nn.Module:
    """Re-draw every random parameter of ``model`` from its own generator (module docstring); returns ``model``."""
    params = dict(model.named_parameters())
    for name, draw in random_parameters(model, cfg).items():
        p = params[name]
        if p.is_meta:  # a model built on the meta device (parameter counting) holds no values to draw
            continue
        g = torch.Generator(device=p.device).manual_seed(name_seed(init_seed, name))
        draw(p, g)
    return model
