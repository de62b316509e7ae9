"""``pgolf eval``: score saved weights on a dataset, outside training.

PATH may be
- a run folder: its ``config.json`` and its artifact ``final_model.*.ptz`` (``--weights raw`` scores
  ``final_model.pt`` instead);
- a pgolf or official artifact (``final_model.int8.ptz`` from the official script): quantized weights;
- a raw state dict (``final_model.pt``, pgolf's or the official script's).
A file outside a run folder has no config: the model shape comes from ``--preset`` (default: the
official baseline) and dotted overrides. Loading never unpickles code (``weights_only``).

An artifact is refused, with one line naming the file (exit 2), when its bytes differ from the
``artifact_sha256`` of the ``summary.json`` beside it, when it is damaged or malformed, when a scale or weight
is NaN/inf, or when it does not fit the model of the config it is scored with; a non-finite score is an error
too (``--json`` never prints ``NaN``). See docs/run-records.md in the pgolf repository.

The evaluation is the trainer's final one: the official evaluator when the settings are official
(non-overlapping windows of the training length, tail dropped), otherwise :func:`eval_windows`.
On a finished run with its own settings the result equals ``summary.json``'s ``q_val_bpb``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import torch

from pgolf.core.config import Config, apply_overrides, parse_override
from pgolf.core.evaluate import EvalResult, eval_official, eval_windows, window_mode


def find_weights(path: Path, weights: str) -> tuple[Path, Path | None]:
    """(weights file, config file or None) for a run folder or a file."""
    if path.is_dir():
        cfg_file = path / "config.json"
        if not cfg_file.exists():
            raise FileNotFoundError(f"{path}: not a pgolf run folder (no config.json)")
        if weights == "raw":
            f = path / "final_model.pt"
            if not f.exists():
                raise FileNotFoundError(f"{path}: no final_model.pt (train.save_raw_model=false?)")
            return f, cfg_file
        found = sorted(p for p in path.glob("final_model.*.ptz") if not p.name.startswith("."))
        if len(found) != 1:
            raise FileNotFoundError(f"{path}: expected exactly one final_model.*.ptz artifact, found "
                                    f"{[p.name for p in found] or 'none'}")
        return found[0], cfg_file
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such run folder or weights file")
    sibling = path.parent / "config.json"
    return path, (sibling if sibling.exists() else None)


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from an artifact (.ptz, compressed + quantized; checked against the sha256 of the run's
    ``summary.json`` when it records one) or a raw ``torch.save`` state dict. NaN/inf weights are refused."""
    from pgolf.core.export import load_artifact
    from pgolf.core.records import check_artifact_sha256
    if path.suffix == ".ptz":
        blob = path.read_bytes()
        check_artifact_sha256(path, blob)
        return load_artifact(blob, str(path))
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means: not a plain state dict
        raise ValueError(f"{path}: not a state dict of tensors ({type(e).__name__}: {' '.join(str(e).split())[:300]})"
                         ) from None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"{path}: expected a state dict (name -> tensor), got {type(sd).__name__}")
    bad = [k for k, v in sd.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise ValueError(f"{path}: tensor {bad[0]!r} holds NaN or inf values"
                         f"{f' (and {len(bad) - 1} more)' if len(bad) > 1 else ''}; refusing to score it")
    return sd


def check_fits(model: torch.nn.Module, state: dict[str, torch.Tensor], weights: Path, config: str) -> None:
    """Refuse weights whose names or shapes differ from the model's, in one line naming both sides."""
    want = model.state_dict()
    missing = [k for k in want if k not in state]
    unexpected = [k for k in state if k not in want]
    shapes = [k for k in want if k in state and tuple(state[k].shape) != tuple(want[k].shape)]
    if not (missing or unexpected or shapes):
        return
    parts = []
    if shapes:
        k = shapes[0]
        parts.append(f"{len(shapes)} shape mismatch(es), e.g. {k}: weights {list(state[k].shape)}, model "
                     f"{list(want[k].shape)}")
    if missing:
        parts.append(f"{len(missing)} tensor(s) missing, e.g. {missing[0]}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected tensor(s), e.g. {unexpected[0]}")
    raise ValueError(f"{weights}: does not fit the model of {config}: {'; '.join(parts)} (score a run folder with "
                     f"its own config.json, or give the model's shape as overrides)")


def resolve_eval_config(cfg: Config, *, dataset: str | None, seq_len: int | None, stride: int | None,
                        tail: str | None) -> Config:
    o: dict[str, Any] = {}
    if dataset is not None:
        o["data.path"] = str(Path(dataset).resolve())
    if seq_len is not None:
        o["eval.seq_len"] = seq_len
    if stride is not None:
        o["eval.stride"] = stride
    if tail is not None:
        o["eval.tail"] = tail
    return apply_overrides(cfg, o) if o else cfg


def score_state(cfg: Config, state: dict[str, torch.Tensor], *, weights: Path | None = None,
                config: str = "the config") -> tuple[EvalResult, str]:
    """Evaluate ``state`` with ``cfg`` on one process (CPU, or the first GPU), as the trainer's final score.
    Weights that do not fit the model are refused in one line naming ``weights`` and ``config``."""
    from pgolf.core.run_data import doc_mask_bos
    from pgolf.core.train import Dist, grad_accum_steps, load_data, prepare_model
    device = torch.device("cuda" if cfg.train.device != "cpu" and torch.cuda.is_available() else "cpu")
    d = Dist(0, 1, 0, device, False)
    _, _, luts, _, val_final, official = load_data(cfg, d)
    model = prepare_model(apply_overrides(cfg, {"qat.enabled": False}), device)
    check_fits(model, state, weights or Path("weights"), config)
    model.load_state_dict(state, strict=True)
    autocast = device.type == "cuda"
    if official:
        res = eval_official(model, val_final, luts, cfg.train.train_seq_len, cfg.train.val_batch_size, 0, 1,
                            grad_accum_steps(cfg, 1), device, autocast, doc_mask_bos=doc_mask_bos(cfg))
        return res, "official"
    L = cfg.eval.seq_len or cfg.train.train_seq_len
    res = eval_windows(model, val_final, luts, L, cfg.eval.stride, cfg.eval.tail, cfg.eval.batch_seqs, 0, 1, device,
                       autocast, cfg.eval.window_rule, doc_mask_bos=doc_mask_bos(cfg))
    return res, window_mode(L, cfg.eval.stride, cfg.eval.tail, cfg.eval.window_rule)


def cmd_eval(args: argparse.Namespace) -> int:
    from pgolf.running.presets import get_preset
    path = Path(args.path)
    weights, cfg_file = find_weights(path, args.weights)
    if cfg_file is not None and not args.preset:
        cfg = Config.from_json(cfg_file)
    else:
        cfg = get_preset(args.preset or "baseline")
    cfg = apply_overrides(cfg, dict(parse_override(o) for o in args.overrides))
    cfg = resolve_eval_config(cfg, dataset=args.dataset, seq_len=args.seq_len, stride=args.stride, tail=args.tail)
    torch.set_num_threads(cfg.train.num_threads or 1)
    source = str(cfg_file) if cfg_file and not args.preset else f"preset:{args.preset or 'baseline'}"
    res, mode = score_state(cfg, load_weights(weights), weights=weights, config=source)
    if not (math.isfinite(res.val_loss) and math.isfinite(res.val_bpb)):
        raise ValueError(f"{weights}: the score is not finite (val_loss {res.val_loss}, val_bpb {res.val_bpb}): "
                         f"the model overflowed on the validation data; no score")
    # val_bytes: the UTF-8 bytes of the validation text scored (the denominator of val_bpb); artifact_bytes: the
    # size of the scored artifact file, only when an artifact (.ptz) is scored (raw weights have no artifact size)
    artifact_bytes = weights.stat().st_size if weights.suffix == ".ptz" else None
    out = {"weights": str(weights), "config": source,
           "eval_mode": mode, "val_loss": res.val_loss, "val_bpb": res.val_bpb, "tokens_scored": res.tokens,
           "val_bytes": res.bytes, "artifact_bytes": artifact_bytes}
    if args.json:
        print(json.dumps(out, allow_nan=False))
    else:
        print(f"eval:{weights} mode:{mode}")
        size = f" artifact_bytes:{artifact_bytes}" if artifact_bytes is not None else ""
        print(f"val_loss:{res.val_loss:.8f} val_bpb:{res.val_bpb:.8f} tokens:{res.tokens} val_bytes:{res.bytes}{size}")
    return 0


def register(subparsers) -> None:
    e = subparsers.add_parser("eval", help="score a run folder, an artifact (pgolf or official) or a state dict")
    e.add_argument("path", help="run folder, final_model.*.ptz artifact, or final_model.pt")
    e.add_argument("overrides", nargs="*", help="dotted config overrides (model shape for files without a config)")
    e.add_argument("--preset", help="config for a file without config.json (default: baseline); overrides a "
                                    "run's own config.json when given")
    e.add_argument("--dataset", help="dataset folder (shards + tokenizer); default: the config's data.path")
    e.add_argument("--seq-len", type=int, help="evaluation length (eval.seq_len)")
    e.add_argument("--stride", type=int, help="sliding-window stride (eval.stride; 0 = non-overlapping)")
    e.add_argument("--tail", choices=["drop", "score", "truncate"],
                   help="drop (official), score the final partial window, or truncate the stream to a multiple of the "
                        "eval length first (PR #1394)")
    e.add_argument("--weights", choices=["artifact", "raw"], default="artifact",
                   help="for a run folder: the quantized artifact (default) or final_model.pt")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.set_defaults(func=cmd_eval)


if __name__ == "__main__":
    from pgolf.running.cli import main
    sys.exit(main(["eval", *sys.argv[1:]]))
