/**
 * A loopback TCP proxy for tests and the benchmark: put it between the job
 * and PostgreSQL to lose the database on purpose (`cut`, `hold`) without
 * touching the server, or to add network latency (`delayMs`). Both sides
 * set `TCP_NODELAY`, so the proxy adds no Nagle or delayed-ACK waits of its
 * own.
 *
 * @module
 */

/** Options of {@linkcode startTcpProxy}. */
export interface TcpProxyOptions {
  /** Where to forward to. */
  hostname: string;
  /** Port to forward to. */
  port: number;
  /** One-way delay added to every chunk, in ms (a round trip gets twice). */
  delayMs?: number;
}

/** A running proxy. */
export interface TcpProxy {
  /** The loopback port it listens on. */
  port: number;
  /** `url` with its host and port replaced by the proxy's. */
  via(url: string): string;
  /** Closes every open connection and refuses new ones until `restore()`. */
  cut(): void;
  /** Stops forwarding (connections stay open, nothing gets through). */
  hold(): void;
  /** Accepts and forwards again after `cut()` or `hold()`. */
  restore(): void;
  /** Connections accepted so far. */
  accepted: number;
  /** Stops listening and closes every connection. */
  close(): Promise<void>;
}

/**
 * Starts a proxy on a free port of 127.0.0.1.
 *
 * @param options Where to forward, and the delay.
 * @returns The running proxy.
 */
export function startTcpProxy(options: TcpProxyOptions): TcpProxy {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const open = new Set<Deno.TcpConn>();
  const pumps = new Set<Promise<void>>();
  let refusing = false;
  let held: PromiseWithResolvers<void> | undefined;
  const delayMs = options.delayMs ?? 0;

  const closeAll = () => {
    for (const conn of open) {
      try {
        conn.close();
      } catch { /* already closed */ }
    }
    open.clear();
  };

  async function pump(from: Deno.TcpConn, to: Deno.TcpConn): Promise<void> {
    let queue = Promise.resolve();
    try {
      for await (const chunk of from.readable) {
        if (held) await held.promise;
        if (delayMs === 0) {
          await writeAll(to, chunk);
          continue;
        }
        const at = performance.now() + delayMs;
        queue = queue.then(async () => {
          const wait = at - performance.now();
          if (wait > 0) await new Promise((r) => setTimeout(r, wait));
          await writeAll(to, chunk);
        });
      }
      await queue;
    } catch {
      // The other side went away, or the proxy cut it.
    } finally {
      for (const conn of [from, to]) {
        open.delete(conn);
        try {
          conn.close();
        } catch { /* already closed */ }
      }
    }
  }

  const port = (listener.addr as Deno.NetAddr).port;
  const proxy: TcpProxy = {
    port,
    accepted: 0,
    via(url) {
      const u = new URL(url);
      u.hostname = "127.0.0.1";
      u.port = String(port);
      return u.href;
    },
    cut() {
      refusing = true;
      closeAll();
    },
    hold() {
      held ??= Promise.withResolvers<void>();
    },
    restore() {
      refusing = false;
      held?.resolve();
      held = undefined;
    },
    async close() {
      listener.close();
      proxy.restore();
      closeAll();
      await accepting;
      await Promise.all([...pumps]);
    },
  };
  const accepting = (async () => {
    for await (const client of listener) {
      proxy.accepted++;
      if (refusing) {
        client.close();
        continue;
      }
      let server: Deno.TcpConn;
      try {
        server = await Deno.connect({
          hostname: options.hostname,
          port: options.port,
        });
      } catch {
        client.close();
        continue;
      }
      client.setNoDelay(true);
      server.setNoDelay(true);
      open.add(client);
      open.add(server);
      for (
        const [from, to] of [[client, server], [server, client]] as const
      ) {
        const p = pump(from, to);
        pumps.add(p);
        p.finally(() => pumps.delete(p));
      }
    }
  })().catch(() => {});

  return proxy;
}

async function writeAll(conn: Deno.TcpConn, chunk: Uint8Array): Promise<void> {
  let written = 0;
  while (written < chunk.length) {
    written += await conn.write(chunk.subarray(written));
  }
}
