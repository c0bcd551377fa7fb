"""Token Field Network: tokens talk to each other through a continuous field on [0, 1].

Each layer spreads the token vectors onto a 1-D grid with a learnable kernel, lets the field
evolve for a few steps (a small CNN or explicit diffusion), and reads it back at the token
positions. Everything is plain tensor ops, so FLOPs counters see the two matmuls per layer;
the elementwise work lives in ``FieldKernel.forward`` and the evolution steps.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hpsearch.models.layers import check_token_data
from hpsearch.models.registry import DataSpec
from hpsearch.models.zoo import EVOLUTION_TYPES, KERNEL_TYPES

# Keeps kernel normalisation finite where a grid point (or token) lies outside every kernel.
_NORM_EPS = 1e-6


def token_grid_distance(seq_len: int, grid_size: int, *, device: torch.device, dtype: torch.dtype) -> Tensor:
    """``|token position - grid point|`` for every token and grid point, shape ``[seq_len, grid_size]``.

    Token ``i`` stands at ``i / (seq_len - 1)`` (a lone token at 0.5); the grid spans [0, 1].
    """
    if seq_len == 1:
        positions = torch.full((1,), 0.5, device=device, dtype=dtype)
    else:
        positions = torch.linspace(0.0, 1.0, seq_len, device=device, dtype=dtype)
    grid = torch.linspace(0.0, 1.0, grid_size, device=device, dtype=dtype)
    return (positions[:, None] - grid[None, :]).abs()


class FieldKernel(nn.Module):
    """Weight of a grid point for a token at a given distance; subclasses define the shape."""

    def forward(self, distance: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class RBFKernel(FieldKernel):
    """``exp(-d² / 2σ²)`` with a learnable width σ, exactly zero beyond ``CUTOFF`` widths."""

    # Far tails underflow to subnormal floats, which make CPU matmuls ~50x slower; e^-32 is
    # already negligible next to the kernel's peak of 1.
    CUTOFF = 8.0

    def __init__(self, width: float) -> None:
        super().__init__()
        # Stored as a log so σ stays positive whatever the optimiser does.
        self.log_sigma = nn.Parameter(torch.tensor(math.log(width)))

    def forward(self, distance: Tensor) -> Tensor:
        scaled = distance / self.log_sigma.exp()
        return torch.where(scaled < self.CUTOFF, torch.exp(-0.5 * scaled**2), 0.0)


class CompactKernel(FieldKernel):
    """``max(0, 1 - d / r)``: a tent of learnable radius r, exactly zero beyond it."""

    def __init__(self, width: float) -> None:
        super().__init__()
        self.log_radius = nn.Parameter(torch.tensor(math.log(width)))

    def forward(self, distance: Tensor) -> Tensor:
        return torch.relu(1.0 - distance / self.log_radius.exp())


class FourierKernel(FieldKernel):
    """``cos(ω d)`` with a learnable frequency ω; weights can be negative."""

    def __init__(self, width: float) -> None:
        super().__init__()
        # ω = 1/width puts the first zero of cos(ωd) at ~1.6 widths, near the other kernels' reach.
        self.log_omega = nn.Parameter(torch.tensor(math.log(1.0 / width)))

    def forward(self, distance: Tensor) -> Tensor:
        return torch.cos(self.log_omega.exp() * distance)


def make_field_kernel(kernel_type: str, width: float) -> FieldKernel:
    """The kernel called ``kernel_type`` with an initial reach of ``width``."""
    kernels = {"rbf": RBFKernel, "compact": CompactKernel, "fourier": FourierKernel}
    if kernel_type not in kernels:
        raise ValueError(f"unknown kernel_type {kernel_type!r}; choose from {', '.join(KERNEL_TYPES)}")
    return kernels[kernel_type](width)


class ConvolutionStep(nn.Module):
    """One learned evolution step: ``field + step_size · GELU(Conv1d(field))`` over the grid."""

    def __init__(self, dim: int, step_size: float) -> None:
        super().__init__()
        self.conv = nn.Conv1d(dim, dim, kernel_size=3, padding=1)
        self.activation = nn.GELU()
        self.step_size = step_size

    def forward(self, field: Tensor) -> Tensor:
        # A residual scaled like an Euler step (the evolution covers unit time in all): a plain
        # stack would wash the field out over 32 steps, an unscaled residual grows it ~200x.
        return field + self.step_size * self.activation(self.conv(field))

    def extra_repr(self) -> str:
        return f"step_size={self.step_size:g}"


class DiffusionStep(nn.Module):
    """One explicit diffusion step ``field + α · laplacian(field)`` with a learnable rate α.

    The boundary is zero-flux (the edge value is repeated), so diffusion conserves the field.
    """

    # Explicit diffusion on a unit-spaced grid is stable for rates up to 1/2.
    MAX_RATE = 0.5

    def __init__(self) -> None:
        super().__init__()
        self.rate_logit = nn.Parameter(torch.zeros(()))

    @property
    def rate(self) -> Tensor:
        """α, always between 0 and MAX_RATE."""
        return self.MAX_RATE * torch.sigmoid(self.rate_logit)

    def laplacian(self, field: Tensor) -> Tensor:
        """Second difference along the grid: ``left + right - 2 · centre``."""
        padded = F.pad(field, (1, 1), mode="replicate")
        return padded[..., :-2] + padded[..., 2:] - 2.0 * field

    def forward(self, field: Tensor) -> Tensor:
        return field + self.rate * self.laplacian(field)


class FieldEvolution(nn.Sequential):
    """``time_steps`` evolution steps of one kind, each with its own parameters, applied in order."""

    def __init__(self, evolution_type: str, dim: int, time_steps: int) -> None:
        if evolution_type == "cnn":
            steps: list[nn.Module] = [ConvolutionStep(dim, 1.0 / time_steps) for _ in range(time_steps)]
        elif evolution_type == "pde":
            steps = [DiffusionStep() for _ in range(time_steps)]
        else:
            raise ValueError(f"unknown evolution_type {evolution_type!r}; choose from {', '.join(EVOLUTION_TYPES)}")
        super().__init__(*steps)
        self.evolution_type = evolution_type

    def extra_repr(self) -> str:
        return f"evolution_type={self.evolution_type}"


class TokenFieldLayer(nn.Module):
    """Tokens -> field on the grid -> evolved field -> back to tokens, with residual and LayerNorm.

    ``background`` is a learned field every input starts from; because it differs from grid
    point to grid point, it tells each token where it stands (the kernel and evolution alone
    are translation-equivariant and mean-pooling would forget positions).
    """

    def __init__(
        self,
        dim: int,
        grid_size: int,
        kernel_width: float,
        kernel_type: str,
        evolution_type: str,
        time_steps: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.grid_size = grid_size
        self.kernel = make_field_kernel(kernel_type, kernel_width)
        self.background = nn.Parameter(torch.empty(dim, grid_size))
        nn.init.normal_(self.background, std=0.02)
        self.evolution = FieldEvolution(evolution_type, dim, time_steps)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor, distance: Tensor) -> Tensor:
        """``x``: ``[batch, seq_len, dim]``; ``distance``: ``[seq_len, grid_size]``; returns ``x``'s shape."""
        weights = self.kernel(distance)
        # Each grid point takes a weighted average of nearby tokens, and each token a weighted
        # average of nearby grid points, so magnitudes don't depend on the kernel's width.
        to_grid = weights / (weights.abs().sum(dim=0, keepdim=True) + _NORM_EPS)
        to_tokens = weights / (weights.abs().sum(dim=1, keepdim=True) + _NORM_EPS)
        field = torch.matmul(x.transpose(1, 2), to_grid) + self.background  # [batch, dim, grid]
        field = self.evolution(field)
        sampled = torch.matmul(field, to_tokens.t()).transpose(1, 2)  # [batch, seq_len, dim]
        return self.norm(x + self.dropout(sampled))

    def extra_repr(self) -> str:
        return f"grid_size={self.grid_size}"


class TokenFieldStack(nn.ModuleList):
    """``num_layers`` token-field layers over one grid, applied in order to ``[batch, seq_len, dim]``.

    Shared by every TFN in the zoo: whatever turns the input into token vectors (an embedding,
    a projection of time-series features), the field layers treat them the same way.
    """

    def __init__(
        self,
        dim: int,
        seq_len: int,
        num_layers: int,
        kernel_type: str,
        evolution_type: str,
        grid_size: int,
        time_steps: int,
        dropout: float,
    ) -> None:
        # The coarser of the two spacings, so every token reaches a grid point and vice versa.
        kernel_width = max(1.0 / (grid_size - 1), 1.0 / max(seq_len - 1, 1))
        super().__init__(
            TokenFieldLayer(dim, grid_size, kernel_width, kernel_type, evolution_type, time_steps, dropout)
            for _ in range(num_layers)
        )
        self.grid_size = grid_size

    def forward(self, x: Tensor) -> Tensor:
        """``x``: ``[batch, seq_len, dim]``; returns the same shape."""
        distance = token_grid_distance(x.shape[1], self.grid_size, device=x.device, dtype=x.dtype)
        for layer in self:
            x = layer(x, distance)
        return x


class TokenFieldClassifier(nn.Module):
    """Embedding, ``num_layers`` token-field layers, mean over tokens, MLP head -> logits.

    ``field_options`` are ``TokenFieldStack``'s: ``num_layers``, ``kernel_type``,
    ``evolution_type``, ``grid_size`` and ``time_steps``.
    """

    def __init__(
        self, vocab_size: int, seq_len: int, num_outputs: int, embed_dim: int, dropout: float, **field_options: Any
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.layers = TokenFieldStack(embed_dim, seq_len, dropout=dropout, **field_options)
        self.head = nn.Sequential(
            nn.Linear(embed_dim, embed_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(embed_dim, num_outputs)
        )

    def forward(self, tokens: Tensor) -> Tensor:
        """``tokens``: ``LongTensor[batch, seq_len]``; returns logits ``[batch, num_outputs]``."""
        return self.head(self.layers(self.embedding(tokens)).mean(dim=1))


def build_tfn_classifier(data: DataSpec, **hparams: Any) -> TokenFieldClassifier:
    """A ``TokenFieldClassifier`` for ``data``; ``hparams`` are ``TFN_PARAMS``, resolved by the registry."""
    check_token_data(data, "tfn_classifier")
    assert data.vocab_size is not None  # checked above; narrows the type
    return TokenFieldClassifier(data.vocab_size, data.seq_len, data.num_outputs, **hparams)
