"""The ablation cache's run key: what a run's result depends on besides the code's behaviour.

``run_key(cfg)`` = SHA-256 (first 10 hex digits) of the JSON ``{"config": delta, "dataset_sha256": ...}``:

- ``delta``: the config entries (flattened dotted keys, sorted) whose value differs from the default
  :class:`~pgolf.core.config.Config`, without ``data.path`` (where the run reads its data, not what). A field
  added to the core with a default equal to the old behaviour is absent from every delta, so adding one leaves
  every key, and so every cached run, as it was;
- ``dataset_sha256``: the identity of the dataset the run will read (``data.path``, or the embedded default),
  the same value the run records in ``dataset.json`` and ``summary.json``
  (:mod:`pgolf.core.data.identity`): the SHA-256 of its pgolf ``manifest.json``, or without one the
  listing rule :data:`~pgolf.core.data.identity.NO_MANIFEST_RULE`.

The code is not in the key: :mod:`pgolf.research.behaviour` checks a cached run's behaviour instead.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pgolf.core.config import Config
from pgolf.core.data.identity import identity_sha256

EXCLUDED = ("data.path",)  # the run's location, not its content (the dataset identity covers that)


def flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"model": {"mlp": "relu2"}}`` -> ``{"model.mlp": "relu2"}``; values JSON-normalized (tuples -> lists)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = json.loads(json.dumps(v))
    return out


def config_delta(cfg: Config | dict[str, Any], default: dict[str, Any] | None = None) -> dict[str, Any]:
    """The entries of ``cfg`` (a Config or its ``to_dict()``) that differ from ``default`` (``Config().to_dict()``
    when None), without ``data.path``. An entry the default lacks (a config dict from a newer pgolf) differs."""
    mine = flat(cfg.to_dict() if isinstance(cfg, Config) else cfg)
    default = flat(Config().to_dict() if default is None else default)
    missing = object()
    return {k: mine[k] for k in sorted(mine) if k not in EXCLUDED and default.get(k, missing) != mine[k]}


def dataset_sha256(cfg: Config) -> str:
    """The ``dataset_sha256`` a run of ``cfg`` records, computed without reading the shards' contents."""
    from pgolf.core.data.loader import resolve_dataset

    return identity_sha256(resolve_dataset(cfg.data, cfg.model.vocab_size))[0]


def key_of(delta: dict[str, Any], dataset: str) -> str:
    blob = json.dumps({"config": delta, "dataset_sha256": dataset}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def run_key(cfg: Config, dataset: str | None = None) -> str:
    """The folder key of a run of ``cfg`` (see the module doc); ``dataset``: its dataset_sha256 if known."""
    return key_of(config_delta(cfg), dataset if dataset is not None else dataset_sha256(cfg))
