/**
 * `deno task bench [--quick] [--out DIR]`: refresh.ts against a naive loop
 * (`bench_naive.ts`: select the ids, then fetch and `UPDATE` each), both as
 * child processes, side by side in one run, against the same database
 * (`BENCH_DATABASE_URL`, else an embedded PGlite) and a fake vendor on
 * 127.0.0.1. Four figures, each a ratio:
 *
 * 1. time per target, vendor answering at once (alternating runs, medians);
 * 2. vendor busy fraction, measured at the vendor, with the database round
 *    trip lengthened by a loopback proxy (`tcp_proxy.ts`); and, as the
 *    ceiling, that of the naive loop without its `UPDATE` (a bare fetch loop);
 * 3. refresh.ts's peak memory (`VmHWM`), 100k targets processed against 10k;
 * 4. politeness: a vendor with room for one request at a time.
 *
 * It prints the README's lines ready to paste and writes `bench_results.json`
 * and `bench_chart.svg` to `--out` (default: `dev/`; nowhere for `--quick`,
 * the smoke test's size, whose figures are rough).
 *
 * @module
 */

import { parseArgs } from "@std/cli/parse-args";
import type postgres from "postgres";
import { type Script, startFakeVendor } from "./fake_vendor.ts";
import { startTcpProxy } from "./tcp_proxy.ts";
import {
  childEnv,
  createPeople,
  denoTasks,
  ROOT,
  startTestDatabase,
} from "./test_db.ts";

const SCHEMA = `bench_${crypto.randomUUID().slice(0, 8)}`;
const TABLE = `${SCHEMA}.people`;
/** The `refresh` task's command, run directly: its pid is the one sampled. */
const ARGS = {
  refresh: (await denoTasks()).refresh!.split(/\s+/).slice(1),
  naive: ["run", "--allow-all", "dev/bench_naive.ts"],
};
type Program = keyof typeof ARGS;

/** How much work each figure does; `busy` maps vendor latency to targets. */
export const FULL = {
  overhead: { targets: 1500, reps: 7 },
  busy: { targets: { 40: 80, 150: 20 } as Record<number, number>, reps: 3 },
  memory: [10_000, 100_000],
  polite: 300,
};
export const QUICK: typeof FULL = {
  overhead: { targets: 300, reps: 1 },
  busy: { targets: { 40: 5, 150: 3 }, reps: 1 },
  memory: [100, 1_000],
  polite: 60,
};
const VENDOR_MS = [40, 150];
const DB_RTT_MS = [0, 10, 50];
const GOAL = { overhead: 1.2, busy: 0.97, memory: 1.15 };
const BUSY_GOAL_CELLS = ["40/10", "150/50"];
/** Figure 4: the vendor's time to serve one answer; the naive workers. */
const SERVE_MS = 10;
const WORKERS = [4, 16];

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}
const num = (value: number, digits = 0) =>
  value.toLocaleString("en-US", {
    minimumFractionDigits: digits,
    maximumFractionDigits: digits,
  });
const pct = (fraction: number) => `${num(fraction * 100, 1)} %`;
const MIB = 2 ** 20;

/**
 * Runs a program as a child process; returns its peak RSS, sampled only when
 * asked for (the sampler shares the fake vendor's event loop).
 */
async function spawn(
  program: Program,
  env: Record<string, string>,
  sample: boolean,
) {
  const child = new Deno.Command(Deno.execPath(), {
    args: ARGS[program],
    cwd: ROOT,
    clearEnv: true,
    env: childEnv({ NO_COLOR: "1", ...env }),
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  let done = false;
  const output = child.output().finally(() => done = true);
  let peakRss = 0;
  while (sample && !done) {
    const status = await Deno.readTextFile(`/proc/${child.pid}/status`)
      .catch(() => "");
    const kib = Number(status.match(/^VmHWM:\s+(\d+) kB/m)?.[1] ?? 0);
    peakRss = Math.max(peakRss, kib * 1024);
    await new Promise((r) => setTimeout(r, 20));
  }
  const { code, stderr } = await output;
  if (code === 0) return peakRss;
  const tail = new TextDecoder().decode(stderr).slice(-2000);
  throw new Error(`${program} exited with code ${code}\n${tail}`);
}

/** A bench over one database: every run gets a fresh table and vendor. */
function bench(sql: postgres.Sql, databaseUrl: string) {
  return async function run(program: Program, o: {
    targets: number;
    latencyMs?: number;
    script?: Script;
    dbRttMs?: number;
    workers?: number;
    /** Sample the child's peak memory. */
    sample?: boolean;
    /** The naive loop without its `UPDATE`. */
    noWrite?: boolean;
  }) {
    // The table as the README sets it up: with an index on refreshed-at.
    await createPeople(sql, SCHEMA, { count: o.targets });
    await sql`create index on ${sql(TABLE)} (vendor_refreshed_at)`;
    await sql`analyze ${sql(TABLE)}`;
    const vendor = await startFakeVendor(o);
    const { hostname, port } = new URL(databaseUrl);
    const proxy = o.dbRttMs
      ? startTcpProxy({ hostname, port: +port, delayMs: o.dbRttMs / 2 })
      : undefined;
    try {
      // The same settings for both; the naive loop reads NAIVE_WORKERS too.
      const peakRss = await spawn(program, {
        DATABASE_URL: proxy?.via(databaseUrl) ?? databaseUrl,
        REFRESH_API_URL: vendor.urlTemplate,
        REFRESH_API_KEY: "bench-key-not-a-secret",
        REFRESH_TABLE: TABLE,
        REFRESH_STATE_SCHEMA: SCHEMA,
        NAIVE_WORKERS: String(o.workers || 1),
        NAIVE_WRITE: o.noWrite ? "0" : "1",
      }, o.sample ?? false);
      const [row] = await sql<{ stored: number }[]>`
        select count(vendor_refreshed_at)::int as stored from ${sql(TABLE)}`;
      const calls = vendor.calls;
      let busyMs = 0, lastAnswer = 0, billed = 0;
      for (const c of calls) {
        busyMs += c.endedAt! - c.startedAt;
        lastAnswer = Math.max(lastAnswer, c.endedAt!);
        if (c.status === 200) billed++;
      }
      return {
        requests: calls.length,
        failures: calls.length - billed,
        billed,
        stored: row!.stored,
        /** First request's arrival to last answer, at the vendor (ms). */
        spanMs: calls.length ? lastAnswer - calls[0]!.startedAt : 0,
        /** Sum over requests of answer time − arrival time (ms). */
        busyMs,
        maxInFlight: vendor.maxInFlight,
        peakRss,
      };
    } finally {
      await vendor.close();
      await proxy?.close();
    }
  };
}
type Run = Awaited<ReturnType<ReturnType<typeof bench>>>;

/** Runs the four figures. */
export async function runBench(sizes: typeof FULL, log = console.log) {
  const started = performance.now();
  const loadAtStart = Deno.loadavg()[0]!;
  const elapsed = () => `${num((performance.now() - started) / 1000)} s`;
  const db = await startTestDatabase("BENCH_DATABASE_URL");
  const sql = db.client();
  const run = bench(sql, db.url);
  /** Runs both programs `reps` times, alternating which goes first. */
  const sideBySide = async (reps: number, o: Parameters<typeof run>[1]) => {
    const runs = { refresh: [] as Run[], naive: [] as Run[] };
    for (let rep = 0; rep < reps; rep++) {
      const order = rep % 2 ? ["naive", "refresh"] : ["refresh", "naive"];
      for (const p of order as Program[]) runs[p].push(await run(p, o));
    }
    return runs;
  };
  try {
    const cpuinfo = await Deno.readTextFile("/proc/cpuinfo").catch(() => "");
    const cpu = cpuinfo.match(/^model name\s*:\s*(.+)$/m)?.[1];
    const [{ version }] = await sql<[{ version: string }]>`select version()`;
    const machine = [
      `${cpu ?? Deno.build.arch}, ${navigator.hardwareConcurrency} cores`,
      `${num(Deno.systemMemoryInfo().total / 2 ** 30, 1)} GiB`,
      `${Deno.build.os} ${Deno.osRelease()}, Deno ${Deno.version.deno}`,
      version.split(" ").slice(0, 2).join(" ") +
      (db.kind === "pglite" ? " (embedded PGlite)" : ""),
    ].join(", ");
    log(`machine: ${machine}`);

    // 1. Time per target, vendor answering at once.
    const { targets, reps } = sizes.overhead;
    const runs = await sideBySide(reps, { targets });
    const us = (rs: Run[]) => rs.map((r) => r.spanMs * 1000 / targets);
    const times = { refresh: us(runs.refresh), naive: us(runs.naive) };
    const [refreshUs, naiveUs] = [median(times.refresh), median(times.naive)];
    const ratio = refreshUs / naiveUs;
    const overhead = { targets, times, refreshUs, naiveUs, ratio };
    log(`1. µs/target: ${JSON.stringify(times)} (${elapsed()})`);

    // 2. Vendor busy fraction: vendor latency × database round trip.
    const of = (rs: Run[]) => {
      const each = rs.map((r) => r.busyMs / r.spanMs);
      const maxInFlight = Math.max(...rs.map((r) => r.maxInFlight));
      return { busy: median(each), each, maxInFlight };
    };
    const busy = [];
    /** Per vendor latency: a fetch loop that writes nothing. */
    const ceiling = [];
    for (const latencyMs of VENDOR_MS) {
      const targets = sizes.busy.targets[latencyMs]!;
      const bare = [];
      for (let rep = 0; rep < sizes.busy.reps; rep++) {
        bare.push(await run("naive", { targets, latencyMs, noWrite: true }));
      }
      ceiling.push({ vendorMs: latencyMs, targets, ...of(bare) });
      log(`2. vendor ${latencyMs} ms, ceiling ${pct(of(bare).busy)}`);
      for (const dbRttMs of DB_RTT_MS) {
        const o = { targets, latencyMs, dbRttMs };
        const runs = await sideBySide(sizes.busy.reps, o);
        const [refresh, naive] = [of(runs.refresh), of(runs.naive)];
        busy.push({ vendorMs: latencyMs, dbRttMs, targets, refresh, naive });
        log(
          `2. vendor ${latencyMs} ms, DB ${dbRttMs} ms: refresh ` +
            `${pct(refresh.busy)}, naive ${pct(naive.busy)} (${elapsed()})`,
        );
      }
    }

    // 3. Peak memory against targets processed.
    const peak = async (targets: number) => {
      const r = await run("refresh", { targets, sample: true });
      log(`3. ${num(targets)} targets: ${num(r.peakRss / MIB, 1)} MiB`);
      return { targets, processed: r.stored, peakMiB: r.peakRss / MIB };
    };
    const small = await peak(sizes.memory[0]!);
    const large = await peak(sizes.memory[1]!);
    const memory = { small, large, ratio: large.peakMiB / small.peakMiB };
    log(`3. done (${elapsed()})`);

    // 4. Politeness: room for one request; beyond it, a 503 at once.
    const capacityOne: Script = (_id, _attempt, vendor) =>
      vendor.inFlight > 1 ? { status: 503 } : { delayMs: SERVE_MS };
    const polite = [];
    for (const workers of [0, ...WORKERS]) {
      const client = workers ? `naive, ${workers} workers` : "refresh.ts";
      const r = await run(workers ? "naive" : "refresh", {
        targets: sizes.polite,
        script: capacityOne,
        workers,
      });
      polite.push({ client, targets: sizes.polite, ...r });
      log(`4. ${client}: ${r.failures} failures, ${r.stored} stored`);
    }
    log(`4. done (${elapsed()})`);

    return {
      date: new Date().toISOString().slice(0, 10),
      quick: sizes === QUICK,
      machine,
      durationS: Math.round((performance.now() - started) / 1000),
      /** One-minute load average of the machine, at start and at end. */
      load: [loadAtStart, Deno.loadavg()[0]!],
      overhead,
      busy,
      ceiling,
      memory,
      polite,
    };
  } finally {
    await sql`drop schema if exists ${sql(SCHEMA)} cascade`;
    await sql.end();
    await db.close();
  }
}
type Results = Awaited<ReturnType<typeof runBench>>;

/** A Markdown table, padded as `deno fmt` pads it. */
function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) =>
    Math.max(3, ...rows.map((r) => r[i]!.length))
  );
  const line = (r: string[]) =>
    `| ${r.map((cell, i) => cell.padEnd(widths[i]!)).join(" | ")} |`;
  const rule = `| ${widths.map((w) => "-".repeat(w)).join(" | ")} |`;
  return [line(rows[0]!), rule, ...rows.slice(1).map(line)].join("\n");
}

const isGoalCell = (b: Results["busy"][number]) =>
  BUSY_GOAL_CELLS.includes(`${b.vendorMs}/${b.dbRttMs}`);
const verdict = (met: boolean, goal: string) =>
  `${goal}: ${met ? "met" : "**not met**"}`;
const left = (c: Run & { targets: number }) => c.targets - c.stored;
const times = (ratio: number) => `${num(ratio, 2)}×`;

/** The README's lines, ready to paste. */
export function readmeLines(r: Results): string {
  const { overhead: o, memory: { small, large, ratio } } = r;
  const inFlight = (p: Program) =>
    Math.max(...r.busy.map((b) => b[p].maxInFlight));
  const figures = [
    ["figure", "refresh.ts", "naive loop", "ratio", "goal"],
    [
      "1. time per target (µs), vendor answering at once",
      num(o.refreshUs),
      num(o.naiveUs),
      times(o.ratio),
      verdict(o.ratio <= GOAL.overhead, `≤ ${GOAL.overhead}×`),
    ],
    ...r.busy.map((b) => [
      `2. vendor busy, vendor ${b.vendorMs} ms, DB round trip ${b.dbRttMs} ms`,
      pct(b.refresh.busy),
      pct(b.naive.busy),
      times(b.refresh.busy / b.naive.busy),
      isGoalCell(b) ? verdict(b.refresh.busy >= GOAL.busy, "≥ 97 %") : "",
    ]),
    ...r.ceiling.map((c) => [
      `2. vendor busy, vendor ${c.vendorMs} ms, naive loop without its UPDATE`,
      "",
      pct(c.busy),
      "",
      "the ceiling",
    ]),
    [
      "2. max requests in flight at the vendor",
      String(inFlight("refresh")),
      String(inFlight("naive")),
      "",
      verdict(inFlight("refresh") === 1, "1"),
    ],
    [
      `3. peak memory (MiB), ${num(small.targets)} → ${
        num(large.targets)
      } targets`,
      `${num(small.peakMiB, 1)} → ${num(large.peakMiB, 1)}`,
      "",
      times(ratio),
      verdict(ratio <= GOAL.memory, `≤ ${GOAL.memory}×`),
    ],
  ];
  const p = r.polite;
  const polite = [
    [`4. ${num(p[0]!.targets)} targets`, ...p.map((c) => c.client)],
    ["requests sent", ...p.map((c) => num(c.requests))],
    ["failed requests (503)", ...p.map((c) => num(c.failures))],
    ["credits billed, not stored", ...p.map((c) => num(c.billed - c.stored))],
    ["targets left unrefreshed", ...p.map((c) => num(left(c)))],
  ];
  const load = r.load.map((l) => num(l, 1)).join(" → ");
  const head = `Bench of ${r.date}, ${r.durationS} s (load average ${load}), ` +
    `on ${r.machine}:`;
  const wrapped = head.replace(/(.{1,80})( |$)/g, "$1\n").trim(); // as deno fmt
  return `${wrapped}\n\n${table(figures)}\n\n${table(polite)}`;
}

const [BLUE, ORANGE, GREY] = ["#2563eb", "#ea580c", "#9ca3af"];
const esc = (text: string) =>
  text.replaceAll("&", "&amp;").replaceAll("<", "&lt;");
/** A bar: label, value, the text after it, colour, and a goal to mark. */
type Bar = [string, number, string, string, number?];

/** A panel of horizontal bars at `y`; returns its SVG and its height. */
function panel(y: number, [title, caption, bars, max]: Panel) {
  const x0 = 200;
  const at = (v: number) => Math.round(x0 + 340 * Math.min(v, max) / max);
  let svg = `<text x="20" y="${y + 16}" class="title">${esc(title)}</text>
<text x="20" y="${y + 34}" class="caption">${esc(caption)}</text>\n`;
  let top = y + 40;
  for (const [label, value, text, color, goal] of bars) {
    if (label) top += 8;
    const [w, yText] = [at(value) - x0, top + 13];
    svg += `<text x="${x0 - 8}" y="${yText}" class="label">${esc(label)}</text>
<rect x="${x0}" y="${top}" width="${w}" height="16" fill="${color}"/>
<text x="${at(Math.max(value, goal ?? 0)) + 6}" y="${yText}">${
      esc(text)
    }</text>\n`;
    if (goal !== undefined) {
      const gx = at(goal);
      svg += `<path d="M${gx} ${top - 3}v22" class="goal"/>\n`;
    }
    top += 20;
  }
  return { svg, height: top + 24 - y };
}
/** Title, caption, bars, and the value at the right edge. */
type Panel = [string, string, Bar[], number];

/** The chart: four panels; refresh.ts always blue, the naive loop orange. */
export function chartSvg(r: Results): string {
  const { overhead: o, memory: { small, large, ratio } } = r;
  const n = r.polite[0]!.targets;
  const us = (v: number) => `${num(v)} µs`;
  const mib = (v: number) => `${num(v, 1)} MiB`;
  const ratios = {
    overhead: `${times(o.ratio)} (goal ≤ ${GOAL.overhead}×)`,
    memory: `${times(ratio)} (goal ≤ ${GOAL.memory}×)`,
  };
  const naiveGoal = o.naiveUs * GOAL.overhead;
  const panels: Panel[] = [[
    "1. Time per target (µs), lower is better",
    `Vendor answers at once; ${num(o.targets)} targets; medians of ` +
    `alternating runs. refresh ÷ naive = ${ratios.overhead}.`,
    [
      ["refresh.ts", o.refreshUs, us(o.refreshUs), BLUE, naiveGoal],
      ["naive loop", o.naiveUs, us(o.naiveUs), ORANGE],
    ],
    Math.max(o.refreshUs, naiveGoal) * 1.1,
  ], [
    "2. Vendor busy: its busy time ÷ first request to last answer (%)",
    "Vendor answers in 40 or 150 ms; a proxy lengthens the database (DB) " +
    "round trip. Higher is better; goal ≥ 97 % where marked.",
    r.busy.flatMap((b): Bar[] => {
      const top = r.ceiling.find((c) => c.vendorMs === b.vendorMs)!;
      const first = b.dbRttMs === DB_RTT_MS[0];
      const ceiling: Bar[] = first
        ? [[`vendor ${b.vendorMs} ms, no DB`, top.busy, pct(top.busy), GREY]]
        : [];
      const goal = isGoalCell(b) ? GOAL.busy : undefined;
      const met = b.refresh.busy >= GOAL.busy ? "met" : "not met";
      const text = pct(b.refresh.busy) + (goal ? ` (goal: ${met})` : "");
      const label = `vendor ${b.vendorMs} ms, DB ${b.dbRttMs} ms`;
      return [
        ...ceiling,
        [label, b.refresh.busy, text, BLUE, goal],
        ["", b.naive.busy, pct(b.naive.busy), ORANGE],
      ];
    }),
    1,
  ], [
    "3. Peak memory of refresh.ts (MiB), real runs",
    `Vendor answers at once. ${num(large.targets)} ÷ ` +
    `${num(small.targets)} targets processed = ${ratios.memory}.`,
    [small, large].map((m, i): Bar => [
      `${num(m.targets)} targets`,
      m.peakMiB,
      mib(m.peakMiB),
      BLUE,
      i ? small.peakMiB * GOAL.memory : undefined,
    ]),
    large.peakMiB * 1.3,
  ], [
    `4. Targets left unrefreshed, of ${num(n)}`,
    `Vendor with room for one request (${SERVE_MS} ms each), a 503 ` +
    "beyond it; it bills every answer it serves.",
    r.polite.map((c): Bar => [
      c.client,
      left(c),
      `${num(left(c))} left; ${num(c.failures)} failed requests; ` +
      `${num(c.billed - c.stored)} credits billed, not stored`,
      c.client === "refresh.ts" ? BLUE : ORANGE,
    ]),
    n,
  ]];
  let y = 78, body = "";
  for (const p of panels) {
    const { svg, height } = panel(y, p);
    [body, y] = [body + svg, y + height];
  }
  const title = "refresh.ts against a naive loop (fetch, then UPDATE), " +
    `bench of ${r.date}${r.quick ? " (--quick)" : ""}`;
  return `<svg xmlns="http://www.w3.org/2000/svg" width="840" height="${y}" \
font-family="sans-serif" font-size="12">
<style>.title{font-weight:bold}.caption{fill:#555}.label{text-anchor:end}
.goal{stroke:#111;stroke-width:2;stroke-dasharray:3 2}</style>
<rect width="100%" height="100%" fill="white"/>
<text x="20" y="22" class="title">${esc(title)}</text>
<text x="20" y="40" class="caption">${esc(r.machine)}</text>
<rect x="20" y="52" width="12" height="12" fill="${BLUE}"/>
<text x="38" y="62">refresh.ts</text>
<rect x="110" y="52" width="12" height="12" fill="${ORANGE}"/>
<text x="128" y="62">naive loop</text>
<rect x="196" y="52" width="12" height="12" fill="${GREY}"/>
<text x="214" y="62">naive loop without its UPDATE (the ceiling)</text>
<path d="M490 49v17" class="goal"/><text x="498" y="62">goal</text>
${body}</svg>
`;
}

if (import.meta.main) {
  const args = parseArgs(Deno.args, {
    boolean: ["quick", "help"],
    string: ["out"],
    alias: { h: "help" },
  });
  if (args.help || args._.length) {
    console.log("Usage: deno task bench [--quick] [--out DIR]");
    Deno.exit(args.help ? 0 : 2);
  }
  const results = await runBench(args.quick ? QUICK : FULL);
  const readme = readmeLines(results);
  console.log(`\nFor README.md's "Performance" section:\n\n${readme}\n`);
  const out = args.out ?? (args.quick ? undefined : ROOT + "dev");
  if (out) {
    await Deno.mkdir(out, { recursive: true });
    const round = (_: string, v: unknown) =>
      typeof v === "number" ? +v.toPrecision(6) : v;
    const [json, svg] = [`${out}/bench_results.json`, `${out}/bench_chart.svg`];
    await Deno.writeTextFile(json, JSON.stringify(results, round, 2));
    await Deno.writeTextFile(svg, chartSvg(results));
    // Formatted as `deno fmt --check` wants them in the repository.
    const fmt = ["fmt", "--quiet", json, svg];
    await new Deno.Command(Deno.execPath(), { args: fmt, cwd: ROOT }).output();
    console.log(`Wrote ${json} and ${svg}`);
  }
}
