import { Agent, request, type buildConnector } from 'undici';
import type { CheckSpec } from '../../manifest/types.js';
import type { Check, CheckTarget } from '../types.js';
import { describeError } from './tcp.js';

type HttpSpec = Extract<CheckSpec, { kind: 'http' }>;
/** TLS settings for probing over HTTPS: undici's `connect` options (`ca`, `cert`, `key`, `servername`, `rejectUnauthorized`). */
export type ConnectOptions = buildConnector.BuildOptions;
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

/*
 * Checks over TLS get an agent per set of connect options (by identity: the
 * instances of a service share theirs), so a client certificate or CA is
 * only ever offered to the instances it was given for.
 */
const tlsAgents = new Map<ConnectOptions, Agent>();

function checkAgent(tls: ConnectOptions | undefined): Agent {
  if (tls === undefined) return (agent ??= new Agent({ pipelining: 0 }));
  let tlsAgent = tlsAgents.get(tls);
  if (!tlsAgent) {
    tlsAgent = new Agent({ pipelining: 0, connect: tls });
    tlsAgents.set(tls, tlsAgent);
  }
  return tlsAgent;
}

/** Closes the connections HTTP checks hold (none between checks); call on node shutdown. */
export async function closeHttpChecks(): Promise<void> {
  const closing = [...tlsAgents.values()];
  if (agent) closing.push(agent);
  agent = undefined;
  tlsAgents.clear();
  await Promise.all(closing.map((a) => a.close()));
}

/**
 * Consul semantics: 2xx passing, 429 warning (the instance is alive but
 * shedding load), anything else critical. Redirects are not followed: a health
 * endpoint that redirects is misconfigured, and says so by being critical.
 */
export class HttpCheck implements Check {
  readonly #spec: HttpSpec;
  readonly #headers: Record<string, string>;
  readonly #tls: ConnectOptions | undefined;

  /** With `tls`, the instance is probed over HTTPS with those settings (its service's `upstreamTls`). */
  constructor(spec: HttpSpec, tls?: ConnectOptions) {
    this.#spec = spec;
    this.#tls = tls;
    const headers: Record<string, string> = { 'user-agent': 'berth-health-check' };
    for (const [name, value] of Object.entries(spec.headers)) headers[name.toLowerCase()] = value;
    this.#headers = headers;
  }

  async run(target: CheckTarget, signal: AbortSignal): Promise<Outcome> {
    if (signal.aborted) return { status: 'critical', output: 'timeout' };
    const host = target.host.includes(':') ? `[${target.host}]` : target.host;
    const path = this.#spec.path.startsWith('/') ? this.#spec.path : `/${this.#spec.path}`;
    const url = `${this.#tls ? 'https' : 'http'}://${host}:${this.#spec.port ?? target.port}${path}`;
    try {
      const res = await request(url, {
        method: this.#spec.method,
        headers: this.#headers,
        signal,
        dispatcher: checkAgent(this.#tls),
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
