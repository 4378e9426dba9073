/**
 * Tests for the demo: its pure parts in-process, and `deno task demo` as a
 * child process, end to end, on the embedded PGlite (which the demo starts
 * in a process of its own).
 *
 * @module
 */

import {
  assert,
  assertEquals,
  assertExists,
  assertMatch,
  assertNotEquals,
} from "@std/assert";
import {
  DEMO_CREDITS,
  DEMO_MAX_ATTEMPTS,
  demoReply,
  formatRows,
  parseDemoArgs,
  troublePlan,
} from "./demo.ts";
import { childEnv, ROOT } from "./test_db.ts";

// Deno 2.8 and later leave the op and resource sanitizers off unless asked.
Deno.test.sanitizer({ ops: true, resources: true });

Deno.test("parseDemoArgs() reads --people and --latency, with defaults", () => {
  assertEquals(parseDemoArgs([]), {
    kind: "run",
    options: { people: 300, latencyMs: 20 },
  });
  assertEquals(parseDemoArgs(["--people", "40", "--latency", "1"]), {
    kind: "run",
    options: { people: 40, latencyMs: 1 },
  });
  assertEquals(parseDemoArgs(["-h"]), { kind: "help" });
  for (
    const bad of [["--people", "x"], ["--people", "3"], ["--latency", "-1"], [
      "--nope",
    ]]
  ) {
    assertEquals(parseDemoArgs(bad).kind, "error", bad.join(" "));
  }
});

Deno.test("troublePlan() gives each kind of trouble to distinct ids in range", () => {
  for (const people of [10, 40, 300, 1000]) {
    const plan = troublePlan(people);
    const ids = [
      ...plan.notFound,
      plan.malformed,
      plan.rateLimited,
      ...plan.transient,
      plan.outage,
    ];
    assertEquals(new Set(ids).size, ids.length, `people=${people}`);
    assert(ids.every((id) => id >= 1 && id <= people), `people=${people}`);
    assert(plan.notFound.size >= 1 && plan.transient.size >= 1);
  }
});

Deno.test("demoReply() spends a credit on every 200 and says how many are left", () => {
  const plan = troublePlan(300);
  const credits = { remaining: 2 };
  const ok = demoReply(plan, credits, 1, 1);
  assertEquals(ok.status, 200);
  assertEquals(ok.headers?.["x-credits-remaining"], "1");
  assertEquals(demoReply(plan, credits, plan.malformed, 1).status, 200);
  assertEquals(credits.remaining, 0);
  assertEquals(demoReply(plan, credits, 2, 1).status, 402);
  const notFound = demoReply(plan, credits, [...plan.notFound][0]!, 1);
  assertEquals(notFound.status, 404);
  assertEquals(credits.remaining, 0);
});

Deno.test("demoReply() scripts the retries: 429 once, transient once, the outage for a whole run", () => {
  const plan = troublePlan(300);
  const credits = { remaining: DEMO_CREDITS };
  const limited = demoReply(plan, credits, plan.rateLimited, 1);
  assertEquals(limited.status, 429);
  assertEquals(limited.headers?.["retry-after"], "1");
  assertEquals(demoReply(plan, credits, plan.rateLimited, 2).status, 200);
  const transient = [...plan.transient][0]!;
  assert(demoReply(plan, credits, transient, 1).status! >= 500);
  assertEquals(demoReply(plan, credits, transient, 2).status, 200);
  for (let attempt = 1; attempt <= DEMO_MAX_ATTEMPTS; attempt++) {
    assertEquals(demoReply(plan, credits, plan.outage, attempt).status, 503);
  }
  assertEquals(
    demoReply(plan, credits, plan.outage, DEMO_MAX_ATTEMPTS + 1).status,
    200,
  );
});

Deno.test("formatRows() aligns columns and cuts long values", () => {
  const text = formatRows([{ a: 1, b: "x".repeat(10) }, { a: 22, b: null }], 5);
  assertEquals(text, "a  | b\n---+------\n1  | xxxx…\n22 |");
  assertEquals(formatRows([]), "(no rows)");
});

/** One refresh summary: `refresh: run <id> <status> in <duration>` and its targets line. */
interface Summary {
  runId: string;
  status: string;
  selected: number;
  processed: number;
  ok: number;
  notFound: number;
  invalid: number;
  failed: number;
}

const SUMMARY =
  /^refresh: run (\d+) (\S+) in \S+.*\n {2}targets: (\d+) selected, (\d+) processed: (\d+) ok, (\d+) not_found, (\d+) invalid, (\d+) failed/gm;

function summaries(output: string): Summary[] {
  return [...output.matchAll(SUMMARY)].map((m) => ({
    runId: m[1]!,
    status: m[2]!,
    selected: Number(m[3]),
    processed: Number(m[4]),
    ok: Number(m[5]),
    notFound: Number(m[6]),
    invalid: Number(m[7]),
    failed: Number(m[8]),
  }));
}

Deno.test({
  name: "deno task demo runs refresh twice and the second run resumes",
  async fn() {
    const people = 40;
    // The demo uses its embedded database whatever this process was given:
    // DEMO_DATABASE_URL, like GITHUB_ACTIONS, is not passed on.
    const output = await new Deno.Command(Deno.execPath(), {
      args: [
        "task",
        "demo",
        "--people",
        String(people),
        "--latency",
        "1",
      ],
      cwd: ROOT,
      clearEnv: true,
      env: childEnv(),
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stdout = new TextDecoder().decode(output.stdout);
    const stderr = new TextDecoder().decode(output.stderr);
    const context = `--- stdout\n${stdout}\n--- stderr\n${stderr}`;
    assertEquals(output.code, 0, context);

    const [first, second, ...more] = summaries(stdout);
    assertExists(first, context);
    assertExists(second, context);
    assertEquals(more, [], context);
    assertNotEquals(first.runId, second.runId);
    assertEquals(first.status, "completed", context);
    assertEquals(second.status, "completed", context);

    const plan = troublePlan(people);
    assertEquals(first.selected, people, context);
    assertEquals(first.processed, people, context);
    assertEquals(first.notFound, plan.notFound.size, context);
    assertEquals(first.invalid, 1, context);
    assertEquals(first.failed, 1, context);
    assertEquals(
      first.ok,
      people - plan.notFound.size - 2,
      context,
    );
    // Only the target that failed is tried again; known misses are not.
    assertEquals(second.selected, 1, context);
    assertEquals(second.processed, 1, context);
    assertEquals(second.ok, 1, context);

    // The demo shows what it queried, and the retry the vendor asked for.
    assertMatch(stdout, /from demo\.refresh_state/);
    assertMatch(stdout, /from demo\.refresh_runs/);
    assertMatch(stderr, /attempt 1 → 429 with Retry-After: 1/);
    // The retry waited at least what Retry-After asked for.
    const waited = stderr.match(
      new RegExp(`id ${plan.rateLimited} attempt 2 \\((\\d+\\.\\d+) s after`),
    );
    assertExists(waited, context);
    assert(Number(waited[1]) >= 0.99, `retried after ${waited[1]} s`);
  },
});
