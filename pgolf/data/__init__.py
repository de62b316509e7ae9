"""Building and fetching datasets: the embedded corpus, SentencePiece training, challenge-layout downloads.

Importing this package does no I/O; every function writes only the paths it is given. Reading shards and
tokenizers is part of the training core (:mod:`pgolf.core.data`).
"""

from pgolf.data.build import build_dataset
from pgolf.data.corpus import default_corpus_documents
from pgolf.data.fetch import fetch

__all__ = ["build_dataset", "default_corpus_documents", "fetch"]
