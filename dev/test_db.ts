/**
 * A PostgreSQL server for tests, the demo and the benchmark: the real one
 * named by an environment variable, or else an embedded PGlite served on a
 * loopback port by `@electric-sql/pglite-socket`, so that a machine with
 * only Deno can run everything.
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

/**
 * Uses the server at `env[urlVariable]` when set, else starts PGlite.
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
  const { PGlite } = await import("@electric-sql/pglite");
  const { PGLiteSocketServer } = await import("@electric-sql/pglite-socket");
  const db = await PGlite.create();
  const server = new PGLiteSocketServer({
    db,
    host: "127.0.0.1",
    port: 0,
    maxConnections: 16,
  });
  await server.start();
  const port = server.getServerConn().split(":").at(-1);
  const url = `postgres://postgres:postgres@127.0.0.1:${port}/postgres`;
  return {
    url,
    kind: "pglite",
    client: client(url),
    close: async () => {
      await server.stop();
      await db.close();
    },
  };
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
