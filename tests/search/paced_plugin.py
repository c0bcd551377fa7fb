"""A model whose every forward pass lasts at least ``pace_ms``: trials as long on a fast CPU as on a slow one.

Fault tests time a database outage against a trial in progress. With the zoo's models a trial's
length follows the CPU (a 40-epoch trial took 30 s on one machine and under 3 s on another), so
a fault timed for one machine missed the trial on the other. Sleeping in ``forward`` sets a floor.
"""

from __future__ import annotations

import time

from torch import Tensor, nn

from hpsearch.models import DataSpec, HyperParam, register_model


class PacedClassifier(nn.Module):
    """Mean token embedding through a linear layer, at least ``pace_ms`` per forward pass."""

    def __init__(self, data: DataSpec, embed_dim: int, pace_ms: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(data.vocab_size, embed_dim)
        self.head = nn.Linear(embed_dim, data.num_outputs)
        self.pace_s = pace_ms / 1000

    def forward(self, tokens: Tensor) -> Tensor:
        time.sleep(self.pace_s)
        return self.head(self.embed(tokens).mean(dim=1))


register_model(
    "paced_classifier",
    PacedClassifier,
    params=[
        HyperParam("embed_dim", "int", 8, "embedding width", low=1),
        HyperParam("pace_ms", "int", 80, "least milliseconds per forward pass", low=0),
    ],
    description="a token classifier that takes at least pace_ms per forward pass (fault tests)",
    input_kind="tokens",
)
