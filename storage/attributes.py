"""The study and trial user attributes hpsearch writes, each key named once.

Readers outside a search (tables, export, report, replay) read them as well as the search that
writes them, so they live here, below both.
"""

# The StudySpec as JSON (``StudySpec.to_json``): what a re-run and every worker compare with.
SPEC_ATTR = "hpsearch.spec"
# A random id drawn when the study was stored: which study of a name wrote a checkpoint folder
# (search/checkpoint_owner.py), as two databases may each hold a study of one name.
UID_ATTR = "hpsearch.uid"
# Which code registered each model when the study began: a re-run with another model of the same name is a change.
MODELS_ATTR = "hpsearch.models"
# A hash of each user model's and task's code (``plugins.code_identity``): an edit in place is a change.
CODE_ATTR = "hpsearch.code"
# Every trainer setting the study's trials run with, defaults included, as the study was created (a
# swept setting is each trial's parameter instead): what a default such as SGD's momentum was.
TRAIN_ATTR = "hpsearch.train"
# The metric the single objective is (``--metric``), named in tables and reports.
METRIC_ATTR = "hpsearch.metric"
# Set when ``--stop-when-converged`` ended the study: the complete trials and the patience.
CONVERGED_ATTR = "hpsearch.converged"
# A simulated study's benchmark, instance, sampler, pruner, seed and workers.
SIMULATED_ATTR = "hpsearch.simulated"
# ``--pruner halving``'s complete rungs: {epoch: {"went_on": [trial numbers], "stopped": [...]}}, each point
# named by its trial that reached the rung (a trial's own prune_reason cannot be told after it ended).
HALVING_ATTR = "hpsearch.halving"

# --- Trial user attributes: what every reader of a trial may look up (README: Where results go). ---
# A simulated trial's training time by the benchmark's clock (``hpsearch simulate``).
SIMULATED_SECONDS_ATTR = "simulated.seconds"
# Why a FAIL trial failed: an error, a signal, an abandoned heartbeat.
FAIL_REASON_ATTR = "fail_reason"
# Why a PRUNED trial was pruned: the pruner's verdict, divergence, or a budget.
PRUNE_REASON_ATTR = "prune_reason"
# A multi-objective trial's objectives when the pareto pruner stopped it, its time carried on at its own
# pace to the last epoch: what the samplers learn from it, as Optuna keeps no values for it.
PRUNED_VALUES_ATTR = "pruned_values"
# The numbers of the trials a queued retry takes over (it resumes from their checkpoints).
RETRY_OF_ATTR = "retry_of"
# The last checkpoint the trial wrote; best.pt lies beside it.
CHECKPOINT_ATTR = "checkpoint"
# Where the trial's last.pt and best.pt are in the artifact store (--artifacts), as a URL of their folder.
ARTIFACTS_ATTR = "artifacts"
# Epochs the trial reported, and the LR of each.
EPOCHS_RUN_ATTR = "epochs_run"
LR_HISTORY_ATTR = "lr_history"
# The model's parameter count, a cost objective and a table column.
PARAMS_COUNT_ATTR = "params.count"
# The precision the trial trained in, and the process that ran it (host:pid:device).
PRECISION_ATTR = "precision"
# fp32's step time over the lower precision's, where --precision auto timed the model's own steps.
PRECISION_SPEEDUP_ATTR = "precision.speedup"
WORKER_ATTR = "worker"
# The LR range test's suggestion, kept so a retry of the trial does not run the test again.
LR_SUGGESTED_ATTR = "lr_finder.suggested"
# Why a trial with lr "auto" trained with the default LR: the range test suggested none.
LR_FALLBACK_ATTR = "lr_finder.fallback"
