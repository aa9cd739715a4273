// Producer benchmark: one IngestClient tracking realistic events as fast as it is allowed.
//
// Run by scripts/bench-clients.sh against one gateway; prints one JSON line. Every event
// is distinct: a client-generated `_event_id`, a user drawn from 100,000, one of eight
// event types, and parameters of varied sizes, from a seeded generator. The loop awaits
// each item's place in the client's bounded queue (`Delivery.enqueued`), so the rate is
// what the client sustains end to end: encoding, batching, HTTP and the gateway's
// answers. Accepted outcomes are counted (through `onDelivery`) in the window after the
// warm-up.
//
// Usage: node dist-bench/producer.js BASE_URL PROJECT DATASOURCE TOKEN SECONDS WARMUP_SECONDS

import { IngestClient } from "../dist/index.js";
import type { AttributeValue, IngestEvent, Outcome } from "../dist/index.js";

const EVENT_TYPES = ["page_view", "click", "search", "add_to_cart", "purchase", "signup", "share", "scroll"];
const WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india"];

/** mulberry32: a small seeded generator, uniform in [0, 1). */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const random = seeded(42);
const int = (lo: number, hi: number): number => lo + Math.floor(random() * (hi - lo + 1));
const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)] as T;
const words = (n: number): string[] => Array.from({ length: n }, () => pick(WORDS));

function event(n: number): IngestEvent {
  const parameters: Record<string, AttributeValue> = {
    n,
    price: Math.round(random() * 50000) / 100,
    path: "/" + words(int(1, 5)).join("/"),
  };
  if (random() < 0.3) parameters["tags"] = words(int(1, 8));
  if (random() < 0.1) parameters["note"] = words(int(10, 60)).join(" ");
  return {
    _user_id: `user-${Math.floor(random() * 100_000)}`,
    _event_type: pick(EVENT_TYPES),
    _event_parameters: parameters,
  };
}

async function main(): Promise<void> {
  const [baseUrl, project, datasource, token, seconds, warmup] = process.argv.slice(2);
  if (!baseUrl || !project || !datasource || !token || !seconds || !warmup) {
    throw new Error("usage: producer.js BASE_URL PROJECT DATASOURCE TOKEN SECONDS WARMUP_SECONDS");
  }
  const started = performance.now();
  const windowStart = started + Number(warmup) * 1000;
  const windowEnd = windowStart + Number(seconds) * 1000;
  let inWindow = 0;
  const client = new IngestClient({
    baseUrl,
    project,
    datasource,
    token,
    onDelivery: (outcome: Outcome) => {
      const now = performance.now();
      if (outcome.status === "accepted" && now >= windowStart && now < windowEnd) inWindow += 1;
    },
  });
  let n = 0;
  while (performance.now() < windowEnd) {
    await client.track(event(n)).enqueued;
    n += 1;
  }
  const closing = performance.now();
  const stats = await client.close(60_000);
  console.log(
    JSON.stringify({
      client: "typescript",
      window_s: Number(seconds),
      accepted_in_window: inWindow,
      events_per_sec: Math.round(inWindow / Number(seconds)),
      close_s: Math.round((performance.now() - closing) / 10) / 100,
      enqueued: stats.enqueued,
      accepted: stats.accepted,
      rejected: stats.rejected,
      failed: stats.failed,
      dropped: stats.dropped,
      requests: stats.requests,
      retries: stats.retries,
    }),
  );
}

await main();
