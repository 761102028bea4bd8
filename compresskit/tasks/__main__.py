"""``python -m compresskit.tasks``: list the task families and what each needs."""

from compresskit.tasks import families

for task in families().values():
    print(f"{task.name}\n  {task.summary}\n  needs: {task.needs}\n  quality gate reads: {task.quality_metric}")
