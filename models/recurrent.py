"""LSTM classifier: embeddings, stacked (optionally bidirectional) LSTM layers, mean over time.

The LSTM is unrolled by hand with ``nn.Linear`` and elementwise ops, not ``nn.LSTM``: it was
written when the FLOPs meter could not count a traced ``aten::lstm`` (it now counts torch's
recurrent layers), and it stays as it is so that studies of it keep their code hash.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from hpsearch.models.layers import check_token_data
from hpsearch.models.registry import DataSpec


class LSTMDirection(nn.Module):
    """One LSTM over ``[batch, seq_len, input_size]`` in time order; returns every step's hidden state."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        # The input's share of the four gates for all steps at once: one large matmul, not seq_len small ones.
        self.input_gates = nn.Linear(input_size, 4 * hidden_size)
        self.hidden_gates = nn.Linear(hidden_size, 4 * hidden_size, bias=False)
        with torch.no_grad():
            # A forget-gate bias of 1 keeps the cell state early in training (Jozefowicz et al., 2015).
            self.input_gates.bias[hidden_size : 2 * hidden_size].fill_(1.0)

    def forward(self, x: Tensor) -> Tensor:
        from_input = self.input_gates(x)
        hidden = x.new_zeros(x.shape[0], self.hidden_size)
        cell = torch.zeros_like(hidden)
        outputs = []
        for step in range(x.shape[1]):  # the sequence length, fixed when traced
            in_gate, forget_gate, candidate, out_gate = (from_input[:, step] + self.hidden_gates(hidden)).chunk(4, dim=-1)
            cell = torch.sigmoid(forget_gate) * cell + torch.sigmoid(in_gate) * torch.tanh(candidate)
            hidden = torch.sigmoid(out_gate) * torch.tanh(cell)
            outputs.append(hidden)
        return torch.stack(outputs, dim=1)


class LSTMLayer(nn.Module):
    """One LSTM layer; a bidirectional one also reads the sequence backwards and concatenates both."""

    def __init__(self, input_size: int, hidden_size: int, bidirectional: bool) -> None:
        super().__init__()
        self.forward_lstm = LSTMDirection(input_size, hidden_size)
        self.backward_lstm = LSTMDirection(input_size, hidden_size) if bidirectional else None

    def forward(self, x: Tensor) -> Tensor:
        """``x``: ``[batch, seq_len, input_size]``; returns ``[batch, seq_len, hidden_size · directions]``."""
        out = self.forward_lstm(x)
        if self.backward_lstm is None:
            return out
        return torch.cat([out, self.backward_lstm(x.flip(1)).flip(1)], dim=-1)


class LSTMClassifier(nn.Module):
    """Embedding, ``num_layers`` LSTM layers with dropout between them, mean over time, linear head."""

    def __init__(
        self,
        vocab_size: int,
        num_outputs: int,
        embed_dim: int,
        hidden_size: int,
        num_layers: int,
        bidirectional: bool,
        dropout: float,
    ) -> None:
        super().__init__()
        width = hidden_size * (2 if bidirectional else 1)
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.layers = nn.ModuleList(
            LSTMLayer(embed_dim if i == 0 else width, hidden_size, bidirectional) for i in range(num_layers)
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(width, num_outputs)

    def forward(self, tokens: Tensor) -> Tensor:
        """``tokens``: ``LongTensor[batch, seq_len]``; returns logits ``[batch, num_outputs]``."""
        x = self.embedding(tokens)
        for layer in self.layers:
            x = layer(self.dropout(x))
        # The mean gives every step a direct path to the loss, which a last-step readout lacks.
        return self.head(self.dropout(x.mean(dim=1)))


def build_lstm_classifier(data: DataSpec, **hparams: Any) -> LSTMClassifier:
    """An ``LSTMClassifier`` for ``data``; ``hparams`` are ``LSTM_PARAMS``, resolved by the registry."""
    check_token_data(data, "lstm_classifier")
    assert data.vocab_size is not None  # checked above; narrows the type
    return LSTMClassifier(data.vocab_size, data.num_outputs, **hparams)
