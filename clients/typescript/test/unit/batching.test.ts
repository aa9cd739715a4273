import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { Batcher, utf8Bytes, type Batch } from "../../dist/batcher.js";
import { event, FakeClock, rig } from "./helpers.js";

describe("Batcher", () => {
  const sized = (bytes: number) => ({ bytes });

  test("seals at maxItems", () => {
    const clock = new FakeClock();
    const out: Array<Batch<{ bytes: number }>> = [];
    const b = new Batcher({ maxItems: 3, maxBytes: 1_000, intervalMs: 1_000 }, clock, (x) => out.push(x));
    for (let i = 0; i < 7; i += 1) b.add(sized(10));
    assert.deepEqual(out.map((x) => x.entries.length), [3, 3]);
    assert.equal(b.pending, 1);
  });

  test("body bytes are [a,b,...]: brackets, items and commas; the limit is inclusive", () => {
    const clock = new FakeClock();
    const out: Array<Batch<{ bytes: number }>> = [];
    // Three items of 10 bytes: 2 + 30 + 2 commas = 34.
    const b = new Batcher({ maxItems: 100, maxBytes: 34, intervalMs: 1_000 }, clock, (x) => out.push(x));
    b.add(sized(10));
    b.add(sized(10));
    b.add(sized(10));
    assert.equal(out.length, 0, "exactly at the limit is still one batch");
    b.add(sized(1));
    assert.equal(out.length, 1, "one more item would go over: the batch is sealed first");
    assert.equal(out[0]?.entries.length, 3);
    assert.equal(out[0]?.bytes, 34);
    assert.equal(b.fits(32), true);
    assert.equal(b.fits(33), false);
  });

  test("seals intervalMs after the first item, not after the last", async () => {
    const clock = new FakeClock();
    const out: Array<Batch<{ bytes: number }>> = [];
    const b = new Batcher({ maxItems: 100, maxBytes: 1_000, intervalMs: 1_000 }, clock, (x) => out.push(x));
    b.add(sized(1));
    await clock.advance(600);
    b.add(sized(1));
    await clock.advance(399);
    assert.equal(out.length, 0);
    await clock.advance(1);
    assert.equal(out.length, 1);
    assert.equal(out[0]?.entries.length, 2);
    assert.equal(clock.pendingTimers(), 0, "no timer left once the batch is out");
  });

  test("addAlone seals what is open, then emits the item by itself", () => {
    const clock = new FakeClock();
    const out: Array<Batch<{ bytes: number; id: string }>> = [];
    const b = new Batcher<{ bytes: number; id: string }>({ maxItems: 100, maxBytes: 1_000, intervalMs: 1_000 }, clock, (x) =>
      out.push(x),
    );
    b.add({ bytes: 1, id: "a" });
    b.add({ bytes: 1, id: "b" });
    b.addAlone({ bytes: 0, id: "del" });
    b.add({ bytes: 1, id: "c" });
    b.seal();
    assert.deepEqual(
      out.map((x) => x.entries.map((e) => e.id)),
      [["a", "b"], ["del"], ["c"]],
    );
  });

  test("utf8Bytes counts encoded bytes, not characters", () => {
    assert.equal(utf8Bytes("abc"), 3);
    assert.equal(utf8Bytes("é"), 2);
    assert.equal(utf8Bytes("€"), 3);
    assert.equal(utf8Bytes("😀"), 4);
  });
});

describe("batching through the client", () => {
  test("by count: 250 events with maxBatchItems 100 go out as 100 + 100 at once and 50 at the interval", async () => {
    const { client, clock, server } = rig({ maxBatchItems: 100, flushIntervalMs: 1_000 });
    const outcomes = Array.from({ length: 250 }, (_, i) => client.track(event(i)));
    await clock.advance(0);
    assert.deepEqual(server.requests.map((r) => r.items?.length), [100, 100]);
    await clock.advance(999);
    assert.equal(server.requests.length, 2);
    await clock.advance(1);
    assert.deepEqual(server.requests.map((r) => r.items?.length), [100, 100, 50]);
    const all = await Promise.all(outcomes);
    assert.ok(all.every((o) => o.status === "accepted"));
    // Every event exactly once, in order.
    const sent = server.requests.flatMap((r) => (r.items ?? []) as Array<{ _user_id: string }>);
    assert.deepEqual(
      sent.map((e) => e._user_id),
      Array.from({ length: 250 }, (_, i) => `u${i}`),
    );
  });

  test("by bytes: each body stays within maxBatchBytes and no batch could have taken one more item", async () => {
    const maxBatchBytes = 1_000;
    const { client, server } = rig({ maxBatchBytes, flushIntervalMs: 1_000 });
    // Multi-byte text: sizes must be counted in UTF-8 bytes.
    const outcomes = Array.from({ length: 40 }, (_, i) => client.track(event(i, { _event_type: "é".repeat(10 + (i % 7) * 9), _event_id: `id-${i}` })));
    await client.flush();
    assert.ok((await Promise.all(outcomes)).every((o) => o.status === "accepted"));
    assert.ok(server.requests.length >= 3, `requests: ${server.requests.length}`);
    const bodies = server.requests.map((r) => r.text);
    for (const [i, body] of bodies.entries()) {
      const bytes = Buffer.byteLength(body);
      assert.ok(bytes <= maxBatchBytes, `body ${i}: ${bytes} bytes`);
      const next = bodies[i + 1];
      if (next !== undefined) {
        const firstOfNext = JSON.stringify((JSON.parse(next) as unknown[])[0]);
        assert.ok(bytes + 1 + Buffer.byteLength(firstOfNext) > maxBatchBytes, `batch ${i} could have taken the next item`);
      }
    }
    const total = server.requests.reduce((n, r) => n + (r.items?.length ?? 0), 0);
    assert.equal(total, 40);
  });

  test("an item too large for any batch is rejected with _item: Too large and never sent", async () => {
    const { client, server, logger } = rig({ maxBatchBytes: 200 });
    const big = client.track(event(1, { _event_id: "x", _event_parameters: { text: "y".repeat(300) } }));
    const ok = client.track(event(2));
    const result = await big;
    assert.equal(result.status, "rejected");
    assert.deepEqual(result.status === "rejected" && result.errors, { _item: ["Too large"] });
    assert.equal(result.status === "rejected" && result.attempts, 0);
    assert.equal(result.status === "rejected" && result.httpStatus, undefined);
    assert.equal(await big.enqueued, true);
    await client.flush();
    assert.equal((await ok).status, "accepted");
    assert.equal(server.requests.length, 1);
    assert.equal(server.requests[0]?.items?.length, 1);
    assert.equal(logger.at("warn").length, 1);
    const stats = client.stats();
    assert.equal(stats.enqueued, 2);
    assert.equal(stats.rejected, 1);
    assert.equal(stats.accepted, 1);
  });

  test("by interval: a partial batch goes out flushIntervalMs after its first item", async () => {
    const { client, clock, server } = rig({ flushIntervalMs: 2_000 });
    void client.track(event(1));
    await clock.advance(1_500);
    void client.track(event(2));
    await clock.advance(499);
    assert.equal(server.requests.length, 0);
    await clock.advance(1);
    assert.equal(server.requests.length, 1);
    assert.equal(server.requests[0]?.items?.length, 2);
  });

  test("events and contact writes are batched separately", async () => {
    const { client, server } = rig();
    void client.track(event(1));
    void client.upsert({ _user_id: "c1", plan: "pro" });
    void client.track(event(2));
    void client.upsert({ _user_id: "c2", plan: "free" });
    await client.flush();
    assert.equal(server.to("/stream/events").length, 1);
    assert.equal(server.to("/stream/events")[0]?.items?.length, 2);
    assert.equal(server.to("/stream/contacts").length, 1);
    assert.deepEqual(server.to("/stream/contacts")[0]?.items, [
      { _user_id: "c1", plan: "pro" },
      { _user_id: "c2", plan: "free" },
    ]);
  });

  test("requests carry the token, JSON content type and the path ids", async () => {
    const { client, server } = rig({ project: "my proj", datasource: "web" });
    void client.track(event(1));
    await client.flush();
    const r = server.requests[0];
    assert.equal(r?.method, "POST");
    assert.equal(r?.url, "https://ingest.test/v1/project/my%20proj/datasource/web/stream/events");
    assert.equal(r?.headers.get("authorization"), "Bearer ingk_test");
    assert.equal(r?.headers.get("content-type"), "application/json");
    assert.equal(r?.headers.get("content-encoding"), null);
  });

  test("gzip: the body is gzipped, and the byte limit is measured before gzip", async () => {
    const { client, server } = rig({ gzip: true, maxBatchBytes: 2_000 });
    const outcomes = Array.from({ length: 30 }, (_, i) => client.track(event(i, { _event_id: `id-${i}`, _event_parameters: { pad: "z".repeat(100) } })));
    await client.flush();
    assert.ok((await Promise.all(outcomes)).every((o) => o.status === "accepted"));
    assert.ok(server.requests.length >= 2, "split by the uncompressed size");
    for (const r of server.requests) {
      assert.equal(r.headers.get("content-encoding"), "gzip");
      assert.ok(Buffer.byteLength(r.text) <= 2_000);
      assert.ok(r.sentBytes < Buffer.byteLength(r.text), "compressed on the wire");
    }
  });
});
