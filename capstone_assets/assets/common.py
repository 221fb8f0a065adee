"""What every Spark asset reports to the UI on each materialization."""

from typing import Any

from dagster import MetadataValue, TableColumn, TableSchema
from pyspark.sql import types as T

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
