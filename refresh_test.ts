/**
 * Tests for refresh.ts: pure helpers in-process, and the job itself as a
 * child process (`deno task refresh`, with the task's exact permissions)
 * against a real PostgreSQL server (`TEST_DATABASE_URL`) or an embedded
 * PGlite, and a real HTTP server on 127.0.0.1 standing in for the vendor.
 *
 * @module
 */

import {
  assert,
  assertEquals,
  assertGreaterOrEqual,
  assertLess,
  assertLessOrEqual,
  assertMatch,
  assertRejects,
  assertStringIncludes,
} from "@std/assert";
import {
  blame,
  type Config,
  escapeControls,
  exitCodeFor,
  fillUrl,
  flagText,
  forecast,
  formatDuration,
  keyHeader,
  LatencyStats,
  monthEndWindow,
  Pacer,
  parseBytes,
  parseConfig,
  parseDatabaseUrl,
  parseDuration,
  parseReset,
  parseRetryAfter,
  periodEnd,
  readCappedBody,
  readCount,
  readRateLimit,
  redactUrl,
  scrubSecrets,
  SETTINGS,
  usage,
} from "./refresh.ts";
import {
  type FakeVendor,
  type Script,
  startFakeVendor,
} from "./dev/fake_vendor.ts";
import {
  childEnv,
  createPeople,
  denoTasks,
  ROOT,
  type TestDatabase,
  testDatabaseForModule,
} from "./dev/test_db.ts";
import { startPgBouncer } from "./dev/pgbouncer.ts";
import { startTcpProxy, type TcpProxy } from "./dev/tcp_proxy.ts";
import { type FakePerson, startApollo, startPdl } from "./dev/vendors.ts";
import { delay } from "@std/async/delay";
import type postgres from "postgres";

// Deno 2.8 and later leave the op and resource sanitizers off unless asked:
// every test here runs with both (and the exit sanitizer, on by default).
Deno.test.sanitizer({ ops: true, resources: true });

const API_KEY = "sk_live_TESTKEY_9f8e7d6c5b4a";

/**
 * A run's arguments: an array, or one string of them separated by
 * whitespace (for arguments that hold none).
 */
type Args = string[] | string;

/** {@linkcode Args} as an array. */
function argv(args: Args = []): string[] {
  return typeof args === "string" ? args.split(/\s+/).filter((a) => a) : args;
}

// ---------------------------------------------------------------------------
// Pure helpers
// ---------------------------------------------------------------------------

Deno.test("parseDuration() accepts units and combinations", () => {
  assertEquals(parseDuration("0"), 0);
  assertEquals(parseDuration("250ms"), 250);
  assertEquals(parseDuration("30s"), 30_000);
  assertEquals(parseDuration("5m"), 300_000);
  assertEquals(parseDuration("2h"), 7_200_000);
  assertEquals(parseDuration("25d"), 25 * 86_400_000);
  assertEquals(parseDuration("5h30m"), 5.5 * 3_600_000);
  assertEquals(parseDuration("1m30s500ms"), 90_500);
  assertEquals(parseDuration("1.5s"), 1500);
});

Deno.test("parseDuration() rejects malformed durations", () => {
  for (const bad of ["", "5", "m", "5x", "-5s", "5 m", "s5", "1h-1m", "abc"]) {
    assertEquals(parseDuration(bad), undefined, bad);
  }
});

Deno.test("formatDuration() prints short human durations", () => {
  assertEquals(formatDuration(450), "450ms");
  assertEquals(formatDuration(30_000), "30s");
  assertEquals(formatDuration(3_723_000), "1h2m3s");
  assertEquals(formatDuration(86_400_000), "1d");
});

Deno.test("parseBytes() accepts plain and suffixed sizes", () => {
  assertEquals(parseBytes("1048576"), 1_048_576);
  assertEquals(parseBytes("1MiB"), 1_048_576);
  assertEquals(parseBytes("512KiB"), 524_288);
  assertEquals(parseBytes("2kb"), 2000);
  assertEquals(parseBytes("1.5MiB"), undefined);
  assertEquals(parseBytes("lots"), undefined);
  assertEquals(parseBytes("5 parsecs"), undefined);
});

Deno.test("parseRetryAfter() reads delay-seconds and the three HTTP-date forms", () => {
  const now = new Date("2026-11-28T12:00:00Z");
  assertEquals(parseRetryAfter("120", now), 120_000);
  assertEquals(parseRetryAfter(" 0 ", now), 0);
  assertEquals(parseRetryAfter("Sat, 28 Nov 2026 12:00:30 GMT", now), 30_000);
  assertEquals(
    parseRetryAfter("Saturday, 28-Nov-26 12:01:00 GMT", now),
    60_000,
  );
  assertEquals(parseRetryAfter("Sat Nov 28 12:00:05 2026", now), 5_000);
  // A date in the past means "now".
  assertEquals(parseRetryAfter("Sat, 28 Nov 2026 11:00:00 GMT", now), 0);
});

Deno.test("parseRetryAfter() ignores absent and malformed values", () => {
  for (
    const bad of [
      null,
      "",
      "-1",
      "1.5",
      "soon",
      "12 s",
      "2026-11-28",
      "Sat, 99 Nov 2026 12:00:00 GMT",
    ]
  ) {
    assertEquals(parseRetryAfter(bad), undefined, String(bad));
  }
});

Deno.test("redactUrl() hides passwords and secret-looking query parameters", () => {
  assertEquals(
    redactUrl("postgres://app:s3cr3t@db.example:5432/crm?sslmode=verify-full"),
    "postgres://app:***@db.example:5432/crm?sslmode=verify-full",
  );
  assertEquals(
    redactUrl("https://api.example/v1/p/{id}?api_key=abc&fields=all"),
    "https://api.example/v1/p/{id}?api_key=***&fields=all",
  );
  assertEquals(redactUrl("not a url s3cr3t"), "(unparsable URL)");
});

Deno.test("scrubSecrets() removes any run of 8 characters of a secret", () => {
  const key = "sk_live_0123456789abcdef";
  assertEquals(scrubSecrets(`a ${key} b`, [key]), "a *** b");
  // A cut that left part of the key: 8 characters of it are still found.
  assertEquals(scrubSecrets(`x ${key.slice(5, 13)}… y`, [key]), "x ***… y");
  assertEquals(
    scrubSecrets(`x ${key.slice(5, 12)} y`, [key]),
    `x ${key.slice(5, 12)} y`,
  );
});

Deno.test("scrubSecrets() finds a secret percent-encoded and in base64", () => {
  const secret = "p@ss/w0rd#with?all";
  assertEquals(scrubSecrets(encodeURIComponent(secret), [secret]), "***");
  for (const prefix of ["", "u", "us"]) {
    const basic = btoa(`${prefix}:${secret}`);
    const out = scrubSecrets(`Basic ${basic}`, [secret]);
    assert(out.includes("***"), `${prefix}: ${out}`);
  }
});

Deno.test("scrubSecrets() finds a secret in every encoded form", () => {
  // The second shares no 8 characters of its encodeURIComponent form with
  // its other forms: each form must be searched for itself.
  for (const secret of [`sk_li"ve it's/ké_y`, "ab cd/ef gh/ij"]) {
    const forms = [
      encodeURIComponent(secret),
      new URL(`http://x/?${secret}`).search.slice(1),
      new URL(`http://x/${secret}`).pathname.slice(1),
      new URLSearchParams({ k: secret }).toString().slice(2),
      JSON.stringify(secret).slice(1, -1),
    ];
    for (const form of forms) {
      const out = scrubSecrets(`before ${form} after`, [secret]);
      assertEquals(out, "before *** after", form);
    }
  }
});

Deno.test("scrubSecrets() leaves ordinary words alone, but searches outside text down to half a secret", () => {
  assertEquals(
    scrubSecrets("user postgres in PostgreSQL progress", ["postgres"]),
    "user *** in PostgreSQL progress",
  );
  assertEquals(scrubSecrets("echo: ostgr", ["postgres"]), "echo: ostgr");
  assertEquals(scrubSecrets("echo: ostgr", ["postgres"], [], 4), "echo: ***");
  assertEquals(
    scrubSecrets("a pw1 b", ["pw1"], [], 4),
    "a pw1 b",
    "under 4: not searched",
  );
});

Deno.test("scrubSecrets() leaves text it is told is safe as it is", () => {
  const url = "postgres://postgres:***@db:5432/postgres";
  assertEquals(
    scrubSecrets(`database ${url}; user postgres`, ["postgres"], [url]),
    `database ${url}; user ***`,
  );
});

Deno.test("escapeControls() keeps every value on its own line", () => {
  assertEquals(
    escapeControls("id a\n::error::x\r\tz\u0085"),
    "id a\\n::error::x\\r\\tz\\u0085",
  );
});

function streamOf(
  ...chunks: number[]
): ReadableStream<Uint8Array> & { cancelled: boolean } {
  let i = 0;
  const stream = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (i < chunks.length) controller.enqueue(new Uint8Array(chunks[i++]!));
      else controller.close();
    },
    cancel() {
      (stream as unknown as { cancelled: boolean }).cancelled = true;
    },
  }) as ReadableStream<Uint8Array> & { cancelled: boolean };
  stream.cancelled = false;
  return stream;
}

Deno.test("readCappedBody() reads bodies up to the cap and cancels beyond it", async () => {
  assertEquals((await readCappedBody(streamOf(3, 4), 7)).byteLength, 7);
  assertEquals((await readCappedBody(null, 7)).byteLength, 0);
  const big = streamOf(5, 5, 5, 5);
  await assertRejects(() => readCappedBody(big, 12), Error, "12-byte cap");
  assert(big.cancelled, "the stream was not cancelled");
});

Deno.test("fillUrl() encodes each value for its place", () => {
  assertEquals(
    fillUrl("https://v.example/people/{id}?email={email}&full=1", {
      id: "a b/c",
      email: "x+y@z.example",
    }),
    "https://v.example/people/a%20b%2Fc?email=x%2By%40z.example&full=1",
  );
});

Deno.test("fillUrl() refuses values a URL parser would move elsewhere", () => {
  for (const id of [".", "..", ""]) {
    assertEquals(fillUrl("https://v.example/people/{id}/card", { id }), {
      invalid: `id ${JSON.stringify(id)} cannot be placed in the URL path`,
    });
  }
  assertEquals(
    fillUrl("https://v.example/people/{id}.json", { id: "." }),
    "https://v.example/people/..json",
  );
  assertEquals(
    fillUrl("https://v.example/people?email={email}", { email: "" }),
    {
      invalid: `email "" cannot be placed in the URL`,
    },
  );
});

Deno.test("keyHeader() sends a bearer token or the bare key", () => {
  const s = { apiUrl: "https://v.example/{id}", apiKey: API_KEY };
  assertEquals(keyHeader({ ...s, apiKeyHeader: "Authorization" }), {
    authorization: `Bearer ${API_KEY}`,
  });
  assertEquals(keyHeader({ ...s, apiKeyHeader: "X-Api-Key" }), {
    "X-Api-Key": API_KEY,
  });
});

Deno.test("Pacer spaces request starts and obeys deferrals", async () => {
  let now = 0;
  const pacer = new Pacer({ minIntervalMs: 100, now: () => now });
  assertEquals(pacer.pendingWait(), 0);
  await pacer.wait();
  assertEquals(pacer.pendingWait(), 100);
  now = 60;
  assertEquals(pacer.pendingWait(), 40);
  pacer.deferFor(500);
  assertEquals(pacer.pendingWait(), 500);
  const aborted = AbortSignal.abort(new Error("stop"));
  await assertRejects(() => pacer.wait(aborted), Error, "stop");
});

Deno.test("Pacer rejects a negative interval, naming the value", () => {
  let message = "";
  try {
    new Pacer({ minIntervalMs: -1 });
  } catch (error) {
    message = (error as Error).message;
  }
  assertStringIncludes(message, "current value is -1");
});

const BASE_ENV: Record<string, string> = {
  DATABASE_URL: "postgres://app:db-PASSWORD-xyz@db.example:5432/crm",
  REFRESH_API_URL: "https://api.vendor.example/v1/people/{id}",
  REFRESH_API_KEY: API_KEY,
};
const lookup = (env: Record<string, string>) => (name: string) => env[name];
/** parseConfig() of `args`, and of BASE_ENV with `env` over it. */
const configOf = (args: Args = [], env: Record<string, string> = {}) =>
  parseConfig(argv(args), lookup({ ...BASE_ENV, ...env }));

/** Every default: its name, as --help shows it, and as parseConfig() applies it. */
const DEFAULTS: [keyof Config, string, unknown][] = [
  ["apiKeyHeader", "Authorization", "Authorization"],
  ["table", "people", "people"],
  ["idColumn", "id", "id"],
  ["dataColumn", "vendor_data", "vendor_data"],
  ["atColumn", "vendor_refreshed_at", "vendor_refreshed_at"],
  ["staleAfter", "25d", 25 * 86_400_000],
  ["retryMisses", "false", false],
  ["minInterval", "0", 0],
  ["requestTimeout", "30s", 30_000],
  ["maxAttempts", "5", 5],
  ["backoff", "1s", 1_000],
  ["maxRetryWait", "5m", 300_000],
  ["ignoreNotBefore", "false", false],
  ["maxBody", "1MiB", 1_048_576],
  ["billableStatuses", "200", [200]],
  ["creditsExhaustedStatuses", "402", [402]],
  ["timeBudget", "5h30m", 5.5 * 3_600_000],
  ["timezone", "UTC", "UTC"],
  ["maxConsecutiveFailures", "10", 10],
  ["maxConsecutiveInvalid", "10", 10],
  ["lease", "2m", 120_000],
  ["grace", "5s", 5_000],
  ["dbRetry", "1m", 60_000],
  ["connectTimeout", "30s", 30_000],
  ["progressInterval", "15s", 15_000],
  ["logFormat", "text", "text"],
  ["dryRun", "false", false],
];

Deno.test("parseConfig() applies every default shown, as shown", () => {
  const result = configOf();
  assert(result.ok, JSON.stringify(result));
  assertEquals(
    DEFAULTS.map(([name]) => name),
    Object.entries(SETTINGS).flatMap(([name, s]) =>
      "default" in s ? [name] : []
    ),
    "the settings with a default",
  );
  const help = usage();
  for (const [name, shown, applied] of DEFAULTS) {
    assertStringIncludes(help, `[default: ${shown}]`, name);
    assertEquals(result.config[name], applied, name);
  }
});

Deno.test("parseConfig() lets a flag override its variable", () => {
  const result = configOf("--limit 7 --stale-after=5h30m --table crm.people", {
    REFRESH_LIMIT: "100",
    REFRESH_STALE_AFTER: "1d",
  });
  assert(result.ok, JSON.stringify(result));
  assertEquals(result.config.limit, 7);
  assertEquals(result.config.staleAfter, 5.5 * 3_600_000);
  assertEquals(result.config.table, "crm.people");
});

Deno.test("parseConfig() reports every problem at once, naming each source", () => {
  const result = parseConfig(
    [
      "--limit",
      "0",
      "--max-body",
      "huge",
      "--bogus",
      "--id-column",
      "id; drop table x",
    ],
    lookup({
      REFRESH_API_URL: "ftp://api.vendor.example/people/{id}",
      REFRESH_STALE_AFTER: "25",
      REFRESH_TABLE: "a.b.c",
    }),
  );
  assert(!result.ok);
  const text = result.errors.join("\n");
  for (
    const expected of [
      "DATABASE_URL: is required",
      "REFRESH_API_KEY: is required",
      "REFRESH_API_URL: expected http: or https:",
      '--limit: expected a positive whole number, found "0"',
      "--max-body: expected a size in bytes",
      "--bogus: unknown flag",
      "--id-column: expected a column name",
      "REFRESH_STALE_AFTER: expected a duration",
      "REFRESH_TABLE: expected a table name",
    ]
  ) {
    assertStringIncludes(text, expected);
  }
  assertEquals(result.errors.length, 9, text);
});

Deno.test("parseConfig() never echoes a malformed secret", () => {
  const result = parseConfig(
    [],
    lookup({
      DATABASE_URL: "postgres//user:hunter2-SECRET@host/db",
      REFRESH_API_URL: "https://v.example/{id}",
      REFRESH_API_KEY: "line1\nSECRET-KEY",
    }),
  );
  assert(!result.ok);
  const text = result.errors.join("\n");
  assertStringIncludes(
    text,
    "DATABASE_URL: expected a postgres:// URL (value not shown)",
  );
  assertStringIncludes(
    text,
    "REFRESH_API_KEY: expected a key of printable ASCII characters",
  );
  assert(!text.includes("hunter2") && !text.includes("SECRET"), text);
});

Deno.test("parseConfig() refuses a value it cannot honour, naming it, and takes the nearest one it can", () => {
  // Flags and variables over BASE_ENV, and texts the errors include.
  type Case = [args: string[], env: Record<string, string>, ...texts: string[]];
  const header =
    "REFRESH_API_KEY: expected a key of printable ASCII characters, as a header can carry it, found something else (value not shown)";
  const placeholder =
    "an optional placeholder must be a whole value of the query";
  const inSomeError: Case[] = [
    // A key a header cannot carry, not quoted.
    ...["sk_live_…", "sk live\t", " sk_live", "sk\u0000x", "ключ"].map((
      key,
    ): Case => [[], { REFRESH_API_KEY: key }, header]),
    // A --stale-after PostgreSQL cannot take from now.
    [["--stale-after", "10000000d"], {}, "--stale-after: expected at most"],
    // Durations longer than a timer holds.
    ...[
      "--request-timeout",
      "--progress-interval",
      "--time-budget",
      "--max-retry-wait",
    ].map((flag): Case => [
      [flag, "25d"],
      {},
      `${flag}: expected a duration like 500ms, 30s, 5m, 2h, 25d or 5h30m`,
      "at most 24d",
    ]),
    // A lease no longer than request timeout + grace, a db retry as long
    // as the lease.
    [
      ["--lease", "30s"],
      {},
      "--lease: expected more than request timeout + grace + 1s (36s), found 30s",
    ],
    [
      ["--lease", "1m", "--db-retry", "1m"],
      {},
      "--db-retry: expected less than the lease (1m), found 1m",
    ],
    [
      ["--ids", "1,2", "--ids-file", "ids.txt"],
      {},
      "--ids and --ids-file: give the ids one way",
    ],
    // An optional placeholder outside the query.
    ...[
      "https://v.example/people/{id?}",
      "https://v.example/p?email=x{email?}",
      "https://v.example/p?q={email?}-{id}",
    ].map((url): Case => [[], { REFRESH_API_URL: url }, placeholder]),
  ];
  const inFirstError: Case[] = [
    // An impossible date for --now.
    ...[
      "2026-02-30T10:00:00Z",
      "2026-11-31T10:00:00Z",
      "2026-11-28T24:30:00Z",
    ].map((now): Case => [
      ["--now", now],
      {},
      "--now: expected an ISO 8601 time",
    ]),
    // A backoff above the retry cap.
    [
      ["--backoff", "10m"],
      {},
      "--backoff: expected at most the max retry wait (5m), found 10m",
    ],
  ];
  const taken: Case[] = [
    [[], { REFRESH_API_KEY: "Key With Spaces!" }],
    [["--stale-after", "3650d"], {}],
    [["--stale-after", "400d"], {}],
    [["--now", "2028-02-29T10:00:00+01:00"], {}],
    [argv("--lease 3s --request-timeout 1s --grace 0 --db-retry 2s"), {}],
    [[], { REFRESH_API_URL: "https://v.example/p/{id}?email={email?}" }],
  ];
  const nameOf = (args: string[], env: Record<string, string>) =>
    JSON.stringify([...args, ...Object.values(env)]);
  const refused = (cases: Case[], seen: (errors: string[]) => string) => {
    for (const [args, env, ...texts] of cases) {
      const result = configOf(args, env);
      assert(!result.ok, nameOf(args, env));
      for (const text of texts) {
        assertStringIncludes(seen(result.errors), text, nameOf(args, env));
      }
    }
  };
  refused(inSomeError, (errors) => errors.join("\n"));
  refused(inFirstError, (errors) => errors[0]!);
  for (const [args, env] of taken) {
    assert(configOf(args, env).ok, nameOf(args, env));
  }
});

Deno.test("parseConfig() refuses a password with unescaped special characters", () => {
  for (
    const url of [
      "postgres://u:pw@2024/Blue@db/crm",
      "postgres://u:a?b@db/crm",
      "postgres://u:a#b@db/crm",
    ]
  ) {
    const result = configOf([], { DATABASE_URL: url });
    assert(!result.ok, url);
    assertStringIncludes(
      result.errors[0]!,
      "percent-encode special characters in the password",
    );
    assert(
      !result.errors[0]!.includes("2024") &&
        !result.errors[0]!.includes("Blue"),
    );
  }
  const encoded = configOf([], {
    DATABASE_URL: "postgres://u:pw%402024%2FBlue@db/crm",
  });
  assert(encoded.ok);
  assertEquals(encoded.config.databaseUrl.password, "pw@2024/Blue");
});

Deno.test("parseConfig() honours sslmode and the libpq parameters it can, refuses the rest", () => {
  const withUrl = (url: string) => configOf([], { DATABASE_URL: url });
  const ok = withUrl(
    "postgres://u@h/db?sslmode=verify-full&application_name=crm&target_session_attrs=read-write&options=-c%20search_path%3Dcrm&password=pw",
  );
  assert(ok.ok, JSON.stringify(ok));
  const db = ok.config.databaseUrl;
  assertEquals([
    db.ssl,
    db.params.application_name,
    db.targetSessionAttrs,
    db.params.options,
    db.password,
  ], ["verify-full", "crm", "read-write", "-c search_path=crm", "pw"]);
  assert(!db.redacted.includes("=pw"), db.redacted);
  for (
    const [query, expected] of [
      ["sslmode=sometimes", "DATABASE_URL: expected sslmode to be one of"],
      ["sslrootcert=/ca.pem", "sslrootcert is not supported"],
      [
        "connect_timeout=5",
        "connect_timeout is not supported; use REFRESH_CONNECT_TIMEOUT",
      ],
      ["statement_timeout=0", "statement_timeout is not supported"],
      ["target_session_attrs=any", "expected target_session_attrs to be"],
    ]
  ) {
    const bad = withUrl(`postgres://u:p@h/db?${query}`);
    assert(!bad.ok, query);
    assertStringIncludes(bad.errors[0]!, expected!);
  }
});

Deno.test("parseConfig() refuses a flag given twice", () => {
  const result = configOf("--limit 5 --limit 6 --dry-run --dry-run");
  assert(!result.ok);
  assertEquals(result.errors, [
    "--limit: given more than once",
    "--dry-run: given more than once",
  ]);
});

Deno.test("fillUrl() leaves out the pair of an optional placeholder without a value", () => {
  const t = "https://v.example/enrich?email={email?}&profile={li?}&min=2";
  const cases: [Record<string, string | null>, string][] = [
    [{ email: "a@b", li: null }, "https://v.example/enrich?email=a%40b&min=2"],
    [
      { email: "", li: "in/x" },
      "https://v.example/enrich?profile=in%2Fx&min=2",
    ],
    [
      { email: "a", li: "b" },
      "https://v.example/enrich?email=a&profile=b&min=2",
    ],
  ];
  for (const [values, expected] of cases) {
    assertEquals(fillUrl(t, values), expected, JSON.stringify(values));
  }
  assertEquals(
    fillUrl("https://v.example/e?email={email?}", { email: null }),
    "https://v.example/e",
  );
});

Deno.test("parseConfig() reads --rate as a count per window", () => {
  const rate = (text: string) => {
    const result = configOf(["--rate", text]);
    return result.ok ? result.config.rate : result.errors.join("\n");
  };
  assertEquals(rate("100/min"), { count: 100, windowMs: 60_000 });
  assertEquals(rate("5/s"), { count: 5, windowMs: 1_000 });
  assertEquals(rate("10000/day"), { count: 10_000, windowMs: 86_400_000 });
  assertEquals(rate("4 / 2s"), { count: 4, windowMs: 2_000 });
  assertStringIncludes(String(rate("fast")), "--rate: expected a rate like");
  assertStringIncludes(String(rate("0/min")), "--rate: expected");
});

Deno.test("parseConfig() splits, trims and de-duplicates --ids", () => {
  const result = configOf(["--ids", " 3, 1,3,,2 "]);
  assert(result.ok);
  assertEquals(result.config.ids, ["3", "1", "2"]);
});

Deno.test("parseConfig() reads --map into columns and dot paths", () => {
  const result = configOf([
    "--map",
    "title=data.job_title, email ?= data.emails.0.address",
  ]);
  assert(result.ok, JSON.stringify(result));
  assertEquals([...result.config.map!], [
    ["title", { path: ["data", "job_title"], keep: false }],
    ["email", { path: ["data", "emails", "0", "address"], keep: true }],
  ]);
  for (
    const [map, expected] of [
      ["title", "expected column=path pairs"],
      ["title=a..b", "expected column=path pairs"],
      ["t=a,t=b", "column t is mapped twice"],
      ["id=x", "column id is already the id"],
    ]
  ) {
    const bad = configOf(["--map", map!]);
    assert(!bad.ok, map);
    assertStringIncludes(bad.errors[0]!, expected!);
  }
  const none = configOf("--data-column none");
  assert(!none.ok);
  assertStringIncludes(
    none.errors[0]!,
    "--data-column: none needs REFRESH_MAP",
  );
});

Deno.test("parseDatabaseUrl() keeps credentials out of errors and the redacted form", () => {
  const target = parseDatabaseUrl(
    "postgresql://app:p%40ss@db:6543/crm?application_name=x",
  );
  assert(!("error" in target));
  assertEquals(target.password, "p@ss");
  assertEquals(target.port, 6543);
  assertEquals(target.params, { application_name: "x" });
  assert(
    !target.redacted.includes("p%40ss") && !target.redacted.includes("p@ss"),
  );
  assert("error" in parseDatabaseUrl("postgres://db/crm"));
});

Deno.test("blame() sorts database errors into a target's, the connection's and the run's", () => {
  const server = (code: string, where?: string) =>
    Object.assign(new Error(code), { name: "PostgresError", code, where });
  const client = (code: string) => Object.assign(new Error(code), { code });
  const target = ["22P05", "22003", "23514", "23505", "54001", "P0001"].map((
    c,
  ) => server(c));
  target.push(server("42501", "PL/pgSQL function check_row() line 3 at RAISE"));
  const connection: Error[] = [
    "08006",
    "57P01",
    "53300",
    "25006",
    "40001",
    "40P01",
    "55P03",
    "57014",
  ].map((c) => server(c));
  connection.push(
    ...["CONNECTION_CLOSED", "ECONNREFUSED", "EPIPE", "CLIENT_TIMEOUT"].map(
      client,
    ),
  );
  const run: Error[] = ["42703", "42501", "53100", "XX000"].map((c) =>
    server(c)
  );
  run.push(new Error("no code"));
  for (
    const [whose, errors] of [["target", target], ["connection", connection], [
      "run",
      run,
    ]] as const
  ) {
    for (const error of errors) {
      assertEquals(blame(error), whose, (error as { code?: string }).code);
    }
  }
});

Deno.test("periodEnd() is the start of the next month in the time zone, also where midnight is skipped or the offset changes the day after", () => {
  const cases: [string, string, string][] = [
    ["2026-11-28T12:00:00Z", "UTC", "2026-12-01T00:00:00.000Z"],
    ["2026-12-31T23:59:59Z", "UTC", "2027-01-01T00:00:00.000Z"],
    // New York is UTC-5 in December: its November ends at 05:00 UTC.
    ["2026-12-01T03:00:00Z", "America/New_York", "2026-12-01T05:00:00.000Z"],
    // Across a DST change (Sydney is UTC+11 in summer, +10 in winter).
    ["2027-03-15T00:00:00Z", "Australia/Sydney", "2027-03-31T13:00:00.000Z"],
    ["2027-04-15T00:00:00Z", "Australia/Sydney", "2027-04-30T14:00:00.000Z"],
    ["2027-01-10T00:00:00Z", "Asia/Kolkata", "2027-01-31T18:30:00.000Z"],
    // Asunción: clocks went from 00:00 to 01:00 on 2023-10-01.
    ["2023-09-15T12:00:00Z", "America/Asuncion", "2023-10-01T04:00:00.000Z"],
    // Havana: from 00:00 to 01:00 on 2012-04-01.
    ["2012-03-15T12:00:00Z", "America/Havana", "2012-04-01T05:00:00.000Z"],
    // Adelaide: midnight exists (+9:30); DST starts at 02:00 that day.
    ["2023-09-15T12:00:00Z", "Australia/Adelaide", "2023-09-30T14:30:00.000Z"],
  ];
  for (const [now, zone, expected] of cases) {
    const end = periodEnd(new Date(now), zone).toISOString();
    assertEquals(end, expected, `${now} in ${zone}`);
  }
});

Deno.test("periodEnd() is Temporal's start of next month in every IANA zone, 2000-2040", () => {
  const wrong: string[] = [];
  for (const zone of Intl.supportedValuesOf("timeZone")) {
    for (let year = 2000; year <= 2040; year++) {
      for (let month = 0; month < 12; month++) {
        const now = Date.UTC(year, month, 15, 12);
        const expected = Temporal.Instant.fromEpochMilliseconds(now)
          .toZonedDateTimeISO(zone).with({ day: 1 }).add({ months: 1 })
          .startOfDay().epochMilliseconds;
        const got = periodEnd(new Date(now), zone).getTime();
        if (got !== expected) {
          wrong.push(
            `${zone} ${year}-${month + 1}: ${new Date(got).toISOString()} != ${
              new Date(expected).toISOString()
            }`,
          );
        }
      }
    }
  }
  assertEquals(wrong.slice(0, 10), [], `${wrong.length} wrong`);
});

Deno.test("monthEndWindow() opens on the last N days of 28-, 29-, 30- and 31-day months", () => {
  const day = (iso: string, tz = "UTC", n = 3) =>
    monthEndWindow(new Date(iso), tz, n);
  assertEquals(day("2026-11-27T23:00:00Z").inWindow, false);
  assertEquals(day("2026-11-28T00:00:00Z").inWindow, true);
  assertEquals(day("2026-11-30T23:59:59Z").inWindow, true);
  assertEquals(day("2026-12-28T12:00:00Z").inWindow, false);
  assertEquals(day("2026-12-29T12:00:00Z").firstDay, 29);
  assertEquals(day("2027-02-25T12:00:00Z").inWindow, false);
  assertEquals(day("2027-02-26T12:00:00Z").inWindow, true);
  assertEquals(day("2028-02-27T12:00:00Z").inWindow, true);
  assertEquals(day("2028-02-26T12:00:00Z").inWindow, false);
  // The local date decides: 23:30 UTC on the 27th is the 28th in Berlin.
  assertEquals(day("2026-11-27T23:30:00Z", "Europe/Berlin").inWindow, true);
  assertEquals(day("2026-11-01T00:00:00Z", "UTC", 31).inWindow, true);
});

Deno.test("parseReset() tells delta, epoch seconds, epoch ms, HTTP and ISO dates apart", () => {
  const now = Date.parse("2026-11-28T12:00:00Z");
  const cases: [string, number | undefined][] = [
    ["30", 30_000],
    ["1.5", 1_500],
    [String(now / 1000 + 90), 90_000],
    [String(now + 4_000), 4_000],
    [String(now / 1000 - 10), 0],
    ["Sat, 28 Nov 2026 12:00:45 GMT", 45_000],
    ["2026-11-28T12:01:00Z", 60_000],
    ["2026-11-28T13:00:30+01:00", 30_000],
    ["2026-11-28T12:00:02.500Z", 2_500],
    ["soon", undefined],
    ["-5", undefined],
    ["", undefined],
  ];
  for (const [text, expected] of cases) {
    assertEquals(parseReset(text, now), expected, text);
  }
});

Deno.test("readRateLimit() reads every dialect's spent window", () => {
  const now = Date.parse("2026-11-28T12:00:20Z");
  const epoch = (ms: number) => String((now + ms) / 1000);
  const cases: [string, Record<string, string>, number | undefined][] = [
    ["X- delta", {
      "x-ratelimit-remaining": "0",
      "x-ratelimit-reset": "30",
    }, 30_000],
    ["X- epoch s", {
      "x-ratelimit-remaining": "0",
      "x-ratelimit-reset": epoch(90_000),
    }, 90_000],
    ["X- epoch ms", {
      "x-ratelimit-remaining": "0",
      "x-ratelimit-reset": String(now + 7_000),
    }, 7_000],
    ["RateLimit- HTTP date", {
      "ratelimit-remaining": "0",
      "ratelimit-reset": "Sat, 28 Nov 2026 12:01:00 GMT",
    }, 40_000],
    ["PDL JSON per window, ISO reset", {
      "x-ratelimit-remaining": '{"minute": 0, "day": 12}',
      "x-ratelimit-reset": "2026-11-28T12:00:25Z",
    }, 5_000],
    ["PDL as documented, a Python dict", {
      "x-ratelimit-remaining": "{'minute': 0, 'day': None}",
      "x-ratelimit-reset": "2026-11-28T12:00:21Z",
    }, 1_000],
    ["JSON window without a reset: the next minute", {
      "x-ratelimit-remaining": '{"minute": 0, "day": 12}',
    }, 40_000],
    ["JSON, the spent window decides", {
      "x-ratelimit-remaining": '{"minute": 3, "hour": 0}',
    }, 2_380_000 + 1_200_000],
    ["Apollo minute", { "x-minute-requests-left": "0" }, 40_000],
    ["Lusha hourly and daily", {
      "x-hourly-requests-left": "0",
      "x-daily-requests-left": "0",
    }, 86_400_000 - 12 * 3_600_000 - 20_000],
    ["IETF item", { "ratelimit": '"default";r=0;t=30' }, 30_000],
    ["IETF bare item", { "ratelimit": "r=0;t=12" }, 12_000],
    ["IETF policy window", {
      "ratelimit": '"burst";r=0',
      "ratelimit-policy": '"burst";q=10;w=5, "day";q=1000;w=86400',
    }, 5_000],
    ["IETF dictionary (older drafts)", {
      "ratelimit": "limit=100, remaining=0, reset=9",
    }, 9_000],
    ["duplicated: the most restrictive", {
      "x-ratelimit-remaining": "4, 0",
      "x-ratelimit-reset": "3, 8",
    }, 8_000],
    ["duplicated HTTP dates", {
      "ratelimit-remaining": "0",
      "ratelimit-reset":
        "Sat, 28 Nov 2026 12:00:30 GMT, Sat, 28 Nov 2026 12:00:50 GMT",
    }, 30_000],
    ["not spent", {
      "x-ratelimit-remaining": "5",
      "x-ratelimit-reset": "30",
      "x-minute-requests-left": "7",
      "ratelimit": '"default";r=3;t=30',
    }, undefined],
    ["a limit alone never paces", { "x-ratelimit-limit": "0" }, undefined],
  ];
  for (const [name, headers, expected] of cases) {
    const read = readRateLimit(new Headers(headers), now);
    assertEquals(read.spentMs, expected, name);
    assertEquals(read.unreadable, [], name);
  }
});

Deno.test("readRateLimit() gives the reset of a window not spent, for a 429", () => {
  const now = Date.parse("2026-11-28T12:00:20Z");
  const read = (h: Record<string, string>) =>
    readRateLimit(new Headers(h), now);
  assertEquals(read({ "x-ratelimit-reset": "4" }).resetMs, 4_000);
  assertEquals(read({ "ratelimit": '"default";r=5;t=6' }).resetMs, 6_000);
  assertEquals(read({ "x-ratelimit-reset": "4" }).spentMs, undefined);
});

Deno.test("readRateLimit() names the recognised headers it cannot read", () => {
  const read = readRateLimit(
    new Headers({
      "x-ratelimit-remaining": "none",
      "ratelimit-reset": "later",
      "ratelimit": "??",
      "x-burst-requests-left": "0",
      "x-something-else": "0",
    }),
    Date.now(),
  );
  assertEquals(read.spentMs, undefined);
  assertEquals(read.unreadable.sort(), [
    "ratelimit",
    "ratelimit-reset",
    "x-burst-requests-left",
    "x-ratelimit-remaining",
  ]);
});

Deno.test("readCount() reads whole numbers, the smallest of duplicates", () => {
  const cases: [string | undefined, number | undefined | "unreadable"][] = [
    ["1200", 1200],
    [" 0 ", 0],
    ["7, 3", 3],
    ["-4", "unreadable"],
    ["many", "unreadable"],
    [undefined, undefined],
  ];
  for (const [value, expected] of cases) {
    const headers = new Headers(value ? { "x-credits-remaining": value } : {});
    assertEquals(readCount(headers, "X-Credits-Remaining"), expected, value);
  }
});

Deno.test("Pacer widens the gap on push-back and halves it back on success", () => {
  const pacer = new Pacer({ minIntervalMs: 50, maxGapMs: 1000, now: () => 0 });
  assertEquals(pacer.gapMs, 50);
  pacer.pushBack();
  assertEquals(pacer.gapMs, 100);
  pacer.pushBack();
  pacer.pushBack();
  assertEquals(pacer.gapMs, 400);
  for (let i = 0; i < 5; i++) pacer.pushBack();
  assertEquals(pacer.gapMs, 1000, "capped at maxGapMs");
  pacer.relax();
  assertEquals(pacer.gapMs, 525);
  for (let i = 0; i < 9; i++) pacer.relax();
  assertEquals(pacer.gapMs, 50, "back to the minimum within ten successes");
});

Deno.test("LatencyStats gives an exact mean and a close p95 in constant memory", () => {
  const stats = new LatencyStats();
  assertEquals(stats.mean(), undefined);
  for (let i = 1; i <= 1000; i++) stats.add(i);
  assertEquals(stats.mean(), 500.5);
  const p95 = stats.percentile(0.95)!;
  assert(p95 >= 950 && p95 <= 950 * 1.06, `p95 ${p95}`);
});

Deno.test("forecast() compares the pace with the deadline and the budget", () => {
  const base = { elapsedMs: 60_000, processed: 60, creditsSpent: 60 };
  const [MINUTE, HOUR] = [60_000, 3_600_000];
  // One target per second, one credit each: time left, targets and credits
  // left, and the forecast.
  const cases: [number, number, number | undefined, string][] = [
    [HOUR, 100, undefined, "all targets done in ~1m40s, before the deadline"],
    [MINUTE, 100, undefined, "~40 targets left at the deadline"],
    [HOUR, 1000, 120, "budget spent in ~2m, before the deadline"],
    [MINUTE, 1000, 500, "~440 credits unspent at the deadline"],
    [HOUR, 10, 500, "targets done in ~10s, ~490 credits left unspent"],
  ];
  for (const [timeLeftMs, targetsLeft, creditsLeft, expected] of cases) {
    assertEquals(
      forecast({ ...base, timeLeftMs, targetsLeft, creditsLeft }),
      expected,
      expected,
    );
  }
  assertEquals(
    forecast({
      ...base,
      processed: 0,
      timeLeftMs: 1,
      targetsLeft: 1,
      creditsLeft: 1,
    }),
    "too early to tell",
  );
});

Deno.test("exitCodeFor() maps statuses to the documented exit codes", () => {
  for (
    const status of [
      "completed",
      "budget_exhausted",
      "credits_exhausted",
      "rate_limited",
      "deadline",
      "period_end",
      "outside_window",
    ] as const
  ) {
    assertEquals(exitCodeFor(status), 0, status);
  }
  assertEquals(exitCodeFor("aborted"), 1);
  assertEquals(exitCodeFor("interrupted", 15), 143);
  assertEquals(exitCodeFor("interrupted", 2), 130);
});

Deno.test("parseConfig() validates the run-control settings", () => {
  const ok = configOf(
    "--budget 100 --billable-statuses 200,404 --dry-run --log-format json",
    {
      REFRESH_TIMEZONE: "Europe/Berlin",
      REFRESH_MONTH_END_DAYS: "3",
      REFRESH_NOW: "2026-11-28T06:00:00Z",
    },
  );
  assert(ok.ok, JSON.stringify(ok));
  assertEquals(ok.config.budget, 100);
  assertEquals(ok.config.billableStatuses, [200, 404]);
  assertEquals(ok.config.dryRun, true);
  assertEquals(ok.config.logFormat, "json");
  assertEquals(ok.config.timezone, "Europe/Berlin");
  assertEquals(ok.config.timeBudget, 5.5 * 3_600_000);
  assertEquals(ok.config.now?.toISOString(), "2026-11-28T06:00:00.000Z");
  const envBool = configOf([], { REFRESH_DRY_RUN: "false" });
  assert(envBool.ok);
  assertEquals(envBool.config.dryRun, false);
  const bad = configOf(
    "--reserve 5 --timezone Mars/Olympus --month-end-days 40 --log-format xml",
    {
      REFRESH_BILLABLE_STATUSES: "200,ok",
      REFRESH_DRY_RUN: "maybe",
      REFRESH_NOW: "yesterday",
    },
  );
  assert(!bad.ok);
  const text = bad.errors.join("\n");
  for (
    const expected of [
      "--reserve: needs REFRESH_CREDITS_HEADER",
      "--timezone: expected an IANA time zone",
      "--month-end-days: expected a whole number of days from 1 to 31",
      "--log-format: expected text or json",
      "REFRESH_BILLABLE_STATUSES: expected a comma-separated list of HTTP statuses",
      "REFRESH_DRY_RUN: expected true or false",
      "REFRESH_NOW: expected an ISO 8601 time",
    ]
  ) {
    assertStringIncludes(text, expected);
  }
});

Deno.test("README's configuration table is the settings table", async () => {
  const readme = await Deno.readTextFile(`${ROOT}README.md`);
  const rows = readme.split("\n").filter((line) =>
    /^\| `(DATABASE_URL|REFRESH_\w+)`/.test(line)
  )
    .map((line) =>
      line.split(/(?<!\\)\|/).slice(1, -1).map((cell) =>
        cell.trim().replaceAll("\\|", "|")
      )
    );
  assertEquals(
    rows,
    Object.values(SETTINGS).map((
      s: {
        env: string;
        flag?: string;
        arg: string;
        default?: string;
        help: string;
      },
    ) => [
      `\`${s.env}\``,
      s.flag ? `\`${flagText(s)}\`` : flagText(s),
      "default" in s ? `\`${s.default}\`` : "—",
      s.help,
    ]),
  );
});

Deno.test("deno.json pins the imports refresh.ts pins, at the same versions", async () => {
  const source = await Deno.readTextFile(`${ROOT}refresh.ts`);
  const config = await Deno.readTextFile(`${ROOT}deno.json`);
  const pinned = [
    ...source.matchAll(/from "((?:jsr|npm):(@?[^@"]+)@([^/"]+))/g),
  ];
  assert(pinned.length >= 4);
  for (const [, , name, version] of pinned) {
    assertStringIncludes(
      config,
      `"${name}": "${
        pinned.find((p) => p[2] === name)![1]!.split(":")[0]
      }:${name}@${version}"`,
    );
  }
});

// ---------------------------------------------------------------------------
// The job, end to end
// ---------------------------------------------------------------------------
//
// Every test below is independent: it gets its own schema, fake vendor and
// client from withFixture(), on the database this module shares (started
// once, before its first test), and leaves nothing behind. Every output of
// every run, and every state row a fixture leaves, is checked for secrets.

/** The module's database: `TEST_DATABASE_URL`'s server, or one PGlite. */
const database = testDatabaseForModule();

/** What one child run printed and returned. */
interface RunResult {
  code: number;
  signal: Deno.Signal | null;
  stdout: string;
  stderr: string;
}

/** How to start the job. */
interface RunOptions {
  /**
   * The child's variables; it gets nothing else of this process's
   * environment but what Deno needs to run (see `childEnv`).
   */
  env?: Record<string, string>;
  /** Written to its standard input, then closed; none by default. */
  stdin?: string;
  /**
   * Run `deno run` with the task's flags instead of `deno task`, so that
   * signals reach refresh.ts itself.
   */
  direct?: boolean;
  /** The task: `refresh` (by default) or `refresh:ci`. */
  task?: string;
  /** Where it runs: the repository root by default. */
  cwd?: string;
}

/** A value no output or stored row may hold, and what to call it. */
interface Secret {
  name: string;
  text: string;
}

/**
 * The secrets a child is given: the API key, and the database password as
 * it would appear in a URL (`:<password>@`). It is given no other: its
 * environment is cleared, so `TEST_DATABASE_URL` never reaches it.
 */
function secretsIn(env: Record<string, string>): Secret[] {
  const secrets: Secret[] = [{ name: "the API key", text: API_KEY }];
  const key = env.REFRESH_API_KEY;
  if (key && key !== API_KEY) {
    secrets.push({ name: "REFRESH_API_KEY", text: key });
  }
  let password = "";
  try {
    password = new URL(env.DATABASE_URL ?? "").password;
  } catch {
    // No URL, no password.
  }
  for (const text of new Set([password, decodeURIComponent(password)])) {
    if (text) {
      secrets.push({ name: "the database password", text: `:${text}@` });
    }
  }
  return secrets;
}

/** Fails if `text` holds a secret, naming where and quoting the line. */
function assertNoSecret(
  text: string,
  secrets: readonly Secret[],
  where: string,
) {
  for (const { name, text: secret } of secrets) {
    const line = text.split("\n").find((l) => l.includes(secret));
    assert(
      line === undefined,
      `${name} in ${where}: ${line?.replaceAll(secret, `<${name}>`)}`,
    );
  }
}

/** The secrets given to each child started by spawnRefresh(). */
const childSecrets = new WeakMap<Deno.ChildProcess, Secret[]>();

/** `deno run` and the flags of a task of deno.json. */
async function taskArgs(task: string): Promise<string[]> {
  const command = (await denoTasks())[task];
  assert(command, `no task ${task} in deno.json`);
  return command.split(/\s+/).slice(1);
}

/**
 * Starts the job (`deno task --quiet refresh`, or what `options` say)
 * without waiting for it; {@linkcode outputOf} gives its output.
 */
async function spawnRefresh(
  args: Args,
  options: RunOptions = {},
): Promise<Deno.ChildProcess> {
  const task = options.task ?? "refresh";
  const env = options.env ?? {};
  const child = new Deno.Command(Deno.execPath(), {
    args: options.direct
      ? [...await taskArgs(task), ...argv(args)]
      : ["task", "--quiet", task, ...argv(args)],
    cwd: options.cwd ?? ROOT,
    clearEnv: true,
    env: childEnv(env),
    stdin: options.stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  childSecrets.set(child, secretsIn(env));
  if (options.stdin !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(options.stdin));
    await writer.close();
  }
  return child;
}

/**
 * Waits for a child of {@linkcode spawnRefresh} to end, and fails if its
 * output holds any secret it was given.
 */
async function outputOf(child: Deno.ChildProcess): Promise<RunResult> {
  const out = await child.output();
  const result = {
    code: out.code,
    signal: out.signal,
    stdout: new TextDecoder().decode(out.stdout),
    stderr: new TextDecoder().decode(out.stderr),
  };
  const secrets = childSecrets.get(child) ?? secretsIn({});
  assertNoSecret(result.stdout, secrets, "a run's standard output");
  assertNoSecret(result.stderr, secrets, "a run's standard error");
  return result;
}

/**
 * {@linkcode outputOf} a child that must exit with `code`: fails, quoting
 * its output, if it does not.
 */
async function exited(
  child: Deno.ChildProcess,
  code = 0,
): Promise<RunResult> {
  const result = await outputOf(child);
  assertSucceeded(result, code);
  return result;
}

/** Runs the job to its end; see {@linkcode spawnRefresh}. */
async function runRefresh(
  args: Args,
  options: RunOptions = {},
): Promise<RunResult> {
  return await outputOf(await spawnRefresh(args, options));
}

/** What a test asks of {@linkcode withFixture}. */
interface FixtureSetup {
  /**
   * A short name (lower case, digits, `_`) for the schema,
   * `t_<name>_<random>`: unique, so that test processes sharing a server
   * never collide.
   */
  name: string;
  /** Rows in `<schema>.people` (ids 1..count); no table without it. */
  count?: number;
  /** Rows with an id up to this were refreshed recently. */
  freshUpTo?: number;
  /** The people id column's type; `bigint` by default. */
  idType?: string;
  /** The fake vendor's answers; a 200 with a person by default. */
  script?: Script;
  /** Latency the fake vendor adds to every reply, in milliseconds. */
  latencyMs?: number;
  /** `false`: leave the schema uncreated (the name is still reserved). */
  createSchema?: boolean;
}

/** One test's world: its schema, vendor, client and job. */
interface Fixture {
  /** The module's database. */
  db: TestDatabase;
  /** This test's schema, for the people table and the state tables. */
  schema: string;
  /** `<schema>.people`. */
  table: string;
  /** A client of this test's own, ended when the test ends. */
  sql: postgres.Sql;
  /** This test's fake vendor. */
  vendor: FakeVendor;
  /** The job's variables for this schema, vendor and database. */
  env: Record<string, string>;
  /** Runs the job to its end with `FAST` and `args`, `env` plus `options.env`. */
  run(args?: Args, options?: RunOptions): Promise<RunResult>;
  /** Runs it as {@linkcode Fixture.run} does, and fails unless it exits 0. */
  runOk(args?: Args, options?: RunOptions): Promise<RunResult>;
  /** The same, failing unless it exits with `code`. */
  runExits(
    code: number,
    args?: Args,
    options?: RunOptions,
  ): Promise<RunResult>;
  /** Starts it the same way; {@linkcode outputOf} gives its output. */
  spawn(args?: Args, options?: RunOptions): Promise<Deno.ChildProcess>;
  /** `<schema>.refresh_state`, by id. */
  state(): Promise<
    {
      target_id: string;
      status: string;
      attempts: number;
      http_status: number | null;
      error: string | null;
    }[]
  >;
  /** `<schema>.refresh_runs`, by id. */
  runs(): Promise<Record<string, unknown>[]>;
  /**
   * The first of them, once it is asserted to hold what `expected` gives;
   * a number is compared with `Number()` of the column (counters are
   * bigint, read as text).
   */
  firstRun(
    expected?: Record<string, unknown>,
  ): Promise<Record<string, unknown>>;
}

/** Short retry waits, so that tests of retries take milliseconds. */
const FAST = ["--backoff", "10ms", "--max-retry-wait", "5s"];

/** `FAST`, less the flags `args` gives itself (a flag given twice is refused). */
function fast(args: string[]): string[] {
  return [
    ...FAST.flatMap((arg, i) =>
      i % 2 === 0 && !args.includes(arg) ? [arg, FAST[i + 1]!] : []
    ),
    ...args,
  ];
}

/** A schema name no other test, here or in another process, uses. */
function uniqueSchema(name: string): string {
  assertMatch(name, /^[a-z0-9_]{1,40}$/, "a fixture's name");
  const suffix = Array.from(
    crypto.getRandomValues(new Uint8Array(4)),
    (b) => b.toString(16).padStart(2, "0"),
  ).join("");
  return `t_${name}_${suffix}`;
}

/**
 * Gives `body` a fixture of its own on the module's database: a schema
 * (with `<schema>.people` when `count` is given), a fake vendor, a client,
 * and the job set up to use them. When `body` is done, it ends the
 * children it started that still run, checks that no state row holds a
 * secret, drops the schema, stops the vendor and ends the client.
 *
 * ```ts
 * Deno.test("a 404 is recorded as not_found", async () => {
 *   await withFixture(
 *     { name: "not_found", count: 2, script: () => ({ status: 404 }) },
 *     async (f) => {
 *       await f.runOk();
 *       assertEquals((await f.state())[0]!.status, "not_found");
 *     },
 *   );
 * });
 * ```
 */
async function withFixture(
  setup: FixtureSetup,
  body: (f: Fixture) => Promise<void>,
): Promise<void> {
  const db = await database();
  const schema = uniqueSchema(setup.name);
  const table = `${schema}.people`;
  const sql = db.client();
  const spawned: Deno.ChildProcess[] = [];
  let vendor: FakeVendor | undefined;
  try {
    vendor = await startFakeVendor({
      script: setup.script,
      latencyMs: setup.latencyMs,
    });
    if (setup.count !== undefined) {
      assert(setup.createSchema !== false, "people need a schema");
      await createPeople(sql, schema, {
        count: setup.count,
        freshUpTo: setup.freshUpTo,
        idType: setup.idType,
      });
    } else if (setup.createSchema !== false) {
      await sql`create schema ${sql(schema)}`;
    }
    const env = {
      DATABASE_URL: db.url,
      REFRESH_API_URL: vendor.urlTemplate,
      REFRESH_API_KEY: API_KEY,
      REFRESH_TABLE: table,
      REFRESH_STATE_SCHEMA: schema,
    };
    const spawn = async (args: Args = [], options: RunOptions = {}) => {
      const child = await spawnRefresh(fast(argv(args)), {
        ...options,
        env: { ...env, ...options.env },
      });
      spawned.push(child);
      return child;
    };
    const runs = (): Promise<Record<string, unknown>[]> =>
      sql`select * from ${sql(`${schema}.refresh_runs`)} order by id` as never;
    const run = async (args?: Args, options?: RunOptions) =>
      await outputOf(await spawn(args, options));
    const runExits = async (
      code: number,
      args?: Args,
      options?: RunOptions,
    ) => {
      const result = await run(args, options);
      assertSucceeded(result, code);
      return result;
    };
    await settle(
      () =>
        body({
          db,
          schema,
          table,
          sql,
          vendor: vendor!,
          env,
          run,
          runOk: (args, options) => runExits(0, args, options),
          runExits,
          spawn,
          state: () =>
            sql`select target_id, status, attempts, http_status, error
                from ${
              sql(`${schema}.refresh_state`)
            } order by target_id::int` as never,
          runs,
          firstRun: async (expected = {}) => {
            const [run] = await runs();
            assert(run, `no run in ${schema}.refresh_runs`);
            const got = Object.entries(expected).map((
              [name, value],
            ) => [
              name,
              typeof value === "number" ? Number(run[name]) : run[name],
            ]);
            assertEquals(Object.fromEntries(got), expected, "the first run");
            return run;
          },
        }),
      async () => {
        await endChildren(spawned);
        await assertNoSecretStored(sql, schema, secretsIn(env));
      },
    );
  } finally {
    try {
      await sql`drop schema if exists ${sql(schema)} cascade`;
    } finally {
      await vendor?.close();
      await sql.end();
    }
  }
}

/**
 * Runs `body`, then `after` whether or not it failed, and throws the
 * first failure (both, when both failed).
 */
async function settle(
  body: () => Promise<void>,
  after: () => Promise<void>,
): Promise<void> {
  const failures: unknown[] = [];
  for (const step of [body, after]) {
    try {
      await step();
    } catch (error) {
      failures.push(error);
    }
  }
  if (failures.length === 1) throw failures[0];
  if (failures.length > 1) {
    throw new AggregateError(failures, "the test failed, and so did its end");
  }
}

/** Ends children a failed test left running, and releases their pipes. */
async function endChildren(children: Deno.ChildProcess[]): Promise<void> {
  for (const child of children) {
    // SIGTERM reaches refresh.ts through `deno task`; SIGKILL would not.
    if (signal(child, "SIGTERM")) {
      const timer = setTimeout(() => signal(child, "SIGKILL"), 5_000);
      await child.status;
      clearTimeout(timer);
    }
    for (const stream of [child.stdout, child.stderr]) {
      if (!stream.locked) await stream.cancel();
    }
  }
}

/** Sends a signal; false if the child has exited. */
function signal(child: Deno.ChildProcess, name: Deno.Signal): boolean {
  try {
    child.kill(name);
    return true;
  } catch {
    return false;
  }
}

/** Fails if a run or state row in `schema` holds a secret. */
async function assertNoSecretStored(
  sql: postgres.Sql,
  schema: string,
  secrets: readonly Secret[],
): Promise<void> {
  const runs = `${schema}.refresh_runs`;
  const state = `${schema}.refresh_state`;
  const [found] = await sql<{ runs: boolean; state: boolean }[]>`
    select to_regclass(${runs}) is not null as runs,
      to_regclass(${state}) is not null as state`;
  if (found!.runs) {
    const rows = await sql<{ id: string; params: string; error: string }[]>`
      select id::text, params::text, coalesce(error, '') as error
      from ${sql(runs)}`;
    for (const row of rows) {
      assertNoSecret(row.params, secrets, `${runs} ${row.id} params`);
      assertNoSecret(row.error, secrets, `${runs} ${row.id} error`);
    }
  }
  if (found!.state) {
    const rows = await sql<{ id: string; error: string }[]>`
      select target_id::text as id, coalesce(error, '') as error
      from ${sql(state)}`;
    for (const row of rows) {
      assertNoSecret(row.error, secrets, `${state} ${row.id} error`);
    }
  }
}

function assertSucceeded(result: RunResult, code = 0) {
  assertEquals(
    result.code,
    code,
    `exit ${result.code}\nstdout:\n${result.stdout}\nstderr:\n${result.stderr}`,
  );
}

async function waitFor(what: string, ok: () => boolean, ms = 30_000) {
  const deadline = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** The ids the vendor was asked about, in the order asked. */
const calledIds = (vendor: FakeVendor) => vendor.calls.map((c) => c.id);

const okCalls = (vendor: FakeVendor) =>
  vendor.calls.filter((c) => c.status === 200).length;

Deno.test("refreshes stale targets, never-refreshed first, then stalest first", async () => {
  await withFixture(
    { name: "select", count: 12, freshUpTo: 4 },
    async (f) => {
      // ids 1-4 fresh; make 9 and 10 stale (10 staler), the rest never refreshed.
      await f.sql`update ${f.sql(`${f.schema}.people`)}
      set vendor_refreshed_at = now() - interval '40 days' where id = 9`;
      await f.sql`update ${f.sql(`${f.schema}.people`)}
      set vendor_refreshed_at = now() - interval '60 days' where id = 10`;
      await f.sql`update ${f.sql(`${f.schema}.people`)}
      set vendor_refreshed_at = now() - interval '10 days' where id = 11`;
      const result = await f.runOk();
      assertEquals(calledIds(f.vendor), ["5", "6", "7", "8", "12", "10", "9"]);
      const rows = await f.sql<
        { id: string; name: string; fresh: boolean }[]
      >`
      select id::text, vendor_data->>'name' as name,
        vendor_refreshed_at > now() - interval '1 minute' as fresh
      from ${f.sql(`${f.schema}.people`)} order by id`;
      assertEquals(rows.find((r) => r.id === "5")?.name, "Person 5");
      assertEquals(
        rows.find((r) => r.id === "11")?.name,
        null,
        "a fresh-enough row was refreshed",
      );
      await f.firstRun({
        status: "completed",
        total: 7,
        processed: 7,
        succeeded: 7,
        credits_spent: 7,
      });
      assertMatch(result.stdout, /run \d+ completed/);
      assertStringIncludes(result.stdout, "7 processed: 7 ok");
      // A second run finds nothing to do.
      const again = await f.runOk();
      assertEquals(f.vendor.calls.length, 7);
      assertStringIncludes(again.stdout, "0 selected");
    },
  );
});

Deno.test("--stale-after widens the window and --limit caps the run", async () => {
  await withFixture(
    { name: "limit", count: 10, freshUpTo: 10 },
    async (f) => {
      await f.runOk();
      assertEquals(f.vendor.calls.length, 0);
      await f.runOk("--stale-after 0 --limit 3");
      assertEquals(f.vendor.calls.length, 3);
    },
  );
});

Deno.test("records outcomes: not_found and invalid are skipped next time, failed is retried", async () => {
  const script: Script = (id, attempt) => {
    if (id === "2" || (id === "1" && attempt > 1)) return { status: 404 };
    if (id === "3") return { body: "[1,2,3]" };
    if (id === "4") return { body: "not json" };
    if (id === "5") {
      return { status: 400, body: { error: "bad id format" } };
    }
    if (id === "6") return { body: { blob: "x".repeat(5000) } };
    return {};
  };
  await withFixture({ name: "outcomes", count: 7, script }, async (f) => {
    await f.runOk("--max-body 4KiB");
    const state = await f.state();
    assertEquals(state.map((s) => [s.target_id, s.status, s.http_status]), [
      ["1", "ok", 200],
      ["2", "not_found", 404],
      ["3", "invalid", 200],
      ["4", "invalid", 200],
      ["5", "failed", 400],
      ["6", "invalid", 200],
      ["7", "ok", 200],
    ]);
    assertStringIncludes(state[2]!.error!, "unexpected shape at (root)");
    assertStringIncludes(state[3]!.error!, "not JSON");
    assertStringIncludes(
      state[4]!.error!,
      'HTTP 400: {"error":"bad id format"}',
    );
    assertStringIncludes(state[5]!.error!, "4096-byte cap");
    assertEquals(f.vendor.callsFor("5"), 1, "a 400 must not be retried");
    const untouched = await f.sql<{ id: string }[]>`
      select id::text from ${f.sql(`${f.schema}.people`)}
      where vendor_data is null order by id`;
    assertEquals(untouched.map((r) => r.id), ["2", "3", "4", "5", "6"]);
    await f.firstRun({ succeeded: 2, not_found: 1, invalid: 3, failed: 1 });
    // Next run: only the failed target is tried again.
    const before = f.vendor.calls.length;
    await f.runOk();
    assertEquals(f.vendor.calls.slice(before).map((c) => c.id), ["5"]);
    // The last success is kept through a later miss; a miss has none.
    const successes = () =>
      f.sql<{ id: string; at: Date | null }[]>`
        select target_id as id, last_success_at as at
        from ${f.sql(`${f.schema}.refresh_state`)} order by target_id`;
    const first = await successes();
    const kept = first.map((r) => r.at !== null);
    assertEquals(kept, [true, false, false, false, false, false, true]);
    await f.runOk("--ids 1");
    const [one] = await successes();
    assertEquals(one, first[0]);
  });
});

Deno.test("--ids refreshes exactly the given ids and reports unknown ones", async () => {
  await withFixture({ name: "ids", count: 5, freshUpTo: 5 }, async (f) => {
    const result = await f.runOk("--ids 4,2,99,100");
    assertEquals(f.vendor.calls.map((c) => c.id), ["4", "2"]);
    assertStringIncludes(result.stderr, "2 id(s) not in");
    assertStringIncludes(result.stderr, "99, 100");
    assertStringIncludes(result.stdout, "left out: 2 unknown ids");
    // The start line counts only the targets that exist.
    assertStringIncludes(result.stderr, "2 target(s) to refresh");
    // Reading a file takes the refresh:ids task; standard input does not.
    const ids = { task: "refresh:ids" };
    await f.runOk("--ids-file -", { stdin: "5\n\n1\n" });
    assertEquals(f.vendor.calls.slice(2).map((c) => c.id), ["5", "1"]);
    const file = await Deno.makeTempFile();
    try {
      await Deno.writeTextFile(file, "3\r\n");
      const denied = await f.runExits(2, ["--ids-file", file]);
      assertStringIncludes(denied.stderr, "deno task refresh:ids");
      await f.runOk(["--ids-file", file], ids);
      assertEquals(f.vendor.calls.at(-1)?.id, "3");
    } finally {
      await Deno.remove(file);
    }
    const nul = await Deno.makeTempFile();
    try {
      await Deno.writeTextFile(nul, "1\n2\u0000x\n");
      const refused = await f.runExits(2, ["--ids-file", nul], ids);
      assertStringIncludes(
        refused.stderr,
        "contains a NUL byte, which PostgreSQL cannot take",
      );
    } finally {
      await Deno.remove(nul);
    }
    const missing = await f.runExits(
      2,
      "--ids-file /nonexistent/ids.txt",
      ids,
    );
    assertStringIncludes(
      missing.stderr,
      '--ids-file: cannot read "/nonexistent/ids.txt"',
    );
  });
});

Deno.test("custom columns, text ids and a key header", async () => {
  await withFixture({ name: "custom" }, async (f) => {
    const contacts = f.sql(`${f.schema}.Contacts`);
    await f.sql`create table ${contacts} (
        contact_key text primary key, enrichment json, enriched_on timestamptz)`;
    await f.sql`insert into ${contacts} (contact_key) values ('a/1'), ('b 2')`;
    await f.runOk([], {
      env: {
        REFRESH_API_KEY_HEADER: "X-Api-Key",
        REFRESH_TABLE: `${f.schema}.Contacts`,
        REFRESH_ID_COLUMN: "contact_key",
        REFRESH_DATA_COLUMN: "enrichment",
        REFRESH_AT_COLUMN: "enriched_on",
      },
    });
    assertEquals(f.vendor.calls.map((c) => c.id).sort(), ["a/1", "b 2"]);
    for (const call of f.vendor.calls) {
      assertEquals(call.headers.get("x-api-key"), API_KEY);
      assertEquals(call.headers.get("authorization"), null);
      assert(!call.url.includes(API_KEY));
    }
    const rows = await f.sql`select contact_key, enrichment->>'id' as got
        from ${contacts} order by contact_key`;
    assertEquals(rows.map((r) => r.got), ["a/1", "b 2"]);
  });
});

Deno.test("one request in flight at a time, through timeouts and retries", async () => {
  const script: Script = (id, attempt) => {
    const n = Number(id);
    if (n % 4 === 0 && attempt === 1) return { delayMs: 400 }; // times out
    if (n % 3 === 0 && attempt <= 2) return { status: 503 };
    if (n % 5 === 0 && attempt === 1) return { status: 502 };
    return { delayMs: 5 };
  };
  await withFixture(
    { name: "serial", count: 24, script, latencyMs: 5 },
    async (f) => {
      await f.runOk("--request-timeout 150ms --backoff 1ms");
      assertEquals(
        f.vendor.maxInFlight,
        1,
        "more than one request in flight",
      );
      const state = await f.state();
      assertEquals(state.filter((s) => s.status === "ok").length, 24);
      assertEquals(state.find((s) => s.target_id === "3")?.attempts, 3);
      assertEquals(state.find((s) => s.target_id === "4")?.attempts, 2);
      // Requests never overlap as the server saw them.
      const calls = [...f.vendor.calls].sort((a, b) =>
        a.startedAt - b.startedAt
      );
      for (let i = 1; i < calls.length; i++) {
        assertGreaterOrEqual(calls[i]!.startedAt, calls[i - 1]!.endedAt!);
      }
    },
  );
});

Deno.test("Retry-After is obeyed before the next request", async () => {
  const script: Script = (id, attempt) =>
    id === "2" && attempt === 1
      ? { status: 429, headers: { "retry-after": "1" } }
      : {};
  await withFixture({ name: "retry_after", count: 3, script }, async (f) => {
    await f.runOk("--backoff 1ms");
    const calls = f.vendor.calls;
    assertEquals(calls.map((c) => c.id), ["1", "2", "2", "3"]);
    const gap = calls[2]!.startedAt - calls[1]!.startedAt;
    assertGreaterOrEqual(gap, 1000, `waited only ${gap}ms`);
    assertEquals((await f.state()).every((s) => s.status === "ok"), true);
  });
});

Deno.test("a Retry-After beyond --max-retry-wait stops the run as rate_limited", async () => {
  let limited = true;
  const script: Script = (id) =>
    id === "3" && limited
      ? { status: 503, headers: { "retry-after": "3600" } }
      : {};
  await withFixture({ name: "rate_limited", count: 5, script }, async (f) => {
    const result = await f.runOk("--max-retry-wait 1m");
    assertStringIncludes(result.stdout, "rate_limited");
    assertStringIncludes(result.stderr, "asked to wait 1h");
    assertEquals(f.vendor.calls.map((c) => c.id), ["1", "2", "3"]);
    await f.firstRun({ status: "rate_limited", processed: 2 });
    assertEquals((await f.state()).map((s) => s.target_id), ["1", "2"]);
    // The hour the vendor asked for passes; it recovers: the next run
    // resumes with what is left.
    await f.sql`update ${f.sql(`${f.schema}.refresh_runs`)}
      set not_before = now() - interval '1 second'`;
    limited = false;
    await f.runOk();
    assertEquals(f.vendor.calls.slice(3).map((c) => c.id), ["3", "4", "5"]);
  });
});

Deno.test("a target that exhausts --max-attempts ends failed and the run goes on", async () => {
  const script: Script = (id) => id === "1" ? { status: 500 } : {};
  await withFixture({ name: "attempts", count: 2, script }, async (f) => {
    await f.runOk("--max-attempts 3 --backoff 1ms");
    assertEquals(f.vendor.callsFor("1"), 3);
    assertEquals(f.vendor.callsFor("2"), 1);
    const state = await f.state();
    assertEquals(state[0]!.status, "failed");
    assertEquals(state[0]!.attempts, 3);
    assertStringIncludes(
      state[0]!.error!,
      "gave up after 3 attempts; last: HTTP 500",
    );
    await f.firstRun({ retries: 2, requests: 4 });
  });
});

Deno.test("redirects are not followed, so the key never reaches another host", async () => {
  const other = await startFakeVendor();
  const script: Script = () => ({
    status: 302,
    headers: { location: other.urlTemplate.replace("{id}", "stolen") },
  });
  try {
    await withFixture({ name: "redirect", count: 1, script }, async (f) => {
      await f.runOk();
      assertEquals(other.calls.length, 0);
      assertEquals(f.vendor.callsFor("1"), 1);
      const [state] = await f.state();
      assertEquals(state!.status, "failed");
    });
  } finally {
    await other.close();
  }
});

Deno.test("kill -9 mid-run, then a rerun: every target recorded once, at most two asked twice", async () => {
  await withFixture(
    { name: "kill", count: 150, latencyMs: 25 },
    async (f) => {
      // A short lease, so that the dead run stops blocking soon.
      const child = await f.spawn(
        "--lease 3s --request-timeout 1s --grace 0 --db-retry 2s",
        { direct: true },
      );
      // Progress is visible while the run goes (counters every second).
      let live: Record<string, unknown> | undefined;
      const deadline = Date.now() + 30_000;
      while (Number(live?.processed ?? 0) < 5 && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 50));
        [live] = await f.runs().catch(() => []);
      }
      assertEquals(live!.status, "running");
      assertGreaterOrEqual(Number(live!.processed), 5);
      child.kill("SIGKILL");
      const killed = await outputOf(child);
      assertEquals(killed.signal, "SIGKILL");
      const callsBefore = f.vendor.calls.length;
      assert(callsBefore < 150, "the run finished before it was killed");
      // At once, the dead run's lease still holds...
      assertEquals((await f.run()).code, 3);
      // ...until its heartbeat is older than its lease.
      await new Promise((r) => setTimeout(r, 3_100));
      const result = await f.runOk();
      assertMatch(result.stderr, /marked run\(s\) \d+ crashed/);
      const state = await f.state();
      assertEquals(state.length, 150);
      assert(state.every((s) => s.status === "ok"));
      // The answer being written and the one in flight (write-behind).
      const duplicates = askedTwice(f.vendor);
      assertLessOrEqual(duplicates.length, 2, `called twice: ${duplicates}`);
      assertEquals(new Set(f.vendor.calls.map((c) => c.id)).size, 150);
      const rows = await f.sql`select count(*)::int as n from ${
        f.sql(`${f.schema}.people`)
      }
      where vendor_data is not null`;
      assertEquals(rows[0]!.n, 150);
    },
  );
});

Deno.test("bad configuration: exit 2, every problem named, nothing touched", async () => {
  await withFixture({ name: "badconfig", createSchema: false }, async (f) => {
    const result = await runRefresh("--limit -3 --min-interval fast", {
      env: {
        DATABASE_URL: f.db.url,
        REFRESH_API_URL: f.vendor.urlTemplate,
        REFRESH_TABLE: "people; drop table people",
        REFRESH_STATE_SCHEMA: f.schema,
        REFRESH_MAX_ATTEMPTS: "many",
      },
    });
    assertEquals(result.code, 2, result.stderr);
    for (
      const expected of [
        "REFRESH_API_KEY: is required",
        "REFRESH_TABLE: expected a table name",
        "--min-interval: expected a duration",
        'REFRESH_MAX_ATTEMPTS: expected a positive whole number, found "many"',
      ]
    ) {
      assertStringIncludes(result.stderr, expected);
    }
    // "-3" looks like a flag to parseArgs; either way it is reported.
    assertMatch(result.stderr, /--limit|-3/);
    assertEquals(f.vendor.calls.length, 0);
    const [schema] = await f.sql`select to_regnamespace(${f.schema}) as oid`;
    assertEquals(schema!.oid, null, "the database was touched");
  });
});

Deno.test("a missing table or column is reported by name with exit 2", async () => {
  await withFixture({ name: "badtarget", count: 1 }, async (f) => {
    const noTable = await f.runExits(2, [], {
      env: { REFRESH_TABLE: `${f.schema}.nobody` },
    });
    assertStringIncludes(
      noTable.stderr,
      `REFRESH_TABLE: table ${f.schema}.nobody does not exist`,
    );
    const noColumn = await f.runExits(2, "--data-column name", {
      env: { REFRESH_AT_COLUMN: "nope" },
    });
    assertStringIncludes(
      noColumn.stderr,
      "REFRESH_DATA_COLUMN: expected column name",
    );
    assertStringIncludes(
      noColumn.stderr,
      "to be jsonb or json, found text",
    );
    assertStringIncludes(
      noColumn.stderr,
      "REFRESH_AT_COLUMN: column nope does not exist",
    );
    assertEquals(f.vendor.calls.length, 0);
  });
});

Deno.test("an unreachable database: exit 1, no password in the message", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  const result = await runRefresh("--connect-timeout 2s", {
    env: {
      DATABASE_URL: `postgres://app:unreachable-PW-123@127.0.0.1:${port}/db`,
      REFRESH_API_URL: "http://127.0.0.1:9/{id}",
      REFRESH_API_KEY: API_KEY,
    },
  });
  assertEquals(result.code, 1, result.stderr);
  assertStringIncludes(result.stderr, "within 2s (--connect-timeout)");
  assertStringIncludes(result.stderr, "ECONNREFUSED");
  assert(!result.stderr.includes("unreachable-PW-123"));
});

Deno.test("--help is the golden text in dev/help.txt, which lists every setting", async () => {
  // A default or help line changed in SETTINGS and the README together
  // still changes this file: say so in the commit.
  const golden = await Deno.readTextFile(`${ROOT}dev/help.txt`);
  assertEquals(usage() + "\n", golden);
  for (const s of Object.values(SETTINGS)) {
    assertStringIncludes(golden, ` ${s.env}\n`, s.env);
    assertStringIncludes(golden, s.help, s.env);
  }
});

Deno.test("--help prints every setting and exits 0", async () => {
  const result = await runRefresh("--help");
  assertEquals(result.code, 0);
  assertStringIncludes(result.stdout, "--max-retry-wait DURATION");
  assertStringIncludes(result.stdout, "Exit codes:");
});

Deno.test("--budget is exact: never one billable call more", async () => {
  const script: Script = (
    id,
  ) => (Number(id) % 3 === 0 ? { status: 404 } : {});
  await withFixture({ name: "budget", count: 20, script }, async (f) => {
    const result = await f.runOk("--budget 5");
    assertEquals(okCalls(f.vendor), 5);
    assertStringIncludes(result.stdout, "budget_exhausted");
    await f.firstRun({ status: "budget_exhausted", credits_spent: 5 });
    // Misses billed too: 404s count against the budget.
    const before = f.vendor.calls.length;
    await f.runOk("--budget 4 --billable-statuses 200,404");
    const billed = f.vendor.calls.slice(before).filter((c) =>
      c.status === 200 || c.status === 404
    );
    assertEquals(billed.length, 4);
    assertEquals(f.vendor.calls.length - before, 4);
  });
});

Deno.test("--reserve stops once the vendor's credits header reaches it", async () => {
  let credits = 10;
  const script: Script = () => ({
    headers: { "x-credits-remaining": String(--credits) },
  });
  await withFixture({ name: "reserve", count: 20, script }, async (f) => {
    await f.runOk("--reserve 7", {
      env: { REFRESH_CREDITS_HEADER: "X-Credits-Remaining" },
    });
    assertEquals(
      f.vendor.calls.length,
      3,
      "remaining 9, 8, 7: stop at the reserve",
    );
    const run = await f.firstRun({
      status: "budget_exhausted",
      credits_remaining: 7,
    });
    assertStringIncludes(
      String(run.reason),
      "would dip into the reserve of 7",
    );
    assertEquals(
      (await f.state()).length,
      3,
      "the last answer was still recorded",
    );
  });
});

Deno.test("402, or the credits header reaching 0, stops the run as credits_exhausted", async () => {
  const script: Script = (id) => (id === "3" ? { status: 402 } : {});
  await withFixture({ name: "402", count: 6, script }, async (f) => {
    await f.runOk();
    assertEquals(f.vendor.calls.map((c) => c.id), ["1", "2", "3"]);
    await f.firstRun({ status: "credits_exhausted" });
    assertEquals(
      (await f.state()).map((s) => s.target_id),
      ["1", "2"],
      "402 is no outcome for the target",
    );
  });
  let credits = 2;
  const zero: Script = () => ({
    headers: { "x-credits-remaining": String(--credits) },
  });
  await withFixture({ name: "zero", count: 6, script: zero }, async (f) => {
    await f.runOk([], {
      env: { REFRESH_CREDITS_HEADER: "X-Credits-Remaining" },
    });
    assertEquals(f.vendor.calls.length, 2);
    await f.firstRun({ status: "credits_exhausted" });
  });
});

Deno.test("--time-budget: no new target starts after it", async () => {
  await withFixture(
    { name: "deadline", count: 50, latencyMs: 100 },
    async (f) => {
      const result = await f.runOk("--time-budget 1s");
      assertStringIncludes(result.stdout, "deadline");
      const run = await f.firstRun({ status: "deadline" });
      const calls = f.vendor.calls;
      assert(calls.length >= 3 && calls.length < 50, `${calls.length} calls`);
      const span = calls.at(-1)!.startedAt - calls[0]!.startedAt;
      assertLessOrEqual(
        span,
        1000,
        `a request started ${span}ms after the first`,
      );
      assertEquals(
        Number(run.processed),
        calls.length,
        "the request in flight was recorded",
      );
    },
  );
});

Deno.test("the run stops at the end of the credit period (injected clock), credits left for the workflow to tell", async () => {
  await withFixture(
    { name: "period", count: 50, latencyMs: 100 },
    async (f) => {
      // 23:59:59 on Nov 30 in New York is 04:59:59 UTC on Dec 1.
      let outputs = "";
      await withStepFiles(async (env, read) => {
        await f.runOk(
          "--now 2026-12-01T04:59:59Z --timezone America/New_York",
          { task: "refresh:ci", env },
        );
        outputs = (await read()).outputs;
      });
      // Someone should hear of credits left when the period closed.
      assertMatch(
        outputs,
        /^status=period_end\nexit_code=0\ncredits_left=true\n/,
      );
      const run = await f.firstRun({ status: "period_end" });
      assertStringIncludes(String(run.reason), "2026-12-01T05:00:00.000Z");
      assert(f.vendor.calls.length < 20, `${f.vendor.calls.length} calls`);
    },
  );
});

Deno.test("--month-end-days: outside the window a run exits 0 at once", async () => {
  await withFixture({ name: "window", count: 3 }, async (f) => {
    const early = await f.runOk(
      "--month-end-days 3 --now 2026-11-20T08:00:00Z",
    );
    assertStringIncludes(early.stderr, "day 20 of 30");
    assertEquals(f.vendor.calls.length, 0);
    await f.firstRun({ status: "outside_window" });
    await f.runOk("--month-end-days 3 --now 2026-11-28T08:00:00Z");
    assertEquals(f.vendor.calls.length, 3);
  });
});

Deno.test("--max-consecutive-failures aborts a run against a sick vendor", async () => {
  const script: Script = () => ({ status: 500 });
  await withFixture({ name: "breaker", count: 20, script }, async (f) => {
    const result = await f.runExits(
      1,
      "--max-attempts 2 --max-consecutive-failures 3",
      { env: { GITHUB_ACTIONS: "true" } },
    );
    assertEquals(f.vendor.calls.length, 6);
    const run = await f.firstRun({ status: "aborted" });
    assertStringIncludes(String(run.error), "3 targets in a row failed");
    assertMatch(
      result.stdout,
      /^::warning title=refresh%3A target 1 failed::gave up after 2 attempts/m,
    );
    assertMatch(
      result.stdout,
      /^::error title=refresh run \d+ aborted::3 targets in a row failed/m,
    );
  });
});

Deno.test("401 aborts at once: the key is wrong for every call", async () => {
  const script: Script = () => ({ status: 401 });
  await withFixture({ name: "401", count: 5, script }, async (f) => {
    const result = await f.runExits(1);
    assertEquals(f.vendor.calls.length, 1);
    await f.firstRun({ status: "aborted" });
    assertEquals((await f.state()).length, 0);
    assertStringIncludes(result.stderr, "refused the API key (HTTP 401)");
  });
});

Deno.test("a rate-limit header that says the window is used up is waited out", async () => {
  const script: Script = (id) =>
    id === "2"
      ? {
        headers: { "x-ratelimit-remaining": "0", "x-ratelimit-reset": "1" },
      }
      : {};
  await withFixture({ name: "ratelimit", count: 3, script }, async (f) => {
    await f.runOk();
    const [, second, third] = f.vendor.calls;
    const gap = third!.startedAt - second!.startedAt;
    assertGreaterOrEqual(gap, 1000, `waited only ${gap}ms`);
  });
  const longer: Script = (
    id,
  ) => (id === "2" ? { headers: { ratelimit: "r=0;t=3600" } } : {});
  await withFixture(
    { name: "ratelimit_stop", count: 3, script: longer },
    async (f) => {
      await f.runOk();
      assertEquals(f.vendor.calls.length, 2);
      await f.firstRun({ status: "rate_limited" });
      assertEquals(
        (await f.state()).length,
        2,
        "the answer that said so was recorded",
      );
    },
  );
});

Deno.test("a 429 widens the gap between request starts", async () => {
  const script: Script = (
    id,
    attempt,
  ) => (id === "1" && attempt === 1 ? { status: 429 } : {});
  await withFixture({ name: "adaptive", count: 4, script }, async (f) => {
    const result = await f.runOk("--backoff 1ms --progress-interval 1h");
    const starts = f.vendor.calls.map((c) => c.startedAt);
    // Gap 100ms after the push-back, then halved as successes follow.
    for (const [i, least] of [[1, 100], [2, 50], [3, 25], [4, 12]] as const) {
      const gap = starts[i]! - starts[i - 1]!;
      // Measured at the server: allow 10ms of network jitter.
      assertGreaterOrEqual(gap, least - 10, `gap ${i}: ${gap}ms`);
    }
    assertStringIncludes(result.stderr, "gap 6ms");
  });
});

Deno.test("one run at a time: a live lease refuses a second run with exit 3", async () => {
  await withFixture({ name: "lease", count: 3 }, async (f) => {
    await f.runOk("--limit 1");
    const runs = f.sql(`${f.schema}.refresh_runs`);
    const [live] = await f.sql<{ id: string }[]>`
      insert into ${runs} (status, params) values ('running', '{}') returning id::text`;
    const refused = await f.runExits(3);
    assertStringIncludes(
      refused.stderr,
      `another run is live: run ${live!.id}, started `,
    );
    assertStringIncludes(refused.stderr, "last heartbeat");
    assertEquals(f.vendor.calls.length, 1);
    // Its heartbeat expires: the next run takes over and marks it crashed.
    await f
      .sql`update ${runs} set heartbeat_at = now() - interval '10 minutes' where id = ${
      live!.id
    }`;
    const takeover = await f.runOk("--lease 1m --db-retry 30s");
    assertStringIncludes(
      takeover.stderr,
      `marked run(s) ${live!.id} crashed`,
    );
    const [old] = await f.sql`select status from ${runs} where id = ${
      live!.id
    }`;
    assertEquals(old!.status, "crashed");
    assertEquals(f.vendor.calls.length, 3);
  });
});

Deno.test("SIGTERM mid-request: the answer is committed, the run interrupted, exit 143", async () => {
  const script: Script = (id) => (id === "3" ? { delayMs: 800 } : {});
  await withFixture({ name: "sigterm", count: 10, script }, async (f) => {
    const child = await f.spawn();
    await waitFor("the slow request", () => f.vendor.callsFor("3") === 1);
    child.kill("SIGTERM");
    await exited(child, 143);
    assertEquals(
      f.vendor.calls.length,
      3,
      "a new request started after SIGTERM",
    );
    await f.firstRun({ status: "interrupted", processed: 3 });
    assertEquals((await f.state()).map((s) => [s.target_id, s.status]), [
      ["1", "ok"],
      ["2", "ok"],
      ["3", "ok"],
    ]);
  });
});

Deno.test("a second signal aborts the request in flight; nothing half-written", async () => {
  const script: Script = (id) => (id === "2" ? { delayMs: 20_000 } : {});
  await withFixture({ name: "sigint2", count: 5, script }, async (f) => {
    // The refresh process itself receives both signals (as under the
    // workflow's exec); deno task's forwarding is covered above.
    const child = await f.spawn("--grace 30s", { direct: true });
    await waitFor("the slow request", () => f.vendor.callsFor("2") === 1);
    const sent = Date.now();
    child.kill("SIGINT");
    // More than the 500ms within which a repeat counts as the same signal.
    await new Promise((r) => setTimeout(r, 700));
    child.kill("SIGINT");
    await exited(child, 130);
    assertLessOrEqual(Date.now() - sent, 10_000);
    await f.firstRun({ status: "interrupted" });
    assertEquals((await f.state()).map((s) => s.target_id), ["1"]);
    const [row] = await f.sql`select vendor_data from ${
      f.sql(`${f.schema}.people`)
    } where id = 2`;
    assertEquals(row!.vendor_data, null);
  });
});

Deno.test("a signal during a long wait cuts it short", async () => {
  const script: Script = (id, attempt) =>
    id === "1" && attempt === 1
      ? { status: 503, headers: { "retry-after": "60" } }
      : {};
  await withFixture({ name: "sigwait", count: 3, script }, async (f) => {
    const child = await f.spawn("--max-retry-wait 5m");
    await waitFor("the 503", () => f.vendor.calls.length === 1);
    await new Promise((r) => setTimeout(r, 300));
    const sent = Date.now();
    child.kill("SIGTERM");
    await exited(child, 143);
    assertLessOrEqual(Date.now() - sent, 10_000);
    assertEquals(f.vendor.calls.length, 1);
    await f.firstRun({ status: "interrupted" });
  });
});

Deno.test("--dry-run calls nobody and writes nothing", async () => {
  await withFixture({ name: "dry", count: 25, freshUpTo: 5 }, async (f) => {
    const first = await f.runOk("--dry-run --budget 10");
    assertStringIncludes(first.stdout, "20 would be refreshed");
    assertStringIncludes(
      first.stdout,
      "budget 10: the run would stop after ~10 targets",
    );
    assertStringIncludes(first.stdout, "estimated duration: unknown");
    assertStringIncludes(
      first.stdout,
      "first ids: 6, 7, 8, 9, 10, 11, 12, 13, 14, 15",
    );
    assertEquals(f.vendor.calls.length, 0);
    const given = await f.runOk("--dry-run --ids 3,6,99");
    assertStringIncludes(
      given.stdout,
      `2 would be refreshed in ${f.schema}.people; left out: 1 unknown ids`,
    );
    assertStringIncludes(given.stdout, "first ids: 3, 6");
    const [tables] = await f
      .sql`select to_regclass(${`${f.schema}.refresh_runs`}) as runs`;
    assertEquals(tables!.runs, null, "a dry run created the state tables");
    await f.runOk("--limit 4");
    const snapshot = async () =>
      await f.sql`select
          (select count(*) from ${
        f.sql(`${f.schema}.refresh_runs`)
      })::int as runs,
          (select count(*) from ${
        f.sql(`${f.schema}.refresh_state`)
      })::int as states,
          (select count(*) from ${
        f.sql(`${f.schema}.people`)
      } where vendor_data is not null)::int as rows`;
    const before = await snapshot();
    const second = await f.runOk("--dry-run");
    assertStringIncludes(second.stdout, "16 would be refreshed");
    assertMatch(
      second.stdout,
      /estimated duration: ~\S+ \(at \S+ per target, from run \d+\)/,
    );
    assertEquals(await snapshot(), before);
    assertEquals(f.vendor.calls.length, 4);
  });
});

Deno.test("--log-format json: every line is a JSON object", async () => {
  const script: Script = (id) => (id === "2" ? { status: 400 } : {});
  await withFixture({ name: "json", count: 4, script }, async (f) => {
    const result = await f.runOk("--log-format json --progress-interval 50ms");
    const lines = result.stderr.trim().split("\n");
    const events = lines.map((line) => JSON.parse(line));
    assert(events.some((e) => e.event === "progress" && e.total === 4));
    assert(events.some((e) => e.level === "warning" && e.target === "2"));
    const summary = JSON.parse(result.stdout.trim());
    assertEquals(summary.event, "summary");
    assertEquals(summary.status, "completed");
    assertEquals([summary.succeeded, summary.failed], [3, 1]);
  });
});

Deno.test("progress lines report pace, credits, gap and forecast", async () => {
  await withFixture(
    { name: "progress", count: 8, latencyMs: 30 },
    async (f) => {
      const result = await f.runOk("--progress-interval 100ms --budget 100");
      assertMatch(
        result.stderr,
        /progress: \d+\/8 \(\d+\.\d%\), \d+ ok, 0 failed, 0 not_found\/invalid, 0 retries; \d+\.\d\/min, ETA \S+; credits \d+ spent; gap 0ms; forecast: /,
      );
      assertStringIncludes(result.stderr, "progress: 8/8 (100.0%)");
      assertStringIncludes(result.stdout, "p95");
    },
  );
});

/** The files of a GitHub step: its summary and outputs, read after it. */
async function withStepFiles(
  body: (
    env: Record<string, string>,
    read: () => Promise<{ summary: string; outputs: string }>,
  ) => Promise<void>,
): Promise<void> {
  const summary = await Deno.makeTempFile({ suffix: ".md" });
  const outputs = await Deno.makeTempFile();
  try {
    await body(
      { GITHUB_STEP_SUMMARY: summary, GITHUB_OUTPUT: outputs },
      async () => ({
        summary: await Deno.readTextFile(summary),
        outputs: await Deno.readTextFile(outputs),
      }),
    );
  } finally {
    await Deno.remove(summary);
    await Deno.remove(outputs);
  }
}

Deno.test("GITHUB_STEP_SUMMARY receives a markdown summary, GITHUB_OUTPUT the status (refresh:ci task)", async () => {
  await withFixture({ name: "summary", count: 3 }, async (f) => {
    await withStepFiles(async (env, read) => {
      await f.runOk([], { task: "refresh:ci", env });
      const { summary, outputs } = await read();
      assertMatch(summary, /^### refresh run \d+: completed$/m);
      assertStringIncludes(summary, "| Status | **completed** |");
      assertStringIncludes(summary, "| ok | 3 |");
      assertMatch(
        outputs,
        /^status=completed\nexit_code=0\ncredits_left=false\nsummary<<(refresh_[\w-]+)\n### refresh run \d+: completed\n[\s\S]*\n\1\n$/,
      );
    });
  });
});

Deno.test("on GitHub a configuration error is an ::error:: annotation, a step summary and the status", async () => {
  await withFixture({ name: "gh_invalid", count: 1 }, async (f) => {
    await withStepFiles(async (files, read) => {
      const result = await f.runExits(2, ["--where", "no_such_column = 1"], {
        task: "refresh:ci",
        env: { ...files, GITHUB_ACTIONS: "true" },
      });
      assertMatch(
        result.stdout,
        /^::error title=refresh%3A invalid configuration::REFRESH_WHERE: column "no_such_column" does not exist/m,
      );
      const { summary, outputs } = await read();
      assertMatch(
        summary,
        /^### refresh: invalid configuration\n\n- REFRESH_WHERE: column/,
      );
      assertMatch(outputs, /^status=invalid_configuration\nexit_code=2\n/);
    });
  });
});

Deno.test("on GitHub a dry run (a paused schedule) leaves a notice and a step summary", async () => {
  await withFixture({ name: "gh_paused", count: 2 }, async (f) => {
    await withStepFiles(async (files, read) => {
      const result = await f.runOk([], {
        task: "refresh:ci",
        env: { ...files, GITHUB_ACTIONS: "true", REFRESH_DRY_RUN: "true" },
      });
      assertMatch(
        result.stdout,
        /^::notice title=refresh%3A dry run::a dry run/m,
      );
      const { summary, outputs } = await read();
      assertStringIncludes(summary, "### refresh: dry run");
      assertStringIncludes(summary, "targets: 2 would be refreshed");
      assertMatch(outputs, /^status=dry_run\nexit_code=0\n/);
    });
  });
});

// ---------------------------------------------------------------------------
// Unattended means unbreakable: refused answers, lost and blocked databases,
// hostile input, secrets.
// ---------------------------------------------------------------------------

/** Tests that need a real server (locks, backends, start-up parameters). */
const POSTGRES_ONLY = { ignore: !Deno.env.get("TEST_DATABASE_URL") };

/** Ids the vendor was asked about more than once. */
function askedTwice(vendor: FakeVendor): string[] {
  return [...new Set(calledIds(vendor))].filter((id) =>
    vendor.callsFor(id) > 1
  );
}

Deno.test("an answer the database cannot store is recorded invalid, and the run goes on", async () => {
  // Too deep for PostgreSQL's stack (54001); PGlite's WebAssembly stack
  // gives out before that and takes the server with it, so there a value
  // too long for its column (22001) stands in for it.
  const deep = POSTGRES_ONLY.ignore
    ? `{"name":"${"x".repeat(300)}"}`
    : `{"a":${"[".repeat(100_000)}${"]".repeat(100_000)}}`;
  const script: Script = (id) =>
    ({
      "2": { body: '{"name":"a\\u0000b"}' },
      "3": { body: '{"n":1e1000000}' },
      "4": { body: deep },
      "5": { body: { name: "refuse me" } },
    })[id] ?? {};
  await withFixture({ name: "refused", count: 6, script }, async (f) => {
    await f.sql.unsafe(`
      create function ${f.schema}.guard() returns trigger language plpgsql as $$
      begin
        if new.vendor_data->>'name' = 'refuse me' then
          raise exception 'the guard refuses this row';
        end if;
        return new;
      end $$;
      create trigger guard before update on ${f.table}
        for each row execute function ${f.schema}.guard()`);
    await f.sql`alter table ${f.sql(f.table)} add column nick varchar(200)`;
    await f.runOk("--map nick=name");
    const state = await f.state();
    assertEquals(state.map((s) => [s.target_id, s.status]), [
      ["1", "ok"],
      ["2", "invalid"],
      ["3", "invalid"],
      ["4", "invalid"],
      ["5", "invalid"],
      ["6", "ok"],
    ]);
    const error = (id: string) => state.find((s) => s.target_id === id)!.error!;
    assertStringIncludes(
      error("2"),
      "the database refused the answer: unsupported Unicode escape sequence",
    );
    assertStringIncludes(error("3"), "value overflows numeric format");
    assertStringIncludes(
      error("4"),
      POSTGRES_ONLY.ignore
        ? "value too long for type character varying(200)"
        : "stack depth limit exceeded",
    );
    assertStringIncludes(error("5"), "the guard refuses this row");
    await f.firstRun({ status: "completed", invalid: 4, succeeded: 2 });
    // Known misses: not bought again on the next run.
    await f.runOk();
    assertEquals(f.vendor.calls.length, 6);
  });
});

Deno.test("answers the database refuses again and again abort the run, naming its reason", async () => {
  await withFixture({ name: "refused_row", count: 20 }, async (f) => {
    await f.sql`alter table ${f.sql(f.table)} add constraint small
      check (length(vendor_data::text) < 10)`;
    await f.runExits(1, "--max-consecutive-invalid 3");
    const run = await f.firstRun({ status: "aborted" });
    assertStringIncludes(
      String(run.error),
      "3 answers in a row were refused by the database",
    );
    assertStringIncludes(
      String(run.error),
      'violates check constraint "small"',
    );
    // Known one target late, with the next request already answered.
    assertLessOrEqual(f.vendor.calls.length, 4);
  });
});

Deno.test("answers that fail the vendor checks again and again abort the run", async () => {
  const script: Script = () => ({ body: "[1]" });
  await withFixture({ name: "wrong_schema", count: 20, script }, async (f) => {
    await f.runExits(1, "--max-consecutive-invalid 3");
    assertEquals(f.vendor.calls.length, 3);
    const run = await f.firstRun({ status: "aborted" });
    assertStringIncludes(
      String(run.error),
      "3 answers in a row failed the vendor checks",
    );
    assertStringIncludes(String(run.error), "match the schema");
  });
});

Deno.test("--retry-misses asks again for targets recorded not_found or invalid", async () => {
  let miss = true;
  const script: Script = (id) =>
    miss && id === "1"
      ? { status: 404 }
      : miss && id === "2"
      ? { body: "nope" }
      : {};
  await withFixture({ name: "retry_misses", count: 3, script }, async (f) => {
    await f.runOk();
    await f.runOk();
    assertEquals(f.vendor.calls.length, 3, "known misses were asked again");
    miss = false;
    await f.runOk("--retry-misses");
    assertEquals(calledIds(f.vendor).slice(3), ["1", "2"]);
    assertEquals((await f.state()).map((s) => s.status), ["ok", "ok", "ok"]);
  });
});

Deno.test("an unexpected database error ends the run aborted, its cause stored, its lease released", async () => {
  await withFixture(
    { name: "run_error", count: 30, latencyMs: 50 },
    async (f) => {
      const child = await f.spawn();
      await waitFor("three calls", () => f.vendor.calls.length >= 3);
      await f.sql`alter table ${
        f.sql(f.table)
      } rename column vendor_data to renamed`;
      const result = await exited(child, 1);
      const run = await f.firstRun({ status: "aborted" });
      assertMatch(
        String(run.error),
        /unexpected error: column "vendor_data" .*does not exist/,
      );
      assertStringIncludes(result.stderr, 'column "vendor_data"');
      // The lease is free: the next run is refused for its configuration, not
      // for a live run.
      const next = await f.runExits(2);
      assertStringIncludes(
        next.stderr,
        "REFRESH_DATA_COLUMN: column vendor_data does not exist",
      );
    },
  );
});

Deno.test("what is stored is the text the vendor sent, not what validation made of it", async () => {
  const text =
    '{"__proto__":{"x":1},"big":123456789012345678901234567890,"id":"1"}';
  const script: Script = () => ({ body: text });
  await withFixture({ name: "verbatim", count: 1, script }, async (f) => {
    await f.runOk();
    const [row] = await f.sql`
      select vendor_data->>'big' as big, vendor_data ? '__proto__' as proto
      from ${f.sql(f.table)}`;
    assertEquals(row!.big, "123456789012345678901234567890");
    assertEquals(row!.proto, true);
  });
});

Deno.test("--max-body counts the bytes after decompression", async () => {
  const json = new TextEncoder().encode(`{"blob":"${"x".repeat(4_000_000)}"}`);
  const gzipped = new Uint8Array(
    await new Response(
      new Blob([json]).stream().pipeThrough(new CompressionStream("gzip")),
    ).arrayBuffer(),
  );
  const script: Script = (id) =>
    id === "1"
      ? {
        body: gzipped,
        headers: {
          "content-encoding": "gzip",
          "content-length": String(gzipped.length),
        },
      }
      : {};
  await withFixture({ name: "gzip_bomb", count: 2, script }, async (f) => {
    await f.runOk("--max-body 1MiB");
    const state = await f.state();
    assertEquals(state.map((s) => s.status), ["invalid", "ok"]);
    assertStringIncludes(state[0]!.error!, "larger than the 1048576-byte cap");
  });
});

Deno.test("an id a URL parser would move elsewhere is recorded invalid, never asked for", async () => {
  await withFixture(
    { name: "dot_ids", count: 1, idType: "text" },
    async (f) => {
      await f.sql`insert into ${
        f.sql(f.table)
      } (id, name) values ('.', 'dot'), ('..', 'dots'), ('', 'empty')`;
      await f.runOk();
      assertEquals(calledIds(f.vendor), ["1"]);
      const state = await f.sql<
        { id: string; status: string; error: string }[]
      >`
      select target_id as id, status, error from ${
        f.sql(`${f.schema}.refresh_state`)
      }
      order by target_id`;
      assertEquals(state.map((s) => [s.id, s.status]), [
        ["", "invalid"],
        [".", "invalid"],
        ["..", "invalid"],
        ["1", "ok"],
      ]);
      for (const s of state.slice(0, 3)) {
        assertStringIncludes(
          s.error,
          "cannot be placed in the URL path",
        );
      }
    },
  );
});

Deno.test("no id or vendor text can start a line GitHub reads as a command", async () => {
  const script: Script = () => ({
    status: 400,
    body: "bad\n::error::from the vendor",
  });
  await withFixture(
    { name: "log_injection", count: 1, idType: "text", script },
    async (f) => {
      await f.sql`insert into ${
        f.sql(f.table)
      } (id, name) values (${"x\n::error::from an id"}, 'evil')`;
      for (const format of ["text", "json"]) {
        const result = await f.runOk(
          `--log-format ${format} --retry-misses --stale-after 0`,
          { env: { GITHUB_ACTIONS: "true" } },
        );
        f.vendor.calls.length = 0;
        const lines = `${result.stdout}\n${result.stderr}`.split("\n");
        assert(
          lines.some((l) => l.includes("from an id")),
          `the id was not reported:\n${lines.join("\n")}`,
        );
        for (const line of lines) {
          assert(!/^::error::from/.test(line), `a command line: ${line}`);
        }
      }
    },
  );
});

/** Runs `body` with a TCP proxy in front of the database, closed after. */
async function viaProxy(
  f: Fixture,
  body: (proxy: TcpProxy, env: Record<string, string>) => Promise<void>,
): Promise<void> {
  const url = new URL(f.db.url);
  const proxy = startTcpProxy({
    hostname: url.hostname,
    port: Number(url.port || 5432),
  });
  try {
    await body(proxy, { DATABASE_URL: proxy.via(f.db.url) });
  } finally {
    await proxy.close();
  }
}

/**
 * Runs `body` while a session of its own holds `f.table` locked in
 * exclusive mode (so that every write of the job waits), then ends it.
 */
async function whileLocked(f: Fixture, body: () => Promise<unknown>) {
  const holder = f.db.client();
  try {
    await holder.begin(async (tx) => {
      await tx`lock table ${tx(f.table)} in exclusive mode`;
      await body();
    });
  } finally {
    await holder.end();
  }
}

Deno.test("the database lost mid-run: the answer in hand is written once it is back, nothing asked twice", async () => {
  await withFixture(
    { name: "db_lost", count: 30, latencyMs: 30 },
    async (f) => {
      await viaProxy(f, async (proxy, env) => {
        const child = await f.spawn("--db-retry 30s", { env });
        await waitFor("five calls", () => f.vendor.calls.length >= 5);
        proxy.cut();
        await delay(1500);
        proxy.restore();
        const result = await exited(child);
        assertStringIncludes(result.stderr, "retrying for up to 30s");
        assertEquals(askedTwice(f.vendor), []);
        assertEquals(f.vendor.calls.length, 30);
        const state = await f.state();
        assertEquals(state.length, 30);
        assert(state.every((s) => s.status === "ok"));
        await f.firstRun({ status: "completed" });
      });
    },
  );
});

Deno.test({
  name:
    "backends terminated mid-run: the run reconnects and nothing is asked twice",
  ...POSTGRES_ONLY,
  async fn() {
    await withFixture(
      { name: "terminated", count: 30, latencyMs: 30 },
      async (f) => {
        const child = await f.spawn("--db-retry 30s", {
          env: { DATABASE_URL: `${f.db.url}?application_name=${f.schema}` },
        });
        // First all three connections (selection, writes, heartbeat), then
        // the ones open again.
        for (const [after, least] of [[5, 3], [15, 1]]) {
          await waitFor(
            `${after} calls`,
            () => f.vendor.calls.length >= after!,
          );
          const killed = await f.sql`
            select pg_terminate_backend(pid) from pg_stat_activity
            where application_name = ${f.schema}`;
          assertGreaterOrEqual(killed.length, least!);
        }
        await exited(child);
        assertEquals(askedTwice(f.vendor), []);
        assertEquals(
          (await f.state()).filter((s) => s.status === "ok").length,
          30,
        );
      },
    );
  },
});

Deno.test("the database never comes back: aborted after --db-retry, the cause everywhere, exit 1", async () => {
  await withFixture(
    { name: "db_gone", count: 30, latencyMs: 30 },
    async (f) => {
      const summary = await Deno.makeTempFile({ suffix: ".md" });
      try {
        await viaProxy(f, async (proxy, env) => {
          const child = await f.spawn("--db-retry 1s --connect-timeout 1s", {
            env: {
              ...env,
              GITHUB_ACTIONS: "true",
              GITHUB_STEP_SUMMARY: summary,
              GITHUB_OUTPUT: summary,
            },
            task: "refresh:ci",
          });
          await waitFor("five calls", () => f.vendor.calls.length >= 5);
          proxy.cut();
          const started = Date.now();
          const result = await exited(child, 1);
          assertLessOrEqual(Date.now() - started, 15_000);
          assertStringIncludes(
            result.stderr,
            "could not record the end of run",
          );
          assertStringIncludes(
            result.stderr,
            "the database was unreachable or blocked for longer than --db-retry 1s",
          );
          assertMatch(
            result.stdout,
            /^::error title=refresh run \d+ unrecorded::could not record the end/m,
          );
          assertStringIncludes(
            await Deno.readTextFile(summary),
            "could not record the end of run",
          );
          // At most the answer in hand and the one in flight are lost.
          const state = await f.state();
          assertGreaterOrEqual(state.length, f.vendor.calls.length - 2);
        });
        // Only a database that never came back leaves the row running.
        await f.firstRun({ status: "running" });
      } finally {
        await Deno.remove(summary);
      }
    },
  );
});

Deno.test({
  name:
    "a write blocked by a lock: the heartbeat goes on, no run takes over, the answer is written once the lock ends",
  ...POSTGRES_ONLY,
  async fn() {
    await withFixture(
      { name: "blocked", count: 10, latencyMs: 20 },
      async (f) => {
        const args =
          "--lease 20s --request-timeout 2s --grace 1s --db-retry 15s";
        const child = await f.spawn(args);
        await waitFor("three calls", () => f.vendor.calls.length >= 3);
        await whileLocked(f, async () => {
          const calls = f.vendor.calls.length;
          const [before] = await f.runs();
          // Within the 5 s lock timeout of writes, so the write is still
          // blocked when the heartbeat is looked at.
          await delay(3_500);
          const [during] = await f.runs();
          assert(
            new Date(String(during!.heartbeat_at)) >
              new Date(String(before!.heartbeat_at)),
            "the heartbeat stopped while a write was blocked",
          );
          assertLessOrEqual(
            f.vendor.calls.length,
            calls + 1,
            "a request started while a write was blocked",
          );
          // Past the lock timeout: the write is retried, still blocked.
          await delay(3_500);
          await f.runExits(3, args);
        });
        await exited(child);
        assertEquals(askedTwice(f.vendor), []);
        assertEquals(
          (await f.state()).filter((s) => s.status === "ok").length,
          10,
        );
      },
    );
  },
});

/** Makes every write of the target table sleep 300 ms; returns the ids stored. */
async function slowWrites(f: Fixture): Promise<() => Promise<string[]>> {
  await f.sql.unsafe(`
    create function ${f.schema}.slow() returns trigger language plpgsql
      as $$ begin perform pg_sleep(0.3); return new; end $$;
    create trigger slow before update on ${f.table}
      for each row execute function ${f.schema}.slow()`);
  return async () =>
    (await f.sql<{ id: string }[]>`
      select id::text from ${f.sql(f.table)}
      where vendor_refreshed_at is not null order by id`).map((r) => r.id);
}

Deno.test({
  name:
    "each answer is written while the next request is in flight, never two targets ahead",
  ...POSTGRES_ONLY,
  async fn() {
    let stored = (): Promise<string[]> => Promise.resolve([]);
    const seen: { id: string; atArrival: string[]; later: string[] }[] = [];
    const script: Script = async (id) => {
      const atArrival = await stored();
      await delay(600);
      seen.push({ id, atArrival, later: await stored() });
      return {};
    };
    await withFixture({ name: "overlap", count: 4, script }, async (f) => {
      stored = await slowWrites(f);
      await f.runOk();
      const order = seen.map((s) => s.id);
      const upTo = (n: number) => order.slice(0, Math.max(0, n)).sort();
      for (const [i, s] of seen.entries()) {
        assertEquals(s.atArrival, upTo(i - 1), `when ${s.id} was asked`);
        assertEquals(s.later, upTo(i), `while ${s.id} was in flight`);
      }
      assertEquals((await stored()).length, 4);
    });
  },
});

Deno.test({
  name: "a wait the vendor asks for does not hold back the answer in hand",
  ...POSTGRES_ONLY,
  async fn() {
    let stored = (): Promise<string[]> => Promise.resolve([]);
    const atArrival: string[][] = [];
    // Every answer says the rate-limit window is used up for 1 s.
    const script: Script = async () => {
      atArrival.push(await stored());
      return {
        headers: { "x-ratelimit-remaining": "0", "x-ratelimit-reset": "1" },
      };
    };
    // Slower than a turn of the event loop: the write waits for the next
    // request, or for the wait before it.
    const setup = { name: "pause", count: 2, script, latencyMs: 50 };
    await withFixture(setup, async (f) => {
      stored = await slowWrites(f);
      await f.runOk();
      const [first] = f.vendor.calls;
      assertEquals(atArrival, [[], [first!.id]]);
    });
  },
});

for (const [signal, code] of [["SIGTERM", 143], ["SIGINT", 130]] as const) {
  Deno.test({
    name:
      `${signal} while a write is blocked: the run stops within the grace, interrupted`,
    ...POSTGRES_ONLY,
    async fn() {
      await withFixture({
        name: `blocked_${signal.toLowerCase()}`,
        count: 10,
        latencyMs: 20,
      }, async (f) => {
        const child = await f.spawn("--grace 1s", { direct: true });
        await waitFor("two calls", () => f.vendor.calls.length >= 2);
        await whileLocked(f, async () => {
          await delay(1_000);
          const sent = Date.now();
          child.kill(signal);
          await exited(child, code);
          assertLessOrEqual(Date.now() - sent, 4_000);
        });
        await f.firstRun({ status: "interrupted" });
      });
    },
  });
}

Deno.test({
  name: "the time budget ends a run blocked on the database: deadline, exit 0",
  ...POSTGRES_ONLY,
  async fn() {
    await withFixture(
      { name: "blocked_deadline", count: 100, latencyMs: 20 },
      async (f) => {
        const child = await f.spawn("--time-budget 2s --grace 1s");
        await waitFor("two calls", () => f.vendor.calls.length >= 2);
        await whileLocked(f, () => exited(child));
        await f.firstRun({ status: "deadline" });
      },
    );
  },
});

Deno.test("connecting to something that is not PostgreSQL: bounded, a clear error, stopped at once", async () => {
  await withFixture({ name: "not_postgres" }, async (f) => {
    // An HTTP server answers (and keeps the connection); another never says a word.
    const http = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen() {} },
      () => new Response("hello"),
    );
    const silent = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const held: Deno.Conn[] = [];
    const holding = (async () => {
      for await (const conn of silent) held.push(conn);
    })();
    const urlFor = (port: number) => ({
      DATABASE_URL: `postgres://app:pw-not-shown@127.0.0.1:${port}/db`,
    });
    const silentPort = (silent.addr as Deno.NetAddr).port;
    try {
      for (const port of [http.addr.port, silentPort]) {
        const started = Date.now();
        const result = await f.runExits(1, "--connect-timeout 2s", {
          env: urlFor(port),
        });
        assertLessOrEqual(Date.now() - started, 10_000);
        assertMatch(
          result.stderr,
          new RegExp(
            `(no answer from PostgreSQL|cannot connect to the database) at 127.0.0.1:${port}`,
          ),
        );
      }
      const child = await f.spawn("--connect-timeout 1m", {
        env: urlFor(silentPort),
        direct: true,
      });
      await delay(1_000);
      const sent = Date.now();
      child.kill("SIGINT");
      await exited(child, 130);
      assertLessOrEqual(Date.now() - sent, 2_000);
    } finally {
      await http.shutdown();
      silent.close();
      await holding;
      for (const conn of held) conn.close();
    }
  });
});

Deno.test("a URL without a password: works where the server needs none, a clear message where it asks", async () => {
  await withFixture({ name: "no_password", count: 1 }, async (f) => {
    const url = new URL(f.db.url);
    url.password = "";
    const result = await f.run([], { env: { DATABASE_URL: url.href } });
    if (f.db.kind === "pglite") {
      // PGlite asks for no password.
      assertSucceeded(result);
      return;
    }
    assertEquals(result.code, 2, result.stderr);
    assertStringIncludes(
      result.stderr,
      "asks for a password and the URL has none",
    );
  });
});

/**
 * Every fragment of a secret the issue counts: any run of 8 of its
 * characters (half of it when shorter), raw, percent-encoded or in base64.
 */
function fragments(secret: string): string[] {
  const n = Math.min(8, Math.ceil(secret.length / 2));
  const forms = [secret, encodeURIComponent(secret), btoa(secret).slice(0, -4)];
  return [
    ...new Set(
      forms.flatMap((form) =>
        Array.from(
          { length: form.length - n + 1 },
          (_, i) => form.slice(i, i + n),
        )
      ),
    ),
  ];
}

/** Fails if `text` holds any fragment of `secret`. */
function assertNoFragment(text: string, secret: string, where: string) {
  for (const fragment of fragments(secret)) {
    const at = text.indexOf(fragment);
    assert(
      at < 0,
      `${JSON.stringify(fragment)} of a secret in ${where}: …${
        text.slice(Math.max(0, at - 40), at + 40)
      }…`,
    );
  }
}

Deno.test("a key the vendor echoes is scrubbed before any excerpt is cut, at every offset", async () => {
  const limit = 200;
  const offsets = Array.from(
    { length: API_KEY.length + 4 },
    (_, i) => limit - API_KEY.length - 2 + i,
  );
  const script: Script = (id) => ({
    status: 400,
    body: `${"x".repeat(offsets[Number(id) - 1]!)}${API_KEY} tail`,
  });
  await withFixture(
    { name: "echoed_key", count: offsets.length, script },
    async (f) => {
      const result = await f.runOk("--max-consecutive-failures 100", {
        env: { GITHUB_ACTIONS: "true" },
      });
      assertEquals(
        result.stdout.split("\n").filter((l) => l.startsWith("::warning"))
          .length,
        10,
      );
      const errors = (await f.state()).map((s) => s.error ?? "").join("\n");
      assertStringIncludes(errors, "***");
      // Scrubbed first, then cut: no excerpt ends in the start of the key.
      for (const line of errors.split("\n")) {
        const cut = line.endsWith("…") ? line.slice(0, -1) : "";
        for (let n = 3; n < API_KEY.length; n++) {
          assert(
            !cut.endsWith(API_KEY.slice(0, n)),
            `a cut left ${n} characters of the key: ${line}`,
          );
        }
      }
      for (
        const [where, text] of [["stdout", result.stdout], [
          "stderr",
          result.stderr,
        ], ["refresh_state", errors]]
      ) {
        assertNoFragment(text!, API_KEY, where!);
      }
    },
  );
});

Deno.test("a password a database error quotes is neither printed nor stored", async () => {
  const password = "Correct-Horse-Battery-Staple-2026";
  await withFixture({ name: "quoted_password", count: 3 }, async (f) => {
    const role = `${f.schema}_role`;
    const url = new URL(f.db.url);
    if (f.db.kind === "postgres") {
      await f.sql.unsafe(`create role ${role} login password '${password}';
        grant all on schema ${f.schema} to ${role};
        grant all on all tables in schema ${f.schema} to ${role}`);
      url.username = role;
    }
    url.password = encodeURIComponent(password);
    try {
      await f.sql.unsafe(`
        create function ${f.schema}.quote() returns trigger language plpgsql as $$
        begin
          raise exception 'refused: %, %, %', '${password}', '${
        btoa(password)
      }', '${encodeURIComponent(password)}';
        end $$;
        create trigger quote before update on ${f.table}
          for each row execute function ${f.schema}.quote()`);
      const result = await f.runOk([], {
        env: { DATABASE_URL: url.href, GITHUB_ACTIONS: "true" },
      });
      const state = await f.state();
      assertEquals(state.map((s) => s.status), [
        "invalid",
        "invalid",
        "invalid",
      ]);
      const [run] = await f.runs();
      for (
        const [where, text] of [
          ["stdout", result.stdout],
          ["stderr", result.stderr],
          ["refresh_state", state.map((s) => s.error).join("\n")],
          ["refresh_runs", JSON.stringify(run)],
        ]
      ) {
        assertNoFragment(text!, password, where!);
      }
      assertStringIncludes(state[0]!.error!, "refused: ***");
    } finally {
      if (f.db.kind === "postgres") {
        await f.sql.unsafe(`drop owned by ${role} cascade; drop role ${role}`);
      }
    }
  });
});

Deno.test("the stored run parameters hold no secret, wherever the URLs put it", async () => {
  await withFixture({ name: "params", count: 1 }, async (f) => {
    const vendor = new URL(f.vendor.urlTemplate);
    const apiUrl =
      `${vendor.origin}/${API_KEY}/people/{id}?token=${API_KEY}&k=${
        encodeURIComponent(API_KEY)
      }`;
    const db = new URL(f.db.url);
    const password = db.password;
    db.password = "";
    db.searchParams.set("password", password);
    const result = await f.runOk([], {
      env: { REFRESH_API_URL: apiUrl, DATABASE_URL: db.href },
    });
    assertEquals(calledIds(f.vendor), ["1"]);
    const [run] = await f.runs();
    const params = JSON.stringify(run!.params);
    assertNoFragment(params, API_KEY, "refresh_runs.params");
    assertStringIncludes(params, "password=***");
    assert(!params.includes(`password=${password}`), params);
    assertNoFragment(result.stderr, API_KEY, "stderr");
  });
});

Deno.test("a key a URL parser percent-encodes (an apostrophe) is neither printed nor stored", async () => {
  const key = "sk_it's_a_TESTKEY_9f8e7d6c";
  await withFixture({ name: "params_quote", count: 1 }, async (f) => {
    const vendor = new URL(f.vendor.urlTemplate);
    const apiUrl = `${vendor.origin}/people/{id}?k=${key}&v=1`;
    const result = await f.runOk([], {
      env: { REFRESH_API_URL: apiUrl, REFRESH_API_KEY: key },
    });
    const [run] = await f.runs();
    const params = JSON.stringify(run!.params);
    for (const form of [key, new URL(apiUrl).search]) {
      assertNoFragment(params, form, "refresh_runs.params");
      assertNoFragment(result.stderr + result.stdout, form, "output");
    }
    assert(!params.includes("it%27s_a"), params);
    assert(!result.stderr.includes("it%27s_a"), result.stderr);
  });
});

Deno.test("a Retry-After too long for any timer stops the run as rate_limited", async () => {
  const script: Script = () => ({
    status: 429,
    headers: { "retry-after": "99999999999999999999" },
  });
  await withFixture({ name: "huge_wait", count: 3, script }, async (f) => {
    const result = await f.runOk();
    // Past the end of the credit period: warned about, then treated as
    // absent; the attempts run out on 429s and no target is failed.
    assertEquals(f.vendor.calls.length, 5);
    await f.firstRun({ status: "rate_limited", not_before: null });
    assertEquals((await f.state()).length, 0);
    assertStringIncludes(result.stderr, "past the end of the credit period");
  });
});

Deno.test("the requests of a target cut short by a stop are counted", async () => {
  const script: Script = (id) => (id === "2" ? { status: 503 } : {});
  await withFixture({ name: "counted", count: 5, script }, async (f) => {
    const child = await f.spawn(
      "--backoff 3s --max-retry-wait 3s --billable-statuses 200,503",
    );
    await waitFor("two calls for id 2", () => f.vendor.callsFor("2") >= 2);
    child.kill("SIGTERM");
    await exited(child, 143);
    await f.firstRun({
      requests: f.vendor.calls.length,
      credits_spent: f.vendor.calls.length,
      retries: f.vendor.calls.length - 2,
      processed: 1,
    });
  });
});

Deno.test("the vendor's 'not before' outlives the run", async () => {
  let asked = false;
  const script: Script = () => {
    if (asked) return {};
    asked = true;
    return { status: 429, headers: { "retry-after": "3" } };
  };
  await withFixture({ name: "not_before", count: 2, script }, async (f) => {
    await f.runOk("--max-retry-wait 1s --backoff 1ms");
    await f.firstRun({ status: "rate_limited" });
    const told = f.vendor.calls[0]!.startedAt;
    // At once, still too long to wait: no call at all.
    await f.runOk("--max-retry-wait 1s --backoff 1ms");
    assertEquals(f.vendor.calls.length, 1);
    const [, second] = await f.runs();
    assertEquals(second!.status, "rate_limited");
    // Long enough to wait: it waits out the rest, then calls.
    await f.runOk("--max-retry-wait 10s --backoff 1ms");
    assertEquals(f.vendor.calls.length, 3);
    assertGreaterOrEqual(f.vendor.calls[1]!.startedAt - told, 2_900);
  });
});

Deno.test("a live run that lost its lease starts nothing more and writes nothing more", async () => {
  await withFixture(
    { name: "lease_lost", count: 50, latencyMs: 50 },
    async (f) => {
      const child = await f.spawn();
      await waitFor("five calls", () => f.vendor.calls.length >= 5);
      await f.sql`
      update ${f.sql(`${f.schema}.refresh_runs`)} set status = 'crashed'`;
      // Read once the takeover is committed: a write that began before the
      // commit still saw the lease, and is stamped with its own start.
      const [taken] = await f.sql<{ at: string }[]>`
      select clock_timestamp()::text as at`;
      const calls = f.vendor.calls.length;
      const result = await exited(child, 1);
      assertStringIncludes(result.stderr, "lost the lease");
      assertLessOrEqual(f.vendor.calls.length, calls + 2);
      const [run] = await f.runs();
      assertEquals(
        run!.status,
        "crashed",
        "the run that took over keeps the row",
      );
      const [late] = await f.sql`
      select count(*)::int as n from ${f.sql(`${f.schema}.refresh_state`)}
      where last_attempt_at > ${taken!.at}::timestamptz`;
      assertEquals(late!.n, 0, "a target was written after the lease was lost");
    },
  );
});

Deno.test("a request in flight longer than the grace is aborted when the grace ends", async () => {
  const script: Script = (id) => (id === "2" ? { delayMs: 20_000 } : {});
  await withFixture({ name: "grace", count: 5, script }, async (f) => {
    const child = await f.spawn("--grace 1s", { direct: true });
    await waitFor("the slow request", () => f.vendor.callsFor("2") === 1);
    const sent = Date.now();
    child.kill("SIGTERM");
    await exited(child, 143);
    assertGreaterOrEqual(Date.now() - sent, 900);
    assertLessOrEqual(Date.now() - sent, 5_000);
    assertEquals((await f.state()).map((s) => s.target_id), ["1"]);
  });
});

Deno.test({
  name:
    "without REFRESH_STATE_SCHEMA, the state tables go to the first schema of the search path",
  ...POSTGRES_ONLY,
  async fn() {
    await withFixture({ name: "default_schema", count: 2 }, async (f) => {
      const url = new URL(f.db.url);
      url.searchParams.set("options", `-c search_path=${f.schema}`);
      const env = {
        ...f.env,
        DATABASE_URL: url.href,
        REFRESH_STATE_SCHEMA: "",
      };
      await f.runOk([], { env });
      assertEquals((await f.runs()).map((r) => r.status), ["completed"]);
      assertEquals((await f.state()).length, 2);
    });
  },
});

Deno.test({
  name:
    "no request starts once the heartbeat is older than lease − (request timeout + grace)",
  ...POSTGRES_ONLY,
  async fn() {
    await withFixture(
      { name: "fence", count: 500, latencyMs: 20 },
      async (f) => {
        const child = await f.spawn(
          "--lease 6s --request-timeout 1s --grace 1s --db-retry 2s",
        );
        await waitFor("five calls", () => f.vendor.calls.length >= 5);
        const holder = f.db.client();
        let locked = 0;
        try {
          await holder.begin(async (tx) => {
            // The heartbeat's update waits on this lock (and times out).
            await tx`select 1 from ${
              tx(`${f.schema}.refresh_runs`)
            } for update`;
            locked = performance.now();
            await delay(9_000);
          });
        } finally {
          await holder.end();
        }
        const result = await exited(child, 1);
        assertStringIncludes(result.stderr, "could not renew the lease");
        // The last heartbeat came at most a second before the lock; no
        // request may start 4 s (lease − timeout − grace) after it.
        const late = f.vendor.calls.filter((c) =>
          c.startedAt > locked + 4_000 + 200
        );
        assertEquals(
          late.length,
          0,
          `${late.length} requests started after the fence`,
        );
        assertGreaterOrEqual(
          f.vendor.calls.filter((c) => c.startedAt > locked).length,
          1,
        );
        // The answer in hand when the fence closed was written then, not
        // when the run gave up (--db-retry later).
        const last = f.vendor.calls.at(-1)!;
        const [row] = await f.sql<{ at: number }[]>`
          select extract(epoch from last_attempt_at) * 1000 as at
          from ${f.sql(`${f.schema}.refresh_state`)}
          where target_id = ${last.id}`;
        assertLess(
          Number(row!.at) - (performance.timeOrigin + last.endedAt!),
          1_000,
        );
      },
    );
  },
});

// ---------------------------------------------------------------------------
// Adapting to a vendor: lookup columns, --map, --where, state per table.
// ---------------------------------------------------------------------------

/** An enrichment answer for an e-mail, as the README's example vendor gives. */
function enrichment(email: string) {
  return {
    status: 200,
    data: { job_title: `Title of ${email}`, job_company_name: "Acme" },
  };
}

Deno.test("settings alone: an e-mail-keyed enrichment API with nested data into two columns", async () => {
  const script: Script = (email) => ({ body: enrichment(email) });
  await withFixture({ name: "by_email", count: 6, script }, async (f) => {
    await f.sql`alter table ${
      f.sql(f.table)
    } add column email text, add column title text, add column company text`;
    await f.sql`update ${f.sql(f.table)} set email = case
      when id <= 4 then 'p' || id || '+x@example.com' when id = 6 then '' end`;
    const env = {
      REFRESH_API_URL: `${
        new URL(f.vendor.urlTemplate).origin
      }/v5/person/enrich?email={email}`,
      REFRESH_MAP: "title=data.job_title,company=data.job_company_name",
    };
    const dry = await f.run("--dry-run", { env });
    assertStringIncludes(dry.stdout, "4 would be refreshed");
    assertStringIncludes(dry.stdout, "left out: 2 without email");
    const result = await f.runOk([], { env });
    assertStringIncludes(result.stderr, "4 target(s) to refresh");
    assertStringIncludes(result.stderr, "left out: 2 without email");
    assertStringIncludes(result.stdout, "left out: 2 without email");
    assertEquals(
      calledIds(f.vendor),
      [1, 2, 3, 4].map((i) => `p${i}+x@example.com`),
    );
    assertStringIncludes(f.vendor.calls[0]!.url, "?email=p1%2Bx%40example.com");
    const rows = await f.sql`
      select id::int, title, company, vendor_data->'data'->>'job_company_name' as stored
      from ${f.sql(f.table)} order by id`;
    assertEquals(rows[0], {
      id: 1,
      title: "Title of p1+x@example.com",
      company: "Acme",
      stored: "Acme",
    });
    assertEquals(rows.slice(4).map((r) => r.title), [null, null]);
    assertEquals(
      (await f.state()).length,
      4,
      "rows without an e-mail have no state row",
    );
  });
});

Deno.test("--map casts into typed columns in SQL; a value that does not fit names its column", async () => {
  const answers: Record<string, unknown> = {
    "1": {
      data: {
        score: "12.50",
        active: true,
        born: "1990-02-03",
        tags: ["a", 1],
        emails: [{ address: "one@x" }],
      },
    },
    "2": { data: { score: "not a number" } },
    "3": { data: {} },
    // As text: a JavaScript number could not even hold it.
    "4": '{"data":{"score":123456789012345678901234567890.5}}',
  };
  const script: Script = (id) => ({ body: answers[id] });
  await withFixture({ name: "map_types", count: 4, script }, async (f) => {
    await f.sql`alter table ${
      f.sql(f.table)
    } add column score numeric, add column active boolean,
      add column born date, add column tags jsonb, add column first_email varchar(40)`;
    const map =
      "score=data.score,active=data.active,born=data.born,tags=data.tags,first_email=data.emails.0.address";
    await f.runOk(["--map", map, "--data-column", "none"]);
    const rows = await f.sql`
      select id::int, score::text, active, born::text, tags, first_email, vendor_data
      from ${f.sql(f.table)} order by id`;
    assertEquals(rows[0], {
      id: 1,
      score: "12.50",
      active: true,
      born: "1990-02-03",
      tags: ["a", 1],
      first_email: "one@x",
      vendor_data: null,
    });
    assertEquals(rows[2]!.score, null, "a missing path writes null");
    assertEquals(
      rows[3]!.score,
      "123456789012345678901234567890.5",
      "nothing rounded on the way",
    );
    const state = await f.state();
    assertEquals(state.map((s) => s.status), ["ok", "invalid", "ok", "ok"]);
    assertStringIncludes(
      state[1]!.error!,
      "column score: invalid input syntax for type numeric",
    );
  });
});

Deno.test("--map refuses a column that is missing or of a type a value can't be cast to", async () => {
  await withFixture({ name: "map_check", count: 1 }, async (f) => {
    await f.sql`alter table ${f.sql(f.table)} add column spot point`;
    const result = await f.runExits(2, "--map nope=a,spot=b");
    assertStringIncludes(
      result.stderr,
      "REFRESH_MAP: column nope does not exist",
    );
    assertStringIncludes(result.stderr, "REFRESH_MAP: expected column spot");
    assertEquals(f.vendor.calls.length, 0);
  });
});

Deno.test("--where narrows the selection with the target table's columns only", async () => {
  await withFixture({ name: "where", count: 5 }, async (f) => {
    await f.sql`alter table ${f.sql(f.table)} add column status text`;
    await f.sql`update ${
      f.sql(f.table)
    } set status = case when id <= 3 then 'active' else 'gone' end`;
    // refresh_state has a status column too: the condition must not see it.
    await f.runOk(["--where", "status = 'active'"]);
    assertEquals(calledIds(f.vendor), ["1", "2", "3"]);
    const given = await f.runOk([
      "--where",
      "status = 'active'",
      "--ids",
      "1,4",
    ]);
    assertStringIncludes(given.stderr, "1 id(s) not in");
    assertStringIncludes(given.stderr, "excluded by REFRESH_WHERE");
    assertEquals(calledIds(f.vendor).slice(3), ["1"]);
    const bad = await f.runExits(2, ["--where", "status ="]);
    assertStringIncludes(bad.stderr, "REFRESH_WHERE: syntax error");
    assertEquals((await f.runs()).length, 2, "a bad condition touched nothing");
  });
});

Deno.test("--ids compares with the id column's type; an id of another type is a configuration error", async () => {
  await withFixture({ name: "ids_typed", count: 3 }, async (f) => {
    const result = await f.runExits(2, "--ids 1,abc,2");
    assertStringIncludes(
      result.stderr,
      `--ids: expected ids of the id column's type (bigint), found "abc"`,
    );
    assertEquals(f.vendor.calls.length, 0);
    const [found] = await f
      .sql`select to_regclass(${`${f.schema}.refresh_runs`}) as runs`;
    assertEquals(found!.runs, null, "the database was touched");
  });
});

Deno.test("two tables share one state schema without one's misses skipping the other's rows", async () => {
  const script: Script = (id, _, vendor) =>
    id === "2" && !vendor.calls.at(-1)!.url.includes("/contacts/")
      ? { status: 404 }
      : {};
  await withFixture({ name: "two_tables", count: 3, script }, async (f) => {
    const contacts = `${f.schema}.contacts`;
    await f.sql`create table ${f.sql(contacts)} (like ${
      f.sql(f.table)
    } including all)`;
    await f.sql`insert into ${f.sql(contacts)} select * from ${f.sql(f.table)}`;
    await f.runOk();
    const origin = new URL(f.vendor.urlTemplate).origin;
    await f.runOk([], {
      env: {
        REFRESH_TABLE: contacts,
        REFRESH_API_URL: `${origin}/contacts/people/{id}`,
      },
    });
    assertEquals(calledIds(f.vendor), ["1", "2", "3", "1", "2", "3"]);
    const rows = await f.sql`
      select target_table, target_id, status from ${
      f.sql(`${f.schema}.refresh_state`)
    }
      where target_id = '2' order by target_table`;
    assertEquals(rows.map((r) => [r.target_table, r.status]), [
      [contacts, "ok"],
      [f.table, "not_found"],
    ]);
  });
});

Deno.test("a state table of the earlier version is migrated in place by the first real run", async () => {
  await withFixture({ name: "migrate", count: 3 }, async (f) => {
    const state = f.sql(`${f.schema}.refresh_state`);
    await f.sql`create table ${state} (
      target_id text primary key, status text not null, attempts integer not null,
      http_status integer, error text, last_attempt_at timestamptz not null,
      last_success_at timestamptz, run_id bigint)`;
    await f
      .sql`insert into ${state} values ('2', 'not_found', 1, 404, 'HTTP 404', now(), null, null)`;
    const dry = await f.runOk("--dry-run");
    assertStringIncludes(dry.stdout, "first ids: 1, 3");
    await f.runOk();
    assertEquals(calledIds(f.vendor), ["1", "3"]);
    const rows = await f
      .sql`select target_table, target_id, status from ${state} order by target_id`;
    assertEquals(rows.map((r) => [r.target_table, r.target_id, r.status]), [
      [f.table, "1", "ok"],
      [f.table, "2", "not_found"],
      [f.table, "3", "ok"],
    ]);
    const [key] = await f.sql`
      select pg_get_constraintdef(oid) as def from pg_constraint
      where conrelid = to_regclass(${`${f.schema}.refresh_state`}) and contype = 'p'`;
    assertEquals(key!.def, "PRIMARY KEY (target_table, target_id)");
  });
});

/** refresh.ts copied alone into an empty folder, its VENDOR replaced by `vendor`. */
async function copyAlone(vendor?: string): Promise<string> {
  const dir = await Deno.makeTempDir();
  let source = await Deno.readTextFile(`${ROOT}refresh.ts`);
  if (vendor) {
    const start = source.indexOf("const VENDOR: Vendor = {");
    const end = source.indexOf("\n};\n", start) + 3;
    assert(start > 0 && end > start);
    source = source.slice(0, start) + vendor + source.slice(end);
  }
  await Deno.writeTextFile(`${dir}/refresh.ts`, source);
  return dir;
}

Deno.test("refresh.ts runs alone, copied into an empty folder", async () => {
  await withFixture({ name: "alone", count: 2 }, async (f) => {
    const dir = await copyAlone();
    try {
      await f.runOk([], { direct: true, cwd: dir });
      assertEquals((await f.state()).map((s) => s.status), ["ok", "ok"]);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
});

// ---------------------------------------------------------------------------
// Real vendors: fakes of their documented contracts (dev/vendors.ts).
// ---------------------------------------------------------------------------

/** Adds the columns the vendor examples use, and fills them per id. */
async function addContacts(
  f: Fixture,
  rows: Record<number, { email?: string; linkedin?: string; title?: string }>,
) {
  await f.sql`alter table ${f.sql(f.table)}
    add column email text, add column linkedin_url text,
    add column title text, add column company text`;
  for (const [id, r] of Object.entries(rows)) {
    await f.sql`update ${f.sql(f.table)} set email = ${r.email ?? null},
      linkedin_url = ${r.linkedin ?? null}, title = ${r.title ?? null}
      where id = ${id}`;
  }
}

function person(
  name: string,
  p: Partial<FakePerson> = {},
): FakePerson {
  return {
    full_name: name,
    job_title: `Title of ${name}`,
    job_company_name: "Acme",
    ...p,
  };
}

Deno.test("People Data Labs by settings alone: the whole balance, no 429 of ours, none failed", async () => {
  const pdl = await startPdl({
    apiKey: API_KEY,
    balance: 8,
    windowMs: 2000,
    perWindow: 4,
    spontaneous429: (call) => call === 2 || call === 6,
    people: [
      person("one", { email: "one@x" }),
      person("two", { linkedin_url: "https://www.linkedin.com/in/two" }),
      person("four", { email: "four@x", job_title: null }),
      person("five", { email: "five@x" }),
      person("seven", { linkedin_url: "linkedin.com/in/seven" }),
      ...["nine", "ten", "eleven", "twelve"].map((n) =>
        person(n, { email: `${n}@x` })
      ),
    ],
  });
  try {
    await withFixture({ name: "pdl", count: 12 }, async (f) => {
      await addContacts(f, {
        1: { email: "one@x" },
        2: { linkedin: "linkedin.com/in/two" },
        3: { email: "nobody@x" },
        4: { email: "four@x", linkedin: "x", title: "Entered by the CRM" },
        5: { email: "five@x" },
        7: { linkedin: "https://linkedin.com/in/seven/" },
        8: { email: "nobody-either@x" },
        9: { email: "nine@x" },
        10: { email: "ten@x" },
        11: { email: "eleven@x" },
        12: { email: "twelve@x" },
      });
      const started = performance.now();
      const result = await f.run([], {
        env: {
          REFRESH_API_URL:
            `${pdl.url}/v5/person/enrich?email={email?}&profile={linkedin_url?}`,
          REFRESH_API_KEY_HEADER: "X-Api-Key",
          REFRESH_CREDITS_SPENT_HEADER: "x-call-credits-spent",
          REFRESH_CREDITS_HEADER: "x-totallimit-remaining",
          REFRESH_MAP: "title?=data.job_title,company?=data.job_company_name",
        },
      });
      const elapsed = performance.now() - started;
      assertSucceeded(result);
      assertStringIncludes(
        result.stdout,
        "left out: 1 without email or linkedin_url",
      );
      const run = await f.firstRun({ status: "credits_exhausted" });
      assertEquals(pdl.balance, 0);
      assertEquals(Number(run.credits_spent), pdl.billed);
      assertEquals(pdl.billed, 8);
      assertEquals(pdl.earlyCalls, 0, "a call before a spent window's reset");
      assertEquals(pdl.limited429, 0, "a 429 we caused");
      assertEquals(pdl.spontaneous429, 2);
      const state = await f.state();
      assertEquals(state.filter((s) => s.status === "failed"), []);
      assertEquals(
        state.map((s) => [s.target_id, s.status]),
        [
          ["1", "ok"],
          ["2", "ok"],
          ["3", "not_found"],
          ["4", "ok"],
          ["5", "ok"],
          ["7", "ok"],
          ["8", "not_found"],
          ["9", "ok"],
          ["10", "ok"],
          ["11", "ok"],
        ],
      );
      assertEquals(pdl.calls[1]!.lookup, { profile: "linkedin.com/in/two" });
      const rows = await f.sql`select id::int, title, company from ${
        f.sql(f.table)
      } where id in (1, 4) order by id`;
      assertEquals(rows.map((r) => [r.id, r.title, r.company]), [
        [1, "Title of one", "Acme"],
        [4, "Entered by the CRM", "Acme"],
      ]);
      // 12 calls at 4 per 2s window: 3 windows; no more than twice that.
      const windows = Math.ceil(pdl.calls.length / 4);
      assertLessOrEqual(elapsed, 2 * windows * 2000 + 3000);
    });
  } finally {
    await pdl.close();
  }
});

Deno.test("the README's Apollo example: a vendor-section edit alone, credits_exhausted on its 422", async () => {
  const readme = await Deno.readTextFile(`${ROOT}README.md`);
  const vendor = /```ts\n(const VENDOR: Vendor = \{[^]*?\n\};)\n```/.exec(
    readme,
  )?.[1];
  assert(vendor, "no VENDOR block in the README");
  assertLessOrEqual(vendor.split("\n").length, 22, "about 20 lines at most");
  const apollo = await startApollo({
    apiKey: API_KEY,
    balance: 3,
    people: ["one", "three", "four", "five"].map((n) =>
      person(n, { email: `${n}@x` })
    ),
  });
  try {
    await withFixture({ name: "apollo", count: 6 }, async (f) => {
      await addContacts(f, {
        1: { email: "one@x" },
        2: { email: "nobody@x", title: "Kept" },
        3: { email: "three@x" },
        4: { email: "four@x", title: "Old" },
        5: { email: "five@x" },
      });
      const dir = await copyAlone(vendor);
      try {
        const result = await f.runOk([], {
          direct: true,
          cwd: dir,
          env: {
            REFRESH_API_URL: `${apollo.url}/api/v1/people/match`,
            REFRESH_API_KEY_HEADER: "x-api-key",
            REFRESH_MAP:
              "title?=person.title,company?=person.organization.name",
          },
        });
        assertStringIncludes(result.stdout, "left out: 1 without email");
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
      await f.firstRun({
        status: "credits_exhausted",
        reason: "Apollo: insufficient credits",
        credits_spent: apollo.billed,
      });
      assertEquals(apollo.billed, 3);
      assertEquals(
        apollo.calls.map((c) => [c.lookup.email, c.status]),
        [["one@x", 200], ["nobody@x", 200], ["three@x", 200], [
          "four@x",
          200,
        ], ["five@x", 422]],
      );
      assertEquals(
        (await f.state()).map((s) => [s.target_id, s.status]),
        [["1", "ok"], ["2", "not_found"], ["3", "ok"], ["4", "ok"]],
      );
      const rows = await f.sql`select id::int, title from ${
        f.sql(f.table)
      } where id in (2, 4) order by id`;
      assertEquals(rows.map((r) => r.title), ["Kept", "Title of four"]);
    });
  } finally {
    await apollo.close();
  }
});

/**
 * Answers target 1 with the headers `dialect` gives, then 200s; returns how
 * long after the instant `dialect` names as the earliest allowed the
 * second call came (negative: too early), and the run.
 */
async function waitAfter(
  dialect: (now: number) => [Record<string, string>, number, number?],
  args: Args = "--max-retry-wait 1m",
) {
  let notBefore = 0;
  let margin = -Infinity;
  let calls = 0;
  const script: Script = () => {
    const now = Date.now();
    if (++calls === 1) {
      const [headers, at, status] = dialect(now);
      notBefore = at;
      return { headers, status };
    }
    if (calls === 2) margin = now - notBefore;
    return {};
  };
  let run: Record<string, unknown> = {};
  await withFixture({ name: "dialect", count: 2, script }, async (f) => {
    await f.runOk(args);
    run = (await f.runs())[0]!;
  });
  return { margin, run };
}

Deno.test("every rate-limit dialect's spent window is waited out before the next call", async () => {
  const ms = 1200;
  const dialects: [
    string,
    (now: number) => [Record<string, string>, number, number?],
  ][] = [
    ["X- delta seconds", (now) => [{
      "x-ratelimit-remaining": "0",
      "x-ratelimit-reset": String(ms / 1000),
    }, now + ms]],
    ["X- epoch seconds", (now) => [{
      "x-ratelimit-remaining": "0",
      "x-ratelimit-reset": String((now + ms) / 1000),
    }, now + ms]],
    ["RateLimit- epoch milliseconds", (now) => [{
      "ratelimit-remaining": "0",
      "ratelimit-reset": String(now + ms),
    }, now + ms]],
    ["HTTP date", (now) => {
      const at = Math.ceil((now + ms) / 1000) * 1000;
      return [{
        "x-ratelimit-remaining": "0",
        "x-ratelimit-reset": new Date(at).toUTCString(),
      }, at];
    }],
    ["PDL: JSON per window, ISO reset", (now) => [{
      "x-ratelimit-remaining": "{'minute': 0, 'day': None}",
      "x-ratelimit-reset": new Date(now + ms).toISOString(),
    }, now + ms]],
    ["IETF RateLimit", (now) => [
      { "ratelimit": `"default";r=0;t=1` },
      now + 1000,
    ]],
    ["IETF RateLimit-Policy window", (now) => [{
      "ratelimit": `"burst";r=0`,
      "ratelimit-policy": `"burst";q=5;w=1`,
    }, now + 1000]],
    ["older IETF dictionary", (now) => [
      { "ratelimit": "limit=5, remaining=0, reset=1" },
      now + 1000,
    ]],
    ["a named window without a reset", (now) => [
      { "x-second-requests-left": "0" },
      now + 1000 - (now % 1000),
    ]],
    ["duplicated: the most restrictive", (now) => [{
      "x-ratelimit-remaining": "5, 0",
      "x-ratelimit-reset": "0.5, 1.2",
    }, now + ms]],
    ["a 429: the later of the reset and Retry-After", (now) => [
      { "retry-after": "1", "x-ratelimit-reset": "1.2" },
      now + ms,
      429,
    ]],
  ];
  for (const [name, dialect] of dialects) {
    const { margin } = await waitAfter(dialect);
    assertGreaterOrEqual(margin, 0, `${name}: ${margin}ms early`);
  }
});

Deno.test("x-minute-requests-left: 0 waits for the next minute, or stops when that is too long", async () => {
  const { run } = await waitAfter(
    () => [{ "x-minute-requests-left": "0" }, 0],
    "--max-retry-wait 1ms --backoff 1ms",
  );
  assertEquals(run.status, "rate_limited");
  const notBefore = (run.not_before as Date).getTime();
  assertLess(
    Math.abs(notBefore - Math.round(notBefore / 60_000) * 60_000),
    1000,
  );
});

Deno.test("a 429 that says when to come back is not counted against --max-attempts", async () => {
  const script: Script = (id, attempt) =>
    id === "1" && attempt <= 4
      ? { status: 429, headers: { "retry-after": "0" } }
      : {};
  await withFixture({ name: "stated_429", count: 2, script }, async (f) => {
    await f.runOk("--max-attempts 2");
    assertEquals(
      (await f.state()).map((s) => [s.status, s.attempts]),
      [["ok", 5], ["ok", 1]],
    );
  });
});

Deno.test("attempts run out on 429s that never say when: no state row, the run stops rate_limited", async () => {
  const script: Script = (id) => id === "2" ? { status: 429 } : {};
  await withFixture({ name: "silent_429", count: 3, script }, async (f) => {
    await f.runOk("--max-attempts 3 --backoff 1ms");
    const run = await f.firstRun({ status: "rate_limited" });
    assertStringIncludes(String(run.reason), "without saying when");
    assertEquals(Number(run.failed), 0);
    assertEquals((await f.state()).map((s) => s.target_id), ["1"]);
    assertEquals(f.vendor.callsFor("2"), 3);
    assertEquals(f.vendor.callsFor("3"), 0);
  });
});

Deno.test("--rate spaces request starts, and a 429 without a wait waits one window", async () => {
  const script: Script = (id, attempt) =>
    id === "2" && attempt === 1 ? { status: 429 } : {};
  await withFixture({ name: "rate", count: 4, script }, async (f) => {
    await f.runOk("--rate 4/1s --backoff 1ms");
    const starts = f.vendor.calls.map((c) => c.startedAt);
    const gaps = starts.slice(1).map((at, i) => at - starts[i]!);
    assertEquals(gaps.length, 4);
    // 1 → 2 (the 429), 2 → 2 again (one window), then the rate's spacing.
    for (
      const [i, least] of [[0, 250], [1, 1000], [2, 250], [3, 250]] as const
    ) {
      assertGreaterOrEqual(gaps[i]!, least! - 10, `gap ${i}: ${gaps[i]}ms`);
    }
  });
});

Deno.test("--credits-spent-header counts what each call cost, and --budget never goes over", async () => {
  const script: Script = () => ({
    headers: { "x-call-credits-spent": "3" },
  });
  await withFixture({ name: "spent", count: 5, script }, async (f) => {
    await f.runOk("--credits-spent-header x-call-credits-spent --budget 7");
    await f.firstRun({ status: "budget_exhausted", credits_spent: 6 });
    assertEquals(f.vendor.calls.length, 2);
  });
});

Deno.test("--reserve is never dipped into by a call costing more than one credit", async () => {
  let left = 20;
  const script: Script = () => {
    left -= 3;
    return {
      headers: {
        "x-call-credits-spent": "3",
        "x-credits-remaining": String(left),
      },
    };
  };
  await withFixture({ name: "reserve3", count: 8, script }, async (f) => {
    await f.runOk(
      "--credits-spent-header x-call-credits-spent --credits-header x-credits-remaining --reserve 6",
    );
    // At 8 left, a call of 3 would leave 5: below the reserve of 6.
    await f.firstRun({ status: "budget_exhausted", credits_remaining: 8 });
    assertEquals(f.vendor.calls.length, 4);
  });
});

Deno.test("a timed-out call is counted at its worst case", async () => {
  const script: Script = (_, attempt) => attempt === 1 ? { delayMs: 2000 } : {};
  await withFixture({ name: "timeout_cost", count: 1, script }, async (f) => {
    await f.runOk("--request-timeout 200ms");
    await f.firstRun({ requests: 2, credits_spent: 2 });
  });
});

Deno.test("--credits-exhausted-statuses: another status for out of credits", async () => {
  const script: Script = (id) =>
    id === "2" ? { status: 422, body: { error: "Insufficient credits" } } : {};
  await withFixture({ name: "exhausted_422", count: 3, script }, async (f) => {
    await f.runOk("--credits-exhausted-statuses 402,422");
    const run = await f.firstRun({ status: "credits_exhausted" });
    assertStringIncludes(
      String(run.reason),
      'HTTP 422: {"error":"Insufficient credits"}',
    );
    assertEquals((await f.state()).map((s) => s.target_id), ["1"]);
  });
});

Deno.test("an unreadable rate-limit header, and a configured header never sent, are warned about once", async () => {
  const script: Script = () => ({
    headers: { "x-ratelimit-remaining": "lots", "x-ratelimit-reset": "soon" },
  });
  await withFixture({ name: "unreadable", count: 4, script }, async (f) => {
    const result = await f.runOk(
      "--credits-spent-header x-cost --credits-header x-credits-left",
    );
    const lines = result.stderr.split("\n");
    for (
      const warning of [
        "x-ratelimit-remaining header cannot be read",
        "x-ratelimit-reset header cannot be read",
        "had the x-cost header",
        "had the x-credits-left header",
      ]
    ) {
      assertEquals(lines.filter((l) => l.includes(warning)).length, 1, warning);
    }
  });
});

Deno.test("no retry is made that could cross --budget at the largest cost seen", async () => {
  const script: Script = (_, attempt) =>
    attempt === 1
      ? { status: 503, headers: { "x-call-credits-spent": "3" } }
      : { headers: { "x-call-credits-spent": "3" } };
  await withFixture({ name: "retry_budget", count: 2, script }, async (f) => {
    await f.runOk("--credits-spent-header x-call-credits-spent --budget 5");
    await f.firstRun({ status: "budget_exhausted", credits_spent: 3 });
    assertEquals(f.vendor.calls.length, 1);
  });
});

Deno.test("--ignore-not-before clears a remembered not_before and calls at once", async () => {
  const script: Script = (id, attempt) =>
    id === "1" && attempt === 1
      ? { status: 429, headers: { "retry-after": "600" } }
      : {};
  await withFixture({ name: "ignore_nb", count: 2, script }, async (f) => {
    await f.runOk("--max-retry-wait 1s --backoff 1ms");
    await f.firstRun({ status: "rate_limited" });
    const result = await f.runOk("--ignore-not-before");
    assertStringIncludes(result.stderr, "--ignore-not-before: cleared");
    assertEquals((await f.runs()).map((r) => [r.status, r.not_before]), [
      ["rate_limited", null],
      ["completed", null],
    ]);
    assertEquals(f.vendor.calls.length, 3);
    // And the next run is not held back either.
    await f.runOk("--ids 1");
    assertEquals(f.vendor.calls.length, 4);
  });
});

Deno.test("a duplicated credits header counts its smallest value, warned about once", async () => {
  let left = 12;
  const script: Script = () => {
    left--;
    return { headers: { "x-credits-remaining": `${left + 5}, ${left}` } };
  };
  await withFixture({ name: "dup_credits", count: 6, script }, async (f) => {
    const result = await f.runOk(
      "--credits-header x-credits-remaining --reserve 8",
    );
    await f.firstRun({ status: "budget_exhausted", credits_remaining: 8 });
    assertEquals(
      result.stderr.split("\n").filter((l) =>
        l.includes("x-credits-remaining header more than once")
      ).length,
      1,
    );
  });
});

Deno.test("--reserve with no credits value in the first answers stops aborted, not blind", async () => {
  await withFixture({ name: "reserve_blind", count: 6 }, async (f) => {
    await f.runExits(1, "--credits-header x-credits-left --reserve 100");
    const run = await f.firstRun({ status: "aborted" });
    assertStringIncludes(
      String(run.reason),
      "stopped rather than spend blind",
    );
    assertEquals(f.vendor.calls.length, 3);
  });
});

Deno.test("a --where ending in a comment is one expression, as checked", async () => {
  await withFixture({ name: "where_comment", count: 4 }, async (f) => {
    await f.runOk(["--where", "id > 2 -- only the newer ones"]);
    assertEquals((await f.state()).map((s) => s.target_id), ["3", "4"]);
  });
});

Deno.test("--dry-run runs its statements read-only: a volatile --where changes nothing", async () => {
  await withFixture({ name: "dry_ro", count: 3 }, async (f) => {
    const log = `${f.schema}.touched`;
    const fn = `${f.schema}.touch`;
    await f.sql`create table ${f.sql(log)} (at timestamptz)`;
    await f.sql.unsafe(`create function ${fn}() returns boolean language sql
      volatile as 'insert into ${log} values (now()); select true'`);
    const result = await f.run(["--dry-run", "--where", `${fn}()`]);
    assert(result.code !== 0, result.stdout);
    assertStringIncludes(result.stderr, "read-only transaction");
    const [row] = await f.sql`select count(*)::int as n from ${f.sql(log)}`;
    assertEquals(row!.n, 0);
    assertEquals(f.vendor.calls.length, 0);
  });
});

Deno.test("a database not up yet at start is tried again within --connect-timeout", async () => {
  await withFixture({ name: "db_late", count: 2 }, async (f) => {
    await viaProxy(f, async (proxy, env) => {
      proxy.cut();
      const child = await f.spawn("--connect-timeout 20s", { env });
      await delay(2500);
      proxy.restore();
      await exited(child);
      assertEquals((await f.state()).map((s) => s.status), ["ok", "ok"]);
    });
  });
});

Deno.test({
  name: "SIGTERM during the final write: the exit code is what the row says",
  // A row lock held by a second session: PGlite has one.
  ...POSTGRES_ONLY,
}, async () => {
  const script: Script = () => ({ delayMs: 800 });
  await withFixture({ name: "final_sigterm", count: 1, script }, async (f) => {
    const child = await f.spawn();
    await waitFor("the call", () => f.vendor.calls.length >= 1);
    const runs = f.sql(`${f.schema}.refresh_runs`);
    const other = f.db.client();
    const tx = await other.reserve();
    try {
      await tx`begin`;
      await tx`select 1 from ${runs} where status = 'running' for update`;
      for (let i = 0; i < 100 && (await f.state()).length < 1; i++) {
        await delay(50);
      }
      await delay(300);
      child.kill("SIGTERM");
      await delay(300);
      await tx`commit`;
    } finally {
      tx.release();
      await other.end();
    }
    const result = await outputOf(child);
    const [run] = await f.runs();
    assertEquals(
      [run!.status, result.code],
      run!.status === "interrupted" ? ["interrupted", 143] : ["completed", 0],
      result.stderr,
    );
  });
});

Deno.test({
  name:
    "SIGHUP is answered like SIGTERM: the answer committed, interrupted, exit 129",
}, async () => {
  const script: Script = (id) => (id === "2" ? { delayMs: 800 } : {});
  await withFixture({ name: "sighup", count: 4, script }, async (f) => {
    const child = await f.spawn([], { direct: true });
    await waitFor("the slow request", () => f.vendor.callsFor("2") === 1);
    child.kill("SIGHUP");
    await exited(child, 129);
    await f.firstRun({ status: "interrupted" });
    assertEquals((await f.state()).map((s) => s.status), ["ok", "ok"]);
  });
});

Deno.test("the same signal twice within moments is one: the answer in flight is kept", async () => {
  const script: Script = (id) => (id === "2" ? { delayMs: 1000 } : {});
  await withFixture({ name: "same_signal", count: 4, script }, async (f) => {
    const child = await f.spawn([], { direct: true });
    await waitFor("the slow request", () => f.vendor.callsFor("2") === 1);
    child.kill("SIGTERM");
    await delay(50);
    child.kill("SIGTERM");
    await exited(child, 143);
    assertEquals((await f.state()).map((s) => s.status), ["ok", "ok"]);
  });
});

Deno.test("a secret a database error quotes outside any write is not printed", async () => {
  await withFixture({ name: "where_secret", count: 2 }, async (f) => {
    const result = await f.runExits(2, ["--where", `id = '${API_KEY}'::int`]);
    assertStringIncludes(result.stderr, "REFRESH_WHERE: invalid input syntax");
    assertNoFragment(result.stderr + result.stdout, API_KEY, "output");
  });
});

Deno.test("a lost lease aborts a long request at once", async () => {
  const script: Script = (id) => (id === "2" ? { delayMs: 20_000 } : {});
  await withFixture({ name: "lease_long", count: 3, script }, async (f) => {
    const child = await f.spawn();
    await waitFor("the long request", () => f.vendor.callsFor("2") === 1);
    await f.sql`update ${
      f.sql(`${f.schema}.refresh_runs`)
    } set status = 'crashed'`;
    const taken = Date.now();
    const result = await exited(child, 1);
    assertStringIncludes(result.stderr, "lost the lease");
    assertLess(Date.now() - taken, 5_000);
  });
});

Deno.test("a row deleted while its request is in flight is reported, not recreated", async () => {
  const script: Script = (id) => (id === "2" ? { delayMs: 500 } : {});
  await withFixture({ name: "deleted", count: 3, script }, async (f) => {
    const child = await f.spawn();
    await waitFor("the slow request", () => f.vendor.callsFor("2") === 1);
    await f.sql`delete from ${f.sql(f.table)} where id = 2`;
    const result = await exited(child);
    assertStringIncludes(
      result.stderr,
      "target 2: row vanished before its refresh was written",
    );
    const rows = await f.sql`select id::int from ${f.sql(f.table)} order by id`;
    assertEquals(rows.map((r) => r.id), [1, 3]);
  });
});

Deno.test("403 aborts at once, like 401", async () => {
  const script: Script = () => ({ status: 403 });
  await withFixture({ name: "403", count: 3, script }, async (f) => {
    const result = await f.runExits(1);
    assertEquals(f.vendor.calls.length, 1);
    await f.firstRun({ status: "aborted" });
    assertStringIncludes(result.stderr, "refused the API key (HTTP 403)");
  });
});

Deno.test("408 is retried", async () => {
  const script: Script = (id, attempt) =>
    id === "1" && attempt === 1 ? { status: 408 } : {};
  await withFixture({ name: "408", count: 2, script }, async (f) => {
    await f.runOk();
    assertEquals(
      (await f.state()).map((s) => [s.status, s.attempts]),
      [["ok", 2], ["ok", 1]],
    );
  });
});

Deno.test("--min-interval spaces request starts", async () => {
  await withFixture({ name: "min_interval", count: 4 }, async (f) => {
    await f.runOk("--min-interval 250ms");
    const starts = f.vendor.calls.map((c) => c.startedAt);
    for (let i = 1; i < starts.length; i++) {
      assertGreaterOrEqual(starts[i]! - starts[i - 1]!, 240);
    }
  });
});

Deno.test("a silent database (open, answering nothing) ends the run within --db-retry", async () => {
  await withFixture(
    { name: "db_silent", count: 30, latencyMs: 30 },
    async (f) => {
      await viaProxy(f, async (proxy, env) => {
        const child = await f.spawn("--db-retry 3s", { env });
        await waitFor("five calls", () => f.vendor.calls.length >= 5);
        proxy.hold();
        const held = Date.now();
        await exited(child, 1);
        assertLess(Date.now() - held, 15_000);
        proxy.restore();
      });
    },
  );
});

for (const twice of [false, true]) {
  Deno.test(`the database cut, then ${twice ? "two signals" : "SIGTERM"}: the run ends ${twice ? "at once" : "within the grace"}, exit 143`, async () => {
    await withFixture({
      name: twice ? "cut_twice" : "cut_sigterm",
      count: 30,
      latencyMs: 30,
    }, async (f) => {
      await viaProxy(f, async (proxy, env) => {
        const grace = twice ? "20s" : "1s";
        const child = await f.spawn(`--db-retry 50s --grace ${grace}`, {
          env,
          direct: true,
        });
        await waitFor("five calls", () => f.vendor.calls.length >= 5);
        proxy.cut();
        await delay(500);
        const sent = Date.now();
        child.kill("SIGTERM");
        if (twice) {
          await delay(700);
          child.kill("SIGTERM");
        }
        await exited(child, 143);
        assertLess(Date.now() - sent, twice ? 4_000 : 6_000);
        proxy.restore();
      });
    });
  });
}

Deno.test("an id too long to be a state key is left out before any request, and reported", async () => {
  await withFixture(
    { name: "long_id", count: 2, idType: "text" },
    async (f) => {
      const long = Array.from(
        { length: 2500 },
        (_, i) => "abcdefghijklmnopqrstuvwxyz0123456789"[(i * 7 + i * i) % 36],
      ).join("");
      await f.sql`insert into ${
        f.sql(f.table)
      } (id, name) values (${long}, 'x')`;
      const result = await f.runOk();
      assertStringIncludes(
        result.stdout,
        "left out: 1 without an id of at most 2000 bytes",
      );
      assertEquals(f.vendor.calls.length, 2);
      await f.firstRun({ status: "completed" });
    },
  );
});

Deno.test({
  name:
    "a state row the database refuses (class 54) is that target's outcome; the run goes on",
  ...POSTGRES_ONLY,
}, async () => {
  await withFixture({ name: "state_refused", count: 3 }, async (f) => {
    // The first run creates the state tables; the trigger then refuses id 2.
    await f.runOk("--ids 1");
    const state = `${f.schema}.refresh_state`;
    await f.sql.unsafe(`
      create function ${f.schema}.refuse() returns trigger language plpgsql as $$
      begin
        if new.target_id = '2' then
          raise exception 'index row requires 10272 bytes' using errcode = '54000';
        end if;
        return new;
      end $$;
      create trigger refuse before insert or update on ${state}
        for each row execute function ${f.schema}.refuse();`);
    const result = await f.runOk("--stale-after 0");
    assertStringIncludes(result.stderr, "its state row was refused too");
    const [, run] = await f.runs();
    assertEquals(run!.status, "completed");
    assertEquals(Number(run!.invalid), 1);
    assertEquals(f.vendor.calls.length, 4);
  });
});

Deno.test("a column renamed mid-run stops it aborted, at most two answers unstored", async () => {
  const script: Script = (id) => (id === "5" ? { delayMs: 400 } : {});
  await withFixture({ name: "renamed", count: 20, script }, async (f) => {
    const child = await f.spawn();
    await waitFor("the slow request", () => f.vendor.callsFor("5") === 1);
    await f.sql`alter table ${f.sql(f.table)}
      rename column vendor_data to vendor_data_old`;
    await exited(child, 1);
    const run = await f.firstRun({ status: "aborted" });
    assertStringIncludes(String(run.error), "vendor_data");
    const stored = (await f.state()).length;
    assertLessOrEqual(f.vendor.calls.length - stored, 2);
  });
});

Deno.test({
  name: "a signal ends a long selection at once",
  // PGlite cannot cancel a running statement, and has one session.
  ...POSTGRES_ONLY,
}, async () => {
  await withFixture({ name: "slow_select", count: 1 }, async (f) => {
    const child = await f.spawn(["--where", "pg_sleep(30) is not null"], {
      direct: true,
    });
    await delay(1500);
    const sent = Date.now();
    child.kill("SIGTERM");
    await exited(child, 143);
    assertLess(Date.now() - sent, 3_000);
    await f.firstRun({ status: "interrupted" });
  });
});

// ---------------------------------------------------------------------------
// A real company: a least-privileged role, readers of the state tables, a
// pooler in transaction mode.
// ---------------------------------------------------------------------------

const ROLE_PASSWORD = "r0le-Pa55word-4e1c";

/** The README's grants, for `f`'s table and schema and `role`. */
async function readmeGrants(f: Fixture, role: string): Promise<string[]> {
  const readme = await Deno.readTextFile(`${ROOT}README.md`);
  const block = /<!-- grants: .*? -->\s*```sql\n([\s\S]*?)```/.exec(readme);
  assert(block, "no grants block in README.md");
  return block[1]!.replaceAll("crm.people", f.table)
    .replaceAll("crm, refresh", f.schema)
    .replaceAll("refresh.", `${f.schema}.`)
    .replaceAll("refresh_job", role)
    .replace("'…'", `'${ROLE_PASSWORD}'`)
    .split(/;\s*\n/).filter((s) => s.trim());
}

/** The README's example: lookups, --where and --map over granted columns. */
async function withGrantedPeople(
  body: (f: Fixture, env: Record<string, string>) => Promise<void>,
): Promise<void> {
  await withFixture({ name: "grants", count: 4 }, async (f) => {
    await f.sql`alter table ${f.sql(f.table)}
      add column email text, add column country text default 'DE',
      add column title text default 'old title', add column employer text,
      add column notes text`;
    await f.sql`update ${
      f.sql(f.table)
    } set email = 'p' || id || '@example.com',
      country = case when id = 4 then 'FR' else 'DE' end`;
    await body(f, {
      REFRESH_API_URL: `${f.vendor.urlTemplate}?email={email}`,
      REFRESH_WHERE: "country = 'DE'",
      REFRESH_MAP: "employer=employer,title?=title",
    });
  });
}

/** Runs `body` with the URL of a login role of its own, granted `grants`. */
async function asRole(
  f: Fixture,
  grants: (role: string) => Promise<string[]> | string[],
  body: (url: string) => Promise<void>,
): Promise<void> {
  const role = `r_${f.schema}`;
  await f.sql.unsafe(`create role ${role} login password '${ROLE_PASSWORD}'`);
  try {
    for (const grant of await grants(role)) {
      if (!/^create role/.test(grant)) await f.sql.unsafe(grant);
    }
    const url = new URL(f.db.url);
    url.username = role;
    url.password = ROLE_PASSWORD;
    await body(url.href);
  } finally {
    await f.sql.unsafe(`drop owned by ${role}`);
    await f.sql.unsafe(`drop role ${role}`);
  }
}

Deno.test({
  name:
    "a role with exactly the README's grants runs the whole job, --where and --map included",
  ...POSTGRES_ONLY,
}, async () => {
  await withGrantedPeople(async (f, env) => {
    await f.runOk("--ids 1", { env });
    await asRole(f, (role) => readmeGrants(f, role), async (url) => {
      await f.runOk([], { env: { ...env, DATABASE_URL: url } });
    });
    assertEquals(calledIds(f.vendor), ["1", "2", "3"]);
    const rows = await f.sql`select id::int, employer, title
      from ${f.sql(f.table)} where vendor_data is not null order by id`;
    assertEquals(rows.map((r) => [r.id, r.employer, r.title]), [
      [1, "Example Corp", "old title"],
      [2, "Example Corp", "old title"],
      [3, "Example Corp", "old title"],
    ]);
    assertEquals((await f.runs()).map((r) => r.status), [
      "completed",
      "completed",
    ]);
  });
});

Deno.test({
  name:
    "REFRESH_WHERE reading a column the role may not read: exit 2 naming it, before the lease",
  ...POSTGRES_ONLY,
}, async () => {
  await withGrantedPeople(async (f, env) => {
    await f.runOk("--ids 1", { env });
    await asRole(f, (role) => readmeGrants(f, role), async (url) => {
      const result = await f.runExits(2, [], {
        env: { ...env, DATABASE_URL: url, REFRESH_WHERE: "notes is null" },
      });
      assertStringIncludes(result.stderr, "REFRESH_WHERE: permission denied");
    });
    assertEquals((await f.runs()).length, 1);
  });
});

Deno.test({
  name:
    "a lookup column the role may not read: exit 2 naming REFRESH_TABLE and the columns",
  ...POSTGRES_ONLY,
}, async () => {
  await withGrantedPeople(async (f, env) => {
    await f.runOk("--ids 1", { env });
    const without = async (role: string) =>
      (await readmeGrants(f, role)).map((g) => g.replace("email, ", ""));
    await asRole(f, without, async (url) => {
      const result = await f.runExits(2, [], {
        env: { ...env, DATABASE_URL: url },
      });
      assertStringIncludes(
        result.stderr,
        "REFRESH_TABLE: cannot read the columns a run reads (id, vendor_refreshed_at, email)",
      );
    });
    assertEquals((await f.runs()).length, 1);
  });
});

Deno.test({
  name:
    "state tables missing and a role that may not create them: exit 2 naming REFRESH_STATE_SCHEMA, with the statements",
  ...POSTGRES_ONLY,
}, async () => {
  await withGrantedPeople(async (f, env) => {
    const grants = async (role: string) =>
      (await readmeGrants(f, role)).filter((g) =>
        !/refresh_(runs|state)/.test(g)
      );
    await asRole(f, grants, async (url) => {
      const result = await f.runExits(2, [], {
        env: { ...env, DATABASE_URL: url },
      });
      assertStringIncludes(
        result.stderr,
        `REFRESH_STATE_SCHEMA: the state tables ${f.schema}.refresh_runs and ${f.schema}.refresh_state are missing, and this role may not create them`,
      );
      assertStringIncludes(
        result.stderr,
        `create table if not exists "${f.schema}"."refresh_runs" (`,
      );
    });
    assertEquals(f.vendor.calls.length, 0);
  });
});

/** A report's open transaction that has read `refresh_runs`. */
async function holdRuns(f: Fixture) {
  const client = f.db.client();
  const reader = await client.reserve();
  await reader`begin`;
  await reader`select count(*) from ${reader(`${f.schema}.refresh_runs`)}`;
  return async () => {
    await reader`rollback`;
    reader.release();
    await client.end();
  };
}

Deno.test({
  name:
    "with current state tables a reader holding refresh_runs open does not delay a run: no DDL",
  ...POSTGRES_ONLY,
}, async () => {
  await withFixture({ name: "reader", count: 3 }, async (f) => {
    const first = await f.runOk("--ids 1");
    assertStringIncludes(first.stderr, "created the state tables");
    const release = await holdRuns(f);
    try {
      const result = await f.runOk();
      assert(!/created|migrated/.test(result.stderr), result.stderr);
    } finally {
      await release();
    }
    assertEquals(calledIds(f.vendor), ["1", "2", "3"]);
  });
});

Deno.test({
  name:
    "state tables of an earlier version: migrated once no reader holds them, with a short lock wait",
  ...POSTGRES_ONLY,
}, async () => {
  await withFixture({ name: "old_tables", count: 2 }, async (f) => {
    await f.runOk("--ids 1");
    const runs = f.sql(`${f.schema}.refresh_runs`);
    await f.sql`comment on table ${runs} is 'refresh state tables v1'`;
    const release = await holdRuns(f);
    let blocked: RunResult;
    const started = Date.now();
    try {
      blocked = await f.run();
    } finally {
      await release();
    }
    assertSucceeded(blocked, 1);
    // The migration's own lock wait, not the inspection's minute.
    assertLess(Date.now() - started, 30_000);
    assertStringIncludes(
      blocked.stderr,
      "could not take its locks within 5s (a session is reading or writing them); nothing was changed",
    );
    const result = await f.runOk();
    assertStringIncludes(result.stderr, "migrated the state tables");
    assertEquals(calledIds(f.vendor), ["1", "2"]);
  });
});

Deno.test({
  name:
    "the job runs through PgBouncer in transaction mode with the same DATABASE_URL",
  ...POSTGRES_ONLY,
}, async () => {
  await withFixture({ name: "pgbouncer", count: 5 }, async (f) => {
    const bouncer = await startPgBouncer(f.db.url);
    try {
      const env = { DATABASE_URL: bouncer.url };
      const first = await f.runOk("--ids 1,2", { env });
      assertStringIncludes(
        first.stderr,
        "the server refused start-up parameters",
      );
      await f.runOk([], { env });
    } finally {
      await bouncer.close();
    }
    assertEquals(calledIds(f.vendor), ["1", "2", "3", "4", "5"]);
    assertEquals((await f.runs()).map((r) => r.status), [
      "completed",
      "completed",
    ]);
  });
});

Deno.test({
  name:
    "through PgBouncer the lock timeout still holds: set in each transaction",
  ...POSTGRES_ONLY,
}, async () => {
  await withFixture({ name: "pgbouncer_lock", count: 1 }, async (f) => {
    const bouncer = await startPgBouncer(f.db.url);
    try {
      let child: Deno.ChildProcess | undefined;
      await whileLocked(f, async () => {
        child = await f.spawn("--db-retry 8s", {
          env: { DATABASE_URL: bouncer.url },
        });
        // Past the writes' 5 s lock timeout, within --db-retry.
        await delay(6_500);
      });
      const result = await exited(child!);
      assertStringIncludes(result.stderr, "lock timeout");
    } finally {
      await bouncer.close();
    }
  });
});
