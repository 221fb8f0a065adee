"""Pure Spark logic: DataFrame -> DataFrame, no Dagster, no reads or writes, no actions."""
