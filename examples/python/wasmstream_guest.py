"""A small helper for wasmstream processors written in Python.

componentize-py generates the bindings of the `wasmstream:processor/processor`
world (the `wit_world` package) when it builds the component; this module
wraps the parts every processor uses in Python conventions:

- `State`: the task's host-managed key-value state (`bytes` keys and values),
  with `get_u64`/`put_u64` counters stored as 8 bytes big-endian, the same
  encoding as the Rust SDK's, so that processors in any language read each
  other's state.
- `u64_snapshot(n)` / `u64_restore(snapshot)`: a snapshot of one counter.
- `SnapshotOrigin`: the second argument of `restore(snapshot, origin)`,
  which module took the snapshot: `origin.module_digest` (the SHA-256 of
  that component, lowercase hex) and `origin.same_module` (False after a hot
  swap or a change of the configured module: the bytes may be in an older
  version's format, for this one to migrate before restoring them).
- `fail(message)`: ends `init`, `process` or `restore` with an error the host
  reports (naming the record), instead of a trap.
- `output(...)`: an output record; `header_value(record, key)`: a header.
- `log_info` and friends: lines in the host's log, tagged with the task.

Anything Python raises other than `fail` traps the instance: the host
reports the trap and does not use the instance again.
"""

from typing import List, NoReturn, Optional, Tuple

from componentize_py_types import Err
from wit_world.imports import log, state
from wit_world.imports.types import Header, InputRecord, OutputRecord, SnapshotOrigin

__all__ = [
    "State",
    "fail",
    "output",
    "header_value",
    "u64_snapshot",
    "u64_restore",
    "log_info",
    "log_warn",
    "InputRecord",
    "OutputRecord",
    "SnapshotOrigin",
]


class State:
    """The task's state: one store per input partition, made durable with the
    input offsets at each checkpoint (after a crash it is what the records
    before the restored offset wrote)."""

    @staticmethod
    def get(key: bytes) -> Optional[bytes]:
        return state.get(key)

    @staticmethod
    def put(key: bytes, value: bytes) -> None:
        state.put(key, value)

    @staticmethod
    def delete(key: bytes) -> None:
        state.delete(key)

    @staticmethod
    def scan_prefix(prefix: bytes, limit: int = 0) -> List[Tuple[bytes, bytes]]:
        """Entries whose key starts with `prefix`, in key order (`limit` 0: all)."""
        return state.scan_prefix(prefix, limit)

    @staticmethod
    def get_u64(key: bytes) -> Optional[int]:
        """A counter written by `put_u64` (None if absent or not 8 bytes)."""
        value = state.get(key)
        if value is None or len(value) != 8:
            return None
        return int.from_bytes(value, "big")

    @staticmethod
    def put_u64(key: bytes, value: int) -> None:
        state.put(key, value.to_bytes(8, "big"))


def fail(message: str) -> NoReturn:
    """Reports an error to the host (which names the record) instead of trapping."""
    raise Err(message)


def u64_snapshot(n: int) -> bytes:
    """A snapshot of one counter: 8 bytes big-endian."""
    return n.to_bytes(8, "big")


def u64_restore(snapshot: bytes) -> int:
    """The counter of a `u64_snapshot`; `fail`s on a snapshot of another size.

    `restore(snapshot, origin)` calls it with the bytes alone: a processor
    whose snapshot format changed looks at `origin.same_module` (and
    `origin.module_digest`) first and converts an older format."""
    if len(snapshot) != 8:
        fail(f"snapshot has {len(snapshot)} bytes, expected 8")
    return int.from_bytes(snapshot, "big")


def output(
    key: Optional[bytes],
    value: Optional[bytes],
    headers: Optional[List[Tuple[str, Optional[bytes]]]] = None,
    topic: Optional[str] = None,
    timestamp: Optional[int] = None,
) -> OutputRecord:
    """An output record; `topic` None: the first configured output topic;
    `timestamp` None: the input record's."""
    return OutputRecord(
        topic=topic,
        key=key,
        value=value,
        headers=[Header(key=k, value=v) for k, v in headers or []],
        timestamp=timestamp,
    )


def header_value(record: InputRecord, key: str) -> Optional[bytes]:
    """The value of the first header named `key` (None if absent or valueless)."""
    for h in record.headers:
        if h.key == key:
            return h.value
    return None


def log_info(message: str) -> None:
    log.log(log.Level.INFO, message)


def log_warn(message: str) -> None:
    log.log(log.Level.WARN, message)
