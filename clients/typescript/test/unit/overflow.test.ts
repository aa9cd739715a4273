import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { BoundedQueue } from "../../dist/queue.js";
import type { Outcome } from "../../dist/types.js";
import { accepted, deferred, event, rig, settle, type RecordedRequest } from "./helpers.js";

describe("BoundedQueue", () => {
  test("block: waiters get places first come, first served, and never overtake", () => {
    const taken: string[] = [];
    const q = new BoundedQueue<string>(2, "block", (w) => taken.push(w));
    assert.equal(q.offer("a"), "taken");
    assert.equal(q.offer("b"), "taken");
    assert.equal(q.offer("c"), "waiting");
    assert.equal(q.offer("d"), "waiting");
    q.release();
    assert.deepEqual(taken, ["c"]);
    q.release();
    q.release();
    assert.deepEqual(taken, ["c", "d"]);
    assert.equal(q.offer("e"), "taken");
    assert.equal(q.size, 2);
  });

  test("drop: refuses when full", () => {
    const q = new BoundedQueue<string>(1, "drop", () => assert.fail("no waiters under drop"));
    assert.equal(q.offer("a"), "taken");
    assert.equal(q.offer("b"), "full");
    q.release();
    assert.equal(q.offer("c"), "taken");
  });
});

/** A server that holds every request until released. */
function holdingServer() {
  const held: Array<() => void> = [];
  return {
    held,
    handler: (request: RecordedRequest): Promise<Response> => {
      const d = deferred<void>();
      held.push(() => d.resolve());
      return d.promise.then(() => accepted(request));
    },
  };
}

describe("overflow through the client", () => {
  test("drop: the item past maxQueueItems is reported dropped at once, to the promise, the callback, the counters and the log", async () => {
    const server = holdingServer();
    const { client, logger, delivered } = rig({ maxQueueItems: 3, overflow: "drop", maxBatchItems: 1 }, server.handler);
    const kept = [client.track(event(1)), client.track(event(2)), client.upsert({ _user_id: "c" })];
    const extra = client.track(event(4));
    const dropped = await extra;
    assert.equal(dropped.status, "dropped");
    assert.equal(dropped.status === "dropped" && dropped.message, "queue full");
    assert.equal(await extra.enqueued, false);
    assert.equal(delivered.length, 1);
    assert.equal(delivered[0], dropped);
    assert.equal(logger.at("warn").filter((l) => l.message.includes("dropped")).length, 1);
    assert.deepEqual(
      { ...client.stats() },
      { enqueued: 4, sent: 3, accepted: 0, rejected: 0, failed: 0, dropped: 1, retries: 0, requests: 3, queued: 3 },
    );
    // Room again once an outcome is reported.
    server.held[0]?.();
    await settle();
    assert.equal((await kept[0])?.status, "accepted");
    const later = client.track(event(5));
    assert.equal(await later.enqueued, true);
    server.held.forEach((release) => release());
    await settle();
    server.held.forEach((release) => release());
    await client.flush();
    assert.equal((await later).status, "accepted");
  });

  test("block: the item waits for room; `enqueued` resolves when it is taken; it is then delivered", async () => {
    const server = holdingServer();
    const { client } = rig({ maxQueueItems: 2, overflow: "block", maxBatchItems: 1 }, server.handler);
    const first = client.track(event(1));
    const second = client.track(event(2));
    const third = client.track(event(3));
    let thirdTaken: boolean | undefined;
    void third.enqueued.then((v) => (thirdTaken = v));
    let thirdOutcome: Outcome | undefined;
    void third.then((o) => (thirdOutcome = o));
    assert.equal(await first.enqueued, true);
    assert.equal(await second.enqueued, true);
    await settle();
    assert.equal(thirdTaken, undefined, "still waiting for room");
    assert.equal(client.stats().queued, 2);
    assert.equal(client.stats().enqueued, 2);
    server.held[0]?.();
    await settle();
    assert.equal((await first).status, "accepted");
    assert.equal(thirdTaken, true, "taken as soon as the first item was reported");
    assert.equal(client.stats().queued, 2);
    assert.equal(thirdOutcome, undefined);
    const flushed = client.flush();
    await settle();
    server.held.forEach((release) => release());
    await flushed;
    assert.equal((await third).status, "accepted");
    assert.equal(client.stats().enqueued, 3);
    assert.equal(client.stats().queued, 0);
  });

  test("block: a producer that awaits `enqueued` never holds more than maxQueueItems", async () => {
    let maxQueued = 0;
    const { client, clock } = rig({ maxQueueItems: 25, maxBatchItems: 10, flushIntervalMs: 50 });
    const outcomes: Array<Promise<Outcome>> = [];
    const producer = (async () => {
      for (let i = 0; i < 200; i += 1) {
        const d = client.track(event(i));
        outcomes.push(d);
        await d.enqueued;
        maxQueued = Math.max(maxQueued, client.stats().queued);
      }
    })();
    await clock.advanceUntil(() => outcomes.length === 200, 60_000, 50);
    await producer;
    await client.flush();
    assert.ok(maxQueued <= 25 && maxQueued > 0, `max queued ${maxQueued}`);
    assert.equal((await Promise.all(outcomes)).filter((o) => o.status === "accepted").length, 200);
  });

  test("flush() waits for items that were waiting for room when it was called", async () => {
    const server = holdingServer();
    // maxBatchItems > 1: only the flush can make b go out before the interval.
    const { client } = rig({ maxQueueItems: 1, maxBatchItems: 10 }, server.handler);
    const a = client.track(event(1));
    const b = client.track(event(2));
    let flushed = false;
    const f = client.flush().then(() => (flushed = true));
    await settle();
    server.held[0]?.();
    await settle();
    assert.equal((await a).status, "accepted");
    assert.equal(flushed, false, "b is not answered yet");
    assert.equal(server.held.length, 2, "b was sent at once, without waiting for the interval");
    server.held[1]?.();
    await f;
    assert.equal((await b).status, "accepted");
  });
});
