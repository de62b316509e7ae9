"""Shared fixtures: a small real dataset built once per session, and tiny training configs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from pgolf_testing import micro_config  # noqa: F401 - re-exported for the fixtures below

torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def _isolated_outputs(tmp_path_factory):
    """Tests never write into the repository's runs/, figures/ or data/, nor into ~/.cache/pgolf/scratch."""
    out = tmp_path_factory.mktemp("pgolf_out")
    old = {k: os.environ.get(k) for k in ("PGOLF_OUT", "PGOLF_DATA", "PGOLF_SCRATCH")}
    os.environ["PGOLF_OUT"] = str(out)
    os.environ["PGOLF_SCRATCH"] = str(tmp_path_factory.mktemp("pgolf_scratch"))
    os.environ.setdefault("PGOLF_DATA", str(out / "data"))
    yield
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory) -> Path:
    """~400 KB of the embedded corpus, tokenized with a 1024-piece BPE (about 150k tokens)."""
    from pgolf.data.build import build_dataset
    from pgolf.data.corpus import default_corpus_documents

    root = tmp_path_factory.mktemp("small_dataset")
    docs = default_corpus_documents()[:100]
    src = root / "corpus.jsonl"
    import json
    src.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    return build_dataset([src], root / "ds", vocab_size=1024, shard_tokens=60_000)


@pytest.fixture
def micro(small_dataset):
    return lambda **kw: micro_config(small_dataset, **kw)
