"""The registry's lookups and the name suggestions every one-line error shares."""

import pytest

from hpsearch.models import get_model
from hpsearch.models.registry import did_you_mean


def test_did_you_mean_catches_a_name_in_the_wrong_case():
    assert did_you_mean("ot", ["HUFL", "OT"]) == " (did you mean OT?)"
    assert did_you_mean("FLOPs", ["val_loss", "flops"]) == " (did you mean flops?)"
    assert did_you_mean("epoch", ["epochs", "lr"]) == " (did you mean epochs?)"
    assert did_you_mean("zzz", ["epochs"]) == ""


def test_an_unknown_model_is_named_with_the_closest_known_one():
    with pytest.raises(KeyError, match=r"unknown model 'tfn_clasifier' \(did you mean tfn_classifier\?\); known models: "):
        get_model("tfn_clasifier")
