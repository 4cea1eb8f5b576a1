"""Word count, in Python: the same processor as the Rust example
(examples/wordcount), output for output.

Splits each record's value into words (lower-cased, split at anything that
is not alphanumeric or an apostrophe, apostrophes trimmed from both ends),
keeps one counter per word in host state under b"w/" + word (8 bytes
big-endian, as the Rust SDK's `put_u64`), and emits one `word -> count`
record per word occurrence, the count being the running total after it,
with a `source-partition` header. Its snapshot is the number of records it
has processed, 8 bytes big-endian.

Config (`[processor.config]`): `min-length` (default 1) drops shorter words.

Python's `str.isalnum` and Rust's `char::is_alphanumeric` agree on letters
and digits of every common script; they differ on some combining marks
(Rust counts a mark with the Unicode `Alphabetic` property as part of a
word, Python does not), so text with such marks may split differently.
"""

from typing import List, Tuple

import wit_world
from wasmstream_guest import InputRecord, OutputRecord, SnapshotOrigin, State, fail, output, u64_restore, u64_snapshot


def words(text: str) -> List[str]:
    out: List[str] = []
    current: List[str] = []
    for c in text + " ":
        if c.isalnum() or c == "'":
            current.append(c)
        elif current:
            w = "".join(current).strip("'").lower()
            if w:
                out.append(w)
            current = []
    return out


# componentize-py makes a new `WitWorld` for every call of an export, so what
# must last from one call to the next lives in the module.
processed = 0
min_length = 1


class WitWorld(wit_world.WitWorld):
    def init(self, config: List[Tuple[str, str]]) -> None:
        global min_length
        for key, value in config:
            if key == "min-length":
                if not value.isdecimal():
                    fail(f"processor config `min-length` = {value!r}: not a non-negative integer")
                min_length = int(value)

    def process(self, input: InputRecord) -> List[OutputRecord]:
        global processed
        try:
            text = (input.value or b"").decode("utf-8")
        except UnicodeDecodeError as e:
            fail(f"value of {input.topic}/{input.partition}@{input.offset} is not UTF-8: {e}")
        partition = str(input.partition).encode()
        outputs = []
        for word in words(text):
            if len(word) < min_length:
                continue
            key = b"w/" + word.encode()
            count = (State.get_u64(key) or 0) + 1
            State.put_u64(key, count)
            outputs.append(output(word.encode(), str(count).encode(), [("source-partition", partition)]))
        processed += 1
        return outputs

    def snapshot(self) -> bytes:
        return u64_snapshot(processed)

    def restore(self, snapshot: bytes, origin: SnapshotOrigin) -> None:
        global processed
        processed = u64_restore(snapshot)
