"""CNN classifier: residual 1-D convolutions over token embeddings, pooled over the sequence."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from hpsearch.models.layers import check_token_data
from hpsearch.models.registry import DataSpec
from hpsearch.models.zoo import POOLINGS


class ConvBlock(nn.Module):
    """Pre-norm residual block: ``x + dropout(GELU(Conv1d(norm(x))))``, the sequence length kept."""

    def __init__(self, dim: int, kernel_size: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        # Zero padding that keeps every position (one more on the right for an even kernel), so
        # blocks stack and the residual lines up. Explicit, because fvcore cannot count a
        # convolution with padding="same" (aten::_convolution_mode).
        self.padding = ((kernel_size - 1) // 2, kernel_size // 2)
        self.conv = nn.Conv1d(dim, dim, kernel_size)
        self.activation = nn.GELU()
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """``x``: ``[batch, seq_len, dim]``; returns the same shape."""
        convolved = self.conv(F.pad(self.norm(x).transpose(1, 2), self.padding)).transpose(1, 2)
        return x + self.dropout(self.activation(convolved))


class CNNClassifier(nn.Module):
    """Embedding, ``num_layers`` convolution blocks, LayerNorm, max or mean over positions, linear head."""

    def __init__(
        self,
        vocab_size: int,
        num_outputs: int,
        embed_dim: int,
        num_layers: int,
        kernel_size: int,
        pooling: str,
        dropout: float,
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; choose from {', '.join(POOLINGS)}")
        self.pooling = pooling
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.blocks = nn.Sequential(*(ConvBlock(embed_dim, kernel_size, dropout) for _ in range(num_layers)))
        self.norm = nn.LayerNorm(embed_dim)
        self.head = nn.Linear(embed_dim, num_outputs)

    def forward(self, tokens: Tensor) -> Tensor:
        """``tokens``: ``LongTensor[batch, seq_len]``; returns logits ``[batch, num_outputs]``."""
        x = self.norm(self.blocks(self.embedding(tokens)))
        pooled = x.amax(dim=1) if self.pooling == "max" else x.mean(dim=1)
        return self.head(pooled)

    def extra_repr(self) -> str:
        return f"pooling={self.pooling}"


def build_cnn_classifier(data: DataSpec, **hparams: Any) -> CNNClassifier:
    """A ``CNNClassifier`` for ``data``; ``hparams`` are ``CNN_PARAMS``, resolved by the registry."""
    check_token_data(data, "cnn_classifier")
    assert data.vocab_size is not None  # checked above; narrows the type
    return CNNClassifier(data.vocab_size, data.num_outputs, **hparams)
