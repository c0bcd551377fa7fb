"""The model zoo and its registry."""

from hpsearch.models.registry import DataSpec, ModelSpec, build_model, get_model, list_models, register_model
from hpsearch.models.schema import HyperParam

# Importing the zoo registers its models; the registry above must exist first.
from hpsearch.models import tfn as _tfn  # noqa: E402,F401  isort: skip
from hpsearch.models import transformer as _transformer  # noqa: E402,F401  isort: skip
from hpsearch.models import tfn_regressor as _tfn_regressor  # noqa: E402,F401  isort: skip
from hpsearch.models import recurrent as _recurrent  # noqa: E402,F401  isort: skip
from hpsearch.models import convolutional as _convolutional  # noqa: E402,F401  isort: skip
from hpsearch.models import sequence as _sequence  # noqa: E402,F401  isort: skip

__all__ = ["DataSpec", "HyperParam", "ModelSpec", "build_model", "get_model", "list_models", "register_model"]
