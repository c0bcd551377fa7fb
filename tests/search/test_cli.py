"""The ``hpsearch`` command end to end, in real subprocesses on a real SQLite file."""

import importlib.util
import json
import subprocess
import sys

import optuna
import pytest

from tests.search.conftest import TINY

SEED = ["--models", "tfn_classifier", "--param_sweep", "embed_dim:64,128", "kernel_type:rbf,compact"]

READ_STUDY = """
import json, sys, optuna
study = optuna.load_study(study_name=sys.argv[2], storage=sys.argv[1])
print(json.dumps([
    {"number": t.number, "state": t.state.name, "params": t.params, "value": t.value,
     "steps": sorted(t.intermediate_values), "attrs": t.user_attrs}
    for t in study.trials
]))
"""


def load_trials(db, study_name):
    """Read the study from a separate Python process, as another tool would."""
    out = subprocess.run(
        [sys.executable, "-c", READ_STUDY, f"sqlite:///{db}", study_name], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


def test_seed_command_runs_the_grid_and_resumes_without_repeating(tmp_path, run_hpsearch):
    first = run_hpsearch(*SEED, *TINY)
    assert first.returncode == 0, first.stderr
    db = tmp_path / "hpsearch.db"
    assert db.exists()
    # The command closed its database as it exited, so the file alone holds every trial (to copy, to read).
    assert not db.with_name("hpsearch.db-wal").exists() and not db.with_name("hpsearch.db-shm").exists()

    trials = load_trials(db, "tfn_classifier-synthetic_tokens")
    assert len(trials) == 4
    assert {(t["params"]["embed_dim"], t["params"]["kernel_type"]) for t in trials} == {
        (64, "rbf"), (64, "compact"), (128, "rbf"), (128, "compact")
    }
    for trial in trials:
        assert trial["state"] == "COMPLETE"
        attrs = trial["attrs"]
        assert attrs["epochs_run"] == 2
        assert trial["steps"] == [1, 2]
        assert len(attrs["lr_history"]) == 2 and all(lr > 0 for lr in attrs["lr_history"])
        assert attrs["params.count"] > 0
        assert attrs["flops.total"] > 0 and attrs["flops.forward_passes"] > 0

    # Swept values really reach the model: the four points build four different models.
    assert len({t["attrs"]["params.count"] for t in trials if t["params"]["kernel_type"] == "rbf"}) == 2
    assert len({t["value"] for t in trials}) == 4

    out = first.stdout
    assert "Epoch 01 | Train Loss:" in out and "| Val Acc:" in out and "| LR:" in out
    assert f"optuna-dashboard sqlite:///{db}" in out
    table = out[out.index("trial    state") :]
    best = min(trials, key=lambda t: t["value"])
    assert table.splitlines()[1].split()[0] == str(best["number"])  # best trial first

    again = run_hpsearch(*SEED, *TINY)
    assert again.returncode == 0, again.stderr
    assert "nothing to do" in again.stdout
    assert len(load_trials(db, "tfn_classifier-synthetic_tokens")) == 4
    quiet = run_hpsearch(*SEED, *TINY, "-q")  # -q silenced why nothing ran
    assert quiet.returncode == 0 and "every grid point has already run; nothing to do." in quiet.stdout
    # create on a finished study said "0 trials to run. Start workers with ..."
    created = run_hpsearch("create", *SEED, *TINY)
    assert created.returncode == 0, created.stderr
    assert created.stdout.splitlines()[-1] == "Study 'tfn_classifier-synthetic_tokens': every grid point has already run; nothing to do."


def test_quoted_sweep_and_two_models_in_one_study(tmp_path, run_hpsearch):
    result = run_hpsearch(
        "--models", "tfn_classifier", "transformer_classifier",
        "--param-sweep", "embed_dim:16,32 kernel_type:rbf,compact",
        "--output-dir", "out", *TINY,
    )
    assert result.returncode == 0, result.stderr
    db = tmp_path / "out" / "hpsearch.db"
    trials = load_trials(db, "tfn_classifier+transformer_classifier-synthetic_tokens")
    points = sorted((t["params"]["model"], t["params"]["embed_dim"], t["params"].get("kernel_type")) for t in trials)
    assert points == [
        ("tfn_classifier", 16, "compact"), ("tfn_classifier", 16, "rbf"),
        ("tfn_classifier", 32, "compact"), ("tfn_classifier", 32, "rbf"),
        ("transformer_classifier", 16, None), ("transformer_classifier", 32, None),
    ]
    assert all(t["state"] == "COMPLETE" for t in trials)


def test_ranges_run_tpe_for_n_trials_and_storage_flag_is_used(tmp_path, run_hpsearch):
    db = tmp_path / "custom.db"
    result = run_hpsearch(
        "--models", "tfn_classifier", "--param_sweep", "lr:1e-4..1e-2:log", "num_layers:1..2",
        "--n-trials", "3", "--storage", f"sqlite:///{db}", "--study-name", "ranges", *TINY,
    )
    assert result.returncode == 0, result.stderr
    trials = load_trials(db, "ranges")
    assert len(trials) == 3
    assert all(1e-4 <= t["params"]["lr"] <= 1e-2 and t["params"]["num_layers"] in (1, 2) for t in trials)
    assert not (tmp_path / "hpsearch.db").exists()


def test_storage_comes_from_the_environment(tmp_path, run_hpsearch):
    db = tmp_path / "from_env.db"
    result = run_hpsearch("--models", "tfn_classifier", *TINY, env={"HPSEARCH_STORAGE": f"sqlite:///{db}"})
    assert result.returncode == 0, result.stderr
    assert len(load_trials(db, "tfn_classifier-synthetic_tokens")) == 1


def test_a_different_sweep_under_the_same_study_name_is_refused(tmp_path, run_hpsearch):
    assert run_hpsearch("--models", "tfn_classifier", "--param_sweep", "embed_dim:16", *TINY).returncode == 0
    result = run_hpsearch("--models", "tfn_classifier", "--param_sweep", "embed_dim:32", *TINY)
    assert result.returncode == 2
    assert "sweep embed_dim:16 -> embed_dim:32" in result.stderr and "--study-name" in result.stderr


BAD_INPUTS = {
    "unknown model": (["--models", "tfn_classifierr"], "unknown model 'tfn_classifierr'"),
    "unknown parameter": (["--models", "tfn_classifier", "--param_sweep", "embed_dimm:64"], "did you mean embed_dim"),
    "mistyped value": (["--models", "tfn_classifier", "--param_sweep", "embed_dim:sixty"], "not a valid int"),
    "bad choice": (["--models", "tfn_classifier", "--param_sweep", "kernel_type:gauss"], "choose from"),
    "malformed sweep": (["--models", "tfn_classifier", "--param_sweep", "embed_dim=64"], "malformed sweep item"),
    "empty value list": (["--models", "tfn_classifier", "--param_sweep", "embed_dim:"], "empty value"),
    "zero epochs": (["--models", "tfn_classifier", "--epochs", "0"], "--epochs: 0 is below the minimum 1"),
    "negative epochs": (["--models", "tfn_classifier", "--epochs", "-3"], "--epochs: -3 is below the minimum 1"),
    "unwritable output dir": (["--models", "tfn_classifier", "--output-dir", "/proc/hpsearch"], "not writable"),
    "malformed storage URL": (["--models", "tfn_classifier", "--storage", "sqlite//nope"], "malformed storage URL"),
    # The password masked though the URL lacks its "://" (the assertion below: not in the line).
    "mistyped URL with a password": (["--models", "tfn_classifier", "--storage", "postgresql//u:Hunter2pw@127.0.0.1/db"],
                                     "malformed storage URL 'postgresql//u:***@127.0.0.1/db'"),
    "unknown storage scheme": (["--models", "tfn_classifier", "--storage", "mysql://u@h/db"], "unsupported storage URL"),
    "model and task disagree": (["--models", "tfn_regressor"], "gives tokens; pass a task that gives series (--task"),
    "unbuildable point": (["--models", "transformer_classifier", "--param_sweep", "embed_dim:30", "num_heads:4"], "cannot be built"),
    "grid with a range": (["--models", "tfn_classifier", "--param_sweep", "lr:1e-4..1e-2", "--sampler", "grid"], "needs value lists"),
    "unknown flag": (["--models", "tfn_classifier", "--epoch", "3"], "unrecognized arguments: --epoch 3 (did you mean --epochs?)"),
    "mistyped choice": (["--models", "tfn_classifier", "--pruner", "precentile"],
                        "argument --pruner: invalid choice: 'precentile' (did you mean percentile?); choose from auto, "),
    "no models": (["--param_sweep", "embed_dim:64"], "--models"),
    "unknown task": (["--models", "tfn_classifier", "--task", "nope"], "unknown task"),
    "unknown metric": (["--models", "tfn_classifier", "--metric", "val_f1"], "unknown metric"),
    "three-dot range": (["--models", "tfn_classifier", "--param_sweep", "lr:1e-4...1e-2"], "write a range with two dots"),
    "trailing dot": (["--models", "tfn_classifier", "--param_sweep", "lr:1e-4..1e-2."], "is not a valid float"),
    "underscore in a number": (["--models", "tfn_classifier", "--param_sweep", "lr:1_0e-3,1e-3"], "is not a valid float"),
    "number that reads as 0": (["--models", "tfn_classifier", "--param_sweep", "lr:1e-320,1e-3"], "would read as 0"),
    "unbuildably large": (["--models", "tfn_classifier", "--param_sweep", "embed_dim:9999999999"], "cannot be built"),
    "one name in two sweep flags": (["--models", "tfn_classifier", "--param-sweep", "embed_dim:16", "--param-sweep",
                                     "embed_dim:32"], "embed_dim is swept twice"),
}
if importlib.util.find_spec("cmaes") is None:  # the refusal came after the database file was made
    BAD_INPUTS["sampler not installed"] = (["--models", "tfn_classifier", "--param_sweep", "dropout:0..0.3", "--sampler", "cmaes"],
                                           "--sampler cmaes needs the cmaes package: pip install cmaes")


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, tmp_path, run_hpsearch):
    args, message = BAD_INPUTS[case]
    workdir = tmp_path / "work"
    workdir.mkdir()
    result = run_hpsearch(*TINY, *args, cwd=workdir)  # args last: they win over TINY's --epochs
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("hpsearch: error: ") and message in lines[0]
    assert "Traceback" not in result.stderr and "Hunter2pw" not in result.stdout + result.stderr
    assert list(workdir.iterdir()) == []


def test_a_misspelled_command_and_a_study_setting_given_to_a_worker_are_one_line_each(tmp_path, run_hpsearch):
    for args, message in (
        (["wroker", "--study", "s"], "unknown command 'wroker' (did you mean worker?) (see hpsearch --help)"),
        (["studys"], "unknown command 'studys' (did you mean studies?)"),
        (["worker", "--study", "s", "--artifacts", "file:///tmp/store"],
         "--artifacts is the study's: give it to hpsearch create, and every worker reads it from the study"),
        (["worker", "--study", "s", "--epochs", "3"], "--epochs is the study's: give it to hpsearch create"),
        (["worker", "--study", "s", "--max-trial", "3"], "(did you mean --max-trials?)"),
        # Not argparse's "required: --study", which said nothing of the file given.
        (["worker", "etth1.toml"], "hpsearch worker takes no study file: create the study from it (hpsearch create FILE.toml)"),
    ):
        result = run_hpsearch(*args, cwd=tmp_path)
        assert result.returncode == 2 and result.stderr.strip().splitlines() == [result.stderr.strip()], result.stderr
        assert message in result.stderr, result.stderr
    assert list(tmp_path.iterdir()) == []


def test_repeated_sweep_flags_add_up(tmp_path, run_hpsearch):
    result = run_hpsearch("--models", "tfn_classifier", "--param-sweep", "embed_dim:16,32", "--param-sweep",
                          "kernel_type:rbf,compact", *TINY, "--epochs", "1", "--dataset-size", "64")
    assert result.returncode == 0, result.stderr
    trials = load_trials(tmp_path / "hpsearch.db", "tfn_classifier-synthetic_tokens")
    assert sorted((t["params"]["embed_dim"], t["params"]["kernel_type"]) for t in trials) == [
        (16, "compact"), (16, "rbf"), (32, "compact"), (32, "rbf")]


def test_password_in_a_bad_url_is_masked(tmp_path, run_hpsearch):
    result = run_hpsearch("--models", "tfn_classifier", "--storage", "postgresql://user:hunter2@127.0.0.1:1/db", *TINY,
                          "--output-dir", "runs")
    assert result.returncode == 2
    assert "hunter2" not in result.stderr + result.stdout
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()  # exit 2 writes nothing, not even the output folder


def test_a_rerun_naming_another_artifact_store_is_refused(tmp_path, run_hpsearch):
    first, other = (f"file://{tmp_path / name}" for name in ("store", "other"))
    args = ["--models", "tfn_classifier", "--param-sweep", "embed_dim:16,32", *TINY, "--epochs", "1", "--dataset-size", "64"]
    result = run_hpsearch(*args, "--artifacts", first, "--n-trials", "1")
    assert result.returncode == 0, result.stderr
    assert f"and in {first}" in result.stdout  # the summary says where the checkpoints are kept
    for given, message in (
        (["--artifacts", other], f"keeps its checkpoints in {first}, where retries, workers and load_model look for them; "
                                 f"pass --artifacts {first} (artifacts= in Python), not {other}, or --study-name NEW"),
        ([], f"pass --artifacts {first} (artifacts= in Python) or --study-name NEW"),
    ):
        result = run_hpsearch(*args, *given)
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert message in result.stderr, result.stderr
    assert len(load_trials(tmp_path / "hpsearch.db", "tfn_classifier-synthetic_tokens")) == 1


def test_help_explains_the_grammar_and_the_subcommands(run_hpsearch):
    result = run_hpsearch("--help")
    assert result.returncode == 0
    for text in ("--param-sweep", "--param_sweep", "name:low..high", "hpsearch export", "exit codes", "143 preempted"):
        assert text in result.stdout


def test_models_lists_every_hyperparameter(run_hpsearch):
    result = run_hpsearch("models")
    assert result.returncode == 0
    for text in ("tfn_classifier", "transformer_classifier", "kernel_type", "evolution_type", "num_heads"):
        assert text in result.stdout


def test_diverging_trials_are_pruned_in_their_first_epoch_and_the_rest_complete(tmp_path, run_hpsearch):
    from hpsearch.trainers.hardware import choose_precision, resolve_device

    result = run_hpsearch("--models", "tfn_classifier", "--param_sweep", "lr:10,1e-3", "embed_dim:16,32", *TINY)
    assert result.returncode == 0, result.stderr
    trials = load_trials(tmp_path / "hpsearch.db", "tfn_classifier-synthetic_tokens")
    assert len(trials) == 4
    auto_precision = choose_precision("auto", resolve_device("auto"))
    for trial in trials:
        attrs = trial["attrs"]
        if trial["params"]["lr"] == 10:
            assert trial["state"] == "PRUNED"
            assert attrs["prune_reason"].startswith("diverged: ") and " at epoch 1 step " in attrs["prune_reason"]
            assert attrs["epochs_run"] == 0 and trial["steps"] == []
        else:
            assert trial["state"] == "COMPLETE" and "prune_reason" not in attrs
            checkpoint = tmp_path / "checkpoints" / "tfn_classifier-synthetic_tokens" / f"trial-{trial['number']}" / "last.pt"
            assert attrs["checkpoint"] == str(checkpoint) and checkpoint.exists()
        # The default, auto: fp32 where the machine's matmuls say so; else what the model's own steps measured.
        if auto_precision == "fp32":
            assert attrs["precision"] == "fp32" and "precision.speedup" not in attrs
        else:
            assert attrs["precision"] == (auto_precision if attrs["precision.speedup"] >= 1.15 else "fp32")


def test_doctor_prints_what_auto_measures_and_picks(run_hpsearch, tmp_path):
    result = run_hpsearch("doctor", "--device", "cpu", env={"HPSEARCH_CACHE_DIR": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(":", 1) for line in result.stdout.splitlines() if not line.startswith("  "))
    assert lines["auto"].split()[0] in ("fp32", "bf16")
    per_model = "nothing to time" if lines["auto"].split()[0] == "fp32" else "decides auto per model from its own steps"
    assert per_model in lines["per model"]
    assert (tmp_path / "cache" / "precision.json").exists() and lines["taken"].strip().startswith("now (")
    again = run_hpsearch("doctor", "--device", "cpu", env={"HPSEARCH_CACHE_DIR": str(tmp_path / "cache")})
    taken = dict(line.split(":", 1) for line in again.stdout.splitlines() if not line.startswith("  "))["taken"]
    assert taken.strip() == lines["taken"].strip().removeprefix("now (").split(")")[0] + ", read from the cache (--remeasure measures again)"
    assert run_hpsearch("doctor", "--device", "tpu").returncode == 2


def test_a_closed_pipe_ends_quietly(tmp_path):
    import subprocess

    from tests.search.conftest import hpsearch_command

    # The reader is gone before hpsearch writes its first line, as with `hpsearch models | head -0`.
    process = subprocess.Popen([*hpsearch_command(), "models"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    process.stdout.close()
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=60) == 141
    assert stderr == ""


def test_version(run_hpsearch):
    done = run_hpsearch("--version")
    assert done.returncode == 0 and done.stdout.startswith("hpsearch ")


def test_quiet_keeps_the_results_table_and_drops_the_trial_lines_of_every_worker(tmp_path, run_hpsearch):
    done = run_hpsearch("--models", "tfn_classifier", "--param_sweep", "embed_dim:16,32", "--workers", "2", "--quiet", *TINY)
    assert done.returncode == 0, done.stderr
    assert "trial    state" in done.stdout and done.stdout.count(" COMPLETE ") == 2
    # A local worker's own count and results hint repeat what the search prints once.
    for chatter in ("Epoch 01", "Trial 0:", "Trial 1:", "FLOPs", "Worker ", "with every worker's trials"):
        assert chatter not in done.stdout + done.stderr, chatter


@pytest.mark.parametrize(("keep", "files"), [("none", None), ("last", ["last.pt", "prev.pt"]), ("best", ["best.pt"])])
def test_checkpoints_keeps_only_what_it_names(tmp_path, run_hpsearch, keep, files):
    done = run_hpsearch("--models", "tfn_classifier", "--param_sweep", "embed_dim:16", "--checkpoints", keep, *TINY)
    assert done.returncode == 0, done.stderr
    trial = tmp_path / "checkpoints" / "tfn_classifier-synthetic_tokens" / "trial-0"
    assert (sorted(p.name for p in trial.iterdir()) if trial.exists() else None) == files


def test_a_converged_study_starts_no_more_trials(tmp_path, run_hpsearch):
    from hpsearch.search.convergence import ConvergenceStop

    search = ["--models", "tfn_classifier", "--param_sweep", "embed_dim:8..64", "--sampler", "random", "--n-trials", "12",
              "--stop-when-converged", "2", "--study-name", "conv", *TINY]
    done = run_hpsearch(*search)
    assert done.returncode == 0, done.stderr
    trials = load_trials(tmp_path / "hpsearch.db", "conv")
    complete = [t["value"] for t in sorted(trials, key=lambda t: t["number"]) if t["state"] == "COMPLETE"]
    started = sum(t["state"] != "WAITING" for t in trials)
    assert len(complete) == started < 12
    assert ConvergenceStop(2).converged(complete, "minimize") and not ConvergenceStop(2).converged(complete[:-1], "minimize")
    assert f"Converged (--stop-when-converged 2): {12 - started} trials of the budget were not run." in done.stdout
    assert "Strategy:   --sampler random --pruner percentile (--pruner auto);" in done.stdout

    again = run_hpsearch(*search)  # still converged: the re-run starts and queues nothing
    assert again.returncode == 0 and f"0 trials run now, {len(trials)} in all" in again.stdout, again.stdout
    assert "Study 'conv' converged: 2 complete trials in a row did not improve the best" in again.stdout
    assert f"Converged (--stop-when-converged 2): {12 - started} trials of the budget were not run." in again.stdout
    assert "is spent" not in again.stdout
    study = optuna.load_study(study_name="conv", storage=f"sqlite:///{tmp_path / 'hpsearch.db'}")
    assert study.user_attrs["hpsearch.converged"] == {"complete_trials": len(complete), "patience": 2,
                                                      "best_trial": study.best_trial.number, "best_value": study.best_value}


def test_allow_changes_on_a_finished_grid_says_that_nothing_trained(tmp_path, run_hpsearch):
    grid = ["--models", "tfn_classifier", "--param_sweep", "embed_dim:16", "--study-name", "g", "--quiet", *TINY]
    assert run_hpsearch(*grid).returncode == 0
    refused = run_hpsearch(*grid, "--epochs", "1")
    assert refused.returncode == 2 and "epochs 2 -> 1" in refused.stderr
    allowed = run_hpsearch(*grid, "--epochs", "1", "--allow-changes")
    assert allowed.returncode == 0, allowed.stderr
    assert "0 trials run now, 1 in all" in allowed.stdout
    assert "nothing trained with the changed settings" in allowed.stdout
    # A grown value list cannot join the study (Optuna refuses other choices for embed_dim): one line
    # before anything is written, where each new point used to end FAIL on its first suggestion.
    grown = run_hpsearch(*[a if a != "embed_dim:16" else "embed_dim:16,32" for a in grid], "--allow-changes")
    assert grown.returncode == 2 and len(grown.stderr.strip().splitlines()) == 1, grown.stderr
    assert ("searched embed_dim over [16]; an Optuna study keeps one set of choices per parameter, so --allow-changes "
            "cannot make it [16, 32]: pass --study-name NEW") in grown.stderr
    assert len(load_trials(tmp_path / "hpsearch.db", "g")) == 1


THREADS_PLUGIN = '''
import os

import torch
from torch import nn

from hpsearch.models import HyperParam, register_model


class ThreadsProbe(nn.Module):
    """Mean token embedding through a linear layer; notes torch's threads when built for a trial."""

    def __init__(self, data, width):
        super().__init__()
        with open(os.environ["THREADS_SEEN"], "a") as seen:
            seen.write(f"{torch.get_num_threads()}\\n")
        self.embed = nn.Embedding(data.vocab_size, width)
        self.head = nn.Linear(width, data.num_outputs)

    def forward(self, tokens):
        return self.head(self.embed(tokens).mean(dim=1))


register_model("threads_probe", ThreadsProbe, [HyperParam("width", "int", 8, "embedding width", low=1)], input_kind="tokens")
'''


def test_threads_sets_torchs_threads_for_the_search(tmp_path, run_hpsearch):
    import os

    if (os.cpu_count() or 1) < 2:
        pytest.skip("torch's default on one core is the 1 thread asked for")
    plugin, seen = tmp_path / "threads_probe.py", tmp_path / "seen.txt"
    plugin.write_text(THREADS_PLUGIN)
    done = run_hpsearch("--plugin", str(plugin), "--models", "threads_probe", "--param_sweep", "width:4,8", *TINY,
                        "--pruner", "none", "--threads", "1", env={"THREADS_SEEN": str(seen)})
    assert done.returncode == 0, done.stderr
    # Built once on the meta device to check it, then for each trial: in every trial torch has the 1 thread asked for.
    assert seen.read_text().split()[-2:] == ["1", "1"]
    refused = run_hpsearch("--plugin", str(plugin), "--models", "threads_probe", "--param_sweep", "width:4", *TINY,
                           "--threads", "0", env={"THREADS_SEEN": str(seen)})
    assert refused.returncode == 2 and refused.stderr.strip() == "hpsearch: error: --threads must be at least 1 (got 0)"
    # lr-find takes it too: a range test beside a running search should not take every core.
    found = run_hpsearch("lr-find", "--plugin", str(plugin), "--models", "threads_probe", "--dataset-size", "200",
                         "--num-iter", "10", "--threads", "1", env={"THREADS_SEEN": str(seen)})
    assert found.returncode in (0, 1), found.stderr  # 1: no suggestion in 10 steps, which is not what this checks
    assert seen.read_text().split()[-1] == "1"


def test_a_new_study_of_a_search_another_study_holds_says_which(tmp_path, run_hpsearch):
    """A mistyped --study-name started the search over in a new study with no word of the old one."""
    search = ["--models", "tfn_classifier", "--param_sweep", "embed_dim:8", *TINY, "--storage", f"sqlite:///{tmp_path / 'hp.db'}"]
    first = run_hpsearch(*search, "--study-name", "etth1_small")
    assert first.returncode == 0, first.stderr
    assert "New study" not in first.stdout
    typo = run_hpsearch(*search, "--study-name", "etth1_smal")
    assert typo.returncode == 0, typo.stderr
    assert ("New study 'etth1_smal'; study 'etth1_small' in this database holds the same search "
            "(--study-name etth1_small goes on with that one)") in typo.stdout.splitlines()
    other = run_hpsearch(*search, "--study-name", "longer", "--epochs", "1")  # another search: no note
    assert other.returncode == 0, other.stderr
    assert "New study" not in other.stdout
    # -q keeps it: it is a warning, not progress.
    quiet = run_hpsearch(*search, "--study-name", "etth1_sml", "-q")
    assert quiet.returncode == 0, quiet.stderr
    assert "New study 'etth1_sml'; study 'etth1_small' in this database holds the same search " in quiet.stdout


def test_create_again_with_other_worker_settings_says_the_studys_stay(tmp_path, run_hpsearch):
    """A second create with --timeout 500 said "Start workers", and workers ran the stored --timeout 5."""
    search = ["create", "--study", "c", "--storage", f"sqlite:///{tmp_path / 'hp.db'}", "--models", "tfn_classifier",
              "--param-sweep", "embed_dim:4..16", "--epochs", "1"]
    first = run_hpsearch(*search, "--timeout", "5")
    assert first.returncode == 0, first.stderr
    again = run_hpsearch(*search, "--timeout", "500", "--pruner", "median")
    assert again.returncode == 0, again.stderr
    lines = again.stdout.splitlines()
    assert lines[0].startswith("Strategy:   --sampler gp --pruner rung (--pruner auto)")  # what workers run
    assert lines[1] == ("Workers run the study's stored settings, not this command's: --pruner auto (given median), "
                        "--timeout 5.0 (given 500.0); pass --study-name NEW to run these")
    same = run_hpsearch(*search, "--timeout", "5")
    assert same.returncode == 0 and "stored settings" not in same.stdout
    unset = run_hpsearch(*search)
    assert "--timeout 5.0 (given none)" in unset.stdout
