import { Agent, request } from 'undici';
import type { CheckSpec } from '../../manifest/types.js';
import type { Check, CheckTarget } from '../types.js';
import { describeError } from './tcp.js';

type HttpSpec = Extract<CheckSpec, { kind: 'http' }>;
type Outcome = Awaited<ReturnType<Check['run']>>;

/** At most this much of a response body is read; the rest is discarded with the connection. */
const BODY_CAP = 4096;
/** Body text shown after a non-2xx status (`HTTP 503: database down`). */
const SNIPPET_CAP = 200;

/*
 * One agent for every HTTP check of the process, with keep-alive off: a check
 * every few seconds gains nothing from a pooled socket, and an idle pooled
 * socket per instance is a handle that outlives the check (and keeps a test
 * process alive). Created lazily so `closeHttpChecks` can be followed by new checks.
 */
let agent: Agent | undefined;

function checkAgent(): Agent {
  agent ??= new Agent({ pipelining: 0 });
  return agent;
}

/** Closes the connections HTTP checks hold (none between checks); call on node shutdown. */
export async function closeHttpChecks(): Promise<void> {
  const closing = agent;
  agent = undefined;
  await closing?.close();
}

/**
 * Consul semantics: 2xx passing, 429 warning (the instance is alive but
 * shedding load), anything else critical. Redirects are not followed: a health
 * endpoint that redirects is misconfigured, and says so by being critical.
 */
export class HttpCheck implements Check {
  readonly #spec: HttpSpec;
  readonly #headers: Record<string, string>;

  constructor(spec: HttpSpec) {
    this.#spec = spec;
    const headers: Record<string, string> = { 'user-agent': 'berth-health-check' };
    for (const [name, value] of Object.entries(spec.headers)) headers[name.toLowerCase()] = value;
    this.#headers = headers;
  }

  async run(target: CheckTarget, signal: AbortSignal): Promise<Outcome> {
    if (signal.aborted) return { status: 'critical', output: 'timeout' };
    const host = target.host.includes(':') ? `[${target.host}]` : target.host;
    const path = this.#spec.path.startsWith('/') ? this.#spec.path : `/${this.#spec.path}`;
    const url = `http://${host}:${this.#spec.port ?? target.port}${path}`;
    try {
      const res = await request(url, {
        method: this.#spec.method,
        headers: this.#headers,
        signal,
        dispatcher: checkAgent(),
      });
      const body = await readCapped(res.body);
      const code = res.statusCode;
      if (code >= 200 && code < 300) return { status: 'passing', output: `HTTP ${code}` };
      const snippet = body.replace(/\s+/g, ' ').trim().slice(0, SNIPPET_CAP);
      const output = snippet ? `HTTP ${code}: ${snippet}` : `HTTP ${code}`;
      return { status: code === 429 ? 'warning' : 'critical', output };
    } catch (err) {
      if (signal.aborted) return { status: 'critical', output: 'timeout' };
      return { status: 'critical', output: describeError(err) };
    }
  }
}

async function readCapped(body: AsyncIterable<Buffer>): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  // Leaving the loop early destroys the stream, which with keep-alive off closes the socket.
  for await (const chunk of body) {
    chunks.push(chunk);
    size += chunk.length;
    if (size >= BODY_CAP) break;
  }
  return Buffer.concat(chunks).subarray(0, BODY_CAP).toString('utf8');
}
