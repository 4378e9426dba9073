/**
 * A scripted stand-in for the data vendor: a real HTTP server on 127.0.0.1
 * that records every call, how many were in flight at once, and answers
 * what the test (or demo, or benchmark) scripts.
 *
 * @module
 */

/** What the fake vendor answers to one call. */
export interface Reply {
  /** HTTP status; 200 by default. */
  status?: number;
  /** Body: a string or bytes as they are, anything else as JSON. Default: a person. */
  body?: unknown;
  /** Extra response headers. */
  headers?: Record<string, string>;
  /** Wait this long before answering (cut short if the client goes). */
  delayMs?: number;
}

/** One call received. */
export interface VendorCall {
  /**
   * The id: what follows `/people/` in the path, else the first query
   * parameter's value, else the request body.
   */
  id: string;
  /** The request method. */
  method: string;
  /** The request URL. */
  url: string;
  /** The request body, as text. */
  body: string;
  /** The request headers. */
  headers: Headers;
  /** When it arrived: the first thing its handler does (`performance.now()`). */
  startedAt: number;
  /** When it was answered or abandoned by the client. */
  endedAt?: number;
  /** The status answered. */
  status?: number;
}

/**
 * Decides the reply to a call.
 *
 * @param id The target id.
 * @param attempt How many calls this id has had, this one included.
 * @param vendor The vendor, for its counters.
 */
export type Script = (
  id: string,
  attempt: number,
  vendor: FakeVendor,
) => Reply | Promise<Reply>;

/** Options of {@linkcode startFakeVendor}. */
export interface FakeVendorOptions {
  /** Decides each reply; a 200 with a person by default. */
  script?: Script;
  /** Latency added to every reply, in milliseconds. */
  latencyMs?: number;
}

/** A running fake vendor. */
export interface FakeVendor {
  /** URL template to use as `REFRESH_API_URL`. */
  urlTemplate: string;
  /** Every call, in arrival order. */
  calls: VendorCall[];
  /** Calls in flight right now. */
  inFlight: number;
  /** The most calls ever in flight at once. */
  maxInFlight: number;
  /** Number of calls per id. */
  callsFor(id: string): number;
  /** Stops the server. */
  close(): Promise<void>;
}

/** The default answer: a person record. */
export function personFor(id: string): Record<string, unknown> {
  return { id, name: `Person ${id}`, employer: "Example Corp", score: 0.5 };
}

/**
 * Starts a fake vendor on a free port of 127.0.0.1. Paths are
 * `/people/<id>`.
 *
 * @param options The script and latency.
 * @returns The running vendor.
 */
export function startFakeVendor(
  options: FakeVendorOptions = {},
): Promise<FakeVendor> {
  const script: Script = options.script ?? (() => ({}));
  const perId = new Map<string, number>();
  const { promise, resolve } = Promise.withResolvers<FakeVendor>();
  const vendor: FakeVendor = {
    urlTemplate: "",
    calls: [],
    inFlight: 0,
    maxInFlight: 0,
    callsFor: (id) => perId.get(id) ?? 0,
    close: async () => {
      await server.shutdown();
    },
  };
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    onListen: ({ port }) => {
      vendor.urlTemplate = `http://127.0.0.1:${port}/people/{id}`;
      resolve(vendor);
    },
  }, async (request) => {
    const arrived = performance.now();
    const url = new URL(request.url);
    const body = await request.text();
    const path = /\/people\/(.*)$/.exec(url.pathname)?.[1];
    const id = path !== undefined
      ? decodeURIComponent(path)
      : url.searchParams.values().next().value ?? body;
    const call: VendorCall = {
      id,
      method: request.method,
      body,
      url: request.url,
      headers: request.headers,
      startedAt: arrived,
    };
    vendor.calls.push(call);
    perId.set(id, (perId.get(id) ?? 0) + 1);
    vendor.inFlight++;
    vendor.maxInFlight = Math.max(vendor.maxInFlight, vendor.inFlight);
    let ended = false;
    const end = () => {
      if (ended) return;
      ended = true;
      vendor.inFlight--;
      call.endedAt = performance.now();
    };
    try {
      const reply: Reply = await script(id, perId.get(id)!, vendor);
      const wait = (options.latencyMs ?? 0) + (reply.delayMs ?? 0);
      // A client that gives up ends the wait: it is no longer in flight.
      if (wait > 0) await sleep(wait, request.signal);
      const status = reply.status ?? 200;
      call.status = status;
      const answer = reply.body === undefined
        ? (status === 200 ? JSON.stringify(personFor(id)) : "")
        : typeof reply.body === "string" || reply.body instanceof Uint8Array
        ? reply.body
        : JSON.stringify(reply.body);
      return new Response(
        status === 204 || status === 304 ? null : answer as BodyInit,
        {
          status,
          headers: { "content-type": "application/json", ...reply.headers },
        },
      );
    } finally {
      end();
    }
  });
  return promise;
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
    function done() {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
  });
}
