import pytest

from hpsearch.models import get_model
from hpsearch.search.errors import UsageError
from hpsearch.search.sweep import parse_sweep

TFN = get_model("tfn_classifier")
TRANSFORMER = get_model("transformer_classifier")


def test_separate_arguments_and_one_quoted_string_parse_alike():
    separate = parse_sweep(["embed_dim:64,128", "kernel_type:rbf,compact"], [TFN])
    quoted = parse_sweep(["embed_dim:64,128 kernel_type:rbf,compact"], [TFN])
    assert separate == quoted
    assert [(p.name, p.values) for p in separate.params] == [("embed_dim", (64, 128)), ("kernel_type", ("rbf", "compact"))]


def test_values_are_typed_by_the_schema():
    sweep = parse_sweep(["dropout:0,0.25", "lr:1e-3,3e-3", "batch_size:32,64", "num_layers:1,3"], [TFN])
    values = {p.name: p.values for p in sweep.params}
    assert values == {"dropout": (0.0, 0.25), "lr": (1e-3, 3e-3), "batch_size": (32, 64), "num_layers": (1, 3)}
    assert all(type(v) is int for v in values["batch_size"]) and all(type(v) is float for v in values["dropout"])


def test_ranges_switch_off_the_grid():
    sweep = parse_sweep(["lr:1e-4..1e-2:log", "num_layers:1..4", "dropout:0..0.3"], [TFN])
    lr, layers, dropout = sweep.params
    assert (lr.low, lr.high, lr.log, lr.kind) == (1e-4, 1e-2, True, "float")
    assert (layers.low, layers.high, layers.kind) == (1, 4, "int")
    assert (dropout.low, dropout.high, dropout.log) == (0.0, 0.3, False)
    assert not sweep.is_grid
    assert parse_sweep(["embed_dim:32,64"], [TFN]).is_grid


def test_grid_points_are_the_full_product():
    sweep = parse_sweep(["embed_dim:64,128", "kernel_type:rbf,compact"], [TFN])
    assert sweep.grid_points() == [
        {"model": "tfn_classifier", "embed_dim": 64, "kernel_type": "rbf"},
        {"model": "tfn_classifier", "embed_dim": 64, "kernel_type": "compact"},
        {"model": "tfn_classifier", "embed_dim": 128, "kernel_type": "rbf"},
        {"model": "tfn_classifier", "embed_dim": 128, "kernel_type": "compact"},
    ]


def test_each_parameter_goes_to_the_models_that_have_it():
    sweep = parse_sweep(["embed_dim:32,64", "kernel_type:rbf,compact", "num_heads:2,4", "lr:1e-3"], [TFN, TRANSFORMER])
    by_name = {p.name: p for p in sweep.params}
    assert by_name["embed_dim"].models == ("tfn_classifier", "transformer_classifier")
    assert by_name["kernel_type"].models == ("tfn_classifier",)
    assert by_name["num_heads"].models == ("transformer_classifier",)
    assert by_name["lr"].is_trainer_setting
    points = sweep.grid_points()
    assert len(points) == 2 * 2 + 2 * 2
    assert all("num_heads" not in p for p in points if p["model"] == "tfn_classifier")
    assert all("kernel_type" not in p for p in points if p["model"] == "transformer_classifier")
    assert all(p["lr"] == 1e-3 for p in points)


@pytest.mark.parametrize(
    "item, message",
    [
        ("embed_dim", "malformed sweep item"),
        (":1,2", "malformed sweep item"),
        ("embed_dim:", "empty value"),
        ("embed_dim:64,,128", "empty value"),
        ("embed_dimm:64", "did you mean embed_dim"),
        ("num_heads:2,4", "unknown hyperparameter 'num_heads'"),
        ("embed_dim:64.5", "'64.5' is not a whole number"),
        ("embed_dim:16..64,lr:1e-3..1e-2", r"holds 2 items: separate them with spaces, not commas \(embed_dim:16..64 lr:1e-3..1e-2\)"),
        ("embed_dim:64,128,kernel_type:rbf", r"separate them with spaces, not commas \(embed_dim:64,128 kernel_type:rbf\)"),
        ("kernel_type:gauss", "choose from rbf, compact, fourier"),
        ("dropout:2.0", "above the maximum"),
        ("lr:1e-2..1e-4", "low end must be below"),
        ("lr:0..1e-2:log", "log range must start above 0"),
        ("lr:1e-4..1e-2:ln", "only range option"),
        ("kernel_type:rbf..compact", r"a range needs numbers, and kernel_type takes one of rbf, compact, fourier; list the values instead: kernel_type:rbf,compact"),
        ("lr:..1", "both ends"),
        ("model:a", "--models"),
    ],
)
def test_bad_items_say_what_to_fix(item, message):
    with pytest.raises(UsageError, match=message):
        parse_sweep([item], [TFN])


def test_a_name_swept_twice_is_an_error():
    with pytest.raises(UsageError, match="swept twice"):
        parse_sweep(["embed_dim:64", "embed_dim:128"], [TFN])


def test_grid_points_are_decoded_from_their_index_and_found_again():
    from hpsearch.search.sweep import Sweep, SweepParam

    sweep = Sweep(("a", "b"), (SweepParam("x", "int", ("a",), values=(1, 2, 3)), SweepParam("lr", "float", (), values=(0.1, 0.2)),
                               SweepParam("z", "int", ("b",), values=(7, 8, 9, 10))))
    points = sweep.grid_points()
    assert sweep.grid_size == len(points) == 14
    assert [sweep.grid_point(i) for i in range(sweep.grid_size)] == points
    assert [sweep.grid_index(p) for p in points] == list(range(14))
    assert sweep.grid_index({"model": "a", "x": 4, "lr": 0.1}) is None and sweep.first_point("b") == points[6]


def test_the_seeded_order_is_the_old_shuffle_and_a_permutation_past_it(monkeypatch):
    import random

    from hpsearch.search import sweep as sweep_module

    shuffled = list(range(1000))
    random.Random(7).shuffle(shuffled)
    assert list(sweep_module.SeededOrder(1000, 7)) == shuffled  # small grids keep the order they always had
    monkeypatch.setattr(sweep_module, "SHUFFLED_UP_TO", 100)
    for size in (101, 1024, 1025, 5000):
        order = sweep_module.SeededOrder(size, 7)
        assert sorted(order[k] for k in range(size)) == list(range(size))  # each index once
    assert [order[k] for k in range(20)] != list(range(20))
    assert [order[k] for k in range(20)] != [sweep_module.SeededOrder(5000, 8)[k] for k in range(20)]
