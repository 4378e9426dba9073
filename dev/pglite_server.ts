/**
 * An embedded PostgreSQL (PGlite) served on a loopback port, as a process of
 * its own: `dev/test_db.ts` starts it for the tests, the demo and the
 * benchmark, so that their own process holds no database sockets.
 *
 * It prints `listening on 127.0.0.1:<port>` on standard output once it
 * accepts connections (and anything else on standard error), and exits when
 * its standard input closes: when the process that started it closes the
 * pipe, ends or dies.
 *
 * ```sh
 * deno run --allow-net=127.0.0.1 --allow-read dev/pglite_server.ts
 * ```
 *
 * @module
 */

import { PGlite } from "@electric-sql/pglite";
import { PGLiteSocketServer } from "@electric-sql/pglite-socket";

if (import.meta.main) {
  const db = await PGlite.create();
  const server = new PGLiteSocketServer({
    db,
    host: "127.0.0.1",
    port: 0,
    maxConnections: 16,
  });
  await server.start();
  const port = server.getServerConn().split(":").at(-1);
  console.log(`listening on 127.0.0.1:${port}`);
  // The parent stops reading standard output once it has the port: anything
  // printed later goes to standard error, which the parent passes through.
  console.log = console.info = console.debug = console.error;
  // Serve until standard input closes; anything written to it is ignored.
  for await (const _ of Deno.stdin.readable) { /* ignored */ }
  await server.stop();
  await db.close();
}
