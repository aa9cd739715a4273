export { IngestClient, DEFAULTS, consoleLogger } from "./client.js";
export { uuid7, Uuid7Generator } from "./uuid7.js";
export { systemClock } from "./clock.js";
export type { Clock, Timer } from "./clock.js";
export type {
  Accepted,
  AnyItem,
  AttributeValue,
  Contact,
  ContactDeletion,
  Delivery,
  Dropped,
  Failed,
  FieldErrors,
  IngestClientOptions,
  IngestEvent,
  ItemKind,
  Logger,
  Outcome,
  Overflow,
  Rejected,
  Scalar,
  Stats,
} from "./types.js";
