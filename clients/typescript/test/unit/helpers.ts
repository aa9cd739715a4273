// Test doubles: a clock driven by hand, a fetch that records requests and answers as told,
// and a logger that records lines.

import { gunzipSync } from "node:zlib";

import type { Clock, Timer } from "../../dist/clock.js";
import { IngestClient } from "../../dist/client.js";
import type { IngestClientOptions, Logger, Outcome } from "../../dist/types.js";

/** Lets every pending promise chain (and fetch's Response reads) run. */
export async function settle(rounds = 20): Promise<void> {
  for (let i = 0; i < rounds; i += 1) {
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
}

interface FakeTimer {
  at: number;
  order: number;
  callback: () => void;
  keepAlive: boolean;
  cancelled: boolean;
}

/** A clock whose time moves only in advance(); timers fire in time order. */
export class FakeClock implements Clock {
  private nowMs: number;
  private order = 0;
  private timers: FakeTimer[] = [];

  constructor(startMs = 1_800_000_000_000) {
    this.nowMs = startMs;
  }

  now(): number {
    return this.nowMs;
  }

  setTimer(callback: () => void, ms: number, keepAlive = true): Timer {
    const timer: FakeTimer = {
      at: this.nowMs + Math.max(0, ms),
      order: (this.order += 1),
      callback,
      keepAlive,
      cancelled: false,
    };
    this.timers.push(timer);
    return {
      cancel: () => {
        timer.cancelled = true;
      },
    };
  }

  /** Timers not fired nor cancelled. */
  pendingTimers(): number {
    return this.timers.filter((t) => !t.cancelled).length;
  }

  /** When the next timer is due, if any. */
  nextDue(): number | undefined {
    const live = this.timers.filter((t) => !t.cancelled);
    return live.length === 0 ? undefined : Math.min(...live.map((t) => t.at));
  }

  /** Moves time forward by `ms`, firing due timers in order and letting promises run after each. */
  async advance(ms: number): Promise<void> {
    const target = this.nowMs + ms;
    for (;;) {
      await settle();
      const due = this.timers
        .filter((t) => !t.cancelled && t.at <= target)
        .sort((a, b) => a.at - b.at || a.order - b.order)[0];
      if (due === undefined) break;
      this.nowMs = Math.max(this.nowMs, due.at);
      due.cancelled = true;
      due.callback();
    }
    this.nowMs = target;
    await settle();
  }

  /** Advances in steps until `done()` or `limitMs` of fake time passed; returns whether done. */
  async advanceUntil(done: () => boolean, limitMs: number, stepMs = 100): Promise<boolean> {
    let passed = 0;
    await settle();
    while (!done() && passed < limitMs) {
      await this.advance(stepMs);
      passed += stepMs;
    }
    return done();
  }
}

export interface RecordedRequest {
  method: string;
  url: string;
  headers: Headers;
  /** The body as JSON text (gunzipped when it was sent gzipped); "" without body. */
  text: string;
  /** Size of the body as sent (after gzip). */
  sentBytes: number;
  /** The parsed body (undefined without body). */
  items: unknown[] | undefined;
  /** Fake time when the request started. */
  at: number;
  signal: AbortSignal | undefined;
}

export type Handler = (request: RecordedRequest, index: number) => Response | Promise<Response>;

/** A fetch that records every request and answers with `handler` (default: every item success). */
export class FakeFetch {
  readonly requests: RecordedRequest[] = [];
  inFlight = 0;
  maxInFlight = 0;
  handler: Handler;

  constructor(
    private readonly clock: Clock,
    handler?: Handler,
  ) {
    this.handler = handler ?? ((request) => accepted(request));
  }

  readonly fetch = async (input: RequestInfo | URL, init?: RequestInit): Promise<Response> => {
    const headers = new Headers(init?.headers);
    let text = "";
    let sentBytes = 0;
    if (init?.body instanceof Uint8Array) {
      sentBytes = init.body.byteLength;
      const raw = headers.get("content-encoding") === "gzip" ? gunzipSync(init.body) : Buffer.from(init.body);
      text = raw.toString("utf8");
    } else if (typeof init?.body === "string") {
      text = init.body;
      sentBytes = Buffer.byteLength(text);
    }
    const request: RecordedRequest = {
      method: init?.method ?? "GET",
      url: String(input),
      headers,
      text,
      sentBytes,
      items: text === "" ? undefined : (JSON.parse(text) as unknown[]),
      at: this.clock.now(),
      signal: init?.signal ?? undefined,
    };
    const index = this.requests.push(request) - 1;
    this.inFlight += 1;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    try {
      const signal = init?.signal;
      const answer = Promise.resolve(this.handler(request, index));
      if (signal === undefined || signal === null) return await answer;
      return await new Promise<Response>((resolve, reject) => {
        if (signal.aborted) reject(new DOMException("aborted", "AbortError"));
        signal.addEventListener("abort", () => reject(new DOMException("aborted", "AbortError")), { once: true });
        answer.then(resolve, reject);
      });
    } finally {
      this.inFlight -= 1;
    }
  };

  /** Requests to one path suffix, e.g. "/stream/events". */
  to(path: string): RecordedRequest[] {
    return this.requests.filter((r) => new URL(r.url).pathname.endsWith(path));
  }
}

/** A promise with its resolve function outside. */
export function deferred<T>(): { promise: Promise<T>; resolve: (value: T) => void } {
  let resolve: (value: T) => void = () => {};
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

export function json(status: number, body: unknown, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json", ...headers },
  });
}

/** The server's batch answer for `statuses` ("success" or an errors object). */
export function batchAnswer(statuses: Array<"success" | Record<string, string[]>>): unknown {
  const items = statuses.map((s) =>
    s === "success" ? { status: "success", _user_id: "u" } : { status: "error", _user_id: "u", errors: s },
  );
  return {
    entity: {
      successful: items.filter((i) => i.status === "success").length,
      failed: items.filter((i) => i.status === "error").length,
      items,
    },
  };
}

/** 202 (or `status`) with every item of the request answered success. */
export function accepted(request: RecordedRequest, status = 202): Response {
  const count = request.items?.length ?? 1;
  return json(status, batchAnswer(Array.from({ length: count }, () => "success" as const)));
}

export function empty(status: number, headers: Record<string, string> = {}): Response {
  return new Response(null, { status, headers });
}

export interface LogLine {
  level: "debug" | "info" | "warn" | "error";
  message: string;
  context: Record<string, unknown> | undefined;
}

export class RecordingLogger implements Logger {
  readonly lines: LogLine[] = [];
  debug(message: string, context?: Record<string, unknown>): void {
    this.lines.push({ level: "debug", message, context });
  }
  info(message: string, context?: Record<string, unknown>): void {
    this.lines.push({ level: "info", message, context });
  }
  warn(message: string, context?: Record<string, unknown>): void {
    this.lines.push({ level: "warn", message, context });
  }
  error(message: string, context?: Record<string, unknown>): void {
    this.lines.push({ level: "error", message, context });
  }
  at(level: LogLine["level"]): LogLine[] {
    return this.lines.filter((l) => l.level === level);
  }
}

export interface Rig {
  client: IngestClient;
  clock: FakeClock;
  server: FakeFetch;
  logger: RecordingLogger;
  delivered: Outcome[];
}

/** A client on a fake clock and a fake fetch (every item accepted unless `handler` says otherwise). */
export function rig(options: Partial<IngestClientOptions> = {}, handler?: Handler): Rig {
  const clock = new FakeClock();
  const server = new FakeFetch(clock, handler);
  const logger = new RecordingLogger();
  const delivered: Outcome[] = [];
  const client = new IngestClient({
    baseUrl: "https://ingest.test",
    project: "proj",
    datasource: "web",
    token: "ingk_test",
    fetch: server.fetch,
    clock,
    logger,
    random: () => 0.5,
    onDelivery: (outcome) => delivered.push(outcome),
    ...options,
  });
  return { client, clock, server, logger, delivered };
}

/** An event for user `u` numbered `i`. */
export function event(i: number, extra: Record<string, unknown> = {}): { _user_id: string; _event_type: string } {
  return { _user_id: `u${i}`, _event_type: "page_view", ...extra };
}
