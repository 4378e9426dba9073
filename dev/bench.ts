/**
 * `deno task bench`: measures refresh.ts, all figures in one run, side by
 * side with a naive loop (`dev/bench_naive.ts`) doing the same work:
 *
 * 1. **Overhead per target**: refresh.ts (`deno task refresh`) against the
 *    naive loop, same database, same zero-latency fake vendor, alternating
 *    repetitions on a freshly created table. Then, to see where the time
 *    goes, one run of each through a counting proxy (SQL round trips and
 *    time waiting for the database per target, CPU time from `/proc`) and
 *    one under the V8 inspector (a CPU profile of the steady state, by
 *    function and by package).
 * 2. **Memory at scale**: peak RSS (`VmHWM`) of `deno run … refresh.ts`
 *    (the `refresh` task's flags, run directly so the pid is the one
 *    measured) for `--dry-run` and for a real run capped by `--limit`,
 *    over tables ten times apart in size.
 * 3. **Politeness under pressure**: a vendor that answers 503 when more
 *    than one request is in flight and slows with load; refresh.ts against
 *    the naive loop with 1, 4 and 16 concurrent workers.
 * 4. **Credits used before the deadline**: `--time-budget` against a
 *    vendor with 5 ms latency and 5 % transient 503s, with more credits
 *    and targets than fit in the time.
 *
 * It prints the machine and each result as a Markdown table, and writes
 * `dev/bench_results.json` and `dev/bench_chart.svg`. The database is
 * `BENCH_DATABASE_URL` when set (its schema `bench` is dropped and
 * recreated), else an embedded PGlite.
 *
 * ```sh
 * BENCH_DATABASE_URL=postgres://postgres:postgres@127.0.0.1:5432/postgres deno task bench
 * deno task bench --quick          # smaller sizes, to try it out
 * deno task bench --only memory    # one or more of: overhead, memory, politeness, deadline
 * ```
 *
 * @module
 */

import { parseArgs } from "@std/cli/parse-args";
import type postgres from "postgres";
import {
  type FakeVendor,
  type Script,
  startFakeVendor,
} from "./fake_vendor.ts";
import {
  createPeople,
  startTestDatabase,
  type TestDatabase,
} from "./test_db.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const DEV = new URL(".", import.meta.url).pathname;
const SCHEMA = "bench";
const TABLE = `${SCHEMA}.people`;
const API_KEY = "bench-key-not-a-secret";

// ---------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------

/** The sections, in the order they run. */
export const SECTIONS = [
  "overhead",
  "memory",
  "politeness",
  "deadline",
] as const;

/** One section of the benchmark. */
export type Section = typeof SECTIONS[number];

/** Sizes of one benchmark run. */
export interface BenchSizes {
  /** Targets per overhead repetition. */
  overheadTargets: number;
  /** Repetitions of each of refresh.ts and the naive loop, alternating. */
  overheadReps: number;
  /** Targets of the profiling run of each. */
  profileTargets: number;
  /** Table sizes for the memory runs. */
  memoryRows: number[];
  /** `--limit` of the real memory runs, the same for every size. */
  memoryLimit: number;
  /** Targets of the politeness runs. */
  politenessTargets: number;
  /** Concurrent workers of the naive runs under pressure. */
  workers: number[];
  /** `--time-budget` of the deadline run, in milliseconds. */
  deadlineMs: number;
  /** Targets in the table of the deadline run (more than fit). */
  deadlineTargets: number;
}

/** The full benchmark: a few minutes on a 2-core machine. */
export const FULL: BenchSizes = {
  overheadTargets: 5_000,
  overheadReps: 5,
  profileTargets: 2_000,
  memoryRows: [100_000, 1_000_000],
  memoryLimit: 20_000,
  politenessTargets: 1_000,
  workers: [1, 4, 16],
  deadlineMs: 20_000,
  deadlineTargets: 20_000,
};

/** A smaller benchmark to try it out (`--quick`); its figures are rougher. */
export const QUICK: BenchSizes = {
  overheadTargets: 1_000,
  overheadReps: 2,
  profileTargets: 500,
  memoryRows: [10_000, 100_000],
  memoryLimit: 2_000,
  politenessTargets: 200,
  workers: [1, 4, 16],
  deadlineMs: 5_000,
  deadlineTargets: 5_000,
};

/** Vendor latency per request under pressure, times the calls in flight. */
const PRESSURE_LATENCY_MS = 5;
/** Requests a naive worker makes per target under pressure, at most. */
const NAIVE_MAX_ATTEMPTS = 3;
/** Pause of a naive worker before retrying a 503, times the attempt. */
const NAIVE_RETRY_PAUSE_MS = 100;
/** Vendor latency of the deadline run. */
const DEADLINE_LATENCY_MS = 5;
/** Share of requests answered 503 in the deadline run. */
const DEADLINE_ERROR_RATE = 0.05;
/**
 * The backoff of the second deadline run: the default 1 s scaled down with
 * the vendor, as a 1 s backoff is to a vendor answering in ~200 ms.
 */
const DEADLINE_SCALED_BACKOFF = "25ms";

const USAGE = `Usage: deno task bench [--quick] [--only SECTION,...]

Benchmarks refresh.ts against a naive loop; prints Markdown tables and
writes dev/bench_results.json and dev/bench_chart.svg.

  --quick            smaller sizes (rougher figures)
  --only LIST        some of: ${SECTIONS.join(", ")} (the JSON and the
                     chart then hold only those)
  --help, -h         show this text

BENCH_DATABASE_URL, when set, names the PostgreSQL server to use (its schema
"bench" is dropped and recreated); else an embedded PGlite is started.`;

/** What the command line asked for. */
export type BenchArgs =
  | { kind: "run"; quick: boolean; sections: Section[] }
  | { kind: "help" }
  | { kind: "error"; message: string };

/**
 * Parses the bench's command line.
 *
 * @param args The arguments.
 * @returns The sizes and sections, a request for help, or what is wrong.
 */
export function parseBenchArgs(args: string[]): BenchArgs {
  const unknown: string[] = [];
  const flags = parseArgs(args, {
    boolean: ["quick", "help"],
    string: ["only"],
    alias: { h: "help" },
    unknown: (arg) => {
      unknown.push(arg);
      return false;
    },
  });
  if (flags.help) return { kind: "help" };
  if (unknown.length > 0) {
    return { kind: "error", message: `unknown argument: ${unknown[0]}` };
  }
  const sections = flags.only === undefined
    ? [...SECTIONS]
    : flags.only.split(",").map((s) => s.trim());
  const bad = sections.filter((s) => !SECTIONS.includes(s as Section));
  if (bad.length > 0 || sections.length === 0) {
    return {
      kind: "error",
      message: `--only: expected some of ${SECTIONS.join(", ")}`,
    };
  }
  return { kind: "run", quick: flags.quick, sections: sections as Section[] };
}

// ---------------------------------------------------------------------------
// Statistics and formatting
// ---------------------------------------------------------------------------

/**
 * The median of some numbers.
 *
 * @param values The numbers (at least one).
 * @returns Their median.
 */
export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1
    ? sorted[middle]!
    : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

/**
 * The arithmetic mean of some numbers; `NaN` for none.
 *
 * @param values The numbers.
 * @returns Their mean.
 */
export function mean(values: readonly number[]): number {
  return values.reduce((sum, v) => sum + v, 0) / values.length;
}

/**
 * Formats a number with thousands separators and a fixed number of digits.
 *
 * @param value The number.
 * @param digits Digits after the point.
 * @returns The formatted number.
 */
export function num(value: number, digits = 0): string {
  if (!Number.isFinite(value)) return "n/a";
  return value.toLocaleString("en-US", {
    minimumFractionDigits: digits,
    maximumFractionDigits: digits,
  });
}

/**
 * Formats a Markdown table.
 *
 * @param header The column titles.
 * @param rows The cells.
 * @returns The table, columns padded to align in plain text too.
 */
export function markdownTable(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) =>
    Math.max(3, h.length, ...rows.map((r) => (r[i] ?? "").length))
  );
  const line = (cells: string[]) =>
    `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(" | ")} |`;
  return [
    line(header),
    `| ${widths.map((w) => "-".repeat(w)).join(" | ")} |`,
    ...rows.map(line),
  ].join("\n");
}

const MIB = 1024 * 1024;

// ---------------------------------------------------------------------------
// Child processes
// ---------------------------------------------------------------------------

/** One sample of a process's counters from `/proc`. */
interface ProcSample {
  /** `performance.now()` when read. */
  at: number;
  /** Peak resident set size so far (`VmHWM`), in bytes. */
  peakRss: number;
  /** User plus system CPU time so far, in milliseconds. */
  cpuMs: number;
}

/** What a child process did. */
export interface ChildResult {
  code: number;
  stdout: string;
  stderr: string;
  /** `performance.now()` at spawn and at exit (the bench's clock). */
  spawnedAt: number;
  exitedAt: number;
  /** Spawn to exit, in milliseconds. */
  wallMs: number;
  /** Samples of its `/proc` counters, every ~20 ms, when asked for. */
  samples: ProcSample[];
}

let clockTicksPerSecond = 100;

async function readClockTicks(): Promise<void> {
  try {
    const out = await new Deno.Command("getconf", { args: ["CLK_TCK"] })
      .output();
    const ticks = Number(new TextDecoder().decode(out.stdout).trim());
    if (ticks > 0) clockTicksPerSecond = ticks;
  } catch {
    // Keep Linux's usual 100.
  }
}

/**
 * Reads a process's peak RSS and CPU time from `/proc`.
 *
 * @param pid The process.
 * @returns The sample, or `undefined` once the process is gone.
 */
async function sampleProc(pid: number): Promise<ProcSample | undefined> {
  try {
    const [status, stat] = await Promise.all([
      Deno.readTextFile(`/proc/${pid}/status`),
      Deno.readTextFile(`/proc/${pid}/stat`),
    ]);
    const hwm = status.match(/^VmHWM:\s+(\d+) kB/m);
    // Fields after the command name, which may hold spaces, in parentheses.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const ticks = Number(fields[11]) + Number(fields[12]); // utime, stime
    if (!hwm) return undefined; // a zombie has no memory lines
    return {
      at: performance.now(),
      peakRss: Number(hwm[1]) * 1024,
      cpuMs: ticks * 1000 / clockTicksPerSecond,
    };
  } catch {
    return undefined;
  }
}

/** Options of {@linkcode runChild}. */
interface ChildOptions {
  /** Sample its `/proc` counters every ~20 ms. */
  sample?: boolean;
  /** Runs alongside the child; the child is killed if it throws. */
  during?: (child: Deno.ChildProcess) => Promise<void>;
}

/**
 * Runs `deno <args>` in the repository root with `env` added, collecting its
 * output and, when asked, its `/proc` counters.
 */
async function runChild(
  args: string[],
  env: Record<string, string>,
  options: ChildOptions = {},
): Promise<ChildResult> {
  const spawnedAt = performance.now();
  const child = new Deno.Command(Deno.execPath(), {
    args,
    cwd: ROOT,
    env: { NO_COLOR: "1", ...env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const samples: ProcSample[] = [];
  let done = false;
  const output = child.output().finally(() => done = true);
  const sampling = (async () => {
    while (options.sample && !done) {
      const s = await sampleProc(child.pid);
      if (s) samples.push(s);
      await new Promise((r) => setTimeout(r, 20));
    }
  })();
  try {
    await options.during?.(child);
  } catch (error) {
    if (!done) child.kill();
    await output.catch(() => {});
    throw error;
  }
  const out = await output;
  const exitedAt = performance.now();
  await sampling;
  return {
    code: out.code,
    stdout: new TextDecoder().decode(out.stdout),
    stderr: new TextDecoder().decode(out.stderr),
    spawnedAt,
    exitedAt,
    wallMs: exitedAt - spawnedAt,
    samples,
  };
}

/**
 * The `refresh` task's `deno` arguments, from deno.json (`run … refresh.ts`),
 * with `denoFlags` added after `run`: running them directly makes the
 * child's pid the one of the process doing the work.
 */
async function refreshDirectArgs(denoFlags: string[] = []): Promise<string[]> {
  const config = JSON.parse(await Deno.readTextFile(`${ROOT}deno.json`));
  const task: string = config.tasks.refresh;
  const [run, ...rest] = task.split(/\s+/).slice(1);
  return [run!, ...denoFlags, ...rest];
}

/** The environment refresh.ts is run with. */
function refreshEnv(
  databaseUrl: string,
  vendor: FakeVendor,
  extra: Record<string, string> = {},
): Record<string, string> {
  return {
    DATABASE_URL: databaseUrl,
    REFRESH_API_URL: vendor.urlTemplate,
    REFRESH_API_KEY: API_KEY,
    REFRESH_TABLE: TABLE,
    REFRESH_STATE_SCHEMA: SCHEMA,
    ...extra,
  };
}

/** The environment the naive loop is run with. */
function naiveEnv(
  databaseUrl: string,
  vendor: FakeVendor,
  extra: Record<string, string> = {},
): Record<string, string> {
  return {
    DATABASE_URL: databaseUrl,
    NAIVE_API_URL: vendor.urlTemplate,
    NAIVE_API_KEY: API_KEY,
    NAIVE_TABLE: TABLE,
    ...extra,
  };
}

/** The naive loop's `deno` arguments, with `denoFlags` added after `run`. */
function naiveArgs(denoFlags: string[] = []): string[] {
  return ["run", ...denoFlags, "--allow-all", `${DEV}bench_naive.ts`];
}

/** Throws with the child's output when it did not exit 0. */
function expectSuccess(what: string, result: ChildResult): void {
  if (result.code === 0) return;
  const tail = (text: string) => text.trim().split("\n").slice(-15).join("\n");
  throw new Error(
    `${what} exited with code ${result.code}\n--- stdout\n${
      tail(result.stdout)
    }\n--- stderr\n${tail(result.stderr)}`,
  );
}

// ---------------------------------------------------------------------------
// Database and vendor
// ---------------------------------------------------------------------------

/**
 * (Re)creates `bench.people` with `count` never-refreshed rows, the index
 * the README recommends, and fresh statistics. Dropping the schema also
 * drops refresh.ts's state tables, so every run starts from scratch.
 */
async function resetTable(sql: postgres.Sql, count: number): Promise<void> {
  await createPeople(sql, SCHEMA, { count });
  await sql`create index on ${sql(TABLE)} (vendor_refreshed_at)`;
  await sql`analyze ${sql(TABLE)}`;
}

async function countRefreshed(sql: postgres.Sql): Promise<number> {
  const [row] = await sql<{ n: number }[]>`
    select count(*)::int as n from ${sql(TABLE)}
    where vendor_refreshed_at is not null`;
  return row!.n;
}

/** Starts a vendor, runs `body`, and always stops the vendor. */
async function withVendor<T>(
  options: { script?: Script; latencyMs?: number },
  body: (vendor: FakeVendor) => Promise<T>,
): Promise<T> {
  const vendor = await startFakeVendor(options);
  try {
    return await body(vendor);
  } finally {
    await vendor.close();
  }
}

/** Timing of the vendor's calls: the window of work and where it went. */
export interface CallStats {
  /** Calls received. */
  requests: number;
  /** First call's arrival to the last call's answer, in ms. */
  spanMs: number;
  /** Sum of each call's arrival-to-answer time, in ms. */
  vendorMs: number;
  /** First arrival and last answer (`performance.now()`). */
  firstAt: number;
  lastAt: number;
}

/**
 * Summarizes the calls a vendor received.
 *
 * @param calls The calls, in arrival order.
 * @returns Their timing.
 */
export function callStats(
  calls: readonly { startedAt: number; endedAt?: number }[],
): CallStats {
  if (calls.length === 0) {
    return { requests: 0, spanMs: 0, vendorMs: 0, firstAt: NaN, lastAt: NaN };
  }
  const firstAt = calls[0]!.startedAt;
  const lastAt = Math.max(...calls.map((c) => c.endedAt ?? c.startedAt));
  return {
    requests: calls.length,
    spanMs: lastAt - firstAt,
    vendorMs: calls.reduce(
      (sum, c) => sum + ((c.endedAt ?? c.startedAt) - c.startedAt),
      0,
    ),
    firstAt,
    lastAt,
  };
}

/** A deterministic pseudo-random generator (mulberry32) in [0, 1). */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// ---------------------------------------------------------------------------
// A counting proxy: SQL round trips and database time, for profiling
// ---------------------------------------------------------------------------

/**
 * Splits a PostgreSQL protocol byte stream into messages and reports each
 * one's type byte. A frontend stream starts with an untyped startup
 * message (no TLS request: the bench connects without TLS).
 */
export class MessageSplitter {
  #untyped: boolean;
  #header: number[] = [];
  #skip = 0;
  #onMessage: (type: string) => void;

  /**
   * @param onMessage Called with each message's type (`startup` for the
   * untyped first one).
   * @param untypedFirst Whether the stream starts with a startup message.
   */
  constructor(onMessage: (type: string) => void, untypedFirst: boolean) {
    this.#onMessage = onMessage;
    this.#untyped = untypedFirst;
  }

  /** Feeds the next bytes of the stream. */
  feed(chunk: Uint8Array): void {
    let i = 0;
    while (i < chunk.length) {
      if (this.#skip > 0) {
        const n = Math.min(this.#skip, chunk.length - i);
        this.#skip -= n;
        i += n;
        continue;
      }
      this.#header.push(chunk[i++]!);
      const need = this.#untyped ? 4 : 5;
      if (this.#header.length < need) continue;
      const h = this.#header;
      const length = ((h[need - 4]! << 24) | (h[need - 3]! << 16) |
        (h[need - 2]! << 8) | h[need - 1]!) >>> 0;
      this.#onMessage(this.#untyped ? "startup" : String.fromCharCode(h[0]!));
      this.#untyped = false;
      this.#skip = length - 4;
      this.#header = [];
    }
  }
}

/** One SQL round trip seen by the proxy. */
interface RoundTrip {
  /** When the client's Sync (or simple Query) passed. */
  at: number;
  /** Until the server's ReadyForQuery, in ms. */
  ms: number;
}

/** A TCP proxy to the database that times every round trip. */
interface CountingProxy {
  /** The database URL through the proxy. */
  url: string;
  /** Every round trip, all connections. */
  roundTrips: RoundTrip[];
  close(): void;
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < bytes.length) {
    offset += await conn.write(bytes.subarray(offset));
  }
}

async function pump(
  from: Deno.Conn,
  to: Deno.Conn,
  split: MessageSplitter,
): Promise<void> {
  const buffer = new Uint8Array(64 * 1024);
  try {
    while (true) {
      const n = await from.read(buffer);
      if (n === null) break;
      const chunk = buffer.subarray(0, n);
      split.feed(chunk);
      await writeAll(to, chunk);
    }
  } catch {
    // The other side went away.
  } finally {
    try {
      to.close();
    } catch {
      // Already closed.
    }
  }
}

/**
 * Starts a proxy on 127.0.0.1 in front of the database of `databaseUrl`
 * (which must not use TLS).
 */
function startCountingProxy(databaseUrl: string): CountingProxy {
  const target = new URL(databaseUrl);
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const roundTrips: RoundTrip[] = [];
  const conns: Deno.Conn[] = [];
  (async () => {
    for await (const client of listener) {
      const server = await Deno.connect({
        hostname: target.hostname,
        port: Number(target.port || 5432),
      });
      conns.push(client, server);
      const pending: number[] = [];
      const up = new MessageSplitter((type) => {
        if (type === "S" || type === "Q") pending.push(performance.now());
      }, true);
      const down = new MessageSplitter((type) => {
        if (type !== "Z") return;
        const at = pending.shift();
        if (at !== undefined) {
          roundTrips.push({ at, ms: performance.now() - at });
        }
      }, false);
      pump(client, server, up);
      pump(server, client, down);
    }
  })().catch(() => {});
  const url = new URL(databaseUrl);
  url.hostname = "127.0.0.1";
  url.port = String((listener.addr as Deno.NetAddr).port);
  return {
    url: url.href,
    roundTrips,
    close: () => {
      listener.close();
      for (const conn of conns) {
        try {
          conn.close();
        } catch {
          // Already closed.
        }
      }
    },
  };
}

// ---------------------------------------------------------------------------
// A CPU profile of the child through the V8 inspector
// ---------------------------------------------------------------------------

/** The parts of a V8 CPU profile (`Profiler.stop`) used here. */
export interface CpuProfile {
  nodes: {
    id: number;
    callFrame: { functionName: string; url: string; lineNumber: number };
  }[];
  samples: number[];
  timeDeltas: number[];
}

/** Where a profile's time went, per target. */
export interface ProfileSummary {
  /** Targets processed while profiling. */
  targets: number;
  /** Microseconds per target by category (see {@linkcode categorize}). */
  byCategory: Record<string, number>;
  /** The functions with the most self time, in µs per target. */
  top: { fn: string; category: string; us: number }[];
}

/**
 * Sorts a profiled function into a category by where its code lives.
 *
 * @param fn The function name.
 * @param url Its script's URL.
 * @returns The category.
 */
export function categorize(fn: string, url: string): string {
  if (fn === "(idle)") return "idle: waiting for I/O";
  if (fn === "(garbage collector)") return "garbage collector";
  if (url.endsWith("/refresh.ts")) return "refresh.ts";
  if (url.endsWith("/bench_naive.ts")) return "bench_naive.ts";
  const npm = url.match(/\/npm\/[^/]+\/(@[^/]+\/[^/]+|[^/]+)\//);
  if (npm) return `npm:${npm[1]}`;
  if (/\/@std\//.test(url)) return "@std";
  return "Deno runtime and V8 (fetch, streams, timers, ops)";
}

/**
 * Sums a CPU profile's self time by category and by function.
 *
 * @param profile The profile.
 * @param targets Targets processed while it was taken.
 * @returns Microseconds per target.
 */
export function summarizeProfile(
  profile: CpuProfile,
  targets: number,
): ProfileSummary {
  const nodes = new Map(profile.nodes.map((n) => [n.id, n]));
  const byCategory: Record<string, number> = {};
  const byFunction = new Map<string, { category: string; us: number }>();
  profile.samples.forEach((id, i) => {
    const frame = nodes.get(id)?.callFrame;
    if (!frame) return;
    const us = profile.timeDeltas[i] ?? 0;
    const category = categorize(frame.functionName, frame.url);
    byCategory[category] = (byCategory[category] ?? 0) + us;
    const file = frame.url.split("/").at(-1) ?? "";
    const fn = `${frame.functionName || "(anonymous)"}${
      file ? ` ${file}:${frame.lineNumber + 1}` : ""
    }`;
    const entry = byFunction.get(fn) ?? { category, us: 0 };
    entry.us += us;
    byFunction.set(fn, entry);
  });
  for (const key of Object.keys(byCategory)) byCategory[key]! /= targets;
  const top = [...byFunction]
    .filter(([, e]) => !e.category.startsWith("idle"))
    .sort((a, b) => b[1].us - a[1].us)
    .slice(0, 12)
    .map(([fn, e]) => ({ fn, category: e.category, us: e.us / targets }));
  return { targets, byCategory, top };
}

/** A free TCP port on 127.0.0.1 (free when asked: good enough here). */
function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

/** Waits until `ready()` holds, checking every 20 ms, at most `timeoutMs`. */
async function waitFor(
  what: string,
  ready: () => boolean,
  timeoutMs = 120_000,
): Promise<void> {
  const until = performance.now() + timeoutMs;
  while (!ready()) {
    if (performance.now() > until) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A minimal Chrome DevTools protocol client for one inspector target. */
class Inspector {
  #ws: WebSocket;
  #next = 0;
  #waiting = new Map<number, (message: Record<string, unknown>) => void>();

  private constructor(ws: WebSocket) {
    this.#ws = ws;
    ws.onmessage = (event) => {
      const message = JSON.parse(event.data);
      this.#waiting.get(message.id)?.(message);
      this.#waiting.delete(message.id);
    };
  }

  /** Connects to the inspector of a `deno run --inspect-wait` on `port`. */
  static async connect(port: number): Promise<Inspector> {
    let url: string | undefined;
    const until = performance.now() + 30_000;
    while (url === undefined && performance.now() < until) {
      try {
        const response = await fetch(`http://127.0.0.1:${port}/json/list`);
        const list = await response.json();
        url = list[0]?.webSocketDebuggerUrl;
      } catch {
        // Not listening yet.
      }
      if (url === undefined) await new Promise((r) => setTimeout(r, 50));
    }
    if (url === undefined) throw new Error("the inspector never answered");
    const ws = new WebSocket(url);
    await new Promise((resolve, reject) => {
      ws.onopen = resolve;
      ws.onerror = reject;
    });
    return new Inspector(ws);
  }

  /** Sends a command and waits for its result. */
  send(
    method: string,
    params: Record<string, unknown> = {},
  ): Promise<Record<string, unknown>> {
    const id = ++this.#next;
    const { promise, resolve } = Promise.withResolvers<
      Record<string, unknown>
    >();
    this.#waiting.set(id, resolve);
    this.#ws.send(JSON.stringify({ id, method, params }));
    return promise;
  }

  close(): void {
    this.#ws.close();
  }
}

/**
 * Runs a program under the V8 inspector and takes a CPU profile of its
 * steady state: from the vendor's call at 10 % of the targets to the one at
 * 90 %, so that start-up (loading and compiling) is left out.
 */
async function cpuProfileRun(
  program: Program,
  databaseUrl: string,
  vendor: FakeVendor,
  targets: number,
): Promise<ProfileSummary> {
  const port = freePort();
  const flags = [`--inspect-wait=127.0.0.1:${port}`];
  let summary: ProfileSummary | undefined;
  const during = async (child: Deno.ChildProcess) => {
    let exited = false;
    child.status.then(() => exited = true);
    const calls = (share: number) => () => {
      if (exited) throw new Error(`${program} exited under the inspector`);
      return vendor.calls.length >= targets * share;
    };
    const inspector = await Inspector.connect(port);
    try {
      await inspector.send("Profiler.enable");
      await inspector.send("Profiler.setSamplingInterval", { interval: 250 });
      await inspector.send("Runtime.runIfWaitingForDebugger");
      await waitFor("10 % of the calls", calls(0.1));
      const from = vendor.calls.length;
      await inspector.send("Profiler.start");
      await waitFor("90 % of the calls", calls(0.9));
      const stopped = await inspector.send("Profiler.stop");
      const profile = (stopped.result as { profile: CpuProfile }).profile;
      summary = summarizeProfile(profile, vendor.calls.length - from);
    } finally {
      inspector.close();
    }
  };
  const result = program === "refresh"
    ? await runChild(
      await refreshDirectArgs(flags),
      refreshEnv(databaseUrl, vendor),
      { during },
    )
    : await runChild(naiveArgs(flags), naiveEnv(databaseUrl, vendor), {
      during,
    });
  expectSuccess(`${program} under the inspector`, result);
  return summary!;
}

// ---------------------------------------------------------------------------
// 1. Overhead per target
// ---------------------------------------------------------------------------

/** Which program did the work. */
type Program = "refresh" | "naive";

/** One timed run over the whole overhead table. */
export interface OverheadRun {
  program: Program;
  rep: number;
  targets: number;
  /** Spawn to exit. */
  wallMs: number;
  /** The vendor's first call to its last answer. */
  spanMs: number;
  requests: number;
}

/** The overhead section's result. */
export interface OverheadResult {
  targets: number;
  reps: number;
  runs: OverheadRun[];
  /** Medians over the repetitions, per program. */
  median: Record<Program, { wallMs: number; spanMs: number }>;
  /** refresh.ts's time per target over the naive loop's (steady, wall). */
  ratioSteady: number;
  ratioWall: number;
  /** Round trips and database time, through a counting proxy. */
  proxy: Record<Program, ProxyProfile>;
  /** CPU profiles of the steady state. */
  cpu: Record<Program, ProfileSummary>;
}

/** Where the time of one run through the counting proxy went, per target. */
export interface ProxyProfile {
  targets: number;
  /** SQL round trips per target while the vendor was being asked. */
  roundTripsPerTarget: number;
  /** Every round trip of the run, start-up included. */
  roundTripsTotal: number;
  /** Per target, in microseconds: the whole cycle and its parts. */
  cycleUs: number;
  databaseUs: number;
  vendorUs: number;
  restUs: number;
  /** CPU time of the child process per target, in microseconds. */
  cpuUs: number;
}

async function runProgram(
  program: Program,
  databaseUrl: string,
  vendor: FakeVendor,
  direct = false,
): Promise<ChildResult> {
  const result = program === "naive"
    ? await runChild(naiveArgs(), naiveEnv(databaseUrl, vendor), {
      sample: direct,
    })
    : direct
    ? await runChild(
      await refreshDirectArgs(),
      refreshEnv(databaseUrl, vendor),
      { sample: true },
    )
    : await runChild(
      ["task", "--quiet", "refresh"],
      refreshEnv(databaseUrl, vendor),
    );
  expectSuccess(
    program === "refresh" ? "refresh.ts" : "the naive loop",
    result,
  );
  return result;
}

async function timedRun(
  db: TestDatabase,
  sql: postgres.Sql,
  program: Program,
  targets: number,
  rep: number,
): Promise<OverheadRun> {
  await resetTable(sql, targets);
  return await withVendor({ latencyMs: 0 }, async (vendor) => {
    const result = await runProgram(program, db.url, vendor);
    const refreshed = await countRefreshed(sql);
    if (refreshed !== targets) {
      throw new Error(`${program}: ${refreshed} of ${targets} refreshed`);
    }
    const stats = callStats(vendor.calls);
    return {
      program,
      rep,
      targets,
      wallMs: result.wallMs,
      spanMs: stats.spanMs,
      requests: stats.requests,
    };
  });
}

/** CPU time used between two instants, from the samples around them. */
function cpuBetween(samples: ProcSample[], from: number, to: number): number {
  const before = samples.filter((s) => s.at <= from).at(-1) ?? samples[0];
  const after = samples.find((s) => s.at >= to) ?? samples.at(-1);
  return before && after ? after.cpuMs - before.cpuMs : NaN;
}

async function proxyRun(
  db: TestDatabase,
  sql: postgres.Sql,
  program: Program,
  targets: number,
): Promise<ProxyProfile> {
  await resetTable(sql, targets);
  const proxy = startCountingProxy(db.url);
  try {
    return await withVendor({ latencyMs: 0 }, async (vendor) => {
      const result = await runProgram(program, proxy.url, vendor, true);
      const stats = callStats(vendor.calls);
      const inWindow = proxy.roundTrips.filter((r) =>
        r.at >= stats.firstAt && r.at <= stats.lastAt
      );
      const cycleMs = stats.spanMs / targets;
      const databaseMs = inWindow.reduce((s, r) => s + r.ms, 0) / targets;
      const vendorMs = stats.vendorMs / targets;
      return {
        targets,
        roundTripsPerTarget: inWindow.length / targets,
        roundTripsTotal: proxy.roundTrips.length,
        cycleUs: cycleMs * 1000,
        databaseUs: databaseMs * 1000,
        vendorUs: vendorMs * 1000,
        restUs: (cycleMs - databaseMs - vendorMs) * 1000,
        cpuUs: cpuBetween(result.samples, stats.firstAt, stats.lastAt) /
          targets * 1000,
      };
    });
  } finally {
    proxy.close();
  }
}

async function cpuRun(
  db: TestDatabase,
  sql: postgres.Sql,
  program: Program,
  targets: number,
): Promise<ProfileSummary> {
  await resetTable(sql, targets);
  return await withVendor(
    { latencyMs: 0 },
    (vendor) => cpuProfileRun(program, db.url, vendor, targets),
  );
}

async function benchOverhead(
  db: TestDatabase,
  sql: postgres.Sql,
  sizes: BenchSizes,
): Promise<OverheadResult> {
  const runs: OverheadRun[] = [];
  const n = sizes.overheadTargets;
  for (let rep = 1; rep <= sizes.overheadReps; rep++) {
    const order: Program[] = rep % 2 === 1
      ? ["refresh", "naive"]
      : ["naive", "refresh"];
    for (const program of order) {
      const run = await timedRun(db, sql, program, n, rep);
      runs.push(run);
      note(
        `overhead rep ${rep} ${program}: ${num(run.wallMs)} ms wall, ${
          num(run.spanMs)
        } ms vendor window, ${num(run.spanMs / n * 1000)} µs/target`,
      );
    }
  }
  const medianOf = (program: Program) => {
    const mine = runs.filter((r) => r.program === program);
    return {
      wallMs: median(mine.map((r) => r.wallMs)),
      spanMs: median(mine.map((r) => r.spanMs)),
    };
  };
  const m = { refresh: medianOf("refresh"), naive: medianOf("naive") };
  const p = sizes.profileTargets;
  const proxy = {
    refresh: await proxyRun(db, sql, "refresh", p),
    naive: await proxyRun(db, sql, "naive", p),
  };
  note("overhead: proxy runs done");
  const cpu = {
    refresh: await cpuRun(db, sql, "refresh", p),
    naive: await cpuRun(db, sql, "naive", p),
  };
  note("overhead: CPU profiles done");
  return {
    targets: n,
    reps: sizes.overheadReps,
    runs,
    median: m,
    ratioSteady: m.refresh.spanMs / m.naive.spanMs,
    ratioWall: m.refresh.wallMs / m.naive.wallMs,
    proxy,
    cpu,
  };
}

function overheadTables(r: OverheadResult): string {
  const perTarget = (ms: number) => num(ms / r.targets * 1000);
  const rate = (ms: number) => num(r.targets / (ms / 1000));
  const timing = markdownTable(
    [
      `median of ${r.reps} runs × ${num(r.targets)} targets`,
      "refresh.ts",
      "naive loop",
      "ratio",
    ],
    [
      [
        "time per target, vendor's first call to last answer (µs)",
        perTarget(r.median.refresh.spanMs),
        perTarget(r.median.naive.spanMs),
        `${num(r.ratioSteady, 2)}×`,
      ],
      [
        "targets/s, same window",
        rate(r.median.refresh.spanMs),
        rate(r.median.naive.spanMs),
        "",
      ],
      [
        "time per target, process spawn to exit (µs)",
        perTarget(r.median.refresh.wallMs),
        perTarget(r.median.naive.wallMs),
        `${num(r.ratioWall, 2)}×`,
      ],
      [
        "targets/s, spawn to exit",
        rate(r.median.refresh.wallMs),
        rate(r.median.naive.wallMs),
        "",
      ],
    ],
  );
  const runs = markdownTable(
    ["each run", "refresh.ts (µs/target, window)", "naive loop"],
    Array.from({ length: r.reps }, (_, i) => {
      const of = (program: Program) =>
        r.runs.find((x) => x.rep === i + 1 && x.program === program);
      const us = (run?: OverheadRun) =>
        run ? num(run.spanMs / run.targets * 1000) : "—";
      return [
        `rep ${i + 1} (${i % 2 === 0 ? "refresh.ts first" : "naive first"})`,
        us(of("refresh")),
        us(of("naive")),
      ];
    }),
  );
  const x = r.proxy;
  const proxy = markdownTable(
    [
      `one run each through a counting proxy, ${
        num(x.refresh.targets)
      } targets; per target`,
      "refresh.ts",
      "naive loop",
    ],
    [
      [
        "SQL round trips",
        num(x.refresh.roundTripsPerTarget, 3),
        num(x.naive.roundTripsPerTarget, 3),
      ],
      [
        "whole cycle, vendor's first call to last answer (µs)",
        num(x.refresh.cycleUs),
        num(x.naive.cycleUs),
      ],
      [
        "… waiting for the database, Sync to ReadyForQuery (µs)",
        num(x.refresh.databaseUs),
        num(x.naive.databaseUs),
      ],
      [
        "… inside the vendor's handler (µs)",
        num(x.refresh.vendorUs),
        num(x.naive.vendorUs),
      ],
      [
        "… the rest: HTTP both ends, client work, proxy (µs)",
        num(x.refresh.restUs),
        num(x.naive.restUs),
      ],
      [
        "CPU time of the client process, from /proc (µs)",
        num(x.refresh.cpuUs),
        num(x.naive.cpuUs),
      ],
    ],
  );
  const categories = [
    ...new Set([
      ...Object.keys(r.cpu.refresh.byCategory),
      ...Object.keys(r.cpu.naive.byCategory),
    ]),
  ].sort((a, b) =>
    (r.cpu.refresh.byCategory[b] ?? 0) - (r.cpu.refresh.byCategory[a] ?? 0)
  );
  const total = (s: ProfileSummary) =>
    Object.entries(s.byCategory)
      .filter(([k]) => !k.startsWith("idle"))
      .reduce((sum, [, v]) => sum + v, 0);
  const cpu = markdownTable(
    [
      `V8 CPU profile, steady state (${num(r.cpu.refresh.targets)} / ${
        num(r.cpu.naive.targets)
      } targets); µs per target`,
      "refresh.ts",
      "naive loop",
    ],
    [
      ...categories.map((c) => [
        c,
        num(r.cpu.refresh.byCategory[c] ?? 0),
        num(r.cpu.naive.byCategory[c] ?? 0),
      ]),
      [
        "**busy (all but idle)**",
        `**${num(total(r.cpu.refresh))}**`,
        `**${num(total(r.cpu.naive))}**`,
      ],
    ],
  );
  const top = markdownTable(
    ["refresh.ts: most self time (µs per target)", "where", "µs"],
    r.cpu.refresh.top.map((t) => [`\`${t.fn}\``, t.category, num(t.us, 1)]),
  );
  return [timing, runs, proxy, cpu, top].join("\n\n");
}

// ---------------------------------------------------------------------------
// 2. Memory at scale
// ---------------------------------------------------------------------------

/** One measured run of the memory section. */
export interface MemoryRun {
  /** Rows in the table. */
  rows: number;
  mode: "help" | "dry-run" | "limited" | "naive";
  /** Targets processed (0 for a dry run). */
  processed: number;
  peakRssBytes: number;
  wallMs: number;
}

/** The memory section's result. */
export interface MemoryResult {
  limit: number;
  runs: MemoryRun[];
}

/** The processed count from refresh.ts's summary, if printed. */
function processedFrom(stdout: string): number {
  const m = stdout.match(/(\d+) processed/);
  return m ? Number(m[1]) : NaN;
}

async function measuredRefresh(
  args: string[],
  env: Record<string, string>,
): Promise<ChildResult> {
  const result = await runChild(
    [...await refreshDirectArgs(), ...args],
    env,
    { sample: true },
  );
  expectSuccess(`refresh.ts ${args.join(" ")}`, result);
  return result;
}

function peakOf(result: ChildResult): number {
  return Math.max(0, ...result.samples.map((s) => s.peakRss));
}

async function benchMemory(
  db: TestDatabase,
  sql: postgres.Sql,
  sizes: BenchSizes,
): Promise<MemoryResult> {
  const runs: MemoryRun[] = [];
  await withVendor({ latencyMs: 0 }, async (vendor) => {
    const env = refreshEnv(db.url, vendor);
    const help = await measuredRefresh(["--help"], env);
    runs.push({
      rows: 0,
      mode: "help",
      processed: 0,
      peakRssBytes: peakOf(help),
      wallMs: help.wallMs,
    });
    for (const rows of sizes.memoryRows) {
      const created = performance.now();
      await resetTable(sql, rows);
      note(
        `memory: created ${num(rows)} rows in ${
          num(performance.now() - created)
        } ms`,
      );
      const dry = await measuredRefresh(["--dry-run"], env);
      runs.push({
        rows,
        mode: "dry-run",
        processed: 0,
        peakRssBytes: peakOf(dry),
        wallMs: dry.wallMs,
      });
      const real = await measuredRefresh(
        ["--limit", String(sizes.memoryLimit)],
        env,
      );
      runs.push({
        rows,
        mode: "limited",
        processed: processedFrom(real.stdout),
        peakRssBytes: peakOf(real),
        wallMs: real.wallMs,
      });
      note(
        `memory ${num(rows)} rows: dry run ${
          num(peakOf(dry) / MIB, 1)
        } MiB, real run ${num(peakOf(real) / MIB, 1)} MiB`,
      );
    }
    // For reference: the naive loop doing the same work on the largest table.
    const rows = sizes.memoryRows.at(-1)!;
    const naive = await runChild(
      naiveArgs(),
      naiveEnv(db.url, vendor, { NAIVE_LIMIT: String(sizes.memoryLimit) }),
      { sample: true },
    );
    expectSuccess("the naive loop", naive);
    runs.push({
      rows,
      mode: "naive",
      processed: JSON.parse(naive.stdout).refreshed,
      peakRssBytes: peakOf(naive),
      wallMs: naive.wallMs,
    });
  });
  return { limit: sizes.memoryLimit, runs };
}

function memoryTable(r: MemoryResult): string {
  const label = (run: MemoryRun) =>
    run.mode === "help"
      ? "`--help` (baseline: Deno and the module loaded)"
      : run.mode === "dry-run"
      ? `\`--dry-run\`, ${num(run.rows)} rows`
      : run.mode === "limited"
      ? `real run \`--limit ${num(r.limit)}\`, ${num(run.rows)} rows`
      : `for reference: the naive loop, \`limit ${num(r.limit)}\`, ${
        num(run.rows)
      } rows`;
  return markdownTable(
    ["refresh.ts run", "peak RSS (MiB)", "targets processed", "wall time (s)"],
    r.runs.map((run) => [
      label(run),
      num(run.peakRssBytes / MIB, 1),
      run.mode === "limited" || run.mode === "naive" ? num(run.processed) : "—",
      num(run.wallMs / 1000, 1),
    ]),
  );
}

// ---------------------------------------------------------------------------
// 3. Politeness under pressure
// ---------------------------------------------------------------------------

/**
 * A vendor with room for one request at a time: a request arriving while
 * another is in flight gets a 503, and every answer takes longer the more
 * are in flight (5 ms × the calls in flight, this one included).
 */
export const pressureScript: Script = (_id, _attempt, vendor) => ({
  status: vendor.inFlight > 1 ? 503 : 200,
  delayMs: PRESSURE_LATENCY_MS * vendor.inFlight,
});

/** One client's result under pressure. */
export interface PressureRun {
  client: string;
  targets: number;
  wallMs: number;
  requests: number;
  /** Answers other than 200. */
  non200: number;
  /** 200 answers: what the vendor bills. */
  billed: number;
  /** Billed answers that did not end in a stored refresh. */
  wasted: number;
  /** Targets still not refreshed after the run. */
  left: number;
  /** The most requests the vendor saw in flight at once. */
  maxInFlight: number;
}

async function pressureRun(
  db: TestDatabase,
  sql: postgres.Sql,
  targets: number,
  workers: number | undefined,
): Promise<PressureRun> {
  await resetTable(sql, targets);
  return await withVendor({ script: pressureScript }, async (vendor) => {
    const result = workers === undefined
      ? await runChild(
        ["task", "--quiet", "refresh"],
        refreshEnv(db.url, vendor),
      )
      : await runChild(
        naiveArgs(),
        naiveEnv(db.url, vendor, {
          NAIVE_WORKERS: String(workers),
          NAIVE_MAX_ATTEMPTS: String(NAIVE_MAX_ATTEMPTS),
          NAIVE_RETRY_PAUSE_MS: String(NAIVE_RETRY_PAUSE_MS),
        }),
      );
    const client = workers === undefined
      ? "refresh.ts"
      : `naive, ${workers} worker${workers > 1 ? "s" : ""}`;
    expectSuccess(client, result);
    const refreshed = await countRefreshed(sql);
    const billed = vendor.calls.filter((c) => c.status === 200).length;
    return {
      client,
      targets,
      wallMs: result.wallMs,
      requests: vendor.calls.length,
      non200: vendor.calls.filter((c) => c.status !== 200).length,
      billed,
      wasted: billed - refreshed,
      left: targets - refreshed,
      maxInFlight: vendor.maxInFlight,
    };
  });
}

async function benchPoliteness(
  db: TestDatabase,
  sql: postgres.Sql,
  sizes: BenchSizes,
): Promise<PressureRun[]> {
  const runs: PressureRun[] = [];
  for (const workers of [undefined, ...sizes.workers]) {
    const run = await pressureRun(db, sql, sizes.politenessTargets, workers);
    runs.push(run);
    note(
      `politeness ${run.client}: ${
        num(run.wallMs)
      } ms, ${run.non200} non-200, ${run.left} left`,
    );
  }
  return runs;
}

function politenessTable(runs: PressureRun[]): string {
  return markdownTable(
    [
      `client (${num(runs[0]?.targets ?? 0)} targets)`,
      "total time (s)",
      "requests",
      "non-200 answers",
      "max in flight",
      "credits billed",
      "credits wasted",
      "targets left unrefreshed",
    ],
    runs.map((r) => [
      r.client,
      num(r.wallMs / 1000, 1),
      num(r.requests),
      num(r.non200),
      num(r.maxInFlight),
      num(r.billed),
      num(r.wasted),
      num(r.left),
    ]),
  );
}

// ---------------------------------------------------------------------------
// 4. Credits used before the deadline
// ---------------------------------------------------------------------------

/** One deadline run's result. */
export interface DeadlineResult {
  /** Which settings: the defaults, or a backoff scaled to the vendor. */
  label: string;
  /** `--backoff`, or undefined for the default. */
  backoff?: string;
  timeBudgetMs: number;
  targets: number;
  creditsAtStart: number;
  /** The summary's first line. */
  summary: string;
  wallMs: number;
  /** Spawn to the first vendor call. */
  startupMs: number;
  /** Last answer to exit. */
  tailMs: number;
  requests: number;
  transient: number;
  refreshed: number;
  /** Mean time from a 200's arrival to the next call's: request + write. */
  meanSuccessCycleMs: number;
  /** Sum of the cycles that began with a 503 (request + backoff). */
  failedCyclesMs: number;
  /** timeBudget / meanSuccessCycle: successes the deadline allows. */
  allowed: number;
  /** refreshed / allowed. */
  fraction: number;
  /** Mean time the vendor took to answer a 503. */
  meanFailedCallMs: number;
  /**
   * Successes the deadline allows a client that loses only the failed
   * requests themselves: timeBudget / (meanSuccessCycle + f / (1 - f) ×
   * meanFailedCall), f the share of requests answered 503.
   */
  allowedNet: number;
  /** refreshed / allowedNet. */
  fractionNet: number;
}

/**
 * The deadline run's vendor: 5 % of requests (pseudo-random, seeded) get a
 * 503; every 200 spends a credit and reports what is left.
 */
function deadlineScript(credits: { remaining: number }): Script {
  const random = seededRandom(20261128);
  return () => {
    if (random() < DEADLINE_ERROR_RATE) {
      return { status: 503, body: { error: "busy" } };
    }
    credits.remaining--;
    return {
      headers: { "x-credits-remaining": String(credits.remaining) },
    };
  };
}

/** What {@linkcode cycles} found. */
export interface Cycles {
  /** Mean time from a 200's arrival to the next call's arrival. */
  meanSuccessMs: number;
  /** Sum of the same after each non-200: request, backoff, next start. */
  failedMs: number;
  /** Mean time the vendor took to answer a non-200 (arrival to answer). */
  meanFailedCallMs: number;
}

/**
 * Splits the calls into successful cycles (a 200's arrival to the next
 * call's arrival) and failed ones (the same after a non-200).
 *
 * @param calls The calls, in arrival order.
 * @returns The cycles, in milliseconds.
 */
export function cycles(
  calls: readonly { startedAt: number; endedAt?: number; status?: number }[],
): Cycles {
  const success: number[] = [];
  const failedCalls: number[] = [];
  let failedMs = 0;
  for (let i = 0; i < calls.length; i++) {
    const call = calls[i]!;
    if (call.status !== 200 && call.endedAt !== undefined) {
      failedCalls.push(call.endedAt - call.startedAt);
    }
    const next = calls[i + 1];
    if (!next) break;
    const length = next.startedAt - call.startedAt;
    if (call.status === 200) success.push(length);
    else failedMs += length;
  }
  return {
    meanSuccessMs: mean(success),
    failedMs,
    meanFailedCallMs: failedCalls.length > 0 ? mean(failedCalls) : 0,
  };
}

async function deadlineRun(
  db: TestDatabase,
  sql: postgres.Sql,
  sizes: BenchSizes,
  label: string,
  backoff: string | undefined,
): Promise<DeadlineResult> {
  const targets = sizes.deadlineTargets;
  await resetTable(sql, targets);
  const creditsAtStart = targets * 10;
  const credits = { remaining: creditsAtStart };
  return await withVendor({
    script: deadlineScript(credits),
    latencyMs: DEADLINE_LATENCY_MS,
  }, async (vendor) => {
    const budget = `${sizes.deadlineMs / 1000}s`;
    const args = ["task", "--quiet", "refresh", "--time-budget", budget];
    if (backoff) args.push("--backoff", backoff);
    const result = await runChild(
      args,
      refreshEnv(db.url, vendor, {
        REFRESH_BUDGET: String(creditsAtStart),
        REFRESH_CREDITS_HEADER: "X-Credits-Remaining",
      }),
    );
    expectSuccess(`refresh.ts ${args.slice(3).join(" ")}`, result);
    const calls = vendor.calls;
    const stats = callStats(calls);
    const { meanSuccessMs, failedMs, meanFailedCallMs } = cycles(calls);
    const refreshed = await countRefreshed(sql);
    const allowed = sizes.deadlineMs / meanSuccessMs;
    const transient = calls.filter((c) => c.status !== 200).length;
    const f = transient / calls.length;
    const allowedNet = sizes.deadlineMs /
      (meanSuccessMs + f / (1 - f) * meanFailedCallMs);
    return {
      label,
      backoff,
      timeBudgetMs: sizes.deadlineMs,
      targets,
      creditsAtStart,
      summary: result.stdout.trim().split("\n")[0] ?? "",
      wallMs: result.wallMs,
      startupMs: stats.firstAt - result.spawnedAt,
      tailMs: result.exitedAt - stats.lastAt,
      requests: calls.length,
      transient,
      refreshed,
      meanSuccessCycleMs: meanSuccessMs,
      failedCyclesMs: failedMs,
      allowed,
      fraction: refreshed / allowed,
      meanFailedCallMs,
      allowedNet,
      fractionNet: refreshed / allowedNet,
    };
  });
}

async function benchDeadline(
  db: TestDatabase,
  sql: postgres.Sql,
  sizes: BenchSizes,
): Promise<DeadlineResult[]> {
  const runs: DeadlineResult[] = [];
  for (
    const [label, backoff] of [
      ["defaults (`--backoff 1s`)", undefined],
      [`\`--backoff ${DEADLINE_SCALED_BACKOFF}\``, DEADLINE_SCALED_BACKOFF],
    ] as const
  ) {
    const run = await deadlineRun(db, sql, sizes, label, backoff);
    runs.push(run);
    note(
      `deadline ${label}: ${run.refreshed} refreshed, ${
        num(run.fraction * 100, 1)
      } % of what the deadline allows`,
    );
  }
  return runs;
}

function deadlineTable(runs: DeadlineResult[]): string {
  const s = (ms: number) => num(ms / 1000, 2);
  const pct = (r: DeadlineResult, ms: number) =>
    `${s(ms)} (${num(ms / r.timeBudgetMs * 100, 1)} %)`;
  const row = (title: string, cell: (r: DeadlineResult) => string) => [
    title,
    ...runs.map(cell),
  ];
  const first = runs[0]!;
  return markdownTable(
    [
      `\`--time-budget ${
        first.timeBudgetMs / 1000
      }s\`, vendor ${DEADLINE_LATENCY_MS} ms, ${
        DEADLINE_ERROR_RATE * 100
      } % 503s, ${num(first.targets)} targets, \`--budget ${
        num(first.creditsAtStart)
      }\``,
      ...runs.map((r) => r.label),
    ],
    [
      row("summary", (r) => r.summary.replace(/^refresh: /, "")),
      row("wall time, spawn to exit (s)", (r) => s(r.wallMs)),
      row(
        "requests (of which 503)",
        (r) => `${num(r.requests)} (${num(r.transient)})`,
      ),
      row(
        "mean successful cycle: 200 arrives → next request arrives (ms)",
        (r) => num(r.meanSuccessCycleMs, 2),
      ),
      row(
        "**what the deadline allows**: budget ÷ mean successful cycle",
        (r) => num(r.allowed),
      ),
      row("targets refreshed", (r) => num(r.refreshed)),
      row(
        "**fraction converted**: refreshed ÷ what the deadline allows",
        (r) => `**${num(r.fraction * 100, 1)} %**`,
      ),
      row(
        "mean time the vendor took to answer a 503 (ms)",
        (r) => num(r.meanFailedCallMs, 2),
      ),
      row(
        "what the deadline allows net of the 503s themselves: budget ÷ (mean successful cycle + 503s per success × mean 503)",
        (r) => num(r.allowedNet),
      ),
      row(
        "fraction converted, net of the 503s themselves",
        (r) => `${num(r.fractionNet * 100, 1)} %`,
      ),
      row(
        "where the budget went (s): startup, spawn → first request",
        (r) => pct(r, r.startupMs),
      ),
      row(
        "… successful cycles (refreshed × mean)",
        (r) => pct(r, r.refreshed * r.meanSuccessCycleMs),
      ),
      row(
        "… cycles that began with a 503: request + backoff",
        (r) => pct(r, r.failedCyclesMs),
      ),
      row("… last answer → exit", (r) => s(r.tailMs)),
    ],
  );
}

// ---------------------------------------------------------------------------
// The machine

// ---------------------------------------------------------------------------

/** Where the benchmark ran. */
export interface Machine {
  cpu: string;
  cores: number;
  memoryGiB: number;
  os: string;
  deno: string;
  database: string;
}

async function describeMachine(
  db: TestDatabase,
  sql: postgres.Sql,
): Promise<Machine> {
  const cpuinfo = await Deno.readTextFile("/proc/cpuinfo").catch(() => "");
  const meminfo = await Deno.readTextFile("/proc/meminfo").catch(() => "");
  const [version] = await sql<{ version: string }[]>`select version()`;
  const server = version!.version.split(" on ")[0]!.split(",")[0]!;
  return {
    cpu: cpuinfo.match(/^model name\s*:\s*(.+)$/m)?.[1]?.trim() ?? "unknown",
    cores: navigator.hardwareConcurrency,
    memoryGiB: Number(meminfo.match(/^MemTotal:\s+(\d+) kB/m)?.[1] ?? 0) /
      1024 / 1024,
    os: `${Deno.build.os} ${Deno.osRelease()}`,
    deno: Deno.version.deno,
    database: db.kind === "pglite"
      ? `PGlite (embedded, via pglite-socket; reports ${server})`
      : `${server} (BENCH_DATABASE_URL)`,
  };
}

function machineTable(m: Machine): string {
  return markdownTable(["machine", ""], [
    ["CPU", m.cpu],
    ["cores", String(m.cores)],
    ["memory", `${num(m.memoryGiB, 1)} GiB`],
    ["OS", m.os],
    ["Deno", m.deno],
    ["database", m.database],
  ]);
}

// ---------------------------------------------------------------------------
// The chart
// ---------------------------------------------------------------------------

/** One bar of a chart panel. */
export interface Bar {
  label: string;
  value: number;
  /** The text printed after the bar. */
  text: string;
  color?: string;
}

const COLORS = {
  refresh: "#2563eb",
  naive: "#9ca3af",
  bad: "#dc2626",
  ok: "#16a34a",
  other: "#f59e0b",
};

function escapeXml(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(
    />/g,
    "&gt;",
  );
}

/**
 * Draws one panel of horizontal bars.
 *
 * @returns The SVG elements and the panel's height.
 */
export function barPanel(
  y: number,
  title: string,
  bars: Bar[],
  width = 760,
): { svg: string; height: number } {
  const labelWidth = 250;
  const barMax = width - labelWidth - 110;
  const max = Math.max(...bars.map((b) => b.value), 1e-9);
  const parts = [
    `<text x="10" y="${y + 16}" font-weight="bold">${escapeXml(title)}</text>`,
  ];
  bars.forEach((bar, i) => {
    const top = y + 28 + i * 22;
    const w = Math.max(1, bar.value / max * barMax);
    parts.push(
      `<text x="${labelWidth - 8}" y="${top + 13}" text-anchor="end">${
        escapeXml(bar.label)
      }</text>`,
      `<rect x="${labelWidth}" y="${top}" width="${
        w.toFixed(1)
      }" height="16" fill="${bar.color ?? COLORS.refresh}"/>`,
      `<text x="${(labelWidth + w + 6).toFixed(1)}" y="${top + 13}">${
        escapeXml(bar.text)
      }</text>`,
    );
  });
  return { svg: parts.join("\n"), height: 36 + bars.length * 22 + 14 };
}

/** Draws one stacked bar with a legend. */
function stackedPanel(
  y: number,
  title: string,
  segments: { label: string; value: number; color: string }[],
  width = 760,
): { svg: string; height: number } {
  const total = segments.reduce((s, x) => s + x.value, 0) || 1;
  const left = 10;
  const barWidth = width - 20;
  const parts = [
    `<text x="10" y="${y + 16}" font-weight="bold">${escapeXml(title)}</text>`,
  ];
  let x = left;
  for (const seg of segments) {
    const w = seg.value / total * barWidth;
    parts.push(
      `<rect x="${x.toFixed(1)}" y="${y + 28}" width="${
        Math.max(0, w).toFixed(1)
      }" height="20" fill="${seg.color}"/>`,
    );
    x += w;
  }
  segments.forEach((seg, i) => {
    const lx = left + (i % 2) * (barWidth / 2);
    const ly = y + 64 + Math.floor(i / 2) * 18;
    parts.push(
      `<rect x="${lx}" y="${
        ly - 10
      }" width="12" height="12" fill="${seg.color}"/>`,
      `<text x="${lx + 18}" y="${ly}">${escapeXml(seg.label)}</text>`,
    );
  });
  return {
    svg: parts.join("\n"),
    height: 64 + Math.ceil(segments.length / 2) * 18 + 10,
  };
}

/**
 * Draws the chart of whatever sections ran.
 *
 * @param results The results.
 * @returns The SVG document.
 */
export function chartSvg(results: BenchResults): string {
  const width = 760;
  const panels: string[] = [];
  let y = 10;
  const add = (panel: { svg: string; height: number }) => {
    panels.push(panel.svg);
    y += panel.height;
  };
  const o = results.overhead;
  if (o) {
    const us = (ms: number) => ms / o.targets * 1000;
    add(barPanel(
      y,
      `Time per target, zero-latency vendor (µs, median of ${o.reps} × ${
        num(o.targets)
      }) — lower is better`,
      [
        {
          label: "refresh.ts, vendor window",
          value: us(o.median.refresh.spanMs),
          text: `${num(us(o.median.refresh.spanMs))} µs (${
            num(o.ratioSteady, 2)
          }×)`,
        },
        {
          label: "naive loop, vendor window",
          value: us(o.median.naive.spanMs),
          text: `${num(us(o.median.naive.spanMs))} µs`,
          color: COLORS.naive,
        },
        {
          label: "refresh.ts, spawn to exit",
          value: us(o.median.refresh.wallMs),
          text: `${num(us(o.median.refresh.wallMs))} µs (${
            num(o.ratioWall, 2)
          }×)`,
        },
        {
          label: "naive loop, spawn to exit",
          value: us(o.median.naive.wallMs),
          text: `${num(us(o.median.naive.wallMs))} µs`,
          color: COLORS.naive,
        },
      ],
    ));
  }
  const m = results.memory;
  if (m) {
    add(barPanel(
      y,
      `Peak RSS (MiB); real runs capped at ${num(m.limit)} targets`,
      m.runs.map((run) => ({
        label: {
          help: "--help (baseline)",
          "dry-run": `--dry-run, ${num(run.rows)} rows`,
          limited: `real run, ${num(run.rows)} rows`,
          naive: `naive loop, ${num(run.rows)} rows`,
        }[run.mode],
        value: run.peakRssBytes / MIB,
        text: `${num(run.peakRssBytes / MIB, 1)} MiB`,
        color: run.mode === "help" || run.mode === "naive"
          ? COLORS.naive
          : COLORS.refresh,
      })),
    ));
  }
  const p = results.politeness;
  if (p) {
    const color = (r: PressureRun) =>
      r.client === "refresh.ts" ? COLORS.refresh : COLORS.naive;
    add(barPanel(
      y,
      `Vendor with room for one request: non-200 answers (${
        num(p[0]?.targets ?? 0)
      } targets)`,
      p.map((r) => ({
        label: r.client,
        value: r.non200,
        text: num(r.non200),
        color: color(r),
      })),
    ));
    add(barPanel(
      y,
      "… targets left unrefreshed",
      p.map((r) => ({
        label: r.client,
        value: r.left,
        text: num(r.left),
        color: r.left > 0 ? COLORS.bad : color(r),
      })),
    ));
  }
  for (const d of results.deadline ?? []) {
    const success = d.refreshed * d.meanSuccessCycleMs;
    const rest = Math.max(
      0,
      d.wallMs - d.startupMs - success - d.failedCyclesMs,
    );
    const secs = (ms: number) => `${num(ms / 1000, 2)} s`;
    add(stackedPanel(
      y,
      `${d.timeBudgetMs / 1000} s time budget, ${d.label.replace(/`/g, "")}: ${
        num(d.fraction * 100, 1)
      } % converted (wall ${secs(d.wallMs)})`,
      [
        {
          label: `startup ${secs(d.startupMs)}`,
          value: d.startupMs,
          color: COLORS.naive,
        },
        {
          label: `successful cycles ${secs(success)}`,
          value: success,
          color: COLORS.ok,
        },
        {
          label: `503s and their backoff ${secs(d.failedCyclesMs)}`,
          value: d.failedCyclesMs,
          color: COLORS.bad,
        },
        { label: `the rest ${secs(rest)}`, value: rest, color: COLORS.other },
      ],
    ));
  }
  const footer =
    `${results.machine.cpu}, ${results.machine.cores} cores; Deno ${results.machine.deno}; ${results.machine.database}`;
  panels.push(
    `<text x="10" y="${y + 12}" fill="#6b7280">${escapeXml(footer)}</text>`,
  );
  y += 24;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${y}" viewBox="0 0 ${width} ${y}" font-family="system-ui, sans-serif" font-size="12">`,
    `<rect width="100%" height="100%" fill="#ffffff"/>`,
    ...panels,
    "</svg>",
    "",
  ].join("\n");
}

// ---------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------

/** Everything one benchmark run measured. */
export interface BenchResults {
  startedAt: string;
  finishedAt?: string;
  command: string;
  quick: boolean;
  sizes: BenchSizes;
  machine: Machine;
  overhead?: OverheadResult;
  memory?: MemoryResult;
  politeness?: PressureRun[];
  deadline?: DeadlineResult[];
  /** Sections that failed, with why. */
  errors: Record<string, string>;
}

/**
 * Formats the written files as `deno fmt` would, so that the repository's
 * `deno fmt --check` stays clean when they are committed.
 */
async function formatOutputs(): Promise<void> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["fmt", "--quiet", "bench_results.json", "bench_chart.svg"],
    cwd: DEV,
    stdout: "null",
    stderr: "piped",
  }).output();
  if (out.code !== 0) {
    note(`deno fmt failed: ${new TextDecoder().decode(out.stderr).trim()}`);
  }
}

function note(message: string): void {
  console.error(`bench: ${message}`);
}

function printSection(title: string, body: string, notes = ""): void {
  console.log(`\n## ${title}\n\n${body}${notes ? `\n\n${notes}` : ""}`);
}

/** What each section measured, printed under its tables. */
const NOTES: Record<Section, (sizes: BenchSizes) => string> = {
  overhead: () =>
    `Both run as child processes against the same database and a fake vendor that answers at once, on a table created afresh for each run: refresh.ts through \`deno task refresh\` with its defaults, the naive loop (\`dev/bench_naive.ts\`: select the ids, fetch, \`UPDATE\`, nothing else) through \`deno run\`, in alternating order. "Vendor's first call to last answer" leaves process start-up out; "spawn to exit" keeps it in. Goal: refresh.ts ≤ 1.30× the naive loop's time per target.

The profiling runs are separate: the proxy adds its own hop to every SQL round trip, and the inspector its own cost (Deno reports every fetch to it: \`op_inspector_emit_protocol_event\`, \`inspector_network_bridge.js\`), to both programs alike; read them for proportions, not for speed. Time spent in Rust (HTTP, sockets, timers) shows as idle in a V8 profile; the /proc CPU time counts it.`,
  memory: (sizes) =>
    `Peak RSS is \`VmHWM\` of the \`deno run\` process (the \`refresh\` task's flags from deno.json, run directly so that the pid measured is the one doing the work), read from /proc every 20 ms. The real runs are capped at \`--limit ${
      num(sizes.memoryLimit)
    }\` on every table size, so the table grows tenfold while the work stays the same; the vendor answers at once.`,
  politeness: () =>
    `The vendor answers 503 to a request that arrives while another is in flight, and takes ${PRESSURE_LATENCY_MS} ms × the requests in flight to answer any. refresh.ts runs with its defaults. The naive workers (\`dev/bench_naive.ts\` with \`NAIVE_WORKERS\`) share one id list and postgres.js's default pool, retry a 503 up to ${NAIVE_MAX_ATTEMPTS} requests in all, pausing ${NAIVE_RETRY_PAUSE_MS} ms × the attempt number, as a typical script does, and leave a target that still fails. Credits billed: the 200 answers; wasted: billed answers that did not end in a stored row.`,
  deadline: () =>
    `The vendor answers in ${DEADLINE_LATENCY_MS} ms; ${
      DEADLINE_ERROR_RATE * 100
    } % of requests (seeded pseudo-random) get a 503 without Retry-After; it has more credits, and the table more targets, than fit in the time. **What the deadline allows** = the time budget ÷ the mean successful cycle (a 200's arrival at the vendor to the next request's arrival: request, validation, the write and the loop), measured in the same run: the targets a client this fast would refresh if no request failed and it needed no start-up. The fraction is thus charged with everything else: start-up, the 503s, their backoff and any time left unused at the deadline. The "net" line forgives the 503s themselves (one vendor round trip each) but not their backoff. refresh.ts's default backoff is 1 s with full jitter; ${DEADLINE_SCALED_BACKOFF} is that default scaled to this vendor, as 1 s is to a vendor answering in ~200 ms.`,
};

/**
 * Runs the benchmark.
 *
 * @param quick Smaller sizes.
 * @param sections The sections to run.
 * @returns The exit code: 0, or 1 when a section failed.
 */
export async function runBench(
  quick: boolean,
  sections: Section[],
): Promise<number> {
  await readClockTicks();
  const sizes = quick ? QUICK : FULL;
  const db = await startTestDatabase("BENCH_DATABASE_URL");
  const sql = db.client();
  try {
    const results: BenchResults = {
      startedAt: new Date().toISOString(),
      command: ["deno task bench", ...Deno.args].join(" "),
      quick,
      sizes,
      machine: await describeMachine(db, sql),
      errors: {},
    };
    printSection("Machine", machineTable(results.machine));
    const steps: Record<Section, () => Promise<void>> = {
      overhead: async () => {
        results.overhead = await benchOverhead(db, sql, sizes);
        printSection(
          "1. Overhead per target (zero-latency vendor)",
          overheadTables(results.overhead),
          NOTES.overhead(sizes),
        );
      },
      memory: async () => {
        results.memory = await benchMemory(db, sql, sizes);
        printSection(
          "2. Memory at scale",
          memoryTable(results.memory),
          NOTES.memory(sizes),
        );
      },
      politeness: async () => {
        results.politeness = await benchPoliteness(db, sql, sizes);
        printSection(
          "3. Politeness under pressure",
          politenessTable(results.politeness),
          NOTES.politeness(sizes),
        );
      },
      deadline: async () => {
        results.deadline = await benchDeadline(db, sql, sizes);
        printSection(
          "4. Credits used before the deadline",
          deadlineTable(results.deadline),
          NOTES.deadline(sizes),
        );
      },
    };
    for (const section of sections) {
      const started = performance.now();
      note(`${section}: starting`);
      try {
        await steps[section]();
      } catch (error) {
        results.errors[section] = String((error as Error)?.stack ?? error);
        console.log(`\n## ${section}: FAILED\n\n${results.errors[section]}`);
      }
      note(
        `${section}: done in ${num((performance.now() - started) / 1000, 1)} s`,
      );
    }
    await sql`drop schema if exists ${sql(SCHEMA)} cascade`;
    results.finishedAt = new Date().toISOString();
    await Deno.writeTextFile(
      `${DEV}bench_results.json`,
      JSON.stringify(results, null, 2) + "\n",
    );
    await Deno.writeTextFile(`${DEV}bench_chart.svg`, chartSvg(results));
    await formatOutputs();
    note("wrote dev/bench_results.json and dev/bench_chart.svg");
    return Object.keys(results.errors).length > 0 ? 1 : 0;
  } finally {
    await sql.end();
    await db.close();
  }
}

if (import.meta.main) {
  const parsed = parseBenchArgs(Deno.args);
  if (parsed.kind === "help") {
    console.log(USAGE);
  } else if (parsed.kind === "error") {
    console.error(`bench: ${parsed.message}\n\n${USAGE}`);
    Deno.exitCode = 2;
  } else {
    Deno.exitCode = await runBench(parsed.quick, parsed.sections);
  }
}
