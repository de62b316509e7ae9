"""``pgolf data build | inspect | fetch``. Handlers return an exit code; errors are one line on stderr, code 2."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pgolf.core.data.loader import DatasetNotFoundError
from pgolf.core.data.shards import ShardError, shard_stats, total_stats
from pgolf.core.data.sidecar import is_sidecar
from pgolf.core.data.tokenizer import TokenizerError
from pgolf.data.build import (
    DEFAULT_SHARD_TOKENS,
    DEFAULT_SHUFFLE_SEED,
    DEFAULT_VAL_FRACTION,
    NORMALIZE_MODES,
    BuildError,
    build_dataset,
    read_manifest,
)
from pgolf.data.corpus import CorpusError
from pgolf.data.fetch import (
    DEFAULT_REMOTE_ROOT,
    DEFAULT_REPO_ID,
    RECORD_REPO_ID,
    FetchError,
    fetch,
)

_EXPECTED_ERRORS = (BuildError, CorpusError, FetchError, DatasetNotFoundError, ShardError, TokenizerError, OSError, ValueError)


def register(subparsers) -> None:
    """Add the ``data`` command group to the main parser's subparsers."""
    data = subparsers.add_parser("data", help="build, inspect or fetch datasets")
    sub = data.add_subparsers(dest="data_command", metavar="{build,inspect,fetch}", required=True)

    p = sub.add_parser("build", help="tokenize local text (default: the embedded corpus) into challenge shards")
    p.add_argument("sources", nargs="*", type=Path, help="text/.md/.jsonl files or folders; none = embedded corpus")
    p.add_argument("--out", type=Path, default=None, help="output dataset folder (default under pgolf data root)")
    p.add_argument("--vocab-size", type=int, default=1024, help="SentencePiece vocabulary size")
    p.add_argument("--val-fraction", type=float, default=DEFAULT_VAL_FRACTION, help="share of documents in val")
    p.add_argument("--shard-tokens", type=int, default=DEFAULT_SHARD_TOKENS, help="tokens per shard file")
    p.add_argument("--force", action="store_true", help="rebuild even if a matching build exists")
    p.add_argument("--allow-binary", action="store_true",
                   help="build from sources that look binary (NUL bytes or over 1%% control bytes), refused otherwise")
    p.add_argument("--normalize", choices=NORMALIZE_MODES, default="paragraphs",
                   help="paragraphs (default): join wrapped lines, collapse whitespace, and the official tokenizer "
                        "normalization (NFKC, whitespace runs to one space); none: keep the text byte for byte "
                        "(tokenizer without normalization; see pgolf/data/build.py)")
    p.add_argument("--caseops", action="store_true",
                   help="CaseOps: lowercase text with capitalization operators (PR #1855) and a per-token byte "
                        "sidecar for val_bpb on the original bytes (see pgolf/data/build.py)")
    p.add_argument("--tokenizer", type=Path, default=None, metavar="MODEL",
                   help="tokenize with this SentencePiece .model instead of training one (e.g. the record's CaseOps "
                        "model; its vocabulary must equal --vocab-size)")
    order = p.add_mutually_exclusive_group()
    order.add_argument("--shuffle-seed", type=int, default=DEFAULT_SHUFFLE_SEED, metavar="N",
                       help=f"seed of the train documents' order in the shards (default {DEFAULT_SHUFFLE_SEED}; "
                            "val order and the tokenizer do not depend on it)")
    order.add_argument("--no-shuffle", action="store_true", help="write the train documents in source order")
    p.set_defaults(func=_guard(_build))

    p = sub.add_parser("inspect", help="print shard statistics and the manifest summary")
    p.add_argument("paths", nargs="+", type=Path, help="shard files or dataset folders")
    p.set_defaults(func=_guard(_inspect))

    p = sub.add_parser("fetch", help="download the official cached FineWeb export from Hugging Face")
    p.add_argument("--variant", default="sp1024", help="tokenizer family: sp1024 (official), sp4096, sp8192 (records)")
    p.add_argument("--train-shards", type=int, default=1, help="training shards to fetch (all val shards always)")
    p.add_argument("--out", type=Path, default=None, help="data root (default: pgolf data root, official layout)")
    p.add_argument("--repo-id", default=None,
                   help=f"Hugging Face dataset repo (default: {RECORD_REPO_ID} for sp4096/sp8192, the records' "
                        f"export; {DEFAULT_REPO_ID} otherwise)")
    p.add_argument("--remote-root", default=DEFAULT_REMOTE_ROOT, help="export root inside the repo")
    p.add_argument("--with-docs", action="store_true", help="also fetch docs_selected.jsonl (large)")
    p.set_defaults(func=_guard(_fetch))


def _guard(handler):
    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except _EXPECTED_ERRORS as exc:
            print(f"pgolf data {args.data_command}: error: {exc}", file=sys.stderr)
            return 2

    return run


def _build(args: argparse.Namespace) -> int:
    out = build_dataset(
        args.sources or None,
        args.out,
        vocab_size=args.vocab_size,
        val_fraction=args.val_fraction,
        shard_tokens=args.shard_tokens,
        force=args.force,
        normalize=args.normalize,
        shuffle_seed=None if args.no_shuffle else args.shuffle_seed,
        allow_binary=args.allow_binary,
        caseops=args.caseops,
        tokenizer_model=args.tokenizer,
    )
    print(out)
    _print_manifest(read_manifest(out))
    return 0


def _inspect(args: argparse.Namespace) -> int:
    for path in args.paths:
        if path.is_dir():
            shards = sorted(path.glob("*.bin"), key=str)
            if not shards:
                raise DatasetNotFoundError(f"no *.bin shard files in {path}")
            print(f"== {path}")
            for split in ("train", "val"):
                files = [s for s in shards if s.name.startswith(f"fineweb_{split}_") and not is_sidecar(s)]
                for f in files:
                    _print_stats(f.name, shard_stats(f))
                if files:
                    _print_stats(f"total {split}", total_stats(files))
            others = [s for s in shards if not s.name.startswith(("fineweb_train_", "fineweb_val_")) or is_sidecar(s)]
            for f in others:
                _print_stats(f.name, shard_stats(f))
            _print_manifest(read_manifest(path))
        else:
            _print_stats(str(path), shard_stats(path))
    return 0


def _fetch(args: argparse.Namespace) -> int:
    result = fetch(
        variant=args.variant,
        train_shards=args.train_shards,
        out_root=args.out,
        repo_id=args.repo_id,
        remote_root=args.remote_root,
        with_docs=args.with_docs,
    )
    print(f"dataset: {result.dataset_dir}")
    print(f"tokenizer: {', '.join(str(p) for p in result.tokenizer_files)}")
    print(f"downloaded: {len(result.downloaded)} files, already present: {len(result.skipped)}")
    return 0


def _print_stats(label: str, s: dict) -> None:
    top = " ".join(f"{i}:{c}" for i, c in s["most_common"][:5])
    print(
        f"{label}: tokens:{s['tokens']} bytes:{s['bytes']} ids:[{s['min_id']},{s['max_id']}] "
        f"unique_ids:{s['unique_ids']} most_common:{top}"
    )


def _print_manifest(manifest: dict | None) -> None:
    if not manifest:
        return
    if manifest.get("format") == "pgolf-dataset":
        splits = manifest.get("splits", {})
        parts = [f"vocab_size:{manifest.get('vocab_size')}"]
        for name in ("train", "val"):
            s = splits.get(name, {})
            parts.append(f"{name}_docs:{s.get('docs')} {name}_tokens:{s.get('tokens')}")
        parts.append(f"val_bytes_per_token:{splits.get('val', {}).get('bytes_per_token', float('nan')):.4f}")
        parts.append(f"unigram_val_bpb:{manifest.get('unigram_val_bpb', float('nan')):.4f}")
        if manifest.get("caseops"):
            parts.append(f"caseops:{manifest['caseops']} (val bytes from fineweb_val_bytes_*.bin)")
        print("manifest: " + " ".join(parts))
    else:
        print("manifest: " + json.dumps({k: manifest[k] for k in list(manifest)[:8]}, default=str)[:500])
