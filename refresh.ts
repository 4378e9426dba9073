/**
 * refresh: spend the vendor credits you already paid for, one request at a
 * time.
 *
 * Selects the rows of a PostgreSQL table whose vendor data is stale (or
 * exactly the ids you give), asks the vendor's HTTP API about each of them,
 * strictly one request after the other, and writes each answer together
 * with its state record in one statement. Progress lives in two tables,
 * `refresh_runs` and `refresh_state`, so a run that crashed or was stopped
 * continues where it left off.
 *
 * ```sh
 * export DATABASE_URL='postgres://user:password@host:5432/db?sslmode=verify-full'
 * export REFRESH_API_URL='https://api.vendor.example/v1/people/{id}'
 * export REFRESH_API_KEY='...'
 * deno run --allow-net --allow-env=DATABASE_URL,REFRESH_*,PGAPPNAME,PGTARGETSESSIONATTRS,GITHUB_ACTIONS,GITHUB_STEP_SUMMARY,GITHUB_OUTPUT,OTEL_DENO refresh.ts --help
 * ```
 *
 * The file reads top down: the vendor section (the one part to adapt, with
 * the types and helpers it uses), the settings table, `main()`, the run
 * loop, the vendor requests, the database, output, and the leaf helpers.
 *
 * @module
 */

import { parseArgs } from "jsr:@std/cli@1.0.32/parse-args";
import { retry, RetryError } from "jsr:@std/async@1.5.0/retry";
import { delay } from "jsr:@std/async@1.5.0/delay";
import { abortable } from "jsr:@std/async@1.5.0/abortable";
import postgres from "npm:postgres@3.4.9";
import * as v from "npm:valibot@1.5.0";

// ============================================================================
// VENDOR SECTION: everything that is your vendor's own, and all it uses.
//
// The request for one target, the schema an answer must satisfy, the
// verdict on an answer (ok, not_found, or invalid: some vendors say "not
// found" in a 200 body), and the row written from it. The generic HTTP
// judgement is not here: retries and backoff, Retry-After and rate-limit
// headers, 401/403 (key refused), 402 and the credits header, budgets and
// billing stay in the core, driven by settings; the verdict gets the core's
// judgement of each answer as its argument.
// ============================================================================

/** One target as the vendor section sees it. */
interface Target {
  /** The id column's value, as text. */
  id: string;
  /** Each lookup column's value as text, or null (`id` is the id column). */
  values: Record<string, string | null>;
}

type TargetStatus = "ok" | "not_found" | "invalid" | "failed";

/** The settings the vendor section reads. */
type VendorSettings = { apiUrl: string; apiKey: string; apiKeyHeader: string };

/** A request for one target, as the vendor section builds it. */
interface VendorRequest {
  method: string;
  /** The URL, or why this target cannot be asked for (recorded invalid). */
  url: string | { invalid: string };
  headers: Record<string, string>;
  /** A body, e.g. `JSON.stringify({ email })` for a POST lookup. */
  body?: string;
}

/** One answer, as the vendor section's verdict sees it. */
interface Answer {
  status: number;
  headers: Headers;
  /** The body as text (of a 2xx at most --max-body, of others 64 KiB). */
  text: string;
  /** The body parsed as JSON, when it is JSON. */
  json?: unknown;
}

/** What an answer comes to. */
interface Verdict {
  /**
   * `ok` stores it; `not_found`, `invalid` and `failed` are recorded;
   * `retry` asks again; `credits_exhausted` and `key_refused` stop the run.
   */
  verdict: TargetStatus | "retry" | "credits_exhausted" | "key_refused";
  /** Why, for all but `ok`: what is recorded, or the stop's reason. */
  reason?: string;
  /** For `retry`: how long the vendor asked to wait, in milliseconds. */
  waitMs?: number;
  /** What the call cost; 0 for a free miss. */
  credits?: number;
}

/** The vendor's own part: {@linkcode VENDOR} below is yours to adapt. */
interface Vendor {
  /** Lookups the request needs: column names, `email?` for an optional one. */
  lookups(s: VendorSettings): string[];
  /** The request for one target. */
  request(target: Target, s: VendorSettings): VendorRequest;
  /** What an accepted answer looks like. */
  schema: v.GenericSchema;
  /** The verdict on every answer; `generic` is the core's, from the settings. */
  verdict(answer: Answer, generic: Verdict): Verdict;
  /** The JSON text to store for an ok answer, from the text received. */
  row(text: string, answer: unknown): string;
}

/**
 * The schema an answer must satisfy to be accepted. Validation decides
 * whether an answer is accepted, never what is stored: the vendor's original
 * text is stored. Use `v.looseObject`, which keeps the keys it doesn't name
 * (`v.object` strips them from its output and `v.strictObject` rejects
 * answers that have them), e.g.
 * `v.looseObject({ data: v.looseObject({ job_title: v.nullish(v.string()) }) })`.
 */
const AnswerSchema = v.pipe(
  v.unknown(),
  v.check(
    (answer) => !Array.isArray(answer),
    "expected a JSON object, found an array",
  ),
  v.looseObject({}),
);

/** The vendor: how to ask about one target and what to make of the answer. */
const VENDOR: Vendor = {
  /** Columns the request needs: the placeholders of REFRESH_API_URL. */
  lookups: (s) => placeholders(s.apiUrl),
  /** A GET of REFRESH_API_URL with each `{column}` filled in, key in a header. */
  request: (target, s) => ({
    method: "GET",
    url: fillUrl(s.apiUrl, target.values),
    headers: { accept: "application/json", ...keyHeader(s) },
  }),
  schema: AnswerSchema,
  /**
   * The verdict on every answer, whatever its status: `generic` is what the
   * settings make of it (2xx that passed the schema: ok; 404: not_found;
   * 401/403: key_refused; --credits-exhausted-statuses; 408/429/5xx: retry,
   * waiting as the rate-limit headers and Retry-After say; else failed),
   * with what it cost (--credits-spent-header, else --billable-statuses).
   */
  verdict: (_answer, generic) => generic,
  /** The JSON text stored in the data column and read by REFRESH_MAP. */
  row: (text) => text,
};

const PLACEHOLDER = /\{([A-Za-z_][A-Za-z0-9_$]{0,62})(\?)?\}/g;

/**
 * The lookups a URL template asks for, in order, each once: column names,
 * with a trailing `?` for an optional one (`{email?}`).
 */
function placeholders(template: string): string[] {
  const lookups = template.matchAll(PLACEHOLDER).map((m) => m[0].slice(1, -1));
  return [...new Set(lookups)];
}

/** The column of a lookup (`email?` → `email`). */
function lookupColumn(lookup: string): string {
  return lookup.replace(/\?$/, "");
}

/** Where the query of a URL template starts (its `?`, outside any `{…}`). */
function queryStart(template: string): number {
  const at = template.replace(PLACEHOLDER, (m) => "x".repeat(m.length))
    .indexOf("?");
  return at < 0 ? template.length : at;
}

/**
 * Fills a URL template with one target's values, each URL-encoded. A value
 * that cannot be placed without changing the request elsewhere (empty, `.`
 * or `..` as a whole path segment, which URL parsers normalise away, or
 * not valid Unicode) is refused.
 */
export function fillUrl(
  template: string,
  values: Record<string, string | null>,
): string | { invalid: string } {
  const refused = (names: string, value: string, where: string) =>
    `${names} ${JSON.stringify(value)} cannot be placed in the ${where}`;
  let invalid: string | undefined;
  // An optional placeholder without a value takes its name= along.
  const query = queryStart(template);
  if (query < template.length) {
    const kept = template.slice(query + 1).split("&").filter((pair) =>
      pair.matchAll(PLACEHOLDER).every((m) => !m[2] || values[m[1]!])
    );
    template = template.slice(0, query) +
      (kept.length > 0 ? `?${kept.join("&")}` : "");
  }
  const url = template.replace(
    PLACEHOLDER,
    (_, name: string, _optional, offset: number) => {
      const value = values[name] ?? "";
      // encodeURIComponent throws on a lone surrogate.
      if (value !== "" && value.isWellFormed()) {
        return encodeURIComponent(value);
      }
      const where = /[?#]/.test(template.slice(0, offset)) ? "URL" : "URL path";
      invalid ??= refused(name, value, where);
      return "";
    },
  );
  // A whole path segment of . or .. is normalised away by URL parsers:
  // the request would reach another path of the vendor.
  const filled = url.split(/[?#]/)[0]!.split("/");
  const segments = template.split(/[?#]/)[0]!.split("/");
  const dots = segments.findIndex((segment, i) =>
    segment.includes("{") && /^(\.|%2e){1,2}$/i.test(filled[i]!)
  );
  if (!invalid && dots >= 0) {
    const names = placeholders(segments[dots]!).join(", ");
    invalid = refused(names, decodeURIComponent(filled[dots]!), "URL path");
  }
  return invalid ? { invalid } : url;
}

/** The header carrying the key: `Authorization: Bearer <key>`, or the bare key. */
export function keyHeader(s: VendorSettings): Record<string, string> {
  return s.apiKeyHeader.toLowerCase() === "authorization"
    ? { authorization: `Bearer ${s.apiKey}` }
    : { [s.apiKeyHeader]: s.apiKey };
}

// ============================================================================
// SETTINGS: every setting once. Parsing, the Config type, --help, the stored
// run parameters, the README table test and the workflow wiring test all
// derive from this table.
// ============================================================================

/** Reads a setting's text; the `arg` of its metadata is its placeholder. */
type Parser = v.GenericSchema<string, unknown>;

/** A setting as written in {@linkcode ROWS}. */
interface Row {
  parse: Parser;
  /** The default, as it would be written. */
  default?: string;
  help: string;
  /** Its variable, when not REFRESH_ and the key in snake case. */
  env?: string;
  /** Read from the environment only: it has no flag, and is never shown. */
  secret?: true;
  required?: true;
}

/** What a setting's key and parser imply: its variable, flag and placeholder. */
type Implied = { env: string; flag?: string; arg: string };

type Setting = Row & Implied;

/** What sets apart the few settings that have no default. */
type Extra = Pick<Row, "env" | "secret" | "required">;

type NoExtra = Record<never, never>;

/** A row: read by `parse`, with its default or its {@linkcode Extra}; then its help. */
function s<P extends Parser, const E extends string | Extra = NoExtra>(
  parse: P,
  extra?: E,
) {
  const more: object = typeof extra === "string"
    ? { default: extra }
    : { ...extra };
  return (help: string) =>
    ({ ...more, help, parse }) as
      & { parse: P; help: string }
      & (E extends string ? { default: E } : E);
}

/** What `read` makes of the text, shown as `arg`; an `{ error }` refuses it. */
const fallible = <T>(
  arg: string,
  read: (raw: string) => T | { error: string },
) =>
  v.pipe(
    v.string(),
    // unknown, or the guard's output would be T | (T & { error: string })
    v.transform((raw): unknown => read(raw)),
    v.guard(
      (out): out is T =>
        typeof out !== "object" || out === null || !("error" in out),
      (issue) => (issue.input as { error: string }).error,
    ),
    v.metadata({ arg }),
  );

/** Like {@linkcode fallible}, refusing `undefined` as not `what` (quoted unless secret). */
const reading = <T>(
  arg: string,
  what: string,
  read: (raw: string) => T | undefined,
  secret = false,
) =>
  fallible<T>(arg, (raw) => {
    const out = read(raw);
    if (out !== undefined) return out;
    const found = secret
      ? "something else (value not shown)"
      : JSON.stringify(raw);
    return { error: `expected ${what}, found ${found}` };
  });

/** The text itself, shown as `arg`, when `ok` holds; else refused as not `what`. */
const text = (arg: string, what: string, ok: (raw: string) => boolean) =>
  reading(arg, what, (raw) => ok(raw) ? raw : undefined);

/** The longest a timer can wait (setTimeout holds 2^31-1 ms, ~24.8 days). */
const MAX_TIMER_MS = 2 ** 31 - 1;

const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_$]{0,62}$/;

const isName = (raw: string) => IDENTIFIER.test(raw);

/** Milliseconds, at least `min`; `timer` ones must fit in a timer. */
function duration({ min = 0, timer = true } = {}) {
  const least = min >= 1000
    ? `, at least ${formatDuration(min)}`
    : min > 0
    ? ", above 0"
    : "";
  const most = timer ? ", at most 24d" : "";
  return reading(
    "DURATION",
    `a duration like 500ms, 30s, 5m, 2h, 25d or 5h30m${least}${most}`,
    (raw) => {
      const ms = parseDuration(raw) ?? -1;
      return ms >= min && (!timer || ms <= MAX_TIMER_MS) ? ms : undefined;
    },
  );
}

const positive = reading("N", "a positive whole number", positiveInt);

const columnName = text("NAME", "a column name", isName);

const headerName = text(
  "NAME",
  "an HTTP header name",
  (raw) => /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(raw),
);

const boolean = reading("", "true or false", (raw) => {
  const text = raw.trim().toLowerCase();
  if (["true", "1", "yes", "on"].includes(text)) return true;
  if (["false", "0", "no", "off"].includes(text)) return false;
  return undefined;
});

/** Distinct HTTP statuses, in a list like `like`. */
const statuses = (like: string) =>
  reading(
    "LIST",
    `a comma-separated list of HTTP statuses like ${like}`,
    (raw) => {
      const list = raw.split(",").map((s) => s.trim());
      return list.every((s) => /^[1-5]\d\d$/.test(s))
        ? [...new Set(list.map(Number))]
        : undefined;
    },
  );

const apiKey = reading(
  "KEY",
  "a key of printable ASCII characters, as a header can carry it",
  (raw) =>
    /^[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?$/.test(raw) ? raw : undefined,
  true,
);

const tableName = text(
  "NAME",
  "a table name like people or crm.people",
  (raw) => raw.split(".").length <= 2 && raw.split(".").every(isName),
);

const dataColumn = reading(
  "NAME",
  "a column name, or none",
  (raw) => raw === "none" ? null : isName(raw) ? raw : undefined,
);

/** `column=path,...` (or `column?=path`) into a map from column to path. */
const columnMap = fallible("COL=PATH,...", (raw) => {
  const map = new Map<string, Mapped>();
  for (const pair of raw.split(",")) {
    const [left = "", path, ...rest] = pair.split("=").map((s) => s.trim());
    const keep = left.endsWith("?");
    const column = keep ? left.slice(0, -1).trim() : left;
    const segments = path?.split(".") ?? [""];
    if (!isName(column) || rest.length > 0 || segments.includes("")) {
      return {
        error: `expected column=path pairs like title=data.job_title, found ${
          JSON.stringify(pair)
        }`,
      };
    }
    if (map.has(column)) return { error: `column ${column} is mapped twice` };
    map.set(column, { path: segments, keep });
  }
  return map;
});

const condition = reading(
  "SQL",
  "an SQL condition",
  (raw) => raw.trim() || undefined,
);

const ids = reading(
  "ID,ID,...",
  "a comma-separated list of ids",
  (raw) => idList(raw, ","),
);

const filePath = text("PATH", "a file path or -", (raw) => raw.trim() !== "");

/** `100/min` (or `4/2s`) into a count per window. */
const rate = reading(
  "N/UNIT",
  "a rate like 100/min, 5/s, 10000/day or 4/2s",
  (raw) => {
    const [n, per = ""] = raw.toLowerCase().split("/").map((s) => s.trim());
    const count = positiveInt(n ?? "");
    const windowMs = WINDOWS[per] ?? parseDuration(per);
    return count && windowMs ? { count, windowMs } : undefined;
  },
);

const bytes = reading(
  "BYTES",
  "a size in bytes like 1048576, 512KiB or 1MiB, above 0",
  (raw) => parseBytes(raw) || undefined,
);

const whole = reading(
  "N",
  "a whole number",
  (raw) => /^\d+$/.test(raw.trim()) ? Number(raw) : undefined,
);

const timeZone = reading(
  "TZ",
  "an IANA time zone like UTC or Europe/Berlin",
  (raw) => {
    try {
      return new Intl.DateTimeFormat("en-US", { timeZone: raw })
        .resolvedOptions().timeZone;
    } catch {
      return undefined;
    }
  },
);

const monthDays = reading("N", "a whole number of days from 1 to 31", (raw) => {
  const days = positiveInt(raw);
  return days !== undefined && days <= 31 ? days : undefined;
});

const logFormat = reading(
  "FORMAT",
  "text or json",
  (raw) => (["text", "json"] as const).find((format) => format === raw),
);

/** An ISO 8601 instant with a zone; impossible dates (Feb 30) are refused. */
const instant = reading(
  "TIME",
  "an ISO 8601 time with a zone, like 2026-11-28T06:00:00Z",
  (raw) => {
    const m =
      /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$/
        .exec(raw);
    if (!m) return undefined;
    const [, year, month, day, hour, minute] = m.map(Number) as number[];
    const calendar = new Date(Date.UTC(year!, month! - 1, day!));
    const date = new Date(raw);
    return calendar.getUTCMonth() === month! - 1 && hour! < 24 &&
        minute! < 60 && !Number.isNaN(date.getTime())
      ? date
      : undefined;
  },
);

/** Every setting as written, in the order of `--help` and the README table. */
const ROWS = {
  databaseUrl: s(fallible("URL", parseDatabaseUrl), {
    env: "DATABASE_URL",
    secret: true,
    required: true,
  })(
    "PostgreSQL URL, postgres://user:password@host:port/db (percent-encode special characters); sslmode, application_name, target_session_attrs and options are honoured. Secret.",
  ),
  apiUrl: s(fallible("URL", parseApiUrl), { required: true })(
    "Vendor URL template: {id} is the id column, {column} any column of the table (e.g. ?email={email}), each URL-encoded; {column?} in the query is left out, with its name=, when the column is null or empty.",
  ),
  apiKey: s(apiKey, { secret: true, required: true })(
    "Vendor API key, sent in a header only. Secret.",
  ),
  apiKeyHeader: s(headerName, "Authorization")(
    "Header for the key: Authorization sends 'Bearer <key>', any other name (X-Api-Key) the bare key.",
  ),
  table: s(tableName, "people")(
    "Target table, optionally schema-qualified (crm.people).",
  ),
  idColumn: s(columnName, "id")(
    "Primary key column: {id} in the URL, the key of refresh_state.",
  ),
  dataColumn: s(dataColumn, "vendor_data")(
    "jsonb/json column receiving the vendor's answer as sent; none stores only --map columns.",
  ),
  atColumn: s(columnName, "vendor_refreshed_at")(
    "timestamptz column set to now() on each refresh.",
  ),
  map: s(columnMap)(
    "Answer fields into columns, e.g. title=data.job_title,email=data.emails.0.address (missing: null); col?=path keeps the column's value when the answer has none.",
  ),
  where: s(condition)(
    "Your own SQL condition on the target table that narrows the selection, e.g. deleted_at is null.",
  ),
  stateSchema: s(text("NAME", "a schema name", isName))(
    "Schema of refresh_runs and refresh_state (created if missing); default: the first schema on the search_path.",
  ),
  limit: s(positive)("Process at most N targets this run."),
  ids: s(ids)(
    "Refresh exactly these ids, fresh or not; ids not in the table are reported, not fetched.",
  ),
  idsFile: s(filePath)("Like --ids, one id per line; - reads standard input."),
  staleAfter: s(duration({ timer: false }), "25d")(
    "Refresh targets last refreshed longer ago than this (never refreshed first).",
  ),
  retryMisses: s(boolean, "false")(
    "Ask again for targets recorded not_found or invalid within --stale-after (skipped otherwise).",
  ),
  minInterval: s(duration(), "0")(
    "Least time between the starts of two vendor requests.",
  ),
  rate: s(rate)(
    "The vendor's published rate limit, e.g. 100/min, 5/s, 10000/day or 4/2s: requests are spaced evenly within it.",
  ),
  requestTimeout: s(duration({ min: 1 }), "30s")(
    "Give up on one request (headers and body) after this long.",
  ),
  maxAttempts: s(positive, "5")(
    "Requests per target at most, the first one included; answers that say when to come back (Retry-After, a rate-limit reset) do not count.",
  ),
  backoff: s(duration({ min: 1 }), "1s")(
    "First retry backoff; doubles per attempt, full jitter, capped by --max-retry-wait.",
  ),
  maxRetryWait: s(duration({ min: 1 }), "5m")(
    "Cap on any single wait; a longer Retry-After or rate-limit reset stops the run as rate_limited.",
  ),
  ignoreNotBefore: s(boolean, "false")(
    "Forget the time an earlier run was told not to call before (refresh_runs.not_before) and call now.",
  ),
  maxBody: s(bytes, "1MiB")(
    "Largest answer accepted, counted after decompression (512KiB, 1MiB); larger ones are recorded invalid.",
  ),
  budget: s(positive)(
    "Spend at most N credits (billable answers) this run; never N+1.",
  ),
  billableStatuses: s(statuses("200,404"), "200")(
    "HTTP statuses the vendor charges for, e.g. 200,404 (when no --credits-spent-header says what a call cost).",
  ),
  creditsExhaustedStatuses: s(statuses("402"), "402")(
    "HTTP statuses meaning the credits are used up: the run stops as credits_exhausted.",
  ),
  creditsHeader: s(headerName)(
    "Response header carrying the vendor's remaining credits, e.g. X-Credits-Remaining.",
  ),
  creditsSpentHeader: s(headerName)(
    "Response header stating what each call cost, e.g. x-call-credits-spent: counted exactly for --budget and the summary.",
  ),
  reserve: s(whole)(
    "Stop once the vendor reports N or fewer credits left (needs --credits-header).",
  ),
  timeBudget: s(duration({ min: 1 }), "5h30m")(
    "No new target starts after this long; the run ends as deadline.",
  ),
  timezone: s(timeZone, "UTC")(
    "Time zone of the credit period: the run never continues past the end of the month there.",
  ),
  monthEndDays: s(monthDays)(
    "Run only in the last N days of the month; otherwise exit 0 at once (for schedules).",
  ),
  maxConsecutiveFailures: s(positive, "10")(
    "Abort the run after N targets in a row ended failed.",
  ),
  maxConsecutiveInvalid: s(positive, "10")(
    "Abort the run after N answers in a row failed the vendor checks, or N rows in a row the database refused.",
  ),
  lease: s(duration({ min: 3000 }), "2m")(
    "A live run renews its heartbeat every second; a run silent for longer than this is taken over as crashed.",
  ),
  grace: s(duration(), "5s")(
    "On SIGINT/SIGTERM/SIGHUP or the deadline, how long the request in flight and the write in hand may still take.",
  ),
  dbRetry: s(duration({ min: 1 }), "1m")(
    "How long a lost or blocked database is retried (the answer in hand is kept) before the run aborts; below --lease.",
  ),
  connectTimeout: s(duration({ min: 1 }), "30s")(
    "Give up connecting to the database after this long in all.",
  ),
  progressInterval: s(duration({ min: 1 }), "15s")(
    "How often a progress line is printed.",
  ),
  logFormat: s(logFormat, "text")(
    "text, or json for one JSON object per line (same facts).",
  ),
  dryRun: s(boolean, "false")(
    "Show what a run would do: no vendor call, no write to any table.",
  ),
  now: s(instant)(
    "Act as if the run started at this ISO 8601 time (to try the month-end window and period end).",
  ),
};

/** {@linkcode ROWS}, each with its variable, flag and placeholder added. */
export const SETTINGS = Object.fromEntries(
  Object.entries(ROWS).map(([key, row]: [string, Row]) => {
    const env = row.env ??
      `REFRESH_${key.replace(/[A-Z]/g, "_$&").toUpperCase()}`;
    const flag = row.secret
      ? undefined
      : env.replace(/^REFRESH_/, "").toLowerCase().replaceAll("_", "-");
    const arg = String(v.getMetadata(row.parse).arg);
    return [key, { ...row, env, arg, flag }];
  }),
) as { [K in keyof typeof ROWS]: (typeof ROWS)[K] & Implied };

export type Name = keyof typeof SETTINGS;

/**
 * The validated settings of one run, durations in milliseconds; `undefined`
 * where a setting has neither a default nor `required`.
 */
export type Config = {
  -readonly [K in Name]:
    | v.InferOutput<(typeof SETTINGS)[K]["parse"]>
    | ((typeof SETTINGS)[K] extends { default: string } | { required: true }
      ? never
      : undefined);
};

/** Something of each setting given (its text, or where it came from). */
type Given = Partial<Record<Name, string>>;

export type ConfigResult =
  | {
    ok: true;
    config: Config;
    help: boolean;
    /** Where each setting given came from: its flag or variable. */
    given: Given;
    /** The text of each setting given. */
    raw: Given;
  }
  | { ok: false; errors: string[] };

/** Where a setting's value came from: its flag, else its variable. */
function sourceOf(name: Name, given: Given): string {
  const { env, flag } = SETTINGS[name];
  return given[name] ?? (flag ? `${env} (or --${flag})` : env);
}

/**
 * Reads every setting from flags and environment (a flag wins), validating all
 * at once: every problem reported by its flag or variable; no secret quoted.
 */
export function parseConfig(
  args: string[],
  env: (name: string) => string | undefined,
): ConfigResult {
  const errors: string[] = [];
  const all = Object.entries(SETTINGS) as [Name, Setting][];
  const flags = all.flatMap(([, s]) => s.flag ? [s.flag] : []);
  const switches = all.flatMap(([, s]) => s.flag && !s.arg ? [s.flag] : []);
  const parsed = parseArgs(joinDashValues(args, flags), {
    string: flags.filter((f) => !switches.includes(f)),
    boolean: ["help", ...switches],
    collect: flags,
    alias: { h: "help" },
    unknown: (arg) => {
      errors.push(
        arg.startsWith("-")
          ? `${arg.split("=")[0]}: unknown flag (see --help)`
          : `${JSON.stringify(arg)}: unexpected argument (see --help)`,
      );
      return false;
    },
  }) as Record<string, unknown>;
  const raw: Given = {};
  const given: Given = {};
  for (const [name, s] of all) {
    const values = (s.flag ? parsed[s.flag] : []) as unknown[];
    const byFlag = values.length === 1;
    if (values.length > 1) errors.push(`--${s.flag}: given more than once`);
    else if (byFlag || env(s.env)) {
      raw[name] = byFlag ? String(values[0]) : env(s.env)!;
      given[name] = byFlag ? `--${s.flag}` : s.env;
    }
  }
  const help = parsed.help === true;
  const config: Partial<Record<Name, unknown>> = {};
  // --help validates no value: it is how to learn what the values should be
  for (const [name, s] of help ? [] : all) {
    const text = raw[name] ?? s.default;
    if (text === undefined && !s.required) continue;
    const result = text === undefined ? undefined : v.safeParse(s.parse, text);
    if (result?.success) config[name] = result.output;
    else {
      const what = s.help.split(/[,.;:(]/)[0]!.trim();
      const problem = result?.issues[0].message ?? `is required (${what})`;
      errors.push(`${sourceOf(name, given)}: ${problem}`);
    }
  }
  if (!help) errors.push(...crossCheck(config as Partial<Config>, given));
  return errors.length > 0
    ? { ok: false, errors }
    : { ok: true, config: config as Config, help, given, raw };
}

/** The earliest time PostgreSQL can hold: 4713-11-24 BC. */
const PG_EARLIEST_MS = Date.UTC(-4712, 10, 25);

/** Rules between settings, each naming the setting to change. */
function crossCheck(c: Partial<Config>, given: Given): string[] {
  const at = (name: Name) => sourceOf(name, given);
  const d = formatDuration;
  /** `name`'s duration `ms` is not `what` (`limit`). */
  const beyond = (name: Name, ms: number, what: string, limit: number) =>
    `${at(name)}: expected ${what} (${d(limit)}), found ${d(ms)}`;
  const { staleAfter = 0, backoff = 0, maxRetryWait = Infinity } = c;
  const { requestTimeout = 0, grace = 0, lease = Infinity, dbRetry = 0 } = c;
  const least = requestTimeout + grace + HEARTBEAT_MS;
  const oldest = Date.now() - PG_EARLIEST_MS;
  const taken = [c.idColumn, c.atColumn, c.dataColumn];
  const mapped = [...c.map?.keys() ?? []];
  const mapAt = at("map");
  return [
    staleAfter > oldest &&
    `${at("staleAfter")}: expected at most ${
      d(oldest)
    } (PostgreSQL holds no earlier time than 4713 BC), found ${d(staleAfter)}`,
    given.ids && given.idsFile &&
    `${at("ids")} and ${at("idsFile")}: give the ids one way, not both`,
    given.reserve && !given.creditsHeader &&
    `${at("reserve")}: needs ${
      at("creditsHeader")
    } to read the remaining credits from`,
    backoff > maxRetryWait &&
    beyond("backoff", backoff, "at most the max retry wait", maxRetryWait),
    lease <= least &&
    beyond("lease", lease, "more than request timeout + grace + 1s", least),
    dbRetry >= lease &&
    beyond("dbRetry", dbRetry, "less than the lease", lease),
    c.dataColumn === null && !given.map &&
    `${at("dataColumn")}: none needs ${mapAt}: there would be nothing to store`,
    ...mapped.filter((col) => taken.includes(col)).map((col) =>
      `${mapAt}: column ${col} is already the id, data or refreshed-at column`
    ),
    c.apiUrl && VENDOR.lookups(c as VendorSettings).length === 0 &&
    `${at("apiUrl")}: expected a placeholder such as {id} or {email}`,
  ].filter((e): e is string => typeof e === "string");
}

/** parseArgs takes a lone `-` for a flag: `--ids-file -` (stdin) gets a `=`. */
function joinDashValues(args: string[], flags: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (args[i + 1] === "-" && flags.includes(arg.replace(/^--/, ""))) {
      out.push(`${arg}=-`);
      i++;
    } else out.push(arg);
  }
  return out;
}

function positiveInt(raw: string): number | undefined {
  const n = Number(raw.trim());
  return /^\d+$/.test(raw.trim()) && n >= 1 && Number.isSafeInteger(n)
    ? n
    : undefined;
}

/** A window's length by its name, as rates and rate-limit headers spell it. */
const WINDOWS: Record<string, number> = Object.fromEntries(
  ([
    [1_000, "s sec second"],
    [60_000, "m min minute"],
    [3_600_000, "h hour hourly"],
    [86_400_000, "d day daily 24-hour"],
  ] as const).flatMap(([ms, names]) => names.split(" ").map((n) => [n, ms])),
);

function idList(
  text: string,
  separator: string | RegExp,
): string[] | undefined {
  const ids = new Set<string>();
  for (const part of text.split(separator)) {
    if (part.trim() !== "") ids.add(part.trim());
  }
  return ids.size > 0 ? [...ids] : undefined;
}

/** One column of `--map`: its path in the answer. */
interface Mapped {
  path: string[];
  /** `col?=path`: the column keeps its value when the answer has none. */
  keep: boolean;
}

/** The text of `--help`, made from {@linkcode SETTINGS}. */
export function usage(): string {
  return [
    "Usage: refresh.ts [flags]   (deno task refresh [flags])",
    "",
    "Refreshes stale rows with a data vendor's API, one request at a time.",
    "Every setting is an environment variable; its flag, when given, wins.",
    "",
    ...(Object.values(SETTINGS) as Setting[]).flatMap((s) => [
      `  ${flagText(s).padEnd(34)} ${s.env}`,
      `      ${s.help}${
        s.default !== undefined ? ` [default: ${s.default}]` : ""
      }`,
    ]),
    `  ${"--help, -h".padEnd(34)} Show this text.`,
    "",
    "Durations: ms, s, m, h, d and combinations (5h30m).",
    "Exit codes:",
    "  0      completed, dry run, or an expected stop: budget_exhausted,",
    "         credits_exhausted, rate_limited, deadline, period_end,",
    "         outside_window (run again later; progress is saved)",
    "  1      aborted: the key was refused (401/403), too many failures or",
    "         invalid answers in a row, the database lost for longer than",
    "         --db-retry, or an unexpected error",
    "  2      configuration or input error; nothing was touched",
    "  3      another run is live (its id, start and heartbeat are printed)",
    "  128+n  stopped by signal n (129 SIGHUP, 130 SIGINT, 143 SIGTERM)",
  ].join("\n");
}

/** How a setting is given on the command line: `--flag ARG`, or env only. */
export function flagText(s: { flag?: string; arg: string }): string {
  return s.flag ? `--${s.flag}${s.arg ? ` ${s.arg}` : ""}` : "(env only)";
}

// ============================================================================
// MAIN: settings, connections, the target's checks, then a dry or a real run.
// ============================================================================

/** Options of {@linkcode main}, for tests and embedding. */
interface MainOptions {
  /** Command-line arguments; `Deno.args` by default. */
  args?: string[];
  /** Environment lookup; `Deno.env.get` by default. */
  env?: (name: string) => string | undefined;
  /** Receives log lines (stderr by default). */
  stderr?: (line: string) => void;
  /** Receives the summary and help (stdout by default). */
  stdout?: (line: string) => void;
  /** Stops the run like SIGINT; no process signal handler is installed then. */
  signal?: AbortSignal;
}

/** Runs the refresh job, one target at a time; returns the exit code. */
export async function main(options: MainOptions = {}): Promise<number> {
  const stderr: (line: string, level?: Level) => void = options.stderr ??
    toStderr;
  const stdout = options.stdout ?? ((line: string) => console.log(line));
  const env = options.env ?? ((name: string) => Deno.env.get(name));
  const parsed = parseConfig(options.args ?? Deno.args, env);
  if (!parsed.ok) {
    stderr("refresh: invalid configuration:");
    for (const error of parsed.errors) stderr(`  ${escapeControls(error)}`);
    stderr("Run with --help for every setting.");
    return await tellWorkflow(
      invalid(parsed.errors),
      env,
      (lines) => lines.forEach(stdout),
      createLogger("text", stderr, escapeControls),
    );
  }
  if (parsed.help) {
    stdout(usage());
    return 0;
  }
  const { config } = parsed;
  const secrets = [config.apiKey, config.databaseUrl.password];
  const shownApiUrl = scrubSecrets(redactUrl(config.apiUrl), secrets);
  const keep = [config.databaseUrl.redacted, shownApiUrl];
  const scrub = (text: string) => scrubSecrets(text, secrets, keep);
  const clean = (text: string) => escapeControls(scrub(text));
  // Text from outside: also runs down to half of a short secret.
  const strict = (text: string) =>
    clean(scrubSecrets(text, secrets, keep, MIN_SCRUBBED_LENGTH));
  const log = createLogger(config.logFormat, stderr, clean);
  const print = (lines: string[]) =>
    lines.forEach((line) => stdout(clean(line)));
  const end = (ending: Ending) => tellWorkflow(ending, env, print, log, scrub);
  /** Logs one configuration problem and ends with it (exit 2). */
  const refuse = (problem: string) => {
    log.error(problem);
    return end(invalid([problem]));
  };
  const idsSource = sourceOf(config.idsFile ? "idsFile" : "ids", parsed.given);
  let ids = config.ids;
  if (config.idsFile) {
    try {
      const text = config.idsFile === "-"
        ? await new Response(Deno.stdin.readable).text()
        : await Deno.readTextFile(config.idsFile);
      ids = idList(text, /\r?\n/);
      if (!ids) throw new Error("no ids in it");
    } catch (error) {
      const problem = `${idsSource}: cannot read ${
        JSON.stringify(config.idsFile)
      }: ${(error as Error).message}${
        error instanceof Deno.errors.NotCapable
          ? " (deno task refresh:ids may read it)"
          : ""
      }`;
      return await refuse(problem);
    }
  }
  const nul = ids?.find((id) => id.includes("\0"));
  if (nul !== undefined) {
    const problem = `${idsSource}: the id ${
      JSON.stringify(nul)
    } contains a NUL byte, which PostgreSQL cannot take`;
    return await refuse(problem);
  }
  const control = new Control(config.grace, options.signal);
  if (!options.signal) control.listen();
  const abort = control.stop.signal;
  const open: Db[] = [];
  globalThis.addEventListener("error", closedSocketWrite);
  try {
    log.info(
      `${
        config.dryRun ? "dry run: " : ""
      }database ${config.databaseUrl.redacted}; vendor ${shownApiUrl}`,
    );
    warnOfFetchSpans(config, shownApiUrl, env, log);
    const selectDb = await connect(
      config.databaseUrl,
      LONG,
      config.connectTimeout,
      abort,
    );
    if (!(selectDb instanceof Db)) return await end(failed(selectDb, log));
    open.push(selectDb);
    if (selectDb.pooled) {
      log.info(
        "the server refused start-up parameters, as PgBouncer does: the timeouts are set in each statement's transaction, and no statement is prepared",
      );
    }
    selectDb.readOnly = config.dryRun;
    const [{ version }] = await selectDb.run(
      (sql) => sql<[{ version: string }]>`select version()`,
      abort,
    );
    const all = VENDOR.lookups(config);
    const lookups = all.filter((lookup) => lookupColumn(lookup) !== "id");
    const info = await inspectTarget(
      selectDb,
      config,
      lookups.map(lookupColumn),
      abort,
    );
    if (Array.isArray(info)) {
      log.error("invalid target:");
      for (const problem of info) log.error(`  ${problem}`);
      return await end(invalid(info));
    }
    const names = stateNames(config.stateSchema);
    const { table, idColumn, atColumn, where, retryMisses } = config;
    const selection = {
      table,
      canonical: info.canonical,
      idColumn,
      atColumn,
      idType: info.idType,
      lookups,
      needs: [
        ...lookupNeeds(all),
        // Longer ids cannot be a key of refresh_state's index.
        {
          name: `an id of at most ${MAX_ID_BYTES} bytes`,
          sql: `octet_length(t.${quoted(idColumn)}::text) <= ${MAX_ID_BYTES}`,
        },
      ],
      where,
      state: names,
      retryMisses,
    };
    const resolved = ids && await resolveIds(selectDb, selection, ids, abort);
    if (resolved && "bad" in resolved) {
      const problem =
        `${idsSource}: expected ids of the id column's type (${info.idType}), found ${
          resolved.bad.slice(0, 5).map((id) => JSON.stringify(id)).join(", ")
        }${resolved.bad.length > 5 ? ", …" : ""}`;
      return await refuse(problem);
    }
    const unknown = resolved?.unknown ?? [];
    if (unknown.length > 0) {
      log.warn(
        `${unknown.length} id(s) not in ${table}${
          where ? ` (or excluded by ${SETTINGS.where.env})` : ""
        }, not fetched: ${unknown.slice(0, 20).join(", ")}${
          unknown.length > 20 ? ", …" : ""
        }`,
      );
    }
    const job: Job = {
      config,
      selectDb,
      pglite: /PGlite/.test(version),
      names,
      info,
      selection,
      givenIds: resolved,

      log,
      print,
      env,
      control,
      clock: startClock(config.now),
      params: publicParams(
        config,
        parsed.raw,
        (text) => scrubSecrets(text, secrets, [config.databaseUrl.redacted]),
      ),
      clean,
      strict,
      open,
    };
    return await end(config.dryRun ? await dryRun(job) : await realRun(job));
  } catch (error) {
    if (isStop(error)) {
      log.warn(`stopped before the run began: ${error.reason}`);
      return await end({
        code: exitCodeFor("interrupted", control.signal?.number),
        status: "interrupted",
      });
    }
    const message = describeError(error);
    log.error(`aborted: ${message}`);
    return await end({
      code: 1,
      status: "aborted",
      annotation: { level: "error", title: "refresh aborted", message },
    });
  } finally {
    control.dispose();
    await Promise.all(open.map((db) => db.end()));
    globalThis.removeEventListener("error", closedSocketWrite);
  }
}

/**
 * postgres.js 3.4.9 may write, from a timer, to a socket it has just closed
 * (porsager/postgres#1208): the TypeError would end the process, although
 * the connection's statements are rejected already (or end by their guard).
 */
function closedSocketWrite(event: ErrorEvent): void {
  const error = event.error as Error | undefined;
  if (
    error instanceof TypeError && /reading 'write'/.test(error.message) &&
    /nextWrite[\s\S]*postgres|postgres[\s\S]*nextWrite/.test(error.stack ?? "")
  ) event.preventDefault();
}

// Exit at once: a connection that never answered may still hold timers.

/**
 * `refresh_runs.params`: each setting that is not secret, as given (or its
 * default), with no secret in any form (the API URL may carry the key).
 */
function publicParams(
  { databaseUrl, apiUrl }: Config,
  raw: Partial<Record<Name, string>>,
  clean: (text: string) => string,
): Record<string, unknown> {
  const params: Record<string, unknown> = { database: databaseUrl.redacted };
  for (const [name, setting] of Object.entries(SETTINGS) as [Name, Setting][]) {
    const text = name === "apiUrl"
      ? redactUrl(apiUrl)
      : raw[name] ?? setting.default;
    if (!setting.flag || text === undefined) continue;
    params[name] = clean(
      text.length > 200
        ? `${text.slice(0, 200)}… (${text.length} characters)`
        : text,
    );
  }
  return params;
}

/** What main() hands to a dry or a real run. */
interface Job {
  config: Config;
  /** Long timeouts: the checks, the migration and the selection of targets. */
  selectDb: Db;
  pglite: boolean;
  names: StateNames;
  info: TargetInfo;
  /** The selection but for what depends on the moment (see targetsOf). */
  selection: Omit<Selection, "cutoff" | "hasState" | "keyed">;
  givenIds: GivenIds | undefined;
  log: Logger;
  /** Writes lines to stdout, one per element, each scrubbed and escaped. */
  print: (lines: string[]) => void;
  env: (name: string) => string | undefined;
  control: Control;
  clock: () => Date;
  params: Record<string, unknown>;
  clean: (text: string) => string;
  /** `clean`, and also runs down to half of a short secret: for text from outside. */
  strict: (text: string) => string;
  /** Connections to end when main() returns. */
  open: Db[];
}

/** The wall clock of a run: real time, or `--now` advancing in step. */
function startClock(now: Date | undefined): () => Date {
  const wall = (now ?? new Date()).getTime();
  const mono = performance.now();
  return () => new Date(wall + performance.now() - mono);
}

/** Why a run must not start now (outside the month-end window), if so. */
function outsideWindow(config: Config, now: Date): string | undefined {
  if (config.monthEndDays === undefined) return undefined;
  const month = monthEndWindow(now, config.timezone, config.monthEndDays);
  if (month.inWindow) return undefined;
  return `outside the month-end window: today is day ${month.day} of ${month.daysInMonth} in ${config.timezone}; runs happen on days ${month.firstDay}-${month.daysInMonth} (--month-end-days ${config.monthEndDays})`;
}

async function dryRun(job: Job): Promise<Ending> {
  const { config, log, selectDb, names } = job;
  const skip = outsideWindow(config, job.clock());
  if (skip) {
    const text = `dry run: ${skip}; a real run would exit 0 at once`;
    log.info(text);
    return dryEnding([`refresh: ${text}`]);
  }
  const printed = (lines: string[]) => {
    job.print(lines);
    return dryEnding(lines);
  };
  const abort = job.control.stop.signal;
  const found = await readCatalog(selectDb, names, abort);
  const { batches, total, leftOut } = await targetsOf(job, found, abort);
  const first: string[] = [];
  for await (const batch of batches) {
    first.push(...batch.slice(0, 10 - first.length).map((t) => t.id));
    if (first.length >= 10) break;
  }
  const pace = found.runs ? await lastPace(selectDb, names) : undefined;
  const affordable = Math.min(total, config.budget ?? Infinity);
  const estimateMs = pace ? affordable * pace.msPerTarget : undefined;
  if (config.logFormat === "json") {
    return printed([JSON.stringify({
      time: new Date().toISOString(),
      level: "info",
      event: "dry_run",
      targets: total,
      leftOut: leftOut || null,
      budget: config.budget ?? null,
      reserve: config.reserve ?? null,
      estimatedMs: estimateMs === undefined ? null : Math.round(estimateMs),
      firstIds: first,
    })]);
  }
  const budget = config.budget === undefined
    ? "no --budget"
    : `budget ${config.budget}${
      config.budget < total
        ? `: the run would stop after ~${config.budget} targets`
        : ": enough"
    }`;
  return printed([
    "refresh: dry run: no vendor call, nothing written",
    `  targets: ${total} would be refreshed in ${config.table}${
      config.limit !== undefined ? ` (--limit ${config.limit})` : ""
    }${leftOut ? `; left out: ${leftOut}` : ""}`,
    `  credits: ~${total} needed (one per target that succeeds); ${budget}${
      config.reserve !== undefined
        ? `; reserve ${config.reserve}: checked against ${config.creditsHeader} once the vendor answers`
        : ""
    }`,
    `  estimated duration: ${
      pace
        ? `~${formatDuration(estimateMs!)} (at ${
          formatDuration(pace.msPerTarget)
        } per target, from run ${pace.runId})${
          estimateMs! > config.timeBudget
            ? `; more than --time-budget ${formatDuration(config.timeBudget)}`
            : ""
        }`
        : "unknown (no earlier run to learn the pace from)"
    }`,
    `  first ids: ${first.length > 0 ? first.join(", ") : "(none)"}`,
  ]);
}

/**
 * The targets at this moment (the stale cutoff, the state table's shape):
 * the given ids, or the stale ones; how many, and who is left out.
 */
async function targetsOf(
  job: Job,
  { state: hasState, keyed }: Pick<StateCatalog, "state" | "keyed">,
  abort: AbortSignal,
) {
  const { config, selectDb, givenIds } = job;
  const [{ cutoff }] = await selectDb.run(
    (sql) =>
      sql<
        [{ cutoff: string }]
      >`select (now() - ${config.staleAfter} * interval '1 millisecond')::text as cutoff`,
    abort,
  );
  const selection: Selection = { ...job.selection, cutoff, hasState, keyed };
  const limit = config.limit ?? Infinity;
  if (givenIds) {
    return {
      selection,
      batches: givenBatches(selectDb, selection, givenIds.ids, abort),
      total: Math.min(givenIds.ids.length, limit),
      leftOut: leftOutText(givenIds.unknown.length, givenIds.without),
    };
  }
  const { total, without } = await countStale(selectDb, selection, abort);
  return {
    selection,
    batches: staleBatches(selectDb, selection, abort),
    total: Math.min(total, limit),
    leftOut: leftOutText(0, without),
  };
}

/** Opens the write and heartbeat connections (PGlite has one session: shares one). */
async function openWorkers(job: Job): Promise<[Db, Db] | ConnectFailure> {
  if (job.pglite) return [job.selectDb, job.selectDb];
  const opened: Db[] = [];
  for (let i = 0; i < 2; i++) {
    const db = await connect(
      job.config.databaseUrl,
      SHORT,
      job.config.connectTimeout,
      job.control.stop.signal,
    );
    if (!(db instanceof Db)) return db;
    opened.push(db);
    job.open.push(db);
  }
  return opened as [Db, Db];
}

async function realRun(job: Job): Promise<Ending> {
  const { config, selectDb, names, log, control } = job;
  const abort = control.stop.signal;
  const found = await readCatalog(selectDb, names, abort);
  if (!found.current) {
    const migrated = await migrate(
      selectDb,
      names,
      found,
      job.info.canonical,
      abort,
    );
    if ("exit" in migrated) {
      const sql = migrated.statements.map((ddl) => `${ddl};`).join("\n");
      const lines = [migrated.message, ...sql.split("\n").map((l) => `  ${l}`)];
      for (const line of lines) log.error(line);
      return migrated.exit === 2
        ? invalid(lines)
        : { code: migrated.exit, status: "aborted" };
    }
    log.info(migrated.done);
  }
  const startedAt = job.clock();
  const started = performance.now();
  const skip = outsideWindow(config, startedAt);
  if (skip) {
    const runId = await recordSkippedRun(selectDb, names, job.params, skip);
    log.info(`run ${runId} outside_window: ${skip}; nothing to do today`);
    return {
      code: 0,
      status: "outside_window",
      summary: `### refresh run ${runId}: outside_window\n\n${skip}\n`,
    };
  }
  // Writes and the heartbeat have connections of their own: a write blocked
  // by a lock never holds up the heartbeat, so a live run never looks dead.
  const workers = await openWorkers(job);
  if (!Array.isArray(workers)) return failed(workers, log);
  const [writeDb, heartbeatDb] = workers;
  const lease = await acquireLease(
    writeDb,
    names,
    config.lease,
    job.params,
    config.ignoreNotBefore,
  );
  if ("live" in lease) {
    log.error(
      `another run is live: run ${lease.live.id}, started ${lease.live.startedAt}, last heartbeat ${lease.live.heartbeatAt}; it is taken over as crashed once its heartbeat is older than its lease (--lease ${
        formatDuration(config.lease)
      })`,
    );
    return { code: 3, status: "busy" };
  }
  const runId = lease.runId;
  // Ended once the end is recorded (every path below comes to that).
  const span = startSpan("refresh.run", { "refresh.run.id": runId });
  // From now on, statements outlast a lost or blocked database for --db-retry.
  for (const db of new Set([selectDb, writeDb, heartbeatDb])) {
    db.retry = { ms: config.dbRetry, log };
  }
  if (lease.cleared > 0) {
    log.warn(
      `--ignore-not-before: cleared the time an earlier run was told not to call before; calling now`,
    );
  }
  if (lease.crashed.length > 0) {
    log.warn(
      `marked run(s) ${lease.crashed.join(", ")} crashed (heartbeat expired)`,
    );
  }
  const counters: LoopOptions["counters"] = Object.fromEntries(
    FACTS.map(([key]) => [key, 0]),
  ) as Counters;
  const stats = new LatencyStats();
  const pacer = new Pacer({
    minIntervalMs: Math.max(
      config.minInterval,
      config.rate ? config.rate.windowMs / config.rate.count : 0,
    ),
    maxGapMs: config.maxRetryWait,
  });
  let leftOut = "";
  let stop: Stop | undefined;
  try {
    const beats = keepLease(heartbeatDb, job, runId, counters);
    const periodEndsAt = periodEnd(startedAt, config.timezone);
    const toPeriodEnd = periodEndsAt.getTime() - startedAt.getTime();
    const deadlineMs = Math.min(config.timeBudget, toPeriodEnd);
    control.after(deadlineMs, () =>
      control.halt(
        config.timeBudget <= toPeriodEnd
          ? {
            status: "deadline",
            reason: `reached the time budget of ${
              formatDuration(config.timeBudget)
            }`,
          }
          : {
            status: "period_end",
            reason:
              `the credit period ended at ${periodEndsAt.toISOString()} (end of the month in ${config.timezone})`,
          },
      ));
    if (lease.notBeforeMs > config.maxRetryWait) {
      throw tooLong(
        "an earlier run was told",
        lease.notBeforeMs,
        config.maxRetryWait,
      );
    }
    if (lease.notBeforeMs > 0) {
      pacer.deferFor(lease.notBeforeMs);
      log.info(
        `the vendor asked an earlier run not to call before ${
          new Date(Date.now() + lease.notBeforeMs).toISOString()
        }: waiting ${formatDuration(lease.notBeforeMs)}`,
      );
    }
    // The selection's long timeout; a signal or the deadline ends it.
    const targets = await targetsOf(job, { state: true, keyed: true }, abort);
    counters.total = targets.total;
    leftOut = targets.leftOut;
    log.info(
      `run ${runId}: ${targets.total} target(s) to refresh in ${config.table}${
        leftOut ? ` (left out: ${leftOut})` : ""
      }; deadline ${new Date(startedAt.getTime() + deadlineMs).toISOString()}`,
      { event: "start", runId, total: targets.total, leftOut: leftOut || null },
    );
    const progress = () => {
      const now = performance.now();
      const line = progressLine(
        counters,
        config,
        pacer.gapMs,
        now - started,
        started + deadlineMs - now,
      );
      log.info(line.text, line.fields);
    };
    control.every(config.progressInterval, progress);
    let annotations = 0;
    stop = await refreshAll(targets.batches, {
      config,
      db: writeDb,
      plan: {
        ...job.info,
        ...targets.selection,
        dataColumn: config.dataColumn,
        runId,
        scrub: job.strict,
      },
      control,
      pacer,
      stats,
      policy: {
        ...config,
        periodLeftMs: () => periodEndsAt.getTime() - job.clock().getTime(),
        ...notices(log),
        scrub: job.strict,
      },
      log,
      counters,
      fence: beats.fence,
      span,
      annotate: (id, outcome) => {
        if (
          job.env("GITHUB_ACTIONS") !== "true" ||
          ++annotations > MAX_ANNOTATIONS + 1
        ) return;
        job.print([
          annotations <= MAX_ANNOTATIONS
            ? workflowCommand(
              "warning",
              `refresh: target ${id} ${outcome.status}`,
              outcome.error ?? "",
            )
            : `::notice title=refresh::more targets failed; see refresh_state (status in ('failed', 'invalid'))`,
        ]);
      },
    });
    progress();
  } catch (error) {
    // A Stop thrown above (or by a statement) is the run's stop as it is.
    stop = isStop(error) ? error : {
      status: "aborted",
      reason: error instanceof DbLost
        ? error.message
        : `unexpected error: ${describeError(error)}`,
    };
  }
  const status: RunStatus = control.signal
    ? "interrupted"
    : stop?.status ?? "completed";
  const reason = stop?.reason ?? null;
  if (status !== "completed") log.warn(`stopping: ${status}: ${reason}`);
  const report: RunReport = {
    runId,
    status,
    reason: reason && job.clean(reason),
    elapsedMs: performance.now() - started,
    counters,
    creditsRemaining: counters.creditsRemaining,
    meanRequestMs: stats.mean(),
    p95RequestMs: stats.percentile(0.95),
    notBeforeMs: Math.min(
      Math.max(pacer.vendorWaitMs(), stop?.waitMs ?? 0),
      31 * 86_400_000,
    ),
    leftOut,
  };
  const unrecorded = await finishOnce(heartbeatDb, job, report);
  span.setAttributes(attributes("refresh.run", {
    status,
    recorded: !unrecorded,
    ...counterColumns(counters, counters.creditsRemaining),
  }));
  span.end();
  job.print(
    config.logFormat === "json" ? [summaryJson(report)] : summaryText(report),
  );
  const problem = unrecorded
    ? `could not record the end of run ${runId} (${status}): ${unrecorded}; it stays running until its lease expires`
    : status === "aborted"
    ? reason ?? ""
    : undefined;
  if (unrecorded) log.error(problem!);
  return {
    // A signal during the final write is not what the row says: the row wins.
    code: unrecorded && status !== "interrupted" ? 1 : exitCodeFor(
      status,
      status === "interrupted" ? control.signal?.number : undefined,
    ),
    status,
    summary: summaryMarkdown(report) +
      (unrecorded ? `\n**${problem!.replaceAll("|", "\\|")}**\n` : ""),
    annotation: problem === undefined ? undefined : {
      level: "error",
      title: `refresh run ${runId} ${unrecorded ? "unrecorded" : "aborted"}`,
      message: problem,
    },
    creditsLeft: status === "period_end" && report.creditsRemaining !== 0,
  };
}

const MAX_ANNOTATIONS = 10;

/**
 * Renews the heartbeat (with the counters) every second on its own connection;
 * stops the run at once if another run took the lease. `fence`: no request
 * starts once the last beat is older than lease − (request timeout + grace),
 * as the lease might be lost before that request and its grace are over.
 */
function keepLease(
  db: Db,
  { names, config, control, log }: Job,
  runId: number,
  counters: LoopOptions["counters"],
): Pick<LoopOptions, "fence"> {
  let last = performance.now();
  let busy = false;
  let failing = false;
  control.every(HEARTBEAT_MS, async () => {
    if (busy) return;
    busy = true;
    try {
      if (
        await heartbeat(db, names, runId, counters, counters.creditsRemaining)
      ) {
        last = performance.now();
        if (failing) log.info("heartbeat: renewed again");
        failing = false;
      } else {
        control.abort(LEASE_LOST);
      }
    } catch (error) {
      if (!failing) log.warn(`heartbeat failed: ${describeError(error)}`);
      failing = true;
    } finally {
      busy = false;
    }
  });
  const safe = config.lease - config.requestTimeout - config.grace;
  const abort = control.stop.signal;
  return {
    fence: async (waiting) => {
      const until = performance.now() + config.dbRetry;
      while (performance.now() - last >= safe) {
        waiting();
        if (performance.now() > until) {
          return {
            status: "aborted",
            reason: `could not renew the lease for ${
              formatDuration(performance.now() - last)
            } (--db-retry ${
              formatDuration(config.dbRetry)
            }); no new request may start`,
          };
        }
        await delay(100, { signal: abort }).catch(() => {});
        if (abort.aborted) return abort.reason as Stop;
      }
      return undefined;
    },
  };
}

/** The one short try at recording a run's end after its grace. */
const LAST_TRY_MS = 1000;

/**
 * Records the end of the run; if the database is gone, tries once more on a
 * fresh connection. Returns why the end could not be recorded, if so.
 */
async function finishOnce(
  db: Db,
  job: Job,
  report: RunReport,
): Promise<string | undefined> {
  // Bounded by --db-retry; once a signal came, by the rest of its grace;
  // after the grace or a second signal, by one short try.
  const hard = job.control.hard.signal;
  const abort = hard.aborted ? AbortSignal.timeout(LAST_TRY_MS) : hard;
  try {
    await finishRun(db, job.names, report, abort);
    return undefined;
  } catch (error) {
    const fresh = await connect(
      job.config.databaseUrl,
      SHORT,
      Math.min(job.config.connectTimeout, job.config.dbRetry, 10_000),
      abort,
    ).catch((e) => ({ message: describeError(e) }));
    if (!(fresh instanceof Db)) {
      return `${describeError(error)}; then ${fresh.message}`;
    }
    return await finishRun(fresh, job.names, report, abort)
      .then(() => undefined, describeError)
      .finally(() => fresh.end());
  }
}

// ============================================================================
// THE RUN: one loop owns the counters and the stop decisions; target k is
// written while k+1's request is in flight.
// ============================================================================

/** Why a run stops early, and with what status. */
interface Stop {
  status: StopStatus;
  reason: string;
  /** For rate_limited: how long the vendor asked not to be called. */
  waitMs?: number;
}

/** A run's end other than `completed`. */
type StopStatus =
  | "budget_exhausted"
  | "credits_exhausted"
  | "rate_limited"
  | "deadline"
  | "period_end"
  | "interrupted"
  | "aborted";

/** Final (or current) status of a run in `refresh_runs`. */
export type RunStatus =
  | StopStatus
  | "running"
  | "completed"
  | "outside_window"
  | "crashed";

function isStop(value: unknown): value is Stop {
  return typeof value === "object" && value !== null && "status" in value &&
    "reason" in value;
}

function stopAs(status: StopStatus, reason: string): Stop {
  return { status, reason };
}

const LEASE_LOST = stopAs(
  "aborted",
  "lost the lease: another run marked this one crashed and took over",
);

function budgetStop(budget: number): Stop {
  return stopAs("budget_exhausted", `spent the budget of ${budget} credit(s)`);
}

interface Outcome {
  status: TargetStatus;
  /** Requests made for it in this run. */
  attempts: number;
  /** Of the last answer. */
  httpStatus: number | null;
  /** Why it is not `ok`. */
  error: string | null;
  /** For `ok`: the JSON text stored, as the vendor section's `row` made it. */
  text?: string;
}

/**
 * A run's counters, once: its `refresh_runs` column and step-summary row. The
 * Counters type, columns, heartbeat, span and summaries derive from this.
 */
const RUN_FACTS = {
  total: ["total", "Targets selected"],
  processed: ["processed", "Processed"],
  succeeded: ["succeeded", "ok"],
  notFound: ["not_found", "not_found"],
  invalid: ["invalid", "invalid"],
  failed: ["failed", "failed"],
  credits: ["credits_spent", "Credits spent"],
  requests: ["requests", "Requests"],
  retries: ["retries", "Retries"],
} as const;

type Counters = Record<keyof typeof RUN_FACTS, number>;

const FACTS = Object.entries(RUN_FACTS) as [keyof Counters, [string, string]][];

/** The signals handled: SIGHUP is a closed terminal. */
const SIGNAL_NUMBERS = { SIGHUP: 1, SIGINT: 2, SIGTERM: 15 } as const;

type Signal = keyof typeof SIGNAL_NUMBERS;

/** A repeat of the first signal within this many ms is the same signal. */
const SIGNAL_REPEAT_MS = 500;

/** How often the heartbeat and the counters are written. */
const HEARTBEAT_MS = 1000;

/** A vendor slower than this (ms) gets the next request before our write. */
const SLOW_VENDOR_MS = 5;

/**
 * Stops a run from outside: signals and the deadline. `stop`: no new request
 * starts, every wait is cut short. `hard`, a grace later (or at a second
 * signal): the request in flight is aborted, a blocked statement cancelled.
 */
class Control {
  readonly stop = new AbortController();
  readonly hard = new AbortController();
  /** The first signal received, if any. */
  signal: { name: Signal; number: number } | undefined;
  #graceMs: number;
  #firstSignalAt = 0;
  #timers: ReturnType<typeof setTimeout>[] = [];
  #listeners: [Signal, () => void][] = [];

  constructor(graceMs: number, external?: AbortSignal) {
    this.#graceMs = graceMs;
    external?.addEventListener("abort", () => this.onSignal("SIGINT"), {
      once: true,
    });
  }

  listen(): void {
    for (const name of Object.keys(SIGNAL_NUMBERS) as Signal[]) {
      const listener = () => this.onSignal(name);
      Deno.addSignalListener(name, listener);
      this.#listeners.push([name, listener]);
    }
  }

  onSignal(name: Signal): void {
    if (this.signal) {
      // `deno task` may relay a signal twice: a quick repeat is the same one.
      if (
        name === this.signal.name &&
        performance.now() - this.#firstSignalAt < SIGNAL_REPEAT_MS
      ) return;
      return this.hard.abort(
        stopAs("interrupted", `received ${name} twice: aborted at once`),
      );
    }
    this.signal = { name, number: SIGNAL_NUMBERS[name] };
    this.#firstSignalAt = performance.now();
    this.halt(stopAs("interrupted", `received ${name}`));
  }

  /** Stops gracefully now, and hard after the grace. */
  halt(stop: Stop): void {
    if (this.stop.signal.aborted) return;
    this.stop.abort(stop);
    this.after(this.#graceMs, () => this.hard.abort(stop));
  }

  /** Stops at once, the request in flight included. */
  abort(stop: Stop): void {
    this.stop.abort(stop);
    this.hard.abort(stop);
  }

  // Every duration given here is a setting parsed with `timer: true`.
  after(ms: number, fn: () => void): void {
    this.#timers.push(setTimeout(fn, ms));
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

interface LoopOptions {
  config: Config;
  db: Db;
  plan: WritePlan;
  control: Control;
  pacer: Pacer;
  stats: LatencyStats;
  policy: Policy;
  log: Logger;
  /** The loop's counters (the heartbeat and progress lines read them). */
  counters: Counters & { creditsRemaining?: number };
  /**
   * Whether a new request may start: the lease is surely still ours. Calls
   * `waiting` before it waits for that.
   */
  fence: (waiting: () => void) => Promise<Stop | undefined>;
  /** Reports a target that failed or is invalid (GitHub annotations). */
  annotate: (id: string, o: Outcome) => void;
  /** The run's span, parent of the targets' spans. */
  span: Span;
}

/**
 * Refreshes the targets one at a time. Target k's write starts once k+1's
 * request is on its way (or before the run waits or ends; at once for a vendor
 * faster than the database), never more than one write outstanding; every stop
 * decision is taken from k's answer before k+1's request starts. Returns why
 * the run stopped early, or undefined once every target is done.
 */
async function refreshAll(
  targets: AsyncIterable<Target[]>,
  o: LoopOptions,
): Promise<Stop | undefined> {
  const { config: c, counters: count, log } = o;
  const writer = writeBehind();
  /** The most one call has cost: no call may dip into the budget or reserve. */
  let maxCost = 1;
  let failedRow = 0;
  let invalidRow = 0;
  let refusedRow = 0;
  const settle = async (): Promise<Stop | undefined> => {
    const written = await writer.settle();
    if (!written) return undefined;
    if ("stop" in written) return written.stop;
    const { id, stored, refused, updated } = written;
    count.processed++;
    if (stored.status === "ok") count.succeeded++;
    else if (stored.status === "not_found") count.notFound++;
    else if (stored.status === "invalid") count.invalid++;
    else count.failed++;
    if (stored.status === "ok") o.pacer.relax();
    if (stored.status === "ok" && !updated) {
      log.warn(`target ${id}: row vanished before its refresh was written`);
    } else if (stored.status === "invalid" || stored.status === "failed") {
      log.warn(`target ${id}: ${stored.status}: ${stored.error}`, {
        target: id,
        outcome: stored.status,
      });
      o.annotate(id, stored);
    }
    refusedRow = refused ? refusedRow + 1 : 0;
    return refusedRow >= c.maxConsecutiveInvalid
      ? stopAs(
        "aborted",
        `${refusedRow} answers in a row were refused by the database (--max-consecutive-invalid); last: ${stored.error}`,
      )
      : undefined;
  };
  const decide = (f: Fetched): Stop | undefined => {
    const out = f.outcome;
    if (out) {
      failedRow = out.status === "failed" ? failedRow + 1 : 0;
      if (out.httpStatus !== null) {
        invalidRow = out.status === "invalid" ||
            (out.status === "not_found" && out.httpStatus !== 404)
          ? invalidRow + 1
          : 0;
      }
      if (failedRow >= c.maxConsecutiveFailures) {
        return stopAs(
          "aborted",
          `${failedRow} targets in a row failed (--max-consecutive-failures); last: ${out.error}`,
        );
      }
      if (invalidRow >= c.maxConsecutiveInvalid) {
        return stopAs(
          "aborted",
          `${invalidRow} answers in a row failed the vendor checks (--max-consecutive-invalid): do the answers match the schema of the vendor section? last: ${out.error}`,
        );
      }
    }
    if (f.stop) return f.stop;
    const left = count.creditsRemaining;
    if (
      c.reserve !== undefined && left === undefined &&
      count.requests >= HEADER_SEEN_WITHIN
    ) {
      return stopAs(
        "aborted",
        `--reserve ${c.reserve} is set, but none of the first ${count.requests} answers had a readable ${c.creditsHeader} header: stopped rather than spend blind`,
      );
    }
    if (left === 0) {
      return stopAs(
        "credits_exhausted",
        "the vendor reports 0 credits remaining",
      );
    }
    if (
      left !== undefined && c.reserve !== undefined &&
      left < c.reserve + maxCost
    ) {
      return stopAs(
        "budget_exhausted",
        `the vendor reports ${left} credit(s) remaining; a call costing up to ${maxCost} would dip into the reserve of ${c.reserve}`,
      );
    }
    return undefined;
  };
  let stop: Stop | undefined;
  // A selection cut short by a stop still lets the write in hand finish.
  let failure: unknown;
  try {
    outer: for await (const batch of targets) {
      // Built ahead: between an answer and the next request, only its checks.
      const requests = batch.map((target) => VENDOR.request(target, c));
      for (const [i, target] of batch.entries()) {
        if (
          count.processed + (writer.holds() ? 1 : 0) >= (c.limit ?? Infinity)
        ) {
          break outer;
        }
        stop = o.control.stop.signal.aborted
          ? o.control.stop.signal.reason as Stop
          : c.budget !== undefined && count.credits + maxCost > c.budget
          ? budgetStop(c.budget)
          : await o.fence(writer.start);
        if (stop) break outer;
        const asked = performance.now();
        const f = await traced(
          "refresh.target",
          { "refresh.target.id": target.id },
          o.span,
          () =>
            fetchTarget(target, requests[i]!, {
              ...o,
              settings: c,
              budgetLeft: c.budget === undefined
                ? undefined
                : c.budget - count.credits,
              maxCost,
              stop: o.control.stop.signal,
              hard: o.control.hard.signal,
              onWay: writer.start,
            }),
          (f) =>
            attributes("refresh.target", {
              status: f.outcome?.status ?? "stopped",
              attempts: f.attempts,
              http_status: f.outcome?.httpStatus,
              credits: f.credits,
            }),
        );
        count.requests += f.attempts;
        count.retries += Math.max(0, f.attempts - 1);
        count.credits += f.credits;
        maxCost = f.maxCost;
        count.creditsRemaining = f.creditsRemaining ?? count.creditsRemaining;
        // A vendor's message, or a network error's URL, may quote a lookup
        // value (an e-mail): none is recorded, logged or exported.
        const hide = (text: string) =>
          scrubSecrets(
            text,
            Object.entries(target.values).flatMap(([k, v]) =>
              k !== "id" && v ? [v] : []
            ),
          );
        if (f.stop) f.stop = { ...f.stop, reason: hide(f.stop.reason) };
        // Target k-1's write: if the database or the lease is gone, the
        // answer in hand is lost (one of the documented cases).
        stop = await settle();
        if (stop) break outer;
        if (f.outcome) {
          const out = {
            ...f.outcome,
            error: f.outcome.error && o.policy.scrub(hide(f.outcome.error)),
          };
          writer.queue(
            () => store(o.db, o.plan, target, out, o.control.hard.signal),
            performance.now() - asked,
          );
        }
        stop = decide(f);
        if (stop) break outer;
      }
    }
  } catch (error) {
    if (isStop(error)) stop = error;
    else failure = error;
  }
  const last = await settle();
  if (failure !== undefined) throw failure;
  return last ?? stop;
}

/**
 * The write-behind: at most one target's write outstanding. `queue` holds
 * target k's write; `start` sends it (once k+1's request is on its way, or
 * before any wait); `settle` starts it if need be and waits for it.
 */
function writeBehind() {
  let queued: (() => Promise<Written>) | undefined;
  let pending: Promise<Written> | undefined;
  const start = () => {
    if (!queued) return;
    pending = queued();
    queued = undefined;
    // Awaited by settle(); until then, a failure must not go unhandled.
    pending.catch(() => {});
  };
  return {
    /**
     * A vendor faster than a turn of the event loop makes the database the
     * bottleneck: its write goes out at once. A slower one gets the next
     * request first, the write a turn later, never delaying that request.
     */
    queue: (write: () => Promise<Written>, answeredInMs: number) => {
      const slow = answeredInMs > SLOW_VENDOR_MS;
      queued = slow ? () => delay(0).then(write) : write;
      if (!slow) start();
    },
    start,
    holds: () => queued !== undefined || pending !== undefined,
    settle: async () => {
      start();
      const written = await pending;
      pending = undefined;
      return written;
    },
  };
}

// ============================================================================
// VENDOR REQUESTS: one target with its retries, then one request. Every
// expected end is a value; exceptions are for the unexpected.
// ============================================================================

/** What one target came to, with everything its requests cost. */
type Fetched = Pick<Reply, "outcome" | "stop" | "creditsRemaining"> & {
  /** Requests made, the ones a stop cut short included. */
  attempts: number;
  credits: number;
  /** The most one call has cost this run (at least 1). */
  maxCost: number;
};

type FetchOptions = Pick<LoopOptions, "policy" | "pacer" | "stats" | "log"> & {
  settings: Config;
  /** Credits the run may still spend (`--budget`), if capped. */
  budgetLeft: number | undefined;
  /** The most one call has cost this run so far (at least 1). */
  maxCost: number;
  /** No new request, every wait cut short. */
  stop: AbortSignal;
  /** The request in flight aborted. */
  hard: AbortSignal;
  /** Called once a request of the target is on its way, or before a wait. */
  onWay: () => void;
};

/**
 * Asks about one target, retrying with exponential backoff and full jitter:
 * sequential, each start paced, never a request that could spend credit N+1
 * of the budget. A stated wait is waited for, not counted in --max-attempts.
 */
async function fetchTarget(
  target: Target,
  req: VendorRequest,
  o: FetchOptions,
): Promise<Fetched> {
  const s = o.settings;
  const url = req.url;
  let attempts = 0;
  let credits = 0;
  let maxCost = o.maxCost;
  let creditsRemaining: number | undefined;
  /** How the target ended, with its attempts and what they cost. */
  const spent = (end: Pick<Fetched, "outcome" | "stop">): Fetched => ({
    attempts,
    credits,
    creditsRemaining,
    maxCost,
    stop: end.stop,
    outcome: end.outcome && { ...end.outcome, attempts },
  });
  if (typeof url !== "string") {
    return spent({ outcome: outcome("invalid", null, url.invalid) });
  }
  try {
    const reply = await retry(async () => {
      while (true) {
        if (o.budgetLeft !== undefined && credits + maxCost > o.budgetLeft) {
          return { stop: budgetStop(s.budget!) } as Reply;
        }
        if (o.pacer.pendingWait() > 0) o.onWay();
        await o.pacer.wait(o.stop);
        attempts++;
        const started = performance.now();
        const asking = ask({ ...req, url }, o.policy, o.hard);
        o.onWay();
        const r = await asking;
        o.stats.add(performance.now() - started);
        // A call cut short may still be billed: its worst case is counted.
        const cost = r.credits ?? maxCost;
        credits += cost;
        maxCost = Math.max(maxCost, cost);
        creditsRemaining = r.creditsRemaining ?? creditsRemaining;
        if (r.pushBack) o.pacer.pushBack();
        if (r.waitMs !== undefined && !r.stop) {
          o.pacer.deferFor(r.waitMs);
          if (r.retry && r.waitMs >= 1000) {
            o.log.info(
              `target ${target.id}: ${r.retry.error}; waiting ${
                formatDuration(r.waitMs)
              } as the vendor asked`,
            );
          }
        }
        if (!r.retry) return r;
        if (r.retry.stated) continue;
        if (r.retry.httpStatus === 429 && s.rate) {
          o.pacer.deferFor(s.rate.windowMs);
        }
        throw new Retryable(r.retry.httpStatus, r.retry.error);
      }
    }, {
      maxAttempts: s.maxAttempts,
      minTimeout: s.backoff,
      maxTimeout: s.maxRetryWait,
      multiplier: 2,
      jitter: 1,
      isRetriable: (error) => error instanceof Retryable,
      signal: o.stop,
    });
    return spent(reply);
  } catch (error) {
    if (error instanceof RetryError) {
      const cause = error.cause as Retryable;
      // Turned away without a word on when: not the target's fault.
      if (cause.httpStatus === 429) {
        return spent({
          stop: stopAs(
            "rate_limited",
            `the vendor answered ${cause.message} to ${attempts} attempts for target ${target.id} without saying when to come back; progress is saved, run again later`,
          ),
        });
      }
      return spent({
        outcome: outcome(
          "failed",
          cause.httpStatus,
          `gave up after ${attempts} attempts; last: ${cause.message}`,
        ),
      });
    }
    if (o.stop.aborted && error === o.stop.reason) {
      return spent({ stop: o.stop.reason as Stop });
    }
    throw error;
  }
}

/** Thrown inside `retry()` for an answer worth another attempt. */
class Retryable extends Error {
  constructor(readonly httpStatus: number | null, message: string) {
    super(message);
  }
}

/** The core's HTTP policy: settings, and the run's notices and scrubber. */
type Policy =
  & Pick<
    Config,
    | "requestTimeout"
    | "maxBody"
    | "billableStatuses"
    | "creditsExhaustedStatuses"
    | "creditsHeader"
    | "creditsSpentHeader"
    | "maxRetryWait"
  >
  & ReturnType<typeof notices>
  & {
    /** Time left in the credit period: a longer wait is ignored. */
    periodLeftMs: () => number;
    /** Removes secrets from a text (before any excerpt is cut). */
    scrub: (text: string) => string;
  };

/** What one vendor answer came to. */
interface Reply {
  /** The target's outcome, when this answer decides it. */
  outcome?: Outcome;
  /** Worth another attempt, and why; `stated` when the vendor said when. */
  retry?: { error: string; httpStatus: number | null; stated: boolean };
  /** The run must stop (after recording `outcome`, if there is one). */
  stop?: Stop;
  /** What the call cost; unknown for a call cut short. */
  credits?: number;
  creditsRemaining?: number;
  /** The vendor asked not to be called for this long. */
  waitMs?: number;
  /** The vendor pushed back (429, 503 with Retry-After): slow down. */
  pushBack?: boolean;
}

const TRANSIENT_STATUSES = new Set([408, 429, 500, 502, 503, 504]);

const EXCERPT = 200;

/** How much of an answer that is not a 2xx is read, for the verdict. */
const ERROR_BODY = 64 * 1024;

const UTF8 = new TextDecoder("utf-8", { fatal: true });

/** Answers lacking a configured header before it is warned about. */
const HEADER_SEEN_WITHIN = 3;

function outcome(
  status: TargetStatus,
  httpStatus: number | null,
  error: string | null,
  text?: string,
): Outcome {
  return { status, attempts: 0, httpStatus, error, text };
}

function tooLong(what: string, waitMs: number, maxMs: number): Stop {
  return {
    status: "rate_limited",
    waitMs,
    reason: `the vendor asked to wait ${
      Number.isFinite(waitMs)
        ? formatDuration(waitMs)
        : "longer than a timer can"
    } (${what}), longer than --max-retry-wait ${
      formatDuration(maxMs)
    }; progress is saved, run again later`,
  };
}

/** One request and what its answer means, under the core's HTTP policy. */
async function ask(
  req: VendorRequest & { url: string },
  p: Policy,
  hard: AbortSignal,
): Promise<Reply> {
  const limit = timeLimit(p.requestTimeout, hard);
  try {
    return await answerOf(req, p, hard, limit);
  } finally {
    limit.release();
  }
}

async function answerOf(
  req: VendorRequest & { url: string },
  p: Policy,
  hard: AbortSignal,
  limit: TimeLimit,
): Promise<Reply> {
  const again = (error: string): Reply => ({
    retry: { error, httpStatus: null, stated: false },
  });
  // Cut short once sent: the vendor may bill it; credits unknown.
  const failed = (error: unknown, what: string): Reply => {
    if (hard.aborted) return { stop: hard.reason as Stop };
    if (limit.expired) {
      return again(`${what} within ${formatDuration(p.requestTimeout)}`);
    }
    const message = p.scrub(String((error as Error)?.message ?? error));
    if (!/redirect/i.test(message)) {
      return { credits: 0, ...again(`network error: ${message}`) };
    }
    const why =
      `the vendor redirected; redirects are not followed (${message})`;
    return { credits: 0, outcome: outcome("failed", null, why) };
  };
  let response: Response;
  try {
    response = await fetch(req.url, {
      method: req.method,
      headers: req.headers,
      body: req.body,
      redirect: "error",
      signal: limit.signal,
    });
  } catch (error) {
    return failed(error, "no answer");
  }
  const { status, headers } = response;
  const ok = status >= 200 && status < 300;
  const credits = answerCredits(headers, status, ok, p);
  let bytes: Uint8Array = new Uint8Array();
  let unusable: string | undefined;
  try {
    bytes = await readBody(response, ok ? p.maxBody : ERROR_BODY);
  } catch (error) {
    if (!(error instanceof BodyTooLargeError)) {
      return { ...failed(error, "body not received"), credits };
    }
    unusable = error.message;
  }
  let text: string;
  try {
    text = UTF8.decode(bytes);
  } catch {
    text = new TextDecoder().decode(bytes);
    unusable ??= "body is not valid UTF-8";
  }
  const answer: Answer = { status, headers, text };
  try {
    if (text.trim() !== "") answer.json = JSON.parse(text);
  } catch { /* not JSON: the verdict sees answer.json undefined */ }
  const limits = readRateLimit(headers, Date.now());
  for (const name of limits.unreadable) unreadable(name, headers, p);
  const generic = genericVerdict(answer, unusable, limits, credits, p);
  return replyOf(VENDOR.verdict(answer, generic), answer, limits, generic, p);
}

/**
 * The warnings of a run, each given once: `warnOnce(key, …)`, and
 * `sawHeader`, told whether a 2xx answer had a configured header.
 */
function notices(log: Logger) {
  const warned = new Set<string>();
  const lacking = new Map<string, number>();
  const warnOnce = (key: string, message: string) => {
    if (!warned.has(key)) log.warn(message);
    warned.add(key);
  };
  const sawHeader = (name: string, present: boolean) => {
    const n = present ? -Infinity : (lacking.get(name) ?? 0) + 1;
    lacking.set(name, n);
    if (n >= HEADER_SEEN_WITHIN) {
      warnOnce(
        `lacking ${name}`,
        `none of the first ${n} answers had the ${name} header: is the header's name right?`,
      );
    }
  };
  return { warnOnce, sawHeader };
}

function unreadable(name: string, headers: Headers, p: Policy): void {
  const value = JSON.stringify(headers.get(name)?.slice(0, 100));
  p.warnOnce(
    name,
    `the vendor's ${name} header cannot be read (${value}); it is ignored`,
  );
}

/** An answer's cost: its `--credits-spent-header`, else 1 if billable. */
function answerCredits(
  headers: Headers,
  status: number,
  ok: boolean,
  p: Policy,
): number {
  for (const name of [p.creditsHeader, p.creditsSpentHeader]) {
    if (name && ok) p.sawHeader(name, headers.has(name));
  }
  return readCredits(headers, p.creditsSpentHeader, p) ??
    (p.billableStatuses.includes(status) ? 1 : 0);
}

/** A credits header's value; warned about once when unreadable or duplicated. */
function readCredits(
  headers: Headers,
  name: string | undefined,
  p: Policy,
): number | undefined {
  if (!name) return undefined;
  const n = readCount(headers, name);
  if (n === "unreadable") unreadable(name, headers, p);
  else if (n !== undefined && headers.get(name)!.includes(",")) {
    p.warnOnce(
      `duplicated ${name}`,
      `the vendor sent the ${name} header more than once (${
        JSON.stringify(headers.get(name)!.slice(0, 100))
      }); its smallest value counts`,
    );
  }
  return typeof n === "number" ? n : undefined;
}

/** An answer's body, at most `maxBytes`. */
async function readBody(response: Response, maxBytes: number) {
  // An uncompressed body of a declared length within the cap is all fetch
  // will deliver: one read. Anything else is counted as it comes.
  const declared = Number(response.headers.get("content-length") ?? NaN);
  return declared <= maxBytes && !response.headers.has("content-encoding")
    ? new Uint8Array(await response.arrayBuffer())
    : await readCappedBody(response.body, maxBytes);
}

/** What the core makes of an answer from the settings alone. */
function genericVerdict(
  a: Answer,
  unusable: string | undefined,
  limits: RateLimit,
  credits: number,
  p: Policy,
): Verdict {
  const s = a.status;
  const excerpt = () => {
    // Scrub first, then cut: a cut must never leave part of a secret.
    const text = p.scrub(a.text.replace(/\s+/g, " ").trim());
    return text &&
      `: ${text.length > EXCERPT ? `${text.slice(0, EXCERPT)}…` : text}`;
  };
  const says = (
    verdict: Verdict["verdict"],
    reason?: string,
    waitMs?: number,
  ): Verdict => ({ verdict, reason, credits, waitMs });
  if (s === 401 || s === 403) {
    return says(
      "key_refused",
      `the vendor refused the API key (HTTP ${s}); every call would fail`,
    );
  }
  if (p.creditsExhaustedStatuses.includes(s)) {
    return says(
      "credits_exhausted",
      `the vendor answered HTTP ${s}${excerpt()}: no credits left`,
    );
  }
  if (s >= 200 && s < 300) {
    if (unusable) return says("invalid", unusable);
    if (a.json === undefined) return says("invalid", "body is not JSON");
    const checked = v.safeParse(VENDOR.schema, a.json);
    if (checked.success) return says("ok");
    const issue = checked.issues[0];
    const at = v.getDotPath(issue) ?? "(root)";
    return says("invalid", `unexpected shape at ${at}: ${issue.message}`);
  }
  if (s === 404) {
    return says("not_found", "HTTP 404: the vendor does not know this target");
  }
  if (!TRANSIENT_STATUSES.has(s)) {
    return says("failed", `HTTP ${s}${excerpt()}`);
  }
  const after = s === 429 || s === 503
    ? parseRetryAfter(a.headers.get("retry-after"))
    : undefined;
  const waits = [after, ...s === 429 ? [limits.resetMs, limits.spentMs] : []]
    .filter((ms) => ms !== undefined);
  return says(
    "retry",
    `HTTP ${s}${
      after === undefined ? "" : ` (Retry-After ${formatDuration(after)})`
    }`,
    waits.length > 0 ? Math.max(...waits) : undefined,
  );
}

/** The reply a verdict makes, with the waits and costs of its answer. */
function replyOf(
  verdict: Verdict,
  a: Answer,
  limits: RateLimit,
  generic: Verdict,
  p: Policy,
): Reply {
  const reply: Reply = {
    credits: verdict.credits ?? generic.credits,
    creditsRemaining: readCredits(a.headers, p.creditsHeader, p),
  };
  const { verdict: said, reason } = verdict;
  let wait = said === "retry" ? verdict.waitMs : limits.spentMs;
  if (wait !== undefined && wait > p.periodLeftMs()) {
    p.warnOnce(
      "past period end",
      `the vendor asked to wait ${
        formatDuration(wait)
      }, past the end of the credit period; that wait is ignored`,
    );
    wait = undefined;
  }
  reply.waitMs = wait;
  if (wait !== undefined && wait > p.maxRetryWait) {
    const what = said === "retry" ? `HTTP ${a.status}` : "rate-limit reset";
    reply.stop = tooLong(what, wait, p.maxRetryWait);
  }
  const stop = (status: StopStatus, why: string) => ({
    ...reply,
    stop: stopAs(status, reason ?? `${why} (HTTP ${a.status})`),
  });
  const done = (status: TargetStatus, why: string | null, text?: string) => ({
    ...reply,
    outcome: outcome(status, a.status, why, text),
  });
  switch (said) {
    case "key_refused":
      return stop("aborted", "the vendor refused the API key");
    case "credits_exhausted":
      return stop("credits_exhausted", "the vendor says no credits are left");
    case "retry":
      return reply.stop ? reply : {
        ...reply,
        pushBack: a.status === 429 || wait !== undefined,
        retry: {
          error: reason ?? `HTTP ${a.status}`,
          httpStatus: a.status,
          stated: wait !== undefined,
        },
      };
    case "ok":
      return a.json === undefined
        ? done("invalid", "body is not JSON")
        : done("ok", null, VENDOR.row(a.text, a.json));
    case "not_found":
      return done(
        said,
        reason ??
          `HTTP ${a.status}: the vendor says it does not know this target`,
      );
    default:
      return done(
        said,
        reason ?? `the vendor section judged the answer ${said}`,
      );
  }
}

// ============================================================================
// DATABASE: connections, state tables, the target, selection, the one write.
// ============================================================================

/** What a statement is built with (a connection, or a transaction of it). */
type Sql = postgres.TransactionSql;

/** Timeouts, sent as start-up parameters (per transaction behind a pooler). */
interface Timeouts {
  lock: string;
  statement: string;
  /** The client gives up on a statement after this (a silent network). */
  guardMs: number;
}

/** Target writes, the lease and the heartbeat. */
const SHORT: Timeouts = { lock: "5s", statement: "30s", guardMs: 35_000 };

/** Inspection and selection. */
const LONG: Timeouts = { lock: "1min", statement: "10min", guardMs: 605_000 };

/** The least a bounded statement is given, even at the end of the window. */
const GUARD_FLOOR_MS = 1000;

/** A statement, as postgres.js returns it (cancellable when it is a query). */
type Statement<T> = Promise<T> & {
  cancel?: () => unknown;
  execute?: () => unknown;
};

/** The database was lost (or blocked) for longer than `--db-retry`. */
class DbLost extends Error {
  constructor(cause: unknown, retryMs: number) {
    super(
      `the database was unreachable or blocked for longer than --db-retry ${
        formatDuration(retryMs)
      }: ${describeError(cause)}`,
    );
  }
}

/**
 * One connection, fixed timeouts. A statement ends by the server's timeouts, a
 * client-side guard (replacing the connection) or `abort` (cancelling it on the
 * server). Once `retry` is set (after the lease is taken), a lost connection or
 * a lock or statement timeout is retried with backoff for that long.
 */
class Db {
  sql: postgres.Sql;
  retry: { ms: number; log: Logger } | undefined;
  /** Every statement in a read-only transaction (a dry run). */
  readOnly = false;
  /**
   * Behind a pooler in transaction mode (PgBouncer): the next transaction may
   * run on another session, so no start-up parameters or prepared statements.
   */
  pooled = false;
  #open: (pooled: boolean) => postgres.Sql;
  #timeouts: Timeouts;

  constructor(open: (pooled: boolean) => postgres.Sql, timeouts: Timeouts) {
    this.#open = open;
    this.#timeouts = timeouts;
    this.sql = open(false);
  }

  /**
   * Runs a statement, retrying a lost connection for `--db-retry` once `retry`
   * is set. `bounded` (writes, the heartbeat, the run's end): a silent
   * connection is given up on when that window ends, not after the guard.
   */
  async run<T>(
    statement: (sql: Sql) => Statement<T>,
    abort?: AbortSignal,
    bounded = false,
    interactive = false,
  ): Promise<T> {
    const until = performance.now() + (this.retry?.ms ?? 0);
    for (let attempt = 0;; attempt++) {
      try {
        const left = until - performance.now();
        const guardMs = this.retry && bounded
          ? Math.min(this.#timeouts.guardMs, Math.max(left, GUARD_FLOOR_MS))
          : this.#timeouts.guardMs;
        const result = await this.#once(statement, guardMs, abort, interactive);
        if (attempt > 0) this.retry?.log.info("database: back");
        return result;
      } catch (error) {
        const left = until - performance.now();
        if (!this.retry || abort?.aborted || blame(error) !== "connection") {
          throw error;
        }
        if (left <= 0) throw new DbLost(error, this.retry.ms);
        if (attempt === 0) {
          this.retry.log.warn(
            `database: ${describeError(error)}; retrying for up to ${
              formatDuration(this.retry.ms)
            }, the answer in hand is kept`,
          );
        }
        await delay(Math.min(left, 100 * 2 ** Math.min(attempt, 6)), {
          signal: abort,
        }).catch(() => {});
      }
    }
  }

  /** `fn`'s statements in one transaction (the lease, a migration). */
  transaction<T>(fn: (tx: Sql) => Promise<T>, abort?: AbortSignal): Promise<T> {
    return this.run(fn, abort, false, true);
  }

  async #once<T>(
    statement: (sql: Sql) => Statement<T>,
    guardMs: number,
    abort: AbortSignal | undefined,
    interactive: boolean,
  ): Promise<T> {
    abort?.throwIfAborted();
    const sql = this.sql as unknown as Sql;
    const mode = this.readOnly ? "read only" : "";
    // Literals of SHORT or LONG: no parameter, no describe round trip.
    const timeouts =
      `select set_config('lock_timeout', '${this.#timeouts.lock}', true),
      set_config('statement_timeout', '${this.#timeouts.statement}', true)`;
    let inner: Statement<T> | undefined;
    let query: Promise<T>;
    if (interactive || (this.readOnly && !this.pooled)) {
      query = this.sql.begin(mode, async (tx) => {
        if (this.pooled) await tx.unsafe(timeouts);
        return await statement(tx);
      }) as Promise<T>;
    } else if (this.pooled) {
      // One round trip: begin, the timeouts, the statement and commit go
      // out in this order (execute() sends each at once) on the one
      // connection; after a failed statement, commit rolls back.
      const head = [`begin ${mode}`, timeouts].map((q) =>
        sql.unsafe(q).execute()
      );
      inner = statement(sql);
      inner.execute?.();
      query = Promise.all([...head, inner, sql`commit`.execute()])
        .then((results) => results[2] as T);
    } else {
      // The connection's own timeouts apply (start-up parameters).
      query = inner = statement(sql);
    }
    const limit = timeLimit(guardMs, abort);
    try {
      return await abortable(query, limit.signal);
    } catch (error) {
      if (abort?.aborted && error === abort.reason) inner?.cancel?.();
      if (!limit.expired || error !== limit.signal.reason) throw error;
      this.reset();
      const message = `no answer from the database within ${
        formatDuration(guardMs)
      }`;
      throw Object.assign(new Error(message), { code: "CLIENT_TIMEOUT" });
    } finally {
      limit.release();
      query.catch(() => {});
    }
  }

  /** Drops the connection; the next statement opens a new one. */
  reset(): void {
    const old = this.sql;
    this.sql = this.#open(this.pooled);
    old.end({ timeout: 0 }).catch(() => {});
  }

  async end(): Promise<void> {
    await this.sql.end({ timeout: 1 }).catch(() => {});
  }
}

/** Why the run cannot begin: the message, and the exit code to end with. */
type ConnectFailure = { exit: number; message: string };

/**
 * Opens one connection and checks it answers, within `--connect-timeout` in
 * all; SIGINT/SIGTERM (`stop`) end the wait at once.
 */
async function connect(
  target: DatabaseTarget,
  timeouts: Timeouts,
  connectTimeoutMs: number,
  stop: AbortSignal,
): Promise<Db | ConnectFailure> {
  // Defaults spelled out, or postgres.js reads them from PG* variables.
  const options = {
    host: target.host,
    port: target.port,
    database: target.database,
    user: target.user,
    // A function: postgres.js then never falls back to PGPASSWORD.
    pass: () => target.password,
    ssl: target.ssl,
    sslnegotiation: null,
    max: 1,
    idle_timeout: null,
    connect_timeout: Math.max(1, Math.ceil(connectTimeoutMs / 1000)),
    max_lifetime: null,
    max_pipeline: 100,
    debug: false,
    publications: "alltables",
    backoff: (n: number) => Math.min(0.05 * 2 ** n, 2),
    keep_alive: 60,
    fetch_types: true,
    target_session_attrs: target.targetSessionAttrs ?? null,
    onnotice: () => {},
  } as unknown as postgres.Options<Record<string, never>>;
  const db = new Db((pooled) =>
    postgres({
      ...options,
      prepare: !pooled,
      connection: pooled ? target.params : {
        ...target.params,
        lock_timeout: timeouts.lock,
        statement_timeout: timeouts.statement,
      },
    }), timeouts);
  const where = `${target.host}:${target.port}`;
  const expired = AbortSignal.timeout(connectTimeoutMs);
  const signal = AbortSignal.any([stop, expired]);
  // A statement or the retry's wait cut short by the timeout.
  const late = (e: unknown) => expired.aborted && e === expired.reason;
  const codeOf = (e: unknown) => String((e as { code?: unknown })?.code ?? "");
  const refused = /^(28|3D|42|22023)/;
  const ping = () => db.run((sql) => sql`select 1`, signal);
  let last: unknown;
  try {
    // A server not up yet (refused, reset) is tried again until the timeout.
    await retry(
      () =>
        ping().catch((error) => {
          // PgBouncer refuses unknown start-up parameters: pooled from now on.
          if (db.pooled || !/unsupported startup parameter/.test(`${error}`)) {
            throw error;
          }
          db.pooled = true;
          db.reset();
          return ping();
        }),
      {
        maxAttempts: Number.MAX_SAFE_INTEGER,
        minTimeout: 100,
        maxTimeout: 2000,
        isRetriable: (e) =>
          !late(e) && !stop.aborted &&
          !refused.test(codeOf(last = e)),
        signal,
      },
    );
    return db;
  } catch (error) {
    db.sql.end({ timeout: 0 }).catch(() => {});
    if (stop.aborted) throw stop.reason;
    const code = codeOf(error instanceof RetryError ? error.cause : error);
    if (refused.test(code)) {
      return {
        exit: 2,
        message: `${SETTINGS.databaseUrl.env}: the server at ${where} ${
          /^28/.test(code) && target.password === ""
            ? "asks for a password and the URL has none"
            : `refused the connection: ${describeError(error)}`
        }`,
      };
    }
    const within = `within ${
      formatDuration(connectTimeoutMs)
    } (--connect-timeout)`;
    return {
      exit: 1,
      message: !late(error)
        ? `cannot connect to the database at ${where}: ${describeError(error)}`
        : last === undefined || late(last)
        ? `no answer from PostgreSQL at ${where} ${within}: is it a PostgreSQL server, and reachable?`
        : `cannot connect to the database at ${where} ${within}: ${
          describeError(last)
        }`,
    };
  }
}

/** Whose problem a database error is: one target's, the connection's, the run's. */
export function blame(error: unknown): "target" | "connection" | "run" {
  const e = error as { code?: unknown; where?: unknown } | undefined;
  const code = typeof e?.code === "string" ? e.code : "";
  // postgres.js names errors from the server PostgresError; others carry
  // Node-style codes (EPIPE), which look like SQLSTATEs.
  const sqlstate = (error as Error | undefined)?.name === "PostgresError";
  if (
    sqlstate &&
    (/^(22|23|54|P0)/.test(code) ||
      /trigger|function/i.test(String(e?.where ?? "")))
  ) return "target";
  if (
    /^(08|57P0[123]|53300|25006|40001|40P01|55P03|57014)/.test(code) ||
    (!sqlstate &&
      /^(CONNECT|CONNECTION_|CLIENT_TIMEOUT|ERR_|E[A-Z]+$)/.test(code))
  ) return "connection";
  return "run";
}

/** The message of an error, with its code. */
function describeError(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const code = (error as { code?: unknown }).code;
  const shown = typeof code === "string" && !error.message.includes(code);
  return shown ? `${error.message} (${code})` : error.message;
}

/** A column or table name, double-quoted (names are checked by IDENTIFIER). */
function quoted(name: string): string {
  return name.split(".").map((part) => `"${part}"`).join(".");
}

type StateNames = ReturnType<typeof stateNames>;

function stateNames(schema: string | undefined) {
  const name = (table: string) => schema ? `${schema}.${table}` : table;
  return { schema, runs: name("refresh_runs"), state: name("refresh_state") };
}

const RUN_COLUMNS = [
  // total stays null in a run that never selected.
  ...FACTS.map(([key, [column]]) =>
    `${column} bigint${key === "total" ? "" : " not null default 0"}`
  ),
  "credits_remaining bigint",
  "mean_request_ms double precision",
  "p95_request_ms double precision",
  "reason text",
  "error text",
  "lease_ms bigint",
  "not_before timestamptz",
];

/** The state tables' version, kept as the comment on `refresh_runs`. */
const STATE_VERSION = "refresh state tables v2";

/** What one cheap read of the catalog tells of the state tables. */
interface StateCatalog {
  schema: boolean;
  runs: boolean;
  state: boolean;
  /** `refresh_state` has target_table (false before its migration). */
  keyed: boolean;
  /** Both exist, at STATE_VERSION: a run needs no DDL. */
  current: boolean;
}

async function readCatalog(
  db: Db,
  names: StateNames,
  abort: AbortSignal,
): Promise<StateCatalog> {
  const catalog = (sql: Sql) =>
    sql<(Omit<StateCatalog, "current"> & { version: string | null })[]>`
select to_regnamespace(${names.schema ?? "public"}) is not null as schema,
  to_regclass(${quoted(names.runs)}) is not null as runs,
  to_regclass(${quoted(names.state)}) is not null as state,
  exists (
    select 1 from pg_attribute
    where attrelid = to_regclass(${quoted(names.state)})
      and attname = 'target_table' and not attisdropped
  ) as keyed,
  obj_description(to_regclass(${quoted(names.runs)}), 'pg_class') as version`;
  const [row] = await db.run(catalog, abort);
  const { version, ...found } = row!;
  const { runs, state, keyed } = found;
  return {
    ...found,
    current: runs && state && keyed && version === STATE_VERSION,
  };
}

/**
 * The statements that bring the state tables to STATE_VERSION from what the
 * catalog shows: created when missing; an earlier `refresh_runs` gets its
 * new columns, an earlier `refresh_state` (keyed by id alone) gets `table`.
 */
function migration(
  names: StateNames,
  found: StateCatalog,
  table: string,
): string[] {
  const { schema } = names;
  const runs = quoted(names.runs);
  const state = quoted(names.state);
  const literal = (text: string) => `'${text.replaceAll("'", "''")}'`;
  return [
    // Only when missing: even "if not exists" needs a right on the database.
    ...schema && !found.schema ? [`create schema ${quoted(schema)}`] : [],
    `create table if not exists ${runs} (
  id bigint generated always as identity primary key,
  status text not null,
  started_at timestamptz not null default now(),
  finished_at timestamptz,
  heartbeat_at timestamptz not null default now(),
  params jsonb not null default '{}',
  ${RUN_COLUMNS.join(",\n  ")}
)`,
    ...found.runs
      ? RUN_COLUMNS.map((c) =>
        `alter table ${runs} add column if not exists ${c}`
      )
      : [],
    `create table if not exists ${state} (
  target_table text not null,
  target_id text not null,
  status text not null
    check (status in ('ok', 'not_found', 'invalid', 'failed')),
  attempts integer not null,
  http_status integer,
  error text,
  last_attempt_at timestamptz not null,
  last_success_at timestamptz,
  run_id bigint,
  primary key (target_table, target_id)
)`,
    ...found.state && !found.keyed
      ? [
        `alter table ${state} add column target_table text`,
        `update ${state} set target_table = ${literal(table)}`,
        `alter table ${state} alter column target_table set not null`,
        `alter table ${state} drop constraint if exists refresh_state_pkey`,
        `alter table ${state} add primary key (target_table, target_id)`,
      ]
      : [],
    `comment on table ${runs} is ${literal(STATE_VERSION)}`,
  ];
}

/** How long a migration waits for a lock (a report reading the tables). */
const MIGRATION_LOCK_TIMEOUT = "5s";

/**
 * Creates or migrates the state tables (when not current) in one transaction
 * that waits at most MIGRATION_LOCK_TIMEOUT for its locks.
 */
async function migrate(
  db: Db,
  names: StateNames,
  found: StateCatalog,
  table: string,
  abort: AbortSignal,
): Promise<{ done: string } | ConnectFailure & { statements: string[] }> {
  const statements = migration(names, found, table);
  const earlier = found.runs || found.state;
  const tables = `the state tables ${names.runs} and ${names.state}`;
  try {
    await db.transaction(async (tx) => {
      await tx`select set_config('lock_timeout', ${MIGRATION_LOCK_TIMEOUT}, true),
        pg_advisory_xact_lock(hashtext(${`refresh:${names.runs}`}))`;
      for (const statement of statements) await tx.unsafe(statement);
    }, abort);
  } catch (error) {
    const code = (error as { code?: unknown }).code;
    const what = `${tables} are ${
      earlier ? "of an earlier version" : "missing"
    }`;
    if (code === "42501") {
      return {
        exit: 2,
        message: `${SETTINGS.stateSchema.env}: ${what}, and this role may not ${
          earlier ? "migrate" : "create"
        } them (${
          describeError(error)
        }): run refresh once as their owner (or as a role that may create in ${
          names.schema ?? "public"
        }), or have the owner run:`,
        statements,
      };
    }
    if (code === "55P03") {
      return {
        exit: 1,
        message:
          `${what}, and their migration could not take its locks within ${MIGRATION_LOCK_TIMEOUT} (a session is reading or writing them); nothing was changed, the next run tries again`,
        statements: [],
      };
    }
    throw error;
  }
  return {
    done: earlier
      ? `migrated ${tables} to "${STATE_VERSION}"`
      : `created ${tables}`,
  };
}

interface TargetInfo {
  /** The table's one canonical name (`public.people`): the state key. */
  canonical: string;
  /** The id column's type without modifiers, for `--ids`. */
  idType: string;
  /** json or jsonb, or null for `--data-column none`. */
  dataType: string | null;
  map: (Mapped & { column: string; type: string; json: boolean })[];
}

/**
 * Checks the target table, its column types, the URL's lookups (the id aside),
 * the mapped columns and `--where`; each problem names its setting.
 */
async function inspectTarget(
  db: Db,
  c: Config,
  lookups: string[],
  abort: AbortSignal,
): Promise<TargetInfo | string[]> {
  const relation = (sql: Sql) =>
    sql<{ oid: number | null; canonical: string | null }[]>`
      select c.oid::int as oid, quote_ident(n.nspname) || '.' || quote_ident(c.relname) as canonical
      from pg_class c join pg_namespace n on n.oid = c.relnamespace
      where c.oid = to_regclass(${quoted(c.table)})`;
  const [rel] = await db.run(relation, abort);
  if (!rel?.oid) {
    return [`${SETTINGS.table.env}: table ${c.table} does not exist`];
  }
  const attributes = (sql: Sql) =>
    sql<Record<"name" | "type" | "base" | "category" | "typname", string>[]>`
      select attname as name, format_type(atttypid, atttypmod) as type,
        format_type(atttypid, null) as base, t.typcategory as category, t.typname
      from pg_attribute a join pg_type t on t.oid = a.atttypid
      where attrelid = ${rel.oid} and attnum > 0 and not attisdropped`;
  const columns = await db.run(attributes, abort);
  type Column = typeof columns[0];
  const col = new Map(columns.map((x) => [x.name, x]));
  const isJson = (t: Column) => t.typname === "json" || t.typname === "jsonb";
  const mappable = "a text, numeric, boolean, date/time or json type";
  /** Each type a setting's column may need, as its problem names it. */
  const types: Record<string, (t: Column) => boolean> = {
    "jsonb or json": isJson,
    timestamptz: (t) => t.typname.startsWith("timestamp"),
    [mappable]: (t) => "SNBD".includes(t.category) || isJson(t),
  };
  const problems: string[] = [];
  const check = (env: string, column: string, expected?: string) => {
    const found = col.get(column);
    if (!found) {
      problems.push(`${env}: column ${column} does not exist in ${c.table}`);
    } else if (expected && !types[expected]!(found)) {
      problems.push(
        `${env}: expected column ${column} of ${c.table} to be ${expected}, found ${found.type}`,
      );
    }
  };
  check(SETTINGS.idColumn.env, c.idColumn);
  if (c.dataColumn) {
    check(SETTINGS.dataColumn.env, c.dataColumn, "jsonb or json");
  }
  check(SETTINGS.atColumn.env, c.atColumn, "timestamptz");
  for (const name of lookups) check(`${SETTINGS.apiUrl.env}: {${name}}`, name);
  for (const column of c.map?.keys() ?? []) {
    check(SETTINGS.map.env, column, mappable);
  }
  // The selection's own shape: a column the role may not read is a
  // problem now, before the lease, not an abort once the run has begun.
  const sel = { ...c, lookups };
  const read = columnsRead(sel);
  for (const where of c.where ? [undefined, c.where] : [undefined]) {
    if (problems.length > 0) break;
    const explain = (sql: Sql) =>
      sql`explain select ${sql(read)} from ${source(sql, { ...sel, where })}`;
    try {
      await db.run(explain, abort);
    } catch (error) {
      if (blame(error) === "connection") throw error;
      problems.push(
        where
          ? `${SETTINGS.where.env}: ${describeError(error)}`
          : `${SETTINGS.table.env}: cannot read the columns a run reads (${
            read.join(", ")
          }): ${describeError(error)}`,
      );
    }
  }
  if (problems.length > 0) return problems;
  return {
    canonical: rel.canonical!,
    idType: col.get(c.idColumn)!.base,
    dataType: c.dataColumn ? col.get(c.dataColumn)!.typname : null,
    map: [...c.map ?? []].map(([column, mapped]) => ({
      column,
      ...mapped,
      type: col.get(column)!.type,
      json: isJson(col.get(column)!),
    })),
  };
}

/** The longest id recorded; a btree entry holds at most ~2,700 bytes. */
const MAX_ID_BYTES = 2000;

/** A condition a row must meet to be asked for, and the name it is reported by. */
type Need = { name: string; sql: string };

/**
 * What a row needs to be asked for: a value for every required lookup, and
 * optional ones only when every lookup is optional; then one of them.
 */
function lookupNeeds(lookups: string[]): Need[] {
  const has = (l: string) => {
    const column = `t.${quoted(lookupColumn(l))}`;
    return `(${column} is not null and ${column}::text <> '')`;
  };
  const others = lookups.filter((l) => lookupColumn(l) !== "id");
  if (lookups.some((l) => !l.endsWith("?"))) {
    return others.filter((l) => !l.endsWith("?"))
      .map((l) => ({ name: l, sql: has(l) }));
  }
  return others.length === 0 ? [] : [{
    name: others.map(lookupColumn).join(" or "),
    sql: `(${others.map(has).join(" or ")})`,
  }];
}

interface Selection extends Pick<TargetInfo, "canonical" | "idType"> {
  table: string;
  idColumn: string;
  atColumn: string;
  /** Lookups besides the id, as the URL spells them (`email?` optional). */
  lookups: string[];
  /** What a row needs to be asked for; rows without are left out. */
  needs: Need[];
  where: string | undefined;
  state: StateNames;
  /** `refresh_state` exists (a dry run never creates it). */
  hasState: boolean;
  /** It has the target_table column (false before its migration). */
  keyed: boolean;
  /** Skip targets recorded not_found/invalid since this (database time). */
  cutoff: string;
  retryMisses: boolean;
}

type Read = Pick<
  Selection,
  "table" | "where" | "idColumn" | "atColumn" | "lookups"
>;

/** The columns a selection reads: all a role needs SELECT on, with `--where`'s. */
function columnsRead({ idColumn, atColumn, lookups }: Read): string[] {
  return [...new Set([idColumn, atColumn, ...lookups.map(lookupColumn)])];
}

/** The target table, narrowed by `--where` where only its columns are in scope. */
function source(sql: Sql, sel: Read) {
  if (!sel.where) return sql`${sql(sel.table)} t`;
  // One expression: a trailing comment in `--where` ends at the newline.
  const where = sql.unsafe(`(\n${sel.where}\n)`);
  const columns = sql(columnsRead(sel));
  return sql`(select ${columns} from ${sql(sel.table)} where ${where}) t`;
}

function columnsOf(sql: Sql, { idColumn, lookups }: Selection) {
  return sql.unsafe(
    [
      `t.${quoted(idColumn)}::text as id`,
      ...lookups.map((l, i) => `t.${quoted(lookupColumn(l))}::text as l${i}`),
    ].join(", "),
  );
}

function lookupsPresent(sql: Sql, sel: Pick<Selection, "needs">) {
  return sql.unsafe(sel.needs.map((need) => need.sql).join(" and ") || "true");
}

function toTarget(sel: Selection, row: Record<string, string>): Target {
  const values: Target["values"] = { id: row.id! };
  sel.lookups.forEach((l, i) => values[lookupColumn(l)] = row[`l${i}`] ?? null);
  return { id: row.id!, values };
}

/** `ids` as an array of the id column's type: an error if one is not of it. */
function idArray(sql: Sql, sel: Pick<Selection, "idType">, ids: string[]) {
  return sql`${ids}::text[]::${sql.unsafe(sel.idType)}[]`;
}

/** Not a recent known miss (unless `--retry-misses`). */
function notKnownMiss(sql: Sql, sel: Selection) {
  if (!sel.hasState || sel.retryMisses) return sql`true`;
  return sql`not exists (
    select 1 from ${sql(sel.state.state)} s
    where ${sel.keyed ? sql`s.target_table = ${sel.canonical} and` : sql``}
      s.target_id = t.${sql(sel.idColumn)}::text
      and s.status in ('not_found', 'invalid')
      and s.last_attempt_at >= ${sel.cutoff}::text::timestamptz
  )`;
}

/** Never refreshed, or refreshed before the cutoff; or only one of the two. */
function stale(sql: Sql, sel: Selection, only?: "never" | "before") {
  const at = sql`t.${sql(sel.atColumn)}`;
  const never = sql`${at} is null`;
  const before = sql`${at} < ${sel.cutoff}::text::timestamptz`;
  return only ? { never, before }[only] : sql`(${never} or ${before})`;
}

/** How many rows lack each lookup value (they are never asked for). */
type Without = Record<string, number>;

/** Counts the stale targets, and those left out for a missing lookup value. */
async function countStale(
  db: Db,
  sel: Selection,
  abort: AbortSignal,
): Promise<{ total: number; without: Without }> {
  const lacking = sel.needs.map((need, i) =>
    `, count(*) filter (where not ${need.sql})::text as w${i}`
  ).join("");
  const [row] = await db.run((sql) =>
    sql<Record<string, string>[]>`
      select count(*) filter (where ${lookupsPresent(sql, sel)})::text as n
        ${sql.unsafe(lacking)}
      from ${source(sql, sel)}
      where ${stale(sql, sel)} and ${notKnownMiss(sql, sel)}`, abort);
  return {
    total: Number(row!.n),
    without: Object.fromEntries(
      sel.needs.map((need, i) => [need.name, Number(row![`w${i}`])]),
    ),
  };
}

const BATCH_SIZE = 500;

/**
 * Yields the stale targets in keyset-paginated batches: never refreshed first
 * (by id), then stalest first. Each batch is one short query: memory stays flat
 * and no transaction is open while the vendor is asked.
 */
async function* staleBatches(
  db: Db,
  sel: Selection,
  abort: AbortSignal,
): AsyncGenerator<Target[]> {
  for (const only of ["never", "before"] as const) {
    let last: Record<string, string> | undefined;
    while (true) {
      const prev = last;
      const rows = await db.run((sql) => {
        const id = sql`t.${sql(sel.idColumn)}`;
        const at = sql`t.${sql(sel.atColumn)}`;
        const key = only === "never" ? id : sql`${at}, ${id}`;
        const after = !prev
          ? sql``
          : only === "never"
          ? sql`and ${id} > ${prev.id!}`
          : sql`and (${key}) > (${prev.at!}::text::timestamptz, ${prev.id!})`;
        return sql<Record<string, string>[]>`
        select ${columnsOf(sql, sel)}, ${at}::text as at
        from ${source(sql, sel)}
        where ${stale(sql, sel, only)} ${after}
          and ${lookupsPresent(sql, sel)} and ${notKnownMiss(sql, sel)}
        order by ${key} limit ${BATCH_SIZE}`;
      }, abort);
      if (rows.length === 0) break;
      yield rows.map((row) => toTarget(sel, row));
      last = rows.at(-1);
    }
  }
}

/** Given ids that exist and can be asked for, and those that can't. */
interface GivenIds {
  ids: string[];
  unknown: string[];
  without: Without;
}

/**
 * Checks the given ids before the lease: each must be of the id column's
 * type (a configuration error otherwise); ids not in the table (or excluded
 * by `--where`) are reported; rows without a lookup value are left out.
 */
async function resolveIds(
  db: Db,
  sel: Omit<Selection, "cutoff" | "hasState" | "keyed">,
  ids: string[],
  abort: AbortSignal,
): Promise<GivenIds | { bad: string[] }> {
  // False if one of `some` is not of the id column's type.
  const castable = (some: string[]) =>
    db.run((sql) => sql`select ${idArray(sql, sel, some)}`, abort).then(
      () => true,
      (error) => {
        if (blame(error) !== "target") throw error;
        return false;
      },
    );
  const { idColumn, needs } = sel;
  const oks = needs.map((need, i) => `, ${need.sql} as ok${i}`).join("");
  const bad: string[] = [];
  const found = new Map<string, boolean>();
  const without = Object.fromEntries(needs.map(({ name }) => [name, 0]));
  for (let i = 0; i < ids.length; i += BATCH_SIZE) {
    const batch = ids.slice(i, i + BATCH_SIZE);
    if (!await castable(batch)) {
      for (const id of batch) if (!await castable([id])) bad.push(id);
      continue;
    }
    const rows = await db.run((sql) =>
      sql<Record<string, unknown>[]>`
        select t.${sql(idColumn)}::text as id ${sql.unsafe(oks)}
        from ${source(sql, sel)}
        where t.${sql(idColumn)} = any(${idArray(sql, sel, batch)})`, abort);
    for (const row of rows) {
      const lacking = needs.filter((_, i) => !row[`ok${i}`]);
      for (const need of lacking) without[need.name]!++;
      found.set(String(row.id), lacking.length === 0);
    }
  }
  if (bad.length > 0) return { bad };
  return {
    ids: ids.filter((id) => found.get(id) === true),
    unknown: ids.filter((id) => !found.has(id)),
    without,
  };
}

/** Yields the given ids (resolved before) with their lookup values, in order. */
async function* givenBatches(
  db: Db,
  sel: Selection,
  ids: string[],
  abort: AbortSignal,
): AsyncGenerator<Target[]> {
  for (let i = 0; i < ids.length; i += BATCH_SIZE) {
    const batch = ids.slice(i, i + BATCH_SIZE);
    const rows = await db.run((sql) =>
      sql<Record<string, string>[]>`
        select ${columnsOf(sql, sel)} from ${source(sql, sel)}
        where t.${sql(sel.idColumn)} = any(${idArray(sql, sel, batch)})
          and ${lookupsPresent(sql, sel)}`, abort);
    const byId = new Map(rows.map((row) => [row.id!, toTarget(sel, row)]));
    const targets = batch.flatMap((id) => byId.get(id) ?? []);
    if (targets.length > 0) yield targets;
  }
}

interface WritePlan
  extends
    Pick<Selection, "table" | "idColumn" | "atColumn" | "state">,
    Omit<TargetInfo, "idType"> {
  dataColumn: string | null;
  runId: number;
  /** Removes secrets from a text before it is stored. */
  scrub: (text: string) => string;
}

/**
 * The ONE statement, hence transaction, recording a target: its row (for `ok`:
 * the answer as sent, the mapped columns extracted in SQL from that text, the
 * refreshed-at column) and its `refresh_state` row, both only while this run
 * holds the lease. One text for all targets (only parameters vary), built as a
 * string: postgres.js composes no fragments, the server prepares it once.
 */
function storeStatement(plan: WritePlan, id: string, outcome: Outcome) {
  const { status, attempts, httpStatus, error, text } = outcome;
  const ok = status === "ok";
  // $1 to $7 for the state row; for ok, $8 the text, $9 the id, $10… paths.
  const params: unknown[] = [plan.runId, plan.canonical, id, status, attempts];
  params.push(httpStatus, error);
  if (ok) params.push(text, id, ...plan.map.map((m) => m.path));
  // The lease as a scalar subquery: evaluated once, no CTE to materialize.
  const held = `(select status from ${quoted(plan.state.runs)} where id = $1)
    = 'running'`;
  // With a map, the answer is parsed once and read by every mapped column.
  const answer = plan.map.length > 0
    ? "(select t, t::jsonb as j from (select $8::text as t) x) a"
    : "(select $8::text as t) a";
  const sets = [
    ...plan.dataColumn
      ? [`${quoted(plan.dataColumn)} = a.t::${plan.dataType}`]
      : [],
    ...plan.map.map((m, i) => {
      // A JSON null read as json is 'null', not SQL null: nullif for keep.
      const read = `(a.j ${m.json ? "#>" : "#>>"} $${10 + i}::text[])`;
      const raw = m.keep && m.json ? `nullif(${read}, 'null'::jsonb)` : read;
      const value = `${raw}::${baseType(m.type)}`;
      const column = quoted(m.column);
      return `${column} = ${
        m.keep ? `coalesce(${value}, r.${column})` : value
      }`;
    }),
    `${quoted(plan.atColumn)} = now()`,
  ];
  const target = ok
    ? `update ${quoted(plan.table)} r set ${sets.join(", ")} from ${answer}
        where r.${quoted(plan.idColumn)} = $9 and ${held}
        returning 1`
    : "select 1 where false";
  return (sql: Sql) =>
    sql.unsafe<{ held: boolean; updated: number }[]>(
      `with target as (${target}),
    state as (
      insert into ${quoted(plan.state.state)} as s
        (target_table, target_id, status, attempts, http_status, error,
         last_attempt_at, last_success_at, run_id)
      select $2, $3, $4, $5, $6, $7, now(), ${ok ? "now()" : "null"}, $1
      where ${held}
      on conflict (target_table, target_id) do update set
        status = excluded.status,
        attempts = excluded.attempts,
        http_status = excluded.http_status,
        error = excluded.error,
        last_attempt_at = excluded.last_attempt_at,
        last_success_at = coalesce(excluded.last_success_at, s.last_success_at),
        run_id = excluded.run_id
    )
    select ${held} as held, (select count(*) from target)::int as updated`,
      params as postgres.ParameterOrJSON<never>[],
      { prepare: true },
    );
}

/** A type without its modifiers (`character varying(20)` → `character varying`). */
function baseType(type: string): string {
  return type.replace(/\(.*?\)/, "");
}

/** Which part of an answer the database refused, in its own words. */
async function refusal(
  db: Db,
  plan: WritePlan,
  text: string,
  error: unknown,
  abort: AbortSignal,
): Promise<string> {
  const fails = (check: (sql: Sql) => Statement<unknown>) =>
    db.run(check, abort).then(
      () => undefined,
      (e) => blame(e) === "target" ? describeError(e) : undefined,
    );
  if (plan.map.length > 0) {
    const whole = await fails((sql) => sql`select ${text}::text::jsonb`);
    if (whole) return whole;
    for (const m of plan.map) {
      const why = await fails((sql) =>
        sql`select (${text}::text::jsonb ${
          sql.unsafe(m.json ? "#>" : "#>>")
        } ${m.path}::text[])::${sql.unsafe(baseType(m.type))}`
      );
      if (why) return `column ${m.column}: ${why}`;
    }
  }
  return describeError(error);
}

type Written =
  | { id: string; stored: Outcome; refused: boolean; updated: boolean }
  | { stop: Stop };

/**
 * Writes one target, keeping its answer through a lost connection or a blocked
 * statement (retried within `--db-retry`). An answer the database refuses (its
 * data, a constraint, a trigger) is recorded `invalid` with the database's
 * message; an error of the run's (a renamed column, a revoked right) is thrown.
 */
async function store(
  db: Db,
  plan: WritePlan,
  target: Target,
  outcome: Outcome,
  hard: AbortSignal,
): Promise<Written> {
  let current = outcome;
  let refused = false;
  while (true) {
    try {
      const statement = storeStatement(plan, target.id, current);
      const [row] = await db.run(statement, hard, true);
      if (!row) throw new Error("the write returned no row");
      return row.held
        ? { id: target.id, stored: current, refused, updated: row.updated > 0 }
        : { stop: LEASE_LOST };
    } catch (error) {
      if (hard.aborted) return { stop: hard.reason as Stop };
      if (error instanceof DbLost) {
        return { stop: { status: "aborted", reason: error.message } };
      }
      if (blame(error) !== "target") throw error;
      if (current.status !== "ok") {
        // Even the state row was refused: the target's outcome, unrecorded.
        const too = `its state row was refused too: ${describeError(error)}`;
        const stored = {
          ...current,
          error: plan.scrub(`${current.error}; ${too}`),
        };
        return { id: target.id, stored, refused: true, updated: false };
      }
      refused = true;
      const why = await refusal(db, plan, current.text!, error, hard);
      current = {
        ...current,
        status: "invalid",
        text: undefined,
        error: plan.scrub(`the database refused the answer: ${why}`),
      };
    }
  }
}

/** A run that holds the lease, as shown to a run that must wait. */
type LiveRun = { id: string; startedAt: string; heartbeatAt: string };

/**
 * One run at a time. In one transaction locking `refresh_runs` (serializing two
 * starters): runs whose heartbeat is older than their lease are marked
 * `crashed`; a live one left refuses the lease, else this run's row is inserted
 * `running`. A row lease, not an advisory lock: it holds where session locks do
 * not (PGlite). Also reads the vendor's "not before".
 */
async function acquireLease(
  db: Db,
  names: StateNames,
  leaseMs: number,
  params: Record<string, unknown>,
  ignoreNotBefore: boolean,
): Promise<
  | { runId: number; crashed: string[]; notBeforeMs: number; cleared: number }
  | { live: LiveRun }
> {
  return await db.transaction(async (tx) => {
    await tx`lock table ${tx(names.runs)} in share row exclusive mode`;
    const crashed = await tx<{ id: string }[]>`
        update ${tx(names.runs)} set
          status = 'crashed',
          finished_at = now(),
          error = 'no heartbeat since ' || heartbeat_at::text || '; taken over by a later run'
        where status = 'running'
          and heartbeat_at < now() - coalesce(
            lease_ms, (params->>'leaseMs')::bigint, ${leaseMs}
          ) * interval '1 millisecond'
        returning id::text`;
    const [live] = await tx<LiveRun[]>`
        select id::text, started_at::text as "startedAt",
          heartbeat_at::text as "heartbeatAt"
        from ${tx(names.runs)} where status = 'running' order by id limit 1`;
    if (live) return { live };
    const cleared = ignoreNotBefore
      ? (await tx`update ${tx(names.runs)} set not_before = null
            where not_before > now()`).count
      : 0;
    const [run] = await tx<{ id: string; wait: number | null }[]>`
        insert into ${tx(names.runs)} (status, params, lease_ms)
        values ('running', ${tx.json(params as postgres.JSONValue)}, ${leaseMs})
        returning id::text, (
          select extract(epoch from max(not_before) - now()) * 1000
          from ${tx(names.runs)} where not_before > now()
        )::float8 as wait`;
    return {
      runId: Number(run!.id),
      crashed: crashed.map((r) => r.id),
      notBeforeMs: Math.max(0, run!.wait ?? 0),
      cleared,
    };
  });
}

function counterColumns(c: Counters, creditsRemaining: number | undefined) {
  return {
    ...Object.fromEntries(FACTS.map(([key, [column]]) => [column, c[key]])),
    credits_remaining: creditsRemaining ?? null,
  };
}

/** Writes the heartbeat and counters; false once taken over as crashed. */
async function heartbeat(
  db: Db,
  names: StateNames,
  runId: number,
  counters: Counters,
  credits: number | undefined,
): Promise<boolean> {
  const beat = (sql: Sql) =>
    sql`
      update ${sql(names.runs)}
      set heartbeat_at = now(), ${sql(counterColumns(counters, credits))}
      where id = ${runId} and status = 'running' returning 1`;
  return (await db.run(beat, undefined, true)).length > 0;
}

/** Records a run's end: status, counters, cause, and the vendor's "not before". */
async function finishRun(
  db: Db,
  names: StateNames,
  report: RunReport,
  abort: AbortSignal,
): Promise<void> {
  const wait = Math.round(report.notBeforeMs);
  const end = (sql: Sql) =>
    sql`
      update ${sql(names.runs)} set
        status = ${report.status},
        finished_at = now(),
        heartbeat_at = now(),
        ${sql(counterColumns(report.counters, report.creditsRemaining))},
        mean_request_ms = ${report.meanRequestMs ?? null},
        p95_request_ms = ${report.p95RequestMs ?? null},
        reason = ${report.reason},
        error = ${report.status === "aborted" ? report.reason : null},
        not_before = case when ${wait}::bigint > 0
          then now() + ${wait}::bigint * interval '1 millisecond' end
      where id = ${report.runId} and status = 'running'`;
  await db.run(end, abort, true);
}

/** Inserts a run that is over before it began (outside the window). */
async function recordSkippedRun(
  db: Db,
  names: StateNames,
  params: Record<string, unknown>,
  reason: string,
): Promise<number> {
  const [run] = await db.run((sql) =>
    sql<{ id: string }[]>`
      insert into ${sql(names.runs)}
        (status, params, finished_at, total, reason)
      values ('outside_window', ${sql.json(params as postgres.JSONValue)},
        now(), 0, ${reason})
      returning id::text`
  );
  return Number(run!.id);
}

/** Time per target of the last run that processed any, for estimates. */
async function lastPace(
  db: Db,
  names: StateNames,
): Promise<{ runId: string; msPerTarget: number } | undefined> {
  const [row] = await db.run((sql) =>
    sql<{ id: string; ms: number }[]>`
      select id::text, extract(epoch from finished_at - started_at) * 1000 / processed as ms
      from ${sql(names.runs)}
      where finished_at is not null and processed > 0
      order by id desc limit 1`
  );
  return row ? { runId: row.id, msPerTarget: Number(row.ms) } : undefined;
}

// ============================================================================
// OUTPUT: log lines, spans, progress, summaries, annotations.
// ============================================================================

/** Where log lines go; each is scrubbed of secrets, its controls escaped. */
interface Logger {
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
  error(message: string, fields?: Record<string, unknown>): void;
}

type Level = "info" | "warning" | "error";

function createLogger(
  format: "text" | "json",
  write: (line: string, level: Level) => void,
  clean: (text: string) => string,
): Logger {
  const line = (level: Level) => (message: string, fields = {}) =>
    write(
      clean(
        format === "json"
          ? JSON.stringify({
            time: new Date().toISOString(),
            level,
            event: "log",
            message,
            ...fields,
          })
          : `refresh: ${level === "info" ? "" : `${level}: `}${message}`,
      ),
      level,
    );
  return { info: line("info"), warn: line("warning"), error: line("error") };
}

const ENCODER = new TextEncoder();

/**
 * Writes a line to standard error. With OTEL_DENO=true Deno exports console
 * output as log records (console.error as ERROR, console.warn as WARN), and
 * console.info would write to stdout, the summary's: so warnings and errors
 * go through the console, info lines straight to the stream (not exported).
 */
function toStderr(line: string, level: Level = "error"): void {
  if (level === "warning") return console.warn(line);
  if (level === "error") return console.error(line);
  let bytes = ENCODER.encode(`${line}\n`);
  while (bytes.length > 0) bytes = bytes.subarray(Deno.stderr.writeSync(bytes));
}

/**
 * Warns, with OTEL_DENO=true, if the API URL carries lookup values or what the
 * log shows as `***`: Deno's own fetch spans export each full URL (`url.full`,
 * `url.path`, `url.query`), and nothing turns that off.
 */
function warnOfFetchSpans(
  config: Config,
  shownApiUrl: string,
  env: (name: string) => string | undefined,
  log: Logger,
): void {
  let otel: string | undefined;
  try {
    otel = env("OTEL_DENO");
  } catch { /* not in --allow-env: cannot tell, the runtime may export */ }
  const lookups = placeholders(config.apiUrl).map(lookupColumn)
    .filter((l) => l !== "id");
  const carried = [
    ...lookups.length > 0 ? [`the values of ${lookups.join(", ")}`] : [],
    ...shownApiUrl.includes("***") ? ["the API key (or another secret)"] : [],
  ];
  if (!/^true$/i.test(otel ?? "") || carried.length === 0) return;
  log.warn(
    `OTEL_DENO=true: Deno's own spans of the vendor requests export each full URL (url.full, url.path, url.query), with no switch to turn that off; this URL carries ${
      carried.join(" and ")
    } in clear. Send the key in a header (--api-key-header) and the lookups in a request body, or run without OTEL_DENO.`,
  );
}

type Attributes = Record<string, string | number | boolean>;

/** The span methods used here (`Deno.telemetry` types its tracer `any`). */
interface Span {
  setAttributes(attributes: Attributes): void;
  end(): void;
}

const NO_SPAN: Span = { setAttributes() {}, end() {} };

/** The key of the current span in a context, as @opentelemetry/api has it. */
const SPAN_KEY = Symbol.for("OpenTelemetry Context Key SPAN");

let tracer: {
  startSpan(name: string, options: object, context?: unknown): Span;
} | undefined = Deno.telemetry.tracerProvider.getTracer("refresh");

/**
 * Starts a span, a child of `parent` if given; spans never fail a run. Without
 * OTEL_DENO Deno's tracer throws ("otel not initialized"): this and later spans
 * are no-ops. Attributes: ids, counts, statuses; no lookup value, no secret.
 */
function startSpan(name: string, attributes: Attributes, parent?: Span): Span {
  try {
    return tracer?.startSpan(name, { attributes }, parent && within(parent)) ??
      NO_SPAN;
  } catch {
    tracer = undefined;
    return NO_SPAN;
  }
}

/** The current context with `span` as its span. */
function within(span: Span): unknown {
  return Deno.telemetry.contextManager.active().setValue(SPAN_KEY, span);
}

/**
 * Runs `fn` in a span, a child of `parent` and parent of the vendor requests'
 * spans Deno starts meanwhile; ends it with its result's attributes, if any.
 */
async function traced<T>(
  name: string,
  start: Attributes,
  parent: Span,
  fn: () => Promise<T>,
  result: (value: T) => Attributes,
): Promise<T> {
  const span = startSpan(name, start, parent);
  try {
    const value = await (span === NO_SPAN
      ? fn()
      : Deno.telemetry.contextManager.with(within(span), fn));
    span.setAttributes(result(value));
    return value;
  } finally {
    span.end();
  }
}

/** `{ a: 1, b: null }` as `{ "prefix.a": 1 }`: attributes cannot be null. */
function attributes(
  prefix: string,
  values: Record<string, string | number | boolean | null | undefined>,
): Attributes {
  return Object.fromEntries(
    Object.entries(values).flatMap(([k, v]) =>
      v === null || v === undefined ? [] : [[`${prefix}.${k}`, v]]
    ),
  );
}

/** Everything a summary reports. */
interface RunReport {
  runId: number;
  status: RunStatus;
  reason: string | null;
  elapsedMs: number;
  counters: Counters;
  creditsRemaining: number | undefined;
  meanRequestMs: number | undefined;
  p95RequestMs: number | undefined;
  /** How long the vendor asked not to be called, from the end of the run. */
  notBeforeMs: number;
  /** Targets left out: unknown ids, and rows without a lookup value. */
  leftOut: string;
}

function ms(value: number | undefined): string {
  return value === undefined ? "n/a" : formatDuration(value);
}

/** `, 12 remaining` (then `where`), or "" while the vendor has not said. */
function remaining(credits: number | undefined, where = ""): string {
  return credits === undefined ? "" : `, ${credits} remaining${where}`;
}

/** "12 unknown ids, 3 without email", or "". */
function leftOutText(unknown: number, without: Without): string {
  return [
    ...unknown > 0 ? [`${unknown} unknown ids`] : [],
    ...Object.entries(without).filter(([, n]) => n > 0).map(([column, n]) =>
      `${n} without ${column}`
    ),
  ].join(", ");
}

function progressLine(
  c: Counters & { creditsRemaining?: number },
  config: Config,
  gapMs: number,
  elapsedMs: number,
  timeLeftMs: number,
): { text: string; fields: Record<string, unknown> } {
  const perMinute = elapsedMs > 0 ? (c.processed / elapsedMs) * 60_000 : 0;
  const targetsLeft = Math.max(0, c.total - c.processed);
  const etaMs = perMinute > 0 ? (targetsLeft / perMinute) * 60_000 : undefined;
  const spendable = [
    ...config.budget === undefined ? [] : [config.budget - c.credits],
    ...c.creditsRemaining === undefined
      ? []
      : [c.creditsRemaining - (config.reserve ?? 0)],
  ];
  const outlook = forecast({
    elapsedMs,
    timeLeftMs,
    processed: c.processed,
    targetsLeft,
    creditsSpent: c.credits,
    creditsLeft: spendable.length > 0 ? Math.min(...spendable) : undefined,
  });
  const pct = c.total > 0 ? ((c.processed / c.total) * 100).toFixed(1) : "100";
  return {
    text:
      `progress: ${c.processed}/${c.total} (${pct}%), ${c.succeeded} ok, ${c.failed} failed, ${
        c.notFound + c.invalid
      } not_found/invalid, ${c.retries} retries; ${
        perMinute.toFixed(1)
      }/min, ETA ${ms(etaMs)}; credits ${c.credits} spent${
        remaining(c.creditsRemaining)
      }; gap ${formatDuration(gapMs)}; forecast: ${outlook}`,
    fields: {
      event: "progress",
      ...c,
      creditsRemaining: c.creditsRemaining ?? null,
      perMinute: Number(perMinute.toFixed(2)),
      etaMs: etaMs === undefined ? null : Math.round(etaMs),
      gapMs,
      forecast: outlook,
    },
  };
}

function summaryText(r: RunReport): string[] {
  const c = r.counters;
  return [
    `refresh: run ${r.runId} ${r.status} in ${formatDuration(r.elapsedMs)}${
      r.reason ? ` (${r.reason})` : ""
    }`,
    `  targets: ${c.total} selected, ${c.processed} processed: ${c.succeeded} ok, ${c.notFound} not_found, ${c.invalid} invalid, ${c.failed} failed${
      r.leftOut ? `; left out: ${r.leftOut}` : ""
    }`,
    `  credits: ${c.credits} spent${
      remaining(r.creditsRemaining, " at the vendor")
    }`,
    `  requests: ${c.requests} (${c.retries} retries), mean ${
      ms(r.meanRequestMs)
    }, p95 ${ms(r.p95RequestMs)}`,
  ];
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
    leftOut: r.leftOut || null,
    creditsRemaining: r.creditsRemaining ?? null,
    meanRequestMs: r.meanRequestMs ?? null,
    p95RequestMs: r.p95RequestMs ?? null,
  });
}

/** The summary as GitHub-flavoured markdown, for `$GITHUB_STEP_SUMMARY`. */
function summaryMarkdown(r: RunReport): string {
  const c = r.counters;
  const cell = (text: string) => text.replaceAll("|", "\\|");
  const rows = [
    ["Status", `**${r.status}**`],
    ["Why it stopped", r.reason ? cell(r.reason) : "all selected targets done"],
    ["Duration", formatDuration(r.elapsedMs)],
    ...FACTS.map(([key, [, label]]) => [label, `${c[key]}`]),
    ...r.leftOut ? [["Left out", r.leftOut]] : [],
    ["Credits remaining (vendor)", r.creditsRemaining?.toString() ?? "unknown"],
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

/** The exit code: 0 for an expected end, 128 + n after signal n, else 1. */
export function exitCodeFor(status: RunStatus, signal?: number): number {
  if (signal !== undefined) return 128 + signal;
  return EXPECTED_STOPS.has(status) ? 0 : 1;
}

/** A GitHub workflow command; its data and properties escaped. */
function workflowCommand(
  command: string,
  title: string,
  message: string,
): string {
  const data = (text: string) =>
    text.replaceAll("%", "%25").replaceAll("\r", "%0D").replaceAll("\n", "%0A");
  return `::${command} title=${
    data(title).replaceAll(":", "%3A").replaceAll(",", "%2C")
  }::${data(message)}`;
}

/** How main() ends: its exit code, and what a GitHub workflow is told. */
interface Ending {
  code: number;
  /** The run's status, or invalid_configuration, dry_run, busy, aborted. */
  status: string;
  /** Markdown for the step summary (and the `summary` output). */
  summary?: string;
  annotation?: { level: "error" | "notice"; title: string; message: string };
  /** The credit period closed with credits left: someone should hear. */
  creditsLeft?: boolean;
}

/** A dry run's ending: its lines and a notice, so a paused schedule is seen. */
function dryEnding(lines: string[]): Ending {
  return {
    code: 0,
    status: "dry_run",
    summary: `### refresh: dry run\n\n\`\`\`\n${lines.join("\n")}\n\`\`\`\n`,
    annotation: {
      level: "notice",
      title: "refresh: dry run",
      message:
        `a dry run (${SETTINGS.dryRun.env} or --${SETTINGS.dryRun.flag}): no vendor call, nothing written`,
    },
  };
}

/** The ending of a connection that could not be opened. */
function failed({ exit, message }: ConnectFailure, log: Logger): Ending {
  log.error(message);
  if (exit === 2) return invalid([message]);
  return {
    code: exit,
    status: "aborted",
    annotation: { level: "error", title: "refresh aborted", message },
  };
}

/** An exit-2 ending (its problems logged already): annotated and summarized. */
function invalid(problems: string[]): Ending {
  return {
    code: 2,
    status: "invalid_configuration",
    summary: `### refresh: invalid configuration\n\n${
      problems.map((p) => `- ${p.replaceAll("|", "\\|")}`).join("\n")
    }\n`,
    annotation: {
      level: "error",
      title: "refresh: invalid configuration",
      message: problems.join("\n"),
    },
  };
}

/**
 * Tells a workflow running it how the run ended: annotation, step summary and
 * outputs `status`, `exit_code`, `credits_left`, `summary` (for alerting).
 */
async function tellWorkflow(
  e: Ending,
  env: (name: string) => string | undefined,
  print: (lines: string[]) => void,
  log: Logger,
  scrub: (text: string) => string = (text) => text,
): Promise<number> {
  if (e.annotation && env("GITHUB_ACTIONS") === "true") {
    const { level, title, message } = e.annotation;
    print([workflowCommand(level, title, message)]);
  }
  const end = `refresh_${crypto.randomUUID()}`;
  const outputs = [
    `status=${e.status}`,
    `exit_code=${e.code}`,
    `credits_left=${e.creditsLeft ?? false}`,
    `summary<<${end}`,
    e.summary ?? "",
    end,
  ].join("\n");
  const files = { GITHUB_STEP_SUMMARY: e.summary, GITHUB_OUTPUT: outputs };
  for (const [name, text] of Object.entries(files)) {
    const path = env(name);
    if (!path || text === undefined) continue;
    try {
      await Deno.writeTextFile(path, `${scrub(text)}\n`, { append: true });
    } catch (error) {
      log.warn(
        `cannot write ${name} (run through the refresh:ci task, which may write it): ${
          (error as Error).message
        }`,
      );
    }
  }
  return e.code;
}

// ============================================================================
// LEAF HELPERS: durations, sizes, headers, time, pace, URLs, secrets.
// ============================================================================

type TimeLimit = ReturnType<typeof timeLimit>;

/**
 * A signal aborted after `ms` (then `expired`) or with `abort`, until
 * `release`. Not `AbortSignal.timeout`/`any`: nothing can clear their timer,
 * which held every request's and statement's signal for its whole timeout
 * (100,000 targets: 413 MiB at peak against 168 for 10,000, in the bench).
 */
function timeLimit(ms: number, abort?: AbortSignal) {
  const controller = new AbortController();
  let expired = false;
  const timer = setTimeout(() => {
    expired = !controller.signal.aborted;
    controller.abort(new DOMException("timed out", "TimeoutError"));
  }, ms);
  const onAbort = () => controller.abort(abort!.reason);
  if (abort?.aborted) onAbort();
  abort?.addEventListener("abort", onAbort, { once: true });
  return {
    signal: controller.signal,
    get expired() {
      return expired;
    },
    release() {
      clearTimeout(timer);
      abort?.removeEventListener("abort", onAbort);
    },
  };
}

/** `250ms`, `30s`, `5m`, `2h`, `25d`, `5h30m` or `0`, in milliseconds. */
export function parseDuration(text: string): number | undefined {
  const trimmed = text.trim();
  if (trimmed === "0") return 0;
  if (!/^(\d+(\.\d+)?(ms|s|m|h|d))+$/.test(trimmed)) return undefined;
  let total = 0;
  for (const [, n, unit] of trimmed.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h|d)/g)) {
    // s, m, h and d are the short names of rate windows too.
    total += Number(n) * (unit === "ms" ? 1 : WINDOWS[unit!]!);
  }
  return Number.isFinite(total) ? Math.round(total) : undefined;
}

/** Milliseconds as `1h2m3s` or `450ms`. */
export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms)) return String(ms);
  if (ms < 1000) return `${Math.max(0, Math.round(ms))}ms`;
  let seconds = Math.round(ms / 1000);
  let text = "";
  for (const [unit, size] of [["d", 86400], ["h", 3600], ["m", 60]] as const) {
    if (seconds >= size) text += `${Math.floor(seconds / size)}${unit}`;
    seconds %= size;
  }
  // At least 1 s: with no larger unit, some seconds are left.
  return seconds > 0 ? `${text}${seconds}s` : text;
}

/** Bytes per unit, in lower case: SI multiples of 1000, IEC ones of 1024. */
const BYTE_UNITS: Record<string, number> = {
  ...{ "": 1, b: 1, kb: 1_000, mb: 1_000_000, gb: 1_000_000_000 },
  ...{ kib: 1024, mib: 1024 ** 2, gib: 1024 ** 3 },
};

/** A whole number with an optional unit (`B`, `KB`… `GiB`, any case). */
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
 * `Retry-After` (RFC 9110, section 10.2.3), delay-seconds or an HTTP-date,
 * as a wait in milliseconds (0 for a date in the past).
 */
export function parseRetryAfter(value: string | null, now = new Date()) {
  if (value === null) return undefined;
  const text = value.trim();
  if (/^\d+$/.test(text)) {
    // Longer than any timer can wait: the run stops rather than ignore it.
    const ms = Number(text) * 1000;
    return Number.isSafeInteger(ms) ? ms : Infinity;
  }
  const at = httpDate(text);
  return at === undefined ? undefined : Math.max(0, at - now.getTime());
}

/** An HTTP date (RFC 9110) in milliseconds since the epoch. */
function httpDate(text: string): number | undefined {
  if (!HTTP_DATE.test(text)) return undefined;
  // asctime has no zone; RFC 9110 says it is UTC.
  const at = Date.parse(text.endsWith("GMT") ? text : `${text} GMT`);
  return Number.isNaN(at) ? undefined : at;
}

class BodyTooLargeError extends Error {
  constructor(maxBytes: number) {
    super(`body is larger than the ${maxBytes}-byte cap (--max-body)`);
    this.name = "BodyTooLargeError";
  }
}

export async function readCappedBody(
  body: ReadableStream<Uint8Array> | null,
  maxBytes: number,
): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let size = 0;
  // Leaving the loop (the throw) cancels the stream at once.
  for await (const chunk of body ?? []) {
    size += chunk.byteLength;
    if (size > maxBytes) throw new BodyTooLargeError(maxBytes);
    chunks.push(chunk);
  }
  return await new Blob(chunks as BlobPart[]).bytes();
}

/** `at` as a date and time in `timeZone` (validated by the settings). */
function zoned(at: Date, timeZone: string): Temporal.ZonedDateTime {
  return at.toTemporalInstant().toZonedDateTimeISO(timeZone);
}

/** The instant the next month starts in `timeZone`: credits reset then. */
export function periodEnd(now: Date, timeZone: string): Date {
  // A PlainDate's toZonedDateTime is the day's first instant: the earlier
  // midnight where it repeats, the end of the jump where clocks skip it.
  const next = zoned(now, timeZone).toPlainDate().with({ day: 1 })
    .add({ months: 1 }).toZonedDateTime(timeZone);
  return new Date(next.epochMilliseconds);
}

/**
 * Whether `now` is within the last `days` days of its month. Cron has no "last
 * day of the month", so a schedule fires on days 25–31 and the run decides.
 */
export function monthEndWindow(now: Date, timeZone: string, days: number) {
  const { day, daysInMonth } = zoned(now, timeZone);
  const firstDay = Math.max(1, daysInMonth - days + 1);
  return { inWindow: day >= firstDay, day, daysInMonth, firstDay };
}

// ---------------------------------------------------------------------------
// Vendor headers: credits and rate limits.
// ---------------------------------------------------------------------------

/**
 * The values of a header that may come duplicated (`a, b`): split at the
 * commas only where every piece can be read (HTTP dates and JSON have
 * commas of their own), else read whole.
 */
function pieces<T>(value: string, read: (text: string) => T | undefined) {
  const each = value.split(/,(?![^{]*\})(?!\s*\d{2}[ -][A-Za-z]{3}[ -])/)
    .map((part) => read(part.trim()));
  if (each.every((x) => x !== undefined)) return each as T[];
  const whole = read(value.trim());
  return whole === undefined ? undefined : [whole];
}

/** A whole number, negative too (some vendors overshoot their counts). */
function integer(text: string): number | undefined {
  return /^-?\d+$/.test(text) ? Number(text) : undefined;
}

/** A whole number, not negative, exact as a double. */
function count(text: string): number | undefined {
  return /^\d+$/.test(text) && Number.isSafeInteger(+text) ? +text : undefined;
}

/** A count header (credits remaining, spent): duplicated, its smallest. */
export function readCount(headers: Headers, name: string) {
  const value = headers.get(name);
  if (value === null) return undefined;
  const values = pieces(value, count);
  return values ? Math.min(...values) : "unreadable";
}

const ISO_8601 =
  /^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})$/i;

/**
 * A rate-limit reset as a wait in milliseconds (0 for a time past): delta
 * seconds, a Unix time in seconds or in milliseconds (told apart by their
 * magnitude against `now`), an HTTP date or an ISO 8601 time.
 */
export function parseReset(text: string, now: number): number | undefined {
  if (/^\d+(\.\d+)?$/.test(text)) {
    const n = Number(text);
    const near = (ms: number) => Math.abs(ms - now) < now / 2;
    const ms = near(n) ? n - now : near(n * 1000) ? n * 1000 - now : n * 1000;
    return Number.isFinite(ms) ? Math.max(0, ms) : undefined;
  }
  const at = httpDate(text) ??
    (ISO_8601.test(text) ? Date.parse(text.replace(" ", "T")) : NaN);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

/** Requests left per window (`""` when unnamed): `0` or `{"minute": 0}`. */
function remainingOf(text: string): Map<string, number> | undefined {
  const n = integer(text);
  if (n !== undefined) return new Map([["", n]]);
  try {
    // PDL's documentation shows it as a Python dict: {'minute': 0}.
    const dict = text.replaceAll("'", '"').replace(/\bNone\b/g, "null");
    const json = JSON.parse(dict);
    const entries = Object.entries(json ?? []).filter(([, v]) => v !== null);
    return typeof json === "object" && !Array.isArray(json) &&
        entries.length > 0 && entries.every(([, v]) => Number.isInteger(v))
      ? new Map(entries as [string, number][])
      : undefined;
  } catch {
    return undefined;
  }
}

/** The parameters of a structured-field item (`"default";r=0;t=30`). */
function itemOf(text: string): Map<string, string> | undefined {
  const [name = "", ...params] = text.split(";").map((p) => p.trim());
  if (!/^("[^"]*"|[\w.*-]+(=\w+)?)$/.test(name)) return undefined;
  const map = new Map([["", name.replace(/^"|"$/g, "")]]);
  for (const param of name.includes("=") ? [name, ...params] : params) {
    const [key, value] = param.split("=");
    if (!key || value === undefined) return undefined;
    map.set(key.trim().toLowerCase(), value.trim());
  }
  return map;
}

/** Milliseconds from `now` to the start of the next `window` (UTC). */
function untilNextWindow(window: string, now: number): number | undefined {
  const length = WINDOWS[window.toLowerCase()];
  return length === undefined ? undefined : length - (now % length);
}

interface RateLimit {
  /** A window is spent: the wait until it resets, in milliseconds. */
  spentMs?: number;
  /** The latest reset stated, spent or not, in milliseconds. */
  resetMs?: number;
  /** Recognised headers that could not be read. */
  unreadable: string[];
}

/**
 * The rate-limit headers of an answer, in every common dialect:
 * `X-RateLimit-Remaining` / `RateLimit-Remaining` (a number, or JSON per
 * window like `{"minute": 0}`) with `X-RateLimit-Reset` / `RateLimit-Reset`
 * (see {@linkcode parseReset}); `x-minute-requests-left` (also `hourly`,
 * `daily`…) without a reset; the IETF draft's `RateLimit: "default";r=0;t=30`
 * with `RateLimit-Policy: "default";q=100;w=60` (and its older
 * `RateLimit: limit=100, remaining=0, reset=30`). A spent window waits for
 * the reset stated, else for the next window of its name. Duplicated
 * headers give the most restrictive value. `X-RateLimit-Limit` alone says
 * nothing about when to call.
 */
export function readRateLimit(headers: Headers, now: number): RateLimit {
  const unreadable: string[] = [];
  const read = <T>(name: string, parse: (text: string) => T | undefined) => {
    const value = headers.get(name);
    const values = value === null ? [] : pieces(value, parse);
    if (!values) unreadable.push(name);
    return values ?? [];
  };
  const spent: (number | undefined)[] = [];
  const resets: number[] = [];
  for (const prefix of ["x-ratelimit", "ratelimit"]) {
    const reset = read(`${prefix}-reset`, (t) => parseReset(t, now));
    resets.push(...reset);
    const at = largest(reset);
    for (const windows of read(`${prefix}-remaining`, remainingOf)) {
      for (const [window, left] of windows) {
        if (left <= 0) spent.push(at ?? untilNextWindow(window, now));
      }
    }
  }
  for (const [name] of headers) {
    const window = /^x-(.+)-requests-left$/.exec(name)?.[1];
    if (window === undefined) continue;
    if (read(name, integer).some((left) => left <= 0)) {
      const wait = untilNextWindow(window, now);
      if (wait === undefined) unreadable.push(name);
      spent.push(wait);
    }
  }
  const windows = new Map<string, number>();
  for (const p of read("ratelimit-policy", itemOf)) {
    const w = Number(p.get("w"));
    if (w > 0) windows.set(p.get("")!, w * 1000);
  }
  const items = read("ratelimit", itemOf);
  // The older dictionary form: limit=100, remaining=0, reset=30.
  const dictionary = new Map(items.flatMap((i) => [...i].slice(1)));
  for (const item of dictionary.has("remaining") ? [dictionary] : items) {
    const r = item.get("r") ?? item.get("remaining");
    const t = item.get("t") ?? item.get("reset");
    const reset = /^\d+$/.test(t ?? "") ? Number(t) * 1000 : undefined;
    if (reset !== undefined) resets.push(reset);
    if (r !== undefined && Number(r) <= 0) {
      spent.push(
        reset ?? windows.get(item.get("")!) ?? largest([...windows.values()]),
      );
    }
  }
  const spentMs = largest(spent.filter((ms) => ms !== undefined));
  return { spentMs, resetMs: largest(resets), unreadable };
}

function largest(values: number[]): number | undefined {
  return values.length > 0 ? Math.max(...values) : undefined;
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
  count = 0;
  /** Milliseconds. */
  total = 0;

  add(ms: number): void {
    const bucket = Math.ceil(Math.log1p(Math.max(0, ms)) / Math.log(1.05));
    this.#buckets.set(bucket, (this.#buckets.get(bucket) ?? 0) + 1);
    this.count++;
    this.total += ms;
  }

  mean(): number | undefined {
    return this.count > 0 ? this.total / this.count : undefined;
  }

  /** `p` between 0 and 1 (0.95 for p95); a bucket's upper edge. */
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

interface ForecastInput {
  elapsedMs: number;
  /** Until the deadline. */
  timeLeftMs: number;
  processed: number;
  targetsLeft: number;
  creditsSpent: number;
  /** Budget or the vendor's remaining less reserve, if known. */
  creditsLeft: number | undefined;
}

/**
 * One sentence: at the current pace, will the run spend its budget (or run
 * out of targets) before its deadline, or roughly what will be left.
 */
export function forecast(input: ForecastInput): string {
  const { elapsedMs, timeLeftMs, processed, targetsLeft, creditsLeft } = input;
  if (processed === 0 || elapsedMs <= 0) return "too early to tell";
  const targetsPerMs = processed / elapsedMs;
  const creditsPerTarget = input.creditsSpent / processed;
  const targetsByDeadline = targetsPerMs * timeLeftMs;
  const finishMs = targetsLeft / targetsPerMs;
  // The credits left after that many more targets at this pace.
  const after = (targets: number) =>
    Math.round(creditsLeft! - targets * creditsPerTarget);
  const budgeted = creditsLeft !== undefined && creditsPerTarget > 0;
  const targetsForBudget = creditsLeft! / creditsPerTarget;
  if (budgeted && targetsForBudget <= targetsLeft) {
    const spentIn = formatDuration(targetsForBudget / targetsPerMs);
    return targetsForBudget <= targetsByDeadline
      ? `budget spent in ~${spentIn}, before the deadline`
      : `~${after(targetsByDeadline)} credits unspent at the deadline`;
  }
  const done = `done in ~${formatDuration(finishMs)}`;
  if (finishMs <= timeLeftMs) {
    return budgeted
      ? `targets ${done}, ~${after(targetsLeft)} credits left unspent`
      : `all targets ${done}, before the deadline`;
  }
  const credits = creditsLeft === undefined
    ? ""
    : `, ~${Math.max(0, after(targetsByDeadline))} credits unspent`;
  const left = Math.round(targetsLeft - targetsByDeadline);
  return `~${left} targets left at the deadline${credits}`;
}

// ---------------------------------------------------------------------------
// Pacing: one request start at a time, never sooner than allowed.
// ---------------------------------------------------------------------------

interface PacerOptions {
  /** Least time between two request starts. */
  minIntervalMs: number;
  /** Largest gap adaptive pacing may widen to; 60 s by default. */
  maxGapMs?: number;
  /** Monotonic clock in milliseconds; `performance.now` by default. */
  now?: () => number;
}

/** Smallest gap after the vendor pushed back. */
const PUSHBACK_MIN_GAP_MS = 100;

/**
 * Decides when the next vendor request may start: not before the current
 * gap after the previous start, and not before any time the vendor asked
 * for (`Retry-After`, rate-limit resets).
 *
 * The gap adapts: each push-back from the vendor doubles it, and each
 * success halves what it has above `minIntervalMs`, so a burst of 429s
 * slows the next few requests, not the rest of the run.
 */
export class Pacer {
  #minIntervalMs: number;
  #maxGapMs: number;
  #gapMs: number;
  #now: () => number;
  // The first request may start at once.
  #lastStart = -Infinity;
  #notBefore = -Infinity;

  constructor(
    { minIntervalMs, maxGapMs = 60_000, now = () => performance.now() }:
      PacerOptions,
  ) {
    if (!(minIntervalMs >= 0)) {
      throw new RangeError(
        `Cannot pace requests: 'minIntervalMs' must be >= 0, current value is ${minIntervalMs}`,
      );
    }
    this.#minIntervalMs = this.#gapMs = minIntervalMs;
    this.#maxGapMs = Math.max(maxGapMs, minIntervalMs);
    this.#now = now;
  }

  get gapMs(): number {
    return this.#gapMs;
  }

  /** The next request waits at least `ms` from now. */
  deferFor(ms: number): void {
    this.#notBefore = Math.max(this.#notBefore, this.#now() + ms);
  }

  /** How long the vendor asked not to be called from now. */
  vendorWaitMs(): number {
    return Math.max(0, this.#notBefore - this.#now());
  }

  /** The vendor pushed back (429, or 503 with Retry-After): widen the gap. */
  pushBack(): void {
    const doubled = Math.max(this.#gapMs * 2, PUSHBACK_MIN_GAP_MS);
    this.#gapMs = Math.min(this.#maxGapMs, doubled);
  }

  /** A request succeeded: halve the gap's excess over the minimum. */
  relax(): void {
    const excess = (this.#gapMs - this.#minIntervalMs) / 2;
    this.#gapMs = this.#minIntervalMs + (excess < 1 ? 0 : excess);
  }

  /** Milliseconds; 0 when the next request may start at once. */
  pendingWait(): number {
    const at = Math.max(this.#lastStart + this.#gapMs, this.#notBefore);
    return Math.max(0, at - this.#now());
  }

  /** Waits until the next request may start, then records its start. */
  async wait(signal?: AbortSignal): Promise<void> {
    signal?.throwIfAborted();
    const ms = this.pendingWait();
    if (ms > 0) await delay(ms, signal ? { signal } : undefined);
    this.#lastStart = this.#now();
  }
}

// ---------------------------------------------------------------------------
// URLs and secrets.
// ---------------------------------------------------------------------------

/** The parts of `DATABASE_URL` handed to postgres.js. */
interface DatabaseTarget {
  host: string;
  /** 5432 by default. */
  port: number;
  /** The user name by default. */
  database: string;
  user: string;
  /** Decoded; may be empty. */
  password: string;
  /** postgres.js `ssl` from `sslmode`. */
  ssl: false | "prefer" | "require" | "verify-full";
  /** Start-up parameters: application_name, options and server settings. */
  params: Record<string, string>;
  /** Which server of several to use (libpq's target_session_attrs). */
  targetSessionAttrs: string | undefined;
  /** The URL with its password replaced by `***`, for logs. */
  redacted: string;
}

const SSL_MODES: Record<string, DatabaseTarget["ssl"]> = {
  ...{ disable: false, allow: "prefer", prefer: "prefer", require: "require" },
  // postgres.js verifies the chain and the host name for both.
  ...{ "verify-ca": "verify-full", "verify-full": "verify-full" },
};

/** libpq's URL parameters that are not honoured: refused, never ignored. */
const LIBPQ_REFUSED = new Set(
  ("host hostaddr port passfile require_auth channel_binding connect_timeout " +
    "client_encoding fallback_application_name keepalives keepalives_idle " +
    "keepalives_interval keepalives_count tcp_user_timeout replication " +
    "gssencmode requiressl sslnegotiation sslcompression sslcert sslkey " +
    "sslpassword sslcertmode sslrootcert sslcrl sslcrldir sslsni requirepeer " +
    "ssl_min_protocol_version ssl_max_protocol_version krbsrvname gsslib " +
    "gssdelegation service load_balance_hosts statement_timeout lock_timeout")
    .split(" "),
);

/** Parses `DATABASE_URL` without ever putting its credentials in a message. */
export function parseDatabaseUrl(
  text: string,
): DatabaseTarget | { error: string } {
  const fail = (error: string) => ({ error });
  // Between the scheme's :// and the last @: the user name and password.
  if (/[@/?#]/.test(/:\/\/(.*)@/s.exec(text)?.[1] ?? "")) {
    return fail(
      "percent-encode special characters in the password (and user name): @ / ? # (value not shown)",
    );
  }
  const url = URL.parse(text);
  if (!url) return fail("expected a postgres:// URL (value not shown)");
  if (url.protocol !== "postgres:" && url.protocol !== "postgresql:") {
    const found = JSON.stringify(url.protocol);
    return fail(`expected the scheme postgres: or postgresql:, found ${found}`);
  }
  if (!url.hostname) return fail("expected a host name (value not shown)");
  const params: Record<string, string> = { application_name: "refresh" };
  const query: Record<string, string> = {};
  let ssl: DatabaseTarget["ssl"] = false;
  for (const [key, value] of url.searchParams) {
    if (key === "sslmode") {
      if (!(value in SSL_MODES)) {
        const modes = Object.keys(SSL_MODES).join(", ");
        const found = JSON.stringify(value);
        return fail(`expected sslmode to be one of ${modes}, found ${found}`);
      }
      ssl = SSL_MODES[value] ?? ssl;
    } else if (LIBPQ_REFUSED.has(key)) {
      const instead = key === "connect_timeout"
        ? `; use ${SETTINGS.connectTimeout.env}`
        : key.startsWith("ssl")
        ? "; use sslmode=verify-full with a CA the system trusts"
        : key.endsWith("_timeout")
        ? "; refresh sets it itself (short for writes, longer for the selection)"
        : "";
      return fail(`the parameter ${key} is not supported${instead}`);
    } else if (/^(user|password|dbname|target_session_attrs)$/.test(key)) {
      query[key] = value;
    } else params[key] = value;
  }
  const tsa = query.target_session_attrs;
  if (tsa && !/^(read-(write|only)|primary|(prefer-)?standby)$/.test(tsa)) {
    return fail(
      "expected target_session_attrs to be read-write, read-only, primary, " +
        `standby or prefer-standby, found ${JSON.stringify(tsa)}`,
    );
  }
  let user: string, password: string, database: string;
  try {
    user = query.user ?? decodeURIComponent(url.username);
    password = query.password ?? decodeURIComponent(url.password);
    database = query.dbname ??
      (decodeURIComponent(url.pathname.slice(1)) || user);
  } catch {
    return fail(
      "expected URL-encoded credentials and database name (value not shown)",
    );
  }
  if (!user) return fail("expected a user name (value not shown)");
  // What is left to read of url (host and port) stays as it is.
  if (url.password) url.password = "***";
  if (query.password !== undefined) url.searchParams.set("password", "***");
  return {
    host: url.hostname.replace(/^\[(.*)\]$/, "$1"),
    port: url.port ? Number(url.port) : 5432,
    database,
    user,
    password,
    ssl,
    params,
    targetSessionAttrs: tsa,
    redacted: url.href,
  };
}

function parseApiUrl(text: string): string | { error: string } {
  const fail = (error: string) => ({ error });
  const url = URL.parse(text.replace(PLACEHOLDER, "x"));
  const found = JSON.stringify(text);
  if (!url) return fail(`expected an http(s) URL template, found ${found}`);
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    return fail(`expected http: or https:, found ${url.protocol}`);
  }
  if (new URL(text.replace(PLACEHOLDER, "y")).host !== url.host) {
    return fail("expected placeholders in the path or query, not in the host");
  }
  const query = queryStart(text);
  const misplaced = text.matchAll(PLACEHOLDER).find((m) =>
    m[2] && (m.index < query ||
      !/^[^&=#]+=$/.test(text.slice(0, m.index).split(/[?&]/).at(-1)!) ||
      !/^(&|#|$)/.test(text.slice(m.index + m[0].length)))
  )?.[0];
  if (!misplaced) return text;
  return fail(
    `${misplaced}: an optional placeholder must be a whole value of the query, like ?email=${misplaced}`,
  );
}

/**
 * The password and any query parameter whose name suggests a secret become
 * `***`. Text that is not a URL becomes `(unparsable URL)`: it may hold
 * anything.
 */
export function redactUrl(url: string): string {
  const parsed = URL.parse(url);
  if (!parsed) return "(unparsable URL)";
  if (parsed.password) parsed.password = "***";
  for (const name of [...parsed.searchParams.keys()]) {
    if (/pass|secret|token|key|auth|sig/i.test(name)) {
      parsed.searchParams.set(name, "***");
    }
  }
  // URL escapes the braces of a template; keep them readable.
  return parsed.href.replace(/%7B([A-Za-z_][A-Za-z0-9_$]*)%7D/g, "{$1}");
}

/** Secrets shorter than this are not searched for (they'd mangle text). */
const MIN_SCRUBBED_LENGTH = 4;

/**
 * The forms a secret may take in text: raw, percent-encoded (as
 * `encodeURIComponent` and as a URL parser does it, in a path or a query),
 * form-encoded, JSON-escaped and base64.
 */
function secretForms(secret: string): string[] {
  const bytes = new TextEncoder().encode(secret);
  const base64 = [0, 1, 2].map((pad) => {
    const padded = new Uint8Array(pad + bytes.length);
    padded.set(bytes, pad);
    // Skip the characters that depend on what comes before or after it.
    return padded.toBase64({ omitPadding: true }).slice([0, 2, 3][pad], -2);
  });
  return [
    ...new Set([
      secret,
      encodeURIComponent(secret),
      URL.parse(`http://x/${secret}`)?.pathname.slice(1) ?? secret,
      URL.parse(`http://x/?${secret}`)?.search.slice(1) ?? secret,
      new URLSearchParams({ k: secret }).toString().slice(2),
      JSON.stringify(secret).slice(1, -1),
    ]),
    ...base64,
  ];
}

/**
 * Replaces every fragment of a secret by `***`: any run of 8 of its characters
 * (the whole secret when shorter), raw, percent-encoded or base64. The last
 * line of defence: every line printed and every error stored passes through it.
 * Text from outside (a vendor's answer, a database's error) is searched in runs
 * of `least` too, down to half of a short secret; our own text is not, so that
 * a password such as `postgres` does not mangle "PostgreSQL". Parts of the text
 * equal to one of `keep` (redacted by position already, like a URL whose
 * password is `***`) are left as they are.
 */
export function scrubSecrets(
  text: string,
  secrets: readonly string[],
  keep: readonly string[] = [],
  least = 8,
): string {
  const kept = keep.filter((k) => k !== "");
  if (kept.length > 0) {
    // Split at a capturing group: the kept parts are the odd pieces.
    return text.split(new RegExp(`(${kept.map(RegExp.escape).join("|")})`))
      .map((part, i) => i % 2 ? part : scrubSecrets(part, secrets, [], least))
      .join("");
  }
  const hidden = new Uint8Array(text.length);
  for (const secret of secrets) {
    if (secret.length < MIN_SCRUBBED_LENGTH) continue;
    const half = Math.ceil(secret.length / 2);
    const n = Math.min(secret.length, 8, Math.max(least, half));
    const fragments = new Set<string>();
    for (const form of secretForms(secret)) {
      for (let i = 0; i + n <= form.length; i++) {
        fragments.add(form.slice(i, i + n));
      }
    }
    for (let i = 0; i + n <= text.length; i++) {
      if (fragments.has(text.slice(i, i + n))) hidden.fill(1, i, i + n);
    }
  }
  if (!hidden.includes(1)) return text;
  // Each run of hidden characters becomes one ***.
  return text.replace(
    /[^]/g,
    (c, i: number) => hidden[i] ? (hidden[i - 1] ? "" : "***") : c,
  );
}

const CONTROL_ESCAPES = new Map([["\n", "\\n"], ["\r", "\\r"], ["\t", "\\t"]]);

/**
 * Escapes control characters, so that no value (a target id, a vendor's text)
 * can break a log line or start a line GitHub reads as a workflow command.
 */
export function escapeControls(line: string): string {
  return line.replace(
    // deno-lint-ignore no-control-regex
    /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g,
    (c) =>
      CONTROL_ESCAPES.get(c) ??
        `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
}

if (import.meta.main) Deno.exit(await main());
