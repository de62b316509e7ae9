"""SD-clip against the quantile clip at matched bytes (notebook 06): round-trip bpb against artifact bytes.

The record that brought SD-clip (https://github.com/openai/parameter-golf/pull/1394) tuned its k so that the
artifact lands near 16 MB: its claim is a score at a byte budget, not at a bit width, and at equal bits every
SD-clip export is smaller than every quantile export, so an equal-bits table has no equal-bytes point. Here each
run's raw weights are exported with the attention and MLP matrices at every setting of :func:`settings`: the
quantile clip at each bit width of ``quantile_bits`` (the reference curve) and SD-clip at each of
``sdclip_bits`` x ``sigmas`` (k: the clip in standard deviations of the row), by each quantizer (``rtn``;
``gptq`` with Hessians from training batches, as :mod:`pgolf.research.gptq_sweep` collects them). Each export is
loaded back and scored on the first ``eval_tokens`` validation targets.

Held fixed in every setting (:data:`FIXED`): the tied embedding (53% of micro's parameters) is int8, quantile
clip (``export.clip_embed=quantile``), rounded to nearest (its GPTQ Hessian is dropped), so the bytes and bpb
that differ come from the matrices; ``export.scale_floor=false`` everywhere (SD-clip needs it).

Matched bytes (:func:`matched_points`): per seed, the quantile curve's bpb is interpolated linearly in log bytes
between adjacent bit widths at each SD-clip point's bytes. A point outside the curve's byte range has no
reference: it is reported as below or above the range, never extrapolated.

Where SD-clip can clip at all (:func:`max_row_deviation`): in a row of n entries no entry is further from the
row mean than s (n - 1) / sqrt(n), s the unbiased standard deviation that SD-clip uses (Samuelson's inequality;
sqrt(n - 1) times the population std). So a k above that bound clips only through the row mean.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pgolf.core.config import BITS, Config, ExportConfig
from pgolf.core.export import load_artifact
from pgolf.core.model import build_model
from pgolf.core.precision import at_least_fp32
from pgolf.core.quant import plan_tensor, row_clip, tensor_class
from pgolf.research.compression import MATRIX_CLASSES, export_with_matrix_bytes, pareto_front
from pgolf.research.gptq_sweep import run_hessians
from pgolf.research.rescore import one_thread, run_id, saved_runs
from pgolf.research.stats import RULE_ALPHA, compare
from pgolf.research.tables import AnalysisTable

QUANTIZERS = ("rtn", "gptq")
REFERENCE_CLIP = "quantile"  # the curve every SD-clip point is compared with
# the same in every setting: the embedding int8, quantile clip, round to nearest (no Hessian is passed for it)
FIXED = {"export.bits_other": 8, "export.embed_fp16": False, "export.clip_embed": "quantile",
         "export.scale_floor": False, "export.sdclip_sigmas_attn": 0.0, "export.sdclip_sigmas_mlp": 0.0}


@dataclass(frozen=True)
class ClipSetting:
    quantizer: str  # rtn | gptq, for the attention and MLP matrices
    clip: str  # quantile | sdclip, for the attention and MLP matrices
    bits: int  # export bits of the attention and MLP matrices
    sigmas: float  # sdclip: k, the clip in standard deviations of the row; quantile: 0

    @property
    def label(self) -> str:
        return f"{self.quantizer} {self.clip} int{self.bits}" + (f" k={self.sigmas:g}" if self.clip == "sdclip" else "")


@dataclass(frozen=True)
class RateDistortionRow(ClipSetting):
    run: str  # <scale>/<run folder>
    seed: int
    clipped_frac: float  # fraction of the attention and MLP entries whose |w| exceeds their row's clip value
    val_bpb_fp: float  # the unquantized weights on the same targets
    q_val_bpb: float  # after the export round trip
    gap_bpb: float  # q_val_bpb - val_bpb_fp
    artifact_bytes: int
    matrix_bytes: int  # the quantized attention and MLP matrices alone, compressed alone (same compressor)
    tokens_scored: int


TABLE = AnalysisTable(study="frontier", name="rate_distortion", row=RateDistortionRow, notebook="06")


def settings(*, quantizers: Sequence[str], quantile_bits: Sequence[int], sdclip_bits: Sequence[int],
             sigmas: Sequence[float]) -> list[ClipSetting]:
    """Per quantizer: the quantile clip at each of ``quantile_bits``, then SD-clip at each bits x k."""
    bad = [q for q in quantizers if q not in QUANTIZERS]
    if bad:
        raise ValueError(f"quantizers: {bad} unknown; expected some of {list(QUANTIZERS)}")
    bad_bits = [b for b in [*quantile_bits, *sdclip_bits] if b not in BITS]
    if bad_bits:
        raise ValueError(f"bits: {bad_bits} not export bit widths; expected some of {list(BITS)}")
    if len(set(quantile_bits)) < 2:
        raise ValueError(f"quantile_bits={list(quantile_bits)}: a curve needs at least 2 different bit widths")
    bad_k = [k for k in sigmas if not (math.isfinite(k) and k > 0)]
    if bad_k:
        raise ValueError(f"sigmas: {bad_k} are not clip widths; expected finite values > 0")
    out = []
    for q in quantizers:
        out += [ClipSetting(q, REFERENCE_CLIP, int(b), 0.0) for b in sorted(set(quantile_bits))]
        out += [ClipSetting(q, "sdclip", int(b), float(k)) for b in sdclip_bits for k in sigmas]
    return out


def export_overrides(s: ClipSetting) -> dict:
    out = {**FIXED, "export.bits_attn": s.bits, "export.bits_mlp": s.bits, "export.quantizer": s.quantizer,
           "export.clip": s.clip}
    if s.clip == "sdclip":
        out["export.sdclip_sigmas_matrix"] = s.sigmas
    return out


def max_row_deviation(n: int) -> float:
    """The largest |x_i - mean(x)| / std(x) over rows x of ``n`` entries, std unbiased (torch's, SD-clip's):
    (n - 1) / sqrt(n), reached by a row with one entry apart and the others equal. 7.875 for n = 64, 11.22 for
    n = 128: an SD-clip k above it clips a row only through its mean."""
    if n < 2:
        raise ValueError(f"n={n}: a row's standard deviation needs at least 2 entries")
    return (n - 1) / math.sqrt(n)


def row_widths(cfg: Config) -> list[int]:
    """The row widths (input features) of the attention and MLP matrices of ``cfg``'s model."""
    state = build_model(cfg).state_dict()
    return sorted({int(t.shape[1]) for n, t in state.items() if t.ndim == 2 and tensor_class(n) in MATRIX_CLASSES})


def clipped_fraction(state: dict[str, torch.Tensor], ecfg: ExportConfig, *, control: tuple[str, ...]) -> float:
    """Fraction of the entries of the int-quantized attention and MLP matrices beyond their row's clip value."""
    clipped = total = 0
    for name, t in state.items():
        plan = plan_tensor(name, t, ecfg, control=control)
        if plan.action != "int" or plan.cls not in MATRIX_CLASSES or t.ndim != 2:
            continue
        t32 = at_least_fp32(t.detach().cpu())
        clip = row_clip(t32, plan.spec)
        clipped += int((t32.abs() > clip[:, None]).sum())
        total += t.numel()
    return clipped / total if total else 0.0


def export_setting(state: dict[str, torch.Tensor], cfg: Config, s: ClipSetting,
                   hessians: dict[str, torch.Tensor] | None = None) -> tuple[bytes, int, ExportConfig]:
    """The artifact of ``state`` at setting ``s`` on top of the run's config ``cfg``, its matrices' compressed
    bytes and the export config. GPTQ (``s.quantizer == "gptq"``) gets the Hessians of the attention and MLP
    matrices only, so the embedding is rounded to nearest in every setting."""
    ecfg = cfg.replace(export_overrides(s)).export
    if s.quantizer == "gptq":
        if hessians is None:
            raise ValueError(f"{s.label}: GPTQ needs calibration Hessians (pgolf.research.gptq_sweep.run_hessians)")
        hessians = {n: h for n, h in hessians.items() if tensor_class(n) in MATRIX_CLASSES}
    else:
        hessians = None
    blob, matrix_bytes = export_with_matrix_bytes(state, ecfg, control=cfg.model.control_patterns, hessians=hessians)
    return blob, matrix_bytes, ecfg


def rate_distortion(*, run_dirs: Sequence[str | Path], dataset: str | Path, grid: Sequence[ClipSetting],
                    eval_tokens: int, calibration_batches: int) -> pd.DataFrame:
    rows = []
    with one_thread():
        for run in saved_runs(run_dirs, dataset=dataset, eval_tokens=eval_tokens):
            fp = run.score().val_bpb
            hessians = (run_hessians(run.cfg, run.state, dataset, calibration_batches)
                        if any(s.quantizer == "gptq" for s in grid) else None)
            control = run.cfg.model.control_patterns
            for s in grid:
                blob, matrix_bytes, ecfg = export_setting(run.state, run.cfg, s, hessians)
                q = run.score(load_artifact(blob))
                rows.append(RateDistortionRow(**asdict(s), run=run.run_id, seed=run.cfg.train.seed,
                                              clipped_frac=clipped_fraction(run.state, ecfg, control=control),
                                              val_bpb_fp=fp, q_val_bpb=q.val_bpb, gap_bpb=q.val_bpb - fp,
                                              artifact_bytes=len(blob), matrix_bytes=matrix_bytes,
                                              tokens_scored=q.tokens))
    return TABLE.frame(rows)


def rate_distortion_table(*, runs_root: Path, run_dirs: Sequence[str | Path], dataset: str | Path,
                          grid: Sequence[ClipSetting], eval_tokens: int, calibration_batches: int,
                          rerun: bool = False, log: Callable[[str], None] = print) -> pd.DataFrame:
    """:func:`rate_distortion`, stored under ``runs_root/frontier/analysis`` while its inputs are unchanged."""
    inputs = {"runs": [run_id(d) for d in run_dirs], "grid": [asdict(s) for s in grid], "eval_tokens": eval_tokens,
              "calibration_batches": calibration_batches, "fixed": FIXED}
    return TABLE.cached(runs_root=runs_root, inputs=inputs, rerun=rerun, log=log,
                        compute=lambda: rate_distortion(run_dirs=run_dirs, dataset=dataset, grid=grid,
                                                        eval_tokens=eval_tokens,
                                                        calibration_batches=calibration_batches))


# ---- matched bytes ---------------------------------------------------------------------------------------

def curve_at(bits: Sequence[int], nbytes: Sequence[float], bpb: Sequence[float], at_bytes: float
             ) -> tuple[float, str]:
    """The curve through (bytes, bpb) at each bit width, at ``at_bytes``: linear in log bytes between the two
    adjacent bit widths whose bytes enclose it (ends included). Returns (bpb, "inside"), or (NaN, "below") /
    (NaN, "above") outside the curve's byte range: no extrapolation. The curve's bytes must grow with its bits."""
    order = np.argsort(np.asarray(bits))
    b = np.asarray(bits)[order]
    x = np.log(np.asarray(nbytes, dtype=float)[order])
    y = np.asarray(bpb, dtype=float)[order]
    if len(b) < 2 or len(set(b.tolist())) != len(b):
        raise ValueError(f"a curve needs at least 2 distinct bit widths, got {b.tolist()}")
    if not (np.diff(x) > 0).all():
        by_bits = dict(zip(b.tolist(), np.exp(x).round().astype(int).tolist()))
        raise ValueError(f"the curve's bytes do not grow with its bits ({by_bits}): no single segment between "
                         "adjacent bit widths holds a given byte count")
    t = math.log(at_bytes)
    if t < x[0]:
        return float("nan"), "below"
    if t > x[-1]:
        return float("nan"), "above"
    i = min(int(np.searchsorted(x, t, side="right")) - 1, len(x) - 2)
    w = (t - x[i]) / (x[i + 1] - x[i])
    return float(y[i] + w * (y[i + 1] - y[i])), "inside"


def matched_points(table: pd.DataFrame, bytes_column: str = "artifact_bytes") -> pd.DataFrame:
    """Per SD-clip point (quantizer, bits, k, seed): its bytes and bpb, the same seed's quantile curve at those
    bytes (:func:`curve_at`, same quantizer), where the point lies ("inside", "below", "above") and
    diff = bpb - curve (NaN outside)."""
    rows = []
    for (quantizer, seed), g in table.groupby(["quantizer", "seed"], sort=False):
        ref = g[g["clip"] == REFERENCE_CLIP]
        for r in g[g["clip"] != REFERENCE_CLIP].to_dict("records"):
            curve, where = curve_at(ref["bits"].tolist(), ref[bytes_column].tolist(), ref["q_val_bpb"].tolist(),
                                    float(r[bytes_column]))
            rows.append({"quantizer": quantizer, "bits": r["bits"], "sigmas": r["sigmas"], "seed": seed,
                         "bytes": r[bytes_column], "q_val_bpb": r["q_val_bpb"], "curve_bpb": curve,
                         "position": where, "diff": r["q_val_bpb"] - curve})
    return pd.DataFrame(rows, columns=["quantizer", "bits", "sigmas", "seed", "bytes", "q_val_bpb", "curve_bpb",
                                       "position", "diff"])


def matched_tests(points: pd.DataFrame) -> pd.DataFrame:
    """Per SD-clip setting: SD-clip's bpb minus the quantile curve at equal bytes, paired by seed over the seeds
    whose point lies inside the curve's byte range (:func:`pgolf.research.stats.compare`'s columns), with the
    count of seeds inside, below and above the range. Fewer than 2 inside: no test (NaN), ``note`` says why."""
    rows = []
    for (quantizer, bits, k), g in points.groupby(["quantizer", "bits", "sigmas"], sort=False):
        inside = g[g["position"] == "inside"]
        counts = {"n_seeds": len(g), "n_inside": len(inside), "n_below": int((g["position"] == "below").sum()),
                  "n_above": int((g["position"] == "above").sum()), "bytes": float(g["bytes"].mean())}
        key = {"quantizer": quantizer, "bits": int(bits), "sigmas": float(k)}
        if len(inside) < 2:
            rows.append({**key, **counts, "n_pairs": len(inside), "diff": float(inside["diff"].mean())
                         if len(inside) else float("nan"), "ci_low": np.nan, "ci_high": np.nan, "p": np.nan,
                         "mde": np.nan, "note": f"outside the quantile curve's byte range in {len(g) - len(inside)} "
                                                f"of {len(g)} seeds: no test"})
            continue
        long = pd.concat([inside.assign(arm="sdclip", value=inside["q_val_bpb"]),
                          inside.assign(arm="curve", value=inside["curve_bpb"])])
        test = compare(long, "curve", "value", threshold=float("nan")).iloc[0]
        note = test["note"] or (f"{len(g) - len(inside)} of {len(g)} seeds outside the curve's byte range, left "
                                "out" if len(inside) < len(g) else "")
        rows.append({**key, **counts, **{c: test[c] for c in ("n_pairs", "diff", "ci_low", "ci_high", "p", "mde")},
                     "note": note})
    return pd.DataFrame(rows)


def best_sigmas(table: pd.DataFrame, tests: pd.DataFrame) -> pd.DataFrame:
    """Per quantizer and SD-clip bit width: the k with the lowest mean bpb, and the k with the lowest mean bpb
    minus the quantile curve at equal bytes among the k whose points lie inside the curve's range in every seed
    (NaN where none does)."""
    sd = table[table["clip"] != REFERENCE_CLIP]
    rows = []
    for (quantizer, bits), g in sd.groupby(["quantizer", "bits"], sort=False):
        mean = g.groupby("sigmas")["q_val_bpb"].mean()
        t = tests[(tests["quantizer"] == quantizer) & (tests["bits"] == bits)
                  & (tests["n_inside"] == tests["n_seeds"])]
        best = t.loc[t["diff"].idxmin()] if len(t) else None
        rows.append({"quantizer": quantizer, "bits": int(bits), "k_lowest_bpb": float(mean.idxmin()),
                     "lowest_bpb": float(mean.min()),
                     "k_best_matched": float(best["sigmas"]) if best is not None else float("nan"),
                     "best_matched_diff": float(best["diff"]) if best is not None else float("nan"),
                     "best_matched_p": float(best["p"]) if best is not None else float("nan")})
    return pd.DataFrame(rows)


def frontiers(table: pd.DataFrame) -> pd.DataFrame:
    """Per quantizer and clip rule, the settings on its Pareto front of mean artifact bytes against mean bpb (over
    seeds). Each SD-clip point gets the mean quantile curve (mean bytes and bpb per bit width, same quantizer) at
    its bytes (``curve_bpb``), where it lies (``position``: inside / below / above the curve's byte range) and
    ``below_curve`` (True or False inside the range, None outside); the quantile points are the curve itself."""
    means = (table.groupby(["quantizer", "clip", "bits", "sigmas"], sort=False)[["artifact_bytes", "q_val_bpb"]]
             .mean().reset_index())
    out = []
    for (quantizer, clip), g in means.groupby(["quantizer", "clip"], sort=False):
        front = pareto_front(g).copy()
        if clip == REFERENCE_CLIP:
            out.append(front.assign(curve_bpb=front["q_val_bpb"], position="curve", below_curve=None))
            continue
        ref = means[(means["quantizer"] == quantizer) & (means["clip"] == REFERENCE_CLIP)]
        at = [curve_at(ref["bits"].tolist(), ref["artifact_bytes"].tolist(), ref["q_val_bpb"].tolist(), float(v))
              for v in front["artifact_bytes"]]
        front["curve_bpb"] = [a[0] for a in at]
        front["position"] = [a[1] for a in at]
        front["below_curve"] = [None if pos != "inside" else bool(v < c)
                                for v, c, pos in zip(front["q_val_bpb"], front["curve_bpb"], front["position"])]
        out.append(front)
    return pd.concat(out, ignore_index=True)


def _settings_text(rows: pd.DataFrame) -> str:
    return ", ".join(f"int{int(r['bits'])} k={r['sigmas']:g} ({r['diff']:+.4f})" for r in rows.to_dict("records"))


def conclusion(tests: pd.DataFrame, best: pd.DataFrame, front: pd.DataFrame, bounds: dict[int, float],
               clipped_max: pd.Series, alpha: float = RULE_ALPHA) -> list[str]:
    """Markdown lines that say what the matched-bytes tables support: ``tests`` (:func:`matched_tests` with
    ``p_holm`` over its rows), ``best`` (:func:`best_sigmas`), ``front`` (:func:`frontiers`), the deviation bound
    per row width and the largest clipped fraction per k (over seeds)."""
    widths = ", ".join(f"{b:.3f} in {n}-wide rows" for n, b in bounds.items())
    silent = [f"{k:g}" for k, v in clipped_max.items() if v == 0]
    above = [f"{k:g}" for k in clipped_max.index if k > max(bounds.values())]
    lines = [f"- **Rate–distortion at matched bytes** (the embedding int8, quantile clip, round to nearest in every "
             f"setting; its own Holm family of {int(tests['p'].notna().sum())} tests at α = {alpha}). No entry lies "
             f"further from its row mean than (n − 1)/√n standard deviations ({widths}), so k = "
             f"{', '.join(above) or '(none of these)'} can clip a row only through its mean. Measured, the k that "
             f"clipped no entry of these matrices in any seed: {', '.join(silent) or 'none'}; such a k only widens "
             "the grid (fewer bytes, coarser steps)."]
    for quantizer, g in tests.groupby("quantizer", sort=False):
        tested = g[g["p"].notna()]
        sig = tested[tested["p_holm"] < alpha]
        lower, higher = sig[sig["diff"] < 0], sig[sig["diff"] > 0]
        outside = g[g["p"].isna()]
        text = (f"- `{quantizer}`: {len(tested)} of {len(g)} SD-clip settings have at least 2 seeds inside the "
                f"quantile curve's byte range. At equal bytes SD-clip's bpb is lower in {len(lower)}"
                + (f" ({_settings_text(lower)})" if len(lower) else "")
                + f", higher in {len(higher)}" + (f" ({_settings_text(higher)})" if len(higher) else "")
                + f" and not significantly different in {len(tested) - len(sig)} (Holm-adjusted p ≥ {alpha}).")
        if len(outside):
            below = int((outside["n_below"] > outside["n_above"]).sum())
            text += (f" {len(outside)} {'setting lies' if len(outside) == 1 else 'settings lie'} outside the range in "
                     f"most seeds ({below} with fewer bytes than the quantile clip's smallest export): no equal-bytes "
                     "reference, so no test either way.")
        sd = front[(front["quantizer"] == quantizer) & (front["clip"] != REFERENCE_CLIP)]
        inside = sd[sd["position"] == "inside"]
        n_below = int(sum(bool(v) for v in inside["below_curve"]))
        text += (f" SD-clip's Pareto front (means over seeds) has {len(sd)} settings: of the {len(inside)} inside the "
                 f"curve's range, {n_below} lie below the quantile curve and {len(inside) - n_below} above it")
        if len(inside) and n_below == len(inside):
            text += ", so wherever both exist SD-clip's front lies below the quantile clip's (in the means)"
        lines.append(text + ".")
        b = best[best["quantizer"] == quantizer]
        lines.append(f"  Best k per bit width (`{quantizer}`): " + "; ".join(
            f"int{int(r['bits'])}: lowest bpb at k = {r['k_lowest_bpb']:g}"
            + (f", lowest against the curve at k = {r['k_best_matched']:g} ({r['best_matched_diff']:+.4f})"
               if math.isfinite(r["k_best_matched"]) else ", no k inside the curve's range in every seed")
            for r in b.to_dict("records")) + ".")
    return lines
