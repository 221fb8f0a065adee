"""The landing zone as Spark sees it: the one lister of landing files (SPEC.md §1).

Ingestion, the analytical gate (`has_landing_files`), the landing sensor and
`capstone_assets.run` all list through this module, with Hadoop's FileSystem
API, so they see what Spark reads: on a cluster whose default filesystem is
HDFS a path without a scheme is an HDFS path, and an `s3a://` or `abfss://`
root is listed like a local folder. Python's own file API is never used.

One set of rules: a data file is `<format>/<YYYY-MM-DD>/<EXCHANGE>/<file>`,
`<format>` being `csv` or `json` and the date a real one. Anything else under
`<format>/` is skipped and reported, and so is every path with a part whose
name starts with `.` or `_` (hidden files, Spark's `_SUCCESS` markers, a
`_temporary` or `.staging` folder of a copy in progress), as well as a file
whose name ends in `._COPYING_` (HDFS's name for a file still being copied in;
Spark's own file listing skips it too).

A whole-zone listing is one recursive `FileSystem.listFiles` per format: on
S3A a flat, paged listing of the keys under a prefix, not one request per
folder. On the local filesystem it walks with `listStatus` (see `_files`).
It costs one JVM call per file and folder: a few seconds for some thousands
of files, which is why the landing sensor ticks once a minute.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from pyspark.sql import SparkSession

from capstone_assets.resources.lake import (
    FORMATS,
    LakeProblem,
    LandingFiles,
    absolute,
    child_path,
    file_format,
    filesystem,
)
from capstone_assets.resources.spark import session_from_config, spark_config, uses_spark_connect

HIDDEN = (".", "_")
COPYING = "._COPYING_"


class LandingProblem(LakeProblem):
    """A day's landing files cannot be ingested as they are. The run fails with this one
    message; nothing of the day was committed, so its previous version stays."""


@dataclass(frozen=True)
class LandingFile:
    path: str  # as Hadoop names it, ready for `spark.read`
    relative: str  # <format>/<day>/<exchange>/<name>
    day: str
    read_as: str  # the format to read it in: the name's ending, else the folder
    size: int
    modified_ms: int


@dataclass
class Listing:
    files: list[LandingFile] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    # With a day: its `<format>/<day>/<exchange>` folders that hold no data file, and its
    # `<other>/<day>` folders under a top-level folder that is not a format (never read).
    empty_exchanges: list[str] = field(default_factory=list)
    other_formats: list[str] = field(default_factory=list)

    def days(self) -> list[str]:
        return sorted({f.day for f in self.files})

    def fingerprints(self) -> dict[str, str]:
        """Per day, a short hash of its files' paths, sizes and modification times."""
        entries: dict[str, list[str]] = {}
        for f in sorted(self.files, key=lambda f: f.relative):
            entries.setdefault(f.day, []).append(f"{f.relative}|{f.size}|{f.modified_ms}")
        return {day: hashlib.sha1("\n".join(e).encode()).hexdigest()[:16] for day, e in entries.items()}


def is_day(name: str) -> bool:
    if len(name) != 10 or name[4] != "-" or name[7] != "-":
        return False
    try:
        dt.date.fromisoformat(name)
    except ValueError:
        return False
    return True


def is_data_file(parts: list[str]) -> bool:
    """Whether the parts of a path below `<format>/` name a data file: `<day>/<exchange>/<file>`."""
    return (
        len(parts) == 3
        and is_day(parts[0])
        and not any(part.startswith(HIDDEN) for part in parts)
        and not parts[2].endswith(COPYING)
    )


def local_session() -> SparkSession:
    """The process's Spark session, or a small local one started on first use.

    Hadoop's FileSystem lives in the JVM, so listing the landing zone from a
    sensor needs one. In the code server the first tick starts it (a few
    seconds, a few hundred MB) and later ticks reuse it; it only lists files
    and runs no Spark job, so a local master is enough whatever SPARK_MASTER
    names, and it reads the same Hadoop configuration and jars as the runs.
    Under Spark Connect it is a session on the runs' server (no JVM here)."""
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    if uses_spark_connect():
        # The runs' shared server: if this is the first process to need it, it starts it, so
        # it passes the runs' settings (a `local[1]` server would serve every run on one core).
        from capstone_assets import settings

        return session_from_config(spark_config(settings.value("SPARK_MASTER")))
    return session_from_config({**spark_config("local[1]"), "spark.ui.enabled": "false"})


@dataclass
class Changes:
    """How a day's landing files differ between two listings of it."""

    appeared: list[str]
    changed: list[str]  # grown, shrunk or rewritten: size or modification time differs
    vanished: list[str]

    @staticmethod
    def between(before: Listing, after: Listing) -> Changes:
        old = {f.path: (f.size, f.modified_ms) for f in before.files}
        new = {f.path: (f.size, f.modified_ms) for f in after.files}
        return Changes(
            appeared=sorted(new.keys() - old.keys()),
            changed=sorted(p for p in old.keys() & new.keys() if old[p] != new[p]),
            vanished=sorted(old.keys() - new.keys()),
        )


class LandingZone:
    """One landing root, listed through the Hadoop FileSystem its path resolves to."""

    def __init__(self, spark: SparkSession, root: str):
        self.spark = spark
        self.root = absolute(root).rstrip("/")

    def listing(self, day: str | None = None) -> Listing:
        """Every data file of the zone, or of one day, and every path skipped."""
        if day is not None and not is_day(day):
            raise ValueError(f"'{day}' is not a trading day in the form YYYY-MM-DD")
        found = Listing()
        for fmt in FORMATS:
            for path, size, modified, parts in self._walk(fmt, day):
                if not is_data_file(parts):
                    found.skipped.append(path)
                    continue
                day_of_file, _, name = parts
                relative = "/".join((fmt, *parts))
                read_as = file_format(name, fmt)
                found.files.append(LandingFile(path, relative, day_of_file, read_as, size, modified))
        found.files.sort(key=lambda f: f.path)
        found.skipped.sort()
        if day is not None:
            delivered = {f.relative.rsplit("/", 1)[0] for f in found.files}
            found.empty_exchanges = [f for f in self._exchange_folders(day) if f not in delivered]
            found.other_formats = self._other_format_folders(day)
        return found

    def _filesystem(self):
        fs, root = filesystem(self.spark, self.root)
        return root, fs

    def _exchange_folders(self, day: str) -> list[str]:
        """The day's exchange folders, as `<format>/<day>/<exchange>`."""
        root, fs = self._filesystem()
        folders = []
        for fmt in FORMATS:
            day_folder = child_path(self.spark, root, f"{fmt}/{day}")
            if fs.exists(day_folder):
                folders += [
                    f"{fmt}/{day}/{status.getPath().getName()}"
                    for status in fs.listStatus(day_folder)
                    if status.isDirectory() and not status.getPath().getName().startswith(HIDDEN)
                ]
        return sorted(folders)

    def _other_format_folders(self, day: str) -> list[str]:
        """`<name>/<day>` for every top-level folder that is not a format but holds the day."""
        root, fs = self._filesystem()
        if not fs.exists(root):
            return []
        names = sorted(
            status.getPath().getName()
            for status in fs.listStatus(root)
            if status.isDirectory()
            and status.getPath().getName() not in FORMATS
            and not status.getPath().getName().startswith(HIDDEN)
        )
        return [f"{name}/{day}" for name in names if fs.exists(child_path(self.spark, root, f"{name}/{day}"))]

    def landing_files(self, day: str) -> LandingFiles:
        listing = self.listing(day)
        found = LandingFiles(skipped=listing.skipped)
        for f in listing.files:
            found.by_format[f.read_as].append(f.path)
        return found

    def has_files(self, day: str) -> bool:
        return bool(self.listing(day).files)

    def _walk(self, fmt: str, day: str | None) -> Iterator[tuple[str, int, int, list[str]]]:
        """(path, size, modification time in ms, parts below `<format>/`) of every file."""
        fs, folder = filesystem(self.spark, f"{self.root}/{fmt}")
        start = folder if day is None else child_path(self.spark, folder, day)
        if not fs.exists(start):
            return
        prefix = fs.makeQualified(folder).toString().rstrip("/") + "/"
        for status in _files(fs, start):
            path = status.getPath().toString()
            parts = path[len(prefix) :].split("/") if path.startswith(prefix) else []
            yield path, status.getLen(), status.getModificationTime(), parts


def _files(fs, start) -> Iterator:
    """Every file below `start`, as Hadoop FileStatus objects."""
    if fs.getScheme() != "file":
        # One recursive listing: on object stores a flat, paged listing of the keys.
        files = fs.listFiles(start, True)
        while files.hasNext():
            yield files.next()
        return
    # On the local filesystem a LocatedFileStatus (listFiles) reads each file's owner
    # and permissions by running a process per file: walk with listStatus instead.
    folders = [start]
    while folders:
        for status in fs.listStatus(folders.pop()):
            if status.isDirectory():
                folders.append(status.getPath())
            else:
                yield status
