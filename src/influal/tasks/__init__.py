"""Tasks as plug-ins: each folder here (``classification/``, ``detection/``) registers a
:class:`~influal.api.TaskPlugin` in :data:`TASKS`, with its task class, models, data-set formats, settings block
and report section. The loop, the CLI and the report find tasks here by name, never by testing names.

Outside plug-ins register with :func:`register_task` or an ``influal.tasks`` entry point.
"""

from __future__ import annotations

from ..api import TaskPlugin
from ..core.registry import Registry

TASKS: Registry[TaskPlugin] = Registry("task", entry_point_group="influal.tasks",
                                       lazy={"classification": "influal.tasks.classification",
                                             "detection": "influal.tasks.detection"})


def register_task(plugin: TaskPlugin, *, replace: bool = False) -> TaskPlugin:
    """Register a task plug-in under ``plugin.name`` (``influal run --task NAME``)."""
    return TASKS.register(plugin.name, plugin, replace=replace)


def get_task(name: str) -> TaskPlugin:
    """The registered plug-in of task ``name`` (ConfigError naming the known tasks otherwise)."""
    return TASKS.get(name)


__all__ = ["TASKS", "get_task", "register_task"]
