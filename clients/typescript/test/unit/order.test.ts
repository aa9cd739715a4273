import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { accepted, deferred, event, json, rig, settle, type RecordedRequest } from "./helpers.js";

/** A server whose answers the test releases one by one. */
function gatedServer() {
  const pending: Array<{ request: RecordedRequest; release: (r?: Response) => void }> = [];
  const handler = (request: RecordedRequest): Promise<Response> => {
    const d = deferred<Response | undefined>();
    pending.push({ request, release: (r) => d.resolve(r) });
    return d.promise.then((r) => r ?? accepted(request));
  };
  return { pending, handler };
}

describe("contact writes: one request at a time, in the order enqueued", () => {
  test("upserts batch together; a delete goes alone, after the batch before it is answered", async () => {
    const server = gatedServer();
    const r = rig({}, server.handler);
    const { client } = r;
    const outcomes = [
      client.upsert({ _user_id: "a", v: 1 }),
      client.upsert({ _user_id: "b", v: 1 }),
      client.delete("a"),
      client.upsert({ _user_id: "a", v: 2 }),
      client.delete("user/ä 1?"),
    ];
    const flushed = client.flush();
    await settle();
    assert.equal(server.pending.length, 1, "only the first contact request is out");
    assert.equal(server.pending[0]?.request.method, "POST");
    assert.deepEqual(server.pending[0]?.request.items, [
      { _user_id: "a", v: 1 },
      { _user_id: "b", v: 1 },
    ]);
    server.pending[0]?.release();
    await settle();
    assert.equal(server.pending.length, 2);
    assert.equal(server.pending[1]?.request.method, "DELETE");
    assert.equal(server.pending[1]?.request.url, "https://ingest.test/v1/project/proj/datasource/web/stream/contacts/a");
    assert.equal(server.pending[1]?.request.text, "", "a delete has no body");
    server.pending[1]?.release();
    await settle();
    assert.equal(server.pending.length, 3);
    assert.deepEqual(server.pending[2]?.request.items, [{ _user_id: "a", v: 2 }]);
    server.pending[2]?.release();
    await settle();
    assert.equal(server.pending.length, 4);
    assert.equal(
      server.pending[3]?.request.url,
      "https://ingest.test/v1/project/proj/datasource/web/stream/contacts/user%2F%C3%A4%201%3F",
    );
    server.pending[3]?.release();
    await flushed;
    const kinds = (await Promise.all(outcomes)).map((o) => `${o.kind}:${o.status}`);
    assert.deepEqual(kinds, ["contact:accepted", "contact:accepted", "delete:accepted", "contact:accepted", "delete:accepted"]);
    assert.equal(r.server.maxInFlight, 1);
    const del = await outcomes[2];
    assert.deepEqual(del?.item, { _user_id: "a" });
  });

  test("a batch being retried holds back the ones after it", async () => {
    const { client, clock, server } = rig({ maxBatchItems: 2 }, (request, i) =>
      i < 3 ? json(503, { message: "broker" }, { "retry-after": "1" }) : accepted(request),
    );
    const outcomes = [
      client.upsert({ _user_id: "a", v: 1 }),
      client.upsert({ _user_id: "b", v: 1 }),
      client.delete("a"),
      client.upsert({ _user_id: "a", v: 2 }),
    ];
    void client.flush();
    await clock.advance(30_000);
    const sequence = server.requests.map((r) => `${r.method} ${r.items === undefined ? new URL(r.url).pathname.split("/").pop() : JSON.stringify(r.items)}`);
    assert.deepEqual(sequence, [
      'POST [{"_user_id":"a","v":1},{"_user_id":"b","v":1}]',
      'POST [{"_user_id":"a","v":1},{"_user_id":"b","v":1}]',
      'POST [{"_user_id":"a","v":1},{"_user_id":"b","v":1}]',
      'POST [{"_user_id":"a","v":1},{"_user_id":"b","v":1}]',
      "DELETE a",
      'POST [{"_user_id":"a","v":2}]',
    ]);
    assert.equal(server.maxInFlight, 1);
    const results = await Promise.all(outcomes);
    assert.deepEqual(
      results.map((o) => (o.status === "accepted" ? o.attempts : o.status)),
      [4, 4, 1, 1],
    );
  });

  test("a rejected delete does not stop the writes after it", async () => {
    const { client, server } = rig({}, (request) =>
      request.method === "DELETE"
        ? json(422, { entity: { successful: 0, failed: 1, items: [{ status: "error", _user_id: null, errors: { _user_id: ["Invalid format"] } }] } })
        : accepted(request),
    );
    const del = client.delete("bad\u0001id");
    const after = client.upsert({ _user_id: "ok" });
    await client.flush();
    const d = await del;
    assert.equal(d.status, "rejected");
    assert.deepEqual(d.status === "rejected" && d.errors, { _user_id: ["Invalid format"] });
    assert.equal(d.status === "rejected" && d.httpStatus, 422);
    assert.equal((await after).status, "accepted");
    assert.equal(server.requests.length, 2);
  });
});

describe("events: up to maxInFlight requests at a time", () => {
  test("never more than maxInFlight, and that many when there is enough work", async () => {
    const server = gatedServer();
    const { client } = rig({ maxBatchItems: 10, maxInFlight: 3 }, server.handler);
    const outcomes = Array.from({ length: 100 }, (_, i) => client.track(event(i)));
    const flushed = client.flush();
    await settle();
    assert.equal(server.pending.length, 3, "three requests out at once");
    let released = 0;
    while (released < 10) {
      const next = server.pending[released];
      assert.ok(next !== undefined, `request ${released} was started`);
      next.release();
      released += 1;
      await settle();
      const outstanding = server.pending.length - released;
      assert.ok(outstanding <= 3, `${outstanding} in flight`);
    }
    await flushed;
    assert.equal(server.pending.length, 10);
    assert.ok((await Promise.all(outcomes)).every((o) => o.status === "accepted"));
  });

  test("events do not wait for contact writes (separate lanes)", async () => {
    const server = gatedServer();
    const { client } = rig({}, server.handler);
    void client.upsert({ _user_id: "a" });
    void client.track(event(1));
    void client.flush();
    await settle();
    const paths = server.pending.map((p) => new URL(p.request.url).pathname.split("/").pop());
    assert.deepEqual(paths.sort(), ["contacts", "events"]);
    server.pending.forEach((p) => p.release());
    await client.flush();
  });
});
