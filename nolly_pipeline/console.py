"""What the operator CLI shows: job tables, daily stats, and jobs watched to the end.

Rendering only: rows come from :class:`~nolly_pipeline.db.jobs.JobStore`, output goes to a
``rich`` console. On a terminal ``watch`` draws live progress bars; when its output is a
pipe or a log file it prints one line per change of status or phase instead, so a script
or a CI log reads the same story.
"""

from __future__ import annotations

import datetime as dt
import re
import statistics
import time
import uuid
from typing import Callable, Sequence

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from nolly_pipeline.db.job_rows import JobRow, TypeStats, utcnow
from nolly_pipeline.db.jobs import JobStore
from nolly_pipeline.db.tables import DONE, FAILED, PENDING, RUNNING, TERMINAL_STATUSES

# Exit codes of ``watch`` (and ``submit``/``retry --wait``).
EXIT_DONE, EXIT_FAILED, EXIT_USAGE, EXIT_TIMEOUT = 0, 1, 2, 124

STATUS_STYLES = {PENDING: "yellow", RUNNING: "cyan", DONE: "green", FAILED: "red"}
_SINCE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def make_console() -> Console:
    """stdout; wide when it is a pipe or a file, where rich would otherwise assume 80 columns."""
    console = Console()
    if not console.is_terminal:
        console = Console(width=max(console.width, 200))
    return console


def parse_since(text: str, now: dt.datetime | None = None) -> dt.datetime:
    """``90m``, ``2h``, ``1d``, ``1w`` ago, or an ISO 8601 time (naive means UTC); naive UTC out."""
    now = now or utcnow()
    match = _SINCE.match(text.strip().lower())
    if match:
        return now - dt.timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2)])
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"--since takes a duration such as 30m, 2h, 1d or an ISO time, got {text!r}") from None
    if when.tzinfo is not None:
        when = when.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return when


def _clock(when: dt.datetime | None) -> str:
    return when.strftime("%Y-%m-%d %H:%M:%S") if when else ""


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m{secs:02d}s"


def _took(row: JobRow) -> float | None:
    if row.completed_at and row.created_at:
        return (row.completed_at - row.created_at).total_seconds()
    return None


def _outcome(row: JobRow) -> str:
    """The output URL, the reused job or the error message, escaped for rich's markup."""
    if row.status == FAILED:
        return escape(row.error_message or "")
    if row.status == DONE and isinstance(row.output_data, dict):
        reused = row.output_data.get("reused_from")
        return escape(f"reused from {reused}" if reused else str(row.output_data.get("output_url", "")))
    return ""


def jobs_table(rows: Sequence[JobRow]) -> Table:
    table = Table(header_style="bold")
    table.add_column("id", no_wrap=True)
    table.add_column("type", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("try", justify="right", no_wrap=True)
    table.add_column("user", no_wrap=True)
    table.add_column("created (UTC)", no_wrap=True)
    table.add_column("took", justify="right", no_wrap=True)
    table.add_column("output / error", overflow="fold")
    for row in rows:
        status = row.status or PENDING
        live = f" {_state(row)}" if status == RUNNING else ""
        shown = f" {row.progress:.0%}" if status == RUNNING and row.progress is not None else ""
        table.add_row(
            str(row.id),
            escape(row.type),
            f"[{STATUS_STYLES.get(status, 'white')}]{escape(status)}[/]{escape(live)}{shown}",
            f"{row.attempt}/{row.max_attempts}",
            str(row.user_id)[:8],
            _clock(row.created_at),
            _duration(_took(row)),
            _outcome(row),
        )
    return table


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _p95(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def stats_json(stats: Sequence[TypeStats]) -> list[dict[str, object]]:
    return [
        {
            "type": s.job_type,
            "total": s.total,
            **{status: s.by_status.get(status, 0) for status in (PENDING, RUNNING, DONE, FAILED)},
            "reused": s.reused,
            "median_seconds_to_done": _median(s.processed_seconds),
            "p95_seconds_to_done": _p95(s.processed_seconds),
            "median_seconds_to_done_reused": _median(s.reused_seconds),
        }
        for s in stats
    ]


def stats_table(stats: Sequence[TypeStats], hours: float) -> Table:
    table = Table(title=f"jobs created in the last {hours:g} h", header_style="bold")
    columns = ("type", "total", PENDING, RUNNING, DONE, FAILED, "reused", "median to done", "p95 to done",
               "median reused")
    for name in columns:
        table.add_column(name, justify="left" if name == "type" else "right")
    for entry in stats_json(stats):
        table.add_row(
            escape(str(entry["type"])),
            *(str(entry[k]) for k in ("total", PENDING, RUNNING, DONE, FAILED, "reused")),
            *(_duration(entry[k]) for k in ("median_seconds_to_done", "p95_seconds_to_done",  # type: ignore[arg-type]
                                            "median_seconds_to_done_reused")),
        )
    return table


def _state(row: JobRow) -> str:
    """One word for where a job is: its phase while a run works on it, else its status."""
    return row.phase if row.phase and row.status not in TERMINAL_STATUSES else (row.status or PENDING)


def watch(
    store: JobStore,
    job_ids: Sequence[uuid.UUID],
    console: Console,
    interval: float = 1.0,
    timeout: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Follow jobs until every one is final: 0 when all are done, 1 when any failed (each
    failure's message is printed), 124 when ``timeout`` seconds pass first, 2 for an unknown id."""
    rows = {job_id: store.get(job_id) for job_id in job_ids}
    unknown = [str(job_id) for job_id, row in rows.items() if row is None]
    if unknown:
        console.print(f"[red]no such job: {', '.join(unknown)}[/]")
        return EXIT_USAGE
    deadline = None if timeout is None else time.monotonic() + timeout
    live = console.is_terminal
    progress = Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
        TextColumn("{task.fields[state]}"), TimeElapsedColumn(), console=console, disable=not live,
    )
    tasks = {job_id: progress.add_task(escape(f"{row.type} {str(job_id)[:8]}"), total=1.0, state="")  # type: ignore[union-attr]
             for job_id, row in rows.items()}
    seen: dict[uuid.UUID, str] = {}
    with progress:
        while True:
            for job_id in job_ids:
                row = store.get(job_id)
                assert row is not None  # jobs are never deleted while watched
                rows[job_id] = row
                state = _state(row)
                progress.update(tasks[job_id], completed=row.progress or 0.0, state=escape(state))
                if not live and seen.get(job_id) != state:
                    shown = f" {row.progress:.0%}" if row.progress and row.status == RUNNING else ""
                    console.print(escape(f"{job_id} {row.type}: {state}{shown}"))
                seen[job_id] = state
            if all(r.status in TERMINAL_STATUSES for r in rows.values() if r is not None):
                break
            if deadline is not None and time.monotonic() >= deadline:
                console.print(f"[yellow]still running after {timeout:g} s[/]")
                return EXIT_TIMEOUT
            sleep(interval)
    failed = False
    for job_id, row in rows.items():
        assert row is not None
        if row.status == FAILED:
            failed = True
            console.print(f"[red]{job_id} failed: {escape(row.error_message or 'no message')}[/]")
        else:
            console.print(f"[green]{job_id} done[/] in {_duration(_took(row))}: {_outcome(row)}")
    return EXIT_FAILED if failed else EXIT_DONE
