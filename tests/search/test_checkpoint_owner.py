"""A checkpoint folder belongs to one study: a study of the same name from another database is refused it."""

import json
import shutil

import optuna
import pytest

from hpsearch.search import load_model
from hpsearch.search.checkpoint_owner import OWNER_FILE
from hpsearch.search.errors import UsageError
from hpsearch.storage.attributes import UID_ATTR

from .conftest import TINY

SEARCH = ["--models", "tfn_classifier", "--param_sweep", "embed_dim:16", "--study-name", "s", *TINY]


def test_a_study_of_the_same_name_in_another_database_is_refused_the_folder(tmp_path, run_hpsearch):
    a, b = f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
    first = run_hpsearch(*SEARCH, "--storage", "sqlite:///a.db")
    assert first.returncode == 0, first.stderr
    folder = tmp_path / "checkpoints" / "s"
    owner = json.loads((folder / OWNER_FILE).read_text())
    assert owner == {"study": "s", "uid": optuna.load_study(study_name="s", storage=a).user_attrs[UID_ATTR],
                     "storage": a}
    best = (folder / "trial-0" / "best.pt").read_bytes()

    # It overwrote the first study's checkpoints, and load_model gave the other study's weights.
    second = run_hpsearch(*SEARCH, "--storage", "sqlite:///b.db")
    assert second.returncode == 2
    assert second.stderr == (f"hpsearch: error: {folder} holds the checkpoints of another study named 's', in "
                             f"{a}: pass --output-dir DIR (output_dir= in Python) for this one, "
                             "or --study-name NEW (study_name=), or delete that folder if its study is gone\n")
    assert (folder / "trial-0" / "best.pt").read_bytes() == best
    assert not (tmp_path / "b.db").exists()  # refused before anything was stored, the database file too

    elsewhere = run_hpsearch(*SEARCH, "--storage", "sqlite:///b.db", "--output-dir", "b")
    assert elsewhere.returncode == 0, elsewhere.stderr
    assert (folder / "trial-0" / "best.pt").read_bytes() == best
    # A database that exists is refused the folder too, from what it holds, and stores nothing.
    again = run_hpsearch(*SEARCH, "--storage", "sqlite:///b.db")
    assert again.returncode == 2 and "holds the checkpoints of another study named 's'" in again.stderr
    assert optuna.get_all_study_names(b) == ["s"] and len(optuna.load_study(study_name="s", storage=b).trials) == 1


def test_a_study_deleted_and_begun_again_takes_its_folder_over(tmp_path, run_hpsearch):
    a = f"sqlite:///{tmp_path / 'a.db'}"
    assert run_hpsearch(*SEARCH, "--storage", "sqlite:///a.db").returncode == 0
    optuna.delete_study(study_name="s", storage=a)
    again = run_hpsearch(*SEARCH, "--storage", "sqlite:///a.db")
    assert again.returncode == 0, again.stderr
    assert "Study 's' began anew in sqlite:///" in again.stdout
    uid = optuna.load_study(study_name="s", storage=a).user_attrs[UID_ATTR]
    assert json.loads((tmp_path / "checkpoints" / "s" / OWNER_FILE).read_text())["uid"] == uid
    assert load_model(a, "s") is not None


def test_a_copied_studys_folder_is_not_taken_over_by_a_new_study_of_the_old_name(tmp_path, run_hpsearch):
    # A rename the Optuna way: copy_study, then delete_study; the copy's trials still point into "s"'s folder.
    a = f"sqlite:///{tmp_path / 'a.db'}"
    assert run_hpsearch(*SEARCH, "--storage", "sqlite:///a.db").returncode == 0
    optuna.copy_study(from_study_name="s", from_storage=a, to_storage=a, to_study_name="s-v1")
    optuna.delete_study(study_name="s", storage=a)
    again = run_hpsearch(*SEARCH, "--storage", "sqlite:///a.db")
    assert again.returncode == 2
    assert again.stderr == (f"hpsearch: error: {tmp_path / 'checkpoints' / 's'} holds the checkpoints of study 's-v1' of "
                            "this database (a copy of the study once named 's'): pass --output-dir DIR (output_dir= in "
                            "Python) for this one, or --study-name NEW (study_name=)\n")
    assert load_model(a, "s-v1") is not None


def test_load_model_refuses_weights_another_study_wrote_over(tmp_path, run_hpsearch):
    # What an hpsearch that kept no owner left: another database's study "s" wrote into this folder.
    assert run_hpsearch(*SEARCH, "--storage", "sqlite:///a.db").returncode == 0
    marker = tmp_path / "checkpoints" / "s" / OWNER_FILE
    marker.write_text(json.dumps({"study": "s", "uid": "0" * 32, "storage": "sqlite:////elsewhere/b.db"}))
    with pytest.raises(UsageError, match=r"^the checkpoints of study 's' were overwritten: .*checkpoints/s now holds "
                                         r"those of study 's' \(in sqlite:////elsewhere/b.db\)$"):
        load_model(f"sqlite:///{tmp_path / 'a.db'}", "s")


def test_a_study_of_the_same_name_in_another_database_is_refused_the_artifact_stores_folder(tmp_path, run_hpsearch):
    # Each machine has its own output directory; what they share is the store, where the keys are the study's name.
    store = f"file://{tmp_path / 'store'}"
    first = run_hpsearch(*SEARCH, "--storage", "sqlite:///a.db", "--output-dir", "one", "--artifacts", store)
    assert first.returncode == 0, first.stderr
    owner = json.loads((tmp_path / "store" / "s" / OWNER_FILE).read_text())
    assert owner["storage"] == f"sqlite:///{tmp_path / 'a.db'}"
    best = (tmp_path / "store" / "s" / "trial-0" / "best.pt").read_bytes()

    second = run_hpsearch(*SEARCH, "--storage", "sqlite:///b.db", "--output-dir", "two", "--artifacts", store)
    assert second.returncode == 2
    assert second.stderr == (f"hpsearch: error: {store}/s holds the checkpoints of another study named 's', in "
                             f"sqlite:///{tmp_path / 'a.db'}: pass --artifacts URL (artifacts= in Python) for this one, "
                             "or --study-name NEW (study_name=), or delete that folder if its study is gone\n")
    assert (tmp_path / "store" / "s" / "trial-0" / "best.pt").read_bytes() == best
    # The same study from another machine's folder is its own: a worker there goes on.
    again = run_hpsearch(*SEARCH, "--storage", "sqlite:///a.db", "--output-dir", "three", "--artifacts", store)
    assert again.returncode == 0, again.stderr

    # Weights another study wrote over in the store (an hpsearch that kept no owner) are refused, not loaded.
    a = f"sqlite:///{tmp_path / 'a.db'}"
    (tmp_path / "store" / "s" / OWNER_FILE).write_text(json.dumps({"study": "s", "uid": "0" * 32, "storage": "x"}))
    for folder in ("one", "three"):  # no local copy: load_model fetches from the store
        shutil.rmtree(tmp_path / folder)
    with pytest.raises(UsageError, match=rf"^the checkpoints of study 's' were overwritten: {store}/s now holds those of "
                                         r"study 's' \(in x\)$"):
        load_model(a, "s")
