import pytest
import torch

from hpsearch.trainers.tasks import build_task, get_task, list_tasks


def test_tasks_are_registered_with_their_options():
    names = [t.name for t in list_tasks()]
    assert {"synthetic_tokens", "synthetic_parity"} <= set(names)
    assert {o.name for o in get_task("synthetic_tokens").options} >= {"dataset_size", "seq_len", "vocab_size", "num_classes"}


@pytest.mark.parametrize("name", ["synthetic_tokens", "synthetic_parity"])
def test_sizes_follow_the_options_and_data_is_seeded(name):
    task = build_task(name, {"dataset_size": 500, "seq_len": 12, "vocab_size": 20, "num_classes": 5})
    x_train, y_train = task.train
    x_val, y_val = task.val
    assert len(x_train) + len(x_val) == 500 and len(x_val) == 100
    assert x_train.shape[1] == 12 and int(x_train.max()) < 20
    assert set(y_train.unique().tolist()) <= set(range(5))
    assert task.data.vocab_size == 20 and task.data.num_outputs == 5 and task.data.seq_len == 12
    again = build_task(name, {"dataset_size": 500, "seq_len": 12, "vocab_size": 20, "num_classes": 5})
    assert torch.equal(again.train[0], x_train) and torch.equal(again.val[1], y_val)
    other = build_task(name, {"dataset_size": 500, "seq_len": 12, "vocab_size": 20, "num_classes": 5, "data_seed": 1})
    assert not torch.equal(other.train[0], x_train)


def test_synthetic_tokens_label_is_the_majority_bucket_of_the_first_half():
    task = build_task("synthetic_tokens", {"dataset_size": 300, "seq_len": 16, "num_classes": 4})
    x, y = task.train
    for tokens, label in zip(x[:50], y[:50]):
        counts = torch.bincount(tokens[:8] % 4, minlength=4)
        assert counts[label] == counts.max()


def test_synthetic_tokens_labels_are_balanced_and_second_half_misleads():
    task = build_task("synthetic_tokens", {"dataset_size": 4000})
    x, y = task.train
    share = torch.bincount(y, minlength=4).float() / len(y)
    assert share.min() > 0.2
    second_half_majority = torch.stack([torch.bincount(t[16:] % 4, minlength=4).argmax() for t in x[:400]])
    # The second half is enriched in another bucket, so it rarely agrees with the label.
    assert (second_half_majority == y[:400]).float().mean() < 0.1


def test_synthetic_parity_is_sum_mod_classes():
    task = build_task("synthetic_parity", {"dataset_size": 100, "num_classes": 3})
    x, y = task.train
    assert torch.equal(y, x.sum(dim=1) % 3)


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="dataset_size"):
        build_task("synthetic_tokens", {"dataset_size": 1})
    with pytest.raises(ValueError, match="no option"):
        build_task("synthetic_tokens", {"window": 3})
    with pytest.raises(ValueError, match="vocab_size"):
        build_task("synthetic_tokens", {"vocab_size": 3, "num_classes": 4})
    with pytest.raises(KeyError, match="unknown task"):
        get_task("nope")


def test_built_in_tasks_have_no_step_hyperparameters():
    # search.spec.resolve checks a built-in task's sweep before building the task, without them.
    from hpsearch.models.registry import LazyBuilder
    from tests.trainers.test_timeseries import ETTH1

    small = {"csv_timeseries": {"data": str(ETTH1), "window": 8, "horizon": 2}}
    built_in = [spec.name for spec in list_tasks() if isinstance(spec.build, LazyBuilder)]
    assert len(built_in) == 4
    for name in built_in:
        assert build_task(name, small.get(name, {"dataset_size": 20})).step_params == (), name


def test_built_in_declarations_match_their_builders():
    # The declarations live apart from the code (trainers.task_registry imports no torch).
    import importlib
    import inspect

    from hpsearch.models.registry import LazyBuilder

    for spec in list_tasks():
        if not isinstance(spec.build, LazyBuilder):
            continue
        function = getattr(importlib.import_module(spec.build.module), spec.build.function)
        assert list(inspect.signature(function).parameters) == [o.name for o in spec.options], spec.name
        assert spec.description == function.__doc__.splitlines()[0], spec.name
