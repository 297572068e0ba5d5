import { readFileSync } from 'node:fs';
import swagger from '@fastify/swagger';
import Fastify, { type FastifyError, type FastifyInstance } from 'fastify';
import semver from 'semver';
import type { Catalog } from '../catalog/catalog.js';
import { INSTANCE_STATUSES, type InstanceRecord, type InstanceStatus } from '../catalog/types.js';
import { BerthError, isBerthError, type ErrorDetail } from '../errors.js';
import { parseDuration } from '../duration.js';
import { DEFAULT_POLICIES } from '../manifest/policies.js';
import type { EndpointSpec, ListenSpec, NodeSpec, ResourcesSpec } from '../manifest/types.js';
import { validateRegistration, type HeartbeatStatus, type RegistrationInput, type Registrations } from '../registry/registrations.js';
import type { Logger } from '../telemetry/logger.js';
import { formatPlan, type Plan } from '../manifest/diff.js';
import type { ApplyResult } from '../supervisor/supervisor.js';
import type { Usage, UsageSource } from '../supervisor/isolation/usage.js';
import type { NodeInfo } from '../node.js';
import { routeSchemas, sharedSchemas, swaggerOptions, validationDetails } from './openapi.js';
import { DEFAULT_WAIT_MS, DiscoveryWatch, INDEX_HEADER, MAX_WAIT_MS, STABLE_HEADER, type DiscoveryWatchOptions } from './discovery-watch.js';
import { installAccessControl, requestId } from './access.js';
import type { AuditSink } from './audit.js';
import type { AdminTokens, Role } from './tokens.js';
import type { ApiKeyInput, ApiKeys } from '../security/api-keys.js';

export interface AdminDeps {
  listen: ListenSpec;
  catalog: Catalog;
  logger: Logger;
  /** The manifest in force (it changes on reload). */
  spec: () => NodeSpec;
  node: () => NodeInfo | undefined;
  /** Whether the node has finished starting (`/readyz`). */
  ready: () => boolean;
  /** External registrations: `/v1/registrations`. */
  registrations: Pick<Registrations, 'register' | 'heartbeat' | 'deregister'>;
  /** Prometheus exposition for `GET /metrics`; the route exists only when given. */
  metrics?: { readonly contentType: string; text(): Promise<string> };
  /** Reload without restart: `GET /v1/plan`, `POST /v1/reload`; the routes exist only when given. */
  reload?: ReloadDeps;
  /** What each instance uses and may use: merged into the instance lists as they are answered. */
  usage?: UsageSource;
  /** The live state of a service's gateway policies (breakers, budget, limits, ejections). */
  policyState?: (group: string, service: string) => object | undefined;
  /** Blocking discovery queries (`?index=&wait=`): tests pass a clock and count the waits. */
  discovery?: DiscoveryWatchOptions;
  /** Who may call what (src/admin/access.ts, docs/security.md): the tokens, and the audit log of mutating calls. */
  security: AdminSecurity;
}

/** What the admin API uses of the node's tokens, API keys and audit log. */
export interface AdminSecurity {
  tokens: Pick<AdminTokens, 'verify' | 'create' | 'list' | 'revoke'>;
  /** The gateway's API keys: `/v1/apikeys`. */
  apiKeys: Pick<ApiKeys, 'create' | 'list' | 'revoke'>;
  audit: AuditSink;
}

export interface AdminServer {
  url: string;
  close(): Promise<void>;
}

export interface ServiceSummary {
  group: string;
  service: string;
  stable: string | null;
  versions: string[];
  instances: number;
  passing: number;
}

export interface GroupSummary {
  name: string;
  endpoint: EndpointSpec;
  services: { name: string; stable: string | null; versions: string[]; instances: number; passing: number }[];
}

/**
 * An instance as the instance lists answer it: the catalog record, with its
 * latest usage sample and the limits it runs under (null when not sampled,
 * not running or not supervised by this node). They are merged in when the
 * list is answered, never written to the catalog: a sample every few seconds
 * per instance is no store write.
 */
export type InstanceView = InstanceRecord & { usage: Usage | null; limits: ResourcesSpec | null };

/** What `/v1/discovery/{service}` answers per passing instance. */
export interface DiscoveredInstance {
  id: string;
  group: string;
  service: string;
  version: string;
  address: string;
  port: number;
  weight: number;
  node: string;
  source: InstanceRecord['source'];
  tags: string[];
}

const BERTH_VERSION = (JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string }).version;

/** The admin API: REST over the catalog, discovery and external registrations, described by `/openapi.json`. */
export function buildAdminApi(deps: AdminDeps): FastifyInstance {
  const app = Fastify({
    logger: false,
    return503OnClosing: true,
    forceCloseConnections: 'idle',
    // The caller's x-request-id when sane, else a new one: the audit log and the answer carry it.
    requestIdHeader: false,
    genReqId: requestId,
    // Every problem of a request at once, and unknown fields refused rather than silently dropped.
    ajv: { customOptions: { allErrors: true, removeAdditional: false, allowUnionTypes: true } },
  });

  app.setErrorHandler((err: FastifyError, _request, reply) => {
    if (isBerthError(err)) return reply.status(err.status).send(err.toJSON());
    if (err.validation) {
      const context = err.validationContext ?? 'request';
      const details = validationDetails(err.validation, context);
      const message = `invalid ${context}: ${details.map((d) => `${d.where} ${d.message}`).join('; ')}`;
      return reply.status(400).send(new BerthError('BERTH_ERR_BAD_REQUEST', message, { details }).toJSON());
    }
    const status = err.statusCode;
    if (status && status >= 400 && status < 500) {
      return reply.status(status).send({ code: 'BERTH_ERR_BAD_REQUEST', message: err.message });
    }
    deps.logger.error({ err }, 'admin API error');
    return reply.status(500).send(new BerthError('BERTH_ERR_INTERNAL', 'internal error; see the node log').toJSON());
  });
  app.setNotFoundHandler((request, reply) =>
    reply.status(404).send(new BerthError('BERTH_ERR_NOT_FOUND', `no route ${request.method} ${request.url}`).toJSON()),
  );

  // A heartbeat's body is optional: accept an empty body sent with a JSON content type (some clients always send one).
  const parseJson = app.getDefaultJsonParser('error', 'error');
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (request, body, done) => {
    if (body === '') return done(null, undefined);
    return parseJson(request, body as string, done);
  });

  for (const schema of sharedSchemas) app.addSchema(schema);
  // Before any route: its hooks guard every one, and its onRoute hook documents each one's role.
  installAccessControl(app, deps.security);
  // Registered before the routes so that its onRoute hook sees every one of them.
  void app.register(swagger, swaggerOptions(BERTH_VERSION));
  void app.register((api, _options, done) => {
    routes(api, deps);
    done();
  });
  return app;
}

function routes(app: FastifyInstance, deps: AdminDeps): void {
  app.get('/healthz', { schema: routeSchemas.healthz }, () => ({ status: 'ok', node: deps.node()?.name ?? null }));

  app.get('/readyz', { schema: routeSchemas.readyz }, (_request, reply) =>
    deps.ready() ? reply.send({ status: 'ready' }) : reply.status(503).send({ status: 'starting' }),
  );

  app.get('/openapi.json', { schema: routeSchemas.openapi }, () => app.swagger());

  app.get('/v1/node', { schema: routeSchemas.node }, () => deps.node() ?? null);

  app.get('/v1/services', { schema: routeSchemas.services }, (): ServiceSummary[] => serviceSummaries(deps.spec(), deps.catalog));

  app.get<{ Params: { service: string } }>('/v1/services/:service', { schema: routeSchemas.service }, (request) => {
    const { service } = request.params;
    assertServiceKnown(deps, service);
    const summary = serviceSummaries(deps.spec(), deps.catalog).find((s) => s.service === service)!;
    const spec = deps.spec().groups.find((g) => g.name === summary.group)?.services.find((s) => s.name === service);
    return { ...summary, policies: spec?.policies ?? DEFAULT_POLICIES, state: deps.policyState?.(summary.group, service) ?? null };
  });

  app.get('/v1/groups', { schema: routeSchemas.groups }, (): GroupSummary[] => groupSummaries(deps.spec(), deps.catalog));

  app.get<{ Querystring: { status?: string } }>('/v1/instances', { schema: routeSchemas.instances }, (request) => {
    const statuses = parseStatuses(request.query.status);
    return withUsage(deps.catalog.list(statuses ? { statuses } : {}), deps.usage);
  });

  app.get<{ Params: { service: string }; Querystring: { status?: string } }>(
    '/v1/services/:service/instances',
    { schema: routeSchemas.serviceInstances },
    (request) => {
      const { service } = request.params;
      assertServiceKnown(deps, service);
      const statuses = parseStatuses(request.query.status);
      return withUsage(deps.catalog.list(statuses ? { service, statuses } : { service }), deps.usage);
    },
  );

  // One watch for every blocking query; the node's close ends the waits first, or they would hold the server open.
  const watch = new DiscoveryWatch(deps.catalog, (service) => passingInstances(deps.catalog, service, undefined), deps.discovery);
  app.addHook('preClose', (done) => {
    watch.close();
    done();
  });

  app.get<{ Params: { service: string }; Querystring: { version?: string; index?: number; wait?: string } }>(
    '/v1/discovery/:service',
    { schema: routeSchemas.discovery },
    async (request, reply): Promise<DiscoveredInstance[]> => {
      const { service } = request.params;
      const range = parseRange(request.query.version);
      const waitMs = parseWait(request.query.wait);
      assertServiceKnown(deps, service);
      const { index } = request.query;
      if (index !== undefined) {
        // Blocking query: answer once this query's own answer differs from what index N described.
        const before = JSON.stringify(passingInstances(deps.catalog, service, range));
        const gone = new AbortController();
        const onClose = (): void => gone.abort();
        reply.raw.once('close', onClose);
        if (reply.raw.destroyed || request.raw.socket?.destroyed === true) gone.abort();
        const ended = await watch.wait(service, index, waitMs, () => JSON.stringify(passingInstances(deps.catalog, service, range)) !== before, gone.signal);
        reply.raw.off('close', onClose);
        if (ended === 'aborted') {
          // The client hung up: nobody to answer.
          reply.hijack();
          return [];
        }
        // The node is stopping: do not keep this connection for another request.
        if (ended === 'closed') void reply.header('connection', 'close');
      }
      void reply.header(INDEX_HEADER, String(watch.index(service)));
      const stable = stableOf(deps.spec(), service);
      if (stable !== null) void reply.header(STABLE_HEADER, stable);
      return passingInstances(deps.catalog, service, range);
    },
  );

  app.post<{ Body: RegistrationInput }>('/v1/registrations', { schema: routeSchemas.register }, async (request, reply) => {
    const input = request.body;
    const problems = [...validateRegistration(input).problems.map(inBody), ...placementProblems(deps, input)];
    if (problems.length > 0) {
      throw new BerthError('BERTH_ERR_BAD_REQUEST', `registration of "${input.service}" is invalid: ${problems.map((p) => `${p.where} ${p.message}`).join('; ')}`, {
        details: problems,
      });
    }
    const record = await deps.registrations.register(input);
    return reply.status(201).send(record);
  });

  app.put<{ Params: { id: string }; Body: { status?: HeartbeatStatus; output?: string } | undefined }>(
    '/v1/registrations/:id/heartbeat',
    {
      schema: routeSchemas.heartbeat,
      // No body at all is a plain `passing` heartbeat (Consul's `PUT /v1/agent/check/pass/:id` takes none).
      preValidation: (request, _reply, done) => {
        request.body ??= {};
        done();
      },
    },
    (request) => deps.registrations.heartbeat(request.params.id, request.body?.status, request.body?.output),
  );

  app.delete<{ Params: { id: string } }>('/v1/registrations/:id', { schema: routeSchemas.deregister }, async (request, reply) => {
    await deps.registrations.deregister(request.params.id);
    return reply.status(204).send();
  });

  if (deps.reload) reloadRoutes(app, deps.reload);
  securityRoutes(app, deps.security, deps.spec);

  const metrics = deps.metrics;
  if (metrics) {
    app.get(
      '/metrics',
      {
        schema: {
          summary: 'Prometheus metrics of this node: gateway, catalog and process (docs/metrics.md)',
          tags: ['node'],
          response: { 200: { description: 'Prometheus text exposition format 0.0.4', content: { 'text/plain': { schema: { type: 'string' } } } } },
        },
      },
      // The reply carries a non-JSON content type, so Fastify sends the text as is (no serializer).
      async (_request, reply) => reply.type(metrics.contentType).send(await metrics.text()),
    );
  }
}

// ---- Reload without restart (docs/reload.md) -------------------------------

/** What the reload routes use of the node. */
export interface ReloadDeps {
  /** Re-reads and validates the manifest file; what a reload would change. Throws the manifest's BerthError. */
  plan(): Promise<Plan>;
  /** Re-reads, validates and applies the manifest file. Throws the manifest's BerthError, or BERTH_ERR_RELOAD_REFUSED. */
  reload(): Promise<{ plan: Plan; result: ApplyResult }>;
}

const RELOAD_ERROR = (description: string): Record<string, unknown> => ({ description, $ref: 'Error#' });
// Plans and results are documented in docs/reload.md; `additionalProperties` keeps the serializer from dropping their fields.
const PLAN_SCHEMA = { type: 'object', additionalProperties: true, description: 'added, removed, scaled, replaced, groupsAdded, groupsRemoved, endpoints, stable, settings, restartRequired' };
const RESULT_SCHEMA = { type: 'object', additionalProperties: true, description: 'started, stopped, replaced, failed: [{ key, reason }]' };

function reloadRoutes(app: FastifyInstance, reload: ReloadDeps): void {
  app.get(
    '/v1/plan',
    {
      schema: {
        summary: 'What reloading the manifest file would change; applies nothing',
        tags: ['node'],
        response: {
          200: { description: 'The changes, as data and as text', type: 'object', required: ['changes', 'text'], properties: { changes: PLAN_SCHEMA, text: { type: 'string' } } },
          400: RELOAD_ERROR('The manifest is missing, not YAML or invalid; `details` has every problem with file:line:col'),
        },
      },
    },
    async () => {
      const changes = await reload.plan();
      return { changes, text: formatPlan(changes) };
    },
  );

  app.post(
    '/v1/reload',
    {
      schema: {
        summary: 'Re-read the manifest file and apply it without a restart (rolling replacement of changed versions)',
        tags: ['node'],
        response: {
          200: { description: 'Applied; `result.failed` lists versions whose rollout failed (their old instances keep running)', type: 'object', required: ['plan', 'result'], properties: { plan: PLAN_SCHEMA, result: RESULT_SCHEMA } },
          400: RELOAD_ERROR('The manifest is missing, not YAML or invalid: nothing changed; `details` has every problem'),
          409: RELOAD_ERROR('BERTH_ERR_RELOAD_REFUSED: a change needs a restart (listed in `details`), or the node is starting or stopping; nothing changed'),
        },
      },
    },
    () => reload.reload(),
  );
}

// ---- end of reload ----------------------------------------------------------

// ---- Tokens, API keys and audit (docs/security.md) ---------------------------

function securityRoutes(app: FastifyInstance, security: AdminSecurity, spec: () => NodeSpec): void {
  app.get('/v1/tokens', { schema: routeSchemas.tokens }, () => security.tokens.list());

  app.post<{ Body: { name: string; role: Role } }>('/v1/tokens', { schema: routeSchemas.createToken }, async (request, reply) => {
    const { token, secret } = await security.tokens.create(request.body.name, request.body.role);
    return reply.status(201).send({ ...token, token: secret });
  });

  app.delete<{ Params: { id: string } }>('/v1/tokens/:id', { schema: routeSchemas.revokeToken }, async (request, reply) => {
    if (!(await security.tokens.revoke(request.params.id))) throw new BerthError('BERTH_ERR_NOT_FOUND', `no token with id "${request.params.id}"`);
    return reply.status(204).send();
  });

  app.get('/v1/apikeys', { schema: routeSchemas.apiKeys }, () => security.apiKeys.list());

  app.post<{ Body: ApiKeyInput }>('/v1/apikeys', { schema: routeSchemas.createApiKey }, async (request, reply) => {
    // A key for a group the manifest does not have is most likely a typo: refused rather than useless.
    const known = new Set(spec().groups.map((g) => g.name));
    const unknown = request.body.groups.filter((g) => g !== '*' && !known.has(g));
    if (unknown.length > 0) {
      const message = `no group ${unknown.map((g) => `"${g}"`).join(', ')} in the manifest (groups: ${[...known].join(', ') || 'none'}; "*" for every group)`;
      throw new BerthError('BERTH_ERR_BAD_REQUEST', message, { details: [{ where: 'body.groups', message }] });
    }
    let created: Awaited<ReturnType<AdminSecurity['apiKeys']['create']>>;
    try {
      created = await security.apiKeys.create(request.body);
    } catch (err) {
      // The schema already holds the body to ApiKeys' rules; this is their last word.
      if (err instanceof TypeError) throw new BerthError('BERTH_ERR_BAD_REQUEST', err.message, { details: [{ where: 'body', message: err.message }] });
      throw err;
    }
    return reply.status(201).send({ ...created.key, secret: created.secret });
  });

  app.delete<{ Params: { id: string } }>('/v1/apikeys/:id', { schema: routeSchemas.revokeApiKey }, async (request, reply) => {
    if (!(await security.apiKeys.revoke(request.params.id))) throw new BerthError('BERTH_ERR_NOT_FOUND', `no API key with id "${request.params.id}"`);
    return reply.status(204).send();
  });

  app.get<{ Querystring: { limit: number } }>('/v1/audit', { schema: routeSchemas.audit }, (request) => security.audit.tail(request.query.limit));
}

// ---- end of tokens, API keys and audit -----------------------------------------

export async function startAdminServer(deps: AdminDeps): Promise<AdminServer> {
  const app = buildAdminApi(deps);
  try {
    await app.listen({ host: deps.listen.host, port: deps.listen.port });
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new BerthError('BERTH_ERR_LISTEN', `admin API cannot listen on ${deps.listen.host}:${deps.listen.port}: ${e.code ?? e.message}`, { cause: err });
  }
  const address = app.server.address();
  const port = typeof address === 'object' && address ? address.port : deps.listen.port;
  const host = deps.listen.host.includes(':') ? `[${deps.listen.host}]` : deps.listen.host;
  return { url: `http://${host}:${port}`, close: () => app.close() };
}

/** Services declared in the manifest, plus any the catalog knows of (e.g. registered from outside). */
export function serviceSummaries(spec: NodeSpec, catalog: Catalog): ServiceSummary[] {
  const byName = new Map<string, ServiceSummary>();
  for (const group of spec.groups) {
    for (const service of group.services) {
      byName.set(service.name, {
        group: group.name,
        service: service.name,
        stable: service.stable,
        versions: service.versions.map((v) => v.version),
        instances: 0,
        passing: 0,
      });
    }
  }
  for (const record of catalog.list()) {
    if (record.status === 'stopped') continue;
    let summary = byName.get(record.service);
    if (!summary) {
      summary = { group: record.group, service: record.service, stable: null, versions: [], instances: 0, passing: 0 };
      byName.set(record.service, summary);
    }
    if (!summary.versions.includes(record.version)) summary.versions.push(record.version);
    summary.instances++;
    if (record.status === 'passing') summary.passing++;
  }
  return [...byName.values()].sort((a, b) => a.group.localeCompare(b.group) || a.service.localeCompare(b.service));
}

/**
 * Every group of the manifest, in manifest order, with its services: the
 * declared ones and those registered into it from outside. Instances of a
 * group the manifest no longer has are listed by `/v1/services` only.
 */
export function groupSummaries(spec: NodeSpec, catalog: Catalog): GroupSummary[] {
  const services = serviceSummaries(spec, catalog);
  return spec.groups.map((group) => ({
    name: group.name,
    endpoint: group.endpoint,
    services: services
      .filter((s) => s.group === group.name)
      .map((s) => ({ name: s.service, stable: s.stable, versions: s.versions, instances: s.instances, passing: s.passing })),
  }));
}

function withUsage(records: readonly InstanceRecord[], usage: UsageSource | undefined): InstanceView[] {
  return records.map((r) => ({ ...r, usage: usage?.usage(r.id) ?? null, limits: usage?.limits(r.id) ?? null }));
}

/** The passing instances of a service (of a semver range, if given), as discovery answers them. */
function passingInstances(catalog: Catalog, service: string, range: string | undefined): DiscoveredInstance[] {
  return catalog
    .list({ service, statuses: ['passing'] })
    .filter((r) => range === undefined || semver.satisfies(r.version, range))
    .map(discovered);
}

/** The stable version the manifest gives a service; null for one only registered from outside. */
function stableOf(spec: NodeSpec, service: string): string | null {
  for (const group of spec.groups) {
    const found = group.services.find((s) => s.name === service);
    if (found) return found.stable || null;
  }
  return null;
}

function discovered(record: InstanceRecord): DiscoveredInstance {
  return {
    id: record.id,
    group: record.group,
    service: record.service,
    version: record.version,
    address: record.address,
    port: record.port,
    weight: record.weight,
    node: record.node,
    source: record.source,
    tags: record.registration?.tags ?? [],
  };
}

function assertServiceKnown(deps: AdminDeps, service: string): void {
  if (!serviceSummaries(deps.spec(), deps.catalog).some((s) => s.service === service)) {
    throw new BerthError('BERTH_ERR_NOT_FOUND', `no service named "${service}"`);
  }
}

/**
 * An external instance joins a group of the manifest (the gateway serves it
 * at that group's endpoint), and a service lives in one group only: the
 * manifest's rule, kept for registered services too.
 */
function placementProblems(deps: AdminDeps, input: RegistrationInput): ErrorDetail[] {
  const spec = deps.spec();
  if (!spec.groups.some((g) => g.name === input.group)) {
    const known = spec.groups.map((g) => g.name).join(', ');
    return [{ where: 'body.group', message: `no group "${input.group}" in the manifest (groups: ${known || 'none'})` }];
  }
  const owner = serviceSummaries(spec, deps.catalog).find((s) => s.service === input.service && s.group !== input.group);
  if (owner !== undefined) {
    return [{ where: 'body.service', message: `service "${input.service}" belongs to group "${owner.group}"; a service lives in one group` }];
  }
  return [];
}

function inBody(detail: ErrorDetail): ErrorDetail {
  return { ...detail, where: detail.where ? `body.${detail.where}` : 'body' };
}

/** The `version` query as a semver range; undefined when absent (every version). */
function parseRange(text: string | undefined): string | undefined {
  if (text === undefined || text.trim() === '') return undefined;
  const range = semver.validRange(text);
  if (range === null) {
    throw new BerthError('BERTH_ERR_BAD_REQUEST', `"${text}" is not a semver range`, {
      details: [{ where: 'query.version', message: 'must be a semver range like ^2, 1.x, >=1.2 <2 or 2.1.0' }],
    });
  }
  return range;
}

/** The `wait` query of a blocking discovery query, in ms: default 30s, at most 5m. */
function parseWait(text: string | undefined): number {
  if (text === undefined || text.trim() === '') return DEFAULT_WAIT_MS;
  const ms = parseDuration(text);
  if (ms === undefined || ms > MAX_WAIT_MS) {
    throw new BerthError('BERTH_ERR_BAD_REQUEST', `"${text}" is not a wait from 0 to 5m`, {
      details: [{ where: 'query.wait', message: 'must be a duration from 0 to 5m like 30s or 2m, or milliseconds' }],
    });
  }
  return ms;
}

function parseStatuses(text: string | undefined): InstanceStatus[] | undefined {
  if (!text) return undefined;
  const statuses = text.split(',').map((s) => s.trim());
  const bad = statuses.filter((s) => !(INSTANCE_STATUSES as readonly string[]).includes(s));
  if (bad.length > 0) {
    throw new BerthError('BERTH_ERR_BAD_REQUEST', `unknown status ${bad.map((b) => `"${b}"`).join(', ')}`, {
      details: [{ where: 'query.status', message: `expected a comma-separated list of ${INSTANCE_STATUSES.join(' | ')}` }],
    });
  }
  return statuses as InstanceStatus[];
}
