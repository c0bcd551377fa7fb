"""The Pareto front of a table of objective values."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def pareto_mask(values: np.ndarray, maximize: Sequence[bool]) -> np.ndarray:
    """For each row of ``values`` (trials × objectives), whether no other row dominates it.

    A row dominates another when it is at least as good in every objective and better in
    one. Rows with a NaN are never on the front. Equal rows are both kept, as Optuna does.
    """
    signed = np.where(np.asarray(maximize), -1.0, 1.0) * np.asarray(values, dtype=float)  # minimize all
    valid = ~np.isnan(signed).any(axis=1)
    mask = np.zeros(len(signed), dtype=bool)
    candidates = signed[valid]
    if len(candidates):
        no_worse = (candidates[:, None, :] <= candidates[None, :, :]).all(axis=2)
        better = (candidates[:, None, :] < candidates[None, :, :]).any(axis=2)
        dominated = (no_worse & better).any(axis=0)
        mask[np.flatnonzero(valid)] = ~dominated
    return mask
