"""TFN regressor: the time steps of a series are the tokens of a Token Field Network.

It forecasts the next ``num_outputs`` values of the series' last feature (the target, see
``DataSpec``) from ``seq_len`` time steps of every feature, with the TFN's field layers in
between a per-step projection and a linear head.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from hpsearch.models.registry import DataSpec
from hpsearch.models.tfn import TokenFieldStack


def check_series_data(data: DataSpec, model_name: str) -> None:
    """Raise ``ValueError`` unless ``data`` describes series input a forecaster can be built for."""
    if data.kind != "series":
        raise ValueError(f"{model_name} takes series input, but the task gives {data.kind!r}")
    for field in ("num_features", "seq_len", "num_outputs"):
        value = getattr(data, field)
        if value is None or value < 1:
            raise ValueError(f"{model_name} needs {field} of at least 1, got {value!r}")


class TokenFieldRegressor(nn.Module):
    """Steps relative to the last one, linear projection, token-field layers, linear head over all steps.

    Inputs are taken relative to the window's last step and the forecast is an offset from
    the target's last value (NLinear's trick): a level the training part never reached, as
    after a drift, then moves the forecast instead of confusing the model. ``field_options``
    are ``TokenFieldStack``'s, as for ``TokenFieldClassifier``.
    """

    def __init__(
        self, seq_len: int, num_features: int, num_outputs: int, embed_dim: int, dropout: float, **field_options: Any
    ) -> None:
        super().__init__()
        self.seq_len = seq_len
        self.projection = nn.Linear(num_features, embed_dim)
        self.layers = TokenFieldStack(embed_dim, seq_len, dropout=dropout, **field_options)
        # A head over every step, not a mean: which step carried a value matters for a forecast.
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(seq_len * embed_dim, num_outputs))

    def forward(self, series: Tensor) -> Tensor:
        """``series``: ``FloatTensor[batch, seq_len, num_features]``; returns ``[batch, num_outputs]``."""
        if series.shape[1] != self.seq_len:
            raise ValueError(f"input has {series.shape[1]} time steps but the model was built for {self.seq_len}")
        last = series[:, -1:, :]
        return self.head(self.layers(self.projection(series - last))) + last[:, 0, -1:]


def build_tfn_regressor(data: DataSpec, **hparams: Any) -> TokenFieldRegressor:
    """A ``TokenFieldRegressor`` for ``data``; ``hparams`` are ``TFN_REGRESSOR_PARAMS``, resolved by the registry."""
    check_series_data(data, "tfn_regressor")
    assert data.num_features is not None  # checked above; narrows the type
    return TokenFieldRegressor(data.seq_len, data.num_features, data.num_outputs, **hparams)
