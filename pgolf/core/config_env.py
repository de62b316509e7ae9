"""The official environment-variable names (``NUM_LAYERS=11 ...``) mapped onto the config tree.

Split out of :mod:`pgolf.core.config` (which re-exports every public name) to keep each file small.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Mapping
from typing import Any

from pgolf.core.config import (
    _SECTION_TYPES,
    BITS,
    BOOL_FALSE,
    BOOL_HELP,
    BOOL_TRUE,
    Config,
    ConfigError,
    ModelConfig,
    _coerce,
    _field_types,
    apply_overrides,
)

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
    "SWA_START_FRAC": "averaging.swa_start_lr_scale",
    "SWA_EVERY": "averaging.swa_every",
    "BIGRAM_BUCKETS": "model.bigram_buckets",
    "BIGRAM_DIM": "model.bigram_dim",
    # PR #1394's names (its loop range LOOP_START/LOOP_END/NUM_LOOPS: ENV_LOOP, read together)
    "XSA_LAST_N": "model.xsa_last_n",
    "ROPE_DIMS": "model.rope_dims",
    "LN_SCALE": "model.ln_scale_by_depth",
    "SKIP_GATES_ENABLED": "model.skip_gates",
    "ENABLE_LOOPING_AT": "model.loop_start_frac",
    "MUON_ROW_NORMALIZE": "optim.muon_row_normalize",
    "MUON_WD": "optim.muon_weight_decay",
    "ADAM_WD": "optim.adam_weight_decay",
    "EMBED_WD": "optim.embed_weight_decay",
    "EMA_DECAY": "averaging.ema_decay",
    "GPTQ_RESERVE_SECONDS": "export.gptq_reserve_seconds",
    "GPTQ_CALIBRATION_BATCHES": "export.gptq_calibration_batches",
    "MATRIX_CLIP_SIGMAS": "export.sdclip_sigmas_matrix",
    "EMBED_CLIP_SIGMAS": "export.sdclip_sigmas_embed",
    "COMPRESSOR": "export.compressor",
    # PR #1855's (record 2026-04-27) names
    "VAL_BATCH_TOKENS": "train.val_batch_size",
    "MLP_CLIP_SIGMAS": "export.sdclip_sigmas_mlp",
    "ATTN_CLIP_SIGMAS": "export.sdclip_sigmas_attn",
    "GATED_ATTN_QUANT_GATE": "export.gate_int8",
    "GATE_WINDOW": "model.gate_window",
    "SPARSE_ATTN_GATE_ENABLED": "model.sparse_attn_gate",
    "SPARSE_ATTN_GATE_SCALE": "model.sparse_attn_gate_scale",
    "PARALLEL_START_LAYER": "model.parallel_start_layer",
    "PARALLEL_FINAL_LANE": "model.parallel_final_lane",
    "LQER_RANK": "export.lqer_rank",
    "LQER_TOP_K": "export.lqer_top_k",
    "LQER_FACTOR_BITS": "export.lqer_factor_bits",
    "LQER_ASYM_GROUP": "export.lqer_asym_group",
    "CASEOPS_ENABLED": "data.caseops",  # val_bpb from the byte sidecar (the record: also its CaseOps data paths)
    # PR #1855's phased LoRA test-time training (TTT_ENABLED and the adapter class's TTT_LORA_ALPHA /
    # TTT_WARM_START_A: ENV_SPECIAL)
    "TTT_LORA_RANK": "eval.ttt_lora_rank",
    "TTT_LORA_LR": "eval.ttt_lora_lr",
    "TTT_CHUNK_SIZE": "eval.ttt_chunk_size",
    "TTT_EVAL_SEQ_LEN": "eval.ttt_eval_seq_len",
    "TTT_BATCH_SIZE": "eval.ttt_batch_size",
    "TTT_GRAD_STEPS": "eval.ttt_grad_steps",
    "TTT_WEIGHT_DECAY": "eval.ttt_weight_decay",
    "TTT_BETA1": "eval.ttt_beta1",
    "TTT_BETA2": "eval.ttt_beta2",
    "TTT_K_LORA": "eval.ttt_k_lora",
    "TTT_MLP_LORA": "eval.ttt_mlp_lora",
    "TTT_O_LORA": "eval.ttt_o_lora",
    "PHASED_TTT_PREFIX_DOCS": "eval.ttt_prefix_docs",
    "PHASED_TTT_NUM_PHASES": "eval.ttt_num_phases",
    "GLOBAL_TTT_LR": "eval.ttt_global_lr",
    "GLOBAL_TTT_MOMENTUM": "eval.ttt_global_momentum",
    "GLOBAL_TTT_EPOCHS": "eval.ttt_global_epochs",
    "GLOBAL_TTT_CHUNK_TOKENS": "eval.ttt_global_chunk_tokens",
    "GLOBAL_TTT_BATCH_SEQS": "eval.ttt_global_batch_seqs",
    "GLOBAL_TTT_WARMUP_START_LR": "eval.ttt_global_warmup_start_lr",
    "GLOBAL_TTT_WARMUP_CHUNKS": "eval.ttt_global_warmup_chunks",
    "GLOBAL_TTT_GRAD_CLIP": "eval.ttt_global_grad_clip",
}


# Environment switches take the boolean words of BOOL_TRUE / BOOL_FALSE (any case, surrounding spaces
# ignored) and nothing else. The seed scripts parse them with ``bool(int(value))``, which reads QAT=2 as on
# and crashes on QAT=true; pgolf refuses QAT=2, naming the variable, rather than guess.
SMEAR_MODES = typing.get_args(_field_types(ModelConfig)["smear_gate"])


def _env_error(name: str, value: str, msg: str, key: str | None = None) -> ConfigError:
    return ConfigError(f"{name}={value!r}{f' ({key})' if key else ''}: {msg}")


def _env_bool(name: str, value: str) -> bool:
    v = value.strip().lower()
    if v in BOOL_TRUE or v in BOOL_FALSE:
        return v in BOOL_TRUE
    raise _env_error(name, value, BOOL_HELP)


def _env_smear(name: str, value: str) -> str:
    v = value.strip().lower()
    if v in SMEAR_MODES:
        return v
    if v in BOOL_TRUE or v in BOOL_FALSE:
        return "per_dim" if v in BOOL_TRUE else "off"
    raise _env_error(name, value, f"{BOOL_HELP} (1 = per_dim) or a mode, one of {list(SMEAR_MODES)}")


def _env_quant_bits(name: str, value: str) -> int:
    try:
        bits = int(value.strip())
    except ValueError:
        bits = None
    if bits not in BITS:
        raise _env_error(name, value, f"expected one of {BITS} (bits of attention and MLP matrices)")
    return bits


def _env_qat_fraction(name: str, value: str) -> dict[str, Any]:
    # The seed scripts' QAT_FRACTION is the trailing fraction of training with QAT on.
    try:
        frac = float(value)
    except ValueError:
        frac = math.nan
    if not 0 < frac <= 1:
        raise _env_error(name, value, "expected a number in (0, 1], the trailing fraction of training with QAT on "
                                      "(to turn QAT off, unset it or set QAT=0)")
    return {"qat.enabled": True, "qat.start_frac": 1.0 - frac}


def _env_special(name: str, value: str) -> dict[str, Any]:
    """Seed-PR switches that do not map one-to-one onto a single field."""
    if name == "USE_SWIGLU":
        return {"model.mlp": "swiglu" if _env_bool(name, value) else "relu2"}
    if name == "QAT":
        return {"qat.enabled": _env_bool(name, value)}
    if name == "QUANT_BITS":
        bits = _env_quant_bits(name, value)
        return {"export.bits_attn": bits, "export.bits_mlp": bits}
    if name == "FP16_EMBED":
        return {"export.embed_fp16": _env_bool(name, value)}
    if name == "SMEAR_GATE":
        return {"model.smear_gate": _env_smear(name, value)}
    if name == "BIGRAM_HASH":  # on: the table size comes from BIGRAM_BUCKETS or the preset (checked in from_env)
        return {} if _env_bool(name, value) else {"model.bigram_buckets": 0}
    if name == "SWA_ENABLED":
        return {"averaging.mode": "swa" if _env_bool(name, value) else "none"}
    if name == "QAT_FRACTION":
        return _env_qat_fraction(name, value)
    if name == "SMEAR_GATE_ENABLED":  # PR #1855's input-dependent gate
        return {"model.smear_gate": "input" if _env_bool(name, value) else "off"}
    if name == "LQER_ENABLED":  # on: the rank comes from LQER_RANK or the preset; off: rank 0
        return {} if _env_bool(name, value) else {"export.lqer_rank": 0}
    if name == "LQER_ASYM_ENABLED":  # on: the group from LQER_ASYM_GROUP or the preset; off: symmetric factors
        return {} if _env_bool(name, value) else {"export.lqer_asym_group": 0}
    if name == "MATRIX_BITS":  # the records': every int matrix but the embedding (attention and MLP here)
        bits = _env_quant_bits(name, value)
        return {"export.bits_attn": bits, "export.bits_mlp": bits}
    if name == "EMBED_BITS":  # the records' embedding: pgolf's embed/head class takes export.bits_other
        return {"export.bits_other": _env_quant_bits(name, value)}
    if name == "TTT_ENABLED":  # PR #1855: its only test-time training is the phased LoRA one
        return {"eval.ttt": "phased_lora" if _env_bool(name, value) else "off"}
    if name == "TTT_LORA_ALPHA":
        return _env_mapped_to(name, value, "eval.ttt_lora_alpha")
    if name == "TTT_WARM_START_A":
        return {"eval.ttt_warm_start_a": _env_bool(name, value)}
    if name == "TTT_OPTIMIZER":
        if value.strip().lower() != "adam":
            raise _env_error(name, value, "pgolf's test-time training has the record's default optimizer only: "
                                          "expected 'adam' (AdamW)")
        return {}
    if name == "GLOBAL_TTT_RESPECT_DOC_BOUNDARIES":
        if not _env_bool(name, value):
            raise _env_error(name, value, "pgolf's global TTT phase always masks attention at document starts: "
                                          "expected 1")
        return {}
    raise KeyError(name)


ENV_SPECIAL = ("USE_SWIGLU", "QAT", "QUANT_BITS", "FP16_EMBED", "SMEAR_GATE", "BIGRAM_HASH", "SWA_ENABLED",
               "QAT_FRACTION", "MATRIX_BITS", "EMBED_BITS", "SMEAR_GATE_ENABLED", "LQER_ENABLED", "LQER_ASYM_ENABLED",
               "TTT_ENABLED", "TTT_LORA_ALPHA", "TTT_WARM_START_A", "TTT_OPTIMIZER",
               "GLOBAL_TTT_RESPECT_DOC_BOUNDARIES")

# The records' depth recurrence (PR #1394, #1855): blocks LOOP_START..LOOP_END (inclusive) run NUM_LOOPS extra
# times; NUM_LOOPS=0 turns it off (the records then ignore the range).
ENV_LOOP = ("LOOP_START", "LOOP_END", "NUM_LOOPS")


def _env_int(name: str, value: str, minimum: int) -> int:
    try:
        n = int(value.strip())
    except ValueError:
        raise _env_error(name, value, f"expected an integer >= {minimum}") from None
    if n < minimum:
        raise _env_error(name, value, f"expected an integer >= {minimum}")
    return n


def _env_loop(environ: Mapping[str, str]) -> dict[str, Any]:
    """``LOOP_START``/``LOOP_END``/``NUM_LOOPS`` -> ``model.loop_layers`` and ``model.loop_count``."""
    out: dict[str, Any] = {}
    if "NUM_LOOPS" in environ:
        out["model.loop_count"] = _env_int("NUM_LOOPS", environ["NUM_LOOPS"], 0)
        if out["model.loop_count"] == 0:
            return {"model.loop_count": 0, "model.loop_layers": ()}
    given = [n for n in ("LOOP_START", "LOOP_END") if n in environ]
    if len(given) == 1:
        other = "LOOP_END" if given[0] == "LOOP_START" else "LOOP_START"
        raise _env_error(given[0], environ[given[0]], f"set {other} too (the loop range is LOOP_START..LOOP_END, "
                                                      "inclusive)")
    if given:
        start, end = _env_int("LOOP_START", environ["LOOP_START"], 0), _env_int("LOOP_END", environ["LOOP_END"], 0)
        if end < start:
            raise _env_error("LOOP_END", environ["LOOP_END"], f"expected >= LOOP_START={start}")
        out["model.loop_layers"] = tuple(range(start, end + 1))
    return out


def _env_mapped(name: str, value: str) -> dict[str, Any]:
    return _env_mapped_to(name, value, ENV_KEYS[name])


def _env_mapped_to(name: str, value: str, key: str) -> dict[str, Any]:
    section, field_name = key.split(".")
    try:
        return {key: _coerce(value, _field_types(_SECTION_TYPES[section])[field_name], key)}
    except ConfigError as e:
        raise _env_error(name, value, str(e).split(": ", 1)[1], key) from None


def _env_sources(environ: Mapping[str, str]) -> dict[str, tuple[Any, str]]:
    """config key -> (typed value, the variable that set it); two variables that disagree are an error."""
    out: dict[str, tuple[Any, str]] = {}
    groups: list[tuple[str, dict[str, Any]]] = []
    for name in (*ENV_SPECIAL, *ENV_KEYS):
        if name in environ:
            groups.append((name, _env_special(name, environ[name]) if name in ENV_SPECIAL
                           else _env_mapped(name, environ[name])))
    loop_names = [n for n in ENV_LOOP if n in environ]
    if loop_names:
        groups.append((loop_names[-1], _env_loop(environ)))
    for name, parsed in groups:
        for key, value in parsed.items():
            if key in out and out[key][0] != value:
                other = out[key][1]
                raise ConfigError(f"{other}={environ[other]!r} and {name}={environ[name]!r} disagree on {key} "
                                  f"({out[key][0]!r} vs {value!r}); set only one")
            out[key] = (value, name)
    return out


def env_names(environ: Mapping[str, str]) -> dict[str, str]:
    """config key -> the environment variable in ``environ`` that sets it."""
    return {key: name for key, (_, name) in _env_sources(environ).items()}


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """Typed dotted overrides from the official environment names present in ``environ``.

    A malformed value raises :class:`ConfigError` naming the variable, its value and what it accepts."""
    return {key: value for key, (value, _) in _env_sources(environ).items()}


def from_env(cfg: Config, environ: Mapping[str, str]) -> Config:
    """``cfg`` with the environment's overrides; a value the config refuses names its variable."""
    sources = _env_sources(environ)
    try:
        out = apply_overrides(cfg, {key: value for key, (value, _) in sources.items()})
    except ConfigError as e:
        key = str(e).split(":", 1)[0]
        # the loop range and count are checked together: an error on one names the loop variable that was set
        loop_keys = [k for k in ("model.loop_layers", "model.loop_count") if k in sources]
        source_key = loop_keys[0] if key in ("model.loop_layers", "model.loop_count") and loop_keys else key
        if source_key in sources:
            name = sources[source_key][1]
            raise _env_error(name, environ[name], str(e).split(": ", 1)[1], key) from None
        raise
    if "BIGRAM_HASH" in environ and _env_bool("BIGRAM_HASH", environ["BIGRAM_HASH"]) and not out.model.bigram_buckets:
        raise _env_error("BIGRAM_HASH", environ["BIGRAM_HASH"], "BigramHash needs a table size: set BIGRAM_BUCKETS=N "
                                                                 "too (e.g. 4096), or use a preset that has one")
    return out
