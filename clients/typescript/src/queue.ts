// The bounded queue: at most `capacity` items held (taken, not yet finally reported).
// When full, `block` makes new items wait in line (first come, first taken) and `drop`
// refuses them.

import type { Overflow } from "./types.js";

export type Offer = "taken" | "waiting" | "full";

export class BoundedQueue<W> {
  private held = 0;
  private readonly waiting: W[] = [];

  constructor(
    private readonly capacity: number,
    private readonly overflow: Overflow,
    /** Called when a waiting item gets its place. */
    private readonly onTaken: (waiter: W) => void,
  ) {}

  /** Items holding a place now. */
  get size(): number {
    return this.held;
  }

  /** Items waiting for a place. */
  get waitingCount(): number {
    return this.waiting.length;
  }

  /** Asks for a place: taken now, waiting (block), or refused (drop). Never overtakes a waiter. */
  offer(waiter: W): Offer {
    if (this.waiting.length === 0 && this.held < this.capacity) {
      this.held += 1;
      return "taken";
    }
    if (this.overflow === "drop") return "full";
    this.waiting.push(waiter);
    return "waiting";
  }

  /** An item was finally reported: its place goes to the first waiter, if any. */
  release(): void {
    this.held = Math.max(0, this.held - 1);
    while (this.held < this.capacity && this.waiting.length > 0) {
      const next = this.waiting.shift() as W;
      this.held += 1;
      this.onTaken(next);
    }
  }

  /** Removes and returns every waiter (close() timed out). */
  takeWaiting(): W[] {
    return this.waiting.splice(0, this.waiting.length);
  }
}
