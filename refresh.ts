/**
 * refresh — spend the vendor credits you already paid for, one request at a
 * time.
 *
 * Selects the records in a PostgreSQL table whose vendor data is stale (or
 * exactly the ids you give), asks the vendor's HTTP API for each of them,
 * strictly one request after the other, and writes each answer together with
 * its state record in one transaction. Progress lives in two tables,
 * `refresh_runs` and `refresh_state`, so a run that crashed or was stopped
 * continues where it left off without spending a credit twice.
 *
 * Run it:
 *
 * ```sh
 * export DATABASE_URL='postgres://user:password@host:5432/db?sslmode=verify-full'
 * export REFRESH_API_URL='https://api.vendor.example/v1/people/{id}'
 * export REFRESH_API_KEY='...'
 * deno task refresh --limit 1000
 * deno task refresh --help        # every setting, its env var and default
 * ```
 *
 * Settings come from environment variables; a flag of the same meaning
 * overrides its variable (`--stale-after 30d` beats `REFRESH_STALE_AFTER`).
 * The secrets, `DATABASE_URL` and `REFRESH_API_KEY`, are read from the
 * environment only, so they never show up in a process list.
 *
 * Permissions (see the `refresh` task in `deno.json`):
 * - `--allow-net`: the database and the vendor.
 * - `--allow-env=DATABASE_URL,REFRESH_*,PGAPPNAME,PGTARGETSESSIONATTRS`: the
 *   settings, and the two variables postgres.js reads whatever options it is
 *   given (an application name, and which server of a multi-host URL to
 *   use). Every other connection setting is passed to postgres.js
 *   explicitly, so no other `PG*` variable changes where or how it connects
 *   (`PGSSLMODE` cannot weaken TLS).
 * - `--allow-read`: only used for `--ids-file`.
 *
 * Exit codes: 0 completed, or stopped as expected (rate limited by the
 * vendor); 1 aborted (database unreachable or lost, unexpected error);
 * 2 configuration or usage error.
 *
 * The file reads top to bottom: the vendor section (the part to adapt to
 * another vendor), pure helpers (exported and unit-tested), the database
 * layer, the run loop, and `main()`.
 *
 * @module
 */

import { parseArgs } from "@std/cli/parse-args";
import { retry, RetryError } from "@std/async/retry";
import { delay } from "@std/async/delay";
import postgres from "postgres";
import * as v from "valibot";

// ============================================================================
// VENDOR SECTION — adapt this part to your data vendor.
//
// Everything that knows about the vendor's API lives here: how a request for
// one target is built, what a valid answer looks like, and what is stored.
// The rest of the file only sees `buildVendorRequest` and `parseVendorBody`.
// ============================================================================

/**
 * The shape a successful vendor answer must have. The default accepts any
 * JSON object (not an array, string or number). Tighten it to your vendor's
 * documented response, for example:
 *
 * ```ts
 * const VendorResponseSchema = v.object({
 *   id: v.string(),
 *   person: v.object({ full_name: v.string() }),
 * });
 * ```
 */
export const VendorResponseSchema = v.pipe(
  v.unknown(),
  v.check(
    (value) => !Array.isArray(value),
    "expected a JSON object, found an array",
  ),
  v.record(v.string(), v.unknown(), "expected a JSON object"),
);

/** Where and how to authenticate against the vendor. */
export interface VendorOptions {
  /** URL template; `{id}` is replaced by the URL-encoded target id. */
  apiUrl: string;
  /** The API key. Sent in a header only, never in the URL. */
  apiKey: string;
  /**
   * Header carrying the key: `Authorization` sends `Bearer <key>`, any other
   * name sends the bare key.
   */
  apiKeyHeader: string;
}

/**
 * Builds the URL and headers of the request for one target.
 *
 * @param id The target id, as text.
 * @param options The vendor settings.
 * @returns The URL to fetch and the headers to send.
 */
export function buildVendorRequest(
  id: string,
  options: VendorOptions,
): { url: string; headers: Headers } {
  const url = options.apiUrl.replaceAll("{id}", encodeURIComponent(id));
  const headers = new Headers({ accept: "application/json" });
  if (options.apiKeyHeader.toLowerCase() === "authorization") {
    headers.set("authorization", `Bearer ${options.apiKey}`);
  } else {
    headers.set(options.apiKeyHeader, options.apiKey);
  }
  return { url, headers };
}

/** The result of {@linkcode parseVendorBody}. */
export type VendorBodyResult =
  | { ok: true; payload: unknown }
  | { ok: false; reason: string };

/**
 * Parses and validates a successful answer's body. On success, `payload` is
 * what is written to the data column.
 *
 * @param text The body, decoded as UTF-8.
 * @returns The payload, or why the body is not acceptable.
 */
export function parseVendorBody(text: string): VendorBodyResult {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    return { ok: false, reason: "body is not JSON" };
  }
  const result = v.safeParse(VendorResponseSchema, json);
  if (!result.success) {
    const issue = result.issues[0];
    const path = v.getDotPath(issue) ?? "(root)";
    return {
      ok: false,
      reason: `unexpected shape at ${path}: ${issue.message}`,
    };
  }
  return { ok: true, payload: result.output };
}

// ============================================================================
// PURE HELPERS — exported and unit-tested.
// ============================================================================

const DURATION_UNITS: Record<string, number> = {
  ms: 1,
  s: 1_000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
};

/**
 * Parses a duration such as `250ms`, `30s`, `5m`, `2h`, `25d` or a
 * combination like `5h30m` into milliseconds. A bare `0` is accepted.
 *
 * @param text The duration.
 * @returns The duration in milliseconds, or `undefined` when malformed.
 */
export function parseDuration(text: string): number | undefined {
  const trimmed = text.trim();
  if (trimmed === "0") return 0;
  if (!/^(\d+(\.\d+)?(ms|s|m|h|d))+$/.test(trimmed)) return undefined;
  let total = 0;
  for (const match of trimmed.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h|d)/g)) {
    total += Number(match[1]) * DURATION_UNITS[match[2]!]!;
  }
  return Number.isFinite(total) ? Math.round(total) : undefined;
}

/**
 * Formats milliseconds as a short human duration (`1h2m3s`, `450ms`).
 *
 * @param ms The duration in milliseconds.
 * @returns The formatted duration.
 */
export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms)) return String(ms);
  if (ms < 1000) return `${Math.max(0, Math.round(ms))}ms`;
  let seconds = Math.round(ms / 1000);
  const parts: string[] = [];
  for (const [unit, size] of [["d", 86400], ["h", 3600], ["m", 60]] as const) {
    if (seconds >= size) {
      parts.push(`${Math.floor(seconds / size)}${unit}`);
      seconds %= size;
    }
  }
  if (seconds > 0 || parts.length === 0) parts.push(`${seconds}s`);
  return parts.join("");
}

const BYTE_UNITS: Record<string, number> = {
  "": 1,
  b: 1,
  kb: 1_000,
  mb: 1_000_000,
  gb: 1_000_000_000,
  kib: 1024,
  mib: 1024 ** 2,
  gib: 1024 ** 3,
};

/**
 * Parses a byte size: a whole number with an optional unit (`B`, `KB`, `MB`,
 * `GB`, `KiB`, `MiB`, `GiB`; case-insensitive).
 *
 * @param text The size.
 * @returns The number of bytes, or `undefined` when malformed.
 */
export function parseBytes(text: string): number | undefined {
  const match = /^(\d+)\s*([a-z]*)$/i.exec(text.trim());
  if (!match) return undefined;
  const unit = BYTE_UNITS[match[2]!.toLowerCase()];
  if (unit === undefined) return undefined;
  const bytes = Number(match[1]) * unit;
  return Number.isSafeInteger(bytes) ? bytes : undefined;
}

const HTTP_DATE = new RegExp(
  [
    // IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT
    /^[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT$/.source,
    // obsolete RFC 850: Sunday, 06-Nov-94 08:49:37 GMT
    /^[A-Z][a-z]+, \d{2}-[A-Z][a-z]{2}-\d{2} \d{2}:\d{2}:\d{2} GMT$/.source,
    // obsolete asctime: Sun Nov  6 08:49:37 1994
    /^[A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d{2}:\d{2}:\d{2} \d{4}$/.source,
  ].join("|"),
);

/**
 * Parses a `Retry-After` header value (RFC 9110, section 10.2.3): either
 * delay-seconds or an HTTP-date.
 *
 * @param value The header value, or `null` when absent.
 * @param now The current time, for HTTP-dates.
 * @returns The wait in milliseconds (0 for a date in the past), or
 * `undefined` when absent or malformed.
 */
export function parseRetryAfter(
  value: string | null,
  now: Date = new Date(),
): number | undefined {
  if (value === null) return undefined;
  const text = value.trim();
  if (/^\d+$/.test(text)) {
    const ms = Number(text) * 1000;
    return Number.isSafeInteger(ms) ? ms : undefined;
  }
  if (!HTTP_DATE.test(text)) return undefined;
  // asctime has no zone; RFC 9110 says it is UTC.
  const at = Date.parse(text.endsWith("GMT") ? text : `${text} GMT`);
  if (Number.isNaN(at)) return undefined;
  return Math.max(0, at - now.getTime());
}

/** What one vendor response means for its target. */
export type Classification =
  | { kind: "success" }
  | { kind: "not_found" }
  | { kind: "transient"; retryAfterMs?: number }
  | { kind: "failed" };

const TRANSIENT_STATUSES = new Set([408, 429, 500, 502, 503, 504]);

/**
 * Classifies a vendor response by its status: 2xx succeed, 404 is a known
 * miss, 408/429/500/502/503/504 are worth retrying (429 and 503 may carry a
 * `Retry-After`), anything else fails the target without a retry.
 *
 * @param status The HTTP status.
 * @param headers The response headers.
 * @param now The current time, for `Retry-After` dates.
 * @returns The classification.
 */
export function classifyResponse(
  status: number,
  headers: Headers,
  now: Date = new Date(),
): Classification {
  if (status >= 200 && status < 300) return { kind: "success" };
  if (status === 404) return { kind: "not_found" };
  if (TRANSIENT_STATUSES.has(status)) {
    if (status === 429 || status === 503) {
      const retryAfterMs = parseRetryAfter(headers.get("retry-after"), now);
      if (retryAfterMs !== undefined) {
        return { kind: "transient", retryAfterMs };
      }
    }
    return { kind: "transient" };
  }
  return { kind: "failed" };
}

/**
 * Returns the URL with its password (and any query parameter whose name
 * suggests a secret) replaced by `***`. Text that is not a URL is returned
 * as `(unparsable URL)`, since it may hold anything.
 *
 * @param url The URL.
 * @returns The URL, safe to print.
 */
export function redactUrl(url: string): string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return "(unparsable URL)";
  }
  if (parsed.password) parsed.password = "***";
  for (const name of [...parsed.searchParams.keys()]) {
    if (/pass|secret|token|key|auth|sig/i.test(name)) {
      parsed.searchParams.set(name, "***");
    }
  }
  // URL escapes the braces of an `{id}` template; keep them readable.
  return parsed.href.replaceAll("%7Bid%7D", "{id}");
}

/** Thrown by {@linkcode readCappedBody} when a body exceeds its cap. */
export class BodyTooLargeError extends Error {
  /**
   * @param maxBytes The cap that was exceeded.
   */
  constructor(maxBytes: number) {
    super(`body is larger than the ${maxBytes}-byte cap (--max-body)`);
    this.name = "BodyTooLargeError";
  }
}

/**
 * Reads a body stream completely, but never more than `maxBytes`: the
 * stream is cancelled as soon as the cap is passed.
 *
 * @param body The stream (or `null` for an empty body).
 * @param maxBytes The cap, in bytes.
 * @returns The bytes read.
 * @throws {BodyTooLargeError} When the body exceeds the cap.
 */
export async function readCappedBody(
  body: ReadableStream<Uint8Array> | null,
  maxBytes: number,
): Promise<Uint8Array> {
  if (body === null) return new Uint8Array(0);
  const chunks: Uint8Array[] = [];
  let size = 0;
  const reader = body.getReader();
  try {
    while (true) {
      const { done, value } = await reader.read();
      if (done) break;
      size += value.byteLength;
      if (size > maxBytes) {
        await reader.cancel().catch(() => {});
        throw new BodyTooLargeError(maxBytes);
      }
      chunks.push(value);
    }
  } finally {
    reader.releaseLock();
  }
  const bytes = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return bytes;
}

/**
 * Replaces every occurrence of the given secrets in a text by `***`. The
 * last line of defence: every line printed and every error stored passes
 * through it.
 *
 * @param text The text.
 * @param secrets The secret values (empty ones are ignored).
 * @returns The text without the secrets.
 */
export function scrubSecrets(text: string, secrets: readonly string[]): string {
  let out = text;
  for (const secret of secrets) {
    if (secret.length > 0) out = out.replaceAll(secret, "***");
  }
  return out;
}

// ---------------------------------------------------------------------------
// Configuration: environment variables and flags, validated in one step.
// ---------------------------------------------------------------------------

/** How a setting is given and described. */
interface SettingSpec {
  /** Environment variable name. */
  env: string;
  /** Flag name without dashes; secrets have none. */
  flag?: string;
  /** Placeholder shown in the usage text. */
  arg: string;
  /** The default, as it would be written. */
  default?: string;
  /** One line for the usage text. */
  help: string;
}

/**
 * Every setting: its environment variable, flag, default and meaning. The
 * usage text and the README's configuration table are made from this.
 */
export const SETTINGS = {
  databaseUrl: {
    env: "DATABASE_URL",
    arg: "URL",
    help:
      "PostgreSQL URL, postgres://user:password@host:port/db; sslmode (disable, prefer, require, verify-ca, verify-full) is honoured. Env only (secret).",
  },
  apiUrl: {
    env: "REFRESH_API_URL",
    flag: "api-url",
    arg: "URL",
    help:
      "Vendor URL template with {id}, replaced by the URL-encoded target id.",
  },
  apiKey: {
    env: "REFRESH_API_KEY",
    arg: "KEY",
    help: "Vendor API key, sent in a header only. Env only (secret).",
  },
  apiKeyHeader: {
    env: "REFRESH_API_KEY_HEADER",
    flag: "api-key-header",
    arg: "NAME",
    default: "Authorization",
    help:
      "Header for the key: Authorization sends 'Bearer <key>', any other name the bare key.",
  },
  table: {
    env: "REFRESH_TABLE",
    flag: "table",
    arg: "NAME",
    default: "people",
    help: "Target table, optionally schema-qualified (crm.people).",
  },
  idColumn: {
    env: "REFRESH_ID_COLUMN",
    flag: "id-column",
    arg: "NAME",
    default: "id",
    help: "Primary key column; its text form is sent to the vendor.",
  },
  dataColumn: {
    env: "REFRESH_DATA_COLUMN",
    flag: "data-column",
    arg: "NAME",
    default: "vendor_data",
    help: "json/jsonb column receiving the vendor's answer.",
  },
  atColumn: {
    env: "REFRESH_AT_COLUMN",
    flag: "at-column",
    arg: "NAME",
    default: "vendor_refreshed_at",
    help: "timestamptz column set to now() on each refresh.",
  },
  stateSchema: {
    env: "REFRESH_STATE_SCHEMA",
    flag: "state-schema",
    arg: "NAME",
    help:
      "Schema for refresh_runs and refresh_state (created if missing); default: the first schema on the search_path.",
  },
  limit: {
    env: "REFRESH_LIMIT",
    flag: "limit",
    arg: "N",
    help: "Process at most N targets this run.",
  },
  ids: {
    env: "REFRESH_IDS",
    flag: "ids",
    arg: "ID,ID,...",
    help:
      "Refresh exactly these ids (fresh or not); unknown ids are reported, not fetched.",
  },
  idsFile: {
    env: "REFRESH_IDS_FILE",
    flag: "ids-file",
    arg: "PATH",
    help: "Like --ids, one id per line; - reads standard input.",
  },
  staleAfter: {
    env: "REFRESH_STALE_AFTER",
    flag: "stale-after",
    arg: "DURATION",
    default: "25d",
    help:
      "Refresh targets last refreshed longer ago than this (never refreshed first).",
  },
  minInterval: {
    env: "REFRESH_MIN_INTERVAL",
    flag: "min-interval",
    arg: "DURATION",
    default: "0",
    help: "Least time between the starts of two vendor requests.",
  },
  requestTimeout: {
    env: "REFRESH_REQUEST_TIMEOUT",
    flag: "request-timeout",
    arg: "DURATION",
    default: "30s",
    help: "Give up on one request (headers and body) after this long.",
  },
  maxAttempts: {
    env: "REFRESH_MAX_ATTEMPTS",
    flag: "max-attempts",
    arg: "N",
    default: "5",
    help: "Requests per target at most, the first one included.",
  },
  backoff: {
    env: "REFRESH_BACKOFF",
    flag: "backoff",
    arg: "DURATION",
    default: "1s",
    help:
      "First retry backoff; doubles per attempt, full jitter, capped by --max-retry-wait.",
  },
  maxRetryWait: {
    env: "REFRESH_MAX_RETRY_WAIT",
    flag: "max-retry-wait",
    arg: "DURATION",
    default: "5m",
    help:
      "Cap on any single wait; a longer Retry-After stops the run as rate_limited.",
  },
  maxBody: {
    env: "REFRESH_MAX_BODY",
    flag: "max-body",
    arg: "BYTES",
    default: "1MiB",
    help: "Largest vendor answer accepted; larger ones are recorded invalid.",
  },
} as const satisfies Record<string, SettingSpec>;

/** Name of a setting, a key of {@linkcode SETTINGS}. */
export type SettingName = keyof typeof SETTINGS;

/** The parts of `DATABASE_URL` handed to postgres.js. */
export interface DatabaseTarget {
  host: string;
  port: number;
  database: string;
  user: string;
  password: string;
  /** postgres.js `ssl` value derived from `sslmode`. */
  ssl: false | "prefer" | "require" | "verify-full";
  /** Other query parameters, passed as connection parameters. */
  params: Record<string, string>;
  /** The URL with its password replaced, for logs. */
  redacted: string;
}

/** The validated configuration of one run. */
export interface Config {
  database: DatabaseTarget;
  vendor: VendorOptions;
  table: string;
  idColumn: string;
  dataColumn: string;
  atColumn: string;
  stateSchema: string | undefined;
  limit: number | undefined;
  ids: string[] | undefined;
  idsFile: string | undefined;
  staleAfterMs: number;
  minIntervalMs: number;
  requestTimeoutMs: number;
  maxAttempts: number;
  backoffMs: number;
  maxRetryWaitMs: number;
  maxBodyBytes: number;
  help: boolean;
}

/** The result of {@linkcode parseConfig}. */
export type ConfigResult =
  | { ok: true; config: Config }
  | { ok: false; errors: string[] };

const SSL_MODES: Record<string, DatabaseTarget["ssl"]> = {
  disable: false,
  allow: "prefer",
  prefer: "prefer",
  require: "require",
  // postgres.js verifies the chain and the host name for both.
  "verify-ca": "verify-full",
  "verify-full": "verify-full",
};

/**
 * Parses `DATABASE_URL` without ever putting its value in an error message.
 *
 * @param text The URL.
 * @returns The connection target, or what is wrong with it.
 */
export function parseDatabaseUrl(
  text: string,
): DatabaseTarget | { error: string } {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return { error: "expected a postgres:// URL (value not shown)" };
  }
  if (url.protocol !== "postgres:" && url.protocol !== "postgresql:") {
    return {
      error: `expected the scheme postgres: or postgresql:, found ${
        JSON.stringify(url.protocol)
      }`,
    };
  }
  if (!url.hostname) return { error: "expected a host name (value not shown)" };
  if (!url.username) return { error: "expected a user name (value not shown)" };
  const port = url.port ? Number(url.port) : 5432;
  const params: Record<string, string> = {};
  let ssl: DatabaseTarget["ssl"] = false;
  for (const [key, value] of url.searchParams) {
    if (key === "sslmode") {
      const mode = SSL_MODES[value];
      if (mode === undefined) {
        return {
          error: `expected sslmode to be one of ${
            Object.keys(SSL_MODES).join(", ")
          }, found ${JSON.stringify(value)}`,
        };
      }
      ssl = mode;
    } else if (key.startsWith("ssl")) {
      // postgres.js would ignore these silently (sslrootcert, sslcert, ...),
      // which could mean less verification than the user asked for.
      return {
        error:
          `the parameter ${key} is not supported; use sslmode=verify-full with a CA the system trusts`,
      };
    } else {
      params[key] = value;
    }
  }
  let database: string;
  try {
    database = decodeURIComponent(url.pathname.slice(1)) ||
      decodeURIComponent(url.username);
  } catch {
    return { error: "expected a URL-encoded database name (value not shown)" };
  }
  let user: string;
  let password: string;
  try {
    user = decodeURIComponent(url.username);
    password = decodeURIComponent(url.password);
  } catch {
    return { error: "expected URL-encoded credentials (value not shown)" };
  }
  return {
    host: url.hostname.replace(/^\[(.*)\]$/, "$1"),
    port,
    database,
    user,
    password,
    ssl,
    params,
    redacted: redactUrl(text),
  };
}

const IDENTIFIER_PART = /^[A-Za-z_][A-Za-z0-9_$]{0,62}$/;

function parseIdentifier(text: string, maxParts: number): string | undefined {
  const parts = text.split(".");
  if (parts.length > maxParts) return undefined;
  return parts.every((part) => IDENTIFIER_PART.test(part)) ? text : undefined;
}

function parseApiUrl(text: string): string | { error: string } {
  if (!text.includes("{id}")) {
    return { error: "expected a URL template containing {id}" };
  }
  let url: URL;
  try {
    url = new URL(text.replaceAll("{id}", "0"));
  } catch {
    return { error: "expected an http(s) URL template containing {id}" };
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    return { error: `expected http: or https:, found ${url.protocol}` };
  }
  if (new URL(text.replaceAll("{id}", "1")).host !== url.host) {
    return { error: "expected {id} in the path or query, not in the host" };
  }
  return text;
}

function parseIds(text: string, separator: RegExp): string[] {
  const seen = new Set<string>();
  for (const part of text.split(separator)) {
    const id = part.trim();
    if (id !== "") seen.add(id);
  }
  return [...seen];
}

/** A value parser: the parsed value, or what was expected instead. */
type Parse<T> = (raw: string) => T | { error: string };

function parsed<T>(parse: Parse<T>) {
  return v.pipe(
    v.string(),
    v.rawTransform<string, T>(({ dataset, addIssue, NEVER }) => {
      const result = parse(dataset.value);
      if (
        typeof result === "object" && result !== null && "error" in result &&
        typeof (result as { error: unknown }).error === "string"
      ) {
        addIssue({ message: (result as { error: string }).error });
        return NEVER;
      }
      return result as T;
    }),
  );
}

/** What each required setting holds, for "is required" messages. */
const REQUIRED: Record<string, string> = {};

function required<T>(name: SettingName, what: string, parse: Parse<T>) {
  REQUIRED[name] = what;
  return v.pipe(v.string(`is required (${what})`), parsed(parse));
}

function expect<T>(what: string, parse: (raw: string) => T | undefined) {
  return parsed<T>((raw) => {
    const value = parse(raw);
    return value === undefined
      ? { error: `expected ${what}, found ${JSON.stringify(raw)}` }
      : value;
  });
}

const positiveInt = (raw: string) =>
  /^\d+$/.test(raw.trim()) && Number(raw) >= 1 &&
    Number.isSafeInteger(Number(raw))
    ? Number(raw)
    : undefined;
const duration = "a duration like 500ms, 30s, 5m, 2h, 25d or 5h30m";

const ConfigSchema = v.object({
  databaseUrl: required(
    "databaseUrl",
    "a postgres:// URL",
    (raw) => parseDatabaseUrl(raw),
  ),
  apiUrl: required("apiUrl", "a URL template containing {id}", parseApiUrl),
  apiKey: required(
    "apiKey",
    "the vendor API key",
    (raw) =>
      raw.trim() === ""
        ? { error: "expected a non-empty key" }
        : /[\r\n\0]/.test(raw)
        ? { error: "expected a key without line breaks (value not shown)" }
        : raw,
  ),
  apiKeyHeader: v.optional(
    expect(
      "an HTTP header name",
      (raw) => /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(raw) ? raw : undefined,
    ),
    "Authorization",
  ),
  table: v.optional(
    expect(
      "a table name like people or crm.people",
      (raw) => parseIdentifier(raw, 2),
    ),
    "people",
  ),
  idColumn: v.optional(
    expect("a column name", (raw) => parseIdentifier(raw, 1)),
    "id",
  ),
  dataColumn: v.optional(
    expect("a column name", (raw) => parseIdentifier(raw, 1)),
    "vendor_data",
  ),
  atColumn: v.optional(
    expect("a column name", (raw) => parseIdentifier(raw, 1)),
    "vendor_refreshed_at",
  ),
  stateSchema: v.optional(
    expect("a schema name", (raw) => parseIdentifier(raw, 1)),
  ),
  limit: v.optional(expect("a positive whole number", positiveInt)),
  ids: v.optional(
    expect("a comma-separated list of ids", (raw) => {
      const ids = parseIds(raw, /,/);
      return ids.length > 0 ? ids : undefined;
    }),
  ),
  idsFile: v.optional(
    expect("a file path or -", (raw) => raw.trim() === "" ? undefined : raw),
  ),
  staleAfter: v.optional(expect(duration, parseDuration), "25d"),
  minInterval: v.optional(expect(duration, parseDuration), "0"),
  requestTimeout: v.optional(
    expect(`${duration}, above 0`, (raw) => parseDuration(raw) || undefined),
    "30s",
  ),
  maxAttempts: v.optional(expect("a positive whole number", positiveInt), "5"),
  backoff: v.optional(
    expect(`${duration}, above 0`, (raw) => parseDuration(raw) || undefined),
    "1s",
  ),
  maxRetryWait: v.optional(
    expect(`${duration}, above 0`, (raw) => parseDuration(raw) || undefined),
    "5m",
  ),
  maxBody: v.optional(
    expect(
      "a size in bytes like 1048576, 512KiB or 1MiB, above 0",
      (raw) => parseBytes(raw) || undefined,
    ),
    "1MiB",
  ),
});

/**
 * parseArgs takes a lone `-` for a flag, not a value; `--ids-file -`
 * (standard input) must still work, so such pairs are joined with `=`.
 */
function joinDashValues(args: string[], flagNames: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (args[i + 1] === "-" && flagNames.includes(arg.replace(/^--/, ""))) {
      out.push(`${arg}=-`);
      i++;
    } else {
      out.push(arg);
    }
  }
  return out;
}

/** Environment lookup, `Deno.env.get` by default. */
export type EnvLookup = (name: string) => string | undefined;

/**
 * Reads every setting from the flags and the environment (a flag overrides
 * its variable) and validates them all in one step. Every problem is
 * reported, each naming its flag or variable; secret values are never
 * quoted.
 *
 * @param args The command-line arguments.
 * @param env The environment lookup.
 * @returns The configuration, or every problem found.
 */
export function parseConfig(args: string[], env: EnvLookup): ConfigResult {
  const errors: string[] = [];
  const flagNames = Object.values(SETTINGS as Record<string, SettingSpec>)
    .flatMap((spec) => spec.flag ? [spec.flag] : []);
  const flags = parseArgs(joinDashValues(args, flagNames), {
    string: flagNames,
    boolean: ["help"],
    alias: { h: "help" },
    unknown: (arg) => {
      errors.push(
        arg.startsWith("-")
          ? `${arg.split("=")[0]}: unknown flag (see --help)`
          : `${JSON.stringify(arg)}: unexpected argument (see --help)`,
      );
      return false;
    },
  });
  const raw: Record<string, string> = {};
  const source: Record<string, string> = {};
  for (
    const [name, spec] of Object.entries(SETTINGS) as [string, SettingSpec][]
  ) {
    const flagValue = spec.flag ? flags[spec.flag] : undefined;
    if (Array.isArray(flagValue)) {
      errors.push(`--${spec.flag}: given more than once`);
      continue;
    }
    if (typeof flagValue === "string") {
      raw[name] = flagValue;
      source[name] = `--${spec.flag}`;
      continue;
    }
    const envValue = env(spec.env);
    if (envValue !== undefined && envValue !== "") {
      raw[name] = envValue;
      source[name] = spec.env;
    }
  }
  if (flags.help) {
    // Help needs no valid configuration.
    return errors.length > 0
      ? { ok: false, errors }
      : { ok: true, config: { help: true } as Config };
  }
  const result = v.safeParse(ConfigSchema, raw, { abortEarly: false });
  if (!result.success) {
    for (const issue of result.issues) {
      const key = String(issue.path?.[0]?.key ?? "");
      const spec = (SETTINGS as Record<string, SettingSpec>)[key];
      const name = source[key] ??
        (spec
          ? (spec.flag ? `${spec.env} (or --${spec.flag})` : spec.env)
          : key);
      const message = issue.input === undefined && key in REQUIRED
        ? `is required (${REQUIRED[key]})`
        : issue.message;
      errors.push(`${name}: ${message}`);
    }
  }
  if (raw.ids !== undefined && raw.idsFile !== undefined) {
    errors.push(
      `${source.ids} and ${source.idsFile}: give the ids one way, not both`,
    );
  }
  if (!result.success || errors.length > 0) return { ok: false, errors };
  const o = result.output;
  if (o.backoff > o.maxRetryWait) {
    return {
      ok: false,
      errors: [
        `${
          source.backoff ?? "REFRESH_BACKOFF"
        }: expected at most the max retry wait (${
          formatDuration(o.maxRetryWait)
        }), found ${formatDuration(o.backoff)}`,
      ],
    };
  }
  return {
    ok: true,
    config: {
      database: o.databaseUrl,
      vendor: {
        apiUrl: o.apiUrl,
        apiKey: o.apiKey,
        apiKeyHeader: o.apiKeyHeader,
      },
      table: o.table,
      idColumn: o.idColumn,
      dataColumn: o.dataColumn,
      atColumn: o.atColumn,
      stateSchema: o.stateSchema,
      limit: o.limit,
      ids: o.ids,
      idsFile: o.idsFile,
      staleAfterMs: o.staleAfter,
      minIntervalMs: o.minInterval,
      requestTimeoutMs: o.requestTimeout,
      maxAttempts: o.maxAttempts,
      backoffMs: o.backoff,
      maxRetryWaitMs: o.maxRetryWait,
      maxBodyBytes: o.maxBody,
      help: false,
    },
  };
}

/**
 * The usage text printed by `--help`.
 *
 * @returns The usage text.
 */
export function usage(): string {
  const lines = [
    "Usage: deno task refresh [flags]",
    "",
    "Refreshes stale records with a data vendor's API, one request at a time.",
    "Every setting is an environment variable; its flag, when given, wins.",
    "",
  ];
  for (const spec of Object.values(SETTINGS as Record<string, SettingSpec>)) {
    const left = spec.flag ? `--${spec.flag} ${spec.arg}` : `(env only)`;
    const dflt = spec.default !== undefined
      ? ` [default: ${spec.default}]`
      : "";
    lines.push(`  ${left.padEnd(28)} ${spec.env}`);
    lines.push(`      ${spec.help}${dflt}`);
  }
  lines.push(
    `  ${"--help, -h".padEnd(28)} Show this text.`,
    "",
    "Durations: ms, s, m, h, d and combinations (5h30m).",
    "Exit codes: 0 completed or an expected stop (rate_limited);",
    "            1 aborted (database unreachable or lost, unexpected error);",
    "            2 configuration or usage error.",
  );
  return lines.join("\n");
}

/**
 * The run's parameters as stored in `refresh_runs.params`: every setting
 * that is not secret, and the database URL without its password.
 *
 * @param config The configuration.
 * @returns A JSON-ready object without secrets.
 */
export function publicParams(config: Config): Record<string, unknown> {
  return {
    database: config.database.redacted,
    apiUrl: redactUrl(config.vendor.apiUrl),
    apiKeyHeader: config.vendor.apiKeyHeader,
    table: config.table,
    idColumn: config.idColumn,
    dataColumn: config.dataColumn,
    atColumn: config.atColumn,
    stateSchema: config.stateSchema ?? null,
    limit: config.limit ?? null,
    ids: config.ids ? config.ids.length : null,
    idsFile: config.idsFile ?? null,
    staleAfterMs: config.staleAfterMs,
    minIntervalMs: config.minIntervalMs,
    requestTimeoutMs: config.requestTimeoutMs,
    maxAttempts: config.maxAttempts,
    backoffMs: config.backoffMs,
    maxRetryWaitMs: config.maxRetryWaitMs,
    maxBodyBytes: config.maxBodyBytes,
  };
}

// ---------------------------------------------------------------------------
// Pacing: one request start at a time, never sooner than allowed.
// ---------------------------------------------------------------------------

/** Options of {@linkcode Pacer}. */
export interface PacerOptions {
  /** Least time between two request starts, in milliseconds. */
  minIntervalMs: number;
  /** Monotonic clock in milliseconds; `performance.now` by default. */
  now?: () => number;
}

/**
 * Decides when the next vendor request may start: not before
 * `minIntervalMs` after the previous start, and not before any time the
 * vendor asked for (`Retry-After`).
 */
export class Pacer {
  #intervalMs: number;
  #now: () => number;
  #lastStart = -Infinity;
  #notBefore = -Infinity;

  /**
   * @param options The pacing options.
   */
  constructor(options: PacerOptions) {
    if (!(options.minIntervalMs >= 0)) {
      throw new RangeError(
        `Cannot pace requests: 'minIntervalMs' must be >= 0, current value is ${options.minIntervalMs}`,
      );
    }
    this.#intervalMs = options.minIntervalMs;
    this.#now = options.now ?? (() => performance.now());
  }

  /**
   * Makes the next request wait at least `ms` from now.
   *
   * @param ms The wait in milliseconds.
   */
  deferFor(ms: number): void {
    this.#notBefore = Math.max(this.#notBefore, this.#now() + ms);
  }

  /**
   * How long the next request would have to wait now, in milliseconds.
   *
   * @returns The wait (0 when it may start at once).
   */
  pendingWait(): number {
    const at = Math.max(this.#lastStart + this.#intervalMs, this.#notBefore);
    return Math.max(0, at - this.#now());
  }

  /**
   * Waits until the next request may start, then records its start.
   *
   * @param signal Cuts the wait short; the promise then rejects with the
   * signal's reason.
   */
  async wait(signal?: AbortSignal): Promise<void> {
    signal?.throwIfAborted();
    const ms = this.pendingWait();
    if (ms > 0) await delay(ms, signal ? { signal } : undefined);
    this.#lastStart = this.#now();
  }
}

// ---------------------------------------------------------------------------
// Database: state tables, target inspection, selection and atomic writes.
// ---------------------------------------------------------------------------

type Sql = postgres.Sql;

/** Status of one target in `refresh_state`. */
export type TargetStatus = "ok" | "not_found" | "invalid" | "failed";

/** Final (or current) status of a run in `refresh_runs`. */
export type RunStatus = "running" | "completed" | "rate_limited" | "aborted";

/** Fully qualified names used in queries (escaped by postgres.js). */
interface Names {
  table: string;
  id: string;
  data: string;
  at: string;
  runs: string;
  state: string;
  stateSchema: string | undefined;
}

function namesFor(config: Config): Names {
  const prefix = config.stateSchema ? `${config.stateSchema}.` : "";
  return {
    table: config.table,
    id: config.idColumn,
    data: config.dataColumn,
    at: config.atColumn,
    runs: `${prefix}refresh_runs`,
    state: `${prefix}refresh_state`,
    stateSchema: config.stateSchema,
  };
}

/**
 * Opens the connection pool (one connection: the work is sequential). Every
 * postgres.js option that could otherwise come from a `PG*` variable is
 * given explicitly.
 */
function connect(db: DatabaseTarget): Sql {
  const options = {
    host: db.host,
    port: db.port,
    database: db.database,
    user: db.user,
    pass: db.password,
    ssl: db.ssl,
    sslnegotiation: null,
    max: 1,
    idle_timeout: null,
    connect_timeout: 10,
    max_lifetime: null,
    max_pipeline: 100,
    backoff: (retries: number) =>
      (0.5 + Math.random() / 2) * Math.min(3 ** retries / 100, 20),
    keep_alive: 60,
    prepare: true,
    debug: false,
    fetch_types: true,
    publications: "alltables",
    target_session_attrs: null,
    onnotice: () => {},
    connection: { application_name: "refresh", ...db.params },
  };
  return postgres(
    options as unknown as postgres.Options<Record<string, never>>,
  );
}

const RUN_COLUMNS = [
  "total bigint",
  "processed bigint not null default 0",
  "succeeded bigint not null default 0",
  "not_found bigint not null default 0",
  "invalid bigint not null default 0",
  "failed bigint not null default 0",
  "credits_spent bigint not null default 0",
  "requests bigint not null default 0",
  "retries bigint not null default 0",
  "error text",
];

/**
 * Creates the state tables when missing; safe to run concurrently and
 * repeatedly, and adds columns a newer version needs to older tables.
 */
async function ensureStateTables(sql: Sql, names: Names): Promise<void> {
  await sql.begin(async (tx) => {
    await tx`select pg_advisory_xact_lock(hashtext('refresh:state-tables'))`;
    if (names.stateSchema) {
      await tx`create schema if not exists ${sql(names.stateSchema)}`;
    }
    await tx`
      create table if not exists ${sql(names.runs)} (
        id bigint generated always as identity primary key,
        status text not null,
        started_at timestamptz not null default now(),
        finished_at timestamptz,
        heartbeat_at timestamptz not null default now(),
        params jsonb not null default '{}'
      )`;
    for (const column of RUN_COLUMNS) {
      await tx`alter table ${sql(names.runs)} add column if not exists ${
        tx.unsafe(column) /* constant text from RUN_COLUMNS */
      }`;
    }
    await tx`
      create table if not exists ${sql(names.state)} (
        target_id text primary key,
        status text not null
          check (status in ('ok', 'not_found', 'invalid', 'failed')),
        attempts integer not null,
        http_status integer,
        error text,
        last_attempt_at timestamptz not null,
        last_success_at timestamptz,
        run_id bigint
      )`;
  });
}

function quoted(name: string): string {
  return name.split(".").map((part) => `"${part}"`).join(".");
}

/**
 * Checks that the target table and its columns exist with usable types.
 *
 * @returns The problems found, each naming the setting to fix.
 */
async function inspectTarget(sql: Sql, config: Config): Promise<string[]> {
  const [relation] = await sql<{ oid: number | null }[]>`
    select to_regclass(${quoted(config.table)})::oid as oid`;
  if (!relation?.oid) {
    return [`REFRESH_TABLE: table ${config.table} does not exist`];
  }
  const columns = await sql<{ name: string; type: string }[]>`
    select attname as name, format_type(atttypid, atttypmod) as type
    from pg_attribute
    where attrelid = ${relation.oid} and attnum > 0 and not attisdropped`;
  const types = new Map(columns.map((c) => [c.name, c.type]));
  const problems: string[] = [];
  const want: [SettingName, string, (type: string) => boolean, string][] = [
    ["idColumn", config.idColumn, () => true, "any type"],
    [
      "dataColumn",
      config.dataColumn,
      (t) => t === "jsonb" || t === "json",
      "jsonb or json",
    ],
    [
      "atColumn",
      config.atColumn,
      (t) => t.startsWith("timestamp"),
      "timestamptz",
    ],
  ];
  for (const [setting, column, ok, expected] of want) {
    const type = types.get(column);
    const env = SETTINGS[setting].env;
    if (type === undefined) {
      problems.push(
        `${env}: column ${column} does not exist in ${config.table}`,
      );
    } else if (!ok(type)) {
      problems.push(
        `${env}: expected column ${column} of ${config.table} to be ${expected}, found ${type}`,
      );
    }
  }
  return problems;
}

/** How targets are picked: stale ones, or exactly the given ids. */
interface Selection {
  /** The cutoff: refreshed before this (database time, as text) is stale. */
  cutoff: string;
}

async function readCutoff(sql: Sql, staleAfterMs: number): Promise<string> {
  const [row] = await sql<{ cutoff: string }[]>`
    select (now() - ${
    staleAfterMs / 1000
  } * interval '1 second')::text as cutoff`;
  return row!.cutoff;
}

/** Filter shared by the count and the batches: not a known recent miss. */
function notKnownMiss(sql: Sql, names: Names, cutoff: string) {
  return sql`not exists (
    select 1 from ${sql(names.state)} s
    where s.target_id = t.${sql(names.id)}::text
      and s.status in ('not_found', 'invalid')
      and s.last_attempt_at >= ${cutoff}::text::timestamptz
  )`;
}

async function countStale(
  sql: Sql,
  names: Names,
  selection: Selection,
): Promise<number> {
  const [row] = await sql<{ n: string }[]>`
    select count(*)::text as n from ${sql(names.table)} t
    where (t.${sql(names.at)} is null or t.${
    sql(names.at)
  } < ${selection.cutoff}::text::timestamptz)
      and ${notKnownMiss(sql, names, selection.cutoff)}`;
  return Number(row!.n);
}

const BATCH_SIZE = 500;

/**
 * Yields the stale targets in keyset-paginated batches, never refreshed
 * first (by id), then stalest first. Each batch is one short query, so
 * memory stays flat and no transaction stays open while the vendor is
 * called.
 */
async function* staleBatches(
  sql: Sql,
  names: Names,
  selection: Selection,
): AsyncGenerator<string[]> {
  const t = { id: sql(names.id), at: sql(names.at) };
  let after: string | undefined;
  while (true) {
    const rows = await sql<{ id: string }[]>`
      select t.${t.id}::text as id from ${sql(names.table)} t
      where t.${t.at} is null
        ${after === undefined ? sql`` : sql`and t.${t.id} > ${after}`}
        and ${notKnownMiss(sql, names, selection.cutoff)}
      order by t.${t.id}
      limit ${BATCH_SIZE}`;
    if (rows.length === 0) break;
    yield rows.map((row) => row.id);
    after = rows.at(-1)!.id;
  }
  let last: { at: string; id: string } | undefined;
  while (true) {
    const rows = await sql<{ id: string; at: string }[]>`
      select t.${t.id}::text as id, t.${t.at}::text as at
      from ${sql(names.table)} t
      where t.${t.at} < ${selection.cutoff}::text::timestamptz
        ${
      last === undefined
        ? sql``
        : sql`and (t.${t.at}, t.${t.id}) > (${last.at}::text::timestamptz, ${last.id})`
    }
        and ${notKnownMiss(sql, names, selection.cutoff)}
      order by t.${t.at}, t.${t.id}
      limit ${BATCH_SIZE}`;
    if (rows.length === 0) break;
    yield rows.map((row) => row.id);
    const tail = rows.at(-1)!;
    last = { at: tail.at, id: tail.id };
  }
}

/**
 * Yields the given ids that exist, in the given order, in batches; ids not
 * in the table are passed to `onUnknown` and never fetched.
 */
async function* givenIdBatches(
  sql: Sql,
  names: Names,
  ids: string[],
  onUnknown: (ids: string[]) => void,
): AsyncGenerator<string[]> {
  for (let start = 0; start < ids.length; start += BATCH_SIZE) {
    const batch = ids.slice(start, start + BATCH_SIZE);
    const rows = await sql<{ id: string }[]>`
      select t.${sql(names.id)}::text as id from ${sql(names.table)} t
      where t.${sql(names.id)}::text = any(${sql.array(batch)}::text[])`;
    const found = new Set(rows.map((row) => row.id));
    const unknown = batch.filter((id) => !found.has(id));
    if (unknown.length > 0) onUnknown(unknown);
    const known = batch.filter((id) => found.has(id));
    if (known.length > 0) yield known;
  }
}

/** What happened to one target. */
export interface Outcome {
  status: TargetStatus;
  /** Requests made for it in this run. */
  attempts: number;
  /** Status of the last response, if any. */
  httpStatus: number | null;
  /** Why it is not `ok`. */
  error: string | null;
  /** What to store, for `ok`. */
  payload?: unknown;
  /** Billable responses among the attempts. */
  credits: number;
}

/**
 * Records one target's outcome in ONE statement, hence one transaction:
 * the target row (for `ok`), its `refresh_state` row and the run's
 * counters and heartbeat. A crash leaves all of it written or none.
 *
 * @returns Whether the target row was updated (false if it vanished).
 */
async function recordOutcome(
  sql: Sql,
  names: Names,
  runId: number,
  id: string,
  outcome: Outcome,
): Promise<boolean> {
  const ok = outcome.status === "ok";
  const target = ok
    ? sql`target as (
        update ${sql(names.table)}
        set ${sql(names.data)} = ${
      // Typed by the server as the column's json/jsonb type, so
      // postgres.js serializes it with JSON.stringify exactly once.
      outcome.payload as string},
            ${sql(names.at)} = now()
        where ${sql(names.id)} = ${id}
        returning 1
      )`
    : sql`target as (select 1 where false)`;
  const [row] = await sql<{ updated: number }[]>`
    with ${target},
    state as (
      insert into ${sql(names.state)} as s
        (target_id, status, attempts, http_status, error,
         last_attempt_at, last_success_at, run_id)
      values (${id}, ${outcome.status}, ${outcome.attempts},
        ${outcome.httpStatus}, ${outcome.error}, now(),
        case when ${ok} then now() end, ${runId})
      on conflict (target_id) do update set
        status = excluded.status,
        attempts = excluded.attempts,
        http_status = excluded.http_status,
        error = excluded.error,
        last_attempt_at = excluded.last_attempt_at,
        last_success_at = coalesce(excluded.last_success_at, s.last_success_at),
        run_id = excluded.run_id
    ),
    run as (
      update ${sql(names.runs)} set
        processed = processed + 1,
        succeeded = succeeded + ${ok ? 1 : 0},
        not_found = not_found + ${outcome.status === "not_found" ? 1 : 0},
        invalid = invalid + ${outcome.status === "invalid" ? 1 : 0},
        failed = failed + ${outcome.status === "failed" ? 1 : 0},
        credits_spent = credits_spent + ${outcome.credits},
        requests = requests + ${outcome.attempts},
        retries = retries + ${Math.max(0, outcome.attempts - 1)},
        heartbeat_at = now()
      where id = ${runId}
    )
    select (select count(*) from target)::int as updated`;
  return row!.updated > 0;
}

// ---------------------------------------------------------------------------
// The run: fetch each target, strictly one request at a time.
// ---------------------------------------------------------------------------

/** A failure worth another attempt (network, timeout, 408/429/5xx). */
class TransientError extends Error {
  httpStatus: number | null;
  constructor(message: string, httpStatus: number | null = null) {
    super(message);
    this.name = "TransientError";
    this.httpStatus = httpStatus;
  }
}

/** Ends the run early with the given status (an expected stop or not). */
class StopRun extends Error {
  status: Exclude<RunStatus, "running" | "completed">;
  constructor(status: StopRun["status"], message: string) {
    super(message);
    this.name = "StopRun";
    this.status = status;
  }
}

/** Counters of one run, mirrored in its `refresh_runs` row. */
export interface RunCounters {
  total: number;
  processed: number;
  succeeded: number;
  notFound: number;
  invalid: number;
  failed: number;
  unknown: number;
  credits: number;
  requests: number;
  retries: number;
}

interface RunContext {
  sql: Sql;
  config: Config;
  names: Names;
  runId: number;
  pacer: Pacer;
  log: Logger;
  counters: RunCounters;
  signal?: AbortSignal;
}

const BODY_SNIPPET = 200;

async function bodySnippet(response: Response): Promise<string> {
  try {
    const bytes = await readCappedBody(response.body, 64 * 1024).catch(() =>
      new Uint8Array()
    );
    const text = new TextDecoder().decode(bytes).replace(/\s+/g, " ").trim();
    return text.length > BODY_SNIPPET
      ? `${text.slice(0, BODY_SNIPPET)}…`
      : text;
  } catch {
    return "";
  }
}

/**
 * One request for one target. Returns the final outcome, or throws a
 * {@linkcode TransientError} (worth a retry) or a {@linkcode StopRun}.
 */
async function requestOnce(
  ctx: RunContext,
  id: string,
  spent: { credits: number },
): Promise<Outcome> {
  const { config } = ctx;
  const { url, headers } = buildVendorRequest(id, config.vendor);
  const timeout = AbortSignal.timeout(config.requestTimeoutMs);
  const signal = ctx.signal ? AbortSignal.any([ctx.signal, timeout]) : timeout;
  const fail = (
    status: TargetStatus,
    httpStatus: number | null,
    error: string,
  ) => ({ status, attempts: 0, httpStatus, error, credits: 0 }) as Outcome;
  let response: Response;
  try {
    response = await fetch(url, { headers, redirect: "error", signal });
  } catch (error) {
    if (ctx.signal?.aborted) throw ctx.signal.reason;
    if (timeout.aborted) {
      throw new TransientError(
        `no answer within ${formatDuration(config.requestTimeoutMs)}`,
      );
    }
    const message = String((error as Error)?.message ?? error)
      .replaceAll(url, redactUrl(url));
    if (/redirect/i.test(message)) {
      return fail(
        "failed",
        null,
        `the vendor redirected; redirects are not followed (${message})`,
      );
    }
    throw new TransientError(`network error: ${message}`);
  }
  const classification = classifyResponse(response.status, response.headers);
  if (response.status === 200) spent.credits++;
  switch (classification.kind) {
    case "success":
      return await readSuccess(ctx, response, timeout, fail);
    case "not_found":
      await response.body?.cancel();
      return fail(
        "not_found",
        404,
        "HTTP 404: the vendor does not know this id",
      );
    case "failed": {
      const snippet = await bodySnippet(response);
      return fail(
        "failed",
        response.status,
        `HTTP ${response.status}${snippet ? `: ${snippet}` : ""}`,
      );
    }
    case "transient": {
      await response.body?.cancel();
      const wait = classification.retryAfterMs;
      if (wait !== undefined) {
        if (wait > config.maxRetryWaitMs) {
          throw new StopRun(
            "rate_limited",
            `the vendor asked to wait ${
              formatDuration(wait)
            } (HTTP ${response.status} Retry-After), longer than --max-retry-wait ${
              formatDuration(config.maxRetryWaitMs)
            }; progress is saved, run again later`,
          );
        }
        ctx.pacer.deferFor(wait);
      }
      throw new TransientError(
        `HTTP ${response.status}${
          wait !== undefined ? ` (Retry-After ${formatDuration(wait)})` : ""
        }`,
        response.status,
      );
    }
  }
}

async function readSuccess(
  ctx: RunContext,
  response: Response,
  timeout: AbortSignal,
  fail: (s: TargetStatus, h: number | null, e: string) => Outcome,
): Promise<Outcome> {
  const max = ctx.config.maxBodyBytes;
  const declared = Number(response.headers.get("content-length") ?? NaN);
  if (declared > max) {
    await response.body?.cancel();
    return fail("invalid", response.status, new BodyTooLargeError(max).message);
  }
  let bytes: Uint8Array;
  try {
    bytes = await readCappedBody(response.body, max);
  } catch (error) {
    if (error instanceof BodyTooLargeError) {
      return fail("invalid", response.status, error.message);
    }
    if (ctx.signal?.aborted) throw ctx.signal.reason;
    if (timeout.aborted) {
      throw new TransientError(
        `body not received within ${
          formatDuration(ctx.config.requestTimeoutMs)
        }`,
        response.status,
      );
    }
    throw new TransientError(
      `network error while reading the body: ${(error as Error)?.message}`,
      response.status,
    );
  }
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    return fail("invalid", response.status, "body is not valid UTF-8");
  }
  const parsedBody = parseVendorBody(text);
  if (!parsedBody.ok) {
    return fail("invalid", response.status, parsedBody.reason);
  }
  return {
    status: "ok",
    attempts: 0,
    httpStatus: response.status,
    error: null,
    payload: parsedBody.payload,
    credits: 0,
  };
}

/**
 * Fetches one target with retries (exponential backoff, full jitter) and
 * returns its outcome. Strictly sequential: each attempt is awaited before
 * the next one starts, and every start goes through the pacer.
 */
async function refreshTarget(ctx: RunContext, id: string): Promise<Outcome> {
  const { config } = ctx;
  const spent = { credits: 0 };
  let attempts = 0;
  let outcome: Outcome;
  try {
    outcome = await retry(async () => {
      await ctx.pacer.wait(ctx.signal);
      attempts++;
      return await requestOnce(ctx, id, spent);
    }, {
      maxAttempts: config.maxAttempts,
      minTimeout: config.backoffMs,
      maxTimeout: config.maxRetryWaitMs,
      multiplier: 2,
      jitter: 1,
      isRetriable: (error) => error instanceof TransientError,
      signal: ctx.signal,
    });
  } catch (error) {
    if (!(error instanceof RetryError)) throw error;
    const cause = error.cause as TransientError;
    outcome = {
      status: "failed",
      attempts: 0,
      httpStatus: cause.httpStatus,
      error: `gave up after ${attempts} attempts; last: ${cause.message}`,
      credits: 0,
    };
  }
  return { ...outcome, attempts, credits: spent.credits };
}

async function processTarget(ctx: RunContext, id: string): Promise<void> {
  const outcome = await refreshTarget(ctx, id);
  if (outcome.error !== null) {
    outcome.error = scrubSecrets(outcome.error, secretsOf(ctx.config));
  }
  const updated = await recordOutcome(
    ctx.sql,
    ctx.names,
    ctx.runId,
    id,
    outcome,
  );
  const c = ctx.counters;
  c.processed++;
  c.credits += outcome.credits;
  c.requests += outcome.attempts;
  c.retries += Math.max(0, outcome.attempts - 1);
  if (outcome.status === "ok") c.succeeded++;
  else if (outcome.status === "not_found") c.notFound++;
  else if (outcome.status === "invalid") c.invalid++;
  else c.failed++;
  if (outcome.status === "ok" && !updated) {
    ctx.log.warn(`target ${id}: row vanished before its refresh was written`);
  } else if (outcome.status === "invalid" || outcome.status === "failed") {
    ctx.log.warn(`target ${id}: ${outcome.status}: ${outcome.error}`);
  }
}

async function runTargets(
  ctx: RunContext,
  batches: AsyncIterable<string[]>,
): Promise<void> {
  const limit = ctx.config.limit ?? Infinity;
  for await (const batch of batches) {
    for (const id of batch) {
      if (ctx.counters.processed >= limit) return;
      await processTarget(ctx, id);
    }
  }
}

// ---------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------

/** Where lines go; every line is scrubbed of secrets first. */
export interface Logger {
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
}

function secretsOf(config: Config): string[] {
  const secrets = [config.vendor.apiKey, config.database.password];
  // Percent-encoded forms appear inside URLs.
  for (const secret of [...secrets]) {
    if (secret) secrets.push(encodeURIComponent(secret));
  }
  return secrets.filter((s) => s.length >= 1);
}

function createLogger(
  write: (line: string) => void,
  secrets: () => string[],
): Logger {
  const line = (level: string, message: string) =>
    write(scrubSecrets(`refresh: ${level}${message}`, secrets()));
  return {
    info: (message) => line("", message),
    warn: (message) => line("warning: ", message),
    error: (message) => line("error: ", message),
  };
}

function summary(
  runId: number,
  status: RunStatus,
  c: RunCounters,
  elapsedMs: number,
  reason: string | null,
): string {
  return [
    `refresh: run ${runId} ${status} in ${formatDuration(elapsedMs)}${
      reason ? ` (${reason})` : ""
    }`,
    `  targets: ${c.total} selected, ${c.processed} processed: ${c.succeeded} ok, ${c.notFound} not_found, ${c.invalid} invalid, ${c.failed} failed${
      c.unknown ? `; ${c.unknown} unknown ids skipped` : ""
    }`,
    `  requests: ${c.requests} (${c.retries} retries), credits spent: ${c.credits}`,
  ].join("\n");
}

const EXIT_CODES: Record<RunStatus, number> = {
  running: 1,
  completed: 0,
  rate_limited: 0,
  aborted: 1,
};

// ---------------------------------------------------------------------------
// main
// ---------------------------------------------------------------------------

/** Options of {@linkcode main}, for tests and embedding. */
export interface MainOptions {
  /** Command-line arguments; `Deno.args` by default. */
  args?: string[];
  /** Environment lookup; `Deno.env.get` by default. */
  env?: EnvLookup;
  /** Receives log lines (stderr by default). */
  stderr?: (line: string) => void;
  /** Receives the summary and help (stdout by default). */
  stdout?: (text: string) => void;
  /** Stops the run: no new request starts, waits are cut short. */
  signal?: AbortSignal;
}

async function readIdsFile(
  path: string,
): Promise<string[] | { error: string }> {
  let text: string;
  try {
    text = path === "-"
      ? await new Response(Deno.stdin.readable).text()
      : await Deno.readTextFile(path);
  } catch (error) {
    return {
      error: `cannot read ${JSON.stringify(path)}: ${(error as Error).message}`,
    };
  }
  const ids = parseIds(text, /\r?\n/);
  return ids.length > 0 ? ids : { error: `no ids in ${JSON.stringify(path)}` };
}

/**
 * Runs the refresh job: parses the configuration, connects, selects the
 * targets and refreshes them one at a time.
 *
 * @param options Arguments, environment and output (the process's own by
 * default).
 * @returns The exit code.
 */
export async function main(options: MainOptions = {}): Promise<number> {
  const stderr = options.stderr ?? ((line: string) => console.error(line));
  const stdout = options.stdout ?? ((text: string) => console.log(text));
  const env = options.env ?? ((name: string) => Deno.env.get(name));
  const parsedConfig = parseConfig(options.args ?? Deno.args, env);
  if (!parsedConfig.ok) {
    stderr("refresh: invalid configuration:");
    for (const error of parsedConfig.errors) stderr(`  ${error}`);
    stderr("Run with --help for every setting.");
    return 2;
  }
  const config = parsedConfig.config;
  if (config.help) {
    stdout(usage());
    return 0;
  }
  const log = createLogger(stderr, () => secretsOf(config));
  if (config.idsFile !== undefined) {
    const ids = await readIdsFile(config.idsFile);
    if (!Array.isArray(ids)) {
      log.error(`--ids-file: ${ids.error}`);
      return 2;
    }
    config.ids = ids;
  }

  const started = performance.now();
  const names = namesFor(config);
  const counters: RunCounters = {
    total: 0,
    processed: 0,
    succeeded: 0,
    notFound: 0,
    invalid: 0,
    failed: 0,
    unknown: 0,
    credits: 0,
    requests: 0,
    retries: 0,
  };
  const sql = connect(config.database);
  let runId: number | undefined;
  try {
    log.info(
      `connecting to ${config.database.redacted}; vendor ${
        redactUrl(config.vendor.apiUrl)
      }`,
    );
    try {
      await ensureStateTables(sql, names);
    } catch (error) {
      log.error(`database: ${describeError(error)}`);
      return 1;
    }
    const problems = await inspectTarget(sql, config);
    if (problems.length > 0) {
      log.error("invalid target:");
      for (const problem of problems) log.error(`  ${problem}`);
      return 2;
    }
    const [run] = await sql<{ id: string }[]>`
      insert into ${sql(names.runs)} (status, params)
      values ('running', ${
      sql.json(publicParams(config) as postgres.JSONValue)
    })
      returning id::text`;
    runId = Number(run!.id);

    const selection: Selection = {
      cutoff: await readCutoff(sql, config.staleAfterMs),
    };
    let batches: AsyncIterable<string[]>;
    if (config.ids) {
      counters.total = Math.min(config.ids.length, config.limit ?? Infinity);
      batches = givenIdBatches(sql, names, config.ids, (unknown) => {
        counters.unknown += unknown.length;
        const shown = unknown.slice(0, 20).join(", ");
        log.warn(
          `${unknown.length} id(s) not in ${config.table}, not fetched: ${shown}${
            unknown.length > 20 ? ", …" : ""
          }`,
        );
      });
    } else {
      const stale = await countStale(sql, names, selection);
      counters.total = Math.min(stale, config.limit ?? Infinity);
      batches = staleBatches(sql, names, selection);
    }
    await sql`update ${
      sql(names.runs)
    } set total = ${counters.total} where id = ${runId}`;
    log.info(
      `run ${runId}: ${counters.total} target(s) to refresh in ${config.table}`,
    );

    const ctx: RunContext = {
      sql,
      config,
      names,
      runId,
      pacer: new Pacer({ minIntervalMs: config.minIntervalMs }),
      log,
      counters,
      signal: options.signal,
    };
    let status: RunStatus = "completed";
    let reason: string | null = null;
    try {
      await runTargets(ctx, batches);
    } catch (error) {
      if (!(error instanceof StopRun)) throw error;
      status = error.status;
      reason = error.message;
      log.warn(`stopping: ${reason}`);
    }
    if (config.ids) counters.total -= counters.unknown;
    await finishRun(sql, names, runId, status, reason, counters);
    stdout(
      summary(runId, status, counters, performance.now() - started, reason),
    );
    return EXIT_CODES[status];
  } catch (error) {
    const message = scrubSecrets(describeError(error), secretsOf(config));
    log.error(message);
    if (runId !== undefined) {
      await finishRun(sql, names, runId, "aborted", message, counters).catch(
        () => {},
      );
    }
    return 1;
  } finally {
    await sql.end({ timeout: 5 });
  }
}

async function finishRun(
  sql: Sql,
  names: Names,
  runId: number,
  status: RunStatus,
  reason: string | null,
  counters: RunCounters,
): Promise<void> {
  await sql`
    update ${sql(names.runs)} set
      status = ${status},
      finished_at = now(),
      heartbeat_at = now(),
      total = ${counters.total},
      error = ${reason}
    where id = ${runId}`;
}

function describeError(error: unknown): string {
  if (error instanceof Error) {
    const code = (error as { code?: unknown }).code;
    return `${error.message}${typeof code === "string" ? ` (${code})` : ""}`;
  }
  return String(error);
}

if (import.meta.main) Deno.exitCode = await main();
