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
 * - `--allow-env=DATABASE_URL,REFRESH_*,PGAPPNAME,PGTARGETSESSIONATTRS,
 *   GITHUB_ACTIONS,GITHUB_STEP_SUMMARY`: the settings; the two variables
 *   postgres.js reads whatever options it is given (an application name,
 *   and which server of a multi-host URL to use); and the two GitHub
 *   Actions sets. Every other connection setting is passed to postgres.js
 *   explicitly, so no other `PG*` variable changes where or how it connects
 *   (`PGSSLMODE` cannot weaken TLS).
 * - `--allow-read`: only used for `--ids-file`.
 * - The `refresh:ci` task adds `--allow-write="$GITHUB_STEP_SUMMARY"`: the
 *   one file it may write, the job summary on GitHub Actions.
 *
 * A run stops by itself: when its targets are done, at `--budget` credits,
 * at `--reserve` credits left at the vendor, at `--time-budget`, at the end
 * of the calendar month (`--timezone`), when the vendor rate-limits it for
 * longer than `--max-retry-wait`, or on SIGINT/SIGTERM. Only one run is live
 * at a time (a lease in `refresh_runs`).
 *
 * Exit codes: 0 completed, dry run or an expected stop (budget_exhausted,
 * credits_exhausted, rate_limited, deadline, period_end, outside_window);
 * 1 aborted (key refused, too many failures in a row, database unreachable
 * or lost, unexpected error); 2 configuration or usage error; 3 another
 * run is live; 128+n stopped by signal n (recorded interrupted).
 *
 * The file reads top to bottom: the vendor section (the part to adapt to
 * another vendor), pure helpers (exported and unit-tested), the database
 * layer, the run loop, and `main()`.
 *
 * @module
 */

import { parseArgs } from "jsr:@std/cli@1.0.32/parse-args";
import { retry, RetryError } from "jsr:@std/async@1.5.0/retry";
import { delay } from "jsr:@std/async@1.5.0/delay";
import postgres from "npm:postgres@3.4.9";
import * as v from "npm:valibot@1.5.0";

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
  /** A flag without a value; its variable takes true/false/1/0/yes/no. */
  boolean?: boolean;
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
  budget: {
    env: "REFRESH_BUDGET",
    flag: "budget",
    arg: "N",
    help: "Spend at most N credits (billable responses) this run; never N+1.",
  },
  billableStatuses: {
    env: "REFRESH_BILLABLE_STATUSES",
    flag: "billable-statuses",
    arg: "LIST",
    default: "200",
    help: "HTTP statuses the vendor charges for, e.g. 200,404.",
  },
  creditsHeader: {
    env: "REFRESH_CREDITS_HEADER",
    flag: "credits-header",
    arg: "NAME",
    help:
      "Response header carrying the vendor's remaining credits, e.g. X-Credits-Remaining.",
  },
  reserve: {
    env: "REFRESH_RESERVE",
    flag: "reserve",
    arg: "N",
    help:
      "Stop once the vendor reports N or fewer credits left (needs --credits-header).",
  },
  timeBudget: {
    env: "REFRESH_TIME_BUDGET",
    flag: "time-budget",
    arg: "DURATION",
    default: "5h30m",
    help: "No new target starts after this long; the run ends as deadline.",
  },
  timezone: {
    env: "REFRESH_TIMEZONE",
    flag: "timezone",
    arg: "TZ",
    default: "UTC",
    help:
      "Time zone of the credit period: the run never continues past the end of the month there.",
  },
  monthEndDays: {
    env: "REFRESH_MONTH_END_DAYS",
    flag: "month-end-days",
    arg: "N",
    help:
      "Run only in the last N days of the month; otherwise exit 0 at once (for schedules).",
  },
  maxConsecutiveFailures: {
    env: "REFRESH_MAX_CONSECUTIVE_FAILURES",
    flag: "max-consecutive-failures",
    arg: "N",
    default: "10",
    help: "Abort the run after N targets in a row ended failed.",
  },
  lease: {
    env: "REFRESH_LEASE",
    flag: "lease",
    arg: "DURATION",
    default: "2m",
    help:
      "A live run's heartbeat is renewed well within this; a run silent for longer is taken over as crashed.",
  },
  grace: {
    env: "REFRESH_GRACE",
    flag: "grace",
    arg: "DURATION",
    default: "5s",
    help: "On SIGINT/SIGTERM, how long the request in flight may still finish.",
  },
  progressInterval: {
    env: "REFRESH_PROGRESS_INTERVAL",
    flag: "progress-interval",
    arg: "DURATION",
    default: "15s",
    help: "How often a progress line is printed.",
  },
  logFormat: {
    env: "REFRESH_LOG_FORMAT",
    flag: "log-format",
    arg: "FORMAT",
    default: "text",
    help: "text, or json for one JSON object per line (same facts).",
  },
  dryRun: {
    env: "REFRESH_DRY_RUN",
    flag: "dry-run",
    arg: "",
    boolean: true,
    help: "Show what a run would do: no vendor call, no write to any table.",
  },
  now: {
    env: "REFRESH_NOW",
    flag: "now",
    arg: "TIME",
    help:
      "Act as if the run started at this ISO 8601 time (to try the month-end window and period end).",
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
  budget: number | undefined;
  billableStatuses: number[];
  creditsHeader: string | undefined;
  reserve: number | undefined;
  timeBudgetMs: number;
  timezone: string;
  monthEndDays: number | undefined;
  maxConsecutiveFailures: number;
  leaseMs: number;
  graceMs: number;
  progressIntervalMs: number;
  logFormat: "text" | "json";
  dryRun: boolean;
  /** The injected start time (`--now`), if any. */
  now: Date | undefined;
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
const positiveDuration = (raw: string) => parseDuration(raw) || undefined;
const headerName = (raw: string) =>
  /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(raw) ? raw : undefined;

function parseStatuses(raw: string): number[] | undefined {
  const statuses = raw.split(",").map((part) => part.trim());
  return statuses.every((s) => /^[1-5]\d\d$/.test(s))
    ? [...new Set(statuses.map(Number))]
    : undefined;
}

function parseTimeZone(raw: string): string | undefined {
  try {
    return new Intl.DateTimeFormat("en-US", { timeZone: raw })
      .resolvedOptions().timeZone;
  } catch {
    return undefined;
  }
}

function parseBoolean(raw: string): boolean | undefined {
  const text = raw.trim().toLowerCase();
  if (["true", "1", "yes", "on"].includes(text)) return true;
  if (["false", "0", "no", "off"].includes(text)) return false;
  return undefined;
}

function parseInstant(raw: string): Date | undefined {
  if (
    !/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$/.test(
      raw,
    )
  ) {
    return undefined;
  }
  const date = new Date(raw);
  return Number.isNaN(date.getTime()) ? undefined : date;
}

/** A column name setting with its default. */
function column(name: string) {
  return v.optional(
    expect("a column name", (raw) => parseIdentifier(raw, 1)),
    name,
  );
}

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
    expect("an HTTP header name", headerName),
    "Authorization",
  ),
  table: v.optional(
    expect(
      "a table name like people or crm.people",
      (raw) => parseIdentifier(raw, 2),
    ),
    "people",
  ),
  idColumn: column("id"),
  dataColumn: column("vendor_data"),
  atColumn: column("vendor_refreshed_at"),
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
  budget: v.optional(expect("a positive whole number", positiveInt)),
  billableStatuses: v.optional(
    expect(
      "a comma-separated list of HTTP statuses like 200,404",
      parseStatuses,
    ),
    "200",
  ),
  creditsHeader: v.optional(expect("an HTTP header name", headerName)),
  reserve: v.optional(
    expect(
      "a whole number",
      (raw) => /^\d+$/.test(raw.trim()) ? Number(raw) : undefined,
    ),
  ),
  timeBudget: v.optional(
    expect(`${duration}, above 0`, positiveDuration),
    "5h30m",
  ),
  timezone: v.optional(
    expect("an IANA time zone like UTC or Europe/Berlin", parseTimeZone),
    "UTC",
  ),
  monthEndDays: v.optional(
    expect("a whole number of days from 1 to 31", (raw) => {
      const days = positiveInt(raw);
      return days !== undefined && days <= 31 ? days : undefined;
    }),
  ),
  maxConsecutiveFailures: v.optional(
    expect("a positive whole number", positiveInt),
    "10",
  ),
  lease: v.optional(
    expect(`${duration}, at least 3s`, (raw) => {
      const ms = parseDuration(raw);
      return ms !== undefined && ms >= 3000 ? ms : undefined;
    }),
    "2m",
  ),
  grace: v.optional(expect(duration, parseDuration), "5s"),
  progressInterval: v.optional(
    expect(`${duration}, above 0`, positiveDuration),
    "15s",
  ),
  logFormat: v.optional(
    expect(
      "text or json",
      (raw) => raw === "text" || raw === "json" ? raw : undefined,
    ),
    "text",
  ),
  dryRun: v.optional(expect("true or false", parseBoolean), "false"),
  now: v.optional(
    expect(
      "an ISO 8601 time with a zone, like 2026-11-28T06:00:00Z",
      parseInstant,
    ),
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
  const specs = Object.values(SETTINGS as Record<string, SettingSpec>);
  const flagNames = specs.flatMap((spec) =>
    spec.flag && !spec.boolean ? [spec.flag] : []
  );
  const booleanFlags = specs.flatMap((spec) =>
    spec.flag && spec.boolean ? [spec.flag] : []
  );
  const flags = parseArgs(joinDashValues(args, flagNames), {
    string: flagNames,
    boolean: ["help", ...booleanFlags],
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
    const flagValue = spec.flag
      ? (flags as Record<string, unknown>)[spec.flag]
      : undefined;
    if (flagValue === true) {
      raw[name] = "true";
      source[name] = `--${spec.flag}`;
      continue;
    }
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
  if (raw.reserve !== undefined && raw.creditsHeader === undefined) {
    errors.push(
      `${source.reserve}: needs REFRESH_CREDITS_HEADER (or --credits-header) to read the remaining credits from`,
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
      budget: o.budget,
      billableStatuses: o.billableStatuses,
      creditsHeader: o.creditsHeader,
      reserve: o.reserve,
      timeBudgetMs: o.timeBudget,
      timezone: o.timezone,
      monthEndDays: o.monthEndDays,
      maxConsecutiveFailures: o.maxConsecutiveFailures,
      leaseMs: o.lease,
      graceMs: o.grace,
      progressIntervalMs: o.progressInterval,
      logFormat: o.logFormat,
      dryRun: o.dryRun,
      now: o.now,
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
    const left = spec.flag
      ? `--${spec.flag}${spec.arg ? ` ${spec.arg}` : ""}`
      : `(env only)`;
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
    "Exit codes:",
    "  0        completed, dry run, or an expected stop: budget_exhausted,",
    "           credits_exhausted, rate_limited, deadline, period_end,",
    "           outside_window (run again later; progress is saved)",
    "  1        aborted: the vendor refused the key (401/403), too many",
    "           failures in a row, database unreachable or lost, or an",
    "           unexpected error",
    "  2        configuration or usage error; nothing was touched",
    "  3        another run is live (its id, start and heartbeat are printed)",
    "  128+n    stopped by signal n (130 SIGINT, 143 SIGTERM): interrupted",
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
    budget: config.budget ?? null,
    billableStatuses: config.billableStatuses,
    creditsHeader: config.creditsHeader ?? null,
    reserve: config.reserve ?? null,
    timeBudgetMs: config.timeBudgetMs,
    timezone: config.timezone,
    monthEndDays: config.monthEndDays ?? null,
    maxConsecutiveFailures: config.maxConsecutiveFailures,
    leaseMs: config.leaseMs,
    graceMs: config.graceMs,
    now: config.now?.toISOString() ?? null,
  };
}

// ---------------------------------------------------------------------------
// Time: the credit period and the month-end window.
// ---------------------------------------------------------------------------

interface ZonedParts {
  year: number;
  month: number;
  day: number;
  hour: number;
  minute: number;
  second: number;
}

function zonedParts(at: Date, timeZone: string): ZonedParts {
  const format = new Intl.DateTimeFormat("en-US", {
    timeZone,
    hourCycle: "h23",
    year: "numeric",
    month: "numeric",
    day: "numeric",
    hour: "numeric",
    minute: "numeric",
    second: "numeric",
  });
  const parts: Record<string, number> = {};
  for (const part of format.formatToParts(at)) {
    if (part.type !== "literal") parts[part.type] = Number(part.value);
  }
  return parts as unknown as ZonedParts;
}

/** Offset of `timeZone` from UTC at the instant `at`, in milliseconds. */
function zoneOffsetMs(at: number, timeZone: string): number {
  const whole = Math.floor(at / 1000) * 1000;
  const p = zonedParts(new Date(whole), timeZone);
  const asUtc = Date.UTC(
    p.year,
    p.month - 1,
    p.day,
    p.hour,
    p.minute,
    p.second,
  );
  return asUtc - whole;
}

function daysInMonth(year: number, month: number): number {
  return new Date(Date.UTC(year, month, 0)).getUTCDate();
}

/**
 * The end of the calendar month containing `now` in `timeZone`: the
 * instant the next month starts there. Credits reset then.
 *
 * @param now The current time.
 * @param timeZone An IANA time zone.
 * @returns The instant the current month ends.
 */
export function periodEnd(now: Date, timeZone: string): Date {
  const p = zonedParts(now, timeZone);
  // Midnight starting the next month, as if local time were UTC...
  const local = Date.UTC(p.year, p.month, 1);
  // ...shifted by the zone's offset at (about) that instant.
  let instant = local - zoneOffsetMs(local, timeZone);
  instant = local - zoneOffsetMs(instant, timeZone);
  return new Date(instant);
}

/** Where `now` falls relative to the month-end window. */
export interface MonthEndWindow {
  /** Whether `now` is within the last `days` days of its month. */
  inWindow: boolean;
  /** Day of the month in the time zone. */
  day: number;
  /** Days in the month. */
  daysInMonth: number;
  /** First day of the month that is in the window. */
  firstDay: number;
}

/**
 * Tells whether `now` is within the last `days` days of the month in
 * `timeZone`. Cron has no "last day of the month", so a schedule fires on
 * days 25–31 and the run decides.
 *
 * @param now The current time.
 * @param timeZone An IANA time zone.
 * @param days The window's length in days.
 * @returns The decision and the numbers behind it.
 */
export function monthEndWindow(
  now: Date,
  timeZone: string,
  days: number,
): MonthEndWindow {
  const p = zonedParts(now, timeZone);
  const total = daysInMonth(p.year, p.month);
  const firstDay = Math.max(1, total - days + 1);
  return {
    inWindow: p.day >= firstDay,
    day: p.day,
    daysInMonth: total,
    firstDay,
  };
}

// ---------------------------------------------------------------------------
// Vendor headers: credits and rate limits.
// ---------------------------------------------------------------------------

/**
 * Reads the remaining credits from a response header.
 *
 * @param headers The response headers.
 * @param name The header's name.
 * @returns A whole number, or `undefined` when absent or malformed.
 */
export function parseCreditsRemaining(
  headers: Headers,
  name: string,
): number | undefined {
  const value = headers.get(name)?.trim();
  if (value === undefined || !/^\d+$/.test(value)) return undefined;
  const credits = Number(value);
  return Number.isSafeInteger(credits) ? credits : undefined;
}

function resetToMs(value: string, now: Date): number | undefined {
  if (!/^\d+(\.\d+)?$/.test(value.trim())) return undefined;
  const n = Number(value);
  // Large values are a Unix time in seconds; small ones, seconds to wait.
  return n > 1_000_000_000 ? Math.max(0, n * 1000 - now.getTime()) : n * 1000;
}

/**
 * When a response says the rate-limit window is used up, how long to wait
 * for it to reset: `X-RateLimit-Remaining: 0` (or `RateLimit-Remaining`)
 * with `X-RateLimit-Reset` (seconds, or a Unix time), or the IETF draft's
 * `RateLimit: r=0;t=N`. Unknown or malformed headers are ignored.
 *
 * @param headers The response headers.
 * @param now The current time, for Unix-time resets.
 * @returns The wait in milliseconds, or `undefined` when there is none.
 */
export function parseRateLimitWait(
  headers: Headers,
  now: Date = new Date(),
): number | undefined {
  let wait: number | undefined;
  const remaining = headers.get("x-ratelimit-remaining") ??
    headers.get("ratelimit-remaining");
  const reset = headers.get("x-ratelimit-reset") ??
    headers.get("ratelimit-reset");
  if (remaining?.trim() === "0" && reset !== null) {
    wait = resetToMs(reset, now);
  }
  const draft = headers.get("ratelimit");
  if (draft !== null) {
    for (const item of draft.split(",")) {
      const params = new Map(
        item.split(";").map((p) => p.trim().split("=") as [string, string]),
      );
      const r = params.get("r")?.trim();
      const t = params.get("t")?.trim();
      if (r === "0" && t !== undefined && /^\d+$/.test(t)) {
        wait = Math.max(wait ?? 0, Number(t) * 1000);
      }
    }
  }
  return wait;
}

// ---------------------------------------------------------------------------
// Measuring and forecasting.
// ---------------------------------------------------------------------------

/**
 * Request durations in constant memory: an exact mean and a percentile
 * within 5 % (log-scaled buckets), however many requests a run makes.
 */
export class LatencyStats {
  #buckets = new Map<number, number>();
  /** How many durations were added. */
  count = 0;
  /** Their sum, in milliseconds. */
  total = 0;

  /**
   * Records one duration.
   *
   * @param ms The duration in milliseconds.
   */
  add(ms: number): void {
    const bucket = Math.ceil(Math.log1p(Math.max(0, ms)) / Math.log(1.05));
    this.#buckets.set(bucket, (this.#buckets.get(bucket) ?? 0) + 1);
    this.count++;
    this.total += ms;
  }

  /**
   * The mean duration.
   *
   * @returns Milliseconds, or `undefined` before the first one.
   */
  mean(): number | undefined {
    return this.count > 0 ? this.total / this.count : undefined;
  }

  /**
   * The duration below which the share `p` of all durations fall.
   *
   * @param p The share, between 0 and 1 (0.95 for p95).
   * @returns Milliseconds (a bucket's upper edge), or `undefined` if empty.
   */
  percentile(p: number): number | undefined {
    if (this.count === 0) return undefined;
    const rank = Math.ceil(p * this.count);
    let seen = 0;
    for (const bucket of [...this.#buckets.keys()].sort((a, b) => a - b)) {
      seen += this.#buckets.get(bucket)!;
      if (seen >= rank) return Math.expm1(bucket * Math.log(1.05));
    }
    return undefined;
  }
}

/** The facts a forecast is made from. */
export interface ForecastInput {
  /** Time the run has been working, in milliseconds. */
  elapsedMs: number;
  /** Time until the deadline, in milliseconds. */
  timeLeftMs: number;
  /** Targets processed so far. */
  processed: number;
  /** Targets still to process. */
  targetsLeft: number;
  /** Credits spent so far. */
  creditsSpent: number;
  /** Credits the run may still spend (budget or vendor's remaining less reserve), if known. */
  creditsLeft: number | undefined;
}

/**
 * Says whether, at the current pace, the run will spend its budget (or run
 * out of targets) before its deadline, or roughly what will be left.
 *
 * @param input The run's numbers so far.
 * @returns One short sentence.
 */
export function forecast(input: ForecastInput): string {
  const { elapsedMs, timeLeftMs, processed, targetsLeft } = input;
  if (processed === 0 || elapsedMs <= 0) return "too early to tell";
  const targetsPerMs = processed / elapsedMs;
  const creditsPerTarget = input.creditsSpent / processed;
  const targetsByDeadline = targetsPerMs * timeLeftMs;
  const finishMs = targetsLeft / targetsPerMs;
  if (input.creditsLeft !== undefined && creditsPerTarget > 0) {
    const targetsForBudget = input.creditsLeft / creditsPerTarget;
    if (targetsForBudget <= targetsLeft) {
      return targetsForBudget <= targetsByDeadline
        ? `budget spent in ~${
          formatDuration(targetsForBudget / targetsPerMs)
        }, before the deadline`
        : `~${
          Math.round(input.creditsLeft - targetsByDeadline * creditsPerTarget)
        } credits unspent at the deadline`;
    }
    if (finishMs <= timeLeftMs) {
      return `targets done in ~${formatDuration(finishMs)}, ~${
        Math.round(input.creditsLeft - targetsLeft * creditsPerTarget)
      } credits left unspent`;
    }
  }
  return finishMs <= timeLeftMs
    ? `all targets done in ~${formatDuration(finishMs)}, before the deadline`
    : `~${
      Math.round(targetsLeft - targetsByDeadline)
    } targets left at the deadline${
      input.creditsLeft !== undefined
        ? `, ~${
          Math.max(
            0,
            Math.round(
              input.creditsLeft - targetsByDeadline * creditsPerTarget,
            ),
          )
        } credits unspent`
        : ""
    }`;
}

// ---------------------------------------------------------------------------
// Pacing: one request start at a time, never sooner than allowed.
// ---------------------------------------------------------------------------

/** Options of {@linkcode Pacer}. */
export interface PacerOptions {
  /** Least time between two request starts, in milliseconds. */
  minIntervalMs: number;
  /** Largest gap adaptive pacing may widen to; 60 s by default. */
  maxGapMs?: number;
  /** Monotonic clock in milliseconds; `performance.now` by default. */
  now?: () => number;
}

/** Smallest gap after the vendor pushed back, in milliseconds. */
const PUSHBACK_MIN_GAP_MS = 100;
/** How much each success narrows the gap, in milliseconds. */
const RELAX_STEP_MS = 20;

/**
 * Decides when the next vendor request may start: not before the current
 * gap after the previous start, and not before any time the vendor asked
 * for (`Retry-After`, rate-limit resets).
 *
 * The gap adapts: each push-back from the vendor doubles it (multiplicative
 * increase) and each success narrows it by a small fixed step (additive
 * decrease), never below `minIntervalMs`, so a vendor that pushes back gets
 * a steadier, slower client instead of a burst after every wait.
 */
export class Pacer {
  #minIntervalMs: number;
  #maxGapMs: number;
  #gapMs: number;
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
    this.#minIntervalMs = options.minIntervalMs;
    this.#maxGapMs = Math.max(
      options.maxGapMs ?? 60_000,
      options.minIntervalMs,
    );
    this.#gapMs = options.minIntervalMs;
    this.#now = options.now ?? (() => performance.now());
  }

  /** The current gap between request starts, in milliseconds. */
  get gapMs(): number {
    return this.#gapMs;
  }

  /**
   * Makes the next request wait at least `ms` from now.
   *
   * @param ms The wait in milliseconds.
   */
  deferFor(ms: number): void {
    this.#notBefore = Math.max(this.#notBefore, this.#now() + ms);
  }

  /** The vendor pushed back (429, or 503 with Retry-After): widen the gap. */
  pushBack(): void {
    this.#gapMs = Math.min(
      this.#maxGapMs,
      Math.max(this.#gapMs * 2, PUSHBACK_MIN_GAP_MS),
    );
  }

  /** A request succeeded: narrow the gap a little. */
  relax(): void {
    this.#gapMs = Math.max(this.#minIntervalMs, this.#gapMs - RELAX_STEP_MS);
  }

  /**
   * How long the next request would have to wait now, in milliseconds.
   *
   * @returns The wait (0 when it may start at once).
   */
  pendingWait(): number {
    const at = Math.max(this.#lastStart + this.#gapMs, this.#notBefore);
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
export type RunStatus =
  | "running"
  | "completed"
  | "budget_exhausted"
  | "credits_exhausted"
  | "rate_limited"
  | "deadline"
  | "period_end"
  | "outside_window"
  | "interrupted"
  | "aborted"
  | "crashed";

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
  "credits_remaining bigint",
  "mean_request_ms double precision",
  "p95_request_ms double precision",
  "reason text",
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
  /** Whether `refresh_state` exists (a dry run never creates it). */
  hasState: boolean;
}

async function readCutoff(sql: Sql, staleAfterMs: number): Promise<string> {
  const [row] = await sql<{ cutoff: string }[]>`
    select (now() - ${
    staleAfterMs / 1000
  } * interval '1 second')::text as cutoff`;
  return row!.cutoff;
}

/** Filter shared by the count and the batches: not a known recent miss. */
function notKnownMiss(sql: Sql, names: Names, selection: Selection) {
  if (!selection.hasState) return sql`true`;
  const cutoff = selection.cutoff;
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
      and ${notKnownMiss(sql, names, selection)}`;
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
        and ${notKnownMiss(sql, names, selection)}
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
        and ${notKnownMiss(sql, names, selection)}
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
 * the target row (for `ok`) and its `refresh_state` row. A crash leaves
 * both written or neither. (The run's counters follow every second with
 * the heartbeat, and exactly at the end.)
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
    )
    select (select count(*) from target)::int as updated`;
  return row!.updated > 0;
}

/** A run that holds the lease, as shown to a run that must wait. */
export interface LiveRun {
  id: string;
  startedAt: string;
  heartbeatAt: string;
}

/** The result of {@linkcode acquireLease}. */
type LeaseResult =
  | { runId: number; crashed: string[] }
  | { live: LiveRun };

/**
 * One run at a time: in one transaction that locks `refresh_runs` (so two
 * starters are serialized), runs whose heartbeat is older than their lease
 * are marked `crashed`; if a live one remains, the lease is refused;
 * otherwise this run's row is inserted as `running`. A row lease, not an
 * advisory lock: it holds on servers where session locks do not (PGlite).
 */
async function acquireLease(
  sql: Sql,
  names: Names,
  config: Config,
): Promise<LeaseResult> {
  return await sql.begin(async (tx) => {
    await tx`lock table ${sql(names.runs)} in share row exclusive mode`;
    const crashed = await tx<{ id: string }[]>`
      update ${sql(names.runs)} set
        status = 'crashed',
        finished_at = now(),
        error = 'no heartbeat since ' || heartbeat_at::text ||
          '; taken over by a later run'
      where status = 'running'
        and heartbeat_at < now() - coalesce(
          (params->>'leaseMs')::bigint, ${config.leaseMs}
        ) * interval '1 millisecond'
      returning id::text`;
    const [live] = await tx<{ id: string; started: string; beat: string }[]>`
      select id::text, started_at::text as started, heartbeat_at::text as beat
      from ${sql(names.runs)} where status = 'running'
      order by id limit 1`;
    if (live) {
      return {
        live: { id: live.id, startedAt: live.started, heartbeatAt: live.beat },
      };
    }
    const [run] = await tx<{ id: string }[]>`
      insert into ${sql(names.runs)} (status, params)
      values ('running', ${
      sql.json(publicParams(config) as postgres.JSONValue)
    })
      returning id::text`;
    return { runId: Number(run!.id), crashed: crashed.map((r) => r.id) };
  }) as LeaseResult;
}

/**
 * Renews this run's heartbeat and writes its progress counters.
 *
 * @returns false when the run is no longer `running` (another run took it
 * over as crashed): this run must stop.
 */
async function heartbeat(
  sql: Sql,
  names: Names,
  runId: number,
  c: RunCounters,
  creditsRemaining: number | undefined,
): Promise<boolean> {
  const rows = await sql`
    update ${sql(names.runs)} set
      heartbeat_at = now(),
      ${sql(counterColumns(c, creditsRemaining))}
    where id = ${runId} and status = 'running'
    returning 1`;
  return rows.length > 0;
}

/** The run's counters as `refresh_runs` columns. */
function counterColumns(c: RunCounters, creditsRemaining: number | undefined) {
  return {
    total: c.total,
    processed: c.processed,
    succeeded: c.succeeded,
    not_found: c.notFound,
    invalid: c.invalid,
    failed: c.failed,
    credits_spent: c.credits,
    credits_remaining: creditsRemaining ?? null,
    requests: c.requests,
    retries: c.retries,
  };
}

/** Inserts a run that is over before it began (outside the window). */
async function recordSkippedRun(
  sql: Sql,
  names: Names,
  config: Config,
  status: RunStatus,
  reason: string,
): Promise<number> {
  const [run] = await sql<{ id: string }[]>`
    insert into ${sql(names.runs)} (status, params, finished_at, total, reason)
    values (${status}, ${sql.json(publicParams(config) as postgres.JSONValue)},
      now(), 0, ${reason})
    returning id::text`;
  return Number(run!.id);
}

/** Time per target of the last run that processed any, for estimates. */
async function lastPace(
  sql: Sql,
  names: Names,
): Promise<{ runId: string; msPerTarget: number } | undefined> {
  const [row] = await sql<{ id: string; ms: number }[]>`
    select id::text,
      extract(epoch from finished_at - started_at) * 1000 / processed as ms
    from ${sql(names.runs)}
    where finished_at is not null and processed > 0
    order by id desc limit 1`;
  return row ? { runId: row.id, msPerTarget: Number(row.ms) } : undefined;
}

async function tableExists(sql: Sql, name: string): Promise<boolean> {
  const [row] = await sql<{ oid: number | null }[]>`
    select to_regclass(${quoted(name)})::oid as oid`;
  return Boolean(row?.oid);
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
  status: Exclude<RunStatus, "running" | "completed" | "crashed">;
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

function newCounters(): RunCounters {
  return {
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
}

/** A repeat of the first signal within this many milliseconds is ignored. */
const SIGNAL_REPEAT_MS = 500;

/**
 * Stops a run from outside: signals, the deadline, a lost lease. `stop`
 * means no new request starts and every wait is cut short; `hard` aborts
 * the request in flight.
 */
class RunControl {
  readonly stop = new AbortController();
  readonly hard = new AbortController();
  /** The first signal received, if any. */
  signal: { name: Deno.Signal; number: number } | undefined;
  #graceMs: number;
  #firstSignalAt = 0;
  #timers: ReturnType<typeof setTimeout>[] = [];
  #listeners: [Deno.Signal, () => void][] = [];

  constructor(graceMs: number, external?: AbortSignal) {
    this.#graceMs = graceMs;
    external?.addEventListener("abort", () => this.halt("SIGINT"), {
      once: true,
    });
  }

  /** Handles SIGINT and SIGTERM from now on. */
  listen(): void {
    for (const name of ["SIGINT", "SIGTERM"] as const) {
      const listener = () => this.halt(name);
      Deno.addSignalListener(name, listener);
      this.#listeners.push([name, listener]);
    }
  }

  /** First call: stop gracefully; second call: abort the request too. */
  halt(name: Deno.Signal): void {
    const number = name === "SIGINT" ? 2 : name === "SIGTERM" ? 15 : 1;
    if (this.signal !== undefined) {
      // `deno task` sometimes relays one signal twice: a repeat of the same
      // signal within moments is that one signal, not a second one.
      const sinceFirst = performance.now() - this.#firstSignalAt;
      if (name === this.signal.name && sinceFirst < SIGNAL_REPEAT_MS) return;
      this.hard.abort(
        new StopRun("interrupted", `received ${name} twice: aborted at once`),
      );
      return;
    }
    this.signal = { name, number };
    this.#firstSignalAt = performance.now();
    const reason = new StopRun("interrupted", `received ${name}`);
    this.stop.abort(reason);
    this.after(this.#graceMs, () => this.hard.abort(reason));
  }

  /** Stops (gracefully) at the given time from now. */
  stopAfter(ms: number, reason: StopRun): void {
    this.after(ms, () => this.stop.abort(reason));
  }

  /** Stops at once, aborting the request in flight. */
  abort(reason: StopRun): void {
    this.stop.abort(reason);
    this.hard.abort(reason);
  }

  after(ms: number, fn: () => void): void {
    // setTimeout holds at most ~24.8 days.
    this.#timers.push(setTimeout(fn, Math.min(ms, 2 ** 31 - 1)));
  }

  every(ms: number, fn: () => void): void {
    this.#timers.push(setInterval(fn, ms));
  }

  dispose(): void {
    for (const timer of this.#timers) clearTimeout(timer);
    for (const [name, listener] of this.#listeners) {
      Deno.removeSignalListener(name, listener);
    }
  }
}

interface RunContext {
  sql: Sql;
  config: Config;
  names: Names;
  runId: number;
  pacer: Pacer;
  log: Logger;
  counters: RunCounters;
  stats: LatencyStats;
  control: RunControl;
  /** The vendor's last reported remaining credits. */
  creditsRemaining?: number;
  /** Targets in a row that ended `failed`. */
  consecutiveFailures: number;
  /** A stop decided during a target, taken after it is recorded. */
  stopAfterTarget?: StopRun;
  /** GitHub annotations printed so far. */
  annotations: number;
  env: EnvLookup;
  stdout: (text: string) => void;
}

const BODY_SNIPPET = 200;
const UTF8 = new TextDecoder("utf-8", { fatal: true });

async function bodySnippet(response: Response): Promise<string> {
  const bytes = await readCappedBody(response.body, 64 * 1024).catch(() =>
    new Uint8Array()
  );
  const text = new TextDecoder().decode(bytes).replace(/\s+/g, " ").trim();
  return text.length > BODY_SNIPPET ? `${text.slice(0, BODY_SNIPPET)}…` : text;
}

function failure(
  status: TargetStatus,
  httpStatus: number | null,
  error: string,
): Outcome {
  return { status, attempts: 0, httpStatus, error, credits: 0 };
}

/** Notes what the response headers say about credits and rate limits. */
function readVendorHeaders(ctx: RunContext, response: Response): void {
  const { config } = ctx;
  if (config.creditsHeader) {
    const remaining = parseCreditsRemaining(
      response.headers,
      config.creditsHeader,
    );
    if (remaining !== undefined) ctx.creditsRemaining = remaining;
  }
  const wait = parseRateLimitWait(response.headers);
  if (wait === undefined) return;
  if (wait > config.maxRetryWaitMs) {
    ctx.stopAfterTarget ??= new StopRun(
      "rate_limited",
      `the vendor's rate-limit window resets in ${
        formatDuration(wait)
      }, longer than --max-retry-wait ${
        formatDuration(config.maxRetryWaitMs)
      }; progress is saved, run again later`,
    );
  } else {
    ctx.pacer.deferFor(wait);
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
  const { control } = ctx;
  control.hard.signal.throwIfAborted();
  // One controller per request, aborted by its timeout or by a hard stop;
  // its timer and listener go as soon as the request is over
  // (AbortSignal.timeout would keep them alive for the whole timeout).
  const request = new AbortController();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    request.abort(new DOMException("timed out", "TimeoutError"));
  }, config.requestTimeoutMs);
  const onHard = () => request.abort(control.hard.signal.reason);
  control.hard.signal.addEventListener("abort", onHard, { once: true });
  try {
    return await requestWithin(ctx, {
      id,
      url,
      headers,
      signal: request.signal,
      timedOut: () => timedOut,
    }, spent);
  } finally {
    clearTimeout(timer);
    control.hard.signal.removeEventListener("abort", onHard);
  }
}

/** One request's parts and how to tell that it timed out. */
interface VendorCall {
  id: string;
  url: string;
  headers: Headers;
  signal: AbortSignal;
  timedOut: () => boolean;
}

async function requestWithin(
  ctx: RunContext,
  call: VendorCall,
  spent: { credits: number },
): Promise<Outcome> {
  const { config, control } = ctx;
  const { id, url, headers, signal } = call;
  const started = performance.now();
  let response: Response;
  try {
    response = await fetch(url, { headers, redirect: "error", signal });
  } catch (error) {
    if (control.hard.signal.aborted) throw control.hard.signal.reason;
    if (call.timedOut()) {
      throw new TransientError(
        `no answer within ${formatDuration(config.requestTimeoutMs)}`,
      );
    }
    const message = String((error as Error)?.message ?? error)
      .replaceAll(url, redactUrl(url));
    if (/redirect/i.test(message)) {
      return failure(
        "failed",
        null,
        `the vendor redirected; redirects are not followed (${message})`,
      );
    }
    throw new TransientError(`network error: ${message}`);
  } finally {
    ctx.stats.add(performance.now() - started);
  }
  const status = response.status;
  if (config.billableStatuses.includes(status)) spent.credits++;
  readVendorHeaders(ctx, response);
  if (status === 401 || status === 403) {
    await response.body?.cancel();
    throw new StopRun(
      "aborted",
      `the vendor refused the API key (HTTP ${status}); every call would fail`,
    );
  }
  if (status === 402) {
    await response.body?.cancel();
    throw new StopRun(
      "credits_exhausted",
      "the vendor answered 402 Payment Required: no credits left",
    );
  }
  const classification = classifyResponse(status, response.headers);
  switch (classification.kind) {
    case "success":
      return await readSuccess(ctx, response, call.timedOut);
    case "not_found":
      await response.body?.cancel();
      return failure(
        "not_found",
        404,
        "HTTP 404: the vendor does not know this id",
      );
    case "failed": {
      const snippet = await bodySnippet(response);
      return failure(
        "failed",
        status,
        `HTTP ${status}${snippet ? `: ${snippet}` : ""}`,
      );
    }
    case "transient":
      await response.body?.cancel();
      throw transient(ctx, id, status, classification.retryAfterMs);
  }
}

/**
 * Obeys a Retry-After (or throws a stop when it is too long), adapts the
 * pace, and describes the failure for a retry.
 */
function transient(
  ctx: RunContext,
  id: string,
  status: number,
  wait: number | undefined,
): TransientError {
  if (status === 429 || (status === 503 && wait !== undefined)) {
    ctx.pacer.pushBack();
  }
  if (wait !== undefined) {
    if (wait > ctx.config.maxRetryWaitMs) {
      throw new StopRun(
        "rate_limited",
        `the vendor asked to wait ${
          formatDuration(wait)
        } (HTTP ${status} Retry-After), longer than --max-retry-wait ${
          formatDuration(ctx.config.maxRetryWaitMs)
        }; progress is saved, run again later`,
      );
    }
    ctx.pacer.deferFor(wait);
    if (wait >= 1000) {
      ctx.log.info(
        `target ${id}: HTTP ${status}; waiting ${
          formatDuration(wait)
        } as the vendor asked (Retry-After)`,
      );
    }
  }
  return new TransientError(
    `HTTP ${status}${
      wait !== undefined ? ` (Retry-After ${formatDuration(wait)})` : ""
    }`,
    status,
  );
}

async function readSuccess(
  ctx: RunContext,
  response: Response,
  timedOut: () => boolean,
): Promise<Outcome> {
  const max = ctx.config.maxBodyBytes;
  const declared = Number(response.headers.get("content-length") ?? NaN);
  if (declared > max) {
    await response.body?.cancel();
    return failure(
      "invalid",
      response.status,
      new BodyTooLargeError(max).message,
    );
  }
  let bytes: Uint8Array;
  try {
    // A declared length within the cap is all fetch will deliver: read it
    // in one go; otherwise count the bytes as they come.
    bytes = Number.isSafeInteger(declared)
      ? new Uint8Array(await response.arrayBuffer())
      : await readCappedBody(response.body, max);
  } catch (error) {
    if (error instanceof BodyTooLargeError) {
      return failure("invalid", response.status, error.message);
    }
    if (ctx.control.hard.signal.aborted) throw ctx.control.hard.signal.reason;
    throw new TransientError(
      timedOut()
        ? `body not received within ${
          formatDuration(ctx.config.requestTimeoutMs)
        }`
        : `network error while reading the body: ${(error as Error)?.message}`,
      response.status,
    );
  }
  let text: string;
  try {
    text = UTF8.decode(bytes);
  } catch {
    return failure("invalid", response.status, "body is not valid UTF-8");
  }
  const parsedBody = parseVendorBody(text);
  if (!parsedBody.ok) {
    return failure("invalid", response.status, parsedBody.reason);
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

/** Refuses to start a request that could spend credit N+1. */
function checkBudget(ctx: RunContext, spentOnTarget: number): void {
  const { budget } = ctx.config;
  if (budget !== undefined && ctx.counters.credits + spentOnTarget >= budget) {
    throw new StopRun(
      "budget_exhausted",
      `spent the budget of ${budget} credit(s)`,
    );
  }
}

/**
 * Fetches one target with retries (exponential backoff, full jitter) and
 * returns its outcome. Strictly sequential: each attempt is awaited before
 * the next one starts, and every start goes through the pacer.
 */
async function refreshTarget(ctx: RunContext, id: string): Promise<Outcome> {
  const { config } = ctx;
  const stop = ctx.control.stop.signal;
  const spent = { credits: 0 };
  let attempts = 0;
  let outcome: Outcome;
  try {
    outcome = await retry(async () => {
      stop.throwIfAborted();
      checkBudget(ctx, spent.credits);
      await ctx.pacer.wait(stop);
      attempts++;
      return await requestOnce(ctx, id, spent);
    }, {
      maxAttempts: config.maxAttempts,
      minTimeout: config.backoffMs,
      maxTimeout: config.maxRetryWaitMs,
      multiplier: 2,
      jitter: 1,
      isRetriable: (error) => error instanceof TransientError,
      signal: stop,
    });
  } catch (error) {
    if (!(error instanceof RetryError)) {
      // Credits spent on a target that a stop leaves unrecorded still count.
      ctx.counters.credits += spent.credits;
      throw error;
    }
    const cause = error.cause as TransientError;
    outcome = failure(
      "failed",
      cause.httpStatus,
      `gave up after ${attempts} attempts; last: ${cause.message}`,
    );
  }
  return { ...outcome, attempts, credits: spent.credits };
}

function escapeAnnotation(text: string): string {
  return text.replaceAll("%", "%25").replaceAll("\r", "%0D").replaceAll(
    "\n",
    "%0A",
  );
}

const MAX_ANNOTATIONS = 10;

function annotateTarget(ctx: RunContext, id: string, outcome: Outcome): void {
  if (ctx.env("GITHUB_ACTIONS") !== "true") return;
  ctx.annotations++;
  if (ctx.annotations <= MAX_ANNOTATIONS) {
    ctx.stdout(
      `::warning title=refresh: target ${
        escapeAnnotation(id)
      } ${outcome.status}::${escapeAnnotation(outcome.error ?? "")}`,
    );
  } else if (ctx.annotations === MAX_ANNOTATIONS + 1) {
    ctx.stdout(
      `::notice title=refresh::more targets failed; see refresh_state (status in ('failed', 'invalid'))`,
    );
  }
}

async function processTarget(ctx: RunContext, id: string): Promise<Outcome> {
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
  if (outcome.status === "ok") ctx.pacer.relax();
  if (outcome.status === "ok" && !updated) {
    ctx.log.warn(`target ${id}: row vanished before its refresh was written`);
  } else if (outcome.status === "invalid" || outcome.status === "failed") {
    ctx.log.warn(`target ${id}: ${outcome.status}: ${outcome.error}`, {
      target: id,
      outcome: outcome.status,
    });
    annotateTarget(ctx, id, outcome);
  }
  return outcome;
}

/** Decides, after a recorded target, whether the run must stop. */
function stopAfter(ctx: RunContext, outcome: Outcome): StopRun | undefined {
  const { config } = ctx;
  ctx.consecutiveFailures = outcome.status === "failed"
    ? ctx.consecutiveFailures + 1
    : 0;
  if (ctx.consecutiveFailures >= config.maxConsecutiveFailures) {
    return new StopRun(
      "aborted",
      `${ctx.consecutiveFailures} targets in a row failed (--max-consecutive-failures); last: ${outcome.error}`,
    );
  }
  if (ctx.stopAfterTarget) return ctx.stopAfterTarget;
  const remaining = ctx.creditsRemaining;
  if (remaining === 0) {
    return new StopRun(
      "credits_exhausted",
      "the vendor reports 0 credits remaining",
    );
  }
  if (
    remaining !== undefined && config.reserve !== undefined &&
    remaining <= config.reserve
  ) {
    return new StopRun(
      "budget_exhausted",
      `the vendor reports ${remaining} credit(s) remaining, at or below the reserve of ${config.reserve}`,
    );
  }
  return undefined;
}

async function runTargets(
  ctx: RunContext,
  batches: AsyncIterable<string[]>,
): Promise<void> {
  const limit = ctx.config.limit ?? Infinity;
  const stop = ctx.control.stop.signal;
  for await (const batch of batches) {
    for (const id of batch) {
      if (ctx.counters.processed >= limit) return;
      stop.throwIfAborted();
      checkBudget(ctx, 0);
      const outcome = await processTarget(ctx, id);
      const reason = stopAfter(ctx, outcome);
      if (reason) throw reason;
    }
  }
}

// ---------------------------------------------------------------------------
// Output: log lines, progress, summaries.
// ---------------------------------------------------------------------------

/** Where lines go; every line is scrubbed of secrets first. */
export interface Logger {
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
  error(message: string, fields?: Record<string, unknown>): void;
}

function secretsOf(config: Config): string[] {
  const secrets = [config.vendor.apiKey, config.database.password];
  // Percent-encoded forms appear inside URLs.
  for (const secret of [...secrets]) {
    if (secret) secrets.push(encodeURIComponent(secret));
  }
  // A secret of one to three characters cannot be scrubbed from text
  // without mangling it; such values are still never printed as such (URLs
  // are printed with the password replaced), only not searched for.
  return secrets.filter((s) => s.length >= MIN_SCRUBBED_LENGTH);
}

const MIN_SCRUBBED_LENGTH = 4;

function createLogger(
  format: "text" | "json",
  write: (line: string) => void,
  secrets: () => string[],
): Logger {
  const line = (
    level: "info" | "warning" | "error",
    message: string,
    fields: Record<string, unknown> = {},
  ) => {
    const text = format === "json"
      ? JSON.stringify({
        time: new Date().toISOString(),
        level,
        event: "log",
        message,
        ...fields,
      })
      : `refresh: ${level === "info" ? "" : `${level}: `}${message}`;
    write(scrubSecrets(text, secrets()));
  };
  return {
    info: (message, fields) => line("info", message, fields),
    warn: (message, fields) => line("warning", message, fields),
    error: (message, fields) => line("error", message, fields),
  };
}

/** Everything a progress line or summary reports. */
interface RunReport {
  runId: number;
  status: RunStatus;
  reason: string | null;
  elapsedMs: number;
  counters: RunCounters;
  creditsRemaining: number | undefined;
  meanRequestMs: number | undefined;
  p95RequestMs: number | undefined;
}

function reportOf(
  ctx: RunContext,
  status: RunStatus,
  reason: string | null,
  elapsedMs: number,
): RunReport {
  return {
    runId: ctx.runId,
    status,
    reason,
    elapsedMs,
    counters: ctx.counters,
    creditsRemaining: ctx.creditsRemaining,
    meanRequestMs: ctx.stats.mean(),
    p95RequestMs: ctx.stats.percentile(0.95),
  };
}

function ms(value: number | undefined): string {
  return value === undefined ? "n/a" : formatDuration(value);
}

function progressLine(
  ctx: RunContext,
  elapsedMs: number,
  timeLeftMs: number,
): { text: string; fields: Record<string, unknown> } {
  const c = ctx.counters;
  const perMinute = elapsedMs > 0 ? (c.processed / elapsedMs) * 60_000 : 0;
  const left = Math.max(0, c.total - c.processed);
  const etaMs = perMinute > 0 ? (left / perMinute) * 60_000 : undefined;
  const budgetLeft = ctx.config.budget !== undefined
    ? ctx.config.budget - c.credits
    : undefined;
  const vendorLeft = ctx.creditsRemaining !== undefined
    ? ctx.creditsRemaining - (ctx.config.reserve ?? 0)
    : undefined;
  const creditsLeft = budgetLeft === undefined
    ? vendorLeft
    : vendorLeft === undefined
    ? budgetLeft
    : Math.min(budgetLeft, vendorLeft);
  const outlook = forecast({
    elapsedMs,
    timeLeftMs,
    processed: c.processed,
    targetsLeft: left,
    creditsSpent: c.credits,
    creditsLeft,
  });
  const pct = c.total > 0 ? ((c.processed / c.total) * 100).toFixed(1) : "100";
  const text =
    `progress: ${c.processed}/${c.total} (${pct}%), ${c.succeeded} ok, ${c.failed} failed, ${
      c.notFound + c.invalid
    } not_found/invalid, ${c.retries} retries; ${
      perMinute.toFixed(1)
    }/min, ETA ${ms(etaMs)}; credits ${c.credits} spent${
      ctx.creditsRemaining !== undefined
        ? `, ${ctx.creditsRemaining} remaining`
        : ""
    }; gap ${formatDuration(ctx.pacer.gapMs)}; forecast: ${outlook}`;
  return {
    text,
    fields: {
      event: "progress",
      processed: c.processed,
      total: c.total,
      succeeded: c.succeeded,
      failed: c.failed,
      notFound: c.notFound,
      invalid: c.invalid,
      perMinute: Number(perMinute.toFixed(2)),
      etaMs: etaMs === undefined ? null : Math.round(etaMs),
      credits: c.credits,
      creditsRemaining: ctx.creditsRemaining ?? null,
      retries: c.retries,
      gapMs: ctx.pacer.gapMs,
      forecast: outlook,
    },
  };
}

/**
 * The end-of-run summary, as text.
 *
 * @param r The run's report.
 * @returns Three or four lines.
 */
function summaryText(r: RunReport): string {
  const c = r.counters;
  return [
    `refresh: run ${r.runId} ${r.status} in ${formatDuration(r.elapsedMs)}${
      r.reason ? ` (${r.reason})` : ""
    }`,
    `  targets: ${c.total} selected, ${c.processed} processed: ${c.succeeded} ok, ${c.notFound} not_found, ${c.invalid} invalid, ${c.failed} failed${
      c.unknown ? `; ${c.unknown} unknown ids skipped` : ""
    }`,
    `  credits: ${c.credits} spent${
      r.creditsRemaining !== undefined
        ? `, ${r.creditsRemaining} remaining at the vendor`
        : ""
    }`,
    `  requests: ${c.requests} (${c.retries} retries), mean ${
      ms(r.meanRequestMs)
    }, p95 ${ms(r.p95RequestMs)}`,
  ].join("\n");
}

function summaryJson(r: RunReport): string {
  return JSON.stringify({
    time: new Date().toISOString(),
    level: "info",
    event: "summary",
    runId: r.runId,
    status: r.status,
    reason: r.reason,
    durationMs: Math.round(r.elapsedMs),
    ...r.counters,
    creditsRemaining: r.creditsRemaining ?? null,
    meanRequestMs: r.meanRequestMs ?? null,
    p95RequestMs: r.p95RequestMs ?? null,
  });
}

/**
 * The end-of-run summary as GitHub-flavoured markdown, for
 * `$GITHUB_STEP_SUMMARY`.
 *
 * @param r The run's report.
 * @returns A heading and a table.
 */
function summaryMarkdown(r: RunReport): string {
  const c = r.counters;
  const cell = (text: string) => text.replaceAll("|", "\\|");
  const rows: [string, string][] = [
    ["Status", `**${r.status}**`],
    ["Why it stopped", r.reason ? cell(r.reason) : "all selected targets done"],
    ["Duration", formatDuration(r.elapsedMs)],
    ["Targets selected", String(c.total)],
    ["Processed", String(c.processed)],
    ["ok", String(c.succeeded)],
    ["not_found", String(c.notFound)],
    ["invalid", String(c.invalid)],
    ["failed", String(c.failed)],
    ["Credits spent", String(c.credits)],
    ["Credits remaining (vendor)", r.creditsRemaining?.toString() ?? "unknown"],
    ["Requests (retries)", `${c.requests} (${c.retries})`],
    [
      "Request time mean / p95",
      `${ms(r.meanRequestMs)} / ${ms(r.p95RequestMs)}`,
    ],
  ];
  return [
    `### refresh run ${r.runId}: ${r.status}`,
    "",
    "| | |",
    "| --- | --- |",
    ...rows.map(([k, v]) => `| ${k} | ${v} |`),
    "",
  ].join("\n");
}

const EXPECTED_STOPS: ReadonlySet<RunStatus> = new Set([
  "completed",
  "budget_exhausted",
  "credits_exhausted",
  "rate_limited",
  "deadline",
  "period_end",
  "outside_window",
]);

/**
 * The exit code for a final run status.
 *
 * @param status The run's final status.
 * @param signal The number of the signal that interrupted it, if any.
 * @returns 0 for an expected end, 128 + n after signal n, else 1.
 */
export function exitCodeFor(status: RunStatus, signal?: number): number {
  if (signal !== undefined) return 128 + signal;
  return EXPECTED_STOPS.has(status) ? 0 : 1;
}

async function writeStepSummary(
  env: EnvLookup,
  markdown: string,
  log: Logger,
): Promise<void> {
  const path = env("GITHUB_STEP_SUMMARY");
  if (!path) return;
  try {
    await Deno.writeTextFile(path, `${markdown}\n`, { append: true });
  } catch (error) {
    log.warn(
      `cannot write the step summary (run through the refresh:ci task, which may write it): ${
        (error as Error).message
      }`,
    );
  }
}

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
  /**
   * Stops the run like SIGINT. When given, no process signal handler is
   * installed.
   */
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

/** The wall clock of a run: real time, or `--now` advancing in step. */
function startClock(now: Date | undefined): () => Date {
  const wall = (now ?? new Date()).getTime();
  const mono = performance.now();
  return () => new Date(wall + performance.now() - mono);
}

/** Explains, or returns undefined, why a run must not start now. */
function outsideWindow(config: Config, now: Date): string | undefined {
  if (config.monthEndDays === undefined) return undefined;
  const w = monthEndWindow(now, config.timezone, config.monthEndDays);
  if (w.inWindow) return undefined;
  return `outside the month-end window: today is day ${w.day} of ${w.daysInMonth} in ${config.timezone}; runs happen on days ${w.firstDay}-${w.daysInMonth} (--month-end-days ${config.monthEndDays})`;
}

/** Everything main() hands to the two kinds of run. */
interface Job {
  sql: Sql;
  config: Config;
  names: Names;
  log: Logger;
  env: EnvLookup;
  stdout: (text: string) => void;
  control: RunControl;
  clock: () => Date;
}

/** Picks the targets: the given ids, or the stale ones. */
async function selectTargets(
  job: Job,
  selection: Selection,
  counters: RunCounters,
): Promise<AsyncIterable<string[]>> {
  const { sql, config, names, log } = job;
  if (config.ids) {
    counters.total = Math.min(config.ids.length, config.limit ?? Infinity);
    return givenIdBatches(sql, names, config.ids, (unknown) => {
      counters.unknown += unknown.length;
      counters.total = Math.min(
        config.ids!.length - counters.unknown,
        config.limit ?? Infinity,
      );
      const shown = unknown.slice(0, 20).join(", ");
      log.warn(
        `${unknown.length} id(s) not in ${config.table}, not fetched: ${shown}${
          unknown.length > 20 ? ", …" : ""
        }`,
      );
    });
  }
  const stale = await countStale(sql, names, selection);
  counters.total = Math.min(stale, config.limit ?? Infinity);
  return staleBatches(sql, names, selection);
}

async function dryRun(job: Job): Promise<number> {
  const { sql, config, names, log, stdout } = job;
  const skip = outsideWindow(config, job.clock());
  if (skip) {
    log.info(`dry run: ${skip}; a real run would exit 0 at once`);
    return 0;
  }
  const hasState = await tableExists(sql, names.state);
  const selection: Selection = {
    cutoff: await readCutoff(sql, config.staleAfterMs),
    hasState,
  };
  const counters = newCounters();
  const batches = await selectTargets(job, selection, counters);
  const first: string[] = [];
  for await (const batch of batches) {
    first.push(...batch.slice(0, 10 - first.length));
    if (first.length >= 10 && !config.ids) break;
  }
  // (With --ids, selectTargets keeps the total net of unknown ids.)
  const n = counters.total;
  const pace = (await tableExists(sql, names.runs))
    ? await lastPace(sql, names)
    : undefined;
  const affordable = config.budget !== undefined
    ? Math.min(n, config.budget)
    : n;
  const credits = config.budget !== undefined
    ? `~${n} needed (one per target that succeeds); budget ${config.budget}${
      config.budget < n
        ? `: the run would stop after ~${config.budget} targets`
        : ": enough"
    }`
    : `~${n} needed (one per target that succeeds); no --budget`;
  const reserve = config.reserve !== undefined
    ? `; reserve ${config.reserve}: checked against ${config.creditsHeader} once the vendor answers`
    : "";
  const estimate = pace
    ? `~${formatDuration(affordable * pace.msPerTarget)} (at ${
      formatDuration(pace.msPerTarget)
    } per target, from run ${pace.runId})`
    : "unknown (no earlier run to learn the pace from)";
  const capped = affordable * (pace?.msPerTarget ?? 0) > config.timeBudgetMs
    ? `; more than --time-budget ${formatDuration(config.timeBudgetMs)}`
    : "";
  if (config.logFormat === "json") {
    stdout(JSON.stringify({
      time: new Date().toISOString(),
      level: "info",
      event: "dry_run",
      targets: n,
      unknownIds: counters.unknown,
      budget: config.budget ?? null,
      reserve: config.reserve ?? null,
      estimatedMs: pace ? Math.round(affordable * pace.msPerTarget) : null,
      firstIds: first,
    }));
  } else {
    stdout([
      "refresh: dry run: no vendor call, nothing written",
      `  targets: ${n} would be refreshed in ${config.table}${
        config.limit !== undefined ? ` (--limit ${config.limit})` : ""
      }${counters.unknown ? `; ${counters.unknown} unknown ids skipped` : ""}`,
      `  credits: ${credits}${reserve}`,
      `  estimated duration: ${estimate}${capped}`,
      `  first ids: ${first.length > 0 ? first.join(", ") : "(none)"}`,
    ].join("\n"));
  }
  return 0;
}

async function realRun(job: Job): Promise<number> {
  const { sql, config, names, log, control } = job;
  await ensureStateTables(sql, names);
  const startedAt = job.clock();
  const started = performance.now();
  const skip = outsideWindow(config, startedAt);
  if (skip) {
    const runId = await recordSkippedRun(
      sql,
      names,
      config,
      "outside_window",
      skip,
    );
    log.info(`run ${runId} outside_window: ${skip}; nothing to do today`);
    return 0;
  }
  const lease = await acquireLease(sql, names, config);
  if ("live" in lease) {
    log.error(
      `another run is live: run ${lease.live.id}, started ${lease.live.startedAt}, last heartbeat ${lease.live.heartbeatAt}; it is taken over as crashed once its heartbeat is older than its lease (--lease ${
        formatDuration(config.leaseMs)
      })`,
    );
    return 3;
  }
  const runId = lease.runId;
  if (lease.crashed.length > 0) {
    log.warn(
      `marked run(s) ${lease.crashed.join(", ")} crashed (heartbeat expired)`,
    );
  }
  const ctx: RunContext = {
    sql,
    config,
    names,
    runId,
    pacer: new Pacer({
      minIntervalMs: config.minIntervalMs,
      maxGapMs: config.maxRetryWaitMs,
    }),
    log,
    counters: newCounters(),
    stats: new LatencyStats(),
    control,
    consecutiveFailures: 0,
    annotations: 0,
    env: job.env,
    stdout: job.stdout,
  };
  keepLease(ctx);
  const deadlineAt = scheduleDeadline(ctx, startedAt);
  let status: RunStatus = "completed";
  let reason: string | null = null;
  try {
    const selection: Selection = {
      cutoff: await readCutoff(sql, config.staleAfterMs),
      hasState: true,
    };
    const batches = await selectTargets(job, selection, ctx.counters);
    await sql`update ${
      sql(names.runs)
    } set total = ${ctx.counters.total} where id = ${runId}`;
    log.info(
      `run ${runId}: ${ctx.counters.total} target(s) to refresh in ${config.table}; deadline ${
        new Date(startedAt.getTime() + deadlineAt - started).toISOString()
      }`,
      { event: "start", runId, total: ctx.counters.total },
    );
    const progress = () => {
      const now = performance.now();
      const line = progressLine(ctx, now - started, deadlineAt - now);
      log.info(line.text, line.fields);
    };
    control.every(config.progressIntervalMs, progress);
    try {
      await runTargets(ctx, batches);
    } finally {
      progress();
    }
  } catch (error) {
    if (!(error instanceof StopRun)) throw error;
    status = error.status;
    reason = error.message;
  }
  if (control.signal) status = "interrupted";
  if (status !== "completed") log.warn(`stopping: ${status}: ${reason}`);
  const report = reportOf(ctx, status, reason, performance.now() - started);
  await finishRun(sql, names, report);
  job.stdout(
    config.logFormat === "json" ? summaryJson(report) : summaryText(report),
  );
  await writeStepSummary(job.env, summaryMarkdown(report), log);
  if (status === "aborted" && job.env("GITHUB_ACTIONS") === "true") {
    job.stdout(
      `::error title=refresh run ${runId} aborted::${
        escapeAnnotation(reason ?? "")
      }`,
    );
  }
  return exitCodeFor(status, control.signal?.number);
}

/**
 * Every second: renews the heartbeat and writes the counters; stops the run
 * if the lease was taken over.
 */
function keepLease(ctx: RunContext): void {
  const every = Math.min(ctx.config.leaseMs / 3, HEARTBEAT_MS);
  let busy = false;
  ctx.control.every(every, async () => {
    if (busy) return;
    busy = true;
    try {
      const { sql, names, runId, counters } = ctx;
      if (
        !(await heartbeat(sql, names, runId, counters, ctx.creditsRemaining))
      ) {
        ctx.control.abort(
          new StopRun(
            "aborted",
            "lost the lease: another run marked this one crashed",
          ),
        );
      }
    } catch (error) {
      ctx.log.warn(`heartbeat failed: ${describeError(error)}`);
    } finally {
      busy = false;
    }
  });
}

/** How often the heartbeat and the progress counters are written. */
const HEARTBEAT_MS = 1000;

/**
 * Stops the run at the earlier of the time budget and the end of the
 * credit period.
 *
 * @returns The deadline on the `performance.now()` clock.
 */
function scheduleDeadline(ctx: RunContext, startedAt: Date): number {
  const { config } = ctx;
  const end = periodEnd(startedAt, config.timezone);
  const toPeriodEnd = end.getTime() - startedAt.getTime();
  const byBudget = config.timeBudgetMs <= toPeriodEnd;
  const ms = byBudget ? config.timeBudgetMs : toPeriodEnd;
  ctx.control.stopAfter(
    ms,
    byBudget
      ? new StopRun(
        "deadline",
        `reached the time budget of ${formatDuration(config.timeBudgetMs)}`,
      )
      : new StopRun(
        "period_end",
        `the credit period ended at ${end.toISOString()} (end of the month in ${config.timezone})`,
      ),
  );
  return performance.now() + ms;
}

async function finishRun(
  sql: Sql,
  names: Names,
  r: RunReport,
): Promise<void> {
  const aborted = r.status === "aborted";
  await sql`
    update ${sql(names.runs)} set
      status = ${r.status},
      finished_at = now(),
      heartbeat_at = now(),
      ${sql(counterColumns(r.counters, r.creditsRemaining))},
      mean_request_ms = ${r.meanRequestMs ?? null},
      p95_request_ms = ${r.p95RequestMs ?? null},
      reason = ${r.reason},
      error = ${aborted ? r.reason : null}
    where id = ${r.runId}`;
}

function describeError(error: unknown): string {
  if (error instanceof Error) {
    const code = (error as { code?: unknown }).code;
    return `${error.message}${typeof code === "string" ? ` (${code})` : ""}`;
  }
  return String(error);
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
  const log = createLogger(config.logFormat, stderr, () => secretsOf(config));
  if (config.idsFile !== undefined) {
    const ids = await readIdsFile(config.idsFile);
    if (!Array.isArray(ids)) {
      log.error(`--ids-file: ${ids.error}`);
      return 2;
    }
    config.ids = ids;
  }
  const control = new RunControl(config.graceMs, options.signal);
  if (!options.signal) control.listen();
  const names = namesFor(config);
  const sql = connect(config.database);
  const job: Job = {
    sql,
    config,
    names,
    log,
    env,
    stdout,
    control,
    clock: startClock(config.now),
  };
  try {
    log.info(
      `${
        config.dryRun ? "dry run: " : ""
      }database ${config.database.redacted}; vendor ${
        redactUrl(config.vendor.apiUrl)
      }`,
    );
    const problems = await inspectTarget(sql, config);
    if (problems.length > 0) {
      log.error("invalid target:");
      for (const problem of problems) log.error(`  ${problem}`);
      return 2;
    }
    return config.dryRun ? await dryRun(job) : await realRun(job);
  } catch (error) {
    const message = describeError(error);
    log.error(`aborted: ${message}`);
    if (env("GITHUB_ACTIONS") === "true") {
      stdout(
        `::error title=refresh aborted::${
          escapeAnnotation(scrubSecrets(message, secretsOf(config)))
        }`,
      );
    }
    return 1;
  } finally {
    control.dispose();
    await sql.end({ timeout: 5 });
  }
}

if (import.meta.main) Deno.exitCode = await main();
