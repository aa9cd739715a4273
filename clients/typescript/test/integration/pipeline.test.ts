// The client against the real gateway, Kafka, worker and PostgreSQL, through the client
// harness (INGEST_HARNESS_URL). Each test has its own tenant. The broker-outage test runs
// alone (it stops the harness's Kafka); the others run side by side, so the rate-limit
// test's wait for the next window (up to a minute) overlaps them.

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import type { Outcome } from "../../dist/index.js";
import {
  clientFor,
  kafka,
  newTenant,
  pollUntil,
  setLimit,
  skipReason,
  storedContacts,
  storedEvents,
  type StoredEvent,
} from "./harness.js";

const skip = skipReason;

function statuses(outcomes: Outcome[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const o of outcomes) counts[o.status] = (counts[o.status] ?? 0) + 1;
  return counts;
}

function eventIds(outcomes: Outcome[]): string[] {
  return outcomes.map((o) => (o.item as { _event_id?: string })._event_id ?? "").sort();
}

/** Every stored event once, and exactly `ids`. */
function assertStoredOnce(stored: StoredEvent[], ids: string[]): void {
  const doubled = stored.filter((e) => e.copies !== 1);
  assert.deepEqual(doubled, [], "every event stored exactly once");
  assert.deepEqual(stored.map((e) => e.event_id).sort(), ids);
}

describe("IngestClient against the real pipeline (client harness)", () => {
  test("broker outage: 503s are retried until Kafka is back; every event stored exactly once", { skip, timeout: 90_000 }, async (t) => {
    const tenant = await newTenant();
    const { client, logger, requests } = clientFor(tenant, "outage", {
      maxBatchItems: 10,
      flushIntervalMs: 100,
      retryInitialBackoffMs: 200,
      retryMaxBackoffMs: 1_000,
    });
    const t0 = Date.now();
    const mark = (what: string) => t.diagnostic(`${what} at +${Date.now() - t0} ms`);
    await kafka("stop");
    mark("kafka stopped");
    let restarted = false;
    try {
      const outcomes = Array.from({ length: 50 }, (_, i) =>
        client.track({ _user_id: `user-${i % 7}`, _event_type: "outage", _event_parameters: { i } }),
      );
      const flushed = client.flush();
      // Until the gateway has answered 503 a few times, then a moment more.
      const until = Date.now() + 30_000;
      while (requests.filter((r) => r.status === 503).length < 2 && Date.now() < until) {
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      assert.ok(requests.filter((r) => r.status === 503).length >= 2, "the gateway answered 503 while Kafka was down");
      await new Promise((resolve) => setTimeout(resolve, 1_000));
      mark("503s seen");
      await kafka("start");
      mark("kafka started");
      restarted = true;
      await flushed;
      mark("flushed");
      const results = await Promise.all(outcomes);
      assert.deepEqual(statuses(results), { accepted: 50 });
      assert.ok(results.some((o) => o.status === "accepted" && o.attempts > 1), "some batches needed more than one attempt");
      const stats = client.stats();
      assert.ok(stats.retries > 0);
      assert.equal(stats.failed, 0);
      assert.ok(logger.lines.some((l) => l.level === "info" && /HTTP 503/.test(l.message)), "retries are logged");
      const ids = eventIds(results);
      const stored = await pollUntil(
        () => storedEvents(tenant.project),
        (rows) => rows.length >= 50,
      );
      mark("stored");
      assertStoredOnce(stored, ids);
    } finally {
      if (!restarted) await kafka("start");
      await client.close(5_000);
    }
  });

  describe("side by side", { concurrency: true }, () => {
    test("a 429 is waited out using the headers, pausing the endpoint; nothing fails", { skip, timeout: 90_000 }, async (t) => {
      const tenant = await newTenant();
      await setLimit(tenant.project, "events", 2);
      // Three requests must fall in one fixed one-minute window for the third to meet the
      // limit: not in the last seconds of a minute.
      const second = new Date().getUTCSeconds();
      if (second >= 55) await new Promise((resolve) => setTimeout(resolve, (61 - second) * 1_000));
      const { client, logger, requests } = clientFor(tenant, "429", { maxBatchItems: 5 });
      const outcomes = Array.from({ length: 15 }, (_, i) => client.track({ _user_id: `u${i}`, _event_type: "limited" }));
      const flushed = client.flush();
      // Once a 429 is in, another batch: it must wait for the same pause, not be sent and refused.
      const until = Date.now() + 20_000;
      while (!requests.some((r) => r.status === 429) && Date.now() < until) {
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      for (let i = 15; i < 20; i += 1) outcomes.push(client.track({ _user_id: `u${i}`, _event_type: "limited" }));
      await flushed;
      await client.flush();
      const results = await Promise.all(outcomes);
      assert.deepEqual(statuses(results), { accepted: 20 });
      const limited = requests.filter((r) => r.status === 429);
      assert.ok(limited.length >= 1, "the limit was met");
      assert.ok(results.some((o) => o.status === "accepted" && o.attempts >= 2), "a batch was retried");
      assert.ok(client.stats().retries >= 1);
      assert.equal(client.stats().failed, 0);
      // No events request started before the first 429's wait was over.
      const first = limited[0];
      assert.ok(first?.headers !== undefined);
      for (const r of requests) {
        t.diagnostic(
          `${r.method} ${r.path.split("/stream/")[1]} started ${new Date(r.startedAt).toISOString()} -> ${r.status}` +
            ` (reset ${r.headers?.get("x-ratelimit-reset")}, retry-after ${r.headers?.get("retry-after")})`,
        );
      }
      const retryAfter = Number(first.headers.get("retry-after") ?? "0") * 1000;
      const reset = Number(first.headers.get("x-ratelimit-reset") ?? "0") * 1000;
      const waitEnds = Math.max(first.startedAt + retryAfter, reset);
      assert.ok(reset > 0, "the 429 carried X-RateLimit-Reset");
      const later = requests.filter((r) => r.startedAt >= (first.answeredAt ?? Infinity));
      assert.ok(later.length >= 2, "the retry and the batch enqueued after the 429");
      for (const r of later) {
        // 20 ms for timer and clock granularity.
        assert.ok(r.startedAt >= waitEnds - 20, `a request started ${waitEnds - r.startedAt} ms before the wait ended`);
      }
      assert.ok(logger.lines.some((l) => /answered 429; pausing the endpoint/.test(l.message)));
      const stored = await pollUntil(
        () => storedEvents(tenant.project),
        (rows) => rows.length >= 20,
      );
      assertStoredOnce(stored, eventIds(results));
      await client.close(5_000);
    });

    test("partial failures surface per item with the server's field errors; the rest is stored", { skip, timeout: 60_000 }, async () => {
      const tenant = await newTenant();
      const { client } = clientFor(tenant, "partial", { sync: true });
      const contacts = [
        client.upsert({ _user_id: "ok-1", _email: "ann@example.com" }),
        client.upsert({ _user_id: "bad-email", _email: "not-an-email" }),
        client.upsert({ _first_name: "Nobody" } as never),
        client.upsert({ _user_id: "ok-2", plan: "pro" }),
      ];
      const events = [
        client.track({ _user_id: "ok-1", _event_type: "signup" }),
        client.track({ _event_type: "orphan" } as never),
        client.track({ _user_id: "ok-2", _event_type: "signup", _event_date: "yesterday" }),
        client.track({ _user_id: "ok-2", _event_type: "login" }),
      ];
      await client.flush();
      const c = await Promise.all(contacts);
      const e = await Promise.all(events);
      const view = (o: Outcome) =>
        o.status === "accepted"
          ? { status: o.status, committed: o.committed }
          : o.status === "rejected"
            ? { status: o.status, errors: o.errors, httpStatus: o.httpStatus }
            : { status: o.status };
      assert.deepEqual(c.map(view), [
        { status: "accepted", committed: true },
        { status: "rejected", errors: { _email: ["Invalid format"] }, httpStatus: 200 },
        { status: "rejected", errors: { _user_id: ["Required"] }, httpStatus: 200 },
        { status: "accepted", committed: true },
      ]);
      assert.deepEqual(e.map(view), [
        { status: "accepted", committed: true },
        { status: "rejected", errors: { _user_id: ["Required"] }, httpStatus: 200 },
        { status: "rejected", errors: { _event_date: ["Invalid format"] }, httpStatus: 200 },
        { status: "accepted", committed: true },
      ]);
      // Committed under sync: stored now.
      assert.deepEqual(
        (await storedContacts(tenant.project)).map((r) => r.user_id),
        ["ok-1", "ok-2"],
      );
      assert.deepEqual(
        (await storedEvents(tenant.project)).map((r) => r.event_id).sort(),
        eventIds([e[0], e[3]] as Outcome[]),
      );

      // A batch whose every item is invalid: 422, each item with its own errors.
      const allBad = client.track({ _event_type: "x" } as never);
      await client.flush();
      const bad = await allBad;
      assert.deepEqual(view(bad), { status: "rejected", errors: { _user_id: ["Required"] }, httpStatus: 422 });

      // A whole-request refusal: an unknown token, 401, reported per item under _request.
      const { client: wrong } = clientFor({ ...tenant, token: `ingk_${"0".repeat(64)}` }, "wrong-token");
      const refused = await Promise.all([wrong.track({ _user_id: "x", _event_type: "y" }), wrong.upsert({ _user_id: "x" })]);
      for (const o of refused) {
        assert.equal(o.status, "rejected");
        assert.equal(o.status === "rejected" && o.httpStatus, 401);
        assert.deepEqual(o.status === "rejected" && Object.keys(o.errors), ["_request"]);
      }
      await wrong.close(5_000);
      await client.close(5_000);
    });

    test("close() delivers everything queued: 1,000 events and 100 upserts", { skip, timeout: 90_000 }, async () => {
      const tenant = await newTenant();
      const { client } = clientFor(tenant, "close");
      const outcomes: Array<Promise<Outcome>> = [];
      for (let i = 0; i < 1_000; i += 1) {
        outcomes.push(client.track({ _user_id: `u${i % 100}`, _event_type: "bulk", _event_parameters: { i } }));
        if (i % 10 === 0) outcomes.push(client.upsert({ _user_id: `u${i / 10}`, n: i }));
      }
      const stats = await client.close(60_000);
      const results = await Promise.all(outcomes);
      assert.deepEqual(statuses(results), { accepted: 1_100 });
      assert.equal(stats.accepted, 1_100);
      assert.equal(stats.queued, 0);
      assert.equal(stats.failed, 0);
      const events = results.filter((o) => o.kind === "event");
      const stored = await pollUntil(
        () => storedEvents(tenant.project),
        (rows) => rows.length >= 1_000,
      );
      assertStoredOnce(stored, eventIds(events));
      const contacts = await pollUntil(
        () => storedContacts(tenant.project),
        (rows) => rows.length >= 100,
      );
      assert.equal(contacts.length, 100);
    });

    test("sync: true gives committed: true, and the items are in the database when answered", { skip, timeout: 60_000 }, async () => {
      const tenant = await newTenant();
      const { client, requests } = clientFor(tenant, "sync", { sync: true });
      const outcomes = [
        ...Array.from({ length: 5 }, (_, i) => client.track({ _user_id: `s${i}`, _event_type: "synced" })),
        ...Array.from({ length: 3 }, (_, i) => client.upsert({ _user_id: `s${i}`, tier: i })),
      ];
      await client.flush();
      const results = await Promise.all(outcomes);
      for (const o of results) {
        assert.equal(o.status, "accepted");
        assert.equal(o.status === "accepted" && o.committed, true);
      }
      assert.ok(requests.every((r) => r.status === 200));
      assert.equal((await storedEvents(tenant.project)).length, 5);
      assert.deepEqual(
        (await storedContacts(tenant.project)).map((c) => [c.user_id, c.attributes]),
        [
          ["s0", { tier: 0 }],
          ["s1", { tier: 1 }],
          ["s2", { tier: 2 }],
        ],
      );
      await client.close(5_000);
    });

    test("upsert, delete, upsert of one user: the stored contact is the last upsert", { skip, timeout: 60_000 }, async () => {
      const tenant = await newTenant();
      const { client, requests } = clientFor(tenant, "order", { sync: true });
      const outcomes: Array<Promise<Outcome>> = [];
      for (let i = 0; i < 10; i += 1) {
        outcomes.push(client.upsert({ _user_id: `user-${i}`, a: 1, b: "first" }));
        outcomes.push(client.delete(`user-${i}`));
        outcomes.push(client.upsert({ _user_id: `user-${i}`, c: i }));
      }
      // A user id that needs percent-encoding in the DELETE path.
      outcomes.push(client.upsert({ _user_id: "gone/ä 1?", a: 1 }));
      outcomes.push(client.delete("gone/ä 1?"));
      await client.flush();
      const results = await Promise.all(outcomes);
      assert.deepEqual(statuses(results), { accepted: 32 });
      const contactRequests = requests.filter((r) => r.path.includes("/stream/contacts"));
      assert.equal(contactRequests.length, 1 + 10 * 2 + 1, "upserts batched between the deletes");
      // One contact request at a time: each started after the one before it was answered.
      contactRequests.forEach((r, i) => {
        const before = contactRequests[i - 1];
        if (before !== undefined) assert.ok(r.startedAt >= (before.answeredAt ?? Infinity), `request ${i} overlapped ${i - 1}`);
      });
      assert.deepEqual(
        contactRequests.slice(0, 3).map((r) => `${r.method} ${decodeURIComponent(r.path.split("/stream/")[1] ?? "")}`),
        ["POST contacts", "DELETE contacts/user-0", "POST contacts"],
      );
      assert.equal(decodeURIComponent(contactRequests.at(-1)?.path.split("/stream/contacts/")[1] ?? ""), "gone/ä 1?");
      const contacts = await pollUntil(
        () => storedContacts(tenant.project),
        (rows) => !rows.some((r) => r.user_id === "gone/ä 1?"),
        15_000,
      );
      assert.deepEqual(
        contacts.map((c) => [c.user_id, c.attributes]),
        Array.from({ length: 10 }, (_, i) => [`user-${i}`, { c: i }]),
      );
      await client.close(5_000);
    });
  });
});
