"""``search()``'s keywords: the study options and trainer settings among them, and where a misplaced one belongs."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, get_type_hints

from hpsearch.models import ModelSpec, get_model
from hpsearch.search.errors import UsageError, did_you_mean
from hpsearch.search.spec import STUDY_OPTIONS, StudySpec
from hpsearch.search.study_file import conform
from hpsearch.trainers.config import FLAG_SETTINGS, TrainConfig
from hpsearch.trainers.tasks import Task, TaskSpec, get_task

SETTING_NAMES = frozenset(p.name for p in FLAG_SETTINGS)
OPTION_NAMES = tuple(option.name for option in STUDY_OPTIONS)


def misplaced_keyword(name: str, models: Sequence[str | ModelSpec], task: str | Task | TaskSpec | None) -> str:
    """Where keyword ``name`` belongs if it is a task option or a model's hyperparameter (``; ...``); else nothing."""
    try:
        options = task.options if isinstance(task, TaskSpec) else get_task(task).options if isinstance(task, str) else ()
    except KeyError:  # an unknown task is named once the keywords are read
        options = ()
    if any(option.name == name for option in options):
        return f"; {name} is an option of the task: pass task_options={{{name!r}: ...}}"
    for model in models:
        try:
            spec = model if isinstance(model, ModelSpec) else get_model(model)
        except KeyError:
            continue
        if spec.param(name) is not None:
            return f"; {name} is a hyperparameter of model {spec.name}: sweep it, sweep={{{name!r}: [...]}}"
    return ""


def split_search_keywords(
    options: Mapping[str, Any], keywords: Sequence[str], models: Sequence[str | ModelSpec] = (),
    task: str | Task | TaskSpec | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``search()``'s ``**options`` as study options (checked against their declared types) and trainer settings.

    ``keywords`` are ``search()``'s own, named in the error for an unknown one; an unknown one that
    is an option of ``task`` or a hyperparameter of one of ``models`` is told where it belongs.
    """
    hints, setting_hints = get_type_hints(StudySpec), get_type_hints(TrainConfig)
    study: dict[str, Any] = {}
    train: dict[str, Any] = {}
    for name, value in options.items():
        if name in OPTION_NAMES:
            value = os.fspath(value) if isinstance(value, os.PathLike) else value
            study[name] = conform(value, hints[name], f"search({name}=...)")
        elif name in SETTING_NAMES:
            auto_lr = name == "lr" and value == "auto"
            train[name] = value if auto_lr else conform(value, setting_hints[name], f"search({name}=...)")
        else:
            where = misplaced_keyword(name, models, task)
            if where:
                raise UsageError(f"search() got an unknown keyword {name!r}{where}")
            raise UsageError(
                f"search() got an unknown keyword {name!r}{did_you_mean(name, [*keywords, *OPTION_NAMES, *SETTING_NAMES])}; "
                f"its keywords: {', '.join(keywords)}; study options: {', '.join(OPTION_NAMES)}; "
                f"trainer settings: {', '.join(sorted(SETTING_NAMES))}"
            )
    return study, train
