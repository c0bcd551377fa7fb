"""The model zoo and its registry."""

# The zoo's modules register their models when the registry is first used (see
# ``registry._MODELS``): importing this package does not import torch.
from hpsearch.models.registry import DataSpec, ModelSpec, build_model, get_model, list_models, register_model
from hpsearch.models.schema import HyperParam, ValueRefused

__all__ = ["DataSpec", "HyperParam", "ModelSpec", "ValueRefused", "build_model", "get_model", "list_models", "register_model"]
