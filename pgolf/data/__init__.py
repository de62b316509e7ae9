"""Data layer: challenge shards, the official token stream, tokenizers, dataset build and fetch.

Importing this package does no I/O; every function reads or writes only the paths it is given.
"""

from pgolf.data.build import build_dataset
from pgolf.data.corpus import default_corpus_documents
from pgolf.data.fetch import fetch
from pgolf.data.loader import (
    Dataset,
    DatasetNotFoundError,
    DistributedTokenLoader,
    TokenStream,
    load_validation_tokens,
    resolve_dataset,
)
from pgolf.data.shards import ShardError, read_header, read_shard, shard_stats, write_shard
from pgolf.data.tokenizer import (
    TokenizerError,
    build_byte_luts,
    check_tokenizer,
    count_bytes,
    load_tokenizer,
    train_sentencepiece,
)

__all__ = [
    "Dataset",
    "DatasetNotFoundError",
    "DistributedTokenLoader",
    "ShardError",
    "TokenStream",
    "TokenizerError",
    "build_byte_luts",
    "build_dataset",
    "check_tokenizer",
    "count_bytes",
    "default_corpus_documents",
    "fetch",
    "load_tokenizer",
    "load_validation_tokens",
    "read_header",
    "read_shard",
    "resolve_dataset",
    "shard_stats",
    "train_sentencepiece",
    "write_shard",
]
