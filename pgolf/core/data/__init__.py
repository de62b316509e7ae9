"""Reading data: challenge shards, the official token stream, tokenizers and dataset identity.

Importing this package does no I/O; every function reads only the paths it is given. Building and fetching
datasets lives beside the core, in :mod:`pgolf.data`.
"""

from pgolf.core.data.loader import (
    Dataset,
    DatasetNotFoundError,
    DistributedTokenLoader,
    TokenStream,
    load_validation_tokens,
    resolve_dataset,
)
from pgolf.core.data.shards import ShardError, read_header, read_shard, shard_stats, write_shard
from pgolf.core.data.tokenizer import (
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
    "check_tokenizer",
    "count_bytes",
    "load_tokenizer",
    "load_validation_tokens",
    "read_header",
    "read_shard",
    "resolve_dataset",
    "shard_stats",
    "train_sentencepiece",
    "write_shard",
]
