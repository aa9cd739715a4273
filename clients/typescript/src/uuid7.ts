// UUID v7 (RFC 9562): 48-bit Unix milliseconds, version 7, a 12-bit counter in rand_a,
// variant 10, 62 random bits. Ids from one generator are strictly increasing (as strings
// too): within one millisecond the counter counts up from a random start below 2048; if
// it would pass 4095, or the clock steps back, the timestamp field moves one past the last.

export type FillRandom = (bytes: Uint8Array) => void;

const fillFromCrypto: FillRandom = (bytes) => {
  crypto.getRandomValues(bytes);
};

export class Uuid7Generator {
  private lastMs = -1;
  private counter = 0;

  constructor(
    private readonly now: () => number = Date.now,
    private readonly fillRandom: FillRandom = fillFromCrypto,
  ) {}

  next(): string {
    const bytes = new Uint8Array(16);
    this.fillRandom(bytes);
    const ms = Math.floor(this.now());
    if (ms > this.lastMs) {
      this.lastMs = ms;
      // A random start with the top bit clear leaves at least 2048 steps in this millisecond.
      this.counter = (((bytes[6] ?? 0) & 0x07) << 8) | (bytes[7] ?? 0);
    } else if (this.counter < 0xfff) {
      this.counter += 1;
    } else {
      this.lastMs += 1;
      this.counter = 0;
    }
    let t = this.lastMs;
    for (let i = 5; i >= 0; i -= 1) {
      bytes[i] = t % 256;
      t = Math.floor(t / 256);
    }
    bytes[6] = 0x70 | (this.counter >> 8);
    bytes[7] = this.counter & 0xff;
    bytes[8] = 0x80 | ((bytes[8] ?? 0) & 0x3f);
    return format(bytes);
  }
}

function format(bytes: Uint8Array): string {
  let hex = "";
  for (const b of bytes) hex += b.toString(16).padStart(2, "0");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

const shared = new Uuid7Generator();

/** A new UUID v7 string (lowercase, 8-4-4-4-12). */
export function uuid7(): string {
  return shared.next();
}

/** The Unix milliseconds stored in a UUID v7. */
export function uuid7Millis(id: string): number {
  return parseInt(id.replace(/-/g, "").slice(0, 12), 16);
}
