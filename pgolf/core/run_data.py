"""What a run reads before it builds its model: the dataset (checked against its manifest), the byte tables and
the validation splits, and the evaluation settings only the data can check.

:func:`load_data` is all of it; the training loop calls its parts (:func:`open_dataset`, then
:func:`load_eval_data`) and leaves the manifest check and the dataset's identity to the run folder
(:class:`pgolf.core.train.Trainer`), which records them: the generated submission script does not hold them."""

from __future__ import annotations

import torch

from pgolf.core.config import Config, ConfigError
from pgolf.core.evaluate import ByteLUTs
from pgolf.core.runtime import Dist


def load_data(cfg: Config, d: Dist):
    """The dataset checked against its manifest (:func:`~pgolf.core.data.identity.verify_dataset`), its identity,
    the byte tables, the validation splits and whether the final evaluation is the official one."""
    from pgolf.core.data.identity import verify_dataset

    ds, sp = open_dataset(cfg)
    identity = verify_dataset(ds, cfg.model.vocab_size)  # shards, tokenizer and manifest agree (names the file)
    return ds, identity, *load_eval_data(cfg, d, ds, sp)


def open_dataset(cfg: Config):
    """``(dataset, tokenizer)``: the configured dataset's files and its SentencePiece model, whose vocabulary
    must be ``model.vocab_size``."""
    import sentencepiece as spm

    from pgolf.core.data.loader import resolve_dataset

    ds = resolve_dataset(cfg.data, cfg.model.vocab_size)
    sp = spm.SentencePieceProcessor(model_file=str(ds.tokenizer_path))
    if int(sp.vocab_size()) != cfg.model.vocab_size:
        raise ValueError(f"model.vocab_size={cfg.model.vocab_size} does not match tokenizer "
                         f"{ds.tokenizer_path} vocab_size={int(sp.vocab_size())}")
    return ds, sp


def load_eval_data(cfg: Config, d: Dist, ds, sp):
    """``(luts, val_periodic, val_final, official)``: the byte accounting (:func:`byte_accounting`), the periodic
    and final validation splits (one tensor when the final evaluation scores the official stream) and whether it
    is the official one."""
    from pgolf.core.data.loader import load_validation_tokens

    luts = byte_accounting(cfg, ds, sp, d.device)
    eval_len = cfg.eval.seq_len or cfg.train.train_seq_len
    official = cfg.eval.stride == 0 and cfg.eval.tail == "drop" and eval_len == cfg.train.train_seq_len
    # The seed PRs' sliding evaluator scores the official (truncated) stream; pgolf's scores every token.
    truncated = official or cfg.eval.window_rule == "rescore_tail"
    val_periodic = load_validation_tokens(ds.val_files, cfg.train.train_seq_len, tail="drop")
    # PR #326's full-windows rule scores a stream cut to a multiple of the eval length.
    final_tail = "drop" if cfg.eval.stride and cfg.eval.window_rule == "full_windows" else "score"
    val_final = val_periodic if truncated else load_validation_tokens(ds.val_files, eval_len, tail=final_tail)
    if cfg.eval.max_tokens:
        n = cfg.eval.max_tokens
        val_periodic = val_periodic[: max(n // cfg.train.train_seq_len, 1) * cfg.train.train_seq_len + 1]
        val_final = val_periodic if truncated else val_final[: n + 1]
    return luts, val_periodic, val_final, official


def byte_accounting(cfg: Config, ds, sp, device: torch.device):
    """What val_bpb counts bytes with: with ``data.caseops`` the CaseOps byte sidecar (pgolf.core.data.sidecar),
    otherwise the SentencePiece tables. A dataset whose manifest records caseops, or that has sidecar files, needs
    ``data.caseops=true`` (its pieces' bytes are not the original text's): an error naming the file says so."""
    from pgolf.core.data.tokenizer import build_byte_luts

    if cfg.data.caseops:
        from pgolf.core.data.sidecar import SidecarBytes, load_sidecar
        return SidecarBytes(load_sidecar(ds.val_files).to(device), str(ds.root))
    side = [f for f in ds.val_files if f.with_name(f.name.replace("fineweb_val_", "fineweb_val_bytes_", 1)).is_file()]
    if (ds.manifest or {}).get("caseops") or side:
        why = f"{ds.root / 'manifest.json'} records caseops" if not side else f"{side[0].name} has a byte sidecar"
        raise ConfigError(f"data.caseops: {why}; its val_bpb counts the sidecar's original bytes: set data.caseops=true "
                          "(CASEOPS_ENABLED=1)")
    return ByteLUTs.from_numpy(build_byte_luts(sp, cfg.model.vocab_size), device)


def doc_mask_bos(cfg: Config) -> int | None:
    """The evaluators' ``doc_mask_bos``: model.bos_id with model.doc_mask, else None (plain causal attention)."""
    return cfg.model.bos_id if cfg.model.doc_mask else None


def check_eval_fits(cfg: Config, val_final: torch.Tensor, official: bool, world_size: int, accum: int) -> None:
    """Eval settings that only the data (and world size) can validate; called before the model is built, so a
    wrong value fails before any training instead of after it."""
    t, ev = cfg.train, cfg.eval
    local = t.val_batch_size // (world_size * accum)
    if local < t.train_seq_len:
        raise ConfigError(f"train.val_batch_size: {t.val_batch_size} gives {local} tokens per rank and micro-batch "
                          f"(world_size={world_size}, grad_accum_steps={accum}), fewer than one sequence of "
                          f"train.train_seq_len={t.train_seq_len}")
    if official:
        return  # the periodic split, already checked against train_seq_len when it was loaded
    seq_len, targets = ev.seq_len or t.train_seq_len, val_final.numel() - 1
    if seq_len > targets:
        key = "eval.seq_len" if ev.seq_len else "train.train_seq_len"
        capped = f" (eval.max_tokens={ev.max_tokens} caps it)" if ev.max_tokens else ""
        raise ConfigError(f"{key}: the final evaluation needs windows of {seq_len} tokens but the validation "
                          f"split has only {targets} target tokens{capped}; use a shorter eval.seq_len")
