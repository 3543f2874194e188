"""The 21 tasks of the EPT paper as data: registry, templates, loaders, split protocol, metrics.

    from ept.tasks import load_task, score
    data = load_task("rte", data_dir="../shared/data")    # train / validation / test (Appendix B.1)
    print(data.test[0].source, "->", data.test[0].target)  # "rte sentence1: ... sentence2: ..." -> "entailment"
    score("rte", ["entailment"] * len(data.test), data.test)  # {"accuracy": ...}

See docs/tasks.md for every task's files, hub id, template and split rule.
"""

from ept.tasks.catalog import TAGS, TASKS, get_task, task_names
from ept.tasks.loaders import DataDirError, MissingDataError, label_distribution, load_task, resolve_data_dir
from ept.tasks.metrics import METRICS, normalize_squad, score
from ept.tasks.spec import DataError, Example, HubSource, LocalFile, RowError, TaskData, TaskSpec
from ept.tasks.splits import few_shot

__all__ = [
    "Example", "TaskSpec", "TaskData", "HubSource", "LocalFile",
    "DataError", "RowError", "MissingDataError", "DataDirError",
    "TASKS", "TAGS", "METRICS", "get_task", "task_names", "load_task", "few_shot", "score",
    "label_distribution", "normalize_squad", "resolve_data_dir",
]
