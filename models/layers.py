"""Pieces that every token model in the zoo shares."""

from __future__ import annotations

from hpsearch.models.registry import DataSpec


def check_token_data(data: DataSpec, model_name: str) -> None:
    """Raise ``ValueError`` unless ``data`` describes token input a classifier can be built for."""
    if data.kind != "tokens":
        raise ValueError(f"{model_name} takes token input, but the task gives {data.kind!r}")
    if data.vocab_size is None or data.vocab_size < 1:
        raise ValueError(f"{model_name} needs a vocab_size of at least 1, got {data.vocab_size!r}")
    if data.seq_len < 1:
        raise ValueError(f"{model_name} needs a seq_len of at least 1, got {data.seq_len}")
    if data.num_outputs < 1:
        raise ValueError(f"{model_name} needs num_outputs of at least 1, got {data.num_outputs}")
