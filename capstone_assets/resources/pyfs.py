"""The lake's and the landing zone's file operations without a JVM, for Spark Connect sessions.

Under Spark Connect (`SPARK_REMOTE`) the Python process has no JVM, so no py4j
access to Hadoop's FileSystem. This module offers the part of Hadoop's
FileSystem API that `swap.py` and `landing.py` use (`exists`, `listStatus`,
`rename`, `delete`, `create`, `open`, `globStatus`, `listFiles`, …) on top of
fsspec, so both modules run unchanged on either kind of session.

A path names its filesystem as Spark does: a local path or `file:` URL is the
local disk (tested here, call by call against Hadoop's: test_pyfs.py);
`s3a://bucket/…` and `gs://bucket/…` go through fsspec's `s3fs` and `gcsfs`
(install them beside the platform), which take their credentials from the
environment as those packages do, never from code. Stores whose URLs carry a
host or account that fsspec moves out of the path (`hdfs://`, `abfs(s)://`,
`wasb(s)://`) are refused with a clear error: run those without Spark Connect.
Paths come back in Hadoop's qualified form (`file:/…` for local files,
normalised like Hadoop's `Path`) so that listings compare with what the JVM side
would have said. No listing is cached: the sensors and the switch protocol must
see what Spark has just written.
"""

from __future__ import annotations

import errno
import os
import posixpath
import re
import stat
from dataclasses import dataclass

import fsspec

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
# Hadoop's scheme names and the fsspec protocol that serves them under Spark Connect: stores whose
# bucket is the first part of the path, which fsspec keeps in its paths.
FSSPEC_PROTOCOLS = {"file": "file", "s3a": "s3", "s3": "s3", "s3n": "s3", "gs": "gs", "gcs": "gs"}


class UnsupportedStore(ValueError):
    """A lake or landing root whose store pyfs cannot reach without a JVM."""


def scheme(path: str) -> str:
    found = _SCHEME.match(path)
    return found.group(1).lower() if found else "file"


@dataclass(frozen=True)
class PyPath:
    """A Hadoop `Path`'s look-alike: its qualified text, `getName()`, `toString()`."""

    url: str

    def getName(self) -> str:  # noqa: N802 (Hadoop's spelling)
        return posixpath.basename(self.url.rstrip("/"))

    def toString(self) -> str:  # noqa: N802
        return self.url

    def __str__(self) -> str:
        return self.url


@dataclass(frozen=True)
class PyFileStatus:
    path: PyPath
    directory: bool
    length: int
    modified_ms: int

    def getPath(self) -> PyPath:  # noqa: N802
        return self.path

    def isDirectory(self) -> bool:  # noqa: N802
        return self.directory

    def getLen(self) -> int:  # noqa: N802
        return self.length

    def getModificationTime(self) -> int:  # noqa: N802
        return self.modified_ms


class _Writer:
    def __init__(self, handle):
        self._handle = handle

    def write(self, data: bytes | bytearray) -> None:
        self._handle.write(bytes(data))

    def close(self) -> None:
        self._handle.close()


class _Reader:
    def __init__(self, handle):
        self._handle = handle

    def readAllBytes(self) -> bytes:  # noqa: N802
        return self._handle.read()

    def close(self) -> None:
        self._handle.close()


class _RemoteIterator:
    def __init__(self, items: list[PyFileStatus]):
        self._items, self._next = items, 0

    def hasNext(self) -> bool:  # noqa: N802
        return self._next < len(self._items)

    def next(self) -> PyFileStatus:
        item = self._items[self._next]
        self._next += 1
        return item


class PyFileSystem:
    """Hadoop's FileSystem calls used by the platform, for one scheme, on fsspec."""

    def __init__(self, url: str):
        self._scheme = scheme(url)
        protocol = FSSPEC_PROTOCOLS.get(self._scheme)
        if protocol is None:
            raise UnsupportedStore(
                f"{url}: under Spark Connect (SPARK_REMOTE, SPARK_API_MODE=connect) the lake and landing "
                f"zone are reached without a JVM, which this platform does for local folders, s3a:// and "
                f"gs:// only. Run {self._scheme}:// roots without Spark Connect (unset SPARK_REMOTE and "
                "SPARK_API_MODE)."
            )
        # No listings cache and a fresh instance: what Spark wrote a moment ago must be seen.
        self._fs = fsspec.filesystem(protocol, use_listings_cache=False, skip_instance_cache=True)

    # ---------------------------------------------------------------- paths
    def path(self, path: str | PyPath, child: str | None = None) -> PyPath:
        text = str(path)
        if child is not None:
            text = f"{text.rstrip('/')}/{child}"
        return PyPath(self._qualified(text))

    def _qualified(self, text: str) -> str:
        """Hadoop's `Path` text: `file:/x` for local paths; `//` collapsed, no trailing `/`."""
        if self._scheme == "file":
            local = text[len("file:") :] if text.startswith("file:") else text
            local = "/" + local.lstrip("/")  # file:///x and file:/x alike
            return "file:" + posixpath.normpath(local)
        head, _, rest = text.partition("://")
        bucket, _, key = rest.partition("/")
        key = posixpath.normpath("/" + key).lstrip("/") if key else ""
        return f"{head}://{bucket}" + (f"/{key}" if key else "")

    def _native(self, path: str | PyPath) -> str:
        """The path as fsspec names it."""
        text = self._qualified(str(path))
        return text[len("file:") :] if self._scheme == "file" else self._fs._strip_protocol(text)

    def _url(self, native: str) -> str:
        if self._scheme == "file":
            return "file:" + native
        return f"{self._scheme}://{native.lstrip('/')}"

    def _status(self, info: dict) -> PyFileStatus:
        if self._scheme == "file":  # as Hadoop: symbolic links followed, times in whole ms
            try:
                found = os.stat(info["name"])
            except FileNotFoundError:  # a link to nothing: the link itself
                found = os.lstat(info["name"])
            return PyFileStatus(
                PyPath(self._url(info["name"])), stat.S_ISDIR(found.st_mode), found.st_size,
                found.st_mtime_ns // 1_000_000,
            )  # fmt: skip
        modified = info.get("mtime") or info.get("LastModified") or info.get("last_modified") or 0
        if hasattr(modified, "timestamp"):
            modified = modified.timestamp()
        return PyFileStatus(
            PyPath(self._url(info["name"])), info.get("type") == "directory", int(info.get("size") or 0),
            int(float(modified) * 1000),
        )  # fmt: skip

    # ------------------------------------------------------------ Hadoop API
    def getScheme(self) -> str:  # noqa: N802
        return self._scheme

    def makeQualified(self, path: PyPath) -> PyPath:  # noqa: N802
        return self.path(path)

    def exists(self, path) -> bool:
        return self._fs.exists(self._native(path))

    def listStatus(self, path) -> list[PyFileStatus]:  # noqa: N802
        """The entries of a folder; FileNotFoundError when it is not there (as Hadoop's)."""
        native = self._native(path)
        if not self._fs.isdir(native):
            if self._fs.exists(native):
                return [self._status(self._fs.info(native))]
            raise FileNotFoundError(f"File {path} does not exist")
        return [self._status(info) for info in self._fs.ls(native, detail=True)]

    def listFiles(self, path, recursive: bool) -> _RemoteIterator:  # noqa: N802
        if self._scheme == "file":  # as Hadoop: a walk that follows links to folders
            found, folders = [], [path]
            while folders:
                for status in self.listStatus(folders.pop()):
                    if not status.isDirectory():
                        found.append(status)
                    elif recursive:
                        folders.append(status.getPath())
            return _RemoteIterator(found)
        native = self._native(path)
        listed = self._fs.find(native, detail=True, maxdepth=None if recursive else 1)
        return _RemoteIterator([self._status(info) for info in listed.values() if info.get("type") != "directory"])

    def globStatus(self, pattern) -> list[PyFileStatus]:  # noqa: N802
        return [self._status(info) for info in self._fs.glob(self._native(pattern), detail=True).values()]

    def delete(self, path, recursive: bool) -> bool:
        native = self._native(path)
        if not self._fs.exists(native):
            return False
        self._fs.rm(native, recursive=recursive)
        return True

    def rename(self, src, dst) -> bool:
        """As Hadoop's filesystems: FileNotFoundError when the source is missing; False (nothing moved)
        when the target is a file or its parent is missing. A folder renamed onto an existing folder
        goes inside it, except on the local disk onto an empty one, which it replaces (rename(2))."""
        source, target = self._native(src), self._native(dst)
        if not self._fs.exists(source):
            raise FileNotFoundError(f"File {src} does not exist")
        if self._scheme == "file":
            if not os.path.isdir(os.path.dirname(target.rstrip("/"))):
                return False
            try:
                os.rename(source, target)
                return True
            except OSError as error:
                if error.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.EISDIR, errno.ENOTDIR):
                    raise
        if self._fs.isdir(target):
            target = f"{target.rstrip('/')}/{posixpath.basename(source.rstrip('/'))}"
        if self._fs.exists(target):
            return False
        self._fs.mv(source, target, recursive=True)
        return True

    def create(self, path, overwrite: bool) -> _Writer:
        native = self._native(path)
        if not overwrite and self._fs.exists(native):
            raise FileExistsError(f"{path} already exists")
        self._fs.makedirs(posixpath.dirname(native), exist_ok=True)
        return _Writer(self._fs.open(native, "wb"))

    def open(self, path) -> _Reader:
        native = self._native(path)
        try:
            return _Reader(self._fs.open(native, "rb"))
        except FileNotFoundError:
            raise
        except OSError as error:
            if not self._fs.exists(native):
                raise FileNotFoundError(str(path)) from error
            raise

