/**
 * The naive baseline of `deno task bench`: what a quick script to spend the
 * credits would do. It selects the ids never refreshed, asks the vendor for
 * each, and writes each answer with an `UPDATE` — nothing else: no state
 * table, no run record, no validation beyond `response.json()`, no
 * pacing.
 *
 * With `NAIVE_WORKERS` above 1, that many workers share the id list and
 * postgres.js's default pool (10 connections), as a script "made faster"
 * would.
 * A 503 is retried up to `NAIVE_MAX_ATTEMPTS` requests in all, pausing
 * `NAIVE_RETRY_PAUSE_MS` × the attempt number in between, as a typical
 * script does; any other non-200 answer leaves the target for later.
 *
 * Settings (environment): `DATABASE_URL`, `NAIVE_API_URL` (template with
 * `{id}`), `NAIVE_API_KEY`, `NAIVE_TABLE` (default `people`),
 * `NAIVE_LIMIT`, `NAIVE_WORKERS` (1), `NAIVE_MAX_ATTEMPTS` (1),
 * `NAIVE_RETRY_PAUSE_MS` (100). Prints one JSON line of counts on stdout.
 *
 * @module
 */

import postgres from "postgres";

/** What one naive run did. */
export interface NaiveResult {
  /** Targets selected. */
  targets: number;
  /** Targets whose answer was written. */
  refreshed: number;
  /** Requests sent. */
  requests: number;
  /** Answers other than 200. */
  non200: number;
}

/** Settings of {@linkcode runNaive}. */
export interface NaiveOptions {
  databaseUrl: string;
  apiUrl: string;
  apiKey: string;
  table: string;
  limit?: number;
  workers: number;
  maxAttempts: number;
  retryPauseMs: number;
}

/**
 * Reads the settings from the environment.
 *
 * @param env The environment lookup.
 * @returns The settings.
 */
export function naiveOptionsFromEnv(
  env: (name: string) => string | undefined,
): NaiveOptions {
  const need = (name: string) => {
    const value = env(name);
    if (!value) throw new Error(`${name} is required`);
    return value;
  };
  const limit = env("NAIVE_LIMIT");
  return {
    databaseUrl: need("DATABASE_URL"),
    apiUrl: need("NAIVE_API_URL"),
    apiKey: need("NAIVE_API_KEY"),
    table: env("NAIVE_TABLE") ?? "people",
    limit: limit ? Number(limit) : undefined,
    workers: Number(env("NAIVE_WORKERS") ?? 1),
    maxAttempts: Number(env("NAIVE_MAX_ATTEMPTS") ?? 1),
    retryPauseMs: Number(env("NAIVE_RETRY_PAUSE_MS") ?? 100),
  };
}

/**
 * Runs the naive loop.
 *
 * @param options The settings.
 * @returns What it did.
 */
export async function runNaive(options: NaiveOptions): Promise<NaiveResult> {
  const sql = postgres(options.databaseUrl, { onnotice: () => {} });
  const table = sql(options.table);
  try {
    const rows = await sql<{ id: string }[]>`
      select id from ${table} where vendor_refreshed_at is null order by id
      ${options.limit === undefined ? sql`` : sql`limit ${options.limit}`}`;
    const ids = rows.map((row) => row.id);
    const result: NaiveResult = {
      targets: ids.length,
      refreshed: 0,
      requests: 0,
      non200: 0,
    };
    let next = 0;
    const worker = async () => {
      while (next < ids.length) {
        const id = ids[next++]!;
        for (let attempt = 1; attempt <= options.maxAttempts; attempt++) {
          result.requests++;
          const response = await fetch(
            options.apiUrl.replace("{id}", encodeURIComponent(id)),
            { headers: { authorization: `Bearer ${options.apiKey}` } },
          );
          if (response.status === 200) {
            const data = await response.json();
            await sql`
              update ${table}
              set vendor_data = ${sql.json(data)}, vendor_refreshed_at = now()
              where id = ${id}`;
            result.refreshed++;
            break;
          }
          result.non200++;
          await response.body?.cancel();
          if (response.status !== 503) break;
          if (attempt < options.maxAttempts) {
            await new Promise((r) =>
              setTimeout(r, options.retryPauseMs * attempt)
            );
          }
        }
      }
    };
    await Promise.all(Array.from({ length: options.workers }, worker));
    return result;
  } finally {
    await sql.end();
  }
}

if (import.meta.main) {
  const result = await runNaive(naiveOptionsFromEnv((n) => Deno.env.get(n)));
  console.log(JSON.stringify(result));
}
