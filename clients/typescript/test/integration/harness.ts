// The client harness's control API (docs/clients.md, "The client harness's control API").

import { IngestClient } from "../../dist/index.js";
import type { IngestClientOptions, Logger } from "../../dist/index.js";

export const HARNESS_URL = process.env["INGEST_HARNESS_URL"];

/** Passed as `skip` to every integration test: false when the harness is there. */
export const skipReason: string | false =
  HARNESS_URL === undefined || HARNESS_URL === ""
    ? "INGEST_HARNESS_URL is not set: run /work/harness-bin/client-harness (scripts/test.sh starts it) and export its HARNESS_URL"
    : false;

export interface Tenant {
  base_url: string;
  project: string;
  datasource: string;
  token: string;
}

export interface StoredEvent {
  event_id: string;
  user_id: string;
  copies: number;
}

export interface StoredContact {
  user_id: string;
  attributes: Record<string, unknown>;
}

async function control(method: string, path: string, body?: unknown): Promise<Response> {
  const init: RequestInit = { method };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers = { "content-type": "application/json" };
  }
  const response = await fetch(`${HARNESS_URL}${path}`, init);
  if (!response.ok) {
    throw new Error(`harness ${method} ${path}: HTTP ${response.status} ${await response.text()}`);
  }
  return response;
}

export async function newTenant(): Promise<Tenant> {
  return (await (await control("POST", "/tenants")).json()) as Tenant;
}

export async function setLimit(project: string, endpoint: string, requestsPerMinute: number): Promise<void> {
  await control("PUT", `/tenants/${project}/limits/${endpoint}`, { requests_per_minute: requestsPerMinute });
}

export async function kafka(action: "stop" | "start"): Promise<void> {
  await control("POST", `/kafka/${action}`);
}

export async function storedEvents(project: string): Promise<StoredEvent[]> {
  return (await (await control("GET", `/tenants/${project}/events`)).json()) as StoredEvent[];
}

export async function storedContacts(project: string): Promise<StoredContact[]> {
  return (await (await control("GET", `/tenants/${project}/contacts`)).json()) as StoredContact[];
}

/** Reads until `done` holds or `timeoutMs` passes; returns the last read either way. */
export async function pollUntil<T>(read: () => Promise<T>, done: (value: T) => boolean, timeoutMs = 30_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const value = await read();
    if (done(value) || Date.now() > end) return value;
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

export interface LogLine {
  level: keyof Logger;
  message: string;
}

/** Records log lines; warnings and errors are also printed (they explain a failure). */
export class TestLogger implements Logger {
  readonly lines: LogLine[] = [];
  constructor(private readonly name: string) {}
  debug(message: string): void {
    this.lines.push({ level: "debug", message });
  }
  info(message: string): void {
    this.lines.push({ level: "info", message });
  }
  warn(message: string): void {
    this.lines.push({ level: "warn", message });
    console.log(`[${this.name}] warn: ${message}`);
  }
  error(message: string): void {
    this.lines.push({ level: "error", message });
    console.log(`[${this.name}] error: ${message}`);
  }
}

export interface ObservedRequest {
  method: string;
  path: string;
  startedAt: number;
  /** When the answer's head arrived (undefined: no answer). */
  answeredAt: number | undefined;
  status: number | undefined;
  headers: Headers | undefined;
}

/** A client for `tenant`, with a fetch that records what went over the wire. */
export function clientFor(
  tenant: Tenant,
  name: string,
  options: Partial<IngestClientOptions> = {},
): { client: IngestClient; logger: TestLogger; requests: ObservedRequest[] } {
  const logger = new TestLogger(name);
  const requests: ObservedRequest[] = [];
  const observed: typeof fetch = async (input, init) => {
    const seen: ObservedRequest = {
      method: init?.method ?? "GET",
      path: new URL(String(input)).pathname,
      startedAt: Date.now(),
      answeredAt: undefined,
      status: undefined,
      headers: undefined,
    };
    requests.push(seen);
    const response = await fetch(input, init);
    seen.answeredAt = Date.now();
    seen.status = response.status;
    seen.headers = response.headers;
    return response;
  };
  const client = new IngestClient({
    baseUrl: tenant.base_url,
    project: tenant.project,
    datasource: tenant.datasource,
    token: tenant.token,
    logger,
    fetch: observed,
    ...options,
  });
  return { client, logger, requests };
}
