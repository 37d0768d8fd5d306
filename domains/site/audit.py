"""Append-only audit log of everything that happens to a datasite's data, kept as evidence.

One JSON object per line in ``DIR/audit.jsonl``. Each entry carries ``prev``, the MAC of the
entry before it, and ``mac``, an HMAC-SHA256 of the whole entry (``prev`` included) under the
random 32-byte key in ``DIR/audit.key`` (0600, made with the first entry, i.e. at deploy). A
plain hash chain can be recomputed by anyone who can write the file; this one cannot without
the key, so a rewritten log, an edited field, a deleted, inserted or reordered entry all break
it, and :meth:`AuditLog.verify` names the first line that does. ``DIR/audit.head`` keeps the
entry count and the last MAC (keyed as well), so that deleting the *last* entries is caught too.

Logs from before the key (``prev`` = SHA-256 of the previous line, no ``mac``) stay readable:
the key records how many such legacy lines preceded it and the hash of the last one, which
pins them from then on, and verify reports them as "legacy, unkeyed up to entry N". A keyed log
whose key is gone is an error, never a silent restart with a new key.

Appends and reads hold an exclusive lock on ``DIR/audit.lock`` (:func:`privacy.durable.file_lock`;
the log itself is never the lock file, which the lock truncates) so that two commands (say
``approve`` while ``audit`` syncs executions) never interleave. Events written by medsyft:
``deploy``, ``stop``, ``publish``, ``account-created``, ``approve``, ``deny``, and ``execution``:
runs happen inside the PySyft server, where medsyft has no hook, so they are copied in from
PySyft's records by
:meth:`domains.review.requests.RequestBook.sync_executions`, each at the time it really happened.
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from domains.errors import AuditKeyError, AuditLogError
from domains.site.datadir import AUDIT_HEAD_FILE, AUDIT_KEY_FILE, AUDIT_LOCK_FILE, DataDir
from privacy.durable import file_lock, utc_stamp

GENESIS = "0" * 64
COLUMNS = ["time", "event", "actor", "subject", "details"]
_ENTRY_CONTEXT = b"medsyft-audit-entry-v1\n"  # a MAC of one kind can never pass as the other
_HEAD_CONTEXT = b"medsyft-audit-head-v1\n"


def local_actor() -> str:
    """Who ran this command on this machine (the OS account), for entries medsyft writes."""
    try:
        return f"{getpass.getuser()}@local"
    except (KeyError, OSError):
        return f"uid{os.getuid()}@local"


def _sha256(line: str) -> str:
    return hashlib.sha256(line.encode()).hexdigest()


def _parse(line: str) -> dict[str, Any] | None:
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    return entry if isinstance(entry, dict) else None


def _chain_value(line: str) -> str:
    """What the next entry's ``prev`` must be: a keyed line's MAC, else the line's SHA-256."""
    entry = _parse(line)
    return str(entry["mac"]) if entry is not None and "mac" in entry else _sha256(line)


@dataclass(frozen=True)
class AuditKey:
    """The log's HMAC key, with the legacy (unkeyed) lines it found when it was made."""

    secret: bytes
    legacy_entries: int
    legacy_head: str  # SHA-256 of the last legacy line, GENESIS when there was none
    created: str

    @classmethod
    def generate(cls, legacy_lines: list[str]) -> AuditKey:
        head = _chain_value(legacy_lines[-1]) if legacy_lines else GENESIS
        return cls(secrets.token_bytes(32), len(legacy_lines), head, utc_stamp())

    @classmethod
    def read(cls, path: Path) -> AuditKey:
        try:
            raw = json.loads(path.read_text())
            secret = bytes.fromhex(raw["key"])
            if len(secret) != 32:
                raise ValueError(f"the key is {len(secret)} bytes, not 32")
            return cls(secret, int(raw["legacy_entries"]), str(raw["legacy_head"]), str(raw["created"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise AuditKeyError(
                f"cannot read the audit key {path} ({exc}); run medsyft as the user that deployed "
                "this datasite, or restore the file from a backup"
            ) from exc

    def to_json(self) -> str:
        return json.dumps({"key": self.secret.hex(), "legacy_entries": self.legacy_entries,
                           "legacy_head": self.legacy_head, "created": self.created}, indent=2)

    def mac(self, entry: dict[str, Any]) -> str:
        body = json.dumps({k: v for k, v in entry.items() if k != "mac"}, sort_keys=True,
                          separators=(",", ":"))
        return hmac.new(self.secret, _ENTRY_CONTEXT + body.encode(), hashlib.sha256).hexdigest()

    def head_tag(self, entries: int, last: str) -> str:
        body = f"{entries}\n{last}".encode()
        return hmac.new(self.secret, _HEAD_CONTEXT + body, hashlib.sha256).hexdigest()

    @property
    def fingerprint(self) -> str:
        """Safe to print or write down elsewhere, to recognise the key later; reveals nothing."""
        return hashlib.sha256(self.secret).hexdigest()[:16]


@dataclass(frozen=True)
class Verification:
    """What :meth:`AuditLog.verify` proved about the log."""

    entries: int
    legacy_entries: int = 0
    key_fingerprint: str | None = None
    note: str = ""

    def summary(self) -> str:
        if self.entries == 0:
            return "audit log is empty"
        if self.key_fingerprint is None:
            return (f"audit log OK: {self.entries} entries, legacy, unkeyed up to entry {self.entries} "
                    "(a plain SHA-256 chain, which anyone who can write the file can recompute); "
                    "the next entry creates the key and starts the keyed chain")
        text = (f"audit log OK: {self.entries} entries, {self.entries - self.legacy_entries} keyed "
                f"(HMAC-SHA256, key fingerprint {self.key_fingerprint})")
        if self.legacy_entries:
            text += (f"; legacy, unkeyed up to entry {self.legacy_entries}: written before the key, "
                     "unchanged since it was made, but not proven before that")
        return f"{text}; {self.note}" if self.note else text


@dataclass(frozen=True)
class _Line:
    number: int
    text: str
    entry: dict[str, Any] | None  # None: not a JSON object

    @property
    def where(self) -> str:
        if self.entry is None:
            return f"line {self.number}"
        return f"line {self.number} ({self.entry.get('time')} {self.entry.get('event')})"


class AuditLog:
    """The keyed, chained JSONL audit log of one datasite (key and head beside it)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._dir = DataDir(path.parent)
        self.key_path = self._dir.file(AUDIT_KEY_FILE)
        self.head_path = self._dir.file(AUDIT_HEAD_FILE)
        self.lock_path = self._dir.file(AUDIT_LOCK_FILE)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[Any]:
        """The log opened for reading and appending, under the log's lock."""
        with file_lock(self.lock_path), open(self.path, "a+", encoding="utf-8") as fh:
            yield fh

    def append(
        self,
        event: str,
        *,
        actor: str,
        subject: str = "",
        time: str | None = None,
        **details: Any,
    ) -> dict[str, Any]:
        """Append one entry; *time* is when the event happened, by default now (UTC, ISO 8601)."""
        with self._locked() as fh:
            fh.seek(0)
            text = fh.read()
            lines = text.splitlines()
            key = self._key(lines) or self._new_key(lines)
            entry: dict[str, Any] = json.loads(json.dumps({  # the MAC covers what a reader parses
                "time": time or utc_stamp(), "event": event, "actor": actor, "subject": subject,
                "details": details, "prev": _chain_value(lines[-1]) if lines else GENESIS,
            }, default=str))
            entry["mac"] = key.mac(entry)
            fh.seek(0, os.SEEK_END)
            cut = "\n" if text and not text.endswith("\n") else ""  # keep a cut line visible as one
            fh.write(cut + json.dumps(entry, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
            if self._head_agrees(key, lines):  # else leave the evidence of what broke it
                self._write_head(key, len(lines) + 1, entry["mac"])
        return entry

    def entries(self) -> list[dict[str, Any]]:
        """The entries as they stand, unverified (see :meth:`verify`)."""
        if not self.path.exists():
            return []
        with self._locked() as fh:
            fh.seek(0)
            lines = fh.read().splitlines()
        out = []
        for number, line in enumerate(lines, start=1):
            entry = _parse(line)
            if entry is None and line.strip():
                raise AuditLogError(f"{self.path} line {number} is not a JSON entry (cut short or "
                                    "edited); see `medsyft domain audit --verify`")
            out += [entry] if entry is not None else []
        return out

    def keys(self, event: str, field: str) -> set[str]:
        """Values of ``details[field]`` over entries of one event type (for de-duplication)."""
        return {
            str(e["details"].get(field))
            for e in self.entries()
            if e["event"] == event and field in e["details"]
        }

    # -- key and head --------------------------------------------------------------
    def _key(self, lines: list[str]) -> AuditKey | None:
        """The key, or None for a log that was never keyed; a keyed log without it is an error."""
        if self.key_path.exists():
            return AuditKey.read(self.key_path)
        keyed = next((n for n, line in enumerate(lines, 1) if "mac" in (_parse(line) or {})), None)
        if keyed is None and not self.head_path.exists():
            return None
        found = f"entries from line {keyed} on are keyed" if keyed else f"{self.head_path.name} exists"
        raise AuditKeyError(
            f"the audit key {self.key_path} is missing but {self.path} was keyed ({found}); restore "
            "the key from a backup: without it the log cannot be verified, and medsyft will not "
            "start a new key over a keyed log"
        )

    def _new_key(self, lines: list[str]) -> AuditKey:
        key = AuditKey.generate(lines)
        self._dir.write_audit_file(AUDIT_KEY_FILE, key.to_json())
        self._write_head(key, key.legacy_entries, key.legacy_head)
        return key

    def _write_head(self, key: AuditKey, entries: int, last: str) -> None:
        head = {"entries": entries, "mac": last, "tag": key.head_tag(entries, last)}
        self._dir.write_audit_file(AUDIT_HEAD_FILE, json.dumps(head))

    def _head_text(self) -> str | None:
        try:
            return self.head_path.read_text()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise AuditLogError(f"cannot read {self.head_path} ({exc.strerror})") from exc

    def _read_head(self, text: str | None) -> tuple[int, str, str]:
        if text is None:
            raise AuditLogError(
                f"{self.head_path} is missing, so the end of {self.path} cannot be checked (deleting "
                "it would hide removed last entries); restore it from a backup"
            )
        try:
            raw = json.loads(text)
            return int(raw["entries"]), str(raw["mac"]), str(raw["tag"])
        except (ValueError, KeyError, TypeError) as exc:
            raise AuditLogError(f"{self.head_path} is damaged ({exc}); restore it from a backup") from exc

    def _head_agrees(self, key: AuditKey, lines: list[str]) -> bool:
        """Whether the head matches the log an append found (or is one append behind it), so that
        moving it on cannot paper over deleted last entries or a replaced head."""
        try:
            entries, last, tag = self._read_head(self._head_text())
        except AuditLogError:
            return False
        if not hmac.compare_digest(tag, key.head_tag(entries, last)):
            return False
        if not len(lines) - 1 <= entries <= len(lines):
            return False
        return last == (_chain_value(lines[entries - 1]) if entries else GENESIS)

    # -- verification --------------------------------------------------------------
    def verify(self) -> Verification:
        """Check the whole log; return what it proved, or raise AuditLogError naming the first
        line that breaks and why. Reads only: nothing is appended or repaired."""
        text, key, head = self._snapshot()
        lines = [_Line(n, t, _parse(t)) for n, t in enumerate(text.splitlines(), start=1)]
        if lines and not text.endswith("\n"):
            raise self._broken(lines[-1], "it has no line end: the file was cut short")
        if key is None:
            self._check_legacy(lines)
            return Verification(len(lines), len(lines))
        if len(lines) < key.legacy_entries:
            raise AuditLogError(
                f"{self.path} has {len(lines)} lines but its key was made after line "
                f"{key.legacy_entries}: entries were deleted"
            )
        chain = self._check_legacy(lines[: key.legacy_entries])
        if key.legacy_entries and chain[-1] != key.legacy_head:
            raise self._broken(lines[key.legacy_entries - 1], "the legacy entries up to here changed "
                               f"since {self.key_path.name} was made: one of them was edited")
        chain += self._check_keyed(lines[key.legacy_entries:], key, chain[-1])
        return Verification(len(lines), key.legacy_entries, key.fingerprint,
                            self._check_head(key, chain, head))

    def _snapshot(self) -> tuple[str, AuditKey | None, str | None]:
        """The log, its key and its head, read under the lock so that no append falls between."""
        if not self.path.exists():
            return "", self._key([]), self._head_text()
        with self._locked() as fh:
            fh.seek(0)
            text = fh.read()
            return text, self._key(text.splitlines()), self._head_text()

    def _broken(self, line: _Line, why: str) -> AuditLogError:
        return AuditLogError(f"{self.path} {line.where}: {why}")

    def _check_legacy(self, lines: list[_Line]) -> list[str]:
        """The unkeyed SHA-256 chain; returns the chain value after each line (GENESIS first)."""
        chain = [GENESIS]
        for line in lines:
            if line.entry is None:
                raise self._broken(line, "not a JSON entry: the line was cut short or edited")
            if line.entry.get("prev") != chain[-1]:
                raise self._broken(line, "hash chain broken: an earlier entry was edited or removed")
            chain.append(_sha256(line.text))
        return chain

    def _check_keyed(self, lines: list[_Line], key: AuditKey, prev: str) -> list[str]:
        chain = []
        for line in lines:
            if line.entry is None:
                raise self._broken(line, "not a JSON entry: the line was cut short or edited")
            if "mac" not in line.entry:
                raise self._broken(line, f"it carries no MAC, but the log is keyed from line "
                                   f"{key.legacy_entries + 1} on: it was written or rewritten "
                                   "without the key")
            if line.entry.get("prev") != prev:
                raise self._broken(line, "it does not follow the entry before it: an entry was "
                                   "deleted, inserted or moved")
            if not hmac.compare_digest(str(line.entry["mac"]), key.mac(line.entry)):
                raise self._broken(line, "its MAC does not verify: the entry was edited, or written "
                                   "without the key")
            prev = str(line.entry["mac"])
            chain.append(prev)
        return chain

    def _check_head(self, key: AuditKey, chain: list[str], head: str | None) -> str:
        """Compare the end of the log with the keyed head; returns a note, or raises."""
        entries, last, tag = self._read_head(head)
        total = len(chain) - 1
        if not hmac.compare_digest(tag, key.head_tag(entries, last)):
            raise AuditLogError(f"{self.head_path} does not verify under the key: it was edited")
        if entries > total:
            raise AuditLogError(f"{self.path} ends at line {total} but {self.head_path.name} records "
                                f"{entries} entries: the last {entries - total} were deleted")
        if chain[entries] != last:
            raise AuditLogError(f"{self.path} line {entries} is not the entry {self.head_path.name} "
                                "recorded: the log was rewritten")
        if total - entries > 1:
            raise AuditLogError(f"{self.head_path.name} records {entries} entries but {self.path} has "
                                f"{total}: the head was replaced by an older copy")
        if total - entries == 1:
            return f"line {total} was written by an append interrupted before its head update"
        return ""

    def to_frame(self) -> pd.DataFrame:
        """The log as a table, oldest first; ``details`` flattened to compact JSON."""
        rows = [
            {
                "time": e["time"],
                "event": e["event"],
                "actor": e["actor"],
                "subject": e["subject"],
                "details": json.dumps(e["details"], sort_keys=True, default=str),
            }
            for e in self.entries()
        ]
        frame = pd.DataFrame(rows, columns=COLUMNS)
        return frame.sort_values("time", kind="stable").reset_index(drop=True)
