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
