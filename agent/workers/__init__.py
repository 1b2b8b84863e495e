"""Workers on Celery 5 with a Redis broker: the app built from the settings, the queue the API, the
CLI and the chat put jobs on, and the tasks `imaging-agent worker` runs (docs/architecture.md, "Workers")."""
