"""The training core: everything a run needs to train, export and score a model.

config (the typed config tree), model/, data/ (reading shards and tokenizers), optim, averaging, qat, quant,
export, compress, evaluate, train (the ``Trainer`` and its stages), and the run folder it writes (runs,
ownership, paths, safe_load, accounting). The size accounting counts this folder as pgolf's code bytes, and
the ablation cache keys runs on its sources. Nothing here imports from ``pgolf.running`` or
``pgolf.research``.
"""
