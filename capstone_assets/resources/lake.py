"""The landing zone and the data lake, through Hadoop's FileSystem API.

Every lake root behaves alike (a local folder, `abfss://`, `s3a://`): the code
only lists, renames and deletes through the JVM's FileSystem for the path.

A day is written to `<asset>/_staging/…` and then switched in (`swap.py`): a
journal naming every move, then per asset two renames (the live version aside
to `_staging/trade_dt=<day>.previous`, the staged one in), then clean-up. The
outputs of one switch become visible together or not at all, and a run that
fails before or during it leaves the previous version readable. What a crash
leaves is settled by the next writer of those assets and day, under the day's
claim (`guard`); readers never change anything: they read the version the
journal has decided, or the backup while the live day is set aside.

On object stores without an atomic directory rename (S3) a rename is a copy:
a reader outside the platform may see a partly copied day while a switch runs.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from functools import reduce
from pathlib import Path
from typing import Callable

from dagster import ConfigurableResource, get_dagster_logger
from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from capstone_assets.resources.pyfs import PyFileSystem
from capstone_assets.resources.swap import Slot, Swapper

# Spark's FAILED_READ_FILE error names the file it could not read.
_FAILED_READ = re.compile(r"while reading file (\S+?)\.?(?:\s|$)")
_CAUSE = re.compile(r"Caused by: ([^\n]+)")


class LakeProblem(RuntimeError):
    """Files could not be read or written as they are. The step fails with this one
    message (what happened, what the day looks like now, what to do); the cause is chained."""


def unreadable_file(error: BaseException) -> tuple[str, str] | None:
    """(path, the innermost cause) when a Spark job failed reading one file, else None."""
    text = str(error)
    found = _FAILED_READ.search(text)
    if found is None:
        return None
    causes = _CAUSE.findall(text)
    return found.group(1), (causes[-1] if causes else text.strip().splitlines()[0]).strip()


def io_error(spark: SparkSession, error: BaseException) -> str | None:
    """The innermost java.io.IOException behind a failed Spark call ("No space left on device",
    "Parent path is not a directory: …"), or None when the failure is not one."""
    throwable = getattr(error, "java_exception", None)
    if throwable is None or is_connect(spark):  # under Spark Connect the message is all there is
        return None
    io = spark._jvm.java.lang.Class.forName("java.io.IOException")
    found, seen = None, 0
    while throwable is not None and seen < 50:
        if io.isInstance(throwable):
            found = throwable
        throwable, seen = throwable.getCause(), seen + 1
    return None if found is None else found.toString()


def is_connect(spark) -> bool:
    """Whether `spark` is a Spark Connect session (`SPARK_REMOTE`): no JVM in this process."""
    return type(spark).__module__.startswith("pyspark.sql.connect")


def filesystem(spark, path: str):
    """(the FileSystem of `path`, `path` as its Path): Hadoop's through py4j, or under Spark Connect
    the fsspec look-alike of pyfs.py."""
    if is_connect(spark):
        fs = PyFileSystem(path)
        return fs, fs.path(path)
    jvm_path = spark._jvm.org.apache.hadoop.fs.Path(path)
    return jvm_path.getFileSystem(spark._jsc.hadoopConfiguration()), jvm_path


def child_path(spark, parent, child: str | None = None):
    """Hadoop's `new Path(parent)` or `new Path(parent, child)` on either kind of session."""
    if is_connect(spark):
        return PyFileSystem(str(parent)).path(parent, child)
    Path = spark._jvm.org.apache.hadoop.fs.Path
    return Path(parent) if child is None else Path(parent, child)


FORMATS = ("csv", "json")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# Held around every rename and repair of a day: the tracker keeps the day's claim locked meanwhile.
Guard = Callable[[], AbstractContextManager[object]] | None
READ_ATTEMPTS = 3


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
        return filesystem(spark, path)

    def _path(self, spark: SparkSession, path: str):
        return child_path(spark, path)

    # ----------------------------------------------------------------- landing
    def landing_day(self, fmt: str, day: str) -> str:
        return f"{absolute(self.landing_root)}/{fmt}/{day}"

    def landing_files(self, spark: SparkSession, day: str) -> LandingFiles:
        """Every batch file of every exchange for the day, by the format to read it in."""
        from capstone_assets.resources.landing import LandingZone  # it builds on this module

        return LandingZone(spark, self.landing_root).landing_files(day)

    def has_landing_files(self, day: str, spark: Callable[[], SparkSession]) -> bool:
        """Whether any exchange delivered a file for the day, as ingestion would read it."""
        from capstone_assets.resources.landing import LandingZone

        return LandingZone(spark(), self.landing_root).has_files(day)

    # -------------------------------------------------------------------- lake
    def asset_root(self, asset: str) -> str:
        return f"{absolute(self.lake_root)}/{asset}"

    def day_path(self, asset: str, day: str) -> str:
        return f"{self.asset_root(asset)}/trade_dt={day}"

    def _backup_path(self, asset: str, day: str) -> str:
        return f"{self.asset_root(asset)}/_staging/trade_dt={day}.previous"

    def _slot(self, asset: str, day: str) -> Slot:
        staging = f"{self.asset_root(asset)}/_staging"
        return Slot(asset, day, self.day_path(asset, day), self._backup_path(asset, day), staging)

    def _swapper(self, spark: SparkSession) -> Swapper:
        fs, _ = self._fs(spark, absolute(self.lake_root))
        return Swapper(fs, lambda path: self._path(spark, path), get_dagster_logger())

    def _recover(self, spark: SparkSession, assets: list[str], day: str) -> None:
        """Settles what an interrupted write of the day left: for writers holding the day's claim only."""
        swapper = self._swapper(spark)
        for asset in assets:
            swapper.recover(self._slot(asset, day))

    def day_exists(self, spark: SparkSession, asset: str, day: str) -> bool:
        return self._swapper(spark).visible(self._slot(asset, day)) is not None

    def stage(self, spark: SparkSession, df: DataFrame, asset: str, day: str) -> StagedDay:
        """Writes the day next to the live one; nothing a reader sees changes yet."""
        path = f"{self.asset_root(asset)}/_staging/trade_dt={day}.{uuid.uuid4().hex}"
        try:
            self._swapper(spark).remove_abandoned(self._slot(asset, day))
            df.drop("trade_dt").write.mode("error").parquet(path)
        except Exception as error:
            with contextlib.suppress(Exception):  # what the failed write left (the disk may be full)
                self.discard(spark, StagedDay(asset, day, path))
            cause = None if unreadable_file(error) else io_error(spark, error)
            if cause is None:  # a landing file that cannot be read, or not a file-system error
                raise
            raise LakeProblem(
                f"Cannot write {asset} for {day} to {path}: {cause}. Nothing was committed: the day "
                f"keeps its previous version. Free space or fix the lake folder {self.asset_root(asset)} "
                "(a file where a folder must go, permissions), then run the day again."
            ) from error
        return StagedDay(asset, day, path)

    def commit_all(
        self,
        spark: SparkSession,
        staged_days: Mapping[str, StagedDay] | Iterable[StagedDay],
        guard: Guard = None,
    ) -> dict[str, str]:
        """Swaps the staged days (one day, any assets) in together: all become visible, or none.

        Inside `guard()` (the tracker holding the day's claim) it first settles what
        an interrupted write of those assets and day left, then journals and swaps."""
        staged = list(staged_days.values() if isinstance(staged_days, Mapping) else staged_days)
        days, assets = {s.day for s in staged}, [s.asset for s in staged]
        if len(days) != 1 or len(set(assets)) != len(assets):
            raise ValueError(f"commit_all takes one staged version per asset of one day, not {staged}")
        [day] = days
        with (guard or contextlib.nullcontext)():
            try:
                self._recover(spark, assets, day)
                swapper = self._swapper(spark)
                swapper.switch(swapper.begin(day, [(self._slot(s.asset, day), s.path) for s in staged]))
            except Exception as error:
                cause = io_error(spark, error)
                if cause is None:
                    raise
                raise LakeProblem(
                    f"Cannot switch in {', '.join(assets)} for {day} under {self.lake_root}: {cause}. "
                    "Readers see a whole version of the day: the previous one, unless the switch had "
                    "begun, which the next run of the day completes. Fix the lake folder, then run the "
                    "day again."
                ) from error
        return {asset: self.day_path(asset, day) for asset in assets}

    def commit(self, spark: SparkSession, staged: StagedDay, guard: Guard = None) -> str:
        """Swaps the staged day in, replacing that day only."""
        return self.commit_all(spark, [staged], guard)[staged.asset]

    def discard(self, spark: SparkSession, staged: StagedDay) -> None:
        fs, path = self._fs(spark, staged.path)
        fs.delete(path, True)

    def write_day(self, spark: SparkSession, df: DataFrame, asset: str, day: str, guard: Guard = None) -> str:
        staged = self.stage(spark, df, asset, day)
        try:
            return self.commit(spark, staged, guard)
        except Exception:
            self.discard(spark, staged)
            raise

    def _read_current(self, spark: SparkSession, asset: str, days: list[str], read) -> DataFrame:
        """`read({day: folder})` on the versions a reader may see now, resolved again if a swap moved one."""
        swapper, attempt = self._swapper(spark), 1
        while True:
            folders = {day: swapper.visible(self._slot(asset, day)) for day in days}
            try:
                frame = read({day: folder for day, folder in folders.items() if folder is not None})
                if is_connect(spark):
                    frame.schema  # Spark Connect reads lazily: resolve the folders now, inside the retry
                return frame
            except AnalysisException as error:
                if error.getCondition() != "PATH_NOT_FOUND" or attempt == READ_ATTEMPTS:
                    raise
            attempt += 1

    def read_day(self, spark: SparkSession, asset: str, day: str, schema: T.StructType) -> DataFrame:
        def read(folders: dict[str, str]) -> DataFrame:
            if day not in folders:
                raise FileNotFoundError(
                    f"{asset} has no data for {day} at {self.day_path(asset, day)}: "
                    f"materialize {asset} for {day} first"
                )
            return spark.read.schema(schema).parquet(folders[day])

        return self._read_current(spark, asset, [day], read)

    def read_days(self, spark: SparkSession, asset: str, days: list[str], schema: T.StructType) -> DataFrame:
        """The days that exist among `days`, with their `trade_dt` column."""
        with_dt = T.StructType([*schema.fields, T.StructField("trade_dt", T.DateType())])

        def read(folders: dict[str, str]) -> DataFrame:
            live = [folder for day, folder in folders.items() if folder == self.day_path(asset, day)]
            frames = [
                spark.read.schema(schema)
                .parquet(folder)
                .select(*schema.fieldNames(), F.lit(day).cast("date").alias("trade_dt"))
                for day, folder in folders.items()
                if folder not in live  # a version beside the live folder, during or after an interrupted swap
            ]
            if live:
                frames.append(
                    spark.read.schema(with_dt)
                    .option("basePath", self.asset_root(asset))
                    .parquet(*live)
                    .select(*schema.fieldNames(), F.col("trade_dt").cast("date"))
                )
            return reduce(DataFrame.unionByName, frames) if frames else spark.createDataFrame([], with_dt)

        return self._read_current(spark, asset, days, read)
