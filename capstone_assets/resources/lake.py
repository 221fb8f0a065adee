"""The landing zone and the data lake, through Hadoop's FileSystem API.

Every lake root behaves alike (a local folder, `abfss://`, `s3a://`): the code
only lists, renames and deletes through the JVM's FileSystem for the path.

A day is written to `<asset>/_staging/…` and then swapped in with renames, so a
run that fails before the swap leaves the previous version readable. The swap is
two renames (old version aside, new version in); a run killed between them
leaves the old version at `_staging/trade_dt=<day>.previous`, which the next
write or read of that day puts back first. On object stores without an atomic
directory rename (S3) a rename is a copy: readers may see a partly copied day
while a swap is in progress.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from dagster import ConfigurableResource, get_dagster_logger
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

FORMATS = ("csv", "json")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def is_url(path: str) -> bool:
    return bool(_URL.match(path))


def absolute(path: str) -> str:
    """A local relative path as an absolute one; URLs (`s3a://…`) unchanged."""
    return path if _URL.match(path) else str(Path(path).expanduser().resolve())


def landing_exchange(path: str) -> str:
    """The exchange a landing file came from: the folder it lies in."""
    return path.rstrip("/").rsplit("/", 2)[-2]


def file_format(name: str, folder_format: str) -> str:
    """SPEC.md §1: the file name's ending decides, else the `<format>` folder."""
    lowered = name.lower()
    if lowered.endswith(".csv"):
        return "csv"
    if lowered.endswith((".json", ".jsonl")):
        return "json"
    return folder_format


@dataclass
class LandingFiles:
    by_format: dict[str, list[str]] = field(default_factory=lambda: {f: [] for f in FORMATS})
    skipped: list[str] = field(default_factory=list)

    @property
    def paths(self) -> list[str]:
        return [path for paths in self.by_format.values() for path in paths]

    @property
    def count(self) -> int:
        return len(self.paths)


@dataclass(frozen=True)
class StagedDay:
    asset: str
    day: str
    path: str


class LakeResource(ConfigurableResource):
    """Where landing files are read and lake datasets are written."""

    landing_root: str
    lake_root: str

    def _fs(self, spark: SparkSession, path: str):
        jvm_path = spark._jvm.org.apache.hadoop.fs.Path(path)
        return jvm_path.getFileSystem(spark._jsc.hadoopConfiguration()), jvm_path

    def _path(self, spark: SparkSession, path: str):
        return spark._jvm.org.apache.hadoop.fs.Path(path)

    # ----------------------------------------------------------------- landing
    def landing_day(self, fmt: str, day: str) -> str:
        return f"{absolute(self.landing_root)}/{fmt}/{day}"

    def landing_files(self, spark: SparkSession, day: str) -> LandingFiles:
        """Every batch file of every exchange for the day, by the format to read it in."""
        if not _DAY.match(day):
            raise ValueError(f"'{day}' is not a trading day in the form YYYY-MM-DD")
        found = LandingFiles()
        for folder_format in FORMATS:
            fs, root = self._fs(spark, self.landing_day(folder_format, day))
            if not fs.exists(root):
                continue
            for exchange in fs.listStatus(root):
                if not exchange.isDirectory():
                    found.skipped.append(exchange.getPath().toString())
                    continue
                for status in fs.listStatus(exchange.getPath()):
                    path = status.getPath()
                    name = path.getName()
                    if status.isDirectory() or name.startswith((".", "_")):
                        found.skipped.append(path.toString())
                        continue
                    found.by_format[file_format(name, folder_format)].append(path.toString())
        for paths in found.by_format.values():
            paths.sort()
        return found

    def has_landing_files(self, day: str, spark: Callable[[], SparkSession]) -> bool:
        """Whether any exchange delivered a file for the day. A local root needs no JVM."""
        root = absolute(self.landing_root)
        if is_url(root):
            return self.landing_files(spark(), day).count > 0
        return any(
            f.is_file() and not f.name.startswith((".", "_"))
            for fmt in FORMATS
            for f in Path(root, fmt, day).glob("*/*")
        )

    # -------------------------------------------------------------------- lake
    def asset_root(self, asset: str) -> str:
        return f"{absolute(self.lake_root)}/{asset}"

    def day_path(self, asset: str, day: str) -> str:
        return f"{self.asset_root(asset)}/trade_dt={day}"

    def _backup_path(self, asset: str, day: str) -> str:
        return f"{self.asset_root(asset)}/_staging/trade_dt={day}.previous"

    def _recover(self, spark: SparkSession, asset: str, day: str) -> None:
        """Puts back a version left aside by a swap that was killed half way."""
        fs, final = self._fs(spark, self.day_path(asset, day))
        backup = self._path(spark, self._backup_path(asset, day))
        if fs.exists(backup):
            if fs.exists(final):
                fs.delete(backup, True)
            else:
                get_dagster_logger().warning(f"Restoring {asset} {day} from an interrupted swap")
                fs.rename(backup, final)

    def day_exists(self, spark: SparkSession, asset: str, day: str) -> bool:
        self._recover(spark, asset, day)
        fs, final = self._fs(spark, self.day_path(asset, day))
        return bool(fs.exists(final))

    def _remove_abandoned_staging(self, spark: SparkSession, asset: str, day: str) -> None:
        """Deletes staged copies of the day left by a run that died before its swap.

        The job tracker lets one live run write a day at a time, so any staged
        copy of the day found here belongs to a dead run."""
        fs, staging = self._fs(spark, f"{self.asset_root(asset)}/_staging")
        if not fs.exists(staging):
            return
        for status in fs.listStatus(staging):
            name = status.getPath().getName()
            if name.startswith(f"trade_dt={day}.") and not name.endswith(".previous"):
                get_dagster_logger().info(f"Removing abandoned staging {status.getPath().toString()}")
                fs.delete(status.getPath(), True)

    def stage(self, spark: SparkSession, df: DataFrame, asset: str, day: str) -> StagedDay:
        """Writes the day next to the live one; nothing a reader sees changes yet."""
        self._remove_abandoned_staging(spark, asset, day)
        path = f"{self.asset_root(asset)}/_staging/trade_dt={day}.{uuid.uuid4().hex}"
        df.drop("trade_dt").write.mode("errorifexists").parquet(path)
        return StagedDay(asset, day, path)

    def commit(self, spark: SparkSession, staged: StagedDay) -> str:
        """Swaps the staged day in, replacing that day only."""
        self._recover(spark, staged.asset, staged.day)
        final_str = self.day_path(staged.asset, staged.day)
        fs, final = self._fs(spark, final_str)
        backup = self._path(spark, self._backup_path(staged.asset, staged.day))
        had_previous = fs.exists(final)
        if had_previous and not fs.rename(final, backup):
            raise OSError(f"Could not move {final_str} aside to replace it")
        if not fs.rename(self._path(spark, staged.path), final):
            if had_previous:
                fs.rename(backup, final)
            raise OSError(f"Could not move {staged.path} to {final_str}")
        if had_previous:
            fs.delete(backup, True)
        return final_str

    def discard(self, spark: SparkSession, staged: StagedDay) -> None:
        fs, path = self._fs(spark, staged.path)
        fs.delete(path, True)

    def write_day(self, spark: SparkSession, df: DataFrame, asset: str, day: str) -> str:
        staged = self.stage(spark, df, asset, day)
        try:
            return self.commit(spark, staged)
        except Exception:
            self.discard(spark, staged)
            raise

    def read_day(self, spark: SparkSession, asset: str, day: str, schema: T.StructType) -> DataFrame:
        if not self.day_exists(spark, asset, day):
            raise FileNotFoundError(
                f"{asset} has no data for {day} at {self.day_path(asset, day)}: "
                f"materialize {asset} for {day} first"
            )
        return spark.read.schema(schema).parquet(self.day_path(asset, day))

    def read_days(self, spark: SparkSession, asset: str, days: list[str], schema: T.StructType) -> DataFrame:
        """The days that exist among `days`, with their `trade_dt` column."""
        present = [day for day in days if self.day_exists(spark, asset, day)]
        with_dt = T.StructType([*schema.fields, T.StructField("trade_dt", T.DateType())])
        if not present:
            return spark.createDataFrame([], with_dt)
        paths = [self.day_path(asset, day) for day in present]
        return (
            spark.read.schema(with_dt)
            .option("basePath", self.asset_root(asset))
            .parquet(*paths)
            .select(*schema.fieldNames(), F.col("trade_dt").cast("date"))
        )
