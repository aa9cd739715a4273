import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
  backoffCap,
  EndpointGate,
  isRetriedStatus,
  jitteredBackoff,
  parseRetryAfter,
  sendWithRetries,
  serverWaitMs,
  type AttemptResult,
  type FinalResult,
  type RetryPolicy,
} from "../../dist/retry.js";
import { accepted, deferred, empty, event, FakeClock, json, rig, settle } from "./helpers.js";

const policy: RetryPolicy = { initialBackoffMs: 200, maxBackoffMs: 30_000, deadlineMs: 120_000 };

function headers(values: Record<string, string>): Headers {
  return new Headers(values);
}

describe("retry classification", () => {
  test("408, 429, 500, 502, 503, 504 are retried", () => {
    for (const status of [408, 429, 500, 502, 503, 504]) assert.equal(isRetriedStatus(status), true, String(status));
  });
  test("400, 401, 403, 404, 405, 413, 422, 501, 505, 200, 202 and others are not", () => {
    for (const status of [200, 202, 301, 400, 401, 403, 404, 405, 409, 413, 422, 431, 501, 505, 599]) {
      assert.equal(isRetriedStatus(status), false, String(status));
    }
  });
});

describe("backoff", () => {
  test("the cap doubles from the initial backoff and stops at the maximum", () => {
    const caps = [1, 2, 3, 4, 5, 8, 9, 10, 50].map((n) => backoffCap(n, policy));
    assert.deepEqual(caps, [200, 400, 800, 1_600, 3_200, 25_600, 30_000, 30_000, 30_000]);
  });

  test("full jitter: uniform in [0, cap], reaching both ends", () => {
    assert.equal(jitteredBackoff(3, policy, () => 0), 0);
    assert.equal(jitteredBackoff(3, policy, () => 0.5), 400);
    const top = jitteredBackoff(3, policy, () => 1 - Number.EPSILON);
    assert.ok(top > 799 && top <= 800, String(top));
    for (let i = 0; i < 1000; i += 1) {
      const n = 1 + (i % 12);
      const wait = jitteredBackoff(n, policy, Math.random);
      assert.ok(wait >= 0 && wait <= backoffCap(n, policy), `retry ${n}: ${wait}`);
    }
  });
});

describe("wait headers", () => {
  const now = 1_800_000_000_000;

  test("Retry-After: seconds, fractions, an HTTP date; junk and absence are ignored", () => {
    assert.equal(parseRetryAfter("3", now), 3_000);
    assert.equal(parseRetryAfter(" 1.5 ", now), 1_500);
    assert.equal(parseRetryAfter(new Date(now + 7_000).toUTCString(), now), 7_000);
    assert.equal(parseRetryAfter(new Date(now - 7_000).toUTCString(), now), 0);
    assert.equal(parseRetryAfter("soon", now), undefined);
    assert.equal(parseRetryAfter("", now), undefined);
    assert.equal(parseRetryAfter(null, now), undefined);
  });

  test("429: Retry-After, or X-RateLimit-Reset when later", () => {
    const reset = String(now / 1000 + 20);
    assert.equal(serverWaitMs(429, headers({ "retry-after": "2", "x-ratelimit-reset": reset }), now), 20_000);
    assert.equal(serverWaitMs(429, headers({ "retry-after": "30", "x-ratelimit-reset": reset }), now), 30_000);
    assert.equal(serverWaitMs(429, headers({ "x-ratelimit-reset": reset }), now), 20_000);
    assert.equal(serverWaitMs(429, headers({ "retry-after": "2" }), now), 2_000);
    // A reset already past asks for nothing more than Retry-After.
    assert.equal(serverWaitMs(429, headers({ "retry-after": "1", "x-ratelimit-reset": String(now / 1000 - 5) }), now), 1_000);
  });

  test("503 honours Retry-After only; other statuses ask for no wait", () => {
    const reset = String(now / 1000 + 20);
    assert.equal(serverWaitMs(503, headers({ "retry-after": "1", "x-ratelimit-reset": reset }), now), 1_000);
    assert.equal(serverWaitMs(500, headers({ "retry-after": "9" }), now), 0);
    assert.equal(serverWaitMs(502, headers({ "retry-after": "9" }), now), 0);
    assert.equal(serverWaitMs(408, headers({ "retry-after": "9" }), now), 0);
    assert.equal(serverWaitMs(429, headers({}), now), 0);
  });
});

/** Runs sendWithRetries with scripted attempt results, recording when each attempt started. */
function scripted(clock: FakeClock, results: AttemptResult[], options: { random?: () => number; gate?: EndpointGate; policy?: RetryPolicy } = {}) {
  const starts: number[] = [];
  const waits: number[] = [];
  const done = sendWithRetries({
    attempt: async () => {
      starts.push(clock.now());
      const next = results.shift();
      assert.ok(next !== undefined, "more attempts than scripted");
      return next;
    },
    policy: options.policy ?? policy,
    clock,
    random: options.random ?? (() => 1 - Number.EPSILON),
    gate: options.gate ?? new EndpointGate(),
    onRetry: (info) => waits.push(info.waitMs),
  });
  return { starts, waits, done };
}

const response = (status: number, h: Record<string, string> = {}, body = ""): AttemptResult => ({
  kind: "response",
  status,
  headers: headers(h),
  body,
});

describe("sendWithRetries", () => {
  test("retries network errors and 5xx with growing backoff until a final answer", async () => {
    const clock = new FakeClock();
    const t0 = clock.now();
    const run = scripted(clock, [
      { kind: "error", message: "fetch failed: ECONNRESET" },
      response(500),
      response(502),
      response(504),
      response(408),
      response(202, {}, "{}"),
    ]);
    let result: FinalResult | undefined;
    void run.done.then((r) => (result = r));
    await clock.advance(60_000);
    assert.deepEqual(result, { kind: "answered", status: 202, body: "{}", attempts: 6 });
    // random ≈ 1: each sleep is (just under) its cap: 200, 400, 800, 1600.
    const gaps = run.starts.slice(1).map((s, i) => s - (run.starts[i] ?? 0));
    assert.equal(gaps.length, 5);
    gaps.forEach((gap, i) => {
      const cap = backoffCap(i + 1, policy);
      assert.ok(gap <= cap && gap >= cap - 1, `gap ${i + 1}: ${gap} vs cap ${cap}`);
    });
    assert.ok((run.starts[0] ?? -1) === t0);
  });

  test("a final status is not retried", async () => {
    for (const status of [400, 401, 403, 404, 405, 413, 422, 501]) {
      const clock = new FakeClock();
      const run = scripted(clock, [response(status, {}, '{"message":"no"}')]);
      const result = await run.done;
      assert.deepEqual(result, { kind: "answered", status, body: '{"message":"no"}', attempts: 1 });
    }
  });

  test("the sleep is at least Retry-After on a 503, even when the jitter is smaller", async () => {
    const clock = new FakeClock();
    const run = scripted(clock, [response(503, { "retry-after": "3" }), response(202)], { random: () => 0 });
    let done = false;
    void run.done.then(() => (done = true));
    await clock.advance(2_999);
    assert.equal(run.starts.length, 1, "no retry before Retry-After");
    await clock.advance(1);
    assert.equal(run.starts.length, 2);
    assert.equal(done, true);
    assert.deepEqual(run.waits, [3_000]);
  });

  test("a 429 waits until X-RateLimit-Reset and pauses the endpoint for every batch", async () => {
    const clock = new FakeClock();
    const gate = new EndpointGate();
    const reset = String(Math.floor(clock.now() / 1000) + 40);
    const first = scripted(clock, [response(429, { "retry-after": "5", "x-ratelimit-reset": reset }), response(202)], {
      random: () => 0,
      gate,
    });
    await settle();
    assert.equal(first.starts.length, 1);
    // Another batch for the same endpoint, started after the 429: it waits too.
    const second = scripted(clock, [response(202)], { gate });
    await clock.advance(39_000);
    assert.equal(second.starts.length, 0, "no request to a paused endpoint");
    assert.equal(first.starts.length, 1);
    await clock.advance(1_000);
    assert.equal(second.starts.length, 1);
    assert.equal(first.starts.length, 2);
    assert.equal((await first.done).kind, "answered");
    assert.equal((await second.done).kind, "answered");
  });

  test("given up when the next sleep would end after the deadline, with the last status", async () => {
    const clock = new FakeClock();
    const small: RetryPolicy = { initialBackoffMs: 1_000, maxBackoffMs: 1_000, deadlineMs: 3_500 };
    // random ≈ 1: sleeps of ~1000 ms; attempts at ~0, 1000, 2000, 3000; the 4th sleep would end at ~4000 > 3500.
    const run = scripted(clock, [response(503, {}, '{"message":"broker down"}'), response(503), response(500), response(503, {}, '{"message":"still down"}')], {
      policy: small,
    });
    let result: FinalResult | undefined;
    void run.done.then((r) => (result = r));
    await clock.advance(10_000);
    assert.equal(run.starts.length, 4);
    assert.ok(result !== undefined && result.kind === "gave-up");
    assert.equal(result.httpStatus, 503);
    assert.equal(result.attempts, 4);
    assert.equal(result.closed, false);
    assert.match(result.message, /^HTTP 503: still down/);
  });

  test("a Retry-After past the deadline gives up at once instead of sleeping", async () => {
    const clock = new FakeClock();
    const run = scripted(clock, [response(429, { "retry-after": "600" })], {
      policy: { initialBackoffMs: 200, maxBackoffMs: 30_000, deadlineMs: 120_000 },
    });
    const result = await run.done;
    assert.equal(result.kind, "gave-up");
    assert.equal(run.starts.length, 1);
  });

  test("a network error as the last attempt is reported without a status", async () => {
    const clock = new FakeClock();
    const run = scripted(clock, [response(503), { kind: "error", message: "request timed out after 10 ms" }], {
      policy: { initialBackoffMs: 100, maxBackoffMs: 100, deadlineMs: 150 },
    });
    void clock.advance(1_000);
    const result = await run.done;
    assert.ok(result.kind === "gave-up");
    assert.equal(result.httpStatus, undefined);
    assert.match(result.message, /^request timed out after 10 ms/);
  });
});

describe("retries through the client", () => {
  test("a 503 then 202: the same body (same event ids) is sent again and the outcome counts attempts", async () => {
    const { client, clock, server, logger } = rig({}, (request, i) =>
      i === 0 ? json(503, { message: "broker" }, { "retry-after": "1" }) : json(202, { entity: { items: (request.items ?? []).map(() => ({ status: "success" })) } }),
    );
    const outcome = client.track(event(1));
    void client.flush();
    await clock.advance(5_000);
    const result = await outcome;
    assert.equal(result.status, "accepted");
    assert.equal(result.status === "accepted" && result.attempts, 2);
    assert.equal(server.requests.length, 2);
    assert.equal(server.requests[0]?.text, server.requests[1]?.text);
    assert.equal(server.requests[0]?.headers.get("x-request-id"), server.requests[1]?.headers.get("x-request-id"));
    assert.ok((server.requests[1]?.at ?? 0) - (server.requests[0]?.at ?? 0) >= 1_000, "Retry-After honoured");
    assert.equal(logger.at("info").filter((l) => l.message.includes("retry 1")).length, 1, "one log line per retry");
    const stats = client.stats();
    assert.equal(stats.requests, 2);
    assert.equal(stats.retries, 1);
    assert.equal(stats.sent, 2);
    assert.equal(stats.accepted, 1);
  });

  test("a 429 pauses the events endpoint for every batch; the contacts endpoint is not paused", async () => {
    let limited = false;
    const { client, clock, server } = rig({ flushIntervalMs: 100 }, (request) => {
      if (request.url.includes("/stream/events") && !limited) {
        limited = true;
        const reset = String(Math.floor(clock.now() / 1000) + 30);
        return empty(429, { "retry-after": "10", "x-ratelimit-reset": reset });
      }
      return accepted(request);
    });
    const first = client.track(event(1));
    await clock.advance(100); // sent, answered 429 at t = 100 ms
    const start = clock.now();
    const second = client.track(event(2));
    const contact = client.upsert({ _user_id: "c" });
    await clock.advance(1_000);
    assert.equal((await contact).status, "accepted", "contacts are another endpoint");
    assert.equal(server.to("/stream/events").length, 1, "no events request while paused");
    await clock.advance(28_000);
    assert.equal(server.to("/stream/events").length, 1);
    await clock.advance(1_000);
    assert.equal(server.to("/stream/events").length, 3, "both batches go when the wait is over");
    for (const r of server.to("/stream/events").slice(1)) assert.ok(r.at >= start - 100 + 30_000);
    assert.equal((await first).status, "accepted");
    assert.equal((await second).status, "accepted");
  });

  test("a network error is retried; an attempt that does not answer is cut at requestTimeoutMs", async () => {
    const hang = deferred<Response>();
    const { client, clock, server } = rig({ requestTimeoutMs: 4_000 }, (request, i) => {
      if (i === 0) throw new TypeError("fetch failed", { cause: new Error("connect ECONNREFUSED 127.0.0.1:1") });
      if (i === 1) return hang.promise; // never answered
      return json(202, { entity: { items: (request.items ?? []).map(() => ({ status: "success" })) } });
    });
    const outcome = client.track(event(1));
    void client.flush();
    await clock.advance(1_000);
    assert.equal(server.requests.length, 2, "retried after the network error");
    const second = server.requests[1]?.at ?? 0;
    await clock.advance(second + 4_000 - clock.now() - 1);
    assert.equal(server.requests.length, 2);
    assert.equal(server.requests[1]?.signal?.aborted, false);
    await clock.advance(1);
    assert.equal(server.requests[1]?.signal?.aborted, true, "the hung attempt is aborted at the timeout");
    assert.equal(clock.now() - second, 4_000);
    await clock.advance(2_000);
    const result = await outcome;
    assert.equal(result.status, "accepted");
    assert.equal(result.status === "accepted" && result.attempts, 3);
  });

  test("failed after the deadline: message and status of the last answer; one error log line", async () => {
    const { client, clock, logger } = rig(
      { retryInitialBackoffMs: 100, retryMaxBackoffMs: 1_000, retryDeadlineMs: 5_000 },
      () => json(503, { message: "the message broker could not take the batch in time" }, { "retry-after": "1" }),
    );
    const outcomes = [client.track(event(1)), client.track(event(2))];
    void client.flush();
    await clock.advance(10_000);
    for (const o of await Promise.all(outcomes)) {
      assert.equal(o.status, "failed");
      if (o.status !== "failed") continue;
      assert.equal(o.httpStatus, 503);
      assert.ok(o.attempts >= 5, `attempts ${o.attempts}`);
      assert.match(o.message, /HTTP 503: the message broker could not take the batch in time/);
    }
    assert.equal(logger.at("error").length, 1);
    assert.equal(client.stats().failed, 2);
  });
});
