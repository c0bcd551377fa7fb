"""The Pareto front, and the non-dominated fronts, of a table of objective values."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _signed(values: np.ndarray, maximize: Sequence[bool]) -> np.ndarray:
    """``values`` turned so that every objective is minimized."""
    return np.where(np.asarray(maximize), -1.0, 1.0) * np.asarray(values, dtype=float)


def _dominance(signed: np.ndarray) -> np.ndarray:
    """``[i, j]``: row i dominates row j (no worse in every objective, better in one; all minimized)."""
    no_worse = (signed[:, None, :] <= signed[None, :, :]).all(axis=2)
    better = (signed[:, None, :] < signed[None, :, :]).any(axis=2)
    return no_worse & better


def pareto_mask(values: np.ndarray, maximize: Sequence[bool]) -> np.ndarray:
    """For each row of ``values`` (trials × objectives), whether no other row dominates it.

    A row dominates another when it is at least as good in every objective and better in
    one. Rows with a NaN are never on the front. Equal rows are both kept, as Optuna does.
    """
    signed = _signed(values, maximize)
    valid = ~np.isnan(signed).any(axis=1)
    mask = np.zeros(len(signed), dtype=bool)
    if valid.any():
        mask[np.flatnonzero(valid)] = ~_dominance(signed[valid]).any(axis=0)
    return mask


def nondominated_ranks(values: np.ndarray, maximize: Sequence[bool]) -> np.ndarray:
    """For each row of ``values`` (trials × objectives), the index of its non-dominated front.

    Front 0 is the Pareto front; front k is the front of what is left once fronts 0..k-1 are
    taken away (NSGA-II's sorting). Equal rows share a front. Rows with a NaN come after every
    front: their rank is the number of fronts.
    """
    signed = _signed(values, maximize)
    valid = np.flatnonzero(~np.isnan(signed).any(axis=1))
    dominates = _dominance(signed[valid])
    ranks = np.full(len(signed), -1)
    left = np.ones(len(valid), dtype=bool)
    front = 0
    while left.any():
        # Those of the rows left that no row left dominates.
        current = left & ~(dominates & left[:, None]).any(axis=0)
        ranks[valid[current]] = front
        left &= ~current
        front += 1
    ranks[ranks < 0] = front
    return ranks
