"""Export as pure functions: prune -> quantize -> (bit-pack) -> serialize -> compress, and back.

At baseline settings the quantized object is the official ``int8_clean_per_row_v1`` format, so
official artifacts load here and pgolf artifacts load in the official script. Mixed-bit exports
use ``pgolf_mixed_v1``: the same layout plus per-tensor bit widths (and packed codes if asked).
"""

from __future__ import annotations

import hashlib
import io
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pgolf.core import lqer
from pgolf.core.compress import ArtifactError, compress, decompress
from pgolf.core.config import ExportConfig
from pgolf.core.gptq import gptq_quantize
from pgolf.core.quant import TensorPlan, dequantize_rows, floor_fraction, plan_tensor, quantize_rows, quantize_tensor
from pgolf.core.safe_load import UnsafeFileError, load_plain

OFFICIAL_FORMAT = "int8_clean_per_row_v1"
MIXED_FORMAT = "pgolf_mixed_v1"
# Seed-PR formats with the official layout (int codes in int8 containers, per-row scales): they load as is.
RECORD_FORMATS = ("int6_in_int8_per_row_v1",)  # PR #194


def nbytes(t: Tensor) -> int:
    return int(t.numel()) * int(t.element_size())


# -- pruning --------------------------------------------------------------------------------

def prune_targets(name: str, t: Tensor, cfg: ExportConfig, *, control: tuple[str, ...]) -> bool:
    """Whether magnitude pruning touches this entry (``export.prune_scope``)."""
    if not t.is_floating_point() or t.ndim != 2:
        return False
    if cfg.prune_scope == "matrices":
        return t.numel() > cfg.prune_min_numel
    return plan_tensor(name, t, cfg, control=control).action == "int"


def prune_tensor(t: Tensor, frac: float, rule: str) -> Tensor:
    """Zero the smallest-|w| entries of ``t``.

    kthvalue (pgolf): |w| <= the k-th smallest |w|, k = floor(frac * n), so exactly k entries when
    magnitudes are distinct. quantile (the seed PRs): |w| < torch.quantile(|w|, frac), interpolated.
    """
    a = t.detach().float().abs().flatten()
    if rule == "quantile":
        thresh = torch.quantile(a, frac)
        return t.masked_fill(t.abs() < thresh.to(t.dtype), 0.0)
    k = int(frac * a.numel())
    if k == 0:
        return t
    thresh = torch.kthvalue(a, k).values
    return torch.where(t.abs() <= thresh.to(t.dtype), torch.zeros_like(t), t)


def prune_state_dict(sd: dict[str, Tensor], cfg: ExportConfig, *, control: tuple[str, ...]) -> dict[str, Tensor]:
    """Magnitude-prune the entries ``export.prune_scope`` selects, at ``prune_frac`` (``prune_frac_mlp``
    for MLP matrices), by ``export.prune_rule``. Runs before quantization."""
    out = {}
    for name, t in sd.items():
        frac = cfg.prune_frac_for(name)
        if frac > 0 and prune_targets(name, t, cfg, control=control):
            t = prune_tensor(t, frac, cfg.prune_rule)
        out[name] = t
    return out


# -- bit packing ----------------------------------------------------------------------------

def pack_codes(q: Tensor, bits: int) -> Tensor:
    """Signed codes in [-qmax, qmax] -> a dense little-endian bitstream of ``bits`` per code."""
    qmax = 2 ** (bits - 1) - 1
    u = (q.flatten().to(torch.int16) + qmax).numpy().astype(np.uint8)
    b = np.unpackbits(u[:, None], axis=1, bitorder="little")[:, :bits]
    return torch.from_numpy(np.packbits(b.reshape(-1), bitorder="little").copy())


def unpack_codes(buf: Tensor, bits: int, shape: tuple[int, ...]) -> Tensor:
    qmax = 2 ** (bits - 1) - 1
    n = int(np.prod(shape))
    b = np.unpackbits(buf.numpy(), bitorder="little")[: n * bits].reshape(n, bits)
    u = np.packbits(np.pad(b, ((0, 0), (0, 8 - bits))), axis=1, bitorder="little").reshape(-1)
    return torch.from_numpy((u.astype(np.int16) - qmax).astype(np.int8)).reshape(shape)


# -- quantize / dequantize --------------------------------------------------------------------

def check_hessians(sd: dict[str, Tensor], cfg: ExportConfig, hessians: dict[str, Tensor] | None) -> None:
    """``export.quantizer=gptq`` needs calibration Hessians, named as the state dict's weights."""
    if cfg.quantizer != "gptq":
        return
    if hessians is None:
        raise ValueError("export.quantizer=gptq needs calibration Hessians: pass hessians= (from "
                         "pgolf.core.gptq.collect_hessians), or set export.quantizer=rtn")
    unknown = sorted(set(hessians) - set(sd))
    if unknown:
        raise ValueError(f"hessians: names not in the state dict: {unknown[:5]}{' ...' if len(unknown) > 5 else ''}")


def quantize_state_dict(sd: dict[str, Tensor], cfg: ExportConfig, *, control: tuple[str, ...],
                        hessians: dict[str, Tensor] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Quantize a state dict (``control``: ``model.control_patterns``). Returns the serializable object and
    a per-tensor plan report. With ``export.quantizer=gptq`` the int matrices that have a Hessian in
    ``hessians`` are quantized by GPTQ, the others (row ``quantizer: rtn``) by rounding to nearest."""
    check_hessians(sd, cfg, hessians)
    quantized: dict[str, Tensor] = {}
    scales: dict[str, Tensor] = {}
    dtypes: dict[str, str] = {}
    passthrough: dict[str, Tensor] = {}
    orig_dtypes: dict[str, str] = {}
    qmeta: dict[str, dict[str, Any]] = {}
    bits: dict[str, int] = {}
    packed: dict[str, list[int]] = {}
    rows: list[dict[str, Any]] = []
    errors: dict[str, float] = {}  # LQER candidates: int per-row tensors (not the int8 gates), error norm
    codes: dict[str, Tensor] = {}  # their codes before any bit packing
    for name, tensor in sd.items():
        t = tensor.detach().to("cpu").contiguous()
        plan: TensorPlan = plan_tensor(name, t, cfg, control=control)
        row = {"name": name, "class": plan.cls, "action": plan.action, "params": int(t.numel()),
               "raw_bytes": nbytes(t), "bits": None, "floor_frac": 0.0}
        if plan.action == "raw":
            passthrough[name] = t
            row["payload_bytes"] = nbytes(t)
        elif plan.action == "fp32":
            passthrough[name] = t.float().contiguous()
            row["payload_bytes"] = nbytes(passthrough[name])
        elif plan.action == "fp16":
            if t.dtype in (torch.float32, torch.bfloat16):
                orig_dtypes[name] = str(t.dtype).removeprefix("torch.")
                t = t.to(torch.float16).contiguous()
            passthrough[name] = t
            row["payload_bytes"] = nbytes(t)
        else:
            spec = plan.spec
            assert spec is not None
            if t.ndim == 2 and cfg.quantizer == "gptq" and hessians is not None and name in hessians:
                q, s = gptq_quantize(t, hessians[name], spec, damp=cfg.gptq_damp, block_size=cfg.gptq_block_size,
                                     act_order=cfg.gptq_act_order, name=name)
                qmeta[name] = {"scheme": "per_row", "axis": 0}
                row["floor_frac"] = floor_fraction(t, spec)
                row["quantizer"] = "gptq"
                b = spec.bits
            elif t.ndim == 2:
                q, s = quantize_rows(t, spec)
                qmeta[name] = {"scheme": "per_row", "axis": 0}
                row["floor_frac"] = floor_fraction(t, spec)
                b = spec.bits
            else:
                q, s = quantize_tensor(t, 8, spec.clip_quantile)
                b = 8
            bits[name] = b
            if cfg.lqer_rank and t.ndim == 2 and plan.cls != "gate":
                codes[name] = q
                errors[name] = float((t.float() - q.float() * s.float().view(-1, 1)).norm())
            if cfg.bitpack and b < 8:
                packed[name] = list(q.shape)
                q = pack_codes(q, b)
            quantized[name], scales[name] = q, s
            dtypes[name] = str(t.dtype).removeprefix("torch.")
            row["bits"] = b
            row["payload_bytes"] = nbytes(q) + nbytes(s)
        rows.append(row)
    lqer_entries = _lqer(sd, codes, scales, errors, cfg, rows)
    mixed = bool(packed) or bool(lqer_entries) or any(b != 8 for b in bits.values())
    obj: dict[str, Any] = {
        "__quant_format__": MIXED_FORMAT if mixed else OFFICIAL_FORMAT,
        "quantized": quantized, "scales": scales, "dtypes": dtypes, "passthrough": passthrough,
    }
    if qmeta:
        obj["qmeta"] = qmeta
    if orig_dtypes:
        obj["passthrough_orig_dtypes"] = orig_dtypes
    if mixed:
        obj["bits"] = bits
        if packed:
            obj["packed"] = packed
    if lqer_entries:
        obj["lqer"] = lqer_entries
    return obj, {"tensors": rows}


def _lqer(sd: dict[str, Tensor], codes: dict[str, Tensor], scales: dict[str, Tensor], errors: dict[str, float],
          cfg: ExportConfig, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """export.lqer_rank > 0: the low-rank error factors of the top-k tensors by error (pgolf.core.lqer)."""
    if not cfg.lqer_rank or not errors:
        return {}
    out: dict[str, Any] = {}
    by_name = {r["name"]: r for r in rows}
    for name in lqer.top_by_error(errors, cfg.lqer_top_k):
        t = sd[name].detach().to("cpu").float()
        A, B = lqer.error_factors(t - codes[name].float() * scales[name].float().view(-1, 1), cfg.lqer_rank)
        out[name] = lqer.pack(A, B, group=cfg.lqer_asym_group, bits=cfg.lqer_factor_bits)
        by_name[name]["lqer_bytes"] = lqer.entry_bytes(out[name])
        by_name[name]["payload_bytes"] += by_name[name]["lqer_bytes"]
    return out


def dequantize_state_dict(obj: dict[str, Any], name: str = "artifact", *, finite: bool = False) -> dict[str, Tensor]:
    """The state dict an artifact's object stands for; :class:`ArtifactError` naming ``name`` and the entry when
    the object is malformed (a missing section, a tensor without its scale or dtype, a scale that does not fit
    its codes) or, with ``finite``, when a scale or float tensor holds NaN/inf."""
    check_artifact_object(obj, name, finite=finite)
    out: dict[str, Tensor] = {}
    qmeta = obj.get("qmeta", {})
    packed = obj.get("packed", {})
    bits = obj.get("bits", {})
    orig_dtypes = obj.get("passthrough_orig_dtypes", {})
    lqer_entries = obj.get("lqer", {})
    for key, q in obj["quantized"].items():
        dtype = getattr(torch, obj["dtypes"][key])
        if key in packed:
            q = unpack_codes(q, bits[key], tuple(packed[key]))
        s = obj["scales"][key]
        if qmeta.get(key, {}).get("scheme") == "per_row" or s.ndim > 0:
            if q.ndim == 0 or s.numel() != q.shape[0]:
                raise ArtifactError(f"{name}: malformed artifact: scales[{key!r}] holds {s.numel()} values for "
                                    f"codes of shape {list(q.shape)} (one per row expected)")
            if key in lqer_entries:  # the low-rank error correction, added in fp32 before the cast
                out[key] = (dequantize_rows(q, s) + lqer.correction(lqer_entries[key])).to(dtype).contiguous()
            else:
                out[key] = dequantize_rows(q, s, dtype).contiguous()
        else:
            out[key] = (q.float() * float(s.item())).to(dtype).contiguous()
    for key, t in obj["passthrough"].items():
        t = t.detach().to("cpu").contiguous()
        if isinstance(orig_dtypes.get(key), str):
            t = t.to(getattr(torch, orig_dtypes[key])).contiguous()
        out[key] = t
    return out


_SECTIONS = ("quantized", "scales", "dtypes", "passthrough")


def check_artifact_object(obj: Any, name: str = "artifact", *, finite: bool = False) -> None:
    """Refuse an artifact object that is not the official/pgolf layout (with ``finite``: or whose scales or
    passthrough tensors hold NaN/inf), with one line naming the entry."""
    if not isinstance(obj, dict):
        raise ArtifactError(f"{name}: not a pgolf or official artifact: holds a {type(obj).__name__}, expected a dict")
    fmt = obj.get("__quant_format__")
    known = (OFFICIAL_FORMAT, MIXED_FORMAT, *RECORD_FORMATS)
    if fmt not in known:
        raise ArtifactError(f"{name}: unknown __quant_format__ {fmt!r}; expected one of {list(known)}")
    for section in _SECTIONS:
        if not isinstance(obj.get(section), dict):
            what = "missing" if section not in obj else f"a {type(obj[section]).__name__}, not a dict"
            raise ArtifactError(f"{name}: malformed {fmt} artifact: section {section!r} is {what}")
    packed, bits = obj.get("packed", {}), obj.get("bits", {})
    for key, q in obj["quantized"].items():
        s = obj["scales"].get(key)
        if not isinstance(q, Tensor) or not isinstance(s, Tensor):
            raise ArtifactError(f"{name}: malformed {fmt} artifact: quantized[{key!r}] needs a codes tensor and "
                                f"scales[{key!r}] a scale tensor (got {type(q).__name__} and {type(s).__name__})")
        dtype = obj["dtypes"].get(key)
        if not isinstance(dtype, str) or not isinstance(getattr(torch, dtype, None), torch.dtype):
            raise ArtifactError(f"{name}: malformed {fmt} artifact: dtypes[{key!r}] is {dtype!r}, expected a "
                                f"torch dtype name such as 'bfloat16'")
        if key in packed and not (isinstance(bits, dict) and isinstance(bits.get(key), int) and 2 <= bits[key] <= 8):
            raise ArtifactError(f"{name}: malformed {fmt} artifact: packed tensor {key!r} has no bit width in 'bits'")
    lqer_entries = obj.get("lqer", {})
    if not isinstance(lqer_entries, dict):
        raise ArtifactError(f"{name}: malformed {fmt} artifact: section 'lqer' is a {type(lqer_entries).__name__}, "
                            f"not a dict")
    for key, entry in lqer_entries.items():
        q = obj["quantized"].get(key)
        shape = tuple(packed[key]) if key in packed else tuple(q.shape) if isinstance(q, Tensor) else ()
        problem = "it has no quantized tensor" if len(shape) != 2 else lqer.check_entry(entry, *shape)
        if problem:
            raise ArtifactError(f"{name}: malformed {fmt} artifact: lqer[{key!r}]: {problem}")
    for section in ("scales", "passthrough"):
        for key, t in obj[section].items():
            if not isinstance(t, Tensor):
                raise ArtifactError(f"{name}: malformed {fmt} artifact: {section}[{key!r}] is a "
                                    f"{type(t).__name__}, expected a tensor")
            if finite and t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise ArtifactError(f"{name}: {section}[{key!r}] holds NaN or inf values; refusing to score it")


# -- artifact -------------------------------------------------------------------------------

def serialize(obj: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def subset_bytes(obj: dict[str, Any], names: Iterable[str], cfg: ExportConfig) -> int:
    """Compressed bytes (``export.compressor`` at ``export.level``, as the artifact) of the artifact object ``obj``
    cut to the tensors ``names``: their codes, scales and metadata, with the format tag, and nothing else."""
    keep = set(names)
    sub = {k: (v if not isinstance(v, dict) else {n: x for n, x in v.items() if n in keep}) for k, v in obj.items()}
    return len(compress(serialize(sub), cfg.compressor, cfg.level, checked=True))


def export_artifact(sd: dict[str, Tensor], cfg: ExportConfig, *, control: tuple[str, ...],
                    hessians: dict[str, Tensor] | None = None, detail: bool = False,
                    groups: Mapping[str, Sequence[str]] | None = None) -> tuple[bytes, dict[str, Any]]:
    """prune -> quantize -> serialize -> compress. Returns the blob and a size report.

    A pure function of the state, the export config and ``control``, the model's control patterns
    (``model.control_patterns``, one list shared with the optimizer and the dtype layout), which the
    caller passes explicitly: e.g. ``export_artifact(sd, cfg.export, control=cfg.model.control_patterns)``.

    ``hessians`` (``export.quantizer=gptq`` only, required there): the calibration Hessians by weight name,
    from :func:`pgolf.core.gptq.collect_hessians`; the report then lists ``gptq_tensors``.

    With ``detail`` the report also compresses each tensor class on its own (an estimate of where
    the bytes go: classes compressed apart do not add up exactly to the artifact).

    ``groups`` (label -> tensor classes, e.g. ``{"matrices": ("attn", "mlp")}``): the report's ``group_bytes``
    gives, per label, the compressed bytes of those classes' tensors alone (:func:`subset_bytes`).
    """
    check_hessians(sd, cfg, hessians)
    pruned = prune_state_dict(sd, cfg, control=control)
    obj, plan = quantize_state_dict(pruned, cfg, control=control, hessians=hessians)
    raw = serialize(obj)
    blob = compress(raw, cfg.compressor, cfg.level, checked=True)
    report = size_report(plan["tensors"])
    report.update({"format": obj["__quant_format__"], "compressor": cfg.compressor,
                   "serialized_bytes": len(raw), "artifact_bytes": len(blob), "artifact_sha256": sha256(blob)})
    if cfg.quantizer == "gptq":
        report["gptq_tensors"] = [r["name"] for r in plan["tensors"] if r.get("quantizer") == "gptq"]
    if detail:
        for cls, entry in report["classes"].items():
            entry["compressed_bytes"] = subset_bytes(obj, [r["name"] for r in plan["tensors"] if r["class"] == cls],
                                                     cfg)
    if groups is not None:
        report["group_bytes"] = {label: subset_bytes(obj, [r["name"] for r in plan["tensors"] if r["class"] in classes],
                                                     cfg)
                                 for label, classes in groups.items()}
    return blob, report


def size_report(rows: list[dict[str, Any]]) -> dict[str, Any]:
    classes: dict[str, dict[str, Any]] = defaultdict(lambda: {"tensors": 0, "params": 0, "raw_bytes": 0,
                                                              "payload_bytes": 0, "bits": set(), "floor_rows": 0.0})
    for r in rows:
        c = classes[r["class"]]
        c["tensors"] += 1
        c["params"] += r["params"]
        c["raw_bytes"] += r["raw_bytes"]
        c["payload_bytes"] += r["payload_bytes"]
        c["floor_rows"] += r["floor_frac"] * r["params"]
        c["bits"].add(r["bits"] if r["bits"] else r["action"])
    out = {}
    for cls, c in classes.items():
        out[cls] = {"tensors": c["tensors"], "params": c["params"], "raw_bytes": c["raw_bytes"],
                    "payload_bytes": c["payload_bytes"], "storage": sorted(map(str, c["bits"])),
                    "floor_frac": c["floor_rows"] / max(c["params"], 1)}
    return {"classes": out, "raw_bytes": sum(r["raw_bytes"] for r in rows),
            "payload_bytes": sum(r["payload_bytes"] for r in rows)}


# -- naming ---------------------------------------------------------------------------------

PASSTHROUGH_CLASSES = ("small", "control", "nonfloat")  # float/raw in every format, so naming them tells nothing
SHORT_CLASS = {"embed": "emb"}


def artifact_contents(report: dict[str, Any]) -> str:
    """What an artifact holds, from its export report: ``int8``, ``int6+fp16emb``, ``mixed-int4-int6``.

    The integer bit widths really used (a class's configured bits do not count when it has no tensors,
    and 1-D tensors are always int8) and each class of large tensors kept as fp16 passthrough."""
    storage = {cls: entry["storage"] for cls, entry in report["classes"].items()}
    bits = sorted({int(s) for kinds in storage.values() for s in kinds if s.isdigit()})
    ints = [f"int{b}" for b in bits]
    fp16 = [f"fp16{SHORT_CLASS.get(c, c)}" for c in sorted(storage)
            if c not in PASSTHROUGH_CLASSES and "fp16" in storage[c]]
    parts = (["mixed-" + "-".join(ints)] if len(ints) > 1 else ints) + fp16
    return "+".join(parts) or "float"


def artifact_format(report: dict[str, Any]) -> str:
    """Contents and compressor, e.g. ``int8_zlib``: the tag of the log lines (``final_int8_zlib_roundtrip``
    at baseline settings, as in the official log) and of ``summary.json``."""
    return f"{artifact_contents(report)}_{report['compressor']}"


def artifact_filename(report: dict[str, Any]) -> str:
    """``final_model.int8.ptz`` at baseline settings (the official name); otherwise contents and compressor,
    e.g. ``final_model.int6+fp16emb.zstd.ptz``."""
    contents = artifact_contents(report)
    if contents == "int8" and report["compressor"] == "zlib":
        return "final_model.int8.ptz"
    return f"final_model.{contents}.{report['compressor']}.ptz"


def sha256(blob: bytes) -> str:
    """Hex sha256 of an artifact's bytes, as ``summary.json`` records it (``artifact_sha256``)."""
    return hashlib.sha256(blob).hexdigest()


def load_artifact(blob: bytes, name: str = "artifact", *, check_finite: bool = True,
                  pergroup: bool = True) -> dict[str, Tensor]:
    """Decompress (zlib/zstd/xz/brotli/pergroup detected), load and dequantize an artifact (pgolf's or official).
    ``pergroup=False``: refuse a per-group artifact (see :func:`pgolf.core.compress.decompress`).

    Both formats hold only tensors and plain values, so the blob is unpickled with torch's
    weights-only loader: a crafted artifact is refused (:class:`UnsafeFileError` naming ``name``)
    instead of running its code. A damaged or malformed artifact, or one whose scales or float tensors
    hold NaN/inf (``check_finite``), is refused with an :class:`ArtifactError` naming ``name``."""
    payload = decompress(blob, name, pergroup=pergroup)
    try:
        obj = load_plain(io.BytesIO(payload), name=name, kind="pgolf or official artifact")
    except UnsafeFileError:
        raise
    except Exception as e:  # noqa: BLE001 - torch.load of damaged bytes raises many kinds; none may escape unnamed
        raise ArtifactError(f"{name}: damaged artifact: its payload does not unpickle "
                            f"({type(e).__name__}: {' '.join(str(e).split())[:200]})") from None
    out = dequantize_state_dict(obj, name, finite=check_finite)
    if check_finite:
        bad = [k for k, v in out.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
        if bad:
            raise ArtifactError(f"{name}: tensor {bad[0]!r} holds NaN or inf values after dequantization"
                                f"{f' (and {len(bad) - 1} more)' if len(bad) > 1 else ''}; refusing to score it")
    return out
