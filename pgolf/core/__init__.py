"""The training core: everything a run needs to train, export and score a model.

config (the typed config tree), model/, data/ (reading shards and tokenizers), optim, averaging, qat, quant,
export, compress, evaluate, train_loop (the training loop, ``TrainLoop``, and its stages; what the generated
submission script runs), train (the ``Trainer``: that loop in a run folder, with checkpoints and resume), and
the run folder it writes (runs, ownership, records, stopping, paths, safe_load, accounting). The size accounting counts this folder as pgolf's code bytes, and
the ablation cache keys runs on its sources. Nothing here imports from ``pgolf.running`` or
``pgolf.research``.
"""
