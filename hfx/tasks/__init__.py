"""Task registry. Each task is one module; importing this package registers them all (cheaply: no heavy imports)."""

import importlib
import pkgutil

from hfx.tasks.base import TASKS, Evaluation, Task, TaskConfig, TaskSettings, all_column_roles, task_settings

for _mod in pkgutil.iter_modules(__path__):
    if _mod.name != "base":
        importlib.import_module(f"{__name__}.{_mod.name}")

__all__ = ["TASKS", "Evaluation", "Task", "TaskConfig", "TaskSettings", "all_column_roles", "task_settings"]
