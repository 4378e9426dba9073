/**
 * A PostgreSQL server for tests, the demo and the benchmark: the real one
 * named by an environment variable, or else an embedded PGlite served on a
 * loopback port by `@electric-sql/pglite-socket` in a child process
 * (`dev/pglite_server.ts`), so that a machine with only Deno can run
 * everything, and the process using it holds no database sockets but its
 * own clients'.
 *
 * A test module gets one database for all its tests from
 * {@linkcode testDatabaseForModule}; the demo and the benchmark start their
 * own with {@linkcode startTestDatabase}.
 *
 * @module
 */

import postgres from "postgres";

/** A database to run against. */
export interface TestDatabase {
  /** Connection URL for `DATABASE_URL`. */
  url: string;
  /** `postgres` or `pglite`. */
  kind: "postgres" | "pglite";
  /** Opens a client (one connection); end it in the test that opened it. */
  client(): postgres.Sql;
  /** Stops the embedded server (a no-op for a real server). */
  close(): Promise<void>;
}

/** The repository root, a path ending in `/` (for every test and dev script). */
export const ROOT = new URL("..", import.meta.url).pathname;

/** The tasks of deno.json (JSONC: comments outside strings are dropped). */
export async function denoTasks(): Promise<Record<string, string>> {
  const text = await Deno.readTextFile(`${ROOT}deno.json`);
  const json = text.replaceAll(
    /("(?:[^"\\]|\\.)*")|\/\/[^\n]*|\/\*[\s\S]*?\*\//g,
    (_, string?: string) => string ?? "",
  );
  return JSON.parse(json).tasks;
}

/** The PGlite server's script. */
const PGLITE_SERVER = new URL("./pglite_server.ts", import.meta.url).pathname;

/** The line in which the PGlite server announces its port. */
const LISTENING = /^listening on 127\.0\.0\.1:(\d+)$/m;

/**
 * Uses the server at `env[urlVariable]` when set, else starts PGlite in a
 * child process. The child exits when this process closes its standard
 * input: on {@linkcode TestDatabase.close}, or when this process ends,
 * whichever comes first; it does not keep this process alive.
 *
 * @param urlVariable The variable naming a real server.
 * @returns The database.
 */
export async function startTestDatabase(
  urlVariable = "TEST_DATABASE_URL",
): Promise<TestDatabase> {
  const given = Deno.env.get(urlVariable);
  const client = (url: string) => () =>
    postgres(url, { max: 1, onnotice: () => {}, idle_timeout: 0 });
  if (given) {
    return {
      url: given,
      kind: "postgres",
      client: client(given),
      close: () => Promise.resolve(),
    };
  }
  const server = await startPgliteServer();
  const url = `postgres://postgres:postgres@127.0.0.1:${server.port}/postgres`;
  return { url, kind: "pglite", client: client(url), close: server.close };
}

/** Starts `dev/pglite_server.ts` and waits for its port. */
async function startPgliteServer(): Promise<{
  port: number;
  close(): Promise<void>;
}> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-net=127.0.0.1", "--allow-read", PGLITE_SERVER],
    cwd: ROOT,
    clearEnv: true,
    env: childEnv(),
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  let said = "";
  let port: number | undefined;
  const reader = child.stdout.pipeThrough(new TextDecoderStream())
    .getReader();
  try {
    while (port === undefined) {
      const { value, done } = await reader.read();
      if (done) break;
      said += value;
      const match = said.match(LISTENING);
      if (match) port = Number(match[1]);
    }
  } finally {
    // It says nothing more there: stop reading, so no read stays pending.
    await reader.cancel();
  }
  if (port === undefined) {
    await child.stdin.close().catch(() => {});
    const { code } = await child.status;
    throw new Error(
      `dev/pglite_server.ts exited with code ${code} before it said its port${
        said ? `; it said:\n${said}` : ""
      }`,
    );
  }
  // Its standard input stays open, unread, until close() or until this
  // process ends: then the server sees the end of it and exits.
  child.unref();
  let closing: Promise<void> | undefined;
  return {
    port,
    close: () =>
      closing ??= (async () => {
        child.ref();
        await child.stdin.close();
        await child.status;
      })(),
  };
}

/**
 * Gives the tests of the calling module one database, shared by all of
 * them: `TEST_DATABASE_URL`'s server, or one PGlite server (see
 * {@linkcode startTestDatabase}) that starts before the module's first
 * test and stops after its last. Call it once, at the top level of a test
 * module, before its tests; they call the function it returns.
 *
 * The server starts in a `Deno.test.beforeAll` hook, not in the first test
 * that needs it: the resource and op sanitizers would count a child process
 * started inside a test, and still running at its end, as that test's
 * leak. If it fails to start, every test that asks for it fails with why.
 *
 * @returns A function giving the module's database.
 */
export function testDatabaseForModule(): () => Promise<TestDatabase> {
  let started: Promise<TestDatabase> | undefined;
  const database = () => started ??= startTestDatabase();
  Deno.test.beforeAll(async () => {
    // A failure is reported by the tests that use the database.
    await database().catch(() => {});
  });
  Deno.test.afterAll(async () => {
    const db = await started?.catch(() => undefined);
    await db?.close();
  });
  return database;
}

/** Options of {@linkcode createPeople}. */
export interface PeopleOptions {
  /** How many rows (ids 1..n). */
  count: number;
  /** Rows with an id up to this were refreshed recently. */
  freshUpTo?: number;
  /** The id column's type; `bigint` by default. */
  idType?: string;
}

/**
 * Creates `<schema>.people` (dropping any previous one) with `count` rows
 * whose vendor data was never refreshed.
 *
 * @param sql A client.
 * @param schema The schema to create it in (created if missing).
 * @param options Row count and freshness.
 */
export async function createPeople(
  sql: postgres.Sql,
  schema: string,
  options: PeopleOptions,
): Promise<void> {
  const table = `${schema}.people`;
  await sql`drop schema if exists ${sql(schema)} cascade`;
  await sql`create schema ${sql(schema)}`;
  await sql`
    create table ${sql(table)} (
      id ${sql.unsafe(options.idType ?? "bigint")} primary key,
      name text not null,
      vendor_data jsonb,
      vendor_refreshed_at timestamptz
    )`;
  await sql`
    insert into ${sql(table)} (id, name, vendor_refreshed_at)
    select i, 'person ' || i,
      case when i <= ${options.freshUpTo ?? 0} then now() end
    from generate_series(1, ${options.count}::int) as i`;
}

/** Variables a child process may inherit: what Deno and npm need to run. */
const INHERITED =
  /^(PATH|HOME|DENO_DIR|JSR_URL|TMPDIR|NO_COLOR|LANG|LC_ALL|(HTTPS?|ALL|NO)_PROXY|(https?|all|no)_proxy|NPM_CONFIG_\w+|npm_config_\w+|DENO_CERT|DENO_TLS_CA_STORE|SSL_CERT_FILE)$/;

/**
 * The environment for a child process: an allow-list of this process's
 * variables (so `GITHUB_*`, `REFRESH_*`, `DATABASE_URL` and `PG*` of the
 * machine running the tests never leak in) plus the given ones. Use it with
 * `clearEnv: true`.
 *
 * @param own The child's own variables; they win.
 * @returns The environment.
 */
export function childEnv(
  own: Record<string, string> = {},
): Record<string, string> {
  const inherited = Object.entries(Deno.env.toObject()).filter(([name]) =>
    INHERITED.test(name)
  );
  return { ...Object.fromEntries(inherited), ...own };
}
