// One HTTP attempt with fetch: headers, optional gzip, the per-attempt timeout, and
// turning whatever happens into an AttemptResult (never throws).

import type { Clock } from "./clock.js";
import type { AttemptResult } from "./retry.js";

export interface HttpRequest {
  method: "POST" | "DELETE";
  url: string;
  /** The body as sent (already gzipped when `gzip`). */
  body?: Uint8Array<ArrayBuffer>;
  gzip: boolean;
  /** Sent as `X-Request-Id`, the same on every attempt of a batch. */
  requestId: string;
}

export interface TransportOptions {
  fetch: typeof fetch;
  token: string;
  timeoutMs: number;
  clock: Clock;
}

export class Transport {
  constructor(private readonly options: TransportOptions) {}

  /** Makes one attempt; `signal` aborts it (close() timed out). */
  async attempt(request: HttpRequest, signal?: AbortSignal): Promise<AttemptResult> {
    const { clock, timeoutMs } = this.options;
    const controller = new AbortController();
    let timedOut = false;
    // A fetch that ignores its signal must not hold the attempt (and its timer) open:
    // the attempt also ends as soon as the signal fires.
    let stop: (reason: Error) => void = () => {};
    const stopped = new Promise<never>((_, reject) => (stop = reject));
    stopped.catch(() => {});
    const timer = clock.setTimer(() => {
      timedOut = true;
      controller.abort();
      stop(new Error("timed out"));
    }, timeoutMs);
    const onAbort = (): void => {
      controller.abort();
      stop(new Error("aborted"));
    };
    signal?.addEventListener("abort", onAbort, { once: true });
    if (signal?.aborted) onAbort();
    const headers: Record<string, string> = {
      Authorization: `Bearer ${this.options.token}`,
      Accept: "application/json",
      "X-Request-Id": request.requestId,
    };
    if (request.body !== undefined) headers["Content-Type"] = "application/json";
    if (request.gzip) headers["Content-Encoding"] = "gzip";
    try {
      const init: RequestInit = { method: request.method, headers, signal: controller.signal };
      if (request.body !== undefined) init.body = request.body;
      const exchange = async (): Promise<AttemptResult> => {
        const response = await this.options.fetch(request.url, init);
        const body = await response.text();
        return { kind: "response", status: response.status, headers: response.headers, body };
      };
      return await Promise.race([exchange(), stopped]);
    } catch (err) {
      if (timedOut) return { kind: "error", message: `request timed out after ${timeoutMs} ms` };
      if (signal?.aborted) return { kind: "error", message: "request aborted" };
      return { kind: "error", message: describeError(err) };
    } finally {
      timer.cancel();
      signal?.removeEventListener("abort", onAbort);
    }
  }
}

/** `fetch failed: connect ECONNREFUSED 127.0.0.1:1` rather than just `fetch failed`. */
export function describeError(err: unknown): string {
  if (!(err instanceof Error)) return `network error: ${String(err)}`;
  const cause: unknown = (err as { cause?: unknown }).cause;
  const detail = cause instanceof Error ? cause.message : cause === undefined ? "" : String(cause);
  return detail === "" || detail === err.message ? err.message : `${err.message}: ${detail}`;
}

/** Whether this runtime can gzip (CompressionStream: Node 18+, current browsers). */
export function canGzip(): boolean {
  return typeof CompressionStream === "function";
}

/** Gzips `bytes` with CompressionStream. */
export async function gzip(bytes: Uint8Array<ArrayBuffer>): Promise<Uint8Array<ArrayBuffer>> {
  const stream = new Blob([bytes]).stream().pipeThrough(new CompressionStream("gzip"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}
