"""The baseline: a small pre-norm transformer encoder over tokens.

Written out by hand (no ``nn.TransformerEncoderLayer`` / ``nn.MultiheadAttention``) so that
FLOPs counters see every op, attention included as ``scaled_dot_product_attention``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hpsearch.models.layers import check_token_data
from hpsearch.models.registry import DataSpec


class SelfAttention(nn.Module):
    """Multi-head self-attention: one qkv projection, SDPA, an output projection."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        """``x``: ``[batch, seq_len, dim]``; returns the same shape."""
        batch, seq_len, dim = x.shape
        q, k, v = self.qkv(x).unflatten(-1, (3, self.num_heads, dim // self.num_heads)).permute(2, 0, 3, 1, 4)
        # No attention-probability dropout: SDPA then takes the same kernel in train and eval.
        attended = F.scaled_dot_product_attention(q, k, v)  # [batch, heads, seq_len, head_dim]
        return self.out(attended.transpose(1, 2).reshape(batch, seq_len, dim))

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}"


class EncoderBlock(nn.Module):
    """Pre-norm block: ``x + attention(norm(x))``, then ``x + mlp(norm(x))``, with dropout on each branch."""

    def __init__(self, dim: int, num_heads: int, ff_mult: int, dropout: float) -> None:
        super().__init__()
        self.attention_norm = nn.LayerNorm(dim)
        self.attention = SelfAttention(dim, num_heads)
        self.mlp_norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, ff_mult * dim), nn.GELU(), nn.Linear(ff_mult * dim, dim))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.dropout(self.attention(self.attention_norm(x)))
        return x + self.dropout(self.mlp(self.mlp_norm(x)))


class TransformerClassifier(nn.Module):
    """Token + learned position embeddings, encoder blocks, LayerNorm, mean over tokens, linear head."""

    def __init__(
        self,
        vocab_size: int,
        seq_len: int,
        num_outputs: int,
        embed_dim: int,
        num_layers: int,
        num_heads: int,
        ff_mult: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.position_embedding = nn.Parameter(torch.empty(seq_len, embed_dim))
        nn.init.normal_(self.position_embedding, std=0.02)
        self.blocks = nn.ModuleList(EncoderBlock(embed_dim, num_heads, ff_mult, dropout) for _ in range(num_layers))
        self.norm = nn.LayerNorm(embed_dim)
        self.head = nn.Linear(embed_dim, num_outputs)

    def forward(self, tokens: Tensor) -> Tensor:
        """``tokens``: ``LongTensor[batch, seq_len]``; returns logits ``[batch, num_outputs]``."""
        seq_len = tokens.shape[1]
        if seq_len > self.position_embedding.shape[0]:
            raise ValueError(
                f"input has {seq_len} tokens but the model was built for at most {self.position_embedding.shape[0]}"
            )
        x = self.embedding(tokens) + self.position_embedding[:seq_len]
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x).mean(dim=1))


def build_transformer_classifier(
    data: DataSpec,
    *,
    embed_dim: int,
    num_layers: int,
    num_heads: int,
    ff_mult: int,
    dropout: float,
) -> TransformerClassifier:
    """A ``TransformerClassifier`` for ``data`` (defaults come from the registry, not from here)."""
    check_token_data(data, "transformer_classifier")
    assert data.vocab_size is not None  # checked above; narrows the type
    return TransformerClassifier(
        vocab_size=data.vocab_size,
        seq_len=data.seq_len,
        num_outputs=data.num_outputs,
        embed_dim=embed_dim,
        num_layers=num_layers,
        num_heads=num_heads,
        ff_mult=ff_mult,
        dropout=dropout,
    )
