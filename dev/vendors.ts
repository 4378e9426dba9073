/**
 * Faithful fakes of two real person-enrichment vendors, for end-to-end tests:
 * real HTTP servers on 127.0.0.1 that enforce rate windows and credits the way
 * the vendors document them, and count how politely a client behaved.
 *
 * People Data Labs, Person Enrichment API v5:
 * - https://docs.peopledatalabs.com/docs/reference-person-enrichment-api
 * - https://docs.peopledatalabs.com/docs/input-parameters-person-enrichment-api
 * - https://docs.peopledatalabs.com/docs/output-response-person-enrichment-api
 * - https://docs.peopledatalabs.com/docs/usage-limits (headers, fixed window)
 * - https://docs.peopledatalabs.com/docs/errors (error envelope)
 * - https://docs.peopledatalabs.com/support/billing/how-credits-work.md
 *
 * Apollo, People Enrichment:
 * - https://docs.apollo.io/reference/people-enrichment
 * - https://docs.apollo.io/reference/rate-limits (headers, fixed window)
 * - https://docs.apollo.io/docs/enrich-people-data
 *
 * @module
 */

/** One call the fake received. */
export interface FakeCall {
  /** Date.now() at arrival. */
  at: number;
  /** Status answered. */
  status: number;
  /** Lookup fields: the query parameters (PDL) or the JSON body's fields (Apollo), as strings. */
  lookup: Record<string, string>;
  /** The API key header received, or null. */
  apiKey: string | null;
}

/** A running fake vendor. */
export interface VendorFake {
  /** Base URL, e.g. http://127.0.0.1:PORT (no trailing slash). */
  url: string;
  /** Every call, in arrival order. */
  calls: FakeCall[];
  /** Credits charged so far. */
  billed: number;
  /** Credits left. */
  balance: number;
  /** 429s answered because the rate window was spent (the client should have waited). */
  limited429: number;
  /** 429s answered spontaneously (scripted). */
  spontaneous429: number;
  /** Calls that arrived while a window the fake had already declared spent (remaining 0 sent in a response header) had not yet reset. Must stay 0 for a polite client. */
  earlyCalls: number;
  /** Stops the server. */
  close(): Promise<void>;
}

/** A person the fake knows. Fields may be null (thin profiles). */
export interface FakePerson {
  /** Matched case-insensitively. */
  email?: string;
  /** Matched ignoring case, scheme, `www.` and a trailing `/`. */
  linkedin_url?: string;
  /** Name, as the vendor returns it. */
  full_name: string;
  /** Current job title. */
  job_title: string | null;
  /** Current employer's name. */
  job_company_name: string | null;
}

/** Options of {@linkcode startPdl}. */
export interface PdlOptions {
  /** The people the fake can match. */
  people: FakePerson[];
  /** Credits at the start. */
  balance: number;
  /** Fixed rate window length in ms; a multiple of 1000. Windows are aligned to multiples of windowMs since the Unix epoch (Date.now()). */
  windowMs: number;
  /** Requests allowed per window (every request counts, 429s included, as PDL's fixed window does). */
  perWindow: number;
  /** Index (0-based, over all calls) of calls answered with a spontaneous 429 although the window is not spent. */
  spontaneous429?: (call: number) => boolean;
  /** The only key accepted in `X-Api-Key`. */
  apiKey: string;
}

/** Options of {@linkcode startApollo}. */
export interface ApolloOptions {
  /** The people the fake can match. */
  people: FakePerson[];
  /** Credits at the start. */
  balance: number;
  /** Requests allowed per real clock minute (windows start at each UTC minute), hour and day; defaults 50 / 200 / 600, the documented enrichment limits of Apollo's free plan. */
  perMinute?: number;
  /** Requests allowed per UTC clock hour. */
  perHour?: number;
  /** Requests allowed per UTC day. */
  perDay?: number;
  /** The only key accepted in `x-api-key`. */
  apiKey: string;
}

/** Lowercases a LinkedIn URL and strips the scheme, `www.` and a trailing `/`. */
function normLinkedin(url: string): string {
  return url.trim().toLowerCase().replace(/^https?:\/\//, "")
    .replace(/^www\./, "").replace(/\/$/, "");
}

function findPerson(
  people: FakePerson[],
  email?: string,
  linkedin?: string,
): FakePerson | undefined {
  const e = email?.trim().toLowerCase();
  const l = linkedin ? normLinkedin(linkedin) : undefined;
  return people.find((p) =>
    (e && p.email?.toLowerCase() === e) ||
    (l && p.linkedin_url && normLinkedin(p.linkedin_url) === l)
  );
}

/** A fixed window of `ms`, aligned to the epoch, counting requests. */
class Window {
  start = -1;
  count = 0;
  constructor(readonly ms: number, readonly limit: number) {}
  /** Counts a call at `t`; returns the window's end. */
  hit(t: number): number {
    const start = Math.floor(t / this.ms) * this.ms;
    if (start !== this.start) [this.start, this.count] = [start, 0];
    this.count++;
    return start + this.ms;
  }
  get left(): number {
    return Math.max(0, this.limit - this.count);
  }
}

function reply(status: number, body: unknown): Response {
  const text = typeof body === "string";
  return new Response(text ? body : JSON.stringify(body), {
    status,
    headers: { "content-type": text ? "text/plain" : "application/json" },
  });
}

/** What {@linkcode serve} hands a vendor's logic for an authorised call. */
interface Ctx {
  fake: VendorFake;
  call: FakeCall;
  /** The call's 0-based index over all calls. */
  index: number;
  url: URL;
  /** The JSON body; `{}` when empty, `undefined` when not JSON. */
  body: unknown;
  /** Records that a response says a window is spent until `end`. */
  spentUntil(end: number): void;
}

/**
 * Starts a fake on a free port of 127.0.0.1 that records every call, counts
 * early ones, merges a JSON body's fields into the call's lookup, answers
 * 404 off `route` and `denied()` unless `header` holds the key (counting no
 * rate window for either), and hands the rest to `handle`.
 */
function serve(
  o: { balance: number; apiKey: string },
  route: string,
  header: string,
  denied: () => Response,
  handle: (ctx: Ctx) => Response | Promise<Response>,
): Promise<VendorFake> {
  const { promise, resolve } = Promise.withResolvers<VendorFake>();
  let spent = 0;
  const fake: VendorFake = {
    url: "",
    calls: [],
    billed: 0,
    balance: o.balance,
    limited429: 0,
    spontaneous429: 0,
    earlyCalls: 0,
    close: async () => await server.shutdown(),
  };
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    onListen: ({ port }) => {
      fake.url = `http://127.0.0.1:${port}`;
      resolve(fake);
    },
  }, async (request) => {
    const at = Date.now();
    if (at < spent) fake.earlyCalls++;
    const url = new URL(request.url);
    const call: FakeCall = {
      at,
      status: 0,
      lookup: Object.fromEntries(url.searchParams),
      apiKey: request.headers.get(header),
    };
    const index = fake.calls.push(call) - 1;
    let body: unknown;
    try {
      body = JSON.parse(await request.text() || "{}");
      if (typeof body === "object" && body !== null) {
        for (const [k, v] of Object.entries(body)) call.lookup[k] = String(v);
      }
    } catch { /* body stays undefined */ }
    const response = `${request.method} ${url.pathname}` !== route
      ? reply(404, { error: `No route ${request.method} ${url.pathname}` })
      : call.apiKey !== o.apiKey
      ? denied()
      : await handle({
        fake,
        call,
        index,
        url,
        body,
        spentUntil: (end) => spent = Math.max(spent, end),
      });
    call.status = response.status;
    return response;
  });
  return promise;
}

const PDL_ERRORS: Record<number, [string, string]> = {
  400: [
    "invalid_request_error",
    "Request contained either missing or invalid parameters",
  ],
  401: ["authentication_error", "Request contained a missing or invalid key"],
  402: [
    "payment_required",
    "You have reached your account maximum (all matches have been used)",
  ],
  404: ["not_found", "No records were found matching your request"],
  429: [
    "rate_limit_error",
    "An error occurred due to requests hitting the API too quick",
  ],
};

function pdlError(status: number): Response {
  const [type, message] = PDL_ERRORS[status] ?? ["api_error", "Error"];
  return reply(status, { status, error: { type, message } });
}

/**
 * Starts a fake People Data Labs: `GET /v5/person/enrich`, key in
 * `X-Api-Key`, matching on the `email` or `profile` query parameter.
 *
 * @param o The people, credits, rate window and key.
 * @returns The running fake.
 */
export function startPdl(o: PdlOptions): Promise<VendorFake> {
  const window = new Window(o.windowMs, o.perWindow);
  return serve(
    o,
    "GET /v5/person/enrich",
    "x-api-key",
    () => pdlError(401),
    ({ fake, call, index, url, spentUntil }) => {
      const end = window.hit(call.at);
      if (window.left === 0) spentUntil(end);
      const email = url.searchParams.get("email") ?? undefined;
      const profile = url.searchParams.get("profile") ?? undefined;
      const p = findPerson(o.people, email, profile);
      let response: Response;
      if (window.count > o.perWindow) {
        fake.limited429++;
        response = pdlError(429);
      } else if (o.spontaneous429?.(index)) {
        fake.spontaneous429++;
        response = pdlError(429);
      } else if (!email && !profile) response = pdlError(400);
      else if (fake.balance <= 0) response = pdlError(402);
      else if (!p) response = pdlError(404);
      else {
        fake.billed++;
        fake.balance--;
        response = reply(200, {
          status: 200,
          likelihood: 10,
          data: {
            id: `fake_pdl_${o.people.indexOf(p)}`,
            full_name: p.full_name,
            job_title: p.job_title,
            job_company_name: p.job_company_name,
            linkedin_url: p.linkedin_url ? normLinkedin(p.linkedin_url) : null,
            work_email: p.email ?? null,
            emails: p.email
              ? [{ address: p.email, type: "current_professional" }]
              : [],
          },
        });
      }
      const h = response.headers;
      h.set("x-ratelimit-limit", JSON.stringify({ minute: o.perWindow }));
      h.set("x-ratelimit-remaining", JSON.stringify({ minute: window.left }));
      h.set(
        "x-ratelimit-reset",
        new Date(end).toISOString().slice(0, 19) + "Z",
      );
      h.set("x-totallimit-remaining", String(fake.balance));
      h.set("x-call-credits-spent", response.status === 200 ? "1" : "0");
      h.set("x-call-credits-type", "enrich");
      return response;
    },
  );
}

/**
 * Starts a fake Apollo: `POST /api/v1/people/match`, key in `x-api-key`,
 * matching on `email` or `linkedin_url` from the JSON body (merged over the
 * query parameters, which Apollo's reference also accepts).
 *
 * @param o The people, credits, rate limits and key.
 * @returns The running fake.
 */
export function startApollo(o: ApolloOptions): Promise<VendorFake> {
  const windows = [
    ["minute", "minute", new Window(60_000, o.perMinute ?? 50)],
    ["hourly", "hour", new Window(3_600_000, o.perHour ?? 200)],
    ["daily", "day", new Window(86_400_000, o.perDay ?? 600)],
  ] as const;
  return serve(
    o,
    "POST /api/v1/people/match",
    "x-api-key",
    () =>
      reply(
        401,
        "Invalid API key. See https://docs.apollo.io/reference/authentication for how to authenticate.",
      ),
    ({ fake, call, body, spentUntil }) => {
      for (const [, , w] of windows) {
        const end = w.hit(call.at);
        if (w.left === 0) spentUntil(end);
      }
      const over = windows.find(([, , w]) => w.count > w.limit);
      let response: Response;
      if (over) {
        fake.limited429++;
        response = reply(429, {
          message: "The maximum number of api calls allowed for " +
            `api/v1/people/match is ${over[2].limit} times per ${over[1]}. ` +
            "Please upgrade your plan from https://app.apollo.io/#/settings/plans/upgrade.",
        });
      } else if (typeof body !== "object" || body === null) {
        response = reply(400, { error: "The request body is not valid JSON." });
      } else {
        const { email, linkedin_url } = call.lookup;
        const p = findPerson(o.people, email, linkedin_url);
        if (fake.balance <= 0) {
          response = reply(422, {
            error: "Insufficient credits. Please upgrade your plan.",
          });
        } else if (!p) response = reply(200, { person: null });
        else {
          fake.billed++;
          fake.balance--;
          const [first, ...last] = p.full_name.split(" ");
          response = reply(200, {
            person: {
              id: `fake_apollo_${o.people.indexOf(p)}`,
              first_name: first,
              last_name: last.join(" ") || null,
              name: p.full_name,
              title: p.job_title,
              email: p.email ?? null,
              linkedin_url: p.linkedin_url
                ? `http://www.${normLinkedin(p.linkedin_url)}`
                : null,
              organization: p.job_company_name
                ? { name: p.job_company_name }
                : null,
            },
          });
        }
      }
      for (const [name, , w] of windows) {
        response.headers.set(`x-${name}-requests-left`, String(w.left));
        response.headers.set(`x-${name}-usage`, String(w.count));
        response.headers.set(`x-rate-limit-${name}`, String(w.limit));
      }
      return response;
    },
  );
}
