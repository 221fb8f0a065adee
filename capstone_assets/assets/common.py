"""What every Spark asset shares: its kinds, what a materialization reports, how a step ends."""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, Sequence

from dagster import AssetExecutionContext, Failure, MetadataValue, TableColumn, TableSchema
from pyspark.sql import types as T

from capstone_assets.checks import BlockingCheckFailed
from capstone_assets.resources import TrackerResource
from capstone_assets.resources.lake import LakeProblem
from capstone_assets.resources.tracker import Claim
from capstone_assets.tracking import tracked_step

SPARK_KINDS = {"spark"}


def table_schema(schema: T.StructType) -> TableSchema:
    return TableSchema(
        columns=[
            TableColumn(name=f.name, type=f.dataType.simpleString(), description=None) for f in schema.fields
        ]
    )


def dataset_metadata(path: str, row_count: int, schema: T.StructType, **extra: Any) -> dict[str, Any]:
    return {
        "dagster/row_count": MetadataValue.int(row_count),
        "dagster/column_schema": MetadataValue.table_schema(table_schema(schema)),
        "path": MetadataValue.path(path),
        **extra,
    }


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    def cell(value: Any) -> str:
        text = "" if value is None else str(value)
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def tracked_results(
    context: AssetExecutionContext,
    tracker: TrackerResource,
    workflow: str,
    compute: Callable[[Claim], Iterable],
    **gate,
) -> Iterator:
    """Runs a step's work under its run's claim and yields its results once it has finished.

    `compute` gets the Claim: its `holding` is the guard under which the lake commits,
    so a run that lost the day cannot write it. When a blocking check fails, the step
    yields that check's failed result (so the UI shows it for the day) and then fails;
    the tracker has noted the failure with the check's name. A landing file that cannot be
    read, or a lake folder that cannot be written, fails the step with one sentence saying
    what happened and what to do."""
    try:
        with tracked_step(context, tracker, workflow, **gate) as claim:
            results = list(compute(claim))
    except BlockingCheckFailed as failed:
        context.log.error(str(failed))
        yield failed.outcome.result()
        raise Failure(description=str(failed), allow_retries=False) from None
    except LakeProblem as problem:  # one sentence for the operator; the cause stays in the log
        context.log.error(str(problem))
        raise Failure(description=str(problem), allow_retries=False) from problem
    yield from results
