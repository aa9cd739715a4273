// Outcomes: what a batch's final result means for each of its items, and the one place
// where outcomes are counted and handed to `onDelivery` (docs/clients.md, "Outcomes").

import { messageOf, type FinalResult } from "./retry.js";
import type { FieldErrors, Logger, Outcome, Stats } from "./types.js";

/** An outcome without its `kind` and `item` (the batch adds those). */
export type OutcomeFields =
  | { status: "accepted"; committed: boolean; attempts: number }
  | { status: "rejected"; errors: FieldErrors; httpStatus?: number; attempts: number }
  | { status: "failed"; message: string; httpStatus?: number; attempts: number }
  | { status: "dropped"; message: string };

/** One item of the server's batch answer. */
export interface AnswerItem {
  status: "success" | "error";
  errors?: FieldErrors;
}

/**
 * The items of a batch answer, `{"entity": {"items": [{"status", "errors"?}, ...]}}`, in
 * request order; `undefined` when the body is not one.
 */
export function parseBatchAnswer(body: string): AnswerItem[] | undefined {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body);
  } catch {
    return undefined;
  }
  const entity = field(parsed, "entity");
  const items = field(entity, "items");
  if (!Array.isArray(items)) return undefined;
  return items.map((raw): AnswerItem => {
    const status = field(raw, "status") === "success" ? "success" : "error";
    const errors = fieldErrors(field(raw, "errors"));
    return errors === undefined ? { status } : { status, errors };
  });
}

function field(value: unknown, name: string): unknown {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return undefined;
  return (value as Record<string, unknown>)[name];
}

function fieldErrors(value: unknown): FieldErrors | undefined {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return undefined;
  const errors: FieldErrors = {};
  for (const [name, messages] of Object.entries(value as Record<string, unknown>)) {
    if (Array.isArray(messages)) {
      errors[name] = messages.filter((m): m is string => typeof m === "string");
    } else if (typeof messages === "string") {
      errors[name] = [messages];
    }
  }
  return errors;
}

/**
 * Each item's outcome for a batch of `size` items that ended with `result`.
 *
 * - given up: every item `failed` with the last error;
 * - 2xx: per item from the batch answer: `success` -> `accepted` (`committed` when the
 *   answer is 200 and the request carried `?_sync`), `error` -> `rejected` with its errors;
 *   an item the answer does not list is `failed` (the server did not say);
 * - 422: every item `rejected`, with its own errors from the batch answer;
 * - any other status: every item `rejected` with `{"_request": [message]}`.
 */
export function resolveBatch(result: FinalResult, size: number, sync: boolean): OutcomeFields[] {
  const attempts = result.attempts;
  if (result.kind === "gave-up") {
    const failed: OutcomeFields =
      result.httpStatus === undefined
        ? { status: "failed", message: result.message, attempts }
        : { status: "failed", message: result.message, httpStatus: result.httpStatus, attempts };
    return Array.from({ length: size }, () => failed);
  }
  const httpStatus = result.status;
  const wholeRequest: FieldErrors = {
    _request: [messageOf(result.body) ?? `HTTP ${httpStatus}`],
  };
  if (httpStatus >= 200 && httpStatus < 300) {
    const items = parseBatchAnswer(result.body);
    return Array.from({ length: size }, (_, i): OutcomeFields => {
      const answer = items?.[i];
      if (answer === undefined) {
        return {
          status: "failed",
          message: `HTTP ${httpStatus}: the answer does not report this item`,
          httpStatus,
          attempts,
        };
      }
      if (answer.status === "success") {
        return { status: "accepted", committed: sync && httpStatus === 200, attempts };
      }
      return { status: "rejected", errors: answer.errors ?? {}, httpStatus, attempts };
    });
  }
  if (httpStatus === 422) {
    const items = parseBatchAnswer(result.body);
    return Array.from({ length: size }, (_, i): OutcomeFields => {
      const errors = items?.[i]?.errors;
      return { status: "rejected", errors: errors ?? wholeRequest, httpStatus, attempts };
    });
  }
  return Array.from({ length: size }, () => ({
    status: "rejected",
    errors: wholeRequest,
    httpStatus,
    attempts,
  }));
}

export function emptyStats(): Stats {
  return {
    enqueued: 0,
    sent: 0,
    accepted: 0,
    rejected: 0,
    failed: 0,
    dropped: 0,
    retries: 0,
    requests: 0,
    queued: 0,
  };
}

/** Counts each outcome once and hands it to `onDelivery` (whose exceptions are logged, not thrown). */
export class OutcomeReporter {
  readonly stats: Stats = emptyStats();

  constructor(
    private readonly logger: Logger,
    private readonly onDelivery: ((outcome: Outcome) => void) | undefined,
  ) {}

  report(outcome: Outcome): void {
    this.stats[outcome.status] += 1;
    if (this.onDelivery === undefined) return;
    try {
      this.onDelivery(outcome);
    } catch (err) {
      this.logger.error("ingest-client: onDelivery threw", { error: String(err) });
    }
  }
}
