import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import type { Catalog } from '../catalog/catalog.js';
import { systemClock, type Clock } from '../clock.js';
import { BerthError, ErrorCodes, type ErrorCode } from '../errors.js';
import type { BalancerSpec, EdgeSpec, ListenSpec, NodeSpec, ServiceSpec, TlsListenerSpec } from '../manifest/types.js';
import type { ApiKeys } from '../security/api-keys.js';
import { TrustedProxies } from '../security/client-ip.js';
import { ConnectionGuard } from '../security/connection-guard.js';
import { identityHeaders, type Identity } from '../security/identity.js';
import type { JwtVerifier } from '../security/jwt.js';
import { MemoryRateLimitStore, type RateLimitStore } from '../security/rate-limit.js';
import { CertificateWatcher, checkCertificatePair, hstsHeader, serverTlsOptions, type UpstreamConnectOptions } from '../security/tls.js';
import { Events } from '../telemetry/events.js';
import type { Logger } from '../telemetry/logger.js';
import type { Drainer } from '../supervisor/instance.js';
import { EdgeGuard, type Admission, type CompiledEdge, type Refusal } from './edge.js';
import { answer, Exchange, type ExchangeDeps, type RequestContext } from './exchange.js';
import { framingProblem, normalizeTarget } from '../security/request-target.js';
import { requestedTimeoutOf, requestIdOf } from './headers.js';
import { UpstreamTls } from './upstream-tls.js';
import type { GatewayObserver } from './observer.js';
import { compileRouteTable, type RouteTable } from './route-table.js';
import { matchRoute, type RouteMatch } from './router.js';
import { ServiceRuntime, type PolicyState } from './service-runtime.js';
import type { Target } from './target.js';
import { proxyUpgrade } from './upgrade.js';

/** Who callers are: what authentication at the edge needs from the node. */
export interface GatewaySecurity {
  /** Null when the manifest declares no JWT issuer. */
  jwt: Pick<JwtVerifier, 'verify'> | null;
  apiKeys: Pick<ApiKeys, 'verify'> | null;
  /** Signs the identity headers instances receive (x-berth-signature). */
  identityKey: Buffer;
  /** Rate-limit buckets (default: in this process's memory). */
  limiter?: RateLimitStore;
}

export interface GatewayDeps {
  catalog: Catalog;
  logger: Logger;
  observer: GatewayObserver;
  security: GatewaySecurity;
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
  /** HTTPS: requests on it are `https` to instances and get HSTS. */
  tls: boolean;
  /** The certificate files of an HTTPS listener, watched and reloaded. */
  certificates?: CertificateWatcher;
}

/** Between a response's headers arriving and its body finishing, this much silence ends it. */
const BODY_IDLE_TIMEOUT_MS = 300_000;
/** Keep-alive connections to instances, per instance. */
const CONNECTIONS_PER_INSTANCE = 256;
/** Connecting to an instance (and its TLS handshake) past this is a connect failure. */
const CONNECT_TIMEOUT_MS = 10_000;

/**
 * The data plane: listeners → route → balancer → instance. The route table is
 * compiled from the manifest's groups and the catalog whenever either changes
 * and swapped in one assignment; a request reads the table once, at its start.
 */
export class Gateway implements Drainer {
  readonly #deps: GatewayDeps;
  readonly #log: Logger;
  /** Connections to instances: plain, or TLS per service (`tls:` in the manifest). */
  readonly #upstream: UpstreamTls;
  readonly #targets = new Map<string, Target>();
  /** Policy state per service (`group/service`), kept across route tables. */
  readonly #runtimes = new Map<string, ServiceRuntime>();
  readonly #exchangeDeps: ExchangeDeps;
  readonly #listeners = new Map<string, Listener>();
  readonly #guard: EdgeGuard;
  readonly #limiter: RateLimitStore;
  readonly #connections: ConnectionGuard;
  #trusted = new TrustedProxies([]);
  #edge: EdgeSpec | undefined;
  /** Strict-Transport-Security for HTTPS responses, or undefined. */
  #hsts: string | undefined;
  /** Where the plain listener redirects to when the HTTPS one asks for it: `:8443`, or '' for 443. */
  #redirectPort: string | undefined;
  #spec: NodeSpec | undefined;
  #table: RouteTable = { prefixes: [], hosts: new Map(), ports: new Map(), routes: 0, instances: 0, live: new Set() };
  #rebuildQueued = false;
  #unsubscribe: (() => void) | undefined;
  #rebuildWaiters: (() => void)[] = [];

  constructor(deps: GatewayDeps) {
    this.#deps = deps;
    this.#log = deps.logger.child({ component: 'gateway' });
    this.#upstream = new UpstreamTls({ connections: CONNECTIONS_PER_INSTANCE, keepAliveTimeoutMs: 4_000, keepAliveMaxTimeoutMs: 60_000, connectTimeoutMs: CONNECT_TIMEOUT_MS });
    this.#exchangeDeps = {
      client: this.#upstream.client,
      observer: deps.observer,
      bodyIdleTimeoutMs: BODY_IDLE_TIMEOUT_MS,
      random: deps.random ?? Math.random,
    };
    this.#limiter = deps.security.limiter ?? new MemoryRateLimitStore();
    this.#guard = new EdgeGuard({ limiter: this.#limiter, jwt: deps.security.jwt, apiKeys: deps.security.apiKeys, now: () => (deps.clock ?? systemClock).now() });
    this.#connections = new ConnectionGuard(
      { max: Infinity, perIp: Infinity },
      {
        onRefused: (reason, ip) => deps.observer.connectionRefused(reason, ip),
        // Every client of a load balancer in front shares its address: the per-address cap is for clients, not for trusted proxies.
        perIpExempt: (ip) => this.#trusted.trusts(ip),
      },
    );
  }

  /** The live state of a service's policies (breakers, budget, limits, ejections), for the admin API. */
  policyState(group: string, service: string): PolicyState | undefined {
    return this.#runtimes.get(`${group}/${service}`)?.snapshot();
  }

  /** URL of the main listener, and of each group with a port of its own. */
  get urls(): { main: string; groups: Record<string, string>; https?: string } {
    const groups: Record<string, string> = {};
    let main = '';
    let https: string | undefined;
    for (const l of this.#listeners.values()) {
      const address = l.key.split('|')[0] ?? '';
      const url = `${l.tls ? 'https' : 'http'}://${formatHost(address.slice(0, address.lastIndexOf(':')))}:${l.port}`;
      if (l.tls) https = url;
      else if (l.main) main = url;
      else groups[l.key.split('|')[1] ?? ''] = url;
    }
    return { main, groups, ...(https !== undefined ? { https } : {}) };
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
    const edge = spec.gateway.edge;
    // Everything that can fail comes first, so that a refused configuration changes nothing.
    const trusted = new TrustedProxies(edge.trustedProxies);
    await this.#upstream.configure(spec.groups.flatMap((g) => g.services));
    this.#spec = spec;
    this.#edge = edge;
    this.#trusted = trusted;
    this.#connections.update({ max: edge.connections.max, perIp: edge.connections.perIp });
    const tls = spec.gateway.tls;
    this.#hsts = tls?.hsts ? hstsHeader(tls.hsts) : undefined;
    const wanted = new Map<string, { listen: ListenSpec; main: boolean; tls?: TlsListenerSpec }>();
    wanted.set(`${spec.gateway.listen.host}:${spec.gateway.listen.port}`, { listen: spec.gateway.listen, main: true });
    // The certificate files and the TLS floor are part of the key: changing them opens a new listener.
    if (tls) wanted.set(`${tls.listen.host}:${tls.listen.port}|https|${tls.certFile}|${tls.keyFile}|${tls.minVersion}`, { listen: tls.listen, main: true, tls });
    for (const group of spec.groups) {
      if (group.endpoint.kind !== 'port') continue;
      const listen = { host: spec.gateway.listen.host, port: group.endpoint.port };
      wanted.set(`${listen.host}:${listen.port}|${group.name}`, { listen, main: false });
    }
    for (const [key, listener] of this.#listeners) {
      if (!wanted.has(key)) {
        this.#listeners.delete(key);
        await this.#closeListener(listener);
      }
    }
    for (const [key, want] of wanted) {
      const listener = this.#listeners.get(key);
      if (listener) applyEdge(listener.server, edge);
      else this.#listeners.set(key, await this.#listen(key, want.listen, want.main, want.tls));
    }
    // The port the HTTPS listener is bound to, not the declared one: they differ when that was 0.
    const httpsPort = tls?.redirect ? [...this.#listeners.values()].find((l) => l.tls)?.port : undefined;
    this.#redirectPort = httpsPort === undefined ? undefined : httpsPort === 443 ? '' : `:${httpsPort}`;
    this.#unsubscribe ??= this.#deps.catalog.subscribe(() => this.#queueRebuild());
    this.#rebuild();
  }

  /**
   * Reads and checks what a manifest's gateway settings need from outside
   * (certificate files, trusted proxy ranges, the CA and client certificates
   * of services reached over TLS) without applying anything: a reload calls
   * it first, so that a bad file refuses the reload before anything changes.
   */
  async preflight(spec: NodeSpec): Promise<void> {
    new TrustedProxies(spec.gateway.edge.trustedProxies);
    await this.#upstream.check(spec.groups.flatMap((g) => g.services));
    const tls = spec.gateway.tls;
    // A listener whose files and floor are unchanged is kept as it is (its watcher follows the files): nothing to read.
    const current = this.#spec?.gateway.tls;
    if (tls && !(current && current.certFile === tls.certFile && current.keyFile === tls.keyFile && current.minVersion === tls.minVersion)) {
      await checkCertificatePair(tls.certFile, tls.keyFile);
    }
  }

  /** Replaces the JWT issuers' keys (a reload that changed `auth.jwt`). */
  setJwtVerifier(jwt: GatewaySecurity['jwt']): void {
    this.#guard.setJwt(jwt);
  }

  /** The TLS options a service's instances are reached with (its checks use them too), or undefined for plain HTTP. */
  upstreamTlsFor(group: string, service: string): UpstreamConnectOptions | undefined {
    return this.#upstream.connectOptionsFor({ group, name: service });
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
    await Promise.all([...this.#listeners.values()].map((l) => this.#closeListener(l)));
    this.#listeners.clear();
    await this.#upstream.close();
    this.#limiter.close();
    for (const r of this.#runtimes.values()) r.close();
    for (const w of this.#rebuildWaiters.splice(0)) w();
  }

  async #closeListener(listener: Listener): Promise<void> {
    this.#connections.detach(listener.server);
    listener.certificates?.close();
    await closeServer(listener.server);
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

  async #listen(key: string, listen: ListenSpec, main: boolean, tls?: TlsListenerSpec): Promise<Listener> {
    const edge = this.#edge!;
    // Headers and request timeouts are enforced by a sweep over open connections: every second, not Node's default 30.
    const options = { maxHeaderSize: edge.maxHeaderBytes, noDelay: true, requireHostHeader: true, connectionsCheckingInterval: 1_000 };
    let certificates: CertificateWatcher | undefined;
    let server: Server;
    let secure: HttpsServer | undefined;
    if (tls) {
      // A certificate that fails to load stops the start (or the reload) here, naming the file.
      const watcher = await CertificateWatcher.load(
        { certFile: tls.certFile, keyFile: tls.keyFile, minVersion: tls.minVersion },
        {
          onChange: (context) => {
            secure?.setSecureContext(context);
            this.#log.info({ event: Events.gatewayCertificateReloaded, cert: tls.certFile, notAfter: watcher.notAfter.toISOString() }, 'certificate reloaded');
          },
          onError: (err) => this.#log.error({ event: Events.gatewayCertificateRejected, cert: tls.certFile, err }, 'new certificate refused; the one in use stays'),
        },
      );
      certificates = watcher;
      secure = createHttpsServer({ ...options, ...serverTlsOptions(tls, watcher.current()) });
      // An https.Server is an http.Server with a TLS handshake first: the same request handling applies.
      server = secure;
    } else {
      server = createServer(options);
    }
    applyEdge(server, edge);
    const listener: Listener = { key, server, port: listen.port, declaredPort: listen.port, main, tls: tls !== undefined, ...(certificates ? { certificates } : {}) };
    server.on('request', (req: IncomingMessage, res: ServerResponse) => this.#handle(req, res, listener));
    server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => this.#upgrade(req, socket, head, listener));
    server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => clientError(err, socket));
    // Slow or idle connections (server.timeout): closed, not answered.
    server.on('timeout', (socket: Socket) => socket.destroy());
    if (tls) server.on('tlsClientError', (_err: Error, socket: Socket) => socket.destroy());
    this.#connections.attach(server);
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', (err: NodeJS.ErrnoException) =>
          reject(new BerthError('BERTH_ERR_LISTEN', `gateway cannot listen on ${formatHost(listen.host)}:${listen.port}: ${err.code ?? err.message}`, { cause: err })),
        );
        server.listen({ host: listen.host, port: listen.port }, resolve);
      });
    } catch (err) {
      this.#connections.detach(server);
      certificates?.close();
      throw err;
    }
    const address = server.address();
    listener.port = typeof address === 'object' && address ? address.port : listen.port;
    const scheme = tls ? 'https' : 'http';
    this.#log.info({ event: 'gateway.listening', url: `${scheme}://${formatHost(listen.host)}:${listener.port}`, group: main ? undefined : key.split('|')[1] }, 'gateway listening');
    return listener;
  }

  /**
   * Hygiene before routing: the canonical request target, or undefined when the
   * request was refused (answered, logged and counted here).
   */
  #checkRequest(req: IncomingMessage, res: ServerResponse): string | undefined {
    const target = normalizeTarget(req.url ?? '/');
    const framing = framingProblem(req, this.#edge?.maxHeaders);
    if (target.ok && framing === null) return target.url;
    const code: ErrorCode = framing ? (framing.status === 501 ? 'BERTH_ERR_TRANSFER_CODING' : framing.status === 431 ? 'BERTH_ERR_TOO_MANY_HEADERS' : 'BERTH_ERR_BAD_FRAMING') : 'BERTH_ERR_BAD_PATH';
    const message = framing ? framing.reason : (target as { reason: string }).reason;
    const requestId = requestIdOf(req);
    // Badly framed: what follows on the connection cannot be trusted to be the next request.
    if (framing) res.shouldKeepAlive = false;
    answer(res, code, message, requestId);
    const url = req.url ?? '';
    const ctx = this.#context(req, performance.now(), requestId, url.slice(0, 200), 0);
    this.#unrouted(ctx, { ok: false, code, message }, ErrorCodes[code].status, code);
    return undefined;
  }

  #runtimeOf(key: string, spec: ServiceSpec): ServiceRuntime {
    let runtime = this.#runtimes.get(key);
    if (runtime) {
      runtime.update(spec.policies, spec.routes);
      runtime.client = this.#upstream.clientFor(spec);
      return runtime;
    }
    const observer = this.#deps.observer;
    runtime = new ServiceRuntime(spec.group, spec.name, spec.policies, spec.routes, this.#deps.clock ?? systemClock, {
      breaker: (scope, t) => observer.breakerChanged(scope, t.from, t.to, t.reason),
      outlier: (scope, e) => {
        observer.outlierChanged({ group: scope.group, service: scope.service, version: scope.version ?? '', instance: e.instance }, e.kind, e.reason, e.until);
        // An ejection changes who is balanced over: recompile (the table stays immutable).
        this.#queueRebuild();
      },
    });
    runtime.client = this.#upstream.clientFor(spec);
    this.#runtimes.set(key, runtime);
    return runtime;
  }

  #handle(req: IncomingMessage, res: ServerResponse, listener: Listener): void {
    this.#deps.observer.requestStarted();
    const started = performance.now();
    const checked = this.#checkRequest(req, res);
    if (checked === undefined) return;
    const url = checked;
    if (this.#redirectPort !== undefined && !listener.tls && listener.main) {
      this.#redirect(req, res, url, started);
      return;
    }
    const match = matchRoute(this.#table, { url, host: req.headers.host, listenerPort: listener.declaredPort, main: listener.main, acceptVersion: req.headers['accept-version'] as string | undefined });
    const q = url.indexOf('?');
    // Taken now: once the response is sent, Node may detach the socket from the request.
    const ctx = this.#context(req, started, requestIdOf(req), q === -1 ? url : url.slice(0, q), Number(req.headers['content-length'] ?? 0) || 0);
    if (listener.tls) {
      ctx.proto = 'https';
      if (this.#hsts !== undefined) res.setHeader('strict-transport-security', this.#hsts);
    }
    if (!match.ok) {
      answer(res, match.code, match.message, ctx.requestId);
      this.#unrouted(ctx, match, ErrorCodes[match.code].status, match.code);
      return;
    }
    const q2 = match.path.indexOf('?');
    const instancePath = q2 === -1 ? match.path : match.path.slice(0, q2);
    const edge = match.service.runtime.edge.forPath(instancePath);
    ctx.maxBodyBytes = edge.spec.maxBodyBytes;
    const pre = this.#guard.precheck(edge, ctx.method, ctx.clientIp, ctx.bytesIn);
    if (pre === null) this.#authenticate(edge, req, res, match, ctx, instancePath);
    else if (pre instanceof Promise) {
      pre.then(
        (refusal) => (refusal === null ? this.#authenticate(edge, req, res, match, ctx, instancePath) : this.#refuse(res, match, ctx, refusal)),
        (err: unknown) => this.#edgeFailed(res, match, ctx, err),
      );
    } else this.#refuse(res, match, ctx, pre);
  }

  #authenticate(edge: CompiledEdge, req: IncomingMessage, res: ServerResponse, match: RoutedMatch, ctx: RequestContext, instancePath: string): void {
    const admission = this.#guard.authenticate(edge, req, match.group.name, instancePath);
    if (admission instanceof Promise) {
      admission.then(
        (a) => this.#admitted(a, req, res, match, ctx),
        (err: unknown) => this.#edgeFailed(res, match, ctx, err),
      );
    } else this.#admitted(admission, req, res, match, ctx);
  }

  #admitted(admission: Admission, req: IncomingMessage, res: ServerResponse, match: RoutedMatch, ctx: RequestContext): void {
    if (!admission.ok) {
      // Refused once authenticated (403, 429 per subject): the access log still says who.
      if (admission.identity) ctx.subject = admission.identity.subject;
      this.#refuse(res, match, ctx, admission.refusal);
      return;
    }
    // The client may have left while its credentials were checked.
    if (res.destroyed) {
      this.#finishRefused(match, ctx, 499, 'BERTH_ERR_UPSTREAM_RESET');
      return;
    }
    const identity = admission.identity;
    if (identity !== null) {
      ctx.subject = identity.subject;
      ctx.identity = this.#identityHeaders(identity, ctx.method, match.path);
    }
    const runtime = match.service.runtime;
    const requested = requestedTimeoutOf(req);
    const timeoutMs = runtime.policies.timeoutMs;
    ctx.deadline = ctx.started + (requested !== undefined && requested < timeoutMs ? requested : timeoutMs);
    const balancer = runtime.policies.balancer;
    if (balancer.kind === 'hash') ctx.hashKey = hashKeyOf(req, balancer);
    new Exchange(this.#exchangeDeps, req, res, match, runtime, ctx).start();
  }

  #identityHeaders(identity: Identity, method: string, path: string): string[] {
    return identityHeaders(identity, { key: this.#deps.security.identityKey, method, path, nowSeconds: Math.floor((this.#deps.clock ?? systemClock).now() / 1000) });
  }

  /** The edge turned the request away: answered, logged and counted. */
  #refuse(res: ServerResponse, match: RoutedMatch, ctx: RequestContext, refusal: Refusal): void {
    // A body the request was refused for is not read: the connection cannot carry another request after it.
    if (refusal.code === 'BERTH_ERR_BODY_TOO_LARGE') res.shouldKeepAlive = false;
    answer(res, refusal.code, refusal.message, ctx.requestId, undefined, undefined, refusal.headers);
    this.#deps.observer.rejected({ group: match.group.name, service: match.service.service, version: match.version.version }, refusal.code);
    this.#finishRefused(match, ctx, ErrorCodes[refusal.code].status, refusal.code);
  }

  /** A limiter store or key set that failed (a remote store down): 500, logged, never a stack trace to the client. */
  #edgeFailed(res: ServerResponse, match: RoutedMatch, ctx: RequestContext, err: unknown): void {
    this.#log.error({ event: 'gateway.edge-failed', requestId: ctx.requestId, err }, 'edge policies failed');
    answer(res, 'BERTH_ERR_INTERNAL', 'the gateway could not check this request', ctx.requestId);
    this.#finishRefused(match, ctx, 500, 'BERTH_ERR_INTERNAL');
  }

  #finishRefused(match: RoutedMatch, ctx: RequestContext, status: number, error: ErrorCode): void {
    this.#notForwarded(ctx, { group: match.group.name, service: match.service.service, version: match.version.version }, status, error);
  }

  /** The plain listener of a node with `tls.redirect`: 308 to the same place over HTTPS. */
  #redirect(req: IncomingMessage, res: ServerResponse, url: string, started: number): void {
    const host = (req.headers.host ?? '').replace(/:\d+$/, '');
    const location = `https://${host}${this.#redirectPort ?? ''}${url}`;
    const ctx = this.#context(req, started, requestIdOf(req), url, 0);
    res.writeHead(308, { location, 'content-length': 0, 'x-request-id': ctx.requestId });
    res.end();
    this.#notForwarded(ctx, { group: null, service: null, version: null }, 308, null);
  }

  /** What a request's log line, metrics and policies need, read from the request once. */
  #context(req: IncomingMessage, started: number, requestId: string, path: string, bytesIn: number): RequestContext {
    const peer = req.socket.remoteAddress ?? '';
    const forwarded = req.headers['x-forwarded-for'];
    return {
      started,
      requestId,
      method: req.method ?? '',
      path,
      clientIp: this.#trusted.clientIp(peer, forwarded),
      forwardedFor: this.#trusted.forwardedFor(peer, forwarded),
      proto: 'http',
      bytesIn,
      maxBodyBytes: Infinity,
      deadline: 0,
      hashKey: undefined,
      identity: null,
      subject: null,
    };
  }

  /** An upgrade (WebSocket) handshake: the same hygiene, route and edge policies as a request, then bytes both ways. */
  #upgrade(req: IncomingMessage, socket: Socket, head: Buffer, listener: Listener): void {
    this.#upgradeChecked(req, socket, head, listener).catch((err: unknown) => {
      this.#log.error({ event: 'gateway.edge-failed', err }, 'upgrade failed');
      refuseSocket(socket, 'BERTH_ERR_INTERNAL', 'the gateway could not check this request', requestIdOf(req));
    });
  }

  async #upgradeChecked(req: IncomingMessage, socket: Socket, head: Buffer, listener: Listener): Promise<void> {
    const requestId = requestIdOf(req);
    const checked = normalizeTarget(req.url ?? '/');
    if (!checked.ok) return refuseSocket(socket, 'BERTH_ERR_BAD_PATH', checked.reason, requestId);
    // The same framing rules as a request: two Host or Authorization headers would reach the instance too.
    const framing = framingProblem(req, this.#edge?.maxHeaders);
    if (framing) return refuseSocket(socket, framing.status === 501 ? 'BERTH_ERR_TRANSFER_CODING' : framing.status === 431 ? 'BERTH_ERR_TOO_MANY_HEADERS' : 'BERTH_ERR_BAD_FRAMING', framing.reason, requestId);
    const match = matchRoute(this.#table, { url: checked.url, host: req.headers.host, listenerPort: listener.declaredPort, main: listener.main, acceptVersion: req.headers['accept-version'] as string | undefined });
    if (!match.ok) return refuseSocket(socket, match.code, match.message, requestId);
    const ctx = this.#context(req, performance.now(), requestId, checked.url, 0);
    if (listener.tls) ctx.proto = 'https';
    const q = match.path.indexOf('?');
    const instancePath = q === -1 ? match.path : match.path.slice(0, q);
    const edge = match.service.runtime.edge.forPath(instancePath);
    const refusal = await this.#guard.precheck(edge, ctx.method, ctx.clientIp, 0);
    if (refusal) return refuseSocket(socket, refusal.code, refusal.message, requestId, refusal.headers);
    const admission = await this.#guard.authenticate(edge, req, match.group.name, instancePath);
    if (!admission.ok) return refuseSocket(socket, admission.refusal.code, admission.refusal.message, requestId, admission.refusal.headers);
    if (socket.destroyed) return;
    const identity = admission.identity === null ? null : this.#identityHeaders(admission.identity, ctx.method, match.path);
    const target = match.version.balancer.pick({ now: performance.now() });
    if (!target) return refuseSocket(socket, 'BERTH_ERR_NO_INSTANCE', 'no passing instance', requestId);
    target.acquire();
    proxyUpgrade(
      req,
      socket,
      head,
      {
        target,
        path: match.path,
        requestId,
        prefix: match.prefix,
        timeoutMs: match.service.runtime.policies.timeoutMs,
        idleMs: this.#edge?.timeouts.idleMs ?? 60_000,
        proto: ctx.proto,
        forwardedFor: ctx.forwardedFor,
        identity,
        tls: this.#upstream.connectOptionsFor({ group: match.group.name, name: match.service.service }),
      },
      () => target.release(),
    );
  }

  /** A request no route took: logged and counted, with what the router got as far as. */
  #unrouted(ctx: RequestContext, match: Extract<RouteMatch, { ok: false }>, status: number, error: ErrorCode | null): void {
    this.#notForwarded(ctx, { group: match.group ?? null, service: match.service ?? null, version: null }, status, error);
  }

  /** A request the gateway answered itself (no route, a refusal, a redirect): its log line and metrics. */
  #notForwarded(ctx: RequestContext, route: { group: string | null; service: string | null; version: string | null }, status: number, error: ErrorCode | null): void {
    this.#deps.observer.requestFinished({
      requestId: ctx.requestId,
      method: ctx.method,
      path: ctx.path,
      ...route,
      instance: null,
      status,
      bytesIn: ctx.bytesIn,
      bytesOut: 0,
      durationMs: performance.now() - ctx.started,
      clientIp: ctx.clientIp,
      error,
      retries: 0,
      subject: ctx.subject,
    });
  }
}

type RoutedMatch = Extract<RouteMatch, { ok: true }>;

/** The connection-level protections a listener enforces (docs/security.md); they apply to new requests and connections after a reload. */
function applyEdge(server: Server, edge: EdgeSpec): void {
  server.headersTimeout = edge.timeouts.headersMs;
  // Node wants the request timeout to cover the headers timeout.
  server.requestTimeout = Math.max(edge.timeouts.requestMs, edge.timeouts.headersMs);
  server.keepAliveTimeout = edge.timeouts.keepAliveMs;
  server.maxRequestsPerSocket = edge.connections.maxRequests;
  // Read by Node when a connection opens (not in @types/node): a reload applies it to new connections.
  (server as Server & { maxHeaderSize?: number }).maxHeaderSize = edge.maxHeaderBytes;
  server.setTimeout(edge.timeouts.idleMs);
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

/** An upgrade refused before it reached an instance: a plain HTTP answer on the raw socket, then close. */
function refuseSocket(socket: Socket, code: ErrorCode, message: string, requestId: string, headers: Record<string, string> = {}): void {
  if (socket.destroyed) return;
  const body = JSON.stringify({ code, message, requestId });
  const extra = Object.entries(headers).map(([name, value]) => `${name}: ${value}\r\n`).join('');
  socket.end(`HTTP/1.1 ${ErrorCodes[code].status} ${code}\r\ncontent-type: application/json\r\nx-request-id: ${requestId}\r\n${extra}content-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
}

/** Malformed HTTP from a client: answer 400 (431 for huge headers) and close; the node keeps serving. */
function clientError(err: NodeJS.ErrnoException, socket: Socket): void {
  // A response already under way on this connection (a keep-alive request that timed out mid-answer): an
  // answer written now would land inside it. Node's own handler checks the same (internal) field.
  const answering = (socket as Socket & { _httpMessage?: { headersSent?: boolean } | null })._httpMessage?.headersSent === true;
  if (!socket.writable || err.code === 'ECONNRESET' || answering) {
    socket.destroy();
    return;
  }
  const status = err.code === 'HPE_HEADER_OVERFLOW' ? '431 Request Header Fields Too Large' : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? '408 Request Timeout' : '400 Bad Request';
  // Destroyed once the answer is out, not left half-closed: a slowloris ignores the FIN and keeps trickling
  // header lines, which keep the idle timer from firing, and would hold its place under the connection caps for good.
  socket.end(`HTTP/1.1 ${status}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`, () => socket.destroy());
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
