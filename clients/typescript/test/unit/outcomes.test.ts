import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { parseBatchAnswer, resolveBatch } from "../../dist/outcomes.js";
import type { FinalResult } from "../../dist/retry.js";
import { accepted, batchAnswer, event, json, rig } from "./helpers.js";

const answered = (status: number, body: unknown, attempts = 1): FinalResult => ({
  kind: "answered",
  status,
  body: typeof body === "string" ? body : JSON.stringify(body),
  attempts,
});

describe("resolveBatch", () => {
  test("202: per item, success -> accepted (not committed), error -> rejected with its errors", () => {
    const body = batchAnswer(["success", { _email: ["Invalid format"] }, "success"]);
    assert.deepEqual(resolveBatch(answered(202, body, 2), 3, false), [
      { status: "accepted", committed: false, attempts: 2 },
      { status: "rejected", errors: { _email: ["Invalid format"] }, httpStatus: 202, attempts: 2 },
      { status: "accepted", committed: false, attempts: 2 },
    ]);
  });

  test("committed only for a 200 to a ?_sync request", () => {
    const body = batchAnswer(["success"]);
    assert.deepEqual(resolveBatch(answered(200, body), 1, true), [{ status: "accepted", committed: true, attempts: 1 }]);
    assert.deepEqual(resolveBatch(answered(202, body), 1, true), [{ status: "accepted", committed: false, attempts: 1 }]);
    assert.deepEqual(resolveBatch(answered(200, body), 1, false), [{ status: "accepted", committed: false, attempts: 1 }]);
  });

  test("422: every item rejected with its own errors", () => {
    const body = batchAnswer([{ _user_id: ["Required"] }, { _event_type: ["Too long"], _item: ["Too large"] }]);
    assert.deepEqual(resolveBatch(answered(422, body), 2, false), [
      { status: "rejected", errors: { _user_id: ["Required"] }, httpStatus: 422, attempts: 1 },
      { status: "rejected", errors: { _event_type: ["Too long"], _item: ["Too large"] }, httpStatus: 422, attempts: 1 },
    ]);
  });

  test("any other final status: every item rejected with {_request: [message]}", () => {
    for (const [status, message] of [
      [401, "unknown token"],
      [404, "project or datasource not found"],
      [400, "Body should be an array"],
      [413, "body is larger than 1048576 bytes"],
    ] as const) {
      assert.deepEqual(resolveBatch(answered(status, { message }), 2, false), [
        { status: "rejected", errors: { _request: [message] }, httpStatus: status, attempts: 1 },
        { status: "rejected", errors: { _request: [message] }, httpStatus: status, attempts: 1 },
      ]);
    }
    assert.deepEqual(resolveBatch(answered(405, ""), 1, false), [
      { status: "rejected", errors: { _request: ["HTTP 405"] }, httpStatus: 405, attempts: 1 },
    ]);
  });

  test("given up: every item failed with the last error and status", () => {
    const gaveUp: FinalResult = { kind: "gave-up", message: "HTTP 503: down", httpStatus: 503, attempts: 7, closed: false };
    assert.deepEqual(resolveBatch(gaveUp, 2, false), [
      { status: "failed", message: "HTTP 503: down", httpStatus: 503, attempts: 7 },
      { status: "failed", message: "HTTP 503: down", httpStatus: 503, attempts: 7 },
    ]);
    const network: FinalResult = { kind: "gave-up", message: "fetch failed", httpStatus: undefined, attempts: 3, closed: false };
    assert.deepEqual(resolveBatch(network, 1, false), [{ status: "failed", message: "fetch failed", attempts: 3 }]);
  });

  test("a 2xx answer that does not list an item leaves it failed, not silently accepted", () => {
    const body = batchAnswer(["success"]);
    const [a, b] = resolveBatch(answered(202, body), 2, false);
    assert.equal(a?.status, "accepted");
    assert.equal(b?.status, "failed");
    assert.equal(resolveBatch(answered(202, "not json"), 1, false)[0]?.status, "failed");
  });

  test("parseBatchAnswer reads the contract's shape and ignores junk", () => {
    assert.deepEqual(parseBatchAnswer('{"entity":{"successful":1,"failed":0,"items":[{"status":"success","_user_id":"a"}]}}'), [
      { status: "success" },
    ]);
    assert.equal(parseBatchAnswer('{"message":"x"}'), undefined);
    assert.equal(parseBatchAnswer("[1,2]"), undefined);
  });
});

describe("outcomes through the client", () => {
  test("partial failure: each item gets its own outcome; kind and item are attached", async () => {
    const { client } = rig({}, (request) => {
      const items = (request.items ?? []) as Array<Record<string, unknown>>;
      return json(
        202,
        batchAnswer(items.map((i) => ("_user_id" in i ? "success" : { _user_id: ["Required"] }))),
      );
    });
    const good = client.track(event(1));
    const bad = client.track({ _event_type: "x" } as never);
    await client.flush();
    const g = await good;
    const b = await bad;
    assert.equal(g.status, "accepted");
    assert.equal(g.kind, "event");
    assert.equal(b.status, "rejected");
    assert.equal(b.kind, "event");
    assert.deepEqual(b.status === "rejected" && b.errors, { _user_id: ["Required"] });
    assert.equal(b.status === "rejected" && b.httpStatus, 202);
    assert.ok(typeof b.item._event_id === "string", "the outcome carries the generated id");
  });

  test("a whole-request refusal (401) rejects every item with _request and logs one warning", async () => {
    const { client, logger, delivered } = rig({}, () => json(401, { message: "unknown token" }));
    const outcomes = [client.track(event(1)), client.track(event(2)), client.upsert({ _user_id: "c" })];
    await client.flush();
    for (const o of await Promise.all(outcomes)) {
      assert.equal(o.status, "rejected");
      assert.deepEqual(o.status === "rejected" && o.errors, { _request: ["unknown token"] });
      assert.equal(o.status === "rejected" && o.httpStatus, 401);
      assert.equal(o.status === "rejected" && o.attempts, 1);
    }
    assert.equal(delivered.length, 3);
    const warnings = logger.at("warn").filter((l) => l.message.includes("refused with HTTP 401"));
    assert.equal(warnings.length, 2, "one per request (events, contacts)");
    assert.equal(client.stats().retries, 0);
  });

  test("onDelivery gets each outcome exactly once; an exception in it is logged and changes nothing", async () => {
    const seen: string[] = [];
    const { client, logger } = rig({
      onDelivery: (o) => {
        seen.push(`${o.kind}:${o.status}`);
        throw new Error("callback bug");
      },
    });
    const outcomes = [client.track(event(1)), client.upsert({ _user_id: "c" }), client.delete("c")];
    await client.flush();
    assert.deepEqual(
      (await Promise.all(outcomes)).map((o) => o.status),
      ["accepted", "accepted", "accepted"],
    );
    assert.deepEqual(seen.sort(), ["contact:accepted", "delete:accepted", "event:accepted"]);
    assert.equal(logger.at("error").filter((l) => l.message.includes("onDelivery threw")).length, 3);
  });

  test("sync: POSTs carry ?_sync and a 200 means committed; deletes are sent without it", async () => {
    const { client, server } = rig({ sync: true }, (request) => accepted(request, request.method === "POST" ? 200 : 202));
    const e = client.track(event(1));
    const c = client.upsert({ _user_id: "c" });
    const d = client.delete("c");
    await client.flush();
    const [eo, co, dO] = await Promise.all([e, c, d]);
    assert.equal(eo.status === "accepted" && eo.committed, true);
    assert.equal(co.status === "accepted" && co.committed, true);
    assert.equal(dO.status === "accepted" && dO.committed, false);
    assert.ok(server.to("/stream/events")[0]?.url.endsWith("/stream/events?_sync"));
    assert.ok(server.requests.find((r) => r.method === "DELETE")?.url.endsWith("/stream/contacts/c"));
  });

  test("sync: the default attempt timeout is 15 s (the server waits up to 10 s)", async () => {
    const { client, clock, server } = rig({ sync: true }, (_request, i) =>
      i === 0 ? new Promise<Response>(() => {}) : accepted(_request, 200),
    );
    const e = client.track(event(1));
    void client.flush();
    await clock.advance(14_999);
    assert.equal(server.requests.length, 1);
    assert.equal(server.requests[0]?.signal?.aborted, false);
    await clock.advance(1);
    assert.equal(server.requests[0]?.signal?.aborted, true);
    await clock.advance(1_000);
    assert.equal((await e).status, "accepted");
  });

  test("stats: every counter", async () => {
    const { client, clock } = rig({ maxBatchItems: 2, maxQueueItems: 5, overflow: "drop" }, (request, i) =>
      i === 0
        ? json(503, { message: "x" })
        : json(202, batchAnswer((request.items ?? []).length > 1 ? ["success", "success"] : [{ a: ["b"] }])),
    );
    const outcomes = [client.track(event(1)), client.track(event(2)), client.track(event(3))];
    void client.flush();
    await clock.advance(5_000);
    await Promise.all(outcomes);
    assert.deepEqual(client.stats(), {
      enqueued: 3,
      sent: 5, // the first batch of 2 twice, then the batch of 1
      accepted: 2,
      rejected: 1,
      failed: 0,
      dropped: 0,
      retries: 1,
      requests: 3,
      queued: 0,
    });
  });
});

describe("options", () => {
  test("invalid options throw from the constructor", () => {
    assert.throws(() => rig({ maxBatchItems: 0 }), RangeError);
    assert.throws(() => rig({ maxBatchItems: 101 }), RangeError);
    assert.throws(() => rig({ maxQueueItems: 0 }), RangeError);
    assert.throws(() => rig({ maxInFlight: 0 }), RangeError);
    assert.throws(() => rig({ overflow: "wait" as never }), RangeError);
    assert.throws(() => rig({ token: "" }), TypeError);
    assert.throws(() => rig({ baseUrl: "not a url" }), TypeError);
  });
});
