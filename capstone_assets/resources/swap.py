"""Switching staged days into the lake: a journal, then renames, then clean-up.

A *switch* puts the staged versions of one day of one or more assets in place.
Before its first rename, a journal listing every move (staged folder, live
folder, backup, the staged data files) is written into the `_staging` folder
of each asset concerned. From the moment every copy exists the switch is
decided, and the lake's state says which way it goes:

* forward, while every staged day is still whole or already in place;
* back, as soon as one that is not in place is gone (deleting one is how a
  writer undoes a switch, so readers agree at once).

Readers use the same rule to see one whole version of the day: never a mix of
assets, never nothing. Only a writer, holding the day's claim, settles what an
interrupted switch left (`recover`); readers only look. Every rename goes
through `move_in`, which never renames into an existing folder (Hadoop would
nest the folder inside it).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

from py4j.protocol import Py4JJavaError

JOURNAL = ".swap.json"
NEW, ASIDE, OLD, CONFLICT = "new", "aside", "old", "conflict"


@dataclass(frozen=True)
class Slot:
    """Where one asset's day lives: the live folder, its backup, the staging folder beside them."""

    asset: str
    day: str
    final: str
    backup: str
    staging: str

    def journal(self, switch_id: str) -> str:
        return f"{self.staging}/trade_dt={self.day}.{switch_id}{JOURNAL}"


@dataclass(frozen=True)
class Move:
    slot: Slot
    staged: str
    files: frozenset[str]  # the staged day's data files: how it is recognised once moved in
    had_previous: bool


@dataclass(frozen=True)
class Journal:
    id: str
    day: str
    moves: tuple[Move, ...]

    def copies(self) -> list[str]:
        return [move.slot.journal(self.id) for move in self.moves]

    def move(self, asset: str) -> Move:
        return next(move for move in self.moves if move.slot.asset == asset)

    def to_json(self) -> str:
        moves = [
            {**move.slot.__dict__, "staged": move.staged, "files": sorted(move.files),
             "had_previous": move.had_previous}
            for move in self.moves
        ]  # fmt: skip
        return json.dumps({"id": self.id, "day": self.day, "moves": moves}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> Journal:
        data = json.loads(text)
        moves = tuple(
            Move(Slot(m["asset"], m["day"], m["final"], m["backup"], m["staging"]), m["staged"],
                 frozenset(m["files"]), m["had_previous"])
            for m in data["moves"]
        )  # fmt: skip
        return cls(data["id"], data["day"], moves)


def _not_found(error: Py4JJavaError) -> bool:
    return error.java_exception.getClass().getName() == "java.io.FileNotFoundException"


class Swapper:
    """The switch protocol on one Hadoop FileSystem (`fs`), with `path` making its Path objects
    (or on `pyfs.PyFileSystem`, the same calls without a JVM)."""

    def __init__(self, fs, path, log):
        self._fs, self._path, self._log = fs, path, log

    # ------------------------------------------------------------ primitives
    def exists(self, path: str) -> bool:
        return bool(self._fs.exists(self._path(path)))

    def names(self, path: str) -> frozenset[str] | None:
        """The entries of a folder, hidden and marker files aside; None when it is not there."""
        try:
            statuses = self._fs.listStatus(self._path(path))
        except FileNotFoundError:  # the fsspec filesystem of a Spark Connect session (pyfs.py)
            return None
        except Py4JJavaError as error:
            if _not_found(error):
                return None
            raise
        names = (status.getPath().getName() for status in statuses)
        return frozenset(name for name in names if not name.startswith((".", "_")))

    def delete(self, path: str) -> None:
        self._fs.delete(self._path(path), True)

    def rename(self, src: str, dst: str) -> None:
        if not self._fs.rename(self._path(src), self._path(dst)):
            raise OSError(f"Could not rename {src} to {dst}")

    def move_in(self, move: Move) -> None:
        """Renames a staged day to the live name, never into a folder already there (it would nest)."""
        final = move.slot.final
        if self.exists(final):
            raise OSError(
                f"{final} exists, so renaming {move.staged} to it would nest it inside: something outside "
                "the platform wrote there while the day was set aside. Move that folder away, then re-run the day."
            )
        self.rename(move.staged, final)
        if self.names(final) != move.files:
            nested = f"{final}/{move.staged.rsplit('/', 1)[1]}"
            if self.exists(nested):
                self.rename(nested, move.staged)
            raise OSError(
                f"{final} appeared while {move.staged} was renamed to it: it would nest; left as it was"
            )

    def _write(self, path: str, text: str) -> None:
        """The file appears whole: written under a temporary name, then renamed."""
        partial = f"{path}.tmp"
        out = self._fs.create(self._path(partial), False)
        try:
            out.write(bytearray(text.encode()))
        finally:
            out.close()
        self.rename(partial, path)

    def _read(self, path: str) -> str | None:
        try:
            stream = self._fs.open(self._path(path))
        except FileNotFoundError:
            return None
        except Py4JJavaError as error:
            if _not_found(error):
                return None
            raise
        try:
            return bytes(stream.readAllBytes()).decode()
        finally:
            stream.close()

    def _glob(self, pattern: str) -> list:
        found = self._fs.globStatus(self._path(pattern))
        return sorted(found or [], key=lambda status: status.getModificationTime())

    # ------------------------------------------------------------- journals
    def journals(self, slot: Slot) -> list[Journal]:
        """The switches of a slot's day that name its asset, oldest first."""
        found = []
        for status in self._glob(f"{slot.staging}/trade_dt={slot.day}.*{JOURNAL}"):
            text = self._read(status.getPath().toString())
            if text is not None:  # removed meanwhile: that switch is over
                found.append(Journal.from_json(text))
        return found

    def complete(self, journal: Journal) -> bool:
        return all(self.exists(copy) for copy in journal.copies())

    def state(self, move: Move) -> str:
        final = self.names(move.slot.final)
        if final == move.files:
            return NEW
        if final is None:
            return ASIDE
        return CONFLICT if self.exists(move.slot.backup) else OLD

    def ready(self, move: Move) -> bool:
        # Staged first: a rename in between then finds the day moved in, never neither.
        return self.names(move.staged) == move.files or self.names(move.slot.final) == move.files

    def rolls_forward(self, journal: Journal) -> bool:
        return all(self.ready(move) for move in journal.moves)

    # --------------------------------------------------------------- readers
    def visible(self, slot: Slot) -> str | None:
        """The folder holding the version of the day a reader may see now; nothing is changed."""
        decided = [journal for journal in self.journals(slot) if self.complete(journal)]
        if decided:
            journal = decided[-1]
            move = journal.move(slot.asset)
            if self.rolls_forward(journal):
                return move.staged if self.names(move.staged) == move.files else slot.final
            state = self.state(move)
            if state in (OLD, CONFLICT):
                return slot.final
            if self.exists(slot.backup):
                return slot.backup
            return slot.final if state == NEW and move.had_previous else None  # as `_back` leaves it
        if self.exists(slot.final):
            return slot.final
        return slot.backup if self.exists(slot.backup) else None

    # --------------------------------------------------------------- writers
    def begin(self, day: str, staged: list[tuple[Slot, str]]) -> Journal:
        moves = []
        for slot, path in staged:
            files = self.names(path)
            if not files:
                raise FileNotFoundError(f"Nothing staged at {path}")
            moves.append(Move(slot, path, files, self.exists(slot.final)))
        journal = Journal(uuid.uuid4().hex, day, tuple(moves))
        try:
            for copy in journal.copies():
                self._write(copy, journal.to_json())
        except BaseException:
            self._forget(journal)
            raise
        return journal

    def switch(self, journal: Journal) -> None:
        """Moves every staged day in; on an error undoes the switch, or leaves it to the next run."""
        try:
            self._forward(journal)
        except BaseException:
            try:
                self._back(journal)
            except Exception as undo_error:
                self._log.error(
                    f"Could not undo the switch of {journal.day} ({undo_error}): the next run of "
                    f"{', '.join(m.slot.asset for m in journal.moves)} for {journal.day} settles it"
                )
            raise
        self._finish(journal)

    def recover(self, slot: Slot) -> None:
        """Settles what an interrupted run left for the slot's day: switches, then a bare backup."""
        for status in self._glob(f"{slot.staging}/trade_dt={slot.day}.*{JOURNAL}.tmp"):
            self._fs.delete(status.getPath(), False)
        for journal in self.journals(slot):
            if not self.complete(journal):  # never started, or finished but for its journal
                self._forget(journal)
            elif self.rolls_forward(journal):
                self._log.warning(f"Completing an interrupted switch of {journal.day}")
                self._forward(journal)
                self._finish(journal)
            else:
                self._log.warning(f"Undoing an interrupted switch of {journal.day}")
                self._back(journal)
        if self.exists(slot.backup):
            if self.exists(slot.final):
                self.delete(slot.backup)
            else:
                self._log.warning(f"Restoring {slot.asset} {slot.day} from an interrupted swap")
                self.rename(slot.backup, slot.final)

    def remove_abandoned(self, slot: Slot) -> None:
        """Deletes staged copies of the day left by a dead run, except those a switch still needs."""
        kept = {move.staged.rsplit("/", 1)[1] for journal in self.journals(slot) for move in journal.moves}
        for status in self._glob(f"{slot.staging}/trade_dt={slot.day}.*"):
            name = status.getPath().getName()
            if name in kept or name.endswith((".previous", JOURNAL)):
                continue
            self._log.info(f"Removing abandoned staging {status.getPath().toString()}")
            self._fs.delete(status.getPath(), True)

    def _forward(self, journal: Journal) -> None:
        for move in journal.moves:
            state = self.state(move)
            if state == CONFLICT:
                raise OSError(
                    f"{move.slot.final} and its backup {move.slot.backup} both exist: settle them by hand"
                )
            if state == OLD:
                self.rename(move.slot.final, move.slot.backup)
            if state != NEW:
                self.move_in(move)

    def _back(self, journal: Journal) -> None:
        conflicts = [move.slot.final for move in journal.moves if self.state(move) == CONFLICT]
        if conflicts:
            raise OSError(f"{', '.join(conflicts)} and their backups both exist: settle them by hand")
        # Deleting a staged day that is not in place decides the switch: readers turn to the old version.
        for move in journal.moves:
            if self.state(move) != NEW:
                self.delete(move.staged)
        for move in journal.moves:
            state, has_backup = self.state(move), self.exists(move.slot.backup)
            if state == NEW and (has_backup or not move.had_previous):
                self.delete(move.slot.final)
            if state in (NEW, ASIDE) and has_backup:
                self.rename(move.slot.backup, move.slot.final)
        self._forget(journal)

    def _finish(self, journal: Journal) -> None:
        for move in journal.moves:
            self.delete(move.slot.backup)
        self._forget(journal)

    def _forget(self, journal: Journal) -> None:
        for copy in journal.copies():
            self.delete(copy)
