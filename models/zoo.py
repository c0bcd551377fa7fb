"""The model zoo's declarations: each built-in model's name, hyperparameters and builder.

Kept apart from the models' code (``tfn``, ``transformer``, ``tfn_regressor``, ``recurrent``,
``convolutional``, ``sequence``), which imports torch: listing the zoo (``hpsearch models``),
checking a sweep against its hyperparameters and naming an unknown model need no torch. A
model's module is imported when the model is first built.
"""

from __future__ import annotations

from dataclasses import replace

from hpsearch.models.registry import LazyBuilder, register_model
from hpsearch.models.schema import HyperParam

KERNEL_TYPES = ("rbf", "compact", "fourier")
EVOLUTION_TYPES = ("cnn", "pde")
POOLINGS = ("max", "mean")


def _zoo(module: str, function: str) -> LazyBuilder:
    return LazyBuilder(f"hpsearch.models.{module}", function)


TFN_PARAMS = (
    HyperParam("embed_dim", "int", 64, "width of token vectors and field channels", low=4),
    HyperParam("num_layers", "int", 2, "token-field layers", low=1, high=12),
    HyperParam("kernel_type", "choice", "rbf", "shape of the token-to-grid kernel", choices=KERNEL_TYPES),
    HyperParam("evolution_type", "choice", "cnn", "how the field evolves: learned conv or diffusion", choices=EVOLUTION_TYPES),
    HyperParam("grid_size", "int", 64, "points of the field's grid on [0, 1]", low=4),
    HyperParam("time_steps", "int", 2, "evolution steps per layer", low=1, high=32),
    HyperParam("dropout", "float", 0.1, "dropout on each layer's field output and in the head", low=0.0, high=0.9),
)

register_model(
    "tfn_classifier",
    _zoo("tfn", "build_tfn_classifier"),
    params=TFN_PARAMS,
    description="Token Field Network: tokens interact through a learned continuous field",
    input_kind="tokens",
)


TRANSFORMER_PARAMS = (
    HyperParam("embed_dim", "int", 64, "width of token vectors; a multiple of num_heads", low=4),
    HyperParam("num_layers", "int", 2, "encoder blocks", low=1, high=12),
    HyperParam("num_heads", "int", 4, "attention heads; must divide embed_dim", low=1),
    HyperParam("ff_mult", "int", 2, "MLP hidden size as a multiple of embed_dim", low=1, high=8),
    HyperParam("dropout", "float", 0.1, "dropout on each block's attention and MLP output", low=0.0, high=0.9),
)

register_model(
    "transformer_classifier",
    _zoo("transformer", "build_transformer_classifier"),
    params=TRANSFORMER_PARAMS,
    description="Pre-norm transformer encoder baseline with learned positions",
    input_kind="tokens",
)


# The classifier's hyperparameters, smaller by default: an epoch of ETTh1's ~10k windows of 96
# steps should take seconds on a laptop CPU.
_REGRESSOR_DEFAULTS = {"embed_dim": 16, "num_layers": 1, "grid_size": 32}
TFN_REGRESSOR_PARAMS = tuple(replace(p, default=_REGRESSOR_DEFAULTS.get(p.name, p.default)) for p in TFN_PARAMS)

register_model(
    "tfn_regressor",
    _zoo("tfn_regressor", "build_tfn_regressor"),
    params=TFN_REGRESSOR_PARAMS,
    description="Token Field Network over the time steps of a series, for forecasting",
    input_kind="series",
)


LSTM_PARAMS = (
    HyperParam("embed_dim", "int", 64, "width of token vectors", low=1),
    HyperParam("hidden_size", "int", 64, "LSTM state size per direction", low=1),
    HyperParam("num_layers", "int", 1, "stacked LSTM layers", low=1, high=8),
    HyperParam("bidirectional", "bool", True, "also read the sequence backwards"),
    HyperParam("dropout", "float", 0.1, "dropout on each layer's input and before the head", low=0.0, high=0.9),
)

register_model(
    "lstm_classifier",
    _zoo("recurrent", "build_lstm_classifier"),
    params=LSTM_PARAMS,
    description="LSTM over token embeddings, mean over time",
    input_kind="tokens",
)


CNN_PARAMS = (
    HyperParam("embed_dim", "int", 64, "width of token vectors and convolution channels", low=1),
    HyperParam("num_layers", "int", 2, "convolution blocks", low=1, high=12),
    HyperParam("kernel_size", "int", 3, "positions each convolution sees", low=1, high=31),
    HyperParam("pooling", "choice", "max", "how positions are reduced to one vector", choices=POOLINGS),
    HyperParam("dropout", "float", 0.1, "dropout on each block's output", low=0.0, high=0.9),
)

register_model(
    "cnn_classifier",
    _zoo("convolutional", "build_cnn_classifier"),
    params=CNN_PARAMS,
    description="Residual 1-D convolutions over token embeddings, max- or mean-pooled",
    input_kind="tokens",
)


LATENT_PARAMS = (
    *TRANSFORMER_PARAMS,
    HyperParam("num_latents", "int", 8, "learned scratch tokens appended to the input", low=1, high=512),
)

register_model(
    "simple_transformer",
    _zoo("sequence", "build_simple_transformer"),
    params=TRANSFORMER_PARAMS,
    description="Transformer encoder that answers at learned tokens after the input (e.g. product digits)",
    input_kind="token_sequence",
)
register_model(
    "latent_transformer",
    _zoo("sequence", "build_latent_transformer"),
    params=LATENT_PARAMS,
    description="simple_transformer with learned latent tokens appended as scratch space",
    input_kind="token_sequence",
)
