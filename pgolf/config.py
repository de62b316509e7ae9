"""One typed configuration tree for a pgolf run.

Every default equals the official baseline ``train_gpt.py`` of openai/parameter-golf, so
``Config()`` *is* the baseline. Techniques from the seed PRs are fields that default to off.

Three ways in, all validated the same way:
- presets (``pgolf.presets``), then dotted overrides: ``model.num_layers=11``;
- the official environment names (``NUM_LAYERS=11``), mapped in :data:`ENV_KEYS` only;
- JSON (``Config.to_json`` / ``Config.from_json``), which round-trips exactly.
Unknown keys and invalid values raise :class:`ConfigError` naming the key and what was expected.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping


class ConfigError(ValueError):
    """A configuration key or value is wrong; the message names it and what was expected."""


def _check(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{key}: {msg}")


@dataclass
class ModelConfig:
    vocab_size: int = 1024  # tokens in the tokenizer
    num_layers: int = 9  # transformer blocks
    model_dim: int = 512  # residual width
    num_heads: int = 8  # query heads
    num_kv_heads: int = 4  # key/value heads (GQA)
    mlp: Literal["relu2", "swiglu", "leaky_relu2"] = "relu2"  # MLP variant (registry in model.mlp)
    mlp_mult: float = 2.0  # hidden = mlp_mult * model_dim (swiglu: 2/3 of that, rounded to 64)
    mlp_hidden: int = 0  # explicit hidden width; 0 derives it from mlp_mult
    leaky_slope: float = 0.5  # negative slope of leaky_relu2
    tie_embeddings: bool = True  # share tok_emb with the output head
    tied_embed_init_std: float = 0.005  # std of the tied embedding init
    logit_softcap: float = 30.0  # logits = cap * tanh(z / cap)
    rope_base: float = 10000.0  # RoPE base frequency
    qk_gain_init: float = 1.5  # initial per-head query gain
    unet_skips: bool = True  # encoder/decoder skip connections with learned per-dim weights
    smear_gate: Literal["off", "scalar", "per_dim"] = "off"  # blend each embedding with the previous one
    smear_init: Literal["identity", "half"] = "identity"  # gate logit 3.0 (g~0.95 on x_t) or 0.0 (0.5 mix)
    smear_placement: Literal["pre_norm", "post_norm"] = "pre_norm"  # before or after the embedding RMSNorm
    # which input g = sigmoid(gate) weights: current: g*x_t + (1-g)*x_{t-1}; previous: (1-g)*x_t + g*x_{t-1}
    # (the PR #162 lineage's form, sigmoid taken in the activation dtype as there)
    smear_gated: Literal["current", "previous"] = "current"
    bos_id: int = 1  # token that starts a document; smear never crosses it; -1: data marks none
    bigram_buckets: int = 0  # BigramHash table rows; 0 = off
    bigram_dim: int = 128  # BigramHash table width (projected to model_dim)
    bigram_scale_init: float = 0.05  # learned output scale of BigramHash
    # normal_table: table N(0, 0.01), projection zero; ortho_proj: table zero, projection orthogonal * 1/sqrt(2L)
    # (the PR #162 lineage: its "muP" .proj scaling only ever hits this matrix); needs init=orthogonal
    bigram_init: Literal["normal_table", "ortho_proj"] = "normal_table"
    # official: SmearGate/BigramHash created after the official init (it draws exactly the baseline's RNG);
    # records: created right after tok_emb as in the PR #162 lineage (its state-dict order and init RNG draws)
    module_order: Literal["official", "records"] = "official"
    init: Literal["default", "orthogonal"] = "default"  # init of non-zero-init matrices
    proj_init_gain: float = 0.0  # >0: orthogonal init of output projections scaled by gain/sqrt(2L)
    resid_mix_init: Literal["default", "phase"] = "default"  # phase: sigmoid(3(i/(L-1)-0.5)) mix
    embed_init: Literal["normal", "overtone"] = "normal"  # overtone: spectrum S_k = S_1 k^-1/2

    def __post_init__(self) -> None:
        for k in ("vocab_size", "num_layers", "model_dim", "num_heads", "num_kv_heads"):
            _check(getattr(self, k) > 0, f"model.{k}", f"expected a positive integer, got {getattr(self, k)}")
        _check(self.model_dim % self.num_heads == 0, "model.num_heads",
               f"must divide model_dim={self.model_dim}, got {self.num_heads}")
        _check(self.num_heads % self.num_kv_heads == 0, "model.num_kv_heads",
               f"must divide num_heads={self.num_heads}, got {self.num_kv_heads}")
        _check((self.model_dim // self.num_heads) % 2 == 0, "model.num_heads",
               "head_dim = model_dim / num_heads must be even for RoPE")
        _check(self.mlp_mult > 0, "model.mlp_mult", f"expected > 0, got {self.mlp_mult}")
        _check(self.mlp_hidden >= 0, "model.mlp_hidden", f"expected >= 0, got {self.mlp_hidden}")
        _check(self.logit_softcap > 0, "model.logit_softcap", f"expected > 0, got {self.logit_softcap}")
        _check(self.bigram_buckets >= 0, "model.bigram_buckets", f"expected >= 0, got {self.bigram_buckets}")
        _check(self.bos_id < self.vocab_size, "model.bos_id", f"expected < vocab_size, got {self.bos_id}")
        _check(self.bigram_init == "normal_table" or self.init == "orthogonal", "model.bigram_init",
               f"{self.bigram_init!r} is part of the orthogonal init; expected model.init='orthogonal', got {self.init!r}")


@dataclass
class DataConfig:
    path: str = ""  # folder with shards; "" = the embedded default dataset (pgolf data build)
    train_pattern: str = "fineweb_train_*.bin"  # train shard glob inside path
    val_pattern: str = "fineweb_val_*.bin"  # validation shard glob inside path
    tokenizer_path: str = ""  # SentencePiece .model; "" = <path>/tokenizer.model or the manifest's


@dataclass
class TrainConfig:
    seed: int = 1337
    iterations: int = 20000  # optimizer steps (upper bound when a wallclock cap is set)
    train_batch_tokens: int = 524_288  # global tokens per optimizer step
    train_seq_len: int = 1024  # tokens per training sequence
    grad_accum_steps: int = 0  # micro-batches per step and rank; 0 = 8 // world_size (official rule)
    max_wallclock_seconds: float = 600.0  # training-time cap; 0 = none (iteration-based schedule)
    warmup_steps: int = 20  # compile-priming steps, state restored afterwards (not an LR warmup)
    val_loss_every: int = 1000  # steps between validations; 0 = only at the end
    val_batch_size: int = 524_288  # validation tokens per batch (global)
    train_log_every: int = 200  # steps between train-loss log lines
    device: Literal["auto", "cpu", "cuda"] = "auto"
    compile: Literal["auto", "on", "off"] = "auto"  # auto: on for CUDA, off for CPU
    num_threads: int = 0  # torch threads on CPU; 0 = 1 per process (measured fastest here)
    checkpoint_every: int = 0  # steps between resumable checkpoints; 0 = none
    save_raw_model: bool = True  # write final_model.pt (unquantized) into the run folder

    def __post_init__(self) -> None:
        for k in ("iterations", "train_batch_tokens", "train_seq_len", "val_batch_size"):
            _check(getattr(self, k) > 0, f"train.{k}", f"expected a positive integer, got {getattr(self, k)}")
        for k in ("grad_accum_steps", "warmup_steps", "val_loss_every", "train_log_every",
                  "num_threads", "checkpoint_every"):
            _check(getattr(self, k) >= 0, f"train.{k}", f"expected >= 0, got {getattr(self, k)}")
        _check(self.max_wallclock_seconds >= 0, "train.max_wallclock_seconds",
               f"expected >= 0, got {self.max_wallclock_seconds}")


@dataclass
class OptimConfig:
    matrix_lr: float = 0.04  # Muon LR for 2-D block matrices
    scalar_lr: float = 0.04  # Adam LR for vectors, scalars and control tensors
    tied_embed_lr: float = 0.05  # Adam LR of the tied embedding
    embed_lr: float = 0.6  # Adam LR of an untied embedding
    head_lr: float = 0.008  # Adam LR of an untied head
    muon_momentum: float = 0.95
    muon_momentum_warmup_start: float = 0.85
    muon_momentum_warmup_steps: int = 500
    muon_backend_steps: int = 5  # Newton-Schulz iterations
    muon_ns_dtype: Literal["auto", "bfloat16", "float32"] = "auto"  # auto: bf16 on CUDA (official), fp32 on CPU
    muon_weight_decay: float = 0.0  # decoupled: p *= 1 - lr_t * wd, before the update
    adam_weight_decay: float = 0.0  # decoupled WD on the Adam groups (embedding and scalars)
    beta1: float = 0.9
    beta2: float = 0.95
    adam_eps: float = 1e-8
    grad_clip_norm: float = 0.0  # global-norm clip over all parameters; 0 = off

    def __post_init__(self) -> None:
        for k in ("matrix_lr", "scalar_lr", "tied_embed_lr", "embed_lr", "head_lr",
                  "muon_weight_decay", "adam_weight_decay", "grad_clip_norm"):
            _check(getattr(self, k) >= 0, f"optim.{k}", f"expected >= 0, got {getattr(self, k)}")
        for k in ("muon_momentum", "muon_momentum_warmup_start", "beta1", "beta2"):
            _check(0 <= getattr(self, k) < 1, f"optim.{k}", f"expected in [0, 1), got {getattr(self, k)}")
        _check(self.muon_backend_steps > 0, "optim.muon_backend_steps", "expected > 0")


@dataclass
class ScheduleConfig:
    warmdown: Literal["linear", "cosine"] = "linear"  # shape of the LR decay
    warmdown_iters: int = 1200  # decay length in steps (converted to wallclock under a cap)
    warmdown_frac: float = 0.0  # >0: decay over this fraction of wallclock (or iterations) instead
    min_lr_frac: float = 0.0  # floor of the LR multiplier

    def __post_init__(self) -> None:
        _check(self.warmdown_iters >= 0, "schedule.warmdown_iters", "expected >= 0")
        _check(0 <= self.warmdown_frac <= 1, "schedule.warmdown_frac", f"expected in [0, 1], got {self.warmdown_frac}")
        _check(0 <= self.min_lr_frac < 1, "schedule.min_lr_frac", f"expected in [0, 1), got {self.min_lr_frac}")


BITS = (4, 5, 6, 8)
QAT_CLASSES = ("attn", "mlp", "other")


@dataclass
class QATConfig:
    enabled: bool = False  # straight-through fake quantization with the export quantizer
    start_frac: float = 0.0  # switch on at this fraction of wallclock (or of iterations without a cap)
    scope: tuple[str, ...] = QAT_CLASSES  # tensor classes fake-quantized (of the matrices exported as ints)
    bits: int = 0  # 0: each class's export bits; else this width for every fake-quantized matrix
    # The quantizer. "export" (pgolf): exactly the export's codes and fp16-stored scales, so QAT trains on
    # the weights the artifact will hold. Any other value gives a PR-style quantizer computed in fp32.
    clip: Literal["export", "quantile", "amax"] = "export"  # per-row clip value
    scale_floor: Literal["export", "qmax", "none"] = "export"  # qmax: scale >= 1/qmax; none: max(clip,1e-12)/qmax
    scale_dtype: Literal["export", "fp32", "fp16"] = "export"  # dtype of the scale the codes are computed with

    def __post_init__(self) -> None:
        _check(0 <= self.start_frac < 1, "qat.start_frac", f"expected in [0, 1), got {self.start_frac}")
        self.scope = tuple(self.scope)
        bad = sorted(set(self.scope) - set(QAT_CLASSES))
        _check(not bad, "qat.scope", f"expected classes among {list(QAT_CLASSES)}, got {bad}")
        _check(self.bits == 0 or self.bits in BITS, "qat.bits", f"expected 0 or one of {BITS}, got {self.bits}")

    @property
    def own_quantizer(self) -> bool:
        """True when QAT uses its own (PR-style) quantizer rather than the export's."""
        return (self.clip, self.scale_floor, self.scale_dtype) != ("export", "export", "export")


@dataclass
class AveragingConfig:
    mode: Literal["none", "swa", "ema"] = "none"
    swa_start_lr_scale: float = 0.5  # SWA collects once the LR multiplier falls below this
    swa_every: int = 50  # steps between SWA snapshots
    swa_dtype: Literal["fp32", "param"] = "fp32"  # SWA sum dtype; param: each tensor's own (records: bf16 tok_emb)
    swa_min_snapshots: int = 1  # apply the SWA average only with at least this many snapshots (records: 2)
    ema_decay: float = 0.997

    def __post_init__(self) -> None:
        _check(self.swa_every > 0, "averaging.swa_every", "expected > 0")
        _check(self.swa_min_snapshots >= 1, "averaging.swa_min_snapshots", f"expected >= 1, got {self.swa_min_snapshots}")
        _check(0 < self.ema_decay < 1, "averaging.ema_decay", f"expected in (0, 1), got {self.ema_decay}")


DEFAULT_CONTROL_PATTERNS = (
    "attn_scale", "attn_scales", "mlp_scale", "mlp_scales", "resid_mix", "resid_mixes",
    "q_gain", "skip_weight", "skip_weights", "smear", "bigram.scale",
)


@dataclass
class ExportConfig:
    bits_attn: int = 8  # bits for attention matrices (c_q, c_k, c_v, proj)
    bits_mlp: int = 8  # bits for MLP matrices
    bits_other: int = 8  # bits for other large matrices (embedding when not fp16, bigram, head)
    embed_fp16: bool = False  # keep the tied embedding as fp16 passthrough
    clip: Literal["quantile", "amax"] = "quantile"  # per-row clip value
    clip_quantile: float = 0.9999984  # official INT8_CLIP_PERCENTILE / 100
    scale_floor: bool = True  # scale >= 1/qmax (official); off: scale >= fp16 tiny (relative grid for tiny rows)
    scale_dtype: Literal["fp32", "fp16"] = "fp32"  # scale the codes are computed with (always stored fp16)
    keep_float_max_numel: int = 65_536  # float tensors this small pass through unquantized (fp16)
    control_patterns: tuple[str, ...] = DEFAULT_CONTROL_PATTERNS  # fp32 passthrough
    control_fp32: bool = True  # control check before the small-tensor rule; False: records' order (bug 9)
    fp16_patterns: tuple[str, ...] = ()  # name substrings kept as fp16 passthrough (e.g. "blocks.9.attn.c_k")
    prune_frac: float = 0.0  # zero this fraction of smallest-|w| entries of each pruned matrix
    prune_frac_mlp: float = -1.0  # fraction for ".mlp." matrices; -1: same as prune_frac
    prune_scope: Literal["quantized", "matrices"] = "quantized"  # int-exported matrices, or all 2-D floats
    prune_min_numel: int = 65_536  # "matrices" scope: only tensors with more elements than this
    prune_rule: Literal["kthvalue", "quantile"] = "kthvalue"  # |w| <= k-th smallest, or |w| < torch.quantile
    compressor: Literal["zlib", "zstd", "lzma"] = "zlib"
    level: int = -1  # -1: zlib 9, zstd 22, lzma 9|EXTREME
    bitpack: bool = False  # pack sub-8-bit codes densely before compression

    def __post_init__(self) -> None:
        for k in ("bits_attn", "bits_mlp", "bits_other"):
            _check(getattr(self, k) in BITS, f"export.{k}", f"expected one of {BITS}, got {getattr(self, k)}")
        _check(0 < self.clip_quantile <= 1, "export.clip_quantile", "expected in (0, 1]")
        _check(0 <= self.prune_frac < 1, "export.prune_frac", f"expected in [0, 1), got {self.prune_frac}")
        _check(self.prune_frac_mlp == -1.0 or 0 <= self.prune_frac_mlp < 1, "export.prune_frac_mlp",
               f"expected -1 (same as prune_frac) or a value in [0, 1), got {self.prune_frac_mlp}")
        _check(self.prune_min_numel >= 0, "export.prune_min_numel", f"expected >= 0, got {self.prune_min_numel}")
        self.control_patterns = tuple(self.control_patterns)
        self.fp16_patterns = tuple(self.fp16_patterns)
        _check(all(self.fp16_patterns), "export.fp16_patterns", "expected non-empty name substrings")

    def prune_frac_for(self, name: str) -> float:
        return self.prune_frac_mlp if self.prune_frac_mlp >= 0 and ".mlp." in name else self.prune_frac


@dataclass
class EvalConfig:
    seq_len: int = 0  # evaluation sequence length; 0 = train_seq_len
    stride: int = 0  # sliding-window stride; 0 = non-overlapping windows
    tail: Literal["drop", "score"] = "drop"  # drop: official (tail shorter than seq_len unscored)
    ntk: bool = True  # NTK-aware RoPE base when seq_len exceeds the real training length
    batch_seqs: int = 32  # windows per forward in sliding evaluation
    # once: every validation target scored exactly once (pgolf); rescore_tail: PR #124's rule kept by the
    # records (stream cut to a multiple of seq_len, windows every stride while >= stride targets remain, each
    # scoring its last stride, so the final stride targets are scored once per trailing window)
    window_rule: Literal["once", "rescore_tail"] = "once"
    max_tokens: int = 0  # score only the first N validation tokens (CPU smoke runs); 0 = all (official)

    def __post_init__(self) -> None:
        _check(self.seq_len >= 0, "eval.seq_len", "expected >= 0")
        _check(self.stride >= 0, "eval.stride", "expected >= 0")
        _check(self.batch_seqs > 0, "eval.batch_seqs", "expected > 0")
        _check(self.max_tokens >= 0, "eval.max_tokens", "expected >= 0")


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    qat: QATConfig = field(default_factory=QATConfig)
    averaging: AveragingConfig = field(default_factory=AveragingConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        ev = self.eval
        if ev.stride:
            L = ev.seq_len or self.train.train_seq_len
            _check(ev.stride <= L, "eval.stride", f"expected <= eval seq_len {L}, got {ev.stride}")

    # -- dict / JSON ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, where: str = "config") -> "Config":
        return _build(cls, d, where)

    @classmethod
    def from_json(cls, path: str | Path) -> "Config":
        p = Path(path)
        try:
            d = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"{p}: not valid JSON ({e})") from None
        try:
            return cls.from_dict(d, where=str(p))
        except ConfigError as e:
            raise ConfigError(str(e) if str(e).startswith(str(p)) else f"{p}: {e}") from None

    def replace(self, overrides: Mapping[str, Any] | list[str]) -> "Config":
        """A copy with dotted overrides applied ({'model.num_layers': 11} or ['model.num_layers=11'])."""
        return apply_overrides(self, overrides)


_SECTION_TYPES = {
    "model": ModelConfig, "data": DataConfig, "train": TrainConfig, "optim": OptimConfig,
    "schedule": ScheduleConfig, "qat": QATConfig, "averaging": AveragingConfig,
    "export": ExportConfig, "eval": EvalConfig,
}


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert ``value`` (possibly a string from the command line or env) to ``tp``."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{key}: expected one of {list(choices)}, got {value!r}")
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, (int,)) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return value.lower() in ("1", "true", "yes", "on")
        raise ConfigError(f"{key}: expected a boolean (true/false/1/0), got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.replace("_", ""))
            except ValueError:
                try:
                    f = float(value)
                except ValueError:
                    f = None
                if f is not None and f.is_integer():
                    return int(f)
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{key}: expected a list of strings, got {value!r}")
        return tuple(value)
    raise ConfigError(f"{key}: unsupported type {tp}")


def _build(cls: type, d: Mapping[str, Any], where: str) -> Any:
    if not isinstance(d, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(d).__name__}")
    types = _field_types(cls)
    unknown = sorted(set(d) - set(types))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; expected some of {sorted(types)}")
    kwargs = {}
    for name, value in d.items():
        if cls is Config:
            kwargs[name] = _build(_SECTION_TYPES[name], value, name if where == "config" else f"{where}: {name}")
        else:
            kwargs[name] = _coerce(value, types[name], f"{where}.{name}")
    return cls(**kwargs)


def parse_override(item: str) -> tuple[str, str]:
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected section.key=value, e.g. model.num_layers=11")
    key, value = item.split("=", 1)
    return key.strip(), value.strip()


def apply_overrides(cfg: Config, overrides: Mapping[str, Any] | list[str] | tuple[str, ...]) -> Config:
    """Return a validated copy of ``cfg`` with dotted overrides applied."""
    if isinstance(overrides, (list, tuple)):
        overrides = dict(parse_override(o) for o in overrides)
    d = cfg.to_dict()
    for key, value in overrides.items():
        parts = key.split(".")
        if len(parts) != 2 or parts[0] not in _SECTION_TYPES:
            raise ConfigError(
                f"override {key!r}: expected section.key with section one of {sorted(_SECTION_TYPES)}"
            )
        section, name = parts
        types = _field_types(_SECTION_TYPES[section])
        if name not in types:
            raise ConfigError(f"override {key!r}: unknown key {name!r} in {section}; expected one of {sorted(types)}")
        d[section][name] = _coerce(value, types[name], key)
    return Config.from_dict(d)


# The official environment-variable names (train_gpt.py and the seed PRs), in one place.
ENV_KEYS: dict[str, str] = {
    "DATA_PATH": "data.path",
    "TOKENIZER_PATH": "data.tokenizer_path",
    "SEED": "train.seed",
    "VAL_BATCH_SIZE": "train.val_batch_size",
    "VAL_LOSS_EVERY": "train.val_loss_every",
    "TRAIN_LOG_EVERY": "train.train_log_every",
    "ITERATIONS": "train.iterations",
    "WARMDOWN_ITERS": "schedule.warmdown_iters",
    "WARMDOWN_STEPS": "schedule.warmdown_iters",
    "WARMDOWN_FRAC": "schedule.warmdown_frac",
    "MIN_LR": "schedule.min_lr_frac",
    "WARMUP_STEPS": "train.warmup_steps",
    "TRAIN_BATCH_TOKENS": "train.train_batch_tokens",
    "TRAIN_SEQ_LEN": "train.train_seq_len",
    "MAX_WALLCLOCK_SECONDS": "train.max_wallclock_seconds",
    "QK_GAIN_INIT": "model.qk_gain_init",
    "VOCAB_SIZE": "model.vocab_size",
    "NUM_LAYERS": "model.num_layers",
    "NUM_KV_HEADS": "model.num_kv_heads",
    "MODEL_DIM": "model.model_dim",
    "NUM_HEADS": "model.num_heads",
    "MLP_MULT": "model.mlp_mult",
    "MLP_HIDDEN": "model.mlp_hidden",
    "TIE_EMBEDDINGS": "model.tie_embeddings",
    "ROPE_BASE": "model.rope_base",
    "LOGIT_SOFTCAP": "model.logit_softcap",
    "EMBED_LR": "optim.embed_lr",
    "HEAD_LR": "optim.head_lr",
    "TIED_EMBED_LR": "optim.tied_embed_lr",
    "TIED_EMBED_INIT_STD": "model.tied_embed_init_std",
    "MATRIX_LR": "optim.matrix_lr",
    "SCALAR_LR": "optim.scalar_lr",
    "MUON_MOMENTUM": "optim.muon_momentum",
    "MUON_BACKEND_STEPS": "optim.muon_backend_steps",
    "MUON_MOMENTUM_WARMUP_START": "optim.muon_momentum_warmup_start",
    "MUON_MOMENTUM_WARMUP_STEPS": "optim.muon_momentum_warmup_steps",
    "MUON_WEIGHT_DECAY": "optim.muon_weight_decay",
    "BETA1": "optim.beta1",
    "BETA2": "optim.beta2",
    "ADAM_EPS": "optim.adam_eps",
    "GRAD_CLIP_NORM": "optim.grad_clip_norm",
    "EVAL_STRIDE": "eval.stride",
    "EVAL_SEQ_LEN": "eval.seq_len",
    "EVAL_BATCH_SEQS": "eval.batch_seqs",
    "QAT_FRACTION": "qat.start_frac",
    "SWA_START_FRAC": "averaging.swa_start_lr_scale",
    "SWA_EVERY": "averaging.swa_every",
    "BIGRAM_BUCKETS": "model.bigram_buckets",
    "BIGRAM_DIM": "model.bigram_dim",
}


def _env_special(name: str, value: str) -> dict[str, Any]:
    """Seed-PR switches that do not map one-to-one onto a single field."""
    on = value.strip().lower() in ("1", "true", "yes", "on")
    if name == "USE_SWIGLU":
        return {"model.mlp": "swiglu" if on else "relu2"}
    if name == "QAT":
        return {"qat.enabled": on}
    if name == "QUANT_BITS":
        return {"export.bits_attn": value, "export.bits_mlp": value}
    if name == "FP16_EMBED":
        return {"export.embed_fp16": on}
    if name == "SMEAR_GATE":
        return {"model.smear_gate": "per_dim" if on else "off"}
    if name == "BIGRAM_HASH":
        return {} if on else {"model.bigram_buckets": 0}
    if name == "SWA_ENABLED":
        return {"averaging.mode": "swa" if on else "none"}
    raise KeyError(name)


ENV_SPECIAL = ("USE_SWIGLU", "QAT", "QUANT_BITS", "FP16_EMBED", "SMEAR_GATE", "BIGRAM_HASH", "SWA_ENABLED")


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """Dotted overrides from the official environment names present in ``environ``."""
    out: dict[str, Any] = {}
    for name in ENV_SPECIAL:
        if name in environ:
            out.update(_env_special(name, environ[name]))
    if "QAT_FRACTION" in environ:
        out["qat.enabled"] = True
        # The seed PR's QAT_FRACTION is the trailing fraction of training with QAT on.
        out["qat.start_frac"] = str(1.0 - float(environ["QAT_FRACTION"]))
    for name, key in ENV_KEYS.items():
        if name in environ and name != "QAT_FRACTION":
            out[key] = environ[name]
    return out


def from_env(cfg: Config, environ: Mapping[str, str]) -> Config:
    return apply_overrides(cfg, env_overrides(environ))
