"""The study user attributes hpsearch writes, each key named once.

Readers outside a search (tables, export, report, replay) read them as well as the search that
writes them, so they live here, below both.
"""

# The StudySpec as JSON (``StudySpec.to_json``): what a re-run and every worker compare with.
SPEC_ATTR = "hpsearch.spec"
# Which code registered each model when the study began: a re-run with another model of the same name is a change.
MODELS_ATTR = "hpsearch.models"
# A hash of each user model's and task's code (``plugins.code_identity``): an edit in place is a change.
CODE_ATTR = "hpsearch.code"
# The metric the single objective is (``--metric``), named in tables and reports.
METRIC_ATTR = "hpsearch.metric"
# Set when ``--stop-when-converged`` ended the study: the complete trials and the patience.
CONVERGED_ATTR = "hpsearch.converged"
# A simulated study's benchmark, instance, sampler, pruner, seed and workers.
SIMULATED_ATTR = "hpsearch.simulated"
