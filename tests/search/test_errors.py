"""The one-line errors' helpers."""

from hpsearch.search.errors import did_you_mean


def test_did_you_mean_catches_a_name_in_the_wrong_case():
    assert did_you_mean("ot", ["HUFL", "OT"]) == " (did you mean OT?)"
    assert did_you_mean("FLOPs", ["val_loss", "flops"]) == " (did you mean flops?)"
    assert did_you_mean("epoch", ["epochs", "lr"]) == " (did you mean epochs?)"
    assert did_you_mean("zzz", ["epochs"]) == ""
