"""Transformers that answer a sequence of tokens at once, such as the digits of a product.

The input is followed by learned tokens: ``num_latents`` latent tokens, scratch space the
model may use as it likes, then one answer token per output position, where the logits are
read. ``simple_transformer`` has no latent tokens; ``latent_transformer`` has a configurable
number. Both are ``TransformerClassifier``s in everything but the read-out.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, nn

from hpsearch.models.layers import check_token_data
from hpsearch.models.registry import DataSpec
from hpsearch.models.transformer import TransformerClassifier


def check_sequence_data(data: DataSpec, model_name: str) -> None:
    """Raise ``ValueError`` unless ``data`` describes token input with ``output_len`` answers."""
    if data.kind != "token_sequence":
        raise ValueError(f"{model_name} takes token_sequence input, but the task gives {data.kind!r}")
    if data.output_len is None or data.output_len < 1:
        raise ValueError(f"{model_name} needs an output_len of at least 1, got {data.output_len!r}")
    # Past the kind and output_len, the input is checked like any classifier's tokens.
    check_token_data(replace(data, kind="tokens"), model_name)


class LatentTransformer(TransformerClassifier):
    """Embedded tokens + latent tokens + answer tokens, encoder blocks, logits at the answer tokens."""

    def __init__(
        self,
        vocab_size: int,
        seq_len: int,
        output_len: int,
        num_outputs: int,
        embed_dim: int,
        num_layers: int,
        num_heads: int,
        ff_mult: int,
        dropout: float,
        num_latents: int,
    ) -> None:
        super().__init__(vocab_size, seq_len, num_outputs, embed_dim, num_layers, num_heads, ff_mult, dropout)
        self.seq_len, self.num_latents, self.output_len = seq_len, num_latents, output_len
        # Each appended token is its own learned vector, so it needs no position embedding.
        self.appended = nn.Parameter(torch.empty(num_latents + output_len, embed_dim))
        nn.init.normal_(self.appended, std=0.02)

    def forward(self, tokens: Tensor) -> Tensor:
        """``tokens``: ``LongTensor[batch, seq_len]``; returns logits ``[batch, output_len, num_outputs]``."""
        if tokens.shape[1] != self.seq_len:
            raise ValueError(f"input has {tokens.shape[1]} tokens but the model was built for {self.seq_len}")
        x = self.embedding(tokens) + self.position_embedding
        x = torch.cat([x, self.appended.expand(len(tokens), -1, -1)], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x[:, -self.output_len :]))

    def extra_repr(self) -> str:
        return f"num_latents={self.num_latents}, output_len={self.output_len}"


def build_latent_transformer(data: DataSpec, **hparams: Any) -> LatentTransformer:
    """A ``LatentTransformer`` for ``data``; ``hparams`` are ``LATENT_PARAMS``, resolved by the registry."""
    check_sequence_data(data, "latent_transformer" if hparams["num_latents"] else "simple_transformer")
    assert data.vocab_size is not None and data.output_len is not None  # checked above; narrows the types
    return LatentTransformer(data.vocab_size, data.seq_len, data.output_len, data.num_outputs, **hparams)


def build_simple_transformer(data: DataSpec, **hparams: Any) -> LatentTransformer:
    """A ``LatentTransformer`` without latent tokens: the input, then the answer tokens."""
    return build_latent_transformer(data, num_latents=0, **hparams)
