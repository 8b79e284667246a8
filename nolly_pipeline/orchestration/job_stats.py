"""The daily ``job_stats`` report: one partition per UTC day, filled each night by a schedule.

Per job type: counts by status, p50/p95 queue wait and processing time, the most frequent
failure messages, and a chart, all on the materialization so the asset page reads as a
daily report (the value itself, stored as JSON, is the same figures). matplotlib is
imported inside the asset: the code location does not load it.
"""


import base64
import datetime as dt
import io
from typing import Any, Mapping

from dagster import (
    AssetExecutionContext,
    DailyPartitionsDefinition,
    DefaultScheduleStatus,
    MetadataValue,
    ScheduleDefinition,
    asset,
    build_schedule_from_partitioned_job,
    define_asset_job,
    in_process_executor,
)

from nolly_pipeline.db.stats import STATUSES, TypeStats, daily_job_stats
from nolly_pipeline.orchestration.resources import JobStoreResource

# A partition per finished UTC day; yesterday is the newest (today is not over yet).
DAILY = DailyPartitionsDefinition(start_date="2025-01-01", timezone="UTC")


def _seconds(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def summary_markdown(stats: Mapping[str, TypeStats]) -> str:
    header = "| type | " + " | ".join(STATUSES) + " | queue wait p50 / p95 (s) | processing p50 / p95 (s) |"
    lines = [header, "|" + "---|" * (len(STATUSES) + 3)]
    for s in stats.values():
        counts = " | ".join(str(s.counts.get(status, 0)) for status in STATUSES)
        lines.append(f"| {s.job_type} | {counts} | {_seconds(s.queue_wait_p50)} / {_seconds(s.queue_wait_p95)} "
                     f"| {_seconds(s.processing_p50)} / {_seconds(s.processing_p95)} |")
    return "\n".join(lines)


def failures_markdown(stats: Mapping[str, TypeStats]) -> str:
    lines = [f"- **{s.job_type}** ({n}×): {message.replace('|', '/')}"
             for s in stats.values() for message, n in s.top_failures]
    return "\n".join(lines) or "No failed jobs."


def chart_png(stats: Mapping[str, TypeStats], day: str) -> bytes:
    """Jobs by status per type (stacked) next to p50/p95 processing and queue wait per type."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    types = list(stats)
    fig, (left, right) = plt.subplots(1, 2, figsize=(7.2, 3.0), dpi=90)
    try:
        bottom = [0] * len(types)
        colours = {"pending": "#9e9e9e", "running": "#42a5f5", "done": "#66bb6a", "failed": "#ef5350"}
        for status in STATUSES:
            values = [stats[t].counts.get(status, 0) for t in types]
            left.bar(types, values, bottom=bottom, label=status, color=colours[status])
            bottom = [b + v for b, v in zip(bottom, values)]
        left.set_title(f"jobs created {day}", fontsize=9)
        left.legend(fontsize=7)
        left.tick_params(labelsize=7)
        width = 0.2
        series = [("processing p50", "processing_p50"), ("processing p95", "processing_p95"),
                  ("queue p50", "queue_wait_p50"), ("queue p95", "queue_wait_p95")]
        for index, (name, attr) in enumerate(series):
            xs = [i + (index - 1.5) * width for i in range(len(types))]
            right.bar(xs, [getattr(stats[t], attr) or 0 for t in types], width=width, label=name)
        right.set_xticks(range(len(types)), types)
        right.set_ylabel("seconds", fontsize=8)
        right.set_title("time per job", fontsize=9)
        right.legend(fontsize=6)
        right.tick_params(labelsize=7)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        return buffer.getvalue()
    finally:
        plt.close(fig)


@asset(
    name="job_stats",
    partitions_def=DAILY,
    group_name="reports",
    description="Daily report of the jobs table: per type, counts by status, p50/p95 queue wait and "
    "processing time, the most frequent failure messages and a chart (jobs by their created_at day, UTC).",
)
def job_stats(context: AssetExecutionContext, job_store: JobStoreResource) -> dict[str, Any]:
    day = dt.date.fromisoformat(context.partition_key)
    stats = daily_job_stats(job_store.store().engine, day)
    png = chart_png(stats, context.partition_key)
    metadata: dict[str, Any] = {
        "jobs": MetadataValue.int(sum(s.total for s in stats.values())),
        "done": MetadataValue.int(sum(s.counts.get("done", 0) for s in stats.values())),
        "failed": MetadataValue.int(sum(s.counts.get("failed", 0) for s in stats.values())),
        "by_type": MetadataValue.md(summary_markdown(stats)),
        "top_failures": MetadataValue.md(failures_markdown(stats)),
        "chart": MetadataValue.md(f"![job stats](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"),
    }
    for s in stats.values():
        ident = s.job_type.replace("-", "_")
        for name in ("processing_p95", "queue_wait_p95"):
            if getattr(s, name) is not None:
                metadata[f"{ident}_{name}_seconds"] = MetadataValue.float(round(getattr(s, name), 3))
    context.add_output_metadata(metadata)
    return {t: s.as_json() for t, s in stats.items()}


job_stats_job = define_asset_job(
    "job_stats_job", selection=[job_stats], partitions_def=DAILY, executor_def=in_process_executor
)

# Each night at 00:30 UTC, yesterday's partition (the newest complete day).
job_stats_schedule: ScheduleDefinition = build_schedule_from_partitioned_job(
    job_stats_job, hour_of_day=0, minute_of_hour=30, default_status=DefaultScheduleStatus.RUNNING
)
