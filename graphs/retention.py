"""Which work folders unfinished jobs still use: what `imaging-agent purge` must keep.

A job that is not done (waiting for an approval, running, or stopped mid-run and waiting to be
resumed) refers to its work folders by path in its checkpoints. Its latest checkpoint in every
namespace (the batch and each study in it) and the writes pending on it (an approval request
lives there) are read whole, so no field that holds a path can be missed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from graphs.runtime import WorkflowRuntime


def _text(value: Any) -> str:
    return json.dumps(value, default=lambda o: o.model_dump(mode="json") if isinstance(o, BaseModel) else str(o))


def work_folders_in_use(runtime: WorkflowRuntime, work_root: Path) -> set[str]:
    """Names of the folders under `work_root` that some unfinished job's checkpoints mention."""
    if not work_root.is_dir():
        return set()
    folders = {p.name for p in work_root.iterdir() if p.is_dir()}
    used: set[str] = set()
    for job in runtime.jobs(unfinished_only=True):
        latest: set[str] = set()
        # Newest first: the first checkpoint seen in a namespace is its latest.
        for saved in runtime.checkpointer.list({"configurable": {"thread_id": job.thread_id}}):
            namespace = saved.config["configurable"].get("checkpoint_ns", "")
            if namespace in latest:
                continue
            latest.add(namespace)
            text = _text(saved.checkpoint.get("channel_values", {})) + _text(saved.pending_writes or [])
            used.update(name for name in folders if name in text)
    return used
