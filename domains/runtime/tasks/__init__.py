"""Learning tasks behind one interface (:class:`Task`): what the runtime asks of classification,
segmentation or detection, so a new task plugs in without touching the loop, the call log, the ε
budget or HE.

:func:`task_for` gives a job's task from ``JobSpec.task``; :func:`register_task` adds one (its
counts type goes in :data:`domains.shared.counts.COUNTS` under the same name, so the orchestrator
can pool its metrics). See ``docs/training.md``, "Adding a task".
"""

from __future__ import annotations

from collections.abc import Callable

from domains.runtime.tasks.base import Task
from domains.runtime.tasks.classification import Classification
from domains.shared.errors import TrainConfigError
from domains.shared.spec import JobSpec

_TASKS: dict[str, Callable[[JobSpec], Task]] = {"classification": Classification.of}


def register_task(kind: str, factory: Callable[[JobSpec], Task]) -> None:
    """Make ``JobSpec(task=kind)`` run with the task *factory* builds from the spec."""
    _TASKS[kind] = factory


def task_for(spec: JobSpec) -> Task:
    """The task a job's spec names.

    Raises:
        TrainConfigError: for a task this datasite does not have, naming the ones it has.
    """
    try:
        factory = _TASKS[spec.task]
    except KeyError:
        raise TrainConfigError(f"this datasite has no task {spec.task!r}; it has {sorted(_TASKS)}") from None
    return factory(spec)


__all__ = ["Classification", "Task", "register_task", "task_for"]
