"""A study's stored search and the refusals to resume it with another, on a real SQLite file (nothing is trained)."""

from __future__ import annotations

import pytest

from hpsearch.search.errors import UsageError
from hpsearch.search.orchestrator import Orchestrator
from hpsearch.search.resolved import resolve
from hpsearch.search.spec import StudySpec


def opened(tmp_path, **options) -> None:
    spec = StudySpec(models=("tfn_classifier",), sweep=("embed_dim:16,32",), task_options={"dataset_size": 100},
                     study_name="scored", output_dir=str(tmp_path), **options)
    orchestrator = Orchestrator(resolve(spec), echo=lambda line: None, progress=False)
    try:
        orchestrator.open()
    finally:
        if orchestrator.database is not None:
            orchestrator.database.close()


@pytest.mark.parametrize(
    ("changed", "now"),
    [
        ({"metric": "val_acc"}, "val_acc (maximize)"),
        ({"direction": "maximize"}, "val_loss (maximize)"),
        ({"objectives": ("val_loss", "flops")}, "val_loss (minimize), flops (minimize)"),
    ],
)
def test_other_objectives_are_refused_even_with_allow_changes(tmp_path, changed, now):
    # A new user's --allow-changes with metric val_acc -> val_loss ranked a loss among the accuracies as the best trial.
    opened(tmp_path)
    with pytest.raises(UsageError) as refused:
        opened(tmp_path, allow_changes=True, **changed)
    assert str(refused.value) == (f"study 'scored' scores its trials by val_loss (minimize), not {now}: their values "
                                  "would not compare, even with --allow-changes; pass --study-name NEW (study_name= in "
                                  "Python) for a new study")


def test_the_same_objective_written_out_is_no_change(tmp_path):
    opened(tmp_path)
    opened(tmp_path, direction="minimize")  # val_loss's own direction, now written: no refusal, no --allow-changes
