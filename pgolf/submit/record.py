"""A record folder in the challenge's layout (``records/track_10min_16mb/<date>_<name>/``).

:func:`write_record` writes ``train_gpt.py`` (packed, what the cap counts), ``train_gpt_human.py`` (the
readable generated source), ``README.md``, ``submission.json`` and, per run, ``train_seed<N>.log``. Runs
are finished pgolf run folders of one configuration that differ only in ``train.seed``; with no runs the
folder holds the code alone (``pgolf submit PRESET``). The folder is built next to ``out`` and renamed into
place, and an existing ``out`` is refused: nothing is overwritten.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pgolf.core import accounting
from pgolf.core.config import Config
from pgolf.core.runs import read_status
from pgolf.submit import bundle, cache
from pgolf.submit.pack import RULE


class SubmitError(ValueError):
    """A run folder or output path that cannot make a submission; the message names it."""


@dataclass(frozen=True)
class SeedRun:
    path: Path
    seed: int
    summary: dict[str, Any]
    environment: dict[str, Any]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SubmitError(f"{path}: missing (not a finished pgolf run folder)") from None
    except json.JSONDecodeError as e:
        raise SubmitError(f"{path}: not valid JSON ({e})") from None


def _without_seed(d: dict[str, Any]) -> dict[str, Any]:
    return {**d, "train": {k: v for k, v in d["train"].items() if k != "seed"}}


def read_runs(run_dirs: list[Path]) -> tuple[Config, list[SeedRun]]:
    """The runs' shared configuration (the first run's seed as the script's default) and each run."""
    runs, configs = [], []
    for rd in map(Path, run_dirs):
        status = read_status(rd)
        if status is None or status.get("status") != "finished":
            found = None if status is None else status.get("status")
            raise SubmitError(f"{rd}: run status is {found!r}; expected a finished run")
        cfg_dict = _read_json(rd / "config.json")
        summary = _read_json(rd / "summary.json")
        env = _read_json(rd / "environment.json") if (rd / "environment.json").exists() else {}
        configs.append(cfg_dict)
        runs.append(SeedRun(rd, int(cfg_dict["train"]["seed"]), summary, env))
    first = _without_seed(configs[0])
    for rd, c in zip(run_dirs[1:], configs[1:]):
        if _without_seed(c) != first:
            diff = sorted(f"{s}.{k}" for s in first for k in first[s] if first[s][k] != _without_seed(c)[s].get(k))
            raise SubmitError(f"{rd}: its configuration differs from {run_dirs[0]}'s in {diff}; a submission's runs "
                              f"share one configuration and differ only in train.seed")
    seeds = [r.seed for r in runs]
    if len(set(seeds)) != len(seeds):
        raise SubmitError(f"runs {[str(r.path) for r in runs]}: repeated seeds {seeds}; give one run per seed")
    return Config.from_dict(configs[0], where=str(run_dirs[0] / "config.json")), runs


def _hardware(env: dict[str, Any], world_size: int) -> str:
    gpus = env.get("gpus") or []
    if gpus:
        return f"{world_size}x{gpus[0]}"
    return f"CPU ({world_size} process{'es' if world_size != 1 else ''}, {env.get('machine', '?')})"


def submission_json(cfg: Config, runs: list[SeedRun], code_bytes: int, name: str, blurb: str,
                    date: str) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "blurb": blurb, "date": date, "track": "10min_16mb"}
    if runs:
        loss = [r.summary["q_val_loss"] for r in runs]
        bpb = [r.summary["q_val_bpb"] for r in runs]
        arts = [r.summary["artifact_bytes"] for r in runs]
        out.update({"val_loss": statistics.fmean(loss), "val_bpb": statistics.fmean(bpb)})
        if len(runs) > 1:
            out.update({"val_loss_std": statistics.stdev(loss), "val_bpb_std": statistics.stdev(bpb)})
        out["seeds"] = [r.seed for r in runs]
        out["seed_results"] = {str(r.seed): {
            "val_loss": r.summary["q_val_loss"], "val_bpb": r.summary["q_val_bpb"],
            "artifact_bytes": r.summary["artifact_bytes"], "steps": r.summary["steps"],
            "step_avg_ms": r.summary["step_avg_ms"]} for r in runs}
        out.update({"artifact_bytes_mean": statistics.fmean(arts), "artifact_bytes_max": max(arts),
                    "bytes_total": max(arts) + code_bytes})
        env, first = runs[0].environment, runs[0].summary
        out.update({"hardware": _hardware(env, first.get("world_size", 1)),
                    "pytorch_version": env.get("torch", torch.__version__)})
    else:
        out["pytorch_version"] = torch.__version__
    out.update({"bytes_code": code_bytes, "bytes_code_rule": RULE,
                "fits_16mb": (out["bytes_total"] <= accounting.CAP_BYTES) if runs else None})
    return out


def _env_line(cfg: Config) -> str:
    v = cfg.model.vocab_size
    data, tok = bundle.official_data_paths(v)
    return f"DATA_PATH={data} TOKENIZER_PATH={tok}"


def required_packages(cfg: Config, packed_method: str) -> list[str]:
    """What ``train_gpt.py`` imports: torch, numpy, sentencepiece, the loader's and the artifact's compressor."""
    extra = {"brotli"} if packed_method == "brotli" or cfg.export.compressor == "brotli" else set()
    extra |= {"zstandard"} if cfg.export.compressor == "zstd" else set()
    return ["torch", "numpy", "sentencepiece", *sorted(extra)]


def readme(cfg: Config, runs: list[SeedRun], sub: dict[str, Any], human_bytes: int, packed_method: str,
           source: str) -> str:
    name = sub["name"]
    lines = [f"# {name}" + (f" — val_bpb {sub['val_bpb']:.5f}" if runs else ""), ""]
    if runs:
        std = f", std={sub['val_bpb_std']:.5f}" if "val_bpb_std" in sub else ""
        lines += [f"**val_bpb: {sub['val_bpb']:.5f}** ({len(runs)}-seed mean{std}; the round-tripped artifact's "
                  f"score, {runs[0].summary.get('eval_mode', 'official')} evaluation)", "",
                  "| Seed | Steps | Pre-quant BPB | **Post-quant BPB** | Artifact bytes |", "|-|-|-|-|-|"]
        for r in runs:
            s = r.summary
            lines.append(f"| {r.seed} | {s['steps']} | {s['val_bpb']:.5f} | **{s['q_val_bpb']:.5f}** | "
                         f"{s['artifact_bytes']:,} |")
        pre = statistics.fmean(r.summary["val_bpb"] for r in runs)
        lines += [f"| **Mean** | | {pre:.5f} | **{sub['val_bpb']:.5f}** | {sub['artifact_bytes_mean']:,.0f} |", ""]
    lines += [sub["blurb"], "", f"Configuration: {source}.", ""]
    if runs:
        data = sorted({(r.summary.get("dataset_path"), r.summary.get("dataset_sha256")) for r in runs}, key=str)
        lines += ["The runs trained on " + "; ".join(f"`{p}` (dataset_sha256 `{h}`)" for p, h in data)
                  + f", {runs[0].summary.get('world_size', 1)} process(es) on {runs[0].summary.get('device', '?')}.", ""]
    lines += [
              "## Bytes", "",
              f"- code: `train_gpt.py`, {sub['bytes_code']:,} bytes: `train_gpt_human.py` ({human_bytes:,} bytes) "
              f"minified with python-minifier, compressed with {'raw LZMA2' if packed_method == 'lzma2' else 'brotli-11'}"
              f" (the smaller of raw LZMA2 and brotli-11), base85 in a one-line `exec` loader"]
    if runs:
        lines.append(f"- total: {sub['bytes_total']:,} bytes = largest artifact {sub['artifact_bytes_max']:,} + code "
                     f"({'fits' if sub['fits_16mb'] else 'DOES NOT FIT'} the 16,000,000-byte cap)")
    lines += ["", "## Run", "",
              f"Needs {', '.join(required_packages(cfg, packed_method))}; data and tokenizer in the challenge's layout (`data/cached_challenge_fineweb.py`).", "",
              "```bash",
              *(f"RUN_ID=seed{r.seed} SEED={r.seed} {_env_line(cfg)} torchrun --standalone --nproc_per_node=8 train_gpt.py"
                for r in runs or [SeedRun(Path("."), cfg.train.seed, {}, {})]),
              "```", "",
              "The official environment names (`SEED`, `ITERATIONS`, `NUM_LAYERS`, `DATA_PATH`, ...) override the "
              "defaults, which are this configuration. Each run writes its log, artifact and summary to "
              "`logs/<RUN_ID>/`.", "",
              "## Configuration", "", "```json", json.dumps(bundle.script_defaults(cfg), indent=2), "```", "",
              "Generated by `pgolf submit` from pgolf's training core"
              + (f"; the logs are the pgolf runs {', '.join(f'`{r.path.name}`' for r in runs)}" if runs else "")
              + ". The generated script trains the same way (pgolf's tests check equal losses, artifact bytes and "
                "score on small configurations).", ""]
    return "\n".join(lines)


def write_record(out: Path, cfg: Config, runs: list[SeedRun] | None = None, *, name: str | None = None,
                 blurb: str | None = None, source: str = "") -> dict[str, Any]:
    """Write the record folder ``out`` (refused if it exists); returns ``submission.json``'s content."""
    out = Path(out)
    runs = list(runs or [])
    if out.exists():
        raise SubmitError(f"{out}: already exists; choose a new --out folder (nothing was overwritten)")
    if not out.parent.is_dir():
        raise SubmitError(f"{out.parent}: no such folder for --out")
    human = bundle.human_source(cfg)
    packed = cache.packed_for(cfg)
    name = name or (source or "pgolf submission")
    blurb = blurb or f"pgolf configuration {source or name}, generated from pgolf's training core."
    sub = submission_json(cfg, runs, packed.bytes, name, blurb, time.strftime("%Y-%m-%d"))
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        (tmp / "train_gpt.py").write_text(packed.text, encoding="utf-8")
        (tmp / "train_gpt_human.py").write_text(human, encoding="utf-8")
        (tmp / "submission.json").write_text(json.dumps(sub, indent=2) + "\n", encoding="utf-8")
        (tmp / "README.md").write_text(readme(cfg, runs, sub, len(human.encode()), packed.method, source),
                                       encoding="utf-8")
        for r in runs:
            shutil.copyfile(r.path / "train.log", tmp / f"train_seed{r.seed}.log")
        os.rename(tmp, out)  # fails if out appeared meanwhile (a non-empty folder): nothing is replaced
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return sub
