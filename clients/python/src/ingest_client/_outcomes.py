"""What became of each item (docs/clients.md, "Outcomes"), and the counters of `stats()`.

Every item ends in exactly one `Outcome`. The functions here turn a server answer into
per-item outcomes; the delivery loop (`_engine.py`) decides *when* an answer is final.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    FAILED = "failed"
    DROPPED = "dropped"


class Kind(StrEnum):
    EVENT = "event"
    CONTACT = "contact"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class Outcome:
    """The final outcome of one item.

    - `accepted`: `committed` (True when answered 200 under `sync`), `attempts`, `http_status`.
    - `rejected`: `errors` (field -> messages; `{"_request": [message]}` when the whole
      request was refused, `{"_item": ["Too large"]}` for an item over `max_batch_bytes`),
      `http_status` (None for an item refused before sending), `attempts`.
    - `failed`: `message` (the last error), `http_status` if the last attempt had one,
      `attempts`.
    - `dropped`: `message`.

    `item` is the item as enqueued (a copy, with the generated `_event_id` of an event);
    for a `delete` it is `{"_user_id": user_id}`.
    """

    status: Status
    kind: Kind
    item: dict[str, Any]
    attempts: int = 0
    committed: bool = False
    errors: dict[str, list[str]] | None = None
    http_status: int | None = None
    message: str | None = None

    @property
    def ok(self) -> bool:
        """True when the item was accepted by the server."""
        return self.status is Status.ACCEPTED


@dataclass(frozen=True, slots=True)
class Stats:
    """Counts since the client was made (a snapshot).

    `enqueued` counts every item given to `track()`/`upsert()`/`delete()` that got an
    outcome handle, so at any moment
    `enqueued == accepted + rejected + failed + dropped + queued`.
    `sent` counts items once per attempt, `requests` the HTTP attempts, `retries` the
    attempts after a request's first.
    """

    enqueued: int = 0
    sent: int = 0
    accepted: int = 0
    rejected: int = 0
    failed: int = 0
    dropped: int = 0
    retries: int = 0
    requests: int = 0
    queued: int = 0


class Counters:
    """The live counters behind `stats()`; safe to update from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values = dict.fromkeys(Stats.__dataclass_fields__, 0)

    def add(self, **deltas: int) -> None:
        with self._lock:
            for name, delta in deltas.items():
                self._values[name] += delta

    def snapshot(self) -> Stats:
        with self._lock:
            return Stats(**self._values)


_FINAL_COUNTER = {
    Status.ACCEPTED: "accepted",
    Status.REJECTED: "rejected",
    Status.FAILED: "failed",
    Status.DROPPED: "dropped",
}


def counter_for(status: Status) -> str:
    return _FINAL_COUNTER[status]


class UnreadableAnswerError(ValueError):
    """A 200/202/422 whose body is not a batch answer for the items sent."""


def item_results(body: bytes, expected: int) -> list[tuple[bool, dict[str, list[str]]]]:
    """Parse a batch answer: `(success, errors)` per item, in request order.

    Raises `UnreadableAnswerError` when the body is not a batch answer with one entry per
    item sent.
    """
    try:
        answer = json.loads(body)
        items = answer["entity"]["items"]
    except (ValueError, TypeError, KeyError) as exc:
        raise UnreadableAnswerError(f"not a batch answer: {exc}") from None
    if not isinstance(items, list) or len(items) != expected:
        got = len(items) if isinstance(items, list) else type(items).__name__
        raise UnreadableAnswerError(f"batch answer has {got} items, {expected} were sent")
    results: list[tuple[bool, dict[str, list[str]]]] = []
    for entry in items:
        if not isinstance(entry, dict):
            raise UnreadableAnswerError("batch answer item is not an object")
        if entry.get("status") == "success":
            results.append((True, {}))
            continue
        raw = entry.get("errors")
        errors: dict[str, list[str]] = {}
        if isinstance(raw, dict):
            for field, messages in raw.items():
                if isinstance(messages, list):
                    errors[str(field)] = [str(m) for m in messages]
                else:
                    errors[str(field)] = [str(messages)]
        results.append((False, errors or {"_item": ["error"]}))
    return results


def request_message(body: bytes, status: int, reason: str) -> str:
    """The one message of a whole-request answer: its JSON `message`, else the status."""
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("message"), str):
        return str(parsed["message"])
    text = f"HTTP {status}"
    return f"{text} {reason}" if reason else text
