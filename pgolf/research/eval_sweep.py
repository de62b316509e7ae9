"""Evaluation settings of trained models: sliding-window stride x evaluation length x NTK RoPE (notebook 04).

Each run's unquantized weights score the same first ``eval_tokens`` validation targets in every setting (the
sweep checks it), so the differences between settings are the evaluation's alone; over several runs (seeds)
the differences get a spread, and paired comparisons between settings a confidence interval. Lengths above the training
length are tried with NTK scaling on and off; at or below it NTK changes nothing and is reported ``n/a``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pgolf.core.evaluate import windows
from pgolf.research.rescore import RAW_WEIGHTS, one_thread, run_id, saved_runs
from pgolf.research.tables import AnalysisTable


@dataclass(frozen=True)
class EvalSetting:
    setting: str  # label: the length, and NTK on/off above the training length
    eval_len: int  # evaluation window length (tokens)
    ntk: bool | None  # NTK RoPE scaling; None at or below the training length
    stride: int  # sliding-window stride (0: non-overlapping windows)


@dataclass(frozen=True)
class EvalSweepRow:
    run: str  # <scale>/<run folder>: the weights
    seed: int
    setting: str  # EvalSetting.setting
    eval_len: int  # evaluation window length (tokens)
    ntk: str  # "on", "off", or "n/a" at or below the training length
    stride: int  # sliding-window stride (0: non-overlapping windows)
    val_bpb: float
    val_loss: float  # nats per token
    tokens_scored: int  # validation targets scored (the same in every setting)
    forward_tokens: int  # tokens through the model's forward pass
    seconds: float  # wall time of the evaluation on this CPU, one thread
    scored_tokens_per_s: float


TABLE = AnalysisTable(study="eval", name="sweep", row=EvalSweepRow, notebook="04")


def eval_settings(*, train_len: int, eval_lens: Sequence[int], strides: Sequence[int]) -> list[EvalSetting]:
    """Every stride below each length; NTK on and off for lengths above ``train_len``."""
    out = []
    for length in eval_lens:
        for ntk in ([None] if length <= train_len else [True, False]):
            label = f"L={length}" + ("" if ntk is None else (" NTK" if ntk else " no NTK"))
            out += [EvalSetting(label, length, ntk, s) for s in strides if s < length]
    return out


def _ntk_label(ntk: bool | None) -> str:
    return "n/a" if ntk is None else ("on" if ntk else "off")


def eval_sweep(*, run_dirs: Sequence[str | Path], dataset: str | Path, eval_tokens: int, strides: Sequence[int],
               eval_lens: Sequence[int], batch_seqs: int = 32) -> pd.DataFrame:
    """One row per run of ``run_dirs`` and setting of :func:`eval_settings`, for the runs' raw weights."""
    rows = []
    with one_thread():
        for run in saved_runs(run_dirs, dataset=dataset, eval_tokens=eval_tokens):
            cfg, tokens = run.cfg, run.tokens
            for s in eval_settings(train_len=cfg.train.train_seq_len, eval_lens=eval_lens, strides=strides):
                wins = windows(tokens.numel() - 1, s.eval_len, s.stride, "score")
                t0 = time.perf_counter()
                res = run.score(seq_len=s.eval_len, stride=s.stride, batch_seqs=batch_seqs, ntk=bool(s.ntk))
                seconds = time.perf_counter() - t0
                if res.tokens != eval_tokens:
                    raise RuntimeError(f"{run.run_id}: {s.setting} stride {s.stride}: scored {res.tokens} targets, "
                                       f"expected every one of the {eval_tokens}")
                rows.append(EvalSweepRow(run=run.run_id, seed=cfg.train.seed, setting=s.setting,
                                         eval_len=s.eval_len, ntk=_ntk_label(s.ntk), stride=s.stride,
                                         val_bpb=res.val_bpb, val_loss=res.val_loss, tokens_scored=res.tokens,
                                         forward_tokens=sum(e - b for b, e, _ in wins), seconds=seconds,
                                         scored_tokens_per_s=res.tokens / seconds))
    return TABLE.frame(rows)



def eval_sweep_table(*, runs_root: Path, run_dirs: Sequence[str | Path], dataset: str | Path, eval_tokens: int,
                     strides: Sequence[int], eval_lens: Sequence[int], batch_seqs: int = 32, rerun: bool = False,
                     log: Callable[[str], None] = print) -> pd.DataFrame:
    """:func:`eval_sweep`, stored under ``runs_root/eval/analysis`` and reused while its inputs are unchanged."""
    inputs = {"runs": [run_id(d) for d in run_dirs], "eval_tokens": eval_tokens, "strides": list(strides),
              "eval_lens": list(eval_lens), "batch_seqs": batch_seqs, "weights": f"{RAW_WEIGHTS} (unquantized)"}
    return TABLE.cached(runs_root=runs_root, inputs=inputs, rerun=rerun, log=log,
                        compute=lambda: eval_sweep(run_dirs=run_dirs, dataset=dataset, eval_tokens=eval_tokens,
                                                   strides=strides, eval_lens=eval_lens, batch_seqs=batch_seqs))


def _label(setting: str, stride: int) -> str:
    return f"{setting} " + (f"stride {stride}" if stride else "no overlap")


def labelled(table: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """``table`` with an ``arm`` column naming each (setting, stride), and the label of the reference: the
    official evaluation, non-overlapping windows at the training length (which ``eval_lens`` must include)."""
    plain = table[table["ntk"] == "n/a"]
    if plain.empty or not (plain["stride"] == 0).any():
        raise ValueError("the sweep has no non-overlapping evaluation at the training length to compare against")
    train_len = int(plain["eval_len"].max())
    ref = plain[(plain["eval_len"] == train_len) & (plain["stride"] == 0)]
    out = table.assign(arm=[_label(a, s) for a, s in zip(table["setting"], table["stride"])])
    return out, _label(ref["setting"].iloc[0], 0)


def setting_differences(table: pd.DataFrame) -> pd.DataFrame:
    """Per run, each setting's val_bpb minus the same run's official evaluation (:func:`labelled`), long format
    (arm, run, seed, diff, ...): the input of paired statistics and figures."""
    out, ref_label = labelled(table)
    ref = out[out["arm"] == ref_label].set_index("run")["val_bpb"]
    out = out[out["arm"] != ref_label].copy()
    out["diff"] = out["val_bpb"] - out["run"].map(ref)
    return out[["arm", "run", "seed", "setting", "eval_len", "ntk", "stride", "val_bpb", "diff",
                "forward_tokens", "tokens_scored"]].reset_index(drop=True)
