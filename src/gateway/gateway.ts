import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { Agent } from 'undici';
import type { Catalog } from '../catalog/catalog.js';
import { systemClock, type Clock } from '../clock.js';
import { BerthError, ErrorCodes, type ErrorCode } from '../errors.js';
import type { BalancerSpec, ListenSpec, NodeSpec, ServiceSpec } from '../manifest/types.js';
import type { Logger } from '../telemetry/logger.js';
import type { Drainer } from '../supervisor/instance.js';
import { answer, Exchange, type ExchangeDeps, type RequestContext } from './exchange.js';
import { framingProblem, normalizeTarget } from '../security/request-target.js';
import { requestedTimeoutOf, requestIdOf } from './headers.js';
import type { GatewayObserver } from './observer.js';
import { compileRouteTable, type RouteTable } from './route-table.js';
import { matchRoute, type RouteMatch } from './router.js';
import { ServiceRuntime, type PolicyState } from './service-runtime.js';
import type { Target } from './target.js';
import { proxyUpgrade } from './upgrade.js';

export interface GatewayDeps {
  catalog: Catalog;
  logger: Logger;
  observer: GatewayObserver;
  random?: () => number;
  /** For breakers and ejections (default: the system clock). */
  clock?: Clock;
}

interface Listener {
  key: string;
  server: Server;
  /** The bound port (differs from the declared one when that was 0). */
  port: number;
  /** The port as declared in the manifest: what routes are keyed by. */
  declaredPort: number;
  main: boolean;
}

/** Between a response's headers arriving and its body finishing, this much silence ends it. */
const BODY_IDLE_TIMEOUT_MS = 300_000;
/** Keep-alive connections to instances, per instance. */
const CONNECTIONS_PER_INSTANCE = 256;

/**
 * The data plane: listeners → route → balancer → instance. The route table is
 * compiled from the manifest's groups and the catalog whenever either changes
 * and swapped in one assignment; a request reads the table once, at its start.
 */
export class Gateway implements Drainer {
  readonly #deps: GatewayDeps;
  readonly #log: Logger;
  readonly #agent: Agent;
  readonly #targets = new Map<string, Target>();
  /** Policy state per service (`group/service`), kept across route tables. */
  readonly #runtimes = new Map<string, ServiceRuntime>();
  readonly #exchangeDeps: ExchangeDeps;
  readonly #listeners = new Map<string, Listener>();
  #spec: NodeSpec | undefined;
  #table: RouteTable = { prefixes: [], hosts: new Map(), ports: new Map(), routes: 0, instances: 0, live: new Set() };
  #rebuildQueued = false;
  #unsubscribe: (() => void) | undefined;
  #rebuildWaiters: (() => void)[] = [];

  constructor(deps: GatewayDeps) {
    this.#deps = deps;
    this.#log = deps.logger.child({ component: 'gateway' });
    this.#agent = new Agent({ connections: CONNECTIONS_PER_INSTANCE, keepAliveTimeout: 4_000, keepAliveMaxTimeout: 60_000 });
    this.#exchangeDeps = { dispatcher: this.#agent, observer: deps.observer, bodyIdleTimeoutMs: BODY_IDLE_TIMEOUT_MS, random: deps.random ?? Math.random };
  }

  /** The live state of a service's policies (breakers, budget, limits, ejections), for the admin API. */
  policyState(group: string, service: string): PolicyState | undefined {
    return this.#runtimes.get(`${group}/${service}`)?.snapshot();
  }

  /** URL of the main listener, and of each group with a port of its own. */
  get urls(): { main: string; groups: Record<string, string> } {
    const groups: Record<string, string> = {};
    let main = '';
    for (const l of this.#listeners.values()) {
      const url = `http://${formatHost(l.key.slice(0, l.key.lastIndexOf(':')))}:${l.port}`;
      if (l.main) main = url;
      else groups[l.key.split('|')[1] ?? ''] = url;
    }
    return { main, groups };
  }

  /** The table in force (read-only; for the admin API and tests). */
  get table(): RouteTable {
    return this.#table;
  }

  /**
   * Applies a manifest: opens listeners it adds, closes those it drops, and
   * recompiles routes. The first call also starts following the catalog.
   */
  async configure(spec: NodeSpec): Promise<void> {
    this.#spec = spec;
    const wanted = new Map<string, { listen: ListenSpec; main: boolean; group?: string }>();
    wanted.set(`${spec.gateway.listen.host}:${spec.gateway.listen.port}`, { listen: spec.gateway.listen, main: true });
    for (const group of spec.groups) {
      if (group.endpoint.kind !== 'port') continue;
      const listen = { host: spec.gateway.listen.host, port: group.endpoint.port };
      wanted.set(`${listen.host}:${listen.port}|${group.name}`, { listen, main: false, group: group.name });
    }
    for (const [key, listener] of this.#listeners) {
      if (!wanted.has(key)) {
        this.#listeners.delete(key);
        await closeServer(listener.server);
      }
    }
    for (const [key, want] of wanted) {
      if (!this.#listeners.has(key)) this.#listeners.set(key, await this.#listen(key, want.listen, want.main));
    }
    this.#unsubscribe ??= this.#deps.catalog.subscribe(() => this.#queueRebuild());
    this.#rebuild();
  }

  /** Drainer: resolves once the instance is out of the route table and its in-flight requests are done, or after `timeoutMs`. */
  async waitIdle(instanceId: string, timeoutMs: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, timeoutMs);
    });
    const drained = (async () => {
      while (this.#table.live.has(instanceId)) await new Promise<void>((resolve) => this.#rebuildWaiters.push(resolve));
      await this.#targets.get(instanceId)?.idle();
    })();
    await Promise.race([drained, timeout]);
    clearTimeout(timer);
  }

  async close(): Promise<void> {
    this.#unsubscribe?.();
    await Promise.all([...this.#listeners.values()].map((l) => closeServer(l.server)));
    this.#listeners.clear();
    await this.#agent.close();
    for (const r of this.#runtimes.values()) r.close();
    for (const w of this.#rebuildWaiters.splice(0)) w();
  }

  #queueRebuild(): void {
    if (this.#rebuildQueued) return;
    this.#rebuildQueued = true;
    // Coalesce a burst of catalog changes (start-up, a reload) into one rebuild.
    queueMicrotask(() => {
      this.#rebuildQueued = false;
      this.#rebuild();
    });
  }

  #rebuild(): void {
    if (!this.#spec) return;
    const started = performance.now();
    const seen = new Set<string>();
    this.#table = compileRouteTable({
      groups: this.#spec.groups,
      instances: this.#deps.catalog.list(),
      targets: this.#targets,
      runtimeOf: (spec) => {
        const key = `${spec.group}/${spec.name}`;
        seen.add(key);
        return this.#runtimeOf(key, spec);
      },
      now: performance.now(),
      ...(this.#deps.random ? { random: this.#deps.random } : {}),
    });
    for (const [key, runtime] of this.#runtimes) {
      if (seen.has(key)) continue;
      runtime.close();
      this.#runtimes.delete(key);
    }
    this.#deps.observer.routeTableBuilt({ durationMs: performance.now() - started, routes: this.#table.routes, instances: this.#table.instances });
    for (const w of this.#rebuildWaiters.splice(0)) w();
  }

  async #listen(key: string, listen: ListenSpec, main: boolean): Promise<Listener> {
    const server = createServer({ keepAliveTimeout: 5_000, requestTimeout: 300_000, headersTimeout: 60_000, noDelay: true });
    const listener: Listener = { key, server, port: listen.port, declaredPort: listen.port, main };
    server.on('request', (req: IncomingMessage, res: ServerResponse) => this.#handle(req, res, listener));
    server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => this.#upgrade(req, socket, head, listener));
    server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => clientError(err, socket));
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) =>
        reject(new BerthError('BERTH_ERR_LISTEN', `gateway cannot listen on ${formatHost(listen.host)}:${listen.port}: ${err.code ?? err.message}`, { cause: err })),
      );
      server.listen({ host: listen.host, port: listen.port }, resolve);
    });
    const address = server.address();
    listener.port = typeof address === 'object' && address ? address.port : listen.port;
    this.#log.info({ event: 'gateway.listening', url: `http://${formatHost(listen.host)}:${listener.port}`, group: main ? undefined : key.split('|')[1] }, 'gateway listening');
    return listener;
  }

  /**
   * Hygiene before routing: the canonical request target, or undefined when the
   * request was refused (answered, logged and counted here).
   */
  #checkRequest(req: IncomingMessage, res: ServerResponse): string | undefined {
    const target = normalizeTarget(req.url ?? '/');
    const framing = framingProblem(req);
    if (target.ok && framing === null) return target.url;
    const code: ErrorCode = framing ? (framing.status === 501 ? 'BERTH_ERR_TRANSFER_CODING' : framing.status === 431 ? 'BERTH_ERR_TOO_MANY_HEADERS' : 'BERTH_ERR_BAD_FRAMING') : 'BERTH_ERR_BAD_PATH';
    const message = framing ? framing.reason : (target as { reason: string }).reason;
    const requestId = requestIdOf(req);
    // Badly framed: what follows on the connection cannot be trusted to be the next request.
    if (framing) res.shouldKeepAlive = false;
    answer(res, code, message, requestId);
    const url = req.url ?? '';
    const ctx: RequestContext = { started: performance.now(), requestId, method: req.method ?? '', path: url.slice(0, 200), clientIp: req.socket.remoteAddress ?? '', bytesIn: 0, deadline: 0, hashKey: undefined };
    this.#unrouted(ctx, { ok: false, code, message }, ErrorCodes[code].status, code);
    return undefined;
  }

  #runtimeOf(key: string, spec: ServiceSpec): ServiceRuntime {
    let runtime = this.#runtimes.get(key);
    if (runtime) {
      runtime.update(spec.policies);
      return runtime;
    }
    const observer = this.#deps.observer;
    runtime = new ServiceRuntime(spec.group, spec.name, spec.policies, this.#deps.clock ?? systemClock, {
      breaker: (scope, t) => observer.breakerChanged(scope, t.from, t.to, t.reason),
      outlier: (scope, e) => {
        observer.outlierChanged({ group: scope.group, service: scope.service, version: scope.version ?? '', instance: e.instance }, e.kind, e.reason, e.until);
        // An ejection changes who is balanced over: recompile (the table stays immutable).
        this.#queueRebuild();
      },
    });
    this.#runtimes.set(key, runtime);
    return runtime;
  }

  #handle(req: IncomingMessage, res: ServerResponse, listener: Listener): void {
    this.#deps.observer.requestStarted();
    const started = performance.now();
    const checked = this.#checkRequest(req, res);
    if (checked === undefined) return;
    const url = checked;
    const match = matchRoute(this.#table, { url, host: req.headers.host, listenerPort: listener.declaredPort, main: listener.main, acceptVersion: req.headers['accept-version'] as string | undefined });
    const q = url.indexOf('?');
    // Taken now: once the response is sent, Node may detach the socket from the request.
    const ctx: RequestContext = {
      started,
      requestId: requestIdOf(req),
      method: req.method ?? '',
      path: q === -1 ? url : url.slice(0, q),
      clientIp: req.socket.remoteAddress ?? '',
      bytesIn: Number(req.headers['content-length'] ?? 0) || 0,
      deadline: 0,
      hashKey: undefined,
    };
    if (!match.ok) {
      answer(res, match.code, match.message, ctx.requestId);
      this.#unrouted(ctx, match, ErrorCodes[match.code].status, match.code);
      return;
    }
    const runtime = match.service.runtime;
    const requested = requestedTimeoutOf(req);
    const timeoutMs = runtime.policies.timeoutMs;
    ctx.deadline = started + (requested !== undefined && requested < timeoutMs ? requested : timeoutMs);
    const balancer = runtime.policies.balancer;
    if (balancer.kind === 'hash') ctx.hashKey = hashKeyOf(req, balancer);
    new Exchange(this.#exchangeDeps, req, res, match, runtime, ctx).start();
  }

  #upgrade(req: IncomingMessage, socket: Socket, head: Buffer, listener: Listener): void {
    const requestId = requestIdOf(req);
    const checked = normalizeTarget(req.url ?? '/');
    if (!checked.ok) {
      const body = JSON.stringify({ code: 'BERTH_ERR_BAD_PATH', message: checked.reason, requestId });
      socket.end(`HTTP/1.1 400 BERTH_ERR_BAD_PATH\r\ncontent-type: application/json\r\nx-request-id: ${requestId}\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
      return;
    }
    const match = matchRoute(this.#table, { url: checked.url, host: req.headers.host, listenerPort: listener.declaredPort, main: listener.main, acceptVersion: req.headers['accept-version'] as string | undefined });
    const target = match.ok ? match.version.balancer.pick({ now: performance.now() }) : undefined;
    if (!match.ok || !target) {
      const code: ErrorCode = match.ok ? 'BERTH_ERR_NO_INSTANCE' : match.code;
      const body = JSON.stringify({ code, message: match.ok ? 'no passing instance' : match.message, requestId });
      socket.end(`HTTP/1.1 ${ErrorCodes[code].status} ${code}\r\ncontent-type: application/json\r\nx-request-id: ${requestId}\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
      return;
    }
    target.acquire();
    proxyUpgrade(req, socket, head, { target, path: match.path, requestId, prefix: match.prefix, timeoutMs: match.service.runtime.policies.timeoutMs }, () => target.release());
  }

  /** A request no route took: logged and counted, with what the router got as far as. */
  #unrouted(ctx: RequestContext, match: Extract<RouteMatch, { ok: false }>, status: number, error: ErrorCode): void {
    this.#deps.observer.requestFinished({
      requestId: ctx.requestId,
      method: ctx.method,
      path: ctx.path,
      group: match.group ?? null,
      service: match.service ?? null,
      version: null,
      instance: null,
      status,
      bytesIn: ctx.bytesIn,
      bytesOut: 0,
      durationMs: performance.now() - ctx.started,
      clientIp: ctx.clientIp,
      error,
      retries: 0,
    });
  }
}

/** The consistent-hash key of a request: the header's value, or the cookie's. */
function hashKeyOf(req: IncomingMessage, spec: Extract<BalancerSpec, { kind: 'hash' }>): string | undefined {
  if (spec.header !== undefined) {
    const value = req.headers[spec.header];
    return Array.isArray(value) ? value[0] : value;
  }
  const cookies = req.headers.cookie;
  if (spec.cookie === undefined || cookies === undefined) return undefined;
  for (const part of cookies.split(';')) {
    const eq = part.indexOf('=');
    if (eq !== -1 && part.slice(0, eq).trim() === spec.cookie) return part.slice(eq + 1).trim();
  }
  return undefined;
}

/** Malformed HTTP from a client: answer 400 (431 for huge headers) and close; the node keeps serving. */
function clientError(err: NodeJS.ErrnoException, socket: Socket): void {
  if (!socket.writable || (err.code === 'ECONNRESET')) {
    socket.destroy();
    return;
  }
  const status = err.code === 'HPE_HEADER_OVERFLOW' ? '431 Request Header Fields Too Large' : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? '408 Request Timeout' : '400 Bad Request';
  socket.end(`HTTP/1.1 ${status}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`);
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeIdleConnections();
  });
}

function formatHost(host: string): string {
  return host.includes(':') ? `[${host}]` : host;
}
