"""What a study stores about its search, and the refusal to resume it with another one.

A study created by ``hpsearch`` holds its spec, its models' origins, a hash of their code, its
metric and a uid (``storage/attributes.py``). Opening it again compares the search asked for
with the stored one: a study is one search, so its trials compare.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable

import optuna

from hpsearch.models.registry import model_origin
from hpsearch.search.errors import UsageError
from hpsearch.search.resolved import ResolvedSpec
from hpsearch.search.spec import StudySpec
from hpsearch.storage.attributes import CODE_ATTR, METRIC_ATTR, MODELS_ATTR, SPEC_ATTR, TRAIN_ATTR, UID_ATTR


class StudyChanged(UsageError):
    """A study resumed with other settings, models or code than it was run with (``changes`` says which)."""

    def __init__(self, study_name: str, changes: list[str]) -> None:
        super().__init__(
            f"study {study_name!r} was run with other settings ({'; '.join(changes)}), so its trials would not "
            "compare with new ones; pass --study-name NEW (study_name= in Python) for a new study, "
            "or --allow-changes (allow_changes=True) to add trials to it anyway (new grid points, or the trials a "
            "larger --n-trials adds: it counts the trials already run)"
        )
        self.study_name, self.changes = study_name, changes


def load_spec(study: optuna.Study) -> StudySpec:
    """The search specification stored with a study by ``hpsearch`` or ``hpsearch create``."""
    stored = study.user_attrs.get(SPEC_ATTR)
    if stored is None:
        raise UsageError(f"study {study.study_name!r} was not created by hpsearch; create it with hpsearch create")
    return StudySpec.from_json(stored)


def claim_study(study: optuna.Study, storage: optuna.storages.BaseStorage, resolved: ResolvedSpec,
                warn: Callable[[str], None]) -> None:
    """Store the search with a new study (in ``storage``); refuse to resume one that holds another search.

    A new study that holds the same search as another study of the database is ``warn``ed of:
    a mistyped or forgotten ``--study-name`` would start over unnoticed.
    """
    spec = resolved.spec
    if UID_ATTR not in study.user_attrs:  # a study stored before hpsearch drew uids gets one when next opened
        study.set_user_attr(UID_ATTR, uuid.uuid4().hex)
    stored = study.user_attrs.get(SPEC_ATTR)
    if stored is None:
        study.set_user_attr(SPEC_ATTR, spec.to_json())
        study.set_user_attr(MODELS_ATTR, {name: model_origin(name) for name in spec.models})
        study.set_user_attr(CODE_ATTR, resolved.code)
        study.set_user_attr(METRIC_ATTR, spec.metric)
        left_out = {param.name for param in resolved.sweep.params} | {"checkpoint_dir"}  # a trial's own folder
        study.set_user_attr(TRAIN_ATTR, {name: value for name, value in dataclasses.asdict(resolved.train_config).items()
                                         if name not in left_out})
        if resolved.multi_objective:
            # Only here: on a single objective, metric names would rename trials_dataframe()'s
            # familiar ``value`` column.
            study.set_metric_names([goal.name for goal in resolved.goals])
        twin = _same_search_as(study, storage, spec)
        if twin is not None:
            warn(f"New study {study.study_name!r}; study {twin!r} in this database holds the same search "
                 f"(--study-name {twin} goes on with that one)")
        return
    previous = StudySpec.from_json(stored)
    for refusal in (spec.store_refusal(previous), _objectives_refusal(study, previous, resolved)):
        if refusal is not None:
            raise UsageError(refusal)
    changes = spec.changes_from(previous)
    origins = {name: model_origin(name) for name in spec.models}
    stored_origins = study.user_attrs.get(MODELS_ATTR, origins)
    changes += [f"model {n} now registered by {origins[n]} (was {stored_origins[n]})"
                for n in origins if n in stored_origins and stored_origins[n] != origins[n]]
    # A study begun before hpsearch hashed code has nothing to compare with.
    stored_code = study.user_attrs.get(CODE_ATTR, resolved.code)
    changes += [f"{name}'s code differs from the study's (edited, or another file of that name)"
                for name, digest in resolved.code.items() if name in stored_code and stored_code[name] != digest]
    if changes and not spec.allow_changes:
        raise StudyChanged(spec.name, changes)
    if changes:
        clash = _choices_clash(study, resolved)
        if clash is not None:
            raise UsageError(clash)
    if spec.n_trials is not None and spec.n_trials != previous.n_trials:
        # A re-run's budget is the study's from now on: the dashboard's spec and the workers' top-up read it.
        study.set_user_attr(SPEC_ATTR, dataclasses.replace(previous, n_trials=spec.n_trials).to_json())


def _objectives_refusal(study: optuna.Study, previous: StudySpec, resolved: ResolvedSpec) -> str | None:
    """Why the study cannot be scored by other objectives, even with ``--allow-changes``; else None.

    Optuna ranks every trial of a study in its one direction: a trial scored by ``val_loss`` in a
    study of ``val_acc`` would stand among the accuracies as one, and might become the best trial.
    """
    def scored(names: list[str], directions: list[str]) -> str:
        return ", ".join(f"{name} ({direction})" for name, direction in zip(names, directions))

    def names(spec: StudySpec) -> list[str]:
        return [item.partition(":")[0] for item in spec.objectives] or [spec.metric]

    was = scored(names(previous), [d.name.lower() for d in study.directions])
    now = scored(names(resolved.spec), resolved.directions)
    if was == now:
        return None
    return (f"study {resolved.spec.name!r} scores its trials by {was}, not {now}: their values would not compare, even "
            "with --allow-changes; pass --study-name NEW (study_name= in Python) for a new study")


def _same_search_as(study: optuna.Study, storage: optuna.storages.BaseStorage, spec: StudySpec) -> str | None:
    """Another study in ``study``'s database that holds this very search (no setting changed), if any."""
    for other in optuna.get_all_study_summaries(storage, include_best_trial=False):
        stored = other.user_attrs.get(SPEC_ATTR)
        if other.study_name == study.study_name or stored is None:
            continue
        try:
            previous = StudySpec.from_json(stored)
        except (TypeError, ValueError):  # a study stored by another version: no twin of this one
            continue
        if not spec.changes_from(previous):
            return other.study_name
    return None


def _choices_clash(study: optuna.Study, resolved: ResolvedSpec) -> str | None:
    """Why the changed sweep cannot run in ``study`` at all, even with ``--allow-changes``; else None.

    Optuna keeps one distribution per parameter in a study and refuses a value list that
    differs from the stored one (every new trial would fail on its first suggestion).
    """
    wanted = resolved.sweep.distributions()
    stored: dict[str, optuna.distributions.BaseDistribution] = {}
    for trial in study.get_trials(deepcopy=False):
        stored |= {name: d for name, d in trial.distributions.items() if name in wanted and name not in stored}
    for name, distribution in wanted.items():
        if name not in stored:
            continue
        try:
            optuna.distributions.check_distribution_compatibility(stored[name], distribution)
        except ValueError:
            was = getattr(stored[name], "choices", None)
            return (f"study {resolved.spec.name!r} searched {name} over {list(was) if was is not None else stored[name]}; "
                    f"an Optuna study keeps one set of choices per parameter, so --allow-changes cannot make it "
                    f"{list(getattr(distribution, 'choices', ())) or distribution}: pass --study-name NEW for a new study")
    return None
