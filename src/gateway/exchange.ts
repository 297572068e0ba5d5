import type { IncomingMessage, ServerResponse } from 'node:http';
import { performance } from 'node:perf_hooks';
import type { Readable } from 'node:stream';
import type { UpstreamClient } from './http1/client.js';
import { ErrorCodes, type ErrorCode } from '../errors.js';
import type { RetrySpec } from '../manifest/types.js';
import type { Bulkhead } from '../resilience/bulkhead.js';
import type { CircuitBreaker } from '../resilience/circuit-breaker.js';
import type { OutcomeKind } from '../resilience/outlier-detector.js';
import { retryDelay } from '../resilience/jitter.js';
import type { RetryBudget } from '../resilience/retry-budget.js';
import type { PickOptions } from './balancers/balancer.js';
import { BodyLimit } from './body-limit.js';
import { upstreamHeaders } from './headers.js';
import type { GatewayObserver, RetryReason } from './observer.js';
import { sendTry, type Try, type TryListener, type TryOutcome } from './proxy.js';
import type { RouteMatch } from './router.js';
import type { ServiceRuntime } from './service-runtime.js';
import type { Target } from './target.js';

export type RoutedMatch = Extract<RouteMatch, { ok: true }>;

export interface ExchangeDeps {
  client: UpstreamClient;
  observer: GatewayObserver;
  bodyIdleTimeoutMs: number;
  random: () => number;
}

/** What a request's log line and metrics need, taken when it arrives. */
export interface RequestContext {
  /** performance.now() at arrival. */
  started: number;
  requestId: string;
  method: string;
  path: string;
  /** The client's address: the peer's, or from X-Forwarded-For when the peer is a trusted proxy. */
  clientIp: string;
  /** The X-Forwarded-For instances receive. */
  forwardedFor: string;
  /** How the client reached the gateway (X-Forwarded-Proto). */
  proto: 'http' | 'https';
  /** The declared Content-Length (0 for chunked bodies, which are counted as they stream). */
  bytesIn: number;
  /** A body past this many bytes gets 413 (a chunked one is cut when it gets there). */
  maxBodyBytes: number;
  /** performance.now() past which the request gets 504 (timeout, or less if the client asked). */
  deadline: number;
  hashKey: string | undefined;
  /** Signed identity headers for the instance (flat name, value list), or null when the route needs no authentication. */
  identity: string[] | null;
  /** The authenticated subject, for the access log. */
  subject: string | null;
}

/**
 * One request through a service's policy chain, in this order
 * (docs/resilience.md):
 *
 *   service breaker → bulkhead (queue) → [ try: balancer (skipping ejected,
 *   full and open-breaker instances, and those already tried) → per-try
 *   timeout → instance ] → retry (budget, backoff) → next try …
 *
 * all inside the request's deadline. Outcomes feed the instance's latency
 * estimate, breaker and outlier detector, and the service breaker.
 * Callback-driven, one object per request: this is the gateway's hot path.
 */
export class Exchange implements TryListener {
  readonly #deps: ExchangeDeps;
  readonly #req: IncomingMessage;
  readonly #res: ServerResponse;
  readonly #match: RoutedMatch;
  readonly #ctx: RequestContext;
  readonly #retryPolicy: RetrySpec | null;
  readonly #hasBody: boolean;
  // The policy objects this request took a slot from: a reload may replace the service's.
  readonly #runtime: ServiceRuntime;
  readonly #budget: RetryBudget;
  #bulkhead: Bulkhead | undefined;
  #serviceBreaker: CircuitBreaker | null = null;
  /** The budget's slot of the retry in flight (or in its backoff). */
  #slotHeld = false;
  /** A slot taken for the retry about to be scheduled. */
  #slotGranted = false;
  #tried: Target[] | undefined;
  #try: Try | undefined;
  /** The instance of the try in flight, and when it was sent (performance.now()). */
  #target: Target | undefined;
  #tryStarted = 0;
  #timer: NodeJS.Timeout | undefined;
  #cancelQueue: (() => void) | undefined;
  #retryCount = 0;
  #finished = false;
  /** The last try's failure, answered if no further try is possible. */
  #lastFailure: { code: ErrorCode; message: string; status: number } | undefined;

  constructor(deps: ExchangeDeps, req: IncomingMessage, res: ServerResponse, match: RoutedMatch, runtime: ServiceRuntime, ctx: RequestContext) {
    this.#deps = deps;
    this.#req = req;
    this.#res = res;
    this.#match = match;
    this.#ctx = ctx;
    this.#runtime = runtime;
    this.#budget = runtime.budget;
    const retries = runtime.policies.retries;
    const contentLength = req.headers['content-length'];
    this.#hasBody = contentLength !== undefined ? contentLength !== '0' : req.headers['transfer-encoding'] !== undefined;
    // A body is streamed, not kept: a request with one cannot be replayed.
    this.#retryPolicy = retries && retries.attempts > 0 && !this.#hasBody && retries.methods.includes(ctx.method) ? retries : null;
  }

  start(): void {
    // on, not once (no wrapper per request): #finished guards the later calls.
    this.#res.on('close', this.#onClientClose);
    const breaker = this.#runtime.breaker;
    if (breaker && !breaker.tryAcquire()) {
      const until = breaker.snapshot().openUntil;
      const wait = until === null ? 1 : Math.max(1, Math.ceil((until - Date.now()) / 1000));
      this.#reject('BERTH_ERR_CIRCUIT_OPEN', `the circuit breaker of ${this.#match.service.service} is open`, wait);
      return;
    }
    this.#serviceBreaker = breaker;
    const bulkhead = this.#runtime.bulkhead;
    if (bulkhead.tryAcquire()) {
      this.#admitted(bulkhead);
      return;
    }
    const cancel = bulkhead.enqueue(() => {
      this.#cancelQueue = undefined;
      clearTimeout(this.#timer);
      this.#timer = undefined;
      if (this.#finished) bulkhead.release();
      else this.#admitted(bulkhead);
    });
    if (!cancel) {
      this.#serviceBreaker?.onCancel();
      this.#serviceBreaker = null;
      this.#reject('BERTH_ERR_OVERLOADED', `${this.#match.service.service} has ${this.#runtime.policies.limits.concurrency} requests in flight and ${this.#runtime.policies.limits.queue} waiting`, 1);
      return;
    }
    this.#cancelQueue = cancel;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#cancelQueue?.();
      this.#cancelQueue = undefined;
      this.#fail({ code: 'BERTH_ERR_UPSTREAM_TIMEOUT', message: 'the request timed out waiting for a free slot', status: 504 });
    }, Math.max(1, this.#ctx.deadline - performance.now()));
  }

  #admitted(bulkhead: Bulkhead): void {
    this.#bulkhead = bulkhead;
    this.#budget.requestStarted(this.#ctx.started);
    this.#send();
  }

  /** One try: pick an instance and send. */
  #send(): void {
    const now = performance.now();
    const left = this.#ctx.deadline - now;
    if (left < 1) {
      this.#fail(this.#lastFailure ?? { code: 'BERTH_ERR_UPSTREAM_TIMEOUT', message: 'the request timed out', status: 504 });
      return;
    }
    const target = this.#pick(now);
    if (!target) {
      const { service, version } = this.#match;
      this.#fail(this.#lastFailure ?? { code: 'BERTH_ERR_NO_INSTANCE', message: `no passing instance of ${service.service}@${version.version}`, status: 503 });
      return;
    }
    target.acquire();
    this.#target = target;
    this.#tryStarted = now;
    const tryTimeout = this.#retryPolicy ? Math.min(this.#retryPolicy.tryTimeoutMs, left) : left;
    const requestId = this.#ctx.requestId;
    this.#try = sendTry(
      this.#res,
      {
        client: this.#runtime.client ?? this.#deps.client,
        origin: target.origin,
        path: this.#match.path,
        headers: upstreamHeaders(this.#req, { requestId, prefix: this.#match.prefix, proto: this.#ctx.proto, timeoutMs: tryTimeout, forwardedFor: this.#ctx.forwardedFor, identity: this.#ctx.identity }),
        body: this.#hasBody ? this.#body() : null,
        headersTimeoutMs: tryTimeout,
        bodyIdleTimeoutMs: this.#deps.bodyIdleTimeoutMs,
        requestId,
      },
      this,
    );
  }

  /**
   * The body sent to the instance. A declared Content-Length was checked
   * against the limit before; a chunked body is counted as it streams and cut
   * at the limit (the try then fails with 'too-large', answered 413).
   */
  #body(): Readable {
    const req = this.#req;
    if (req.headers['content-length'] !== undefined || this.#ctx.maxBodyBytes === Infinity) return req;
    return req.pipe(new BodyLimit(this.#ctx.maxBodyBytes));
  }

  /** TryListener: the try's status is known. */
  discard(status: number): boolean {
    return this.#retryStatus(status);
  }

  /** TryListener: the try ended. */
  tryEnded(outcome: TryOutcome): void {
    this.#onOutcome(this.#target!, this.#tryStarted, outcome);
  }

  /**
   * The balancer's pick, passing over instances that are full or whose breaker
   * is open (as if already tried). Undefined when none can take the request.
   */
  #pick(now: number): Target | undefined {
    const balancer = this.#match.version.balancer;
    const limit = this.#runtime.policies.limits.instanceConcurrency;
    const options: PickOptions = { now, exclude: this.#tried, hashKey: this.#ctx.hashKey };
    let passed: Target[] | undefined;
    for (let i = 0; i <= this.#match.version.instances; i++) {
      const target = balancer.pick(options);
      if (!target) return undefined;
      // Every other instance excluded, the balancer hands back a tried one: that is a retry to the same instance, allowed only then.
      if (passed?.includes(target)) return undefined;
      if (target.inflight < limit && (target.breaker === null || target.breaker.tryAcquire())) return target;
      passed ??= this.#tried ? [...this.#tried] : [];
      passed.push(target);
      options.exclude = passed;
    }
    return undefined;
  }

  /** Asked when a try's status is known: true when it will be retried (and so not sent to the client). */
  #retryStatus(status: number): boolean {
    const retries = this.#retryPolicy;
    if (!retries || !retries.on.statuses.includes(status)) return false;
    return this.#mayRetry();
  }

  #mayRetry(): boolean {
    const retries = this.#retryPolicy;
    if (!retries || this.#retryCount >= retries.attempts || this.#res.headersSent) return false;
    // A retry that could not even start before the deadline is not worth the budget.
    const now = performance.now();
    if (this.#ctx.deadline - now < 1) return false;
    if (!this.#budget.tryAcquire(now)) {
      this.#deps.observer.retryRefused(this.#route());
      return false;
    }
    this.#slotGranted = true;
    return true;
  }

  #onOutcome(target: Target, startedAt: number, outcome: TryOutcome): void {
    this.#try = undefined;
    target.release();
    const now = performance.now();
    const rtt = now - startedAt;
    if (this.#slotHeld) {
      // The slot counted this try while it was a retry; a next retry has its own.
      this.#budget.release();
      this.#slotHeld = false;
    }
    const kind = outcomeKind(outcome);
    if (kind === null) target.breaker?.onCancel();
    else {
      target.ewma.observe(rtt, kind !== 'success', now);
      this.#runtime.detectorOf(this.#match.version.version)?.record(target.id, kind, rtt);
      if (kind === 'success') target.breaker?.onSuccess();
      else target.breaker?.onFailure();
    }

    switch (outcome.kind) {
      case 'response':
        this.#finish(outcome.status, outcome.bytesOut, null);
        return;
      case 'discarded':
        // #retryStatus already took the budget's slot for this retry.
        this.#lastFailure = { code: 'BERTH_ERR_UPSTREAM_STATUS', message: `the instance answered ${outcome.status}`, status: outcome.status };
        this.#retryAfterBackoff(target, `${outcome.status}` as RetryReason);
        return;
      case 'failed': {
        if (outcome.failure === 'client') {
          this.#finish(499, outcome.bytesOut, outcome.code);
          return;
        }
        if (outcome.failure === 'too-large') {
          // What is left of the body is not read: the connection cannot carry another request.
          this.#res.shouldKeepAlive = false;
          this.#fail({ code: 'BERTH_ERR_BODY_TOO_LARGE', message: `the request body is larger than the ${this.#ctx.maxBodyBytes} bytes allowed here`, status: 413 });
          return;
        }
        this.#deps.observer.upstreamFailed(outcome.failure, { ...this.#route(), instance: target.id });
        if (outcome.responded) {
          this.#finish(outcome.status, outcome.bytesOut, outcome.code);
          return;
        }
        this.#lastFailure = { code: outcome.code, message: outcome.message, status: ErrorCodes[outcome.code].status };
        if (this.#retryPolicy?.on[outcome.failure] && this.#mayRetry()) {
          this.#retryAfterBackoff(target, outcome.failure);
          return;
        }
        this.#fail(this.#lastFailure);
        return;
      }
    }
  }

  #retryAfterBackoff(target: Target, reason: RetryReason): void {
    const retries = this.#retryPolicy!;
    this.#slotHeld = this.#slotGranted;
    this.#slotGranted = false;
    this.#retryCount++;
    (this.#tried ??= []).push(target);
    this.#deps.observer.retried(this.#route(), reason);
    const wait = retryDelay(this.#retryCount, retries.backoffMs, retries.maxBackoffMs, this.#deps.random);
    if (performance.now() + wait >= this.#ctx.deadline) {
      this.#fail(this.#lastFailure ?? { code: 'BERTH_ERR_UPSTREAM_TIMEOUT', message: 'the request timed out', status: 504 });
      return;
    }
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      if (!this.#finished) this.#send();
    }, wait);
  }

  readonly #onClientClose = (): void => {
    if (this.#finished) return;
    // The client left: cancel the try down to the instance's socket, or stop waiting.
    if (this.#try) {
      this.#try.cancel('client');
      return;
    }
    this.#finish(499, 0, 'BERTH_ERR_UPSTREAM_RESET');
  };

  /** The gateway's own refusal (breaker open, bulkhead full), before any slot was taken. */
  #reject(code: ErrorCode, message: string, retryAfterSeconds: number): void {
    this.#deps.observer.rejected(this.#route(), code);
    answer(this.#res, code, message, this.#ctx.requestId, retryAfterSeconds);
    this.#finish(ErrorCodes[code].status, 0, code);
  }

  #fail(failure: { code: ErrorCode; message: string; status: number }): void {
    if (failure.code === 'BERTH_ERR_UPSTREAM_STATUS') {
      // Every try answered a retryable status and no retry is left: the client gets the status, without the body that was read past.
      answer(this.#res, failure.code, failure.message, this.#ctx.requestId, undefined, failure.status);
    } else answer(this.#res, failure.code, failure.message, this.#ctx.requestId, failure.code === 'BERTH_ERR_NO_INSTANCE' ? 1 : undefined);
    this.#finish(failure.status, 0, failure.code);
  }

  #finish(status: number, bytesOut: number, error: ErrorCode | null): void {
    if (this.#finished) return;
    this.#finished = true;
    clearTimeout(this.#timer);
    this.#cancelQueue?.();
    if (this.#slotHeld || this.#slotGranted) {
      this.#budget.release();
      this.#slotHeld = this.#slotGranted = false;
    }
    if (this.#bulkhead) {
      this.#bulkhead.release();
      this.#budget.requestFinished();
    }
    if (this.#serviceBreaker) {
      if (status === 499) this.#serviceBreaker.onCancel();
      else if (status >= 500) this.#serviceBreaker.onFailure();
      else this.#serviceBreaker.onSuccess();
    }
    const ctx = this.#ctx;
    const { group, service, version } = this.#match;
    this.#deps.observer.requestFinished({
      requestId: ctx.requestId,
      method: ctx.method,
      path: ctx.path,
      group: group.name,
      service: service.service,
      version: version.version,
      instance: this.#target?.id ?? null,
      status,
      bytesIn: ctx.bytesIn,
      bytesOut,
      durationMs: performance.now() - ctx.started,
      clientIp: ctx.clientIp,
      error,
      retries: this.#retryCount,
      subject: ctx.subject,
    });
  }

  #route(): { group: string; service: string; version: string } {
    return { group: this.#match.group.name, service: this.#match.service.service, version: this.#match.version.version };
  }
}

/** success / error (5xx) / gateway-error (connect, reset, timeout) for the breakers and the outlier detector; null: no verdict (the client left). */
function outcomeKind(outcome: TryOutcome): OutcomeKind | null {
  switch (outcome.kind) {
    case 'response':
      return outcome.status >= 500 ? 'error' : 'success';
    case 'discarded':
      return outcome.status >= 500 ? 'error' : 'success';
    case 'failed':
      // The client's fault, not the instance's: no verdict.
      return outcome.failure === 'client' || outcome.failure === 'too-large' ? null : 'gateway-error';
  }
}

/** The gateway's own answer: JSON with a stable code and the request id, never a stack trace. */
export function answer(
  res: ServerResponse,
  code: ErrorCode,
  message: string,
  requestId: string,
  retryAfterSeconds?: number,
  status: number = ErrorCodes[code].status,
  extra?: Record<string, string>,
): void {
  if (res.headersSent || res.destroyed) return;
  const body = JSON.stringify({ code, message, requestId });
  const headers: Record<string, string | number> = { ...extra, 'x-request-id': requestId, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) };
  if (retryAfterSeconds !== undefined) headers['retry-after'] = String(retryAfterSeconds);
  res.writeHead(status, headers);
  res.end(res.req.method === 'HEAD' ? undefined : body);
}
