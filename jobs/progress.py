"""The progress bar a person watches during training: step / total, loss, ETA, from the registry row
that the plugin inside training keeps current (no log scraping)."""

from __future__ import annotations

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from jobs import registry


class Bar:
    def __init__(self, run_id: str, db_url: str | None = None):
        self.run_id = run_id
        self.db_url = db_url
        self.progress = Progress(
            TextColumn("[bold]{task.fields[status]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
        )
        self.task = self.progress.add_task("train", total=None, status="starting", loss="-")

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.refresh()
        self.progress.stop()

    def refresh(self) -> None:
        job = registry.get_job(self.run_id, self.db_url)
        if job is None:
            return
        loss = (job.metrics or {}).get("loss")
        self.progress.update(
            self.task,
            total=job.total_steps,
            completed=job.step,
            status=job.status,
            loss=f"{loss:.4f}" if loss is not None else "-",
        )
