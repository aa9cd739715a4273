"""Producer benchmark: one `Client` tracking realistic events as fast as it is allowed.

Run by scripts/bench-clients.sh against one gateway; prints one JSON line. Every event is
distinct: a client-generated `_event_id`, a user drawn from 100,000, one of eight event
types, and parameters of varied sizes, from a seeded generator. The loop is held back
only by the client's bounded queue (`overflow="block"`), so the rate is what the client
sustains end to end: encoding, batching, HTTP, and the gateway's answers. Accepted
outcomes are counted (through `on_delivery`) in the window after the warm-up.

Usage: python producer.py BASE_URL PROJECT DATASOURCE TOKEN SECONDS WARMUP_SECONDS
"""

from __future__ import annotations

import json
import random
import sys
import time
from typing import Any

from ingest_client import Client, Outcome

EVENT_TYPES = [
    "page_view",
    "click",
    "search",
    "add_to_cart",
    "purchase",
    "signup",
    "share",
    "scroll",
]
WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india"]


def event(rng: random.Random, n: int) -> dict[str, Any]:
    parameters: dict[str, Any] = {
        "n": n,
        "price": round(rng.uniform(0, 500), 2),
        "path": "/" + "/".join(rng.choices(WORDS, k=rng.randint(1, 5))),
    }
    if rng.random() < 0.3:
        parameters["tags"] = rng.choices(WORDS, k=rng.randint(1, 8))
    if rng.random() < 0.1:
        parameters["note"] = " ".join(rng.choices(WORDS, k=rng.randint(10, 60)))
    return {
        "_user_id": f"user-{rng.randrange(100_000)}",
        "_event_type": rng.choice(EVENT_TYPES),
        "_event_parameters": parameters,
    }


def main() -> None:
    base_url, project, datasource, token, seconds, warmup = sys.argv[1:7]
    rng = random.Random(42)
    started = time.monotonic()
    window = (started + float(warmup), started + float(warmup) + float(seconds))
    in_window = 0

    def on_delivery(outcome: Outcome) -> None:
        nonlocal in_window
        if outcome.ok and window[0] <= time.monotonic() < window[1]:
            in_window += 1

    client = Client(
        base_url=base_url,
        project=project,
        datasource=datasource,
        token=token,
        on_delivery=on_delivery,
    )
    n = 0
    while time.monotonic() < window[1]:
        client.track(event(rng, n))
        n += 1
    closing = time.monotonic()
    client.close(timeout=60)
    stats = client.stats()
    print(
        json.dumps(
            {
                "client": "python",
                "window_s": float(seconds),
                "accepted_in_window": in_window,
                "events_per_sec": round(in_window / float(seconds)),
                "close_s": round(time.monotonic() - closing, 2),
                "enqueued": stats.enqueued,
                "accepted": stats.accepted,
                "rejected": stats.rejected,
                "failed": stats.failed,
                "dropped": stats.dropped,
                "requests": stats.requests,
                "retries": stats.retries,
            }
        )
    )


if __name__ == "__main__":
    main()
