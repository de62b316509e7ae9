"""Small pieces the ablation notebooks share: result tables, verdict sentences, scoring saved weights."""

from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd
import torch

from .config import Config, DataConfig
from .evaluate import ByteLUTs, EvalResult, eval_windows
from .model import build_model
from .stats import RULE_ALPHA, summarize

TABLE = {"q_val_bpb": ".4f", "val_bpb": ".4f", "quant_gap_bpb": "+.4f", "artifact_bytes": ",.0f",
         "step_avg_ms": ".1f"}


def arm_table(runs: pd.DataFrame, metrics: dict[str, str] = TABLE) -> pd.DataFrame:
    """mean ± std over seeds per arm (std omitted when an arm has one run)."""
    cols = {"n": summarize(runs, "q_val_bpb")["n"]}
    for metric, fmt in metrics.items():
        s = summarize(runs, metric)
        cols[metric] = pd.Series([f"{m:{fmt}} ± {sd:{fmt.lstrip('+')}}" if np.isfinite(sd) else f"{m:{fmt}}"
                                  for m, sd in zip(s["mean"], s["std"])], index=s.index)
    return pd.DataFrame(cols)


def verdict(row: pd.Series, arm: str, control: str, metric: str) -> str:
    """One sentence that says only what the test in ``row`` (a ``stats.compare`` row) supports."""
    diff = f"`{arm}` − `{control}` = {row['diff']:+.4f} {metric}"
    if not np.isfinite(row["p"]):
        return f"{diff}; {row['note'] or 'no test possible'}."
    if row["p"] >= RULE_ALPHA:
        return (f"no significant difference at this scale: {diff} (p = {row['p']:.2g}, {row['test']} t-test over "
                f"{row['n_pairs'] or row['n']} seeds).")
    better = "lower" if row["diff"] < 0 else "higher"
    rule = "clears" if row["clears_rule"] else "does not clear"
    return (f"`{arm}` is {better} by {abs(row['diff']):.4f} {metric} (p = {row['p']:.2g}); it {rule} the 0.005-nat "
            f"threshold ({row['threshold']:.4f}, one-sided p = {row['p_rule']:.2g}).")


def val_scorer(cfg: Config, n_tokens: int, dataset: str = "") -> Callable[[dict, Config | None], EvalResult]:
    """``score(state_dict, cfg=None)``: the first ``n_tokens`` validation targets of ``dataset`` (default:
    the embedded corpus), every one scored once in non-overlapping windows of the training length, on CPU."""
    from .data.loader import load_validation_tokens, resolve_dataset
    from .data.tokenizer import build_byte_luts, load_tokenizer

    cpu = torch.device("cpu")
    ds = resolve_dataset(DataConfig(path=dataset), cfg.model.vocab_size)
    luts = ByteLUTs.from_numpy(build_byte_luts(load_tokenizer(ds.tokenizer_path), cfg.model.vocab_size), cpu)
    tokens = load_validation_tokens(ds.val_files, cfg.train.train_seq_len, tail="score")[: n_tokens + 1]

    def score(state: dict, model_cfg: Config | None = None) -> EvalResult:
        c = model_cfg or cfg
        model = build_model(c)
        model.load_state_dict(state, strict=True)
        return eval_windows(model, tokens, luts, c.train.train_seq_len, 0, "score", 32, 0, 1, cpu, False)

    return score
