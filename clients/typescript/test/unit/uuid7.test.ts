import assert from "node:assert/strict";
import { test } from "node:test";

import { uuid7, uuid7Millis, Uuid7Generator } from "../../dist/uuid7.js";
import { event, rig } from "./helpers.js";

const FORMAT = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

test("uuid7: format is 8-4-4-4-12 lowercase hex, version 7, variant 10", () => {
  for (let i = 0; i < 1000; i += 1) assert.match(uuid7(), FORMAT);
});

test("uuid7: the first 48 bits are the Unix milliseconds", () => {
  const ms = 1_733_155_200_123; // 2024-12-02T16:00:00.123Z
  const id = new Uuid7Generator(() => ms).next();
  assert.equal(uuid7Millis(id), ms);
  assert.equal(id.slice(0, 13), "01938819-9c7b");
});

test("uuid7: strictly increasing within one millisecond, past the 12-bit counter", () => {
  const gen = new Uuid7Generator(() => 1_800_000_000_000);
  let previous = gen.next();
  // 10,000 ids in one millisecond: the counter overflows and the time field moves on.
  for (let i = 0; i < 10_000; i += 1) {
    const id = gen.next();
    assert.match(id, FORMAT);
    assert.ok(id > previous, `${id} should sort after ${previous}`);
    previous = id;
  }
  assert.ok(uuid7Millis(previous) > 1_800_000_000_000, "the time field moved past the frozen clock");
});

test("uuid7: strictly increasing when the clock steps back", () => {
  let now = 1_800_000_000_000;
  const gen = new Uuid7Generator(() => now);
  const a = gen.next();
  now -= 5_000;
  const b = gen.next();
  now += 10_000;
  const c = gen.next();
  assert.ok(a < b && b < c, `${a} < ${b} < ${c}`);
  assert.equal(uuid7Millis(c), now);
});

test("uuid7: random bits come from the random source (two generators, same ms, differ)", () => {
  const ms = () => 1_800_000_000_000;
  const ids = new Set(Array.from({ length: 50 }, () => new Uuid7Generator(ms).next()));
  assert.equal(ids.size, 50);
  const fixed = new Uuid7Generator(ms, (bytes) => bytes.fill(0xff)).next();
  // All-ones randomness: counter start 0x7ff (top bit cleared), variant bits forced to 10.
  assert.equal(fixed, `${fixed.slice(0, 13)}-77ff-bfff-ffffffffffff`);
});

test("track() fills _event_id with a UUID v7 and keeps the caller's own id", async () => {
  const { client, clock, server } = rig();
  const mine = { _user_id: "u1", _event_type: "x" };
  const generated = client.track(mine);
  const kept = client.track(event(2, { _event_id: "my-own-id" }));
  await clock.advance(1_000);
  const [a, b] = await Promise.all([generated, kept]);
  assert.equal(a.status, "accepted");
  assert.match(a.item._event_id ?? "", FORMAT);
  assert.equal("_event_id" in mine, false, "the caller's object is not changed");
  assert.equal(b.item._event_id, "my-own-id");
  const sent = server.requests[0]?.items as Array<{ _event_id: string }>;
  assert.deepEqual(
    sent.map((e) => e._event_id),
    [a.item._event_id, "my-own-id"],
  );
});
