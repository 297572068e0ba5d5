import { randomUUID } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import { performance } from 'node:perf_hooks';
import type { Readable } from 'node:stream';
import { Agent, type Dispatcher } from 'undici';
import { MAX_WAIT_MS } from '../admin/discovery-watch.js';
import { delay, type Clock } from '../clock.js';
import { BerthError, type ErrorCode } from '../errors.js';
import type { PickOptions } from '../gateway/balancers/balancer.js';
import type { Target } from '../gateway/target.js';
import { retryDelay } from '../resilience/jitter.js';
import { REQUEST_ID_HEADER, saneRequestId, TIMEOUT_HEADER } from './context.js';
import { closedError, Discovery, type DiscoveredInstance, type ServiceView } from './discovery.js';
import { CLIENT_DEFAULTS, resolvePolicies, type ClientPolicies, type ResolvedPolicies } from './policies.js';
import { ServiceState, type Route } from './service.js';

export interface ClientOptions {
  /** The node's admin API. Default: `$BERTH_ADMIN` (Berth gives it to every instance), else `http://127.0.0.1:8081`. */
  admin?: string;
  /** Overrides of the gateway's default policies, for every service. */
  policies?: ClientPolicies;
  /** Overrides for one service, on top of `policies`. */
  services?: Record<string, ClientPolicies>;
  /** Told when the passing instances of a service the client follows change (for a log line). */
  onChange?: (service: string, instances: readonly DiscoveredInstance[]) => void;
  /** How long one watch query waits on the node (default 30 000 ms). */
  watchWaitMs?: number;
  /** Time for deadlines, try timeouts, backoff and breakers. Default: `performance.now()` and real timers. Tests pass a fake one. */
  clock?: Clock;
  /** Uniform in [0, 1), for the balancer and backoff jitter. Tests pass a fixed one. */
  random?: () => number;
}

export interface RequestOptions {
  /** Default GET. */
  method?: string;
  headers?: Record<string, string | string[] | number | undefined> | IncomingHttpHeaders;
  /** A call with a body is never retried (as through the gateway). */
  body?: string | Buffer | Uint8Array | Readable | null;
  /** A semver range (`^2`, `1.x`); default the service's stable version. */
  version?: string;
  /** Aborts the call, down to the socket, and the response body once it streams. */
  signal?: AbortSignal;
  /** The whole call, every try and backoff included; default the policies' `timeoutMs` (30 s). */
  timeoutMs?: number | undefined;
  /** The correlation id sent as `x-request-id`; default a new UUID. */
  requestId?: string;
}

/** An instance's answer, thin over undici's. */
export interface ClientResponse {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  /** The body as it streams; read it (or cancel it) every time, or its connection stays taken. */
  readonly body: Dispatcher.ResponseData['body'];
  /** The instance that answered. */
  readonly instance: string;
  readonly requestId: string;
  /** Retries it took. */
  readonly retries: number;
  json<T = unknown>(): Promise<T>;
  text(): Promise<string>;
}

/** The longest delay a Node timer takes. */
const MAX_TIMER_MS = 2_147_483_647;
/** Silence while a response body streams past which it is cut (the gateway's body idle timeout). */
const BODY_IDLE_MS = 5 * 60_000;
/** A retried answer's body is read to its end up to this size (keeping the connection), else the connection is dropped. */
const DISCARD_LIMIT = 64 * 1024;
/** Headers a caller may not set: hop-by-hop ones, and those the client sets itself. */
const OWN_HEADERS = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'expect', 'host', REQUEST_ID_HEADER, TIMEOUT_HEADER]);
const CONNECT_CODES = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL', 'ENOTFOUND', 'EAI_AGAIN', 'UND_ERR_CONNECT_TIMEOUT']);

const monotonicClock: Clock = {
  now: () => performance.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (timer) => clearTimeout(timer as NodeJS.Timeout),
};

type TryOutcome =
  | { kind: 'response'; res: Dispatcher.ResponseData }
  | { kind: 'failed'; failure: 'connect' | 'reset' | 'timeout'; code: ErrorCode; message: string; cause: unknown }
  | { kind: 'aborted'; reason: unknown };

interface Call {
  service: string;
  method: string;
  path: string;
  headers: string[];
  body: RequestOptions['body'];
  requestId: string;
  deadline: number;
  timeoutMs: number;
  signal: AbortSignal | undefined;
}

class TryTimeout extends Error {
  override name = 'TryTimeout';
}

/**
 * Calls other services of a Berth node from a Node service, with the
 * gateway's policies applied on the caller's side (docs/client.md): discovery
 * from the admin API kept current by a watch, peak-EWMA balancing, retries
 * under a budget, circuit breakers, and one deadline and request id carried
 * through a chain of calls.
 */
export class BerthClient {
  readonly #clock: Clock;
  readonly #random: () => number;
  readonly #agent: Agent;
  readonly #discovery: Discovery;
  readonly #defaults: ResolvedPolicies;
  readonly #perService = new Map<string, ResolvedPolicies>();
  readonly #services = new Map<string, ServiceState>();
  #closing: Promise<void> | undefined;

  constructor(options: ClientOptions = {}) {
    const admin = options.admin ?? process.env.BERTH_ADMIN ?? 'http://127.0.0.1:8081';
    let url: URL;
    try {
      url = new URL(admin);
    } catch {
      throw new TypeError(`berth/client: admin must be a URL like http://127.0.0.1:8081, got ${JSON.stringify(admin)}`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new TypeError(`berth/client: admin must be an http(s) URL, got ${JSON.stringify(admin)}`);
    this.#clock = options.clock ?? monotonicClock;
    this.#random = options.random ?? Math.random;
    this.#defaults = resolvePolicies(CLIENT_DEFAULTS, options.policies, 'policies');
    for (const [service, overrides] of Object.entries(options.services ?? {})) {
      this.#perService.set(service, resolvePolicies(this.#defaults, overrides, `services.${service}`));
    }
    const wait = options.watchWaitMs;
    if (wait !== undefined && !(wait >= 1 && wait <= MAX_WAIT_MS)) throw new RangeError(`berth/client: watchWaitMs must be from 1 to ${MAX_WAIT_MS} (what the node allows), got ${wait}`);
    this.#agent = new Agent({ connections: this.#defaults.instanceConcurrency });
    const onChange = options.onChange;
    this.#discovery = new Discovery({
      admin: url,
      dispatcher: this.#agent,
      clock: this.#clock,
      random: this.#random,
      ...(options.watchWaitMs !== undefined ? { waitMs: options.watchWaitMs } : {}),
      ...(onChange ? { onChange: (service: string, view: ServiceView) => onChange(service, view.instances) } : {}),
    });
  }

  /**
   * Calls `service` at `path` (`/users/42?full=1`) on one of its passing
   * instances. Resolves with the instance's answer, whatever its status;
   * rejects with a BerthError when no instance answered (the gateway's codes:
   * BERTH_ERR_NO_INSTANCE, BERTH_ERR_UPSTREAM_CONNECT / RESET / TIMEOUT /
   * STATUS, BERTH_ERR_CIRCUIT_OPEN…), or with the signal's reason when aborted.
   */
  async request(service: string, path: string, options: RequestOptions = {}): Promise<ClientResponse> {
    if (this.#closing) throw closedError();
    if (!path.startsWith('/')) throw new TypeError(`berth/client: the path must start with "/", got ${JSON.stringify(path)}`);
    const signal = options.signal;
    signal?.throwIfAborted();
    const requestId = options.requestId === undefined ? randomUUID() : saneRequestId(options.requestId);
    if (requestId === undefined) throw new TypeError(`berth/client: requestId must be 1 to 200 visible ASCII characters, got ${JSON.stringify(options.requestId)}`);
    const timeoutMs = options.timeoutMs ?? (this.#perService.get(service) ?? this.#defaults).timeoutMs;
    // Past 2^31 - 1 ms a Node timer fires at once.
    if (!(timeoutMs >= 0 && timeoutMs <= MAX_TIMER_MS)) throw new RangeError(`berth/client: timeoutMs must be a number from 0 to ${MAX_TIMER_MS}, got ${timeoutMs}`);
    const call: Call = {
      service,
      method: (options.method ?? 'GET').toUpperCase(),
      path,
      headers: flatHeaders(options.headers),
      body: options.body,
      requestId,
      deadline: this.#clock.now() + timeoutMs,
      timeoutMs,
      signal,
    };
    const view = this.#discovery.peek(service) ?? (await this.#discover(call));
    // Made once discovery knows the service: a name it does not know leaves nothing behind.
    const state = this.#state(service);
    state.sync(view);
    return this.#call(state, state.route(options.version), call);
  }

  /** The passing instances of a service as the client knows them (fetched, and then watched, the first time). */
  async instances(service: string): Promise<readonly DiscoveredInstance[]> {
    if (this.#closing) throw closedError();
    return (this.#discovery.peek(service) ?? (await this.#discovery.get(service))).instances;
  }

  /** Stops the watches and closes the connections once the calls in flight are done. Later calls reject with BERTH_ERR_CLIENT_CLOSED. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      await this.#discovery.close();
      await this.#agent.close();
    })();
    return this.#closing;
  }

  #state(service: string): ServiceState {
    let state = this.#services.get(service);
    if (state === undefined) {
      state = new ServiceState(service, this.#perService.get(service) ?? this.#defaults, this.#clock, this.#random);
      this.#services.set(service, state);
    }
    return state;
  }

  /** The first discovery of a service, within the call's deadline and signal (the fetch itself goes on for later calls). */
  #discover(call: Call): Promise<ServiceView> {
    const clock = this.#clock;
    const { signal } = call;
    return new Promise((resolve, reject) => {
      const finish = (): void => {
        clock.clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
      };
      const onAbort = (): void => {
        finish();
        reject(signal?.reason as Error);
      };
      const timer = clock.setTimeout(() => {
        finish();
        reject(new BerthError('BERTH_ERR_UPSTREAM_TIMEOUT', `${call.service}: discovering its instances took longer than the call's ${call.timeoutMs}ms`));
      }, Math.max(0, call.deadline - clock.now()));
      signal?.addEventListener('abort', onAbort, { once: true });
      this.#discovery.get(call.service).then(
        (view) => {
          finish();
          resolve(view);
        },
        (err: Error) => {
          finish();
          reject(err);
        },
      );
    });
  }

  /**
   * One call through the policies, in the gateway's order (src/gateway/exchange.ts):
   * service breaker → [ balancer (skipping open-breaker and full instances, and
   * those already tried) → per-try timeout → instance ] → retry (condition,
   * budget, backoff, deadline) → next try …
   */
  async #call(state: ServiceState, route: Route, call: Call): Promise<ClientResponse> {
    const clock = this.#clock;
    const policies = state.policies;
    const hasBody = call.body !== undefined && call.body !== null;
    const r = policies.retries;
    // A body may be a stream, read once: a call with one cannot be replayed.
    const retries = r && r.attempts > 0 && !hasBody && r.methods.includes(call.method) ? r : null;
    const breaker = state.breaker;
    if (breaker && !breaker.tryAcquire()) throw new BerthError('BERTH_ERR_CIRCUIT_OPEN', `the circuit breaker of ${call.service} is open`);
    const budget = state.budget;
    budget.requestStarted(clock.now());
    let slotHeld = false;
    let tried: Target[] | undefined;
    let retryCount = 0;
    let lastFailure: BerthError | undefined;
    let verdict: 'success' | 'failure' | 'cancel' = 'failure';

    const mayRetry = (): boolean => {
      if (!retries || retryCount >= retries.attempts) return false;
      const now = clock.now();
      if (call.deadline - now < 1) return false;
      return budget.tryAcquire(now);
    };
    /** Waits out the backoff before retry number retryCount + 1; throws when it would not end before the deadline. */
    const backoff = async (target: Target): Promise<void> => {
      slotHeld = true;
      retryCount++;
      (tried ??= []).push(target);
      const wait = retryDelay(retryCount, retries!.backoffMs, retries!.maxBackoffMs, this.#random);
      if (clock.now() + wait >= call.deadline) throw lastFailure!;
      if (wait >= 1) await delay(clock, wait, call.signal);
    };

    try {
      for (;;) {
        const startedAt = clock.now();
        const left = call.deadline - startedAt;
        if (left < 1) throw lastFailure ?? new BerthError('BERTH_ERR_UPSTREAM_TIMEOUT', `${call.service}: the call timed out after ${call.timeoutMs}ms`);
        const target = this.#pick(state, route, startedAt, tried, (code, message) => lastFailure ?? new BerthError(code, message));
        target.acquire();
        const tryTimeout = retries ? Math.min(retries.tryTimeoutMs, left) : left;
        let outcome: TryOutcome;
        try {
          outcome = await this.#try(target, call, tryTimeout);
        } catch (err) {
          // The caller's own mistake (a header or body undici refuses): no verdict on the instance or the service.
          target.release();
          target.breaker?.onCancel();
          verdict = 'cancel';
          throw err;
        }
        target.release();
        const now = clock.now();
        if (slotHeld) {
          // The slot counted this try while it was a retry; a next retry has its own.
          budget.release();
          slotHeld = false;
        }
        // Every try feeds the instance's latency estimate and breaker, retried or not.
        if (outcome.kind === 'aborted') target.breaker?.onCancel();
        else {
          const failed = outcome.kind === 'failed' || outcome.res.statusCode >= 500;
          target.ewma.observe(now - startedAt, failed, now);
          if (failed) target.breaker?.onFailure();
          else target.breaker?.onSuccess();
        }

        if (outcome.kind === 'aborted') {
          verdict = 'cancel';
          throw outcome.reason;
        }
        if (outcome.kind === 'response') {
          const res = outcome.res;
          if (retries?.on.statuses.includes(res.statusCode) && mayRetry()) {
            lastFailure = new BerthError('BERTH_ERR_UPSTREAM_STATUS', `${call.service}: instance ${target.id} answered ${res.statusCode}`);
            await res.body.dump({ limit: DISCARD_LIMIT }).catch(() => undefined);
            await backoff(target);
            continue;
          }
          verdict = res.statusCode >= 500 ? 'failure' : 'success';
          return answer(res, target.id, call.requestId, retryCount);
        }
        lastFailure = new BerthError(outcome.code, `${call.service}: ${outcome.message} (instance ${target.id})`, { cause: outcome.cause });
        if (retries?.on[outcome.failure] && mayRetry()) {
          await backoff(target);
          continue;
        }
        throw lastFailure;
      }
    } catch (err) {
      if (call.signal?.aborted && err === call.signal.reason) verdict = 'cancel';
      throw err;
    } finally {
      if (slotHeld) budget.release();
      budget.requestFinished();
      if (breaker) {
        if (verdict === 'success') breaker.onSuccess();
        else if (verdict === 'cancel') breaker.onCancel();
        else breaker.onFailure();
      }
    }
  }

  /**
   * The balancer's pick, passing over instances that are full or whose breaker
   * is open (as if already tried), as the gateway does. Throws when none can take the call.
   */
  #pick(state: ServiceState, route: Route, now: number, tried: Target[] | undefined, error: (code: ErrorCode, message: string) => BerthError): Target {
    const limit = state.policies.instanceConcurrency;
    const options: PickOptions = { now, ...(tried ? { exclude: tried } : {}) };
    let passed: Target[] | undefined;
    let open = false;
    let full = false;
    for (let i = 0; i <= route.size; i++) {
      const target = route.balancer.pick(options);
      // Every other instance excluded, the balancer hands back one passed over: none is left.
      if (!target || passed?.includes(target)) break;
      if (target.inflight >= limit) full = true;
      else if (target.breaker === null || target.breaker.tryAcquire()) return target;
      else open = true;
      passed ??= tried ? [...tried] : [];
      passed.push(target);
      options.exclude = passed;
    }
    const at = `${state.name}@${route.version}`;
    if (open) throw error('BERTH_ERR_CIRCUIT_OPEN', `every instance of ${at} that could take the call has its circuit breaker open`);
    if (full) throw error('BERTH_ERR_OVERLOADED', `every instance of ${at} has ${limit} calls in flight from this client`);
    throw error('BERTH_ERR_NO_INSTANCE', `no passing instance of ${at}`);
  }

  /** One try at one instance; never rejects for the instance's failures, only for the caller's own mistakes. */
  async #try(target: Target, call: Call, tryTimeout: number): Promise<TryOutcome> {
    const clock = this.#clock;
    const caller = call.signal;
    // Aborted between tries (while a retried answer was being read past): no new try.
    if (caller?.aborted) return { kind: 'aborted', reason: caller.reason };
    const controller = new AbortController();
    // The try's timeout aborts the request, so its connection closes and the instance sees the cancellation.
    const timer = clock.setTimeout(() => controller.abort(new TryTimeout(`no answer within ${Math.round(tryTimeout)}ms`)), tryTimeout);
    const onAbort = (): void => controller.abort(caller?.reason);
    caller?.addEventListener('abort', onAbort, { once: true });
    const headers = [...call.headers, REQUEST_ID_HEADER, call.requestId, TIMEOUT_HEADER, String(Math.max(1, Math.floor(tryTimeout)))];
    try {
      const res = await this.#agent.request({
        origin: target.origin,
        path: call.path,
        method: call.method,
        headers,
        body: call.body ?? null,
        signal: controller.signal,
        // The try timer above covers the headers; undici's would only duplicate it.
        headersTimeout: 0,
        bodyTimeout: BODY_IDLE_MS,
      });
      clock.clearTimeout(timer);
      // The caller's signal still covers the body while it streams.
      if (caller) res.body.once('close', () => caller.removeEventListener('abort', onAbort));
      return { kind: 'response', res };
    } catch (err) {
      clock.clearTimeout(timer);
      caller?.removeEventListener('abort', onAbort);
      if (caller?.aborted) return { kind: 'aborted', reason: caller.reason };
      if (err instanceof TryTimeout) return { kind: 'failed', failure: 'timeout', code: 'BERTH_ERR_UPSTREAM_TIMEOUT', message: `the instance did not answer in time (${err.message})`, cause: err };
      const code = (err as NodeJS.ErrnoException).code;
      // A header or body undici refuses is the caller's mistake, not the instance's.
      if (code === 'UND_ERR_INVALID_ARG' || code === 'UND_ERR_NOT_SUPPORTED') throw err;
      if (code !== undefined && CONNECT_CODES.has(code)) return { kind: 'failed', failure: 'connect', code: 'BERTH_ERR_UPSTREAM_CONNECT', message: `cannot connect to the instance (${code})`, cause: err };
      return { kind: 'failed', failure: 'reset', code: 'BERTH_ERR_UPSTREAM_RESET', message: `the instance closed the connection (${code ?? (err as Error).message})`, cause: err };
    }
  }
}

/** A client for the services of the node whose admin API is `options.admin` (default `$BERTH_ADMIN`). */
export function createClient(options: ClientOptions = {}): BerthClient {
  return new BerthClient(options);
}

function answer(res: Dispatcher.ResponseData, instance: string, requestId: string, retries: number): ClientResponse {
  const body = res.body;
  return {
    status: res.statusCode,
    headers: res.headers,
    body,
    instance,
    requestId,
    retries,
    json: <T>() => body.json() as Promise<T>,
    text: () => body.text(),
  };
}

/** The caller's headers as a flat list, less those the client sets or that describe one connection. */
function flatHeaders(headers: RequestOptions['headers']): string[] {
  const out: string[] = [];
  if (headers === undefined) return out;
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined || OWN_HEADERS.has(name.toLowerCase())) continue;
    if (Array.isArray(value)) for (const v of value) out.push(name, String(v));
    else out.push(name, String(value));
  }
  return out;
}
