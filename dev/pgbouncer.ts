/**
 * PgBouncer in transaction mode on a loopback port, in front of a real
 * PostgreSQL server, for tests: two server sessions taken in turn, each
 * reset (`DISCARD ALL`) after every transaction, so that nothing of a
 * session outlives its transaction.
 *
 * @module
 */

/** A running PgBouncer. */
export interface Bouncer {
  /** `url` with the host and port replaced by PgBouncer's. */
  url: string;
  close(): Promise<void>;
}

/**
 * Starts PgBouncer (`pgbouncer` on PATH; Debian's package) for the server of
 * `url`, its user and password in the auth file.
 */
export async function startPgBouncer(url: string): Promise<Bouncer> {
  const upstream = new URL(url);
  const dir = await Deno.makeTempDir({ prefix: "pgbouncer-" });
  // PgBouncer refuses to run as root: it then runs as postgres, which must
  // read this folder.
  const root = Deno.uid() === 0;
  if (root) await Deno.chmod(dir, 0o755);
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
  const auth = {
    [decodeURIComponent(upstream.username)]: decodeURIComponent(
      upstream.password,
    ),
  };
  await Deno.writeTextFile(
    `${dir}/users.txt`,
    Object.entries(auth).map(([u, p]) => `"${u}" "${p}"\n`).join(""),
  );
  await Deno.writeTextFile(
    `${dir}/pgbouncer.ini`,
    `[databases]
* = host=${upstream.hostname} port=${upstream.port || 5432}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = ${port}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = ${dir}/users.txt
pool_mode = transaction
default_pool_size = 2
min_pool_size = 2
server_round_robin = 1
; Every transaction finds a fresh session: no prepared statement, no SET.
server_reset_query = DISCARD ALL
server_reset_query_always = 1
max_client_conn = 50
`,
  );
  const child = new Deno.Command("pgbouncer", {
    args: [...root ? ["-u", "postgres"] : [], `${dir}/pgbouncer.ini`],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const log = new Response(child.stderr).text();
  const close = async () => {
    try {
      child.kill("SIGTERM");
    } catch { /* already gone */ }
    await child.status;
    await log;
    await Deno.remove(dir, { recursive: true });
  };
  for (let i = 0;; i++) {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      break;
    } catch (error) {
      if (i < 100) {
        await new Promise((resolve) => setTimeout(resolve, 50));
        continue;
      }
      await close();
      throw new Error(`PgBouncer did not start: ${error}\n${await log}`);
    }
  }
  const bounced = new URL(url);
  bounced.hostname = "127.0.0.1";
  bounced.port = String(port);
  return { url: bounced.href, close };
}
