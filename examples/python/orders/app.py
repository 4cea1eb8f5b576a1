"""Orders: validate, enrich and route JSON order events (Python; the same
processor as examples/js/orders, output for output).

Input value: a JSON object {"user": "<id>", "amount_cents": <integer>,
"country": "<XX>" (optional)}; a user id is 1-64 of [A-Za-z0-9_-], an
amount 0..2^53-1 (a JSON number with no fraction).

For a valid order it adds the user's running total and order count (host
state under b"u/" + user: 16 bytes, total then count, each 8 bytes
big-endian) and emits, keyed by the user,

    {"user":"u1","amount_cents":1250,"total_cents":3400,"orders":3,"country":"DE"}

("country":null when absent) to `large-topic` if the amount is at least
`large-threshold-cents`, else to the first output topic. An invalid record
goes, unchanged, to `invalid-topic` with an `error` header saying why; with
no `invalid-topic` it is a guest error (the host stops at it). Nothing is
dropped. The snapshot is the number of records processed, 8 bytes
big-endian.

Config ([processor.config]): `large-topic` (required), `large-threshold-cents`
(default 10000), `invalid-topic` (optional).
"""

import json
from typing import List, Optional, Tuple

import wit_world
from wasmstream_guest import InputRecord, OutputRecord, SnapshotOrigin, State, fail, output, u64_restore, u64_snapshot

MAX_AMOUNT = 2**53 - 1
USER_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")

# componentize-py makes a new `WitWorld` for every call of an export: what
# lasts between calls lives in the module.
processed = 0
large_topic = ""
threshold = 10000
invalid_topic: Optional[str] = None


def parse(value: Optional[bytes]) -> Tuple[str, int, Optional[str]]:
    """(user, amount, country) of a valid order; raises ValueError naming the problem."""
    def no_constants(name: str) -> None:
        raise ValueError(name)  # NaN and Infinity are not JSON

    try:
        order = json.loads((value or b"").decode("utf-8"), parse_constant=no_constants)
    except (UnicodeDecodeError, ValueError):
        raise ValueError("value is not a JSON object")
    if not isinstance(order, dict):
        raise ValueError("value is not a JSON object")
    user = order.get("user")
    if not isinstance(user, str) or not 1 <= len(user) <= 64 or not set(user) <= USER_CHARS:
        raise ValueError("`user` must be 1-64 of [A-Za-z0-9_-]")
    amount = order.get("amount_cents")
    if isinstance(amount, float) and amount.is_integer():
        amount = int(amount)
    if isinstance(amount, bool) or not isinstance(amount, int) or not 0 <= amount <= MAX_AMOUNT:
        raise ValueError("`amount_cents` must be an integer from 0 to 2^53-1")
    country = order.get("country")
    if country is not None and (not isinstance(country, str) or len(country) != 2 or not country.isascii() or not country.isalpha()):
        raise ValueError("`country` must be two letters")
    return user, amount, country


class WitWorld(wit_world.WitWorld):
    def init(self, config: List[Tuple[str, str]]) -> None:
        global large_topic, threshold, invalid_topic
        settings = dict(config)
        large_topic = settings.get("large-topic", "")
        if not large_topic:
            fail("processor config `large-topic` is required (the output topic of large orders)")
        t = settings.get("large-threshold-cents", "10000")
        if not t.isdecimal():
            fail(f"processor config `large-threshold-cents` = {t!r}: not a non-negative integer")
        threshold = int(t)
        invalid_topic = settings.get("invalid-topic") or None

    def process(self, input: InputRecord) -> List[OutputRecord]:
        global processed
        try:
            user, amount, country = parse(input.value)
        except ValueError as e:
            if invalid_topic is None:
                fail(f"order at {input.topic}/{input.partition}@{input.offset}: {e}")
            processed += 1
            return [output(input.key, input.value, [("error", str(e).encode())], topic=invalid_topic)]
        key = b"u/" + user.encode()
        stored = State.get(key)
        total, orders = (int.from_bytes(stored[:8], "big"), int.from_bytes(stored[8:], "big")) if stored and len(stored) == 16 else (0, 0)
        total, orders = total + amount, orders + 1
        State.put(key, total.to_bytes(8, "big") + orders.to_bytes(8, "big"))
        enriched = '{"user":"%s","amount_cents":%d,"total_cents":%d,"orders":%d,"country":%s}' % (
            user, amount, total, orders, '"%s"' % country if country is not None else "null")
        processed += 1
        topic = large_topic if amount >= threshold else None
        return [output(user.encode(), enriched.encode(), topic=topic)]

    def snapshot(self) -> bytes:
        return u64_snapshot(processed)

    def restore(self, snapshot: bytes, origin: SnapshotOrigin) -> None:
        global processed
        processed = u64_restore(snapshot)
