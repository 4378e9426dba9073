/**
 * `deno task demo`: watch refresh do a month-end run, on your machine, in
 * under a minute, with nothing to set up.
 *
 * It starts an embedded PostgreSQL (PGlite, or the server named by
 * `DEMO_DATABASE_URL`), fills `demo.people` with a few hundred rows, starts
 * a fake vendor on 127.0.0.1 with realistic latency and a little trouble
 * (transient 5xx, one 429 with `Retry-After: 1`, a few 404s, one malformed
 * body, one id down for the whole first run, a credits counter), and runs
 * the real job as a user would: `deno task refresh`, its output shown as
 * is. Then it shows what the job stored, and runs it a second time on the
 * same data to show that it resumes: only what failed is asked again.
 *
 * ```sh
 * deno task demo                        # 300 people, 20 ms vendor latency
 * deno task demo --people 1000 --latency 5
 * ```
 *
 * Exits 0, or with the exit code of a refresh run that did not succeed.
 *
 * @module
 */

import { parseArgs } from "@std/cli/parse-args";
import type postgres from "postgres";
import { type FakeVendor, type Reply, startFakeVendor } from "./fake_vendor.ts";
import {
  createPeople,
  ROOT,
  startTestDatabase,
  type TestDatabase,
} from "./test_db.ts";

/** Schema holding the demo's people table and the state tables. */
export const DEMO_SCHEMA = "demo";

/** Requests per target the demo allows refresh (`REFRESH_MAX_ATTEMPTS`). */
export const DEMO_MAX_ATTEMPTS = 4;

/** Credits the fake vendor's account starts with. */
export const DEMO_CREDITS = 5_000;

/** Settings of one demo. */
export interface DemoOptions {
  /** Rows in `demo.people`. */
  people: number;
  /** Vendor latency per request, in milliseconds. */
  latencyMs: number;
}

/** What the command line asked for. */
export type DemoArgs =
  | { kind: "run"; options: DemoOptions }
  | { kind: "help" }
  | { kind: "error"; message: string };

/** The `--help` text. */
export const DEMO_USAGE = `Usage: deno task demo [--people N] [--latency MS]

Runs refresh twice against an embedded PostgreSQL and a fake vendor on
127.0.0.1, and shows what it stored.

  --people N     rows in demo.people [default: 300]
  --latency MS   vendor latency per request in ms [default: 20]
  --help, -h     show this text

DEMO_DATABASE_URL, when set, names a PostgreSQL server to use instead of the
embedded one (its schema "demo" is dropped, recreated, and left there for you
to look at).`;

/**
 * Parses the demo's command line.
 *
 * @param args The arguments.
 * @returns The options, a request for help, or what is wrong.
 */
export function parseDemoArgs(args: string[]): DemoArgs {
  const unknown: string[] = [];
  const flags = parseArgs(args, {
    string: ["people", "latency"],
    boolean: ["help"],
    alias: { h: "help" },
    default: { people: "300", latency: "20" },
    unknown: (arg) => {
      unknown.push(arg);
      return false;
    },
  });
  if (flags.help) return { kind: "help" };
  if (unknown.length > 0) {
    return { kind: "error", message: `unknown argument: ${unknown[0]}` };
  }
  const people = Number(flags.people);
  if (!Number.isInteger(people) || people < 10 || people > 100_000) {
    return {
      kind: "error",
      message: "--people: expected an integer from 10 to 100000",
    };
  }
  const latencyMs = Number(flags.latency);
  if (!Number.isFinite(latencyMs) || latencyMs < 0 || latencyMs > 5_000) {
    return {
      kind: "error",
      message: "--latency: expected milliseconds from 0 to 5000",
    };
  }
  return { kind: "run", options: { people, latencyMs } };
}

/** Which ids get which trouble from the fake vendor. */
export interface TroublePlan {
  /** Answered 404: the vendor does not know them. */
  notFound: Set<number>;
  /** Answered 200 with a body that is not JSON. */
  malformed: number;
  /** Answered 429 with `Retry-After: 1` on the first attempt. */
  rateLimited: number;
  /** Answered 500, 502 or 503 on the first attempt, 200 on the next. */
  transient: Set<number>;
  /** Answered 503 on every attempt of the first run, 200 afterwards. */
  outage: number;
}

/**
 * Spreads the trouble over ids `1..people`, the same way every time.
 *
 * @param people How many ids there are (at least 10).
 * @returns Which ids get which trouble; no id gets two kinds.
 */
export function troublePlan(people: number): TroublePlan {
  const taken = new Set<number>();
  const pick = (fraction: number) => {
    let id = Math.max(1, Math.round(people * fraction));
    while (taken.has(id)) id = id % people + 1;
    taken.add(id);
    return id;
  };
  const notFound = new Set<number>();
  for (let id = 7; id <= people; id += 61) {
    notFound.add(id);
    taken.add(id);
  }
  const malformed = pick(1 / 3);
  const rateLimited = pick(1 / 2);
  const outage = pick(4 / 5);
  const transient = new Set<number>();
  for (let id = 4; id <= people; id += 23) {
    if (taken.has(id)) continue;
    transient.add(id);
    taken.add(id);
  }
  return { notFound, malformed, rateLimited, transient, outage };
}

const TRANSIENT_STATUSES = [500, 502, 503] as const;

/**
 * The demo vendor's answer to one call, with the trouble of
 * {@linkcode troublePlan}. Every 200 spends one of the account's credits,
 * and says how many are left in `X-Credits-Remaining`; with none left, it
 * answers 402.
 *
 * @param plan Which ids get which trouble.
 * @param credits The account, decremented on every 200.
 * @param id The id asked for.
 * @param attempt How many calls this id has had, this one included.
 * @returns The reply.
 */
export function demoReply(
  plan: TroublePlan,
  credits: { remaining: number },
  id: number,
  attempt: number,
): Reply {
  if (plan.notFound.has(id)) return { status: 404, body: { error: "unknown" } };
  if (id === plan.rateLimited && attempt === 1) {
    return {
      status: 429,
      body: { error: "slow down" },
      headers: { "retry-after": "1" },
    };
  }
  if (plan.transient.has(id) && attempt === 1) {
    return { status: TRANSIENT_STATUSES[id % 3]!, body: { error: "oops" } };
  }
  if (id === plan.outage && attempt <= DEMO_MAX_ATTEMPTS) {
    return { status: 503, body: { error: "maintenance" } };
  }
  if (credits.remaining <= 0) {
    return { status: 402, body: { error: "no credits left" } };
  }
  credits.remaining--;
  const headers = { "x-credits-remaining": String(credits.remaining) };
  if (id === plan.malformed) {
    return { status: 200, body: `{"id": "${id}", "name": "Person`, headers };
  }
  return { status: 200, headers };
}

/**
 * Starts the demo vendor. Every answer other than a plain first-time 200 is
 * also told on standard error, prefixed `vendor:`, a retry with how long
 * after the previous attempt it came, so the watcher sees both sides.
 */
function startDemoVendor(
  options: DemoOptions,
  credits: { remaining: number },
): Promise<FakeVendor> {
  const plan = troublePlan(options.people);
  const previous = new Map<string, number>();
  return startFakeVendor({
    latencyMs: options.latencyMs,
    script: (id, attempt) => {
      const reply = demoReply(plan, credits, Number(id), attempt);
      const now = performance.now();
      const last = previous.get(id);
      previous.set(id, now);
      const malformed = typeof reply.body === "string";
      if (reply.status === 200 && attempt === 1 && !malformed) return reply;
      const retryAfter = reply.headers?.["retry-after"];
      console.error(
        `vendor: id ${id} attempt ${attempt}${
          last === undefined
            ? ""
            : ` (${((now - last) / 1000).toFixed(2)} s after the previous)`
        } → ${reply.status}${
          retryAfter ? ` with Retry-After: ${retryAfter}` : ""
        }${malformed ? " with a malformed body" : ""}`,
      );
      return reply;
    },
  });
}

/**
 * Runs `deno task refresh` in the repository root with the given
 * environment added, its output going straight to ours.
 *
 * @returns Its exit code.
 */
async function runRefresh(env: Record<string, string>): Promise<number> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["task", "refresh"],
    cwd: ROOT,
    env,
    stdin: "null",
    stdout: "inherit",
    stderr: "inherit",
  }).spawn();
  const { code } = await child.status;
  return code;
}

/**
 * Formats rows as an aligned text table, one column per key of the first
 * row; long values are cut to `maxWidth` characters.
 *
 * @param rows The rows.
 * @param maxWidth The widest a cell may be.
 * @returns The table, or `(no rows)`.
 */
export function formatRows(
  rows: readonly Record<string, unknown>[],
  maxWidth = 60,
): string {
  if (rows.length === 0) return "(no rows)";
  const columns = Object.keys(rows[0]!);
  const cells = rows.map((row) => columns.map((c) => cell(row[c], maxWidth)));
  const widths = columns.map((c, i) =>
    Math.max(c.length, ...cells.map((r) => r[i]!.length))
  );
  const line = (values: string[]) =>
    values.map((v, i) => v.padEnd(widths[i]!)).join(" | ").trimEnd();
  return [
    line(columns),
    widths.map((w) => "-".repeat(w)).join("-+-"),
    ...cells.map(line),
  ].join("\n");
}

/**
 * Formats one row vertically, `column | value` per line, like psql's `\x`.
 *
 * @param row The row.
 * @param maxWidth The widest a value may be.
 * @returns The formatted row.
 */
export function formatRecord(
  row: Record<string, unknown>,
  maxWidth = 100,
): string {
  const width = Math.max(...Object.keys(row).map((k) => k.length));
  return Object.entries(row)
    .map(([key, value]) => `${key.padEnd(width)} | ${cell(value, maxWidth)}`)
    .join("\n");
}

function cell(value: unknown, maxWidth: number): string {
  const text = value === null || value === undefined
    ? ""
    : value instanceof Date
    ? value.toISOString()
    : typeof value === "object"
    ? JSON.stringify(value)
    : String(value);
  return text.length > maxWidth ? `${text.slice(0, maxWidth - 1)}…` : text;
}

/**
 * The URL refresh is given. PGlite takes any password, and its default one,
 * `postgres`, is also the user, database and scheme name, all of which
 * refresh would then mask as a secret in its output; another one reads
 * better.
 */
function databaseUrl(db: TestDatabase): string {
  if (db.kind !== "pglite") return db.url;
  const url = new URL(db.url);
  url.password = "demo-password";
  return url.href;
}

/** Prints a heading, the query, then its result. */
async function show(
  sql: postgres.Sql,
  heading: string,
  query: string,
  vertical = false,
): Promise<void> {
  console.log(`\n== ${heading}\n`);
  console.log(`${query.trim()};\n`);
  const rows = await sql.unsafe<Record<string, unknown>[]>(query);
  console.log(
    vertical && rows[0] ? formatRecord(rows[0]) : formatRows(rows),
  );
}

const STATE_QUERY = `
select target_id, status, attempts, http_status, error
from ${DEMO_SCHEMA}.refresh_state
where status <> 'ok' or attempts > 1
order by status, target_id::bigint
limit 12`;

const LAST_RUN_QUERY = `
select * from ${DEMO_SCHEMA}.refresh_runs order by id desc limit 1`;

const RUNS_QUERY = `
select id, status, total, processed, succeeded, not_found, invalid, failed,
  requests, retries, credits_spent
from ${DEMO_SCHEMA}.refresh_runs order by id`;

/**
 * Runs the demo.
 *
 * @param options People and latency.
 * @returns The exit code: 0, or that of the refresh run that failed.
 */
export async function runDemo(options: DemoOptions): Promise<number> {
  const db = await startTestDatabase("DEMO_DATABASE_URL");
  const credits = { remaining: DEMO_CREDITS };
  const vendor = await startDemoVendor(options, credits);
  const sql = db.client();
  try {
    await createPeople(sql, DEMO_SCHEMA, { count: options.people });
    console.log(
      `demo: ${
        db.kind === "pglite" ? "embedded PGlite" : "PostgreSQL"
      } with ${options.people} rows in ${DEMO_SCHEMA}.people; vendor on ${
        vendor.urlTemplate.replace("/people/{id}", "")
      } (${options.latencyMs} ms latency, ${DEMO_CREDITS} credits)`,
    );
    const env = {
      DATABASE_URL: databaseUrl(db),
      REFRESH_API_URL: vendor.urlTemplate,
      REFRESH_API_KEY: "demo-key-not-a-secret",
      REFRESH_TABLE: `${DEMO_SCHEMA}.people`,
      REFRESH_STATE_SCHEMA: DEMO_SCHEMA,
      REFRESH_CREDITS_HEADER: "X-Credits-Remaining",
      REFRESH_PROGRESS_INTERVAL: "2s",
      REFRESH_BACKOFF: "200ms",
      REFRESH_MAX_ATTEMPTS: String(DEMO_MAX_ATTEMPTS),
    };

    console.log("\n== First run: deno task refresh\n");
    const first = await runRefresh(env);
    if (first !== 0) {
      console.error(`demo: refresh exited with code ${first}`);
      return first;
    }
    await show(
      sql,
      "What it recorded (the targets that were not plain sailing)",
      STATE_QUERY,
    );
    await show(sql, "The run", LAST_RUN_QUERY, true);

    console.log(
      "\n== Second run on the same data: only what failed is asked again\n",
    );
    const callsBefore = vendor.calls.length;
    const second = await runRefresh(env);
    if (second !== 0) {
      console.error(`demo: refresh exited with code ${second}`);
      return second;
    }
    await show(sql, "Both runs", RUNS_QUERY);
    console.log(
      `\ndemo: the vendor had ${
        vendor.calls.length - callsBefore
      } call(s) in the second run, ${vendor.calls.length} in all; ${credits.remaining} of ${DEMO_CREDITS} credits left`,
    );
    return 0;
  } finally {
    await sql.end();
    await vendor.close();
    await db.close();
  }
}

if (import.meta.main) {
  const parsed = parseDemoArgs(Deno.args);
  if (parsed.kind === "help") {
    console.log(DEMO_USAGE);
  } else if (parsed.kind === "error") {
    console.error(`demo: ${parsed.message}\n\n${DEMO_USAGE}`);
    Deno.exitCode = 2;
  } else {
    Deno.exitCode = await runDemo(parsed.options);
  }
}
