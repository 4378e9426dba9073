/**
 * What `OTEL_DENO=true` exports: the job runs as a child process against a
 * real database, the fake vendor and a loopback OTLP/HTTP (JSON) sink; the
 * test reads what the sink received.
 *
 * @module
 */

import { assert, assertEquals, assertStringIncludes } from "@std/assert";
import { main } from "../refresh.ts";
import { startFakeVendor } from "./fake_vendor.ts";
import {
  childEnv,
  createPeople,
  ROOT,
  testDatabaseForModule,
} from "./test_db.ts";

const database = testDatabaseForModule();
const API_KEY = "sk_live_OTELKEY_5e4d3c2b1a";
const PASSWORD = "Otel-Sink-Password-4242";
const emailOf = (id: string) => `person${id}.otel@example.org`;

type Attributes = Record<string, unknown>;
interface SpanSeen {
  scope: string;
  name: string;
  spanId: string;
  parentSpanId: string;
  attributes: Attributes;
}
interface LogSeen {
  severity: string;
  body: string;
}

/** An OTLP/HTTP collector on 127.0.0.1 that keeps every JSON body. */
function startSink() {
  const bodies: { path: string; body: unknown }[] = [];
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    async (request) => {
      const path = new URL(request.url).pathname;
      bodies.push({ path, body: await request.json() });
      return Response.json({});
    },
  );
  return {
    endpoint: `http://127.0.0.1:${server.addr.port}`,
    bodies,
    close: () => server.shutdown(),
  };
}

/** OTLP's `[{ key, value: { stringValue } }]` as `{ key: value }`. */
function attributesOf(list: { key: string; value: Attributes }[]): Attributes {
  return Object.fromEntries(
    list.map(({ key, value }) => [key, Object.values(value)[0]]),
  );
}

// deno-lint-ignore no-explicit-any
type Json = any;

function spansOf(bodies: { path: string; body: Json }[]): SpanSeen[] {
  return bodies.filter((b) => b.path === "/v1/traces").flatMap((b) =>
    b.body.resourceSpans.flatMap((r: Json) =>
      r.scopeSpans.flatMap((s: Json) =>
        s.spans.map((span: Json) => ({
          scope: s.scope.name,
          name: span.name,
          spanId: span.spanId,
          parentSpanId: span.parentSpanId,
          attributes: attributesOf(span.attributes),
        }))
      )
    )
  );
}

function logsOf(bodies: { path: string; body: Json }[]): LogSeen[] {
  return bodies.filter((b) => b.path === "/v1/logs").flatMap((b) =>
    b.body.resourceLogs.flatMap((r: Json) =>
      r.scopeLogs.flatMap((s: Json) =>
        s.logRecords.map((l: Json) => ({
          severity: l.severityText,
          body: l.body.stringValue,
        }))
      )
    )
  );
}

/** Everything received, less the `url.*` attributes of Deno's own spans. */
function withoutRuntimeUrls(bodies: { path: string; body: Json }[]): string {
  return JSON.stringify(bodies, function (key, value) {
    if (key === "spans" && this.scope?.name === "deno") {
      return value.map((span: Json) => ({
        ...span,
        attributes: span.attributes.filter((a: Json) =>
          !a.key.startsWith("url.")
        ),
      }));
    }
    return value;
  });
}

/** A secret or lookup value, as it is, percent-encoded and form-encoded. */
function formsOf(text: string): string[] {
  return [
    ...new Set([
      text,
      encodeURIComponent(text),
      new URLSearchParams({ x: text }).toString().slice(2),
    ]),
  ];
}

/** A people table with e-mails, its database URL with PASSWORD, and cleanup. */
async function fixture(name: string) {
  const db = await database();
  const sql = db.client();
  const schema = `otel_${name}_${crypto.randomUUID().slice(0, 8)}`;
  const role = `${schema}_role`;
  const url = new URL(db.url);
  try {
    await createPeople(sql, schema, { count: 3 });
    await sql`alter table ${sql(`${schema}.people`)} add column email text`;
    await sql`update ${sql(`${schema}.people`)}
      set email = 'person' || id || '.otel@example.org'`;
    // PGlite takes any password; a real server, this role's.
    if (db.kind === "postgres") {
      await sql.unsafe(`create role ${role} login password '${PASSWORD}';
        grant all on schema ${schema} to ${role};
        grant all on all tables in schema ${schema} to ${role}`);
      url.username = role;
    }
    url.password = PASSWORD;
  } catch (error) {
    await sql.end();
    throw error;
  }
  return {
    databaseUrl: url.href,
    schema,
    close: async () => {
      try {
        await sql`drop schema ${sql(schema)} cascade`;
        if (db.kind === "postgres") {
          await sql.unsafe(`drop owned by ${role}; drop role ${role}`);
        }
      } finally {
        await sql.end();
      }
    },
  };
}

Deno.test("with OTEL_DENO=true, our spans and logs export no secret and no lookup", async () => {
  const f = await fixture("sink");
  const sink = startSink();
  const vendor = await startFakeVendor({
    // 3: a vendor message that quotes the e-mail it was asked about.
    script: (id) =>
      id === "2"
        ? { status: 404 }
        : id === "3"
        ? { status: 422, body: { error: `cannot enrich ${emailOf(id)}` } }
        : {},
  });
  try {
    const child = await new Deno.Command(Deno.execPath(), {
      args: ["task", "--quiet", "refresh", "--backoff", "10ms"],
      cwd: ROOT,
      clearEnv: true,
      env: childEnv({
        DATABASE_URL: f.databaseUrl,
        REFRESH_API_URL:
          `${vendor.urlTemplate}?email={email}&api_key=${API_KEY}`,
        REFRESH_API_KEY: API_KEY,
        REFRESH_TABLE: `${f.schema}.people`,
        REFRESH_STATE_SCHEMA: f.schema,
        OTEL_DENO: "true",
        OTEL_EXPORTER_OTLP_ENDPOINT: sink.endpoint,
        OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
      }),
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(child.stderr);
    assertEquals(child.code, 0, stderr);
    assertEquals(vendor.calls.length, 3);

    const spans = spansOf(sink.bodies);
    const runs = spans.filter((s) => s.name === "refresh.run");
    assertEquals(runs.length, 1, JSON.stringify(spans.map((s) => s.name)));
    const run = runs[0]!;
    assertEquals(run.scope, "refresh");
    const counters = Object.fromEntries(
      ["status", "succeeded", "not_found", "failed", "requests"].map((k) => [
        k,
        run.attributes[`refresh.run.${k}`],
      ]),
    );
    assertEquals(counters, {
      status: "completed",
      succeeded: 1,
      not_found: 1,
      failed: 1,
      requests: 3,
    });
    assertEquals(typeof run.attributes["refresh.run.id"], "number");
    const targets = spans.filter((s) => s.name === "refresh.target");
    const target = (t: SpanSeen) =>
      ["id", "status", "attempts", "http_status"].map((k) =>
        t.attributes[`refresh.target.${k}`]
      ).concat(t.parentSpanId === run.spanId ? "child of the run" : "orphan");
    assertEquals(targets.map(target).sort(), [
      ["1", "ok", 1, 200, "child of the run"],
      ["2", "not_found", 1, 404, "child of the run"],
      ["3", "failed", 1, 422, "child of the run"],
    ]);
    const credits = targets.reduce(
      (sum, t) => sum + (t.attributes["refresh.target.credits"] as number),
      0,
    );
    assertEquals(run.attributes["refresh.run.credits_spent"], credits);
    assert(credits >= 1);

    // Deno's own fetch spans, children of the targets', carry the URL in
    // clear: the reason for the warning, and what the README says.
    const fetches = spans.filter((s) => s.scope === "deno");
    assertEquals(fetches.length, 3);
    for (const span of fetches) {
      assert(targets.some((t) => t.spanId === span.parentSpanId));
      assertStringIncludes(String(span.attributes["url.full"]), API_KEY);
    }

    const logs = logsOf(sink.bodies);
    const severities = (part: string) =>
      logs.filter((l) => l.body.includes(part)).map((l) => l.severity);
    assertEquals(severities("OTEL_DENO=true: Deno's own spans"), ["WARN"]);
    assertEquals(severities("target 3: failed"), ["WARN"]);
    // Info lines stay on standard error, unexported; none is an ERROR.
    assertStringIncludes(stderr, "refresh: database ");
    assertEquals(severities("refresh: database "), []);
    assertEquals(logs.filter((l) => l.severity === "ERROR"), []);

    const exported = withoutRuntimeUrls(sink.bodies);
    for (
      const [what, text] of [
        ["the API key", API_KEY],
        ["the database password", PASSWORD],
        ...["1", "2", "3"].map((id) => [`the e-mail of ${id}`, emailOf(id)]),
      ]
    ) {
      for (const form of formsOf(text!)) {
        assert(!exported.includes(form), `${what} was exported: ${form}`);
      }
    }
  } finally {
    await vendor.close();
    await sink.close();
    await f.close();
  }
});

Deno.test("OTEL_DENO=true warns at start when the API URL carries lookups or the key", async () => {
  const f = await fixture("warn");
  const vendor = await startFakeVendor();
  const warnings = async (env: Record<string, string>) => {
    const lines: string[] = [];
    const all: Record<string, string> = {
      DATABASE_URL: f.databaseUrl,
      REFRESH_API_KEY: API_KEY,
      REFRESH_TABLE: `${f.schema}.people`,
      REFRESH_STATE_SCHEMA: f.schema,
      ...env,
    };
    const code = await main({
      args: ["--limit", "1"],
      env: (name) => all[name],
      stderr: (line) => lines.push(line),
      stdout: () => {},
      signal: new AbortController().signal,
    });
    // The runtime's OpenTelemetry is off here: spans are no-ops.
    assertEquals(code, 0, lines.join("\n"));
    // An injected writer receives the info lines too.
    assert(lines.some((l) => l.startsWith("refresh: database ")));
    assert(!lines.join("\n").includes(API_KEY));
    return lines.filter((l) => l.includes("OTEL_DENO"));
  };
  try {
    const query = `${vendor.urlTemplate}?email={email}`;
    assertEquals(await warnings({ REFRESH_API_URL: query }), []);
    assertEquals(
      await warnings({
        REFRESH_API_URL: vendor.urlTemplate,
        OTEL_DENO: "true",
      }),
      [],
    );
    const lookup = await warnings({
      REFRESH_API_URL: query,
      OTEL_DENO: "true",
    });
    assertEquals(lookup.length, 1);
    assertStringIncludes(lookup[0]!, "refresh: warning: OTEL_DENO=true");
    assertStringIncludes(lookup[0]!, "url.full");
    assertStringIncludes(lookup[0]!, "the values of email in clear");
    const key = await warnings({
      REFRESH_API_URL: `${vendor.urlTemplate}?api_key=${API_KEY}`,
      OTEL_DENO: "TRUE",
    });
    assertEquals(key.length, 1);
    assertStringIncludes(key[0]!, "the API key (or another secret) in clear");
  } finally {
    await vendor.close();
    await f.close();
  }
});
