// Retries: which answers are retried, the backoff, the server's wait headers, the
// per-endpoint pause after a 429, and the loop that sends one batch until it has a final
// answer or is given up (docs/clients.md, "Retries").

import { sleep, type Clock } from "./clock.js";

/** Statuses that are retried; every other status is final. Network errors are retried too. */
export const RETRIED_STATUSES: ReadonlySet<number> = new Set([408, 429, 500, 502, 503, 504]);

export function isRetriedStatus(status: number): boolean {
  return RETRIED_STATUSES.has(status);
}

export interface RetryPolicy {
  initialBackoffMs: number;
  maxBackoffMs: number;
  deadlineMs: number;
}

/** The cap of the sleep before retry `n` (1, 2, ...): min(max, initial × 2^(n-1)). */
export function backoffCap(retry: number, policy: RetryPolicy): number {
  const exp = policy.initialBackoffMs * 2 ** Math.max(0, retry - 1);
  return Math.min(policy.maxBackoffMs, exp);
}

/** Full jitter: uniform in [0, cap) for `random()` in [0, 1). */
export function jitteredBackoff(retry: number, policy: RetryPolicy, random: () => number): number {
  return random() * backoffCap(retry, policy);
}

/** What the retry logic reads of an answer's headers. */
export interface HeadersLike {
  get(name: string): string | null;
}

/**
 * `Retry-After` in ms: delay-seconds (fractions allowed) or an HTTP date. `undefined` when
 * absent or unreadable; never negative.
 */
export function parseRetryAfter(value: string | null, nowMs: number): number | undefined {
  if (value === null) return undefined;
  const text = value.trim();
  if (text === "") return undefined;
  if (/^\d+(\.\d+)?$/.test(text)) return Number(text) * 1000;
  const date = Date.parse(text);
  if (Number.isNaN(date)) return undefined;
  return Math.max(0, date - nowMs);
}

/**
 * How long the answer asks the client to wait, in ms (0: it does not say): `Retry-After`
 * on 429 and 503; on 429 also until `X-RateLimit-Reset` (Unix seconds) when that is later.
 */
export function serverWaitMs(status: number, headers: HeadersLike, nowMs: number): number {
  if (status !== 429 && status !== 503) return 0;
  let wait = parseRetryAfter(headers.get("retry-after"), nowMs) ?? 0;
  if (status === 429) {
    const reset = headers.get("x-ratelimit-reset");
    if (reset !== null && /^\s*\d+(\.\d+)?\s*$/.test(reset)) {
      wait = Math.max(wait, Number(reset) * 1000 - nowMs);
    }
  }
  return Math.max(0, wait);
}

/**
 * One endpoint's pause: after a 429 no request to the endpoint starts before the wait is
 * over (the server's limit is per datasource and endpoint).
 */
export class EndpointGate {
  private pausedUntil = 0;

  pause(untilMs: number): void {
    this.pausedUntil = Math.max(this.pausedUntil, untilMs);
  }

  /** Ms left of the pause (0 when open). */
  remaining(nowMs: number): number {
    return Math.max(0, this.pausedUntil - nowMs);
  }

  /** Waits until the gate is open; `false` if `signal` aborted first. */
  async wait(clock: Clock, signal?: AbortSignal): Promise<boolean> {
    for (;;) {
      if (signal?.aborted) return false;
      const left = this.remaining(clock.now());
      if (left <= 0) return true;
      if (!(await sleep(clock, left, signal))) return false;
    }
  }
}

/** One HTTP attempt's result: an answer (any status), or an error (no answer). */
export type AttemptResult =
  | { kind: "response"; status: number; headers: HeadersLike; body: string }
  | { kind: "error"; message: string };

/** How a batch ended: a final answer, or given up. */
export type FinalResult =
  | { kind: "answered"; status: number; body: string; attempts: number }
  | {
      kind: "gave-up";
      message: string;
      httpStatus: number | undefined;
      attempts: number;
      /** Given up because the client was closed (not because of the deadline). */
      closed: boolean;
    };

export interface RetryInfo {
  /** 1 for the first retry. */
  retry: number;
  waitMs: number;
  /** What went wrong: `HTTP 503: ...` or the network error. */
  reason: string;
  httpStatus: number | undefined;
}

export interface SendWithRetriesOptions {
  /** Makes one attempt (the same body every time). */
  attempt: () => Promise<AttemptResult>;
  policy: RetryPolicy;
  clock: Clock;
  random: () => number;
  gate: EndpointGate;
  /** Aborted when `close()` timed out: the batch is given up as "closed before delivery". */
  signal?: AbortSignal;
  onRetry?: (info: RetryInfo) => void;
  /** Called when a 429 pauses the endpoint. */
  onPause?: (waitMs: number) => void;
}

export const CLOSED_MESSAGE = "closed before delivery";

/** What an attempt's failure is called in outcomes and logs. */
export function describeAttempt(result: AttemptResult): string {
  if (result.kind === "error") return result.message;
  const message = messageOf(result.body);
  return message === undefined ? `HTTP ${result.status}` : `HTTP ${result.status}: ${message}`;
}

/** The `message` of a JSON error body, if it has one. */
export function messageOf(body: string): string | undefined {
  try {
    const parsed: unknown = JSON.parse(body);
    if (typeof parsed === "object" && parsed !== null && "message" in parsed) {
      const message = (parsed as { message: unknown }).message;
      if (typeof message === "string") return message;
    }
  } catch {
    // not JSON
  }
  return undefined;
}

/**
 * Sends one batch until it gets a final answer (any status that is not retried), or is
 * given up: when the next sleep would end more than `deadlineMs` after the first attempt,
 * or when `signal` aborts.
 */
export async function sendWithRetries(options: SendWithRetriesOptions): Promise<FinalResult> {
  const { policy, clock, gate, signal } = options;
  let attempts = 0;
  let firstAttemptAt: number | undefined;
  let lastStatus: number | undefined;
  const closed = (): FinalResult => ({
    kind: "gave-up",
    message: CLOSED_MESSAGE,
    httpStatus: lastStatus,
    attempts,
    closed: true,
  });
  for (;;) {
    if (!(await gate.wait(clock, signal))) return closed();
    firstAttemptAt ??= clock.now();
    attempts += 1;
    const result = await options.attempt();
    if (signal?.aborted) return closed();
    // The status of the last attempt only: a network error after a 503 has none.
    lastStatus = result.kind === "response" ? result.status : undefined;
    if (result.kind === "response") {
      if (!isRetriedStatus(result.status)) {
        return { kind: "answered", status: result.status, body: result.body, attempts };
      }
    }
    const now = clock.now();
    const retry = attempts;
    let wait = jitteredBackoff(retry, policy, options.random);
    if (result.kind === "response") {
      const asked = serverWaitMs(result.status, result.headers, now);
      if (result.status === 429) {
        const pauseMs = asked > 0 ? asked : wait;
        gate.pause(now + pauseMs);
        options.onPause?.(pauseMs);
      }
      wait = Math.max(wait, asked);
    }
    wait = Math.max(wait, gate.remaining(now));
    const reason = describeAttempt(result);
    if (now + wait > firstAttemptAt + policy.deadlineMs) {
      return {
        kind: "gave-up",
        message: `${reason} (gave up after ${attempts} attempts: retry deadline ${policy.deadlineMs} ms)`,
        httpStatus: lastStatus,
        attempts,
        closed: false,
      };
    }
    options.onRetry?.({ retry, waitMs: wait, reason, httpStatus: lastStatus });
    if (!(await sleep(clock, wait, signal))) return closed();
  }
}
