"""pyfs.PyFileSystem (no JVM: Spark Connect sessions) answers as Hadoop's FileSystem does.

Every call the swap protocol and the landing zone make is run on both, on the
same local folders, and the answers compared: paths, names, kinds, sizes,
what a rename does onto an existing folder or from a missing one, and how a
missing file is reported.
"""

from __future__ import annotations

import pytest
from py4j.protocol import Py4JJavaError

from capstone_assets.resources.lake import filesystem
from capstone_assets.resources.landing import uses_spark_connect
from capstone_assets.resources.pyfs import PyFileSystem, UnsupportedStore


def both(spark, root):
    hadoop, _ = filesystem(spark, str(root))
    python = PyFileSystem(str(root))
    return {
        "hadoop": (hadoop, lambda p: spark._jvm.org.apache.hadoop.fs.Path(str(p))),
        "python": (python, python.path),
    }


def statuses(found) -> list[tuple]:
    return sorted(
        (s.getPath().toString(), s.getPath().getName(), bool(s.isDirectory()), s.getLen() if not s.isDirectory() else 0)
        for s in found
    )


def not_found(call) -> str:
    """What a call on a missing path does: "not found" (Hadoop's FileNotFoundException, Python's
    FileNotFoundError) or its return value."""
    try:
        return call()
    except (FileNotFoundError, Py4JJavaError) as error:
        if "FileNotFound" in type(error).__name__ + str(error):
            return "not found"
        raise


def lay_out(root):
    (root / "day" / "NYSE").mkdir(parents=True)
    (root / "day" / "NYSE" / "b1.txt").write_text("abc\n")
    (root / "day" / "NYSE" / "b2.txt").write_text("abcdef\n")
    (root / "day" / "_staging").mkdir()
    (root / "day" / "x.swap.json").write_text("{}")
    (root / "elsewhere").mkdir(parents=True)
    (root / "elsewhere" / "b3.txt").write_text("ab\n")
    (root / "day" / "CBOE").symlink_to(root / "elsewhere")  # a folder through a link: followed


def test_listing_and_lookups_agree(spark, tmp_path):
    answers = {}
    for name, (fs, path) in both(spark, tmp_path).items():
        root = tmp_path / name
        lay_out(root)
        answers[name] = [
            [s.replace(f"/{name}/", "/X/") for s in map(str, row)]
            for row in (
                statuses(fs.listStatus(path(root / "day"))),
                statuses(fs.listStatus(path(root / "day" / "NYSE" / "b1.txt"))),
                statuses(fs.globStatus(path(f"{root}/day/*.swap.json"))),
                statuses(fs.globStatus(path(f"{root}/day/*.none"))),
                [fs.exists(path(root / "day")), fs.exists(path(root / "nothing"))],
                [fs.makeQualified(path(root / "day")).toString(), fs.getScheme()],
            )
        ]
        files = fs.listFiles(path(root / "day"), True)
        listed = []
        while files.hasNext():
            listed.append(files.next())
        answers[name].append([str(row).replace(f"/{name}/", "/X/") for row in statuses(listed)])
    assert answers["python"] == answers["hadoop"]
    assert answers["python"][0][0].startswith("('file:/")  # Hadoop's qualified form


def test_renames_deletes_and_missing_files_agree(spark, tmp_path):
    answers = {}
    for name, (fs, path) in both(spark, tmp_path).items():
        root = tmp_path / name
        lay_out(root)
        (root / "other").mkdir()
        steps = [
            fs.rename(path(root / "day" / "NYSE"), path(root / "moved")),  # to a new name
            not_found(lambda: fs.rename(path(root / "missing"), path(root / "moved2"))),  # nothing to move
            fs.rename(path(root / "moved"), path(root / "other")),  # onto a folder: nests inside
            sorted(p.name for p in (root / "other").iterdir()),
            fs.delete(path(root / "other"), True),
            fs.exists(path(root / "other")),
        ]
        out = fs.create(path(root / "day" / "j.tmp"), False)
        out.write(bytearray(b"journal"))
        out.close()
        stream = fs.open(path(root / "day" / "j.tmp"))
        steps.append(bytes(stream.readAllBytes()))
        stream.close()
        steps.append(not_found(lambda: fs.open(path(root / "day" / "none.json"))))
        steps.append(not_found(lambda: fs.listStatus(path(root / "gone"))))
        with pytest.raises(Exception):  # create without overwrite on an existing file
            fs.create(path(root / "day" / "j.tmp"), False)
        answers[name] = steps
    assert answers["python"] == answers["hadoop"]
    assert answers["python"][:3] == [True, "not found", True]


def test_sessions_go_to_spark_connect_when_its_variables_say_so():
    assert uses_spark_connect({"SPARK_REMOTE": "sc://spark:15002"})
    assert uses_spark_connect({"SPARK_API_MODE": "Connect", "SPARK_LOCAL_CONNECT_REUSE": "1"})
    assert not uses_spark_connect({"SPARK_API_MODE": "classic"})
    assert not uses_spark_connect({"SPARK_REMOTE": ""})
    assert not uses_spark_connect({})


def test_stores_it_cannot_reach_without_a_jvm_are_refused_by_name():
    for root in ("hdfs://namenode:8020/lake", "abfss://lake@account.dfs.core.windows.net/x"):
        with pytest.raises(UnsupportedStore, match="without Spark Connect"):
            PyFileSystem(root)
