import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { describe, test } from "node:test";
import { fileURLToPath } from "node:url";

import { accepted, deferred, event, json, rig, settle, type RecordedRequest } from "./helpers.js";

describe("close()", () => {
  test("delivers everything queued, then resolves with the final counters; no timer is left", async () => {
    const { client, clock } = rig({ flushIntervalMs: 60_000 });
    const outcomes = [
      ...Array.from({ length: 250 }, (_, i) => client.track(event(i))),
      client.upsert({ _user_id: "c1", plan: "pro" }),
      client.delete("c2"),
    ];
    const stats = await client.close(5_000);
    assert.ok((await Promise.all(outcomes)).every((o) => o.status === "accepted"));
    assert.equal(stats.accepted, 252);
    assert.equal(stats.queued, 0);
    assert.equal(clock.pendingTimers(), 0);
  });

  test("times out: what is in flight or unsent is failed 'closed before delivery'; waiters are dropped", async () => {
    // Events: always 503 (so they are retried until close gives up). Contacts: never answered.
    const { client, clock, logger } = rig({ maxBatchItems: 1, maxInFlight: 1, maxQueueItems: 4 }, (request) =>
      request.url.includes("/stream/events") ? json(503, { message: "broker down" }, { "retry-after": "1" }) : new Promise<Response>(() => {}),
    );
    const inFlight = client.track(event(1)); // sent, answered 503, sleeping before its retry
    const unsent = client.track(event(2)); // batched, waiting for the one request slot
    const contact = client.upsert({ _user_id: "a" }); // sent, never answered
    const afterContact = client.upsert({ _user_id: "b" }); // behind it in the contact lane
    const waiting = client.track(event(5)); // the queue (4) is full: waits for room
    await settle();
    const closing = client.close(3_000);
    const late = client.track(event(6));
    assert.equal((await late).status, "dropped", "nothing is taken after close()");
    await clock.advance(3_000);
    const stats = await closing;

    const a = await inFlight;
    assert.equal(a.status, "failed");
    assert.ok(a.status === "failed");
    assert.equal(a.message, "closed before delivery");
    assert.equal(a.httpStatus, 503);
    assert.ok(a.attempts >= 2, `attempts ${a.attempts}`);

    const b = await unsent;
    assert.deepEqual(
      b.status === "failed" && { message: b.message, attempts: b.attempts, httpStatus: b.httpStatus },
      { message: "closed before delivery", attempts: 0, httpStatus: undefined },
    );
    const c = await contact;
    assert.deepEqual(
      c.status === "failed" && { message: c.message, attempts: c.attempts, httpStatus: c.httpStatus },
      { message: "closed before delivery", attempts: 1, httpStatus: undefined },
    );
    assert.equal((await afterContact).status, "failed");
    const w = await waiting;
    assert.equal(w.status, "dropped");
    assert.equal(await waiting.enqueued, false);

    assert.deepEqual(stats, {
      enqueued: 6, // every call, the two dropped ones included
      sent: stats.sent,
      accepted: 0,
      rejected: 0,
      failed: 4,
      dropped: 2,
      retries: stats.retries,
      requests: stats.requests,
      queued: 0,
    });
    assert.equal(logger.at("error").filter((l) => l.message.includes("close() timed out")).length, 1);
    await settle(); // the aborted attempts wind down
    assert.equal(clock.pendingTimers(), 0, "no timer left after close()");
    // Nothing more is sent, and a late answer changes nothing.
    const requests = stats.requests;
    await clock.advance(60_000);
    assert.equal(client.stats().requests, requests);
    assert.equal(client.stats().failed, 4);
  });

  test("times out even when fetch ignores its abort signal; no timer is left", async () => {
    const { client, clock } = rig({ fetch: () => new Promise<Response>(() => {}) });
    const outcome = client.track(event(1));
    const closing = client.close(2_000);
    await clock.advance(2_000);
    await closing;
    const o = await outcome;
    assert.deepEqual(o.status === "failed" && [o.message, o.attempts], ["closed before delivery", 1]);
    await settle();
    assert.equal(clock.pendingTimers(), 0, "the attempt's timeout timer was cancelled");
  });

  test("the same promise for a second call; flush() after close() resolves at once", async () => {
    const { client } = rig();
    void client.track(event(1));
    const first = client.close(1_000);
    assert.equal(client.close(5), first);
    await first;
    await client.flush();
    assert.equal(client.stats().accepted, 1);
  });

  test("a close() with nothing queued resolves at once", async () => {
    const { client, clock } = rig();
    const stats = await client.close(10_000);
    assert.equal(stats.enqueued, 0);
    assert.equal(clock.pendingTimers(), 0);
  });

  test("close() waits for a batch in flight when it answers within the timeout", async () => {
    const answer = deferred<void>();
    const { client, clock } = rig({}, (request: RecordedRequest) => answer.promise.then(() => accepted(request)));
    const outcome = client.track(event(1));
    const closing = client.close(10_000);
    await clock.advance(9_000);
    answer.resolve();
    await closing;
    assert.equal((await outcome).status, "accepted");
  });
});

describe("timers do not keep a Node process alive", () => {
  const dist = fileURLToPath(new URL("../../dist/index.js", import.meta.url));

  function runNode(script: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
    return new Promise((resolve) => {
      execFile(
        process.execPath,
        ["--input-type=module", "-e", script],
        { timeout: 20_000, killSignal: "SIGKILL" },
        (error, stdout, stderr) => {
          const code = error === null ? 0 : typeof error.code === "number" ? error.code : null;
          resolve({ code, stdout, stderr });
        },
      );
    });
  }

  test("a process exits right after close(), even with a long flush interval and an unanswered request", async () => {
    // Real timers: one-hour flush interval, one-hour retry backoff, one-hour request timeout;
    // the fetch never answers. Without close() (or with a close() that left timers) the
    // process would hang for an hour and the 20 s kill would fail the test.
    const script = `
      import { IngestClient } from ${JSON.stringify(dist)};
      const client = new IngestClient({
        baseUrl: "https://ingest.test", project: "p", datasource: "web", token: "ingk_x",
        flushIntervalMs: 3600000, requestTimeoutMs: 3600000, retryInitialBackoffMs: 3600000,
        logger: { debug() {}, info() {}, warn() {}, error() {} },
        fetch: (url, init) => new Promise((_, reject) => init.signal.addEventListener("abort", () => reject(new Error("aborted")))),
      });
      const a = client.track({ _user_id: "u", _event_type: "x" });
      await new Promise((r) => setTimeout(r, 50)); // let it wait in the interval, then:
      const stats = await client.close(200);
      console.log(JSON.stringify({ outcome: (await a).status, failed: stats.failed }));
    `;
    const started = Date.now();
    const result = await runNode(script);
    assert.equal(result.code, 0, result.stderr);
    assert.deepEqual(JSON.parse(result.stdout), { outcome: "failed", failed: 1 });
    assert.ok(Date.now() - started < 20_000);
  });

  test("a process with an idle client exits without close()", async () => {
    const script = `
      import { IngestClient } from ${JSON.stringify(dist)};
      const client = new IngestClient({
        baseUrl: "https://ingest.test", project: "p", datasource: "web", token: "ingk_x",
        flushIntervalMs: 3600000,
        fetch: async (url, init) => new Response(JSON.stringify({ entity: { items: JSON.parse(new TextDecoder().decode(init.body)).map(() => ({ status: "success" })) } }), { status: 202 }),
      });
      await client.flush();
      const o = client.track({ _user_id: "u", _event_type: "x" });
      await client.flush();
      console.log((await o).status);
    `;
    const result = await runNode(script);
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout.trim(), "accepted");
  });
});
