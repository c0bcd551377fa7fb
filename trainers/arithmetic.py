"""``multiplication``: read two numbers as digit tokens, write every digit of their product.

An example for ``digits=2`` is ``4 7 * 0 3 =`` -> ``0 1 4 1`` (47 x 3 = 141): the operands
zero-padded to ``digits`` digits, most significant first, then the product zero-padded to
``2 * digits`` digits. Models answer every digit at once (``DataSpec`` kind
``"token_sequence"``), so the loss is the mean cross-entropy over the product's digits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from hpsearch.models import DataSpec
from hpsearch.trainers.metrics import MeanOf
from hpsearch.trainers.tasks import Task, _split

TIMES, EQUALS = 10, 11  # token ids after the ten digits
VOCAB_SIZE = 12
# Below this many operand pairs the examples are drawn without replacement, so no pair is in
# both training and validation; above it, repeats are too rare to matter.
_DISTINCT_PAIRS_LIMIT = 1 << 24


def to_digits(numbers: Tensor, width: int) -> Tensor:
    """``LongTensor[n]`` -> ``LongTensor[n, width]`` of decimal digits, most significant first."""
    powers = torch.tensor([10**k for k in reversed(range(width))], dtype=torch.long)
    return numbers[:, None] // powers % 10


def multiplication_examples(digits: int, count: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``count`` random products of two ``digits``-digit operands.

    Returns the tokens ``[count, 2·digits + 2]`` and the product's digits ``[count, 2·digits]``.
    """
    base = 10**digits
    if base * base <= _DISTINCT_PAIRS_LIMIT:
        pairs = torch.randperm(base * base, generator=generator)[:count]
        a, b = pairs // base, pairs % base
    else:
        a, b = torch.randint(0, base, (2, count), generator=generator)
    column = lambda token: torch.full((count, 1), token, dtype=torch.long)  # noqa: E731
    tokens = torch.cat([to_digits(a, digits), column(TIMES), to_digits(b, digits), column(EQUALS)], dim=1)
    return tokens, to_digits(a * b, 2 * digits)


def _digit_loss(outputs: Tensor, targets: Tensor, label_smoothing: float = 0.0) -> Tensor:
    # Cross-entropy wants the classes in dimension 1: [batch, 10, positions].
    return F.cross_entropy(outputs.float().transpose(1, 2), targets, label_smoothing=label_smoothing)


def _digit_accuracy(outputs: Tensor, targets: Tensor) -> Tensor:
    return (outputs.argmax(dim=-1) == targets).float().mean(dim=1)


def _exact_match(outputs: Tensor, targets: Tensor) -> Tensor:
    return (outputs.argmax(dim=-1) == targets).all(dim=1).float()


def multiplication(digits: int, dataset_size: int, data_seed: int) -> Task:
    """Multiply two ``digits``-digit numbers given as digit tokens; answer the product's digits."""
    pairs = 100**digits
    if dataset_size > pairs:
        raise ValueError(f"dataset_size {dataset_size} is more than the {pairs} distinct pairs of {digits}-digit numbers")
    tokens, product = multiplication_examples(digits, dataset_size, torch.Generator().manual_seed(data_seed))
    train, val = _split(tokens, product, 0.2)
    return Task(
        name="multiplication",
        data=DataSpec(
            kind="token_sequence", seq_len=tokens.shape[1], num_outputs=10, vocab_size=VOCAB_SIZE, output_len=2 * digits
        ),
        train=train,
        val=val,
        loss=_digit_loss,
        metrics={"val_digit_acc": lambda: MeanOf(_digit_accuracy), "val_exact_match": lambda: MeanOf(_exact_match)},
    )
