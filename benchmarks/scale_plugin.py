"""A model whose every forward pass sleeps ``pace_ms``: trials that mostly wait, for ``benchmarks/scale.py``.

On a 2-core machine, 32 workers that each computed for a second would measure the CPU, not
the orchestration; a trial that sleeps through its steps keeps each worker's training time fixed
while workers contend for the study database (or the proxy) exactly as they would on a cluster.
"""

from __future__ import annotations

import time

from torch import Tensor, nn

from hpsearch.models import DataSpec, HyperParam, register_model


class SleepyClassifier(nn.Module):
    """Mean token embedding through a linear layer, then ``pace_ms`` of sleep, per forward pass."""

    def __init__(self, data: DataSpec, embed_dim: int, pace_ms: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(data.vocab_size, embed_dim)
        self.head = nn.Linear(embed_dim, data.num_outputs)
        self.pace_s = pace_ms / 1000

    def forward(self, tokens: Tensor) -> Tensor:
        time.sleep(self.pace_s)
        return self.head(self.embed(tokens).mean(dim=1))


register_model(
    "sleepy_classifier",
    SleepyClassifier,
    params=[
        HyperParam("embed_dim", "int", 8, "embedding width", low=1),
        HyperParam("pace_ms", "int", 100, "milliseconds each forward pass sleeps", low=0),
    ],
    description="a token classifier that sleeps pace_ms per forward pass (benchmarks/scale.py)",
    input_kind="tokens",
)
