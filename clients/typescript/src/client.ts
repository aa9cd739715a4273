// IngestClient: the calls of docs/clients.md, wiring the queue, the two lanes (events,
// contact writes), the batcher, the retry loop and the outcomes together.

import { Batcher, utf8Bytes, type Batch } from "./batcher.js";
import { systemClock, type Clock } from "./clock.js";
import { resolveBatch, OutcomeReporter, type OutcomeFields } from "./outcomes.js";
import { BoundedQueue } from "./queue.js";
import {
  CLOSED_MESSAGE,
  EndpointGate,
  messageOf,
  sendWithRetries,
  type RetryPolicy,
} from "./retry.js";
import { canGzip, gzip, Transport, type HttpRequest } from "./transport.js";
import type {
  AnyItem,
  Contact,
  ContactDeletion,
  Delivery,
  FieldErrors,
  IngestClientOptions,
  IngestEvent,
  ItemKind,
  Logger,
  Outcome,
  Overflow,
  Stats,
} from "./types.js";
import { Uuid7Generator } from "./uuid7.js";

export const DEFAULTS = {
  maxBatchItems: 100,
  maxBatchBytes: 1_048_576,
  flushIntervalMs: 1_000,
  maxQueueItems: 10_000,
  overflow: "block" as Overflow,
  maxInFlight: 4,
  requestTimeoutMs: 10_000,
  syncRequestTimeoutMs: 15_000,
  retryInitialBackoffMs: 200,
  retryMaxBackoffMs: 30_000,
  retryDeadlineMs: 120_000,
  closeTimeoutMs: 30_000,
} as const;

/** The server's limit of items per request. */
export const SERVER_MAX_BATCH_ITEMS = 100;

const noop = (): void => {};

/** Warnings and errors to the console; debug and info nowhere. */
export const consoleLogger: Logger = {
  debug: noop,
  info: noop,
  warn: (message, context) =>
    context === undefined ? console.warn(message) : console.warn(message, context),
  error: (message, context) =>
    context === undefined ? console.error(message) : console.error(message, context),
};

type LaneName = "events" | "contacts";
/** The server's rate-limited endpoints this client uses (each has its own 429 pause). */
type Endpoint = "events" | "contacts" | "contacts_delete";

interface Entry {
  seq: number;
  kind: ItemKind;
  item: AnyItem;
  /** The item's JSON text ("" for a delete, which has no body). */
  encoded: string;
  bytes: number;
  state: "new" | "waiting" | "queued" | "done";
  promise: Promise<Outcome>;
  resolve: (outcome: Outcome) => void;
  /** Resolves `Delivery.enqueued`. */
  taken: (ok: boolean) => void;
}

/** A batch being sent, with what close() needs if it has to give it up. */
interface Sending {
  batch: Batch<Entry>;
  attempts: number;
  lastStatus: number | undefined;
}

/** One lane: its batcher, the sealed batches waiting, and those being sent. */
class Lane {
  readonly batcher: Batcher<Entry>;
  readonly ready: Batch<Entry>[] = [];
  readonly active = new Set<Sending>();

  constructor(
    readonly name: LaneName,
    private readonly concurrency: number,
    private readonly client: IngestClient,
    batcherOf: (emit: (batch: Batch<Entry>) => void) => Batcher<Entry>,
  ) {
    this.batcher = batcherOf((batch) => {
      this.ready.push(batch);
      this.pump();
    });
  }

  /** Starts sending ready batches, in order, while fewer than `concurrency` are out. */
  pump(): void {
    while (!this.client.stopped && this.active.size < this.concurrency) {
      const batch = this.ready.shift();
      if (batch === undefined) return;
      const sending: Sending = { batch, attempts: 0, lastStatus: undefined };
      this.active.add(sending);
      void this.client.deliver(this.name, sending).finally(() => {
        this.active.delete(sending);
        this.pump();
      });
    }
  }
}

/**
 * The ingest client. `track()`, `upsert()` and `delete()` enqueue an item and return its
 * outcome's promise (never rejected); `flush()` and `close()` wait for outcomes.
 */
export class IngestClient {
  /** Set once close() timed out: nothing more is sent. @internal */
  stopped = false;

  private readonly options: Required<
    Omit<IngestClientOptions, "onDelivery" | "logger" | "fetch" | "clock" | "random">
  >;
  private readonly base: string;
  private readonly logger: Logger;
  private readonly clock: Clock;
  private readonly random: () => number;
  private readonly transport: Transport;
  private readonly reporter: OutcomeReporter;
  private readonly queue: BoundedQueue<Entry>;
  private readonly ids: Uuid7Generator;
  private readonly policy: RetryPolicy;
  private readonly gates: Record<Endpoint, EndpointGate> = {
    events: new EndpointGate(),
    contacts: new EndpointGate(),
    contacts_delete: new EndpointGate(),
  };
  private readonly events: Lane;
  private readonly contacts: Lane;
  /** Items taken or waiting and not finally reported. */
  private readonly outstanding = new Set<Entry>();
  private readonly abort = new AbortController();
  private readonly gzip: boolean;
  private seq = 0;
  /** Items up to this sequence number are covered by a flush() or close(): send them at once. */
  private flushMark = 0;
  private sealScheduled = false;
  private closed = false;
  private closing: Promise<Stats> | undefined;

  constructor(options: IngestClientOptions) {
    for (const name of ["baseUrl", "project", "datasource", "token"] as const) {
      if (typeof options[name] !== "string" || options[name] === "") {
        throw new TypeError(`IngestClient: option ${name} is required`);
      }
    }
    try {
      new URL(options.baseUrl);
    } catch {
      throw new TypeError(`IngestClient: baseUrl is not a URL: ${options.baseUrl}`);
    }
    const sync = options.sync ?? false;
    this.options = {
      baseUrl: options.baseUrl,
      project: options.project,
      datasource: options.datasource,
      token: options.token,
      maxBatchItems: integer("maxBatchItems", options.maxBatchItems, DEFAULTS.maxBatchItems, 1, SERVER_MAX_BATCH_ITEMS),
      maxBatchBytes: integer("maxBatchBytes", options.maxBatchBytes, DEFAULTS.maxBatchBytes, 3),
      flushIntervalMs: integer("flushIntervalMs", options.flushIntervalMs, DEFAULTS.flushIntervalMs, 0),
      maxQueueItems: integer("maxQueueItems", options.maxQueueItems, DEFAULTS.maxQueueItems, 1),
      overflow: options.overflow ?? DEFAULTS.overflow,
      maxInFlight: integer("maxInFlight", options.maxInFlight, DEFAULTS.maxInFlight, 1),
      gzip: options.gzip ?? false,
      sync,
      requestTimeoutMs: integer(
        "requestTimeoutMs",
        options.requestTimeoutMs,
        sync ? DEFAULTS.syncRequestTimeoutMs : DEFAULTS.requestTimeoutMs,
        1,
      ),
      retryInitialBackoffMs: integer("retryInitialBackoffMs", options.retryInitialBackoffMs, DEFAULTS.retryInitialBackoffMs, 0),
      retryMaxBackoffMs: integer("retryMaxBackoffMs", options.retryMaxBackoffMs, DEFAULTS.retryMaxBackoffMs, 0),
      retryDeadlineMs: integer("retryDeadlineMs", options.retryDeadlineMs, DEFAULTS.retryDeadlineMs, 0),
    };
    if (this.options.overflow !== "block" && this.options.overflow !== "drop") {
      throw new RangeError(`IngestClient: overflow must be "block" or "drop"`);
    }
    const o = this.options;
    this.base =
      `${o.baseUrl.replace(/\/+$/, "")}/v1/project/${encodeURIComponent(o.project)}` +
      `/datasource/${encodeURIComponent(o.datasource)}`;
    this.logger = options.logger ?? consoleLogger;
    this.clock = options.clock ?? systemClock;
    this.random = options.random ?? Math.random;
    const fetchImpl = options.fetch ?? globalThis.fetch;
    if (typeof fetchImpl !== "function") {
      throw new TypeError("IngestClient: no fetch in this runtime; pass options.fetch");
    }
    this.transport = new Transport({
      // Called as a plain function: a browser's fetch refuses another `this`.
      fetch: (input, init) => fetchImpl(input, init),
      token: o.token,
      timeoutMs: o.requestTimeoutMs,
      clock: this.clock,
    });
    this.gzip = o.gzip && canGzip();
    if (o.gzip && !this.gzip) {
      this.logger.warn("ingest-client: gzip asked for but CompressionStream is missing; sending bodies uncompressed");
    }
    this.reporter = new OutcomeReporter(this.logger, options.onDelivery);
    this.queue = new BoundedQueue<Entry>(o.maxQueueItems, o.overflow, (entry) => this.take(entry));
    this.ids = new Uuid7Generator(() => this.clock.now());
    this.policy = {
      initialBackoffMs: o.retryInitialBackoffMs,
      maxBackoffMs: o.retryMaxBackoffMs,
      deadlineMs: o.retryDeadlineMs,
    };
    const batcherOf = (emit: (batch: Batch<Entry>) => void): Batcher<Entry> =>
      new Batcher<Entry>(
        { maxItems: o.maxBatchItems, maxBytes: o.maxBatchBytes, intervalMs: o.flushIntervalMs },
        this.clock,
        emit,
      );
    this.events = new Lane("events", o.maxInFlight, this, batcherOf);
    // Contact writes: one request at a time, in the order enqueued.
    this.contacts = new Lane("contacts", 1, this, batcherOf);
  }

  /** Enqueues an event; gives it a UUID v7 `_event_id` when it has none (your object is not changed). */
  track(event: IngestEvent): Delivery<IngestEvent> {
    if (!isObject(event)) return this.submit("event", event, { _item: ["Must be an object"] });
    const item =
      event._event_id === undefined || event._event_id === null
        ? { ...event, _event_id: this.ids.next() }
        : event;
    return this.submit("event", item);
  }

  /** Enqueues a contact write (`_user_id` and attributes; `null` removes an attribute). */
  upsert(contact: Contact): Delivery<Contact> {
    if (!isObject(contact)) return this.submit("contact", contact, { _item: ["Must be an object"] });
    return this.submit("contact", contact);
  }

  /** Enqueues the deletion of a contact: `DELETE /stream/contacts/{userId}`, sent alone and in order. */
  delete(userId: string): Delivery<ContactDeletion> {
    const item: ContactDeletion = { _user_id: userId };
    if (typeof userId !== "string") return this.submit("delete", item, { _user_id: ["Must be a string"] });
    return this.submit("delete", item);
  }

  /** Sends everything enqueued so far and resolves once each of those items has its outcome. */
  async flush(): Promise<void> {
    const pending = [...this.outstanding].map((entry) => entry.promise);
    if (pending.length === 0) return;
    this.flushMark = Math.max(this.flushMark, this.seq);
    this.sealAll();
    await Promise.all(pending);
  }

  /**
   * Stops taking items (later calls are `dropped`), sends everything, and resolves once
   * every item has its outcome or `timeoutMs` passed; what is undelivered then is reported
   * `failed` ("closed before delivery"), and items still waiting for room `dropped`.
   * Resolves with the final counters; calling it again returns the same promise.
   */
  close(timeoutMs: number = DEFAULTS.closeTimeoutMs): Promise<Stats> {
    this.closing ??= this.shutdown(timeoutMs);
    return this.closing;
  }

  /** A snapshot of the counters. */
  stats(): Stats {
    return { ...this.reporter.stats, queued: this.queue.size };
  }

  private async shutdown(timeoutMs: number): Promise<Stats> {
    this.closed = true;
    this.flushMark = Number.POSITIVE_INFINITY;
    const pending = [...this.outstanding].map((entry) => entry.promise);
    this.sealAll();
    if (pending.length > 0) {
      let timer: { cancel(): void } | undefined;
      const timedOut = new Promise<boolean>((resolve) => {
        // Not kept alive: it only bounds work that keeps the process alive by itself.
        timer = this.clock.setTimer(() => resolve(true), timeoutMs, false);
      });
      const late = await Promise.race([Promise.all(pending).then(() => false), timedOut]);
      timer?.cancel();
      if (late) this.abandon(timeoutMs);
    }
    return this.stats();
  }

  /** close() timed out: stop sending, report everything still undelivered. */
  private abandon(timeoutMs: number): void {
    this.stopped = true;
    this.abort.abort();
    let failed = 0;
    let dropped = 0;
    for (const entry of this.queue.takeWaiting()) {
      this.drop(entry, "client closed before the item could be queued");
      dropped += 1;
    }
    for (const lane of [this.events, this.contacts]) {
      for (const sending of lane.active) {
        for (const entry of sending.batch.entries) {
          if (entry.state === "done") continue;
          failed += 1;
          this.finish(entry, {
            status: "failed",
            message: CLOSED_MESSAGE,
            attempts: sending.attempts,
            ...(sending.lastStatus === undefined ? {} : { httpStatus: sending.lastStatus }),
          });
        }
      }
      const unsent = [...lane.ready.splice(0).flatMap((b) => b.entries), ...lane.batcher.discard()];
      for (const entry of unsent) {
        failed += 1;
        this.finish(entry, { status: "failed", message: CLOSED_MESSAGE, attempts: 0 });
      }
    }
    this.logger.error(
      `ingest-client: close() timed out after ${timeoutMs} ms: ${failed} items failed (${CLOSED_MESSAGE}), ${dropped} dropped`,
      { failed, dropped },
    );
  }

  /** Creates the item's entry and either refuses it, queues it, parks it, or drops it. */
  private submit<I extends AnyItem>(kind: ItemKind, item: I, refuse?: FieldErrors): Delivery<I> {
    let resolve: (outcome: Outcome) => void = noop;
    let taken: (ok: boolean) => void = noop;
    const promise = new Promise<Outcome>((r) => (resolve = r));
    const enqueued = new Promise<boolean>((r) => (taken = r));
    const entry: Entry = {
      seq: ++this.seq,
      kind,
      item,
      encoded: "",
      bytes: 0,
      state: "new",
      promise,
      resolve,
      taken,
    };
    const delivery = Object.assign(promise as Promise<Outcome<I>>, { enqueued });
    if (this.closed) {
      this.drop(entry, "client closed");
      return delivery;
    }
    if (refuse === undefined && kind !== "delete") {
      let encoded: string | undefined;
      try {
        encoded = JSON.stringify(item);
      } catch {
        encoded = undefined;
      }
      if (typeof encoded !== "string") {
        refuse = { _item: ["Cannot be encoded as JSON"] };
      } else {
        entry.encoded = encoded;
        entry.bytes = utf8Bytes(encoded);
        if (!this.laneOf(kind).batcher.fits(entry.bytes)) refuse = { _item: ["Too large"] };
      }
    }
    if (refuse !== undefined) {
      // Taken and refused at once: counted as enqueued and rejected, never queued.
      this.reporter.stats.enqueued += 1;
      entry.taken(true);
      this.logger.warn(`ingest-client: ${kind} rejected before sending`, { errors: refuse });
      this.finish(entry, { status: "rejected", errors: refuse, attempts: 0 });
      return delivery;
    }
    switch (this.queue.offer(entry)) {
      case "taken":
        this.take(entry);
        break;
      case "waiting":
        entry.state = "waiting";
        this.outstanding.add(entry);
        break;
      case "full":
        this.drop(entry, "queue full");
        break;
    }
    return delivery;
  }

  /** The item got its place in the queue: into its lane. */
  private take(entry: Entry): void {
    entry.state = "queued";
    this.outstanding.add(entry);
    this.reporter.stats.enqueued += 1;
    entry.taken(true);
    if (entry.kind === "delete") {
      this.contacts.batcher.addAlone(entry);
    } else {
      this.laneOf(entry.kind).batcher.add(entry);
    }
    if (entry.seq <= this.flushMark) this.scheduleSeal();
  }

  private drop(entry: Entry, message: string): void {
    this.logger.warn(`ingest-client: ${entry.kind} dropped: ${message}`, { kind: entry.kind });
    // Every call counts once in `enqueued`, a dropped one too (docs/clients.md).
    this.reporter.stats.enqueued += 1;
    entry.taken(false);
    this.finish(entry, { status: "dropped", message });
  }

  /** Reports the item's one outcome (later calls for it are ignored). */
  private finish(entry: Entry, fields: OutcomeFields): void {
    if (entry.state === "done") return;
    const heldPlace = entry.state === "queued";
    entry.state = "done";
    this.outstanding.delete(entry);
    const outcome = { ...fields, kind: entry.kind, item: entry.item } as Outcome;
    this.reporter.report(outcome);
    entry.resolve(outcome);
    if (heldPlace) this.queue.release();
  }

  private laneOf(kind: ItemKind): Lane {
    return kind === "event" ? this.events : this.contacts;
  }

  private sealAll(): void {
    this.events.batcher.seal();
    this.contacts.batcher.seal();
  }

  /** Seals once the current burst of takes is over, so they still share batches. */
  private scheduleSeal(): void {
    if (this.sealScheduled) return;
    this.sealScheduled = true;
    queueMicrotask(() => {
      this.sealScheduled = false;
      this.sealAll();
    });
  }

  /** Sends one batch with retries and reports its items. @internal */
  async deliver(lane: LaneName, sending: Sending): Promise<void> {
    const entries = sending.batch.entries;
    const first = entries[0];
    if (first === undefined) return;
    const isDelete = first.kind === "delete";
    const endpoint: Endpoint = isDelete ? "contacts_delete" : lane;
    const sync = this.options.sync && !isDelete;
    const url = isDelete
      ? `${this.base}/stream/contacts/${encodeURIComponent(first.item._user_id)}`
      : `${this.base}/stream/${lane}${sync ? "?_sync" : ""}`;
    const request: HttpRequest = { method: isDelete ? "DELETE" : "POST", url, gzip: false, requestId: this.ids.next() };
    if (!isDelete) {
      const body = new TextEncoder().encode(`[${entries.map((e) => e.encoded).join(",")}]`);
      request.body = body;
      if (this.gzip) {
        try {
          request.body = await gzip(body);
          request.gzip = true;
        } catch (err) {
          this.logger.warn("ingest-client: gzip failed; sending the body uncompressed", { error: String(err) });
        }
      }
    }
    const label = isDelete ? "DELETE /stream/contacts/{user_id}" : `POST /stream/${lane}`;
    const stats = this.reporter.stats;
    const result = await sendWithRetries({
      attempt: async () => {
        sending.attempts += 1;
        stats.requests += 1;
        stats.sent += entries.length;
        if (sending.attempts > 1) stats.retries += 1;
        const answer = await this.transport.attempt(request, this.abort.signal);
        sending.lastStatus = answer.kind === "response" ? answer.status : undefined;
        return answer;
      },
      policy: this.policy,
      clock: this.clock,
      random: this.random,
      gate: this.gates[endpoint],
      signal: this.abort.signal,
      onRetry: (info) =>
        this.logger.info(
          `ingest-client: ${label} failed (${info.reason}); ` +
            `retry ${info.retry} of ${entries.length} items in ${Math.round(info.waitMs)} ms`,
          {
            endpoint,
            requestId: request.requestId,
            items: entries.length,
            retry: info.retry,
            waitMs: info.waitMs,
            httpStatus: info.httpStatus,
          },
        ),
      onPause: (waitMs) =>
        this.logger.info(`ingest-client: ${label} answered 429; pausing the endpoint for ${Math.round(waitMs)} ms`, {
          endpoint,
          waitMs,
        }),
    });
    if (result.kind === "gave-up" && !result.closed) {
      this.logger.error(`ingest-client: ${label} given up: ${result.message}; ${entries.length} items failed`, {
        endpoint,
        requestId: request.requestId,
        items: entries.length,
        attempts: result.attempts,
        httpStatus: result.httpStatus,
      });
    } else if (result.kind === "answered" && (result.status < 200 || result.status >= 300)) {
      this.logger.warn(
        `ingest-client: ${label} refused with HTTP ${result.status}` +
          `${messageOf(result.body) === undefined ? "" : `: ${messageOf(result.body)}`}; ${entries.length} items rejected`,
        { endpoint, requestId: request.requestId, items: entries.length, httpStatus: result.status },
      );
    }
    const fields = resolveBatch(result, entries.length, sync);
    entries.forEach((entry, i) => {
      const f = fields[i];
      if (f === undefined) return;
      if (f.status === "rejected" && result.kind === "answered" && result.status >= 200 && result.status < 300) {
        this.logger.debug(`ingest-client: ${entry.kind} rejected by the server`, { errors: f.errors });
      }
      this.finish(entry, f);
    });
  }
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function integer(name: string, value: number | undefined, fallback: number, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (value === undefined) return fallback;
  if (typeof value !== "number" || !Number.isFinite(value) || value < min || value > max) {
    throw new RangeError(`IngestClient: ${name} must be a number from ${min} to ${max}, got ${String(value)}`);
  }
  return Math.floor(value);
}
