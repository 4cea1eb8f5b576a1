"""The conformance suite's echo processor (tests/conformance/README.md), in Python."""

from typing import List, Tuple

import wit_world
from wasmstream_guest import InputRecord, OutputRecord, SnapshotOrigin, fail, u64_restore, u64_snapshot
from wit_world.imports.types import Header


# componentize-py makes a new `WitWorld` for every call of an export: what
# lasts between calls lives in the module.
echoed = 0


class WitWorld(wit_world.WitWorld):
    def init(self, config: List[Tuple[str, str]]) -> None:
        pass

    def process(self, input: InputRecord) -> List[OutputRecord]:
        global echoed
        if input.value == b"fail":
            fail(f"asked to fail at offset {input.offset}")
        echoed += 1
        headers = [Header(key=h.key, value=h.value) for h in input.headers]
        return [OutputRecord(topic=None, key=input.key, value=input.value, headers=headers, timestamp=None)]

    def snapshot(self) -> bytes:
        return u64_snapshot(echoed)

    def restore(self, snapshot: bytes, origin: SnapshotOrigin) -> None:
        global echoed
        echoed = u64_restore(snapshot)
