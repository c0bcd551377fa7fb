"""The Pareto front of a table of objective values, and the rows that dominate a point."""

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


def dominating(values: np.ndarray, point: Sequence[float], maximize: Sequence[bool]) -> np.ndarray:
    """For each row of ``values`` (trials × objectives), whether it dominates ``point``."""
    rows = np.vstack([np.asarray(values, dtype=float).reshape(-1, len(maximize)), np.asarray(point, dtype=float)])
    return _dominance(_signed(rows, maximize))[:-1, -1]
