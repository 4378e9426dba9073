/**
 * The naive baseline of `deno task bench`: the script most people would
 * write to spend the credits. Select the ids never refreshed, then for each:
 * fetch, `UPDATE`. Nothing else: no state, no validation, no pacing.
 *
 * With `NAIVE_WORKERS` above 1, that many workers share the id list (and
 * postgres.js's default pool of 10 connections), as a script "made faster"
 * would; any worker retries a 503 up to 3 requests in all, pausing 100 ms ×
 * the attempt, and leaves a target that still fails.
 *
 * With `NAIVE_WRITE=0` it writes nothing: a bare fetch loop, the fastest a
 * sequential client can keep the vendor busy (the bench's ceiling).
 *
 * Settings: refresh.ts's `DATABASE_URL`, `REFRESH_API_URL` (with `{id}`),
 * `REFRESH_API_KEY` and `REFRESH_TABLE`; `NAIVE_WORKERS` (1) and
 * `NAIVE_WRITE` (1).
 *
 * @module
 */

import postgres from "postgres";

const env = (name: string) => Deno.env.get(name) ?? "";
const sql = postgres(env("DATABASE_URL"), { onnotice: () => {} });
const table = sql(env("REFRESH_TABLE"));
const rows = await sql<{ id: string }[]>`
  select id from ${table} where vendor_refreshed_at is null order by id`;
const ids = rows.map((row) => row.id);

let next = 0;
async function worker(): Promise<void> {
  while (next < ids.length) {
    const id = ids[next++]!;
    for (let attempt = 1; attempt <= 3; attempt++) {
      const response = await fetch(env("REFRESH_API_URL").replace("{id}", id), {
        headers: { authorization: `Bearer ${env("REFRESH_API_KEY")}` },
      });
      if (response.ok) {
        const data = await response.json();
        if (env("NAIVE_WRITE") === "0") break;
        await sql`
          update ${table}
          set vendor_data = ${sql.json(data)}, vendor_refreshed_at = now()
          where id = ${id}`;
        break;
      }
      await response.body?.cancel();
      if (response.status !== 503 || attempt === 3) break;
      await new Promise((r) => setTimeout(r, 100 * attempt));
    }
  }
}

await Promise.all(
  Array.from({ length: Number(env("NAIVE_WORKERS") || 1) }, worker),
);
await sql.end();
