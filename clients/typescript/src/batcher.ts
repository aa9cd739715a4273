// Batching: items become batches by count, by encoded bytes and by time
// (docs/clients.md, "Batching").

import type { Clock, Timer } from "./clock.js";

/** An item as the batcher sees it: its JSON text's size in UTF-8 bytes. */
export interface Sized {
  bytes: number;
}

export interface Batch<E> {
  entries: E[];
  /** Size of the request body `[item,item,...]` in bytes (0 for an item sent alone without a body). */
  bytes: number;
}

export interface BatchLimits {
  maxItems: number;
  maxBytes: number;
  intervalMs: number;
}

const utf8 = new TextEncoder();

/** The UTF-8 size of a string, as it will be sent. */
export function utf8Bytes(text: string): number {
  return utf8.encode(text).byteLength;
}

/** The body size of a batch of one item of `itemBytes`: `[` item `]`. */
export function bodyBytesAlone(itemBytes: number): number {
  return itemBytes + 2;
}

/**
 * Forms batches: a batch is sealed when it holds `maxItems`, when one more item would
 * take its body (`[a,b,...]`, items joined by commas) over `maxBytes`, `intervalMs` after
 * its first item, or on `seal()`. Sealed batches go to `emit` in order.
 */
export class Batcher<E extends Sized> {
  private open: E[] = [];
  private openBytes = 0;
  private timer: Timer | undefined;

  constructor(
    private readonly limits: BatchLimits,
    private readonly clock: Clock,
    private readonly emit: (batch: Batch<E>) => void,
  ) {}

  /** Whether an item of `itemBytes` can be sent at all: `[item]` within `maxBytes`. */
  fits(itemBytes: number): boolean {
    return bodyBytesAlone(itemBytes) <= this.limits.maxBytes;
  }

  /** Items in the open batch. */
  get pending(): number {
    return this.open.length;
  }

  add(entry: E): void {
    if (this.open.length > 0 && this.openBytes + 1 + entry.bytes > this.limits.maxBytes) {
      this.seal();
    }
    this.open.push(entry);
    this.openBytes += this.open.length === 1 ? bodyBytesAlone(entry.bytes) : 1 + entry.bytes;
    if (this.open.length >= this.limits.maxItems) {
      this.seal();
    } else if (this.open.length === 1) {
      this.timer = this.clock.setTimer(() => {
        this.timer = undefined;
        this.seal();
      }, this.limits.intervalMs);
    }
  }

  /** Seals the open batch, then emits `entry` as a batch of its own (a contact delete). */
  addAlone(entry: E): void {
    this.seal();
    this.emit({ entries: [entry], bytes: 0 });
  }

  /** Emits the open batch now (if any). */
  seal(): void {
    this.timer?.cancel();
    this.timer = undefined;
    if (this.open.length === 0) return;
    const batch = { entries: this.open, bytes: this.openBytes };
    this.open = [];
    this.openBytes = 0;
    this.emit(batch);
  }

  /** Takes the open batch's items without emitting them (close() timed out). */
  discard(): E[] {
    this.timer?.cancel();
    this.timer = undefined;
    const entries = this.open;
    this.open = [];
    this.openBytes = 0;
    return entries;
  }
}
