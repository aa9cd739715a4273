"""A check of schemathesis's for scripts/fuzz-api.sh (loaded by scripts/schemathesis.toml).

`batch_item_outcomes`: the batch endpoints answer partial success (202 with the invalid
items marked `"status": "error"`), so schemathesis's own checks can only look at the
whole request: a batch with one bad item among good ones is rightly a 202, and a batch of
items that JSON Schema admits but a rule it cannot state refuses (an RFC-invalid address,
a date too far ahead) is rightly a 422. This check looks at every item instead, against
the item schema of the document the gateway serves:

- the answer lists one outcome per item, in request order, echoing `_user_id` (and, for
  events, `_event_id`) when it was a string; its counts add up; 422 exactly when no item
  was accepted;
- an item the schema refuses must be refused (`"status": "error"`): otherwise the schema
  is stricter than the code, or the code accepts what it should not;
- an item the schema admits must be accepted, unless every error it got is one of the
  rules JSON Schema cannot state (`UNSTATABLE` below): otherwise the schema is looser than
  the code.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone

import jsonschema_rs
import schemathesis

BASE = "/v1/project/{project}/datasource/{datasource}/stream"
ITEM_SCHEMAS = {f"{BASE}/contacts": "ContactItem", f"{BASE}/events": "EventItem"}
MAX_ITEM_BYTES = 32 * 1024

_validators: dict[tuple[int, str], jsonschema_rs.Validator] = {}


def _validator(document: dict, name: str):
    key = (id(document), name)
    if key not in _validators:
        root = {"$ref": f"#/components/schemas/{name}", "components": document["components"]}
        _validators[key] = jsonschema_rs.validator_for(root, validate_formats=True)
    return _validators[key]


RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.\d+)?(?:[Zz]|([+-])(\d{2}):(\d{2}))$"
)


def _outside_utc_years(value: object) -> bool:
    """A valid RFC 3339 date-time whose instant is not within the years 0001-9999 in UTC."""
    match = RFC3339.match(value) if isinstance(value, str) else None
    if match is None:
        return False
    year, month, day, hour, minute = (int(g) for g in match.groups()[:5])
    if year == 0:
        return True
    offset = timedelta(0)
    if match.group(7):
        offset = timedelta(hours=int(match.group(8)), minutes=int(match.group(9)))
        if match.group(7) == "-":
            offset = -offset
    try:
        datetime(year, month, day, hour, minute, tzinfo=timezone.utc) - offset
    except OverflowError:
        return True
    except ValueError:
        return False
    return False


def _item_text_sizes(item: object) -> list[int]:
    # The item's text as sent: `requests` writes it with `json.dumps` defaults.
    return [len(json.dumps(item).encode()), len(json.dumps(item, ensure_ascii=False).encode())]


def _unstatable(item: object, field: str, messages: list[str]) -> bool:
    """Errors JSON Schema cannot state, so a schema-valid item may still get them."""
    allowed: set[str] = set()
    if field == "_email":
        # RFC 5321/5322 syntax and the domain-with-a-dot rule, beyond `format: idn-email`.
        allowed = {"Invalid format"}
    elif field == "_event_date":
        # At most 24 h after receipt: relative to the clock, not statable.
        allowed = {"Too far in the future"}
        if _outside_utc_years(item.get("_event_date") if isinstance(item, dict) else None):
            allowed.add("Invalid format")
    elif field == "_item" and max(_item_text_sizes(item)) > MAX_ITEM_BYTES:
        allowed = {"Too large"}
    return set(messages) <= allowed if allowed else False


@schemathesis.check
def batch_item_outcomes(ctx, response, case):
    """Every item's outcome in a batch answer agrees with the item schema."""
    name = ITEM_SCHEMAS.get(case.operation.path)
    if name is None or case.method.upper() != "POST" or response.status_code not in (200, 202, 422):
        return None
    items = case.body
    if not isinstance(items, list):
        return None
    try:
        entity = response.json()["entity"]
        outcomes = entity["items"]
    except (ValueError, KeyError, TypeError):
        # Not a batch answer at all: the content type and response schema checks say so.
        return None
    problems: list[str] = []
    if len(outcomes) != len(items):
        raise AssertionError(f"{len(items)} items sent, {len(outcomes)} outcomes answered")
    successful = sum(1 for o in outcomes if o["status"] == "success")
    if (entity["successful"], entity["failed"]) != (successful, len(outcomes) - successful):
        problems.append(f"counts {entity['successful']}/{entity['failed']} do not match the items")
    if (response.status_code == 422) != (successful == 0):
        problems.append(f"{response.status_code} with {successful} item(s) accepted")
    validator = _validator(case.operation.schema.raw_schema, name)
    for index, (item, outcome) in enumerate(zip(items, outcomes)):
        echoed = [("_user_id", outcome.get("_user_id"))]
        if name == "EventItem":
            echoed.append(("_event_id", outcome.get("_event_id")))
        for key, value in echoed:
            sent = item.get(key) if isinstance(item, dict) else None
            expected = sent if isinstance(sent, str) else None
            if value != expected:
                problems.append(f"item {index}: {key} echoed as {value!r}, sent {sent!r}")
        errors = outcome.get("errors") or {}
        if (outcome["status"] == "error") != bool(errors):
            problems.append(f"item {index}: status {outcome['status']!r} with errors {errors!r}")
        schema_errors = [e.message for e in validator.iter_errors(item)]
        if schema_errors and outcome["status"] == "success":
            problems.append(
                f"item {index}: accepted, but the schema refuses it ({'; '.join(schema_errors[:3])}): "
                f"{json.dumps(item)[:300]}"
            )
        if not schema_errors and outcome["status"] == "error":
            statable = {f: m for f, m in errors.items() if not _unstatable(item, f, m)}
            if statable:
                problems.append(
                    f"item {index}: the schema admits it, but it was refused with {statable}: "
                    f"{json.dumps(item)[:300]}"
                )
    if problems:
        raise AssertionError("Batch answer disagrees with the item schema:\n" + "\n".join(problems))
    return None
