/**
 * Smoke test of the benchmark: `deno task bench --quick`, as a child process,
 * against the database the tests use (`TEST_DATABASE_URL`, else PGlite).
 * Its figures are rough; this checks they are produced and sane.
 *
 * @module
 */

import { assert, assertEquals, assertStringIncludes } from "@std/assert";
import { readmeLines } from "./bench.ts";
import { childEnv, ROOT } from "./test_db.ts";

Deno.test("deno task bench --quick produces the four figures, sane", async () => {
  const out = await Deno.makeTempDir({ prefix: "bench_test_" });
  try {
    const url = Deno.env.get("TEST_DATABASE_URL");
    const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-all", "dev/bench.ts", "--quick", "--out", out],
      cwd: ROOT,
      clearEnv: true,
      env: childEnv(url ? { BENCH_DATABASE_URL: url } : {}),
    }).output();
    const text = new TextDecoder().decode(stdout);
    assertEquals(code, 0, text + new TextDecoder().decode(stderr));
    assertStringIncludes(text, "| 1. time per target");
    const r = JSON.parse(await Deno.readTextFile(`${out}/bench_results.json`));
    assert(r.overhead.refreshUs > 0 && r.overhead.naiveUs > 0);
    assertEquals(r.busy.length, 6);
    for (const cell of r.busy) {
      assertEquals(cell.refresh.maxInFlight, 1);
      assertEquals(cell.naive.maxInFlight, 1);
      for (const p of [cell.refresh, cell.naive]) {
        assert(p.busy > 0.2 && p.busy <= 1, JSON.stringify(cell));
      }
    }
    assertEquals(r.ceiling.length, 2);
    for (const c of r.ceiling) {
      assertEquals(c.maxInFlight, 1);
      assert(c.busy > 0.2 && c.busy <= 1, JSON.stringify(c));
    }
    assertStringIncludes(text, "naive loop without its UPDATE");
    const { small, large } = r.memory;
    assertEquals([small.processed, large.processed], [100, 1000]);
    assert(small.peakMiB > 20 && large.peakMiB > 20);
    const [refresh, ...naive] = r.polite;
    assertEquals(refresh.client, "refresh.ts");
    assertEquals([refresh.failures, refresh.maxInFlight], [0, 1]);
    assertEquals([refresh.billed, refresh.stored], [60, 60]);
    assert(naive.every((c: { failures: number }) => c.failures > 0));
    const svg = await Deno.readTextFile(`${out}/bench_chart.svg`);
    assert(svg.startsWith("<svg") && svg.includes("refresh.ts"));
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});

Deno.test("README's Performance lines are those of the committed bench results", async () => {
  const results = await Deno.readTextFile(`${ROOT}dev/bench_results.json`);
  const readme = await Deno.readTextFile(`${ROOT}README.md`);
  assertStringIncludes(readme, readmeLines(JSON.parse(results)));
});
