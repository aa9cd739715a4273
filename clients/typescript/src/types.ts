// The public types: items, outcomes, options, counters, logger.

import type { Clock } from "./clock.js";

/** A scalar attribute or event-parameter value. */
export type Scalar = string | number | boolean | null;

/** An attribute or event-parameter value: a scalar, or an array of scalars (multivalue). */
export type AttributeValue = Scalar | Scalar[];

/** An event for `track()`. `_event_id` is filled with a UUID v7 when absent. */
export interface IngestEvent {
  _user_id: string;
  _event_type: string;
  _event_id?: string;
  /** RFC 3339 with offset; the server defaults it to the time it received the event. */
  _event_date?: string;
  _event_parameters?: Record<string, AttributeValue>;
}

/** A contact write for `upsert()`: `_user_id` and attributes; `null` removes an attribute. */
export interface Contact {
  _user_id: string;
  [attribute: string]: AttributeValue;
}

/** What a `delete(userId)` outcome carries as its item. */
export interface ContactDeletion {
  _user_id: string;
}

export type ItemKind = "event" | "contact" | "delete";

/** Any item as enqueued. */
export type AnyItem = IngestEvent | Contact | ContactDeletion;

/** Field name -> messages, as in the server's batch answer (`_request` for a whole-request refusal). */
export type FieldErrors = Record<string, string[]>;

interface OutcomeBase<I> {
  kind: ItemKind;
  /** The item as enqueued (for events, with its generated `_event_id`). */
  item: I;
}

/** The server answered the item `success` (202, or 200 with `sync`). */
export interface Accepted<I = AnyItem> extends OutcomeBase<I> {
  status: "accepted";
  /** True when the answer was 200 under `sync`: the item is in the database. */
  committed: boolean;
  attempts: number;
}

/** The server refused the item, or the client refused it before sending (then no `httpStatus`, 0 attempts). */
export interface Rejected<I = AnyItem> extends OutcomeBase<I> {
  status: "rejected";
  errors: FieldErrors;
  httpStatus?: number;
  attempts: number;
}

/** Given up: retried past `retryDeadlineMs`, or `close()` timed out. */
export interface Failed<I = AnyItem> extends OutcomeBase<I> {
  status: "failed";
  /** The last error, e.g. `HTTP 503: the message broker could not take the batch in time`. */
  message: string;
  /** The status of the last answer, when there was one. */
  httpStatus?: number;
  attempts: number;
}

/** Never taken: the queue was full under `overflow: "drop"`, or the client was closed. */
export interface Dropped<I = AnyItem> extends OutcomeBase<I> {
  status: "dropped";
  message: string;
}

/** Exactly one per enqueued item. */
export type Outcome<I = AnyItem> = Accepted<I> | Rejected<I> | Failed<I> | Dropped<I>;

/**
 * What `track()`, `upsert()` and `delete()` return: a promise of the item's outcome that
 * never rejects, plus `enqueued`, which resolves once the item holds a place in the queue
 * (at once unless the queue is full under `overflow: "block"`): `true` when the client took
 * the item, `false` when it was dropped. Await `enqueued` to produce no faster than the
 * client delivers.
 */
export type Delivery<I> = Promise<Outcome<I>> & { readonly enqueued: Promise<boolean> };

/** Counts since the client was made (`queued`: held now). */
export interface Stats {
  /** Items the client took (every call that was not dropped). */
  enqueued: number;
  /** Items sent, once per attempt. */
  sent: number;
  accepted: number;
  rejected: number;
  failed: number;
  dropped: number;
  /** Attempts after the first. */
  retries: number;
  /** HTTP requests (attempts). */
  requests: number;
  /** Items held now: taken and not yet finally reported. */
  queued: number;
}

/** A console-like logger; `context` carries structured fields. */
export interface Logger {
  debug(message: string, context?: Record<string, unknown>): void;
  info(message: string, context?: Record<string, unknown>): void;
  warn(message: string, context?: Record<string, unknown>): void;
  error(message: string, context?: Record<string, unknown>): void;
}

export type Overflow = "block" | "drop";

/** Options of `new IngestClient(...)`: docs/clients.md's names in camelCase, durations in ms. */
export interface IngestClientOptions {
  /** The gateway, e.g. `https://ingest.example.com`. */
  baseUrl: string;
  project: string;
  datasource: string;
  /** `ingk_...`, sent as `Authorization: Bearer`. */
  token: string;
  /** Items per request, 1–100. Default 100. */
  maxBatchItems?: number;
  /** Most bytes of a request body, measured on the encoded JSON before gzip. Default 1,048,576. */
  maxBatchBytes?: number;
  /** A partial batch is sent this long after its first item was enqueued. Default 1000. */
  flushIntervalMs?: number;
  /** Items held in memory (taken, not yet finally reported). Default 10,000. */
  maxQueueItems?: number;
  /** When the queue is full: wait for room (`block`, see `Delivery.enqueued`) or report `dropped`. Default `block`. */
  overflow?: Overflow;
  /** Concurrent event requests. Contact writes always go one request at a time. Default 4. */
  maxInFlight?: number;
  /** Gzip request bodies (`Content-Encoding: gzip`). Default false. */
  gzip?: boolean;
  /** Add `?_sync` to the POSTs: accepted outcomes then say `committed: true` once in the database. Default false. */
  sync?: boolean;
  /** One HTTP attempt. Default 10,000 (15,000 with `sync`). */
  requestTimeoutMs?: number;
  /** First retry's backoff cap. Default 200. */
  retryInitialBackoffMs?: number;
  /** Largest backoff cap. Default 30,000. */
  retryMaxBackoffMs?: number;
  /** A batch is given up (`failed`) when its next sleep would end later than this after its first attempt. Default 120,000. */
  retryDeadlineMs?: number;
  /** Called with each item's outcome (exceptions are caught and logged). */
  onDelivery?: (outcome: Outcome) => void;
  /** Default: warn and error to the console, debug and info nowhere. */
  logger?: Logger;
  /** The `fetch` to use. Default `globalThis.fetch`. */
  fetch?: typeof fetch;
  /** Time source and timers (for tests). Default: `Date.now` and `setTimeout`. */
  clock?: Clock;
  /** Uniform random numbers in [0, 1) for the backoff jitter (for tests). Default `Math.random`. */
  random?: () => number;
}
