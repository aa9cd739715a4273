// Time and timers behind one small interface, so tests can drive them by hand.

export interface Timer {
  cancel(): void;
}

export interface Clock {
  /** Milliseconds since the Unix epoch (compared with `X-RateLimit-Reset`). */
  now(): number;
  /**
   * Calls `callback` once after `ms`. `keepAlive: false` lets a Node process exit while
   * the timer is pending (`unref`); the client uses it only for timers that no work waits on.
   */
  setTimer(callback: () => void, ms: number, keepAlive?: boolean): Timer;
}

/** setTimeout's largest delay (2^31 - 1 ms); longer ones would fire at once. */
const MAX_DELAY_MS = 2_147_483_647;

export const systemClock: Clock = {
  now: () => Date.now(),
  setTimer(callback, ms, keepAlive = true) {
    const handle = setTimeout(callback, Math.min(Math.max(0, ms), MAX_DELAY_MS));
    if (!keepAlive) unref(handle);
    return { cancel: () => clearTimeout(handle) };
  },
};

/** Node's timers have `unref()`; browsers' are numbers. */
function unref(handle: unknown): void {
  if (typeof handle === "object" && handle !== null && "unref" in handle) {
    const fn = (handle as { unref: unknown }).unref;
    if (typeof fn === "function") fn.call(handle);
  }
}

/**
 * Sleeps `ms` on `clock`. Resolves `true` after the full time, `false` as soon as `signal`
 * aborts (never rejects); the timer is cancelled either way.
 */
export function sleep(clock: Clock, ms: number, signal?: AbortSignal): Promise<boolean> {
  if (signal?.aborted) return Promise.resolve(false);
  return new Promise((resolve) => {
    const onAbort = (): void => {
      timer.cancel();
      resolve(false);
    };
    const timer = clock.setTimer(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve(true);
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
