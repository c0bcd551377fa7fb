"""The results table's layout: exactly what pandas' ``to_string(index=False)`` printed before."""

import random

import pandas as pd
import pytest

from hpsearch.search.results import aligned_table


@pytest.mark.parametrize("seed", range(20))
def test_aligned_text_is_pandas_to_string_without_the_index(seed):
    rng = random.Random(seed)
    cells = ["-", "", "COMPLETE", "PRUNED", "0.001", "1.39902", "tfn_classifier", "12345678", "*", "3.2", "compact"]
    columns = [rng.choice(["trial", "state", "lr", "embed_dim", "val_loss", "epochs", "seconds", "pareto", "x"])
               + str(i) * rng.randint(0, 1) for i in range(rng.randint(1, 6))]
    columns = list(dict.fromkeys(columns))
    rows = [[rng.choice(cells) for _ in columns] for _ in range(rng.randint(1, 8))]
    assert aligned_table(columns, rows) == pd.DataFrame(rows, columns=columns).to_string(index=False)


def test_a_simulated_trial_shows_its_simulated_seconds_not_the_wall_time():
    import optuna

    from hpsearch.search.results import format_results_table

    study = optuna.create_study()
    study.add_trial(optuna.trial.create_trial(value=0.5, user_attrs={"simulated.seconds": 1234.5, "epochs_run": 52}))
    study.add_trial(optuna.trial.create_trial(value=0.7))
    lines = format_results_table(study).splitlines()
    assert lines[1].split()[-1] == "1234.5"  # the best trial first
    assert lines[2].split()[-1] == "0.0"  # a real trial's wall time (created complete: none elapsed)
