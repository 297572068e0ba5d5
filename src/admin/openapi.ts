/**
 * JSON schemas of the admin API. Each route declares its schema once: fastify's
 * ajv validates requests with it, fast-json-stringify serialises responses
 * with it, and @fastify/swagger turns it into the OpenAPI document served at
 * `/openapi.json`. So the document cannot drift from what the API accepts.
 */
import type { FastifySchemaValidationError } from 'fastify';
import type { ErrorDetail } from '../errors.js';
import { INSTANCE_STATUSES } from '../catalog/types.js';

/** Shared schemas, added with `app.addSchema` and referenced as `{ $ref: '<id>#' }`; they become `components.schemas`. */
export const sharedSchemas = [
  {
    $id: 'Error',
    type: 'object',
    description: 'Every error: a stable code (docs/errors.md), a message for people, and one detail per problem for a bad request.',
    required: ['code', 'message'],
    properties: {
      code: { type: 'string', examples: ['BERTH_ERR_BAD_REQUEST'] },
      message: { type: 'string' },
      details: {
        type: 'array',
        items: {
          type: 'object',
          required: ['message'],
          properties: {
            where: { type: 'string', description: 'The field: `body.port`, `query.version`, `params.id`.' },
            message: { type: 'string' },
          },
        },
      },
    },
  },
  {
    $id: 'CheckResult',
    type: 'object',
    required: ['status', 'output', 'at', 'durationMs'],
    properties: {
      status: { type: 'string', enum: ['passing', 'warning', 'critical'] },
      output: { type: 'string' },
      at: { type: 'string', format: 'date-time' },
      durationMs: { type: 'number' },
    },
  },
  {
    $id: 'Registration',
    type: 'object',
    description: 'How an external instance proves it is alive.',
    required: ['ttlMs', 'http', 'deregisterAfterMs', 'lastHeartbeat', 'tags'],
    properties: {
      ttlMs: { type: ['integer', 'null'] },
      http: {
        type: ['object', 'null'],
        properties: { path: { type: 'string' }, intervalMs: { type: 'integer' }, timeoutMs: { type: 'integer' } },
      },
      deregisterAfterMs: { type: 'integer' },
      lastHeartbeat: { type: ['string', 'null'], format: 'date-time' },
      tags: { type: 'array', items: { type: 'string' } },
    },
  },
  {
    $id: 'Usage',
    type: 'object',
    description: 'What an instance used at its latest sample (every 5 s), its processes summed: its process group, or its cgroup (docs/metrics.md).',
    required: ['at', 'cpuPercent', 'cpuSeconds', 'rssBytes', 'openFds', 'threads', 'processes'],
    properties: {
      at: { type: 'string', format: 'date-time' },
      cpuPercent: { type: ['number', 'null'], description: 'CPU over the last interval, in percent of one core (150: one and a half cores); null on the first sample' },
      cpuSeconds: { type: 'number', description: 'CPU seconds its processes, and the children they reaped, have used since it started: only grows' },
      rssBytes: { type: 'integer', description: 'Resident memory (VmRSS), summed over its processes' },
      openFds: { type: ['integer', 'null'], description: 'Open file descriptors; null when Berth may not read them' },
      threads: { type: 'integer' },
      processes: { type: 'integer' },
    },
  },
  {
    $id: 'Limits',
    type: 'object',
    description: 'The limits an instance runs under (`isolation.resources`); each null when unlimited.',
    required: ['memoryBytes', 'cpu', 'pids', 'openFiles'],
    properties: {
      memoryBytes: { type: ['integer', 'null'] },
      cpu: { type: ['number', 'null'], description: 'Cores' },
      pids: { type: ['integer', 'null'], description: 'Processes and threads together' },
      openFiles: { type: ['integer', 'null'], description: 'File descriptors per process (RLIMIT_NOFILE)' },
    },
  },
  {
    $id: 'Instance',
    type: 'object',
    description: 'One instance as the catalog holds it; the instance lists add its usage and limits.',
    required: ['id', 'node', 'group', 'service', 'version', 'address', 'port', 'pid', 'status', 'restarts', 'source', 'weight'],
    // Fields added to the catalog later are passed through rather than dropped by the serializer.
    additionalProperties: true,
    properties: {
      id: { type: 'string' },
      node: { type: 'string' },
      group: { type: 'string' },
      service: { type: 'string' },
      version: { type: 'string' },
      address: { type: 'string' },
      port: { type: 'integer' },
      pid: { type: ['integer', 'null'] },
      status: { type: 'string', enum: [...INSTANCE_STATUSES] },
      restarts: { type: 'integer' },
      source: { type: 'string', enum: ['supervised', 'external'] },
      createdAt: { type: 'string', format: 'date-time' },
      startedAt: { type: ['string', 'null'], format: 'date-time' },
      updatedAt: { type: 'string', format: 'date-time' },
      lastCheck: { anyOf: [{ $ref: 'CheckResult#' }, { type: 'null' }] },
      lastExit: {
        type: ['object', 'null'],
        properties: { code: { type: ['integer', 'null'] }, signal: { type: ['string', 'null'] }, at: { type: 'string', format: 'date-time' }, oomKilled: { type: 'boolean' } },
      },
      reason: { type: ['string', 'null'] },
      weight: { type: 'number' },
      registration: { anyOf: [{ $ref: 'Registration#' }, { type: 'null' }] },
      usage: {
        anyOf: [{ $ref: 'Usage#' }, { type: 'null' }],
        description: 'In the instance lists: the latest usage sample; null when not sampled yet, not running, or not supervised by this node',
      },
      limits: {
        anyOf: [{ $ref: 'Limits#' }, { type: 'null' }],
        description: 'In the instance lists: the limits its process runs under; null when not running or not supervised by this node',
      },
    },
  },
  {
    $id: 'DiscoveredInstance',
    type: 'object',
    description: 'A passing instance, as a client needs it to call the service.',
    required: ['id', 'group', 'service', 'version', 'address', 'port', 'weight', 'node', 'source', 'tags'],
    properties: {
      id: { type: 'string' },
      group: { type: 'string' },
      service: { type: 'string' },
      version: { type: 'string' },
      address: { type: 'string' },
      port: { type: 'integer' },
      weight: { type: 'number' },
      node: { type: 'string' },
      source: { type: 'string', enum: ['supervised', 'external'] },
      tags: { type: 'array', items: { type: 'string' } },
    },
  },
  {
    $id: 'ServiceSummary',
    type: 'object',
    required: ['group', 'service', 'stable', 'versions', 'instances', 'passing'],
    properties: {
      group: { type: 'string' },
      service: { type: 'string' },
      stable: { type: ['string', 'null'], description: 'null for a service only registered from outside' },
      versions: { type: 'array', items: { type: 'string' } },
      instances: { type: 'integer', description: 'instances of any status but stopped' },
      passing: { type: 'integer' },
    },
  },
  {
    $id: 'Group',
    type: 'object',
    required: ['name', 'endpoint', 'services'],
    properties: {
      name: { type: 'string' },
      endpoint: {
        type: 'object',
        description: 'Where the gateway serves the group: `{kind: path, prefix}`, `{kind: host, host}` or `{kind: port, port}`.',
        required: ['kind'],
        additionalProperties: true,
        properties: {
          kind: { type: 'string', enum: ['path', 'host', 'port'] },
          prefix: { type: 'string' },
          host: { type: 'string' },
          port: { type: 'integer' },
        },
      },
      services: {
        type: 'array',
        items: {
          type: 'object',
          required: ['name', 'stable', 'versions', 'instances', 'passing'],
          properties: {
            name: { type: 'string' },
            stable: { type: ['string', 'null'] },
            versions: { type: 'array', items: { type: 'string' } },
            instances: { type: 'integer' },
            passing: { type: 'integer' },
          },
        },
      },
    },
  },
  {
    $id: 'Node',
    type: 'object',
    required: ['name', 'pid', 'manifest', 'dataDir', 'startedAt', 'admin'],
    additionalProperties: true,
    properties: {
      name: { type: 'string' },
      pid: { type: 'integer' },
      manifest: { type: 'string' },
      dataDir: { type: 'string' },
      startedAt: { type: 'string', format: 'date-time' },
      admin: { type: 'string', description: 'URL of this admin API' },
      gateway: { type: 'string', description: 'URL of the gateway' },
    },
  },
  {
    $id: 'Token',
    type: 'object',
    description: 'A bearer token of the admin API, without its secret (docs/security.md).',
    required: ['id', 'name', 'role', 'createdAt'],
    properties: {
      id: { type: 'string', description: '`tok_` and 12 hex digits: what `DELETE /v1/tokens/{id}` takes' },
      name: { type: 'string' },
      role: { type: 'string', enum: ['viewer', 'operator', 'admin'] },
      createdAt: { type: 'string', format: 'date-time' },
      lastUsedAt: { type: 'string', format: 'date-time', description: 'When it last opened a request (updated at most once a minute); absent if never' },
    },
  },
  {
    $id: 'ApiKey',
    type: 'object',
    description: 'An API key of the gateway (`x-api-key`), without its secret (docs/security.md).',
    required: ['id', 'name', 'groups', 'subject', 'roles', 'scopes', 'createdAt'],
    properties: {
      id: { type: 'string', description: '`key_` and 12 hex digits: what `DELETE /v1/apikeys/{id}` takes' },
      name: { type: 'string' },
      groups: { type: 'array', items: { type: 'string' }, description: 'Groups whose services accept the key; `*` for every group' },
      subject: { type: 'string', description: 'The caller\'s subject, as `authorize` rules and instances (`x-berth-subject`) see it' },
      roles: { type: 'array', items: { type: 'string' } },
      scopes: { type: 'array', items: { type: 'string' } },
      createdAt: { type: 'string', format: 'date-time' },
      lastUsedAt: { type: 'string', format: 'date-time', description: 'When it last opened a request (updated at most once a minute); absent if never' },
    },
  },
  {
    $id: 'AuditEntry',
    type: 'object',
    description: 'One mutating call, allowed or refused: who, what, when, and the result.',
    required: ['time', 'requestId', 'actor', 'actorId', 'role', 'method', 'route', 'params', 'status'],
    additionalProperties: true,
    properties: {
      time: { type: 'string', format: 'date-time' },
      requestId: { type: 'string' },
      actor: { type: 'string', description: 'The name of the token that made the call, or `anonymous`' },
      actorId: { type: ['string', 'null'], description: 'Its id; null when anonymous' },
      role: { type: ['string', 'null'], enum: ['viewer', 'operator', 'admin', null], description: 'Its role; null when anonymous' },
      method: { type: 'string' },
      route: { type: 'string', description: 'The route as declared (`/v1/registrations/:id`), or the path asked for when none matched' },
      params: { type: 'object', additionalProperties: { type: 'string' } },
      body: { description: 'The request body, secret-like fields masked' },
      status: { type: 'integer' },
      code: { type: 'string', description: 'The error code of a refused or failed call' },
    },
  },
] as const;

const errorResponse = (description: string): Record<string, unknown> => ({ description, $ref: 'Error#' });
const BAD_REQUEST = errorResponse('Malformed request: `details` lists each problem');
const NOT_FOUND = errorResponse('No such resource');
const CONFLICT = errorResponse('BERTH_ERR_REGISTRATION_CONFLICT: a supervised instance, an HTTP-checked registration, or another node’s');

const duration = {
  type: ['string', 'integer'],
  description: 'A duration (`500ms`, `10s`, `1m30s`) or milliseconds',
};

const statusQuery = {
  type: 'object',
  properties: {
    status: { type: 'string', description: `Comma-separated statuses to keep: ${INSTANCE_STATUSES.join(', ')}` },
  },
} as const;

const instanceList = { description: 'Instances, sorted by group, service, version, creation', type: 'array', items: { $ref: 'Instance#' } };

/** Route schemas, keyed by route. */
export const routeSchemas = {
  healthz: {
    summary: 'Liveness: the node process answers',
    tags: ['node'],
    response: {
      200: { description: 'The node answers', type: 'object', required: ['status', 'node'], properties: { status: { type: 'string', enum: ['ok'] }, node: { type: ['string', 'null'] } } },
    },
  },
  readyz: {
    summary: 'Readiness: 200 once the node has started its instances, 503 before',
    tags: ['node'],
    response: {
      200: { description: 'Ready', type: 'object', required: ['status'], properties: { status: { type: 'string', enum: ['ready'] } } },
      503: { description: 'Still starting', type: 'object', required: ['status'], properties: { status: { type: 'string', enum: ['starting'] } } },
    },
  },
  node: {
    summary: 'This node: name, pid, manifest, data dir, admin address',
    tags: ['node'],
    response: { 200: { description: 'This node; null while it starts', anyOf: [{ $ref: 'Node#' }, { type: 'null' }] } },
  },
  openapi: {
    summary: 'This document (OpenAPI 3)',
    tags: ['node'],
    response: { 200: { description: 'An OpenAPI 3.0 document', type: 'object', additionalProperties: true } },
  },
  services: {
    summary: 'Every service: those of the manifest and those registered from outside',
    tags: ['catalog'],
    response: { 200: { description: 'Services, sorted by group then name', type: 'array', items: { $ref: 'ServiceSummary#' } } },
  },
  groups: {
    summary: 'Every group of the manifest with its endpoint and services (external ones included)',
    tags: ['catalog'],
    response: { 200: { description: 'Groups, in manifest order', type: 'array', items: { $ref: 'Group#' } } },
  },
  instances: {
    summary: 'Every instance in the catalog',
    tags: ['catalog'],
    querystring: statusQuery,
    response: { 200: instanceList, 400: BAD_REQUEST },
  },
  service: {
    summary: 'One service: its summary, its policies as applied (defaults, group, service), and their live state: breakers, retry budget, limits, ejections',
    tags: ['catalog'],
    params: { type: 'object', required: ['service'], properties: { service: { type: 'string' } } },
    response: {
      200: {
        description: 'The service. `state` is null when the gateway has not routed to it yet.',
        type: 'object',
        required: ['group', 'service', 'stable', 'versions', 'instances', 'passing', 'policies', 'state'],
        properties: {
          group: { type: 'string' },
          service: { type: 'string' },
          stable: { type: ['string', 'null'] },
          versions: { type: 'array', items: { type: 'string' } },
          instances: { type: 'integer' },
          passing: { type: 'integer' },
          policies: { type: 'object', additionalProperties: true, description: 'The service\'s policies, durations in milliseconds (docs/resilience.md)' },
          state: {
            anyOf: [
              { type: 'null' },
              {
                type: 'object',
                additionalProperties: true,
                description: 'breaker (service), budget (retries in flight, granted, refused), limits (active, queued, rejected), versions (ejected count, panic), instances (in flight, breaker, ejection)',
              },
            ],
          },
        },
      },
      404: NOT_FOUND,
    },
  },
  serviceInstances: {
    summary: 'The instances of one service, any version',
    tags: ['catalog'],
    params: { type: 'object', required: ['service'], properties: { service: { type: 'string' } } },
    querystring: statusQuery,
    response: { 200: instanceList, 400: BAD_REQUEST, 404: NOT_FOUND },
  },
  discovery: {
    summary: 'Passing instances of a service (supervised and external), optionally of a semver range; a blocking query with `index`',
    description:
      'Every answer carries `x-berth-index`, the service\'s index: it changes when, and only when, its passing instances change. ' +
      'With `?index=N` the request waits until this query\'s answer differs from the one index N described, or `wait` elapses, then answers as usual ' +
      '(Consul\'s blocking queries). An index other than the current one answers at once. A node that stops answers its waiting queries at once.',
    tags: ['discovery'],
    params: { type: 'object', required: ['service'], properties: { service: { type: 'string' } } },
    querystring: {
      type: 'object',
      properties: {
        version: { type: 'string', description: 'A semver range: `^2`, `1.x`, `>=1.2 <2`, `2.1.0`. Absent: every version.' },
        index: { type: 'integer', minimum: 0, description: 'The `x-berth-index` of the last answer: wait for a different one.' },
        wait: { type: 'string', description: 'How long a query with `index` waits at most: a duration (`30s`, `2m`) or milliseconds, at most 5m. Default 30s.' },
      },
    },
    response: {
      200: {
        description: 'Passing instances only',
        type: 'array',
        items: { $ref: 'DiscoveredInstance#' },
        headers: {
          'x-berth-index': { type: 'string', description: 'The service\'s index, for the next `?index=`' },
          'x-berth-stable': { type: 'string', description: 'The service\'s stable version (absent for a service only registered from outside)' },
        },
      },
      400: BAD_REQUEST,
      404: NOT_FOUND,
    },
  },
  register: {
    summary: 'Register an external instance (or update it: same id)',
    description:
      'Exactly one of `ttl` (the service sends heartbeats) and `check` (Berth checks it over HTTP) is required. ' +
      'The instance is `starting` until its first heartbeat or first passing check, `critical` when its TTL expires or its check fails, ' +
      'and removed once critical for `deregisterAfter`.',
    tags: ['registrations'],
    body: {
      type: 'object',
      required: ['group', 'service', 'address', 'port'],
      additionalProperties: false,
      properties: {
        id: { type: 'string', minLength: 1, maxLength: 128, description: 'Default `<service>-<version>-ext-<5 hex>`' },
        group: { type: 'string', minLength: 1, description: 'A group of the manifest' },
        service: { type: 'string', minLength: 1 },
        version: { type: 'string', minLength: 1, description: 'Strict semver; default `0.0.0`' },
        address: { type: 'string', minLength: 1, maxLength: 255, description: 'IPv4 or IPv6 address, or host name' },
        port: { type: 'integer', minimum: 1, maximum: 65_535 },
        weight: { type: 'number', minimum: 0, description: 'Share of its version’s traffic; default 1' },
        tags: { type: 'array', maxItems: 64, items: { type: 'string', minLength: 1, maxLength: 128 } },
        ttl: { ...duration, description: 'TTL heartbeat: critical when no heartbeat came for this long (1s to 24h)' },
        check: {
          type: 'object',
          required: ['http'],
          additionalProperties: false,
          properties: {
            http: { type: 'string', description: 'Path Berth GETs on address:port; 2xx passing, 429 warning, else critical' },
            interval: { ...duration, description: 'Default 10s' },
            timeout: { ...duration, description: 'Default 2s, or the interval if shorter' },
          },
        },
        deregisterAfter: { ...duration, description: 'Removed after being critical this long; default 1m (1s to 7d)' },
      },
    },
    response: { 201: { description: 'The registered instance', $ref: 'Instance#' }, 400: BAD_REQUEST, 409: CONFLICT },
  },
  heartbeat: {
    summary: 'Heartbeat of a TTL registration: sets its status and restarts its TTL',
    tags: ['registrations'],
    params: { type: 'object', required: ['id'], properties: { id: { type: 'string' } } },
    body: {
      type: 'object',
      additionalProperties: false,
      properties: {
        status: { type: 'string', enum: ['passing', 'warning', 'critical'], description: 'Default passing' },
        output: { type: 'string', maxLength: 4096, description: 'Kept as the instance’s lastCheck output' },
      },
    },
    response: { 200: { description: 'The instance after the heartbeat', $ref: 'Instance#' }, 400: BAD_REQUEST, 404: NOT_FOUND, 409: CONFLICT },
  },
  deregister: {
    summary: 'Remove an external instance from the catalog',
    tags: ['registrations'],
    params: { type: 'object', required: ['id'], properties: { id: { type: 'string' } } },
    response: { 204: { description: 'Deregistered', type: 'null' }, 404: NOT_FOUND, 409: CONFLICT },
  },
  tokens: {
    summary: 'Every token of the admin API, without secrets',
    tags: ['security'],
    response: { 200: { description: 'Tokens, oldest first', type: 'array', items: { $ref: 'Token#' } } },
  },
  createToken: {
    summary: 'Create a token; the answer is the only place its secret is ever shown',
    tags: ['security'],
    body: {
      type: 'object',
      required: ['name', 'role'],
      additionalProperties: false,
      properties: {
        name: { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$', description: '1-64 letters, digits, `.`, `_`, `-`: who or what holds it' },
        role: { type: 'string', enum: ['viewer', 'operator', 'admin'] },
      },
    },
    response: {
      201: {
        description: 'The token, and its secret in `token`: send it as `authorization: Bearer <token>`',
        type: 'object',
        required: ['id', 'name', 'role', 'createdAt', 'token'],
        properties: {
          id: { type: 'string' },
          name: { type: 'string' },
          role: { type: 'string', enum: ['viewer', 'operator', 'admin'] },
          createdAt: { type: 'string', format: 'date-time' },
          token: { type: 'string', description: '`berth_` and 43 base64url characters; the node keeps only its SHA-256' },
        },
      },
      400: BAD_REQUEST,
    },
  },
  revokeToken: {
    summary: 'Revoke a token: refused from now on',
    tags: ['security'],
    params: { type: 'object', required: ['id'], properties: { id: { type: 'string' } } },
    response: { 204: { description: 'Revoked', type: 'null' }, 404: NOT_FOUND },
  },
  apiKeys: {
    summary: 'Every API key of the gateway, without secrets',
    tags: ['security'],
    response: { 200: { description: 'API keys, oldest first', type: 'array', items: { $ref: 'ApiKey#' } } },
  },
  createApiKey: {
    summary: 'Create an API key for the services of some groups; the answer is the only place its secret is ever shown',
    tags: ['security'],
    body: {
      type: 'object',
      required: ['name', 'groups'],
      additionalProperties: false,
      properties: {
        name: { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$', description: '1-64 letters, digits, `.`, `_`, `-`: who or what holds it' },
        groups: {
          type: 'array',
          minItems: 1,
          maxItems: 64,
          items: { type: 'string', pattern: '^(?:\\*|[a-z][a-z0-9-]{0,62})$' },
          description: 'Groups of the manifest whose services accept the key, or `*` for every group',
        },
        subject: { type: 'string', minLength: 1, maxLength: 256, pattern: '^[^\\x00-\\x1f\\x7f]+$', description: 'The caller\'s subject; default the name' },
        roles: { type: 'array', maxItems: 64, items: { type: 'string', pattern: '^[\\x21-\\x2b\\x2d-\\x7e]{1,128}$' }, description: 'Roles, for `authorize` rules and `x-berth-roles`' },
        scopes: { type: 'array', maxItems: 64, items: { type: 'string', pattern: '^[\\x21-\\x2b\\x2d-\\x7e]{1,128}$' }, description: 'Scopes, for `authorize` rules and `x-berth-scopes`' },
      },
    },
    response: {
      201: {
        description: 'The key, and its secret in `secret`: send it as `x-api-key: <secret>`',
        type: 'object',
        required: ['id', 'name', 'groups', 'subject', 'roles', 'scopes', 'createdAt', 'secret'],
        properties: {
          id: { type: 'string' },
          name: { type: 'string' },
          groups: { type: 'array', items: { type: 'string' } },
          subject: { type: 'string' },
          roles: { type: 'array', items: { type: 'string' } },
          scopes: { type: 'array', items: { type: 'string' } },
          createdAt: { type: 'string', format: 'date-time' },
          secret: { type: 'string', description: '`bk_` and 43 base64url characters; the node keeps only its SHA-256' },
        },
      },
      400: BAD_REQUEST,
    },
  },
  revokeApiKey: {
    summary: 'Revoke an API key: refused by the gateway from now on',
    tags: ['security'],
    params: { type: 'object', required: ['id'], properties: { id: { type: 'string' } } },
    response: { 204: { description: 'Revoked', type: 'null' }, 404: NOT_FOUND },
  },
  audit: {
    summary: 'The last entries of the audit log: every mutating call, allowed or refused',
    tags: ['security'],
    querystring: {
      type: 'object',
      properties: { limit: { type: 'integer', minimum: 1, maximum: 1000, default: 100, description: 'How many of the last entries' } },
    },
    response: { 200: { description: 'Entries, oldest first', type: 'array', items: { $ref: 'AuditEntry#' } }, 400: BAD_REQUEST },
  },
} as const;

/** Options for @fastify/swagger. */
export function swaggerOptions(version: string): Record<string, unknown> {
  return {
    openapi: {
      openapi: '3.0.3',
      info: {
        title: 'Berth admin API',
        version,
        description: 'Catalog, discovery and registration of external services on a Berth node. Errors are `{code, message, details?}`; codes are listed in docs/errors.md. Calls need a bearer token (see the `bearer` security scheme and docs/security.md).',
      },
      tags: [
        { name: 'node', description: 'This node: liveness, readiness, identity, this document' },
        { name: 'catalog', description: 'Groups, services and instances as the catalog holds them' },
        { name: 'discovery', description: 'Passing instances, for clients that balance themselves' },
        { name: 'registrations', description: 'External services: register, heartbeat, deregister' },
        { name: 'security', description: 'Tokens of this API, API keys of the gateway, and the audit log of mutating calls' },
      ],
      components: {
        securitySchemes: {
          bearer: {
            type: 'http',
            scheme: 'bearer',
            description:
              'A token of the node (`berth_…`): `authorization: Bearer <token>`. Roles: viewer (reads), operator (viewer + reload, registrations, plan), ' +
              'admin (operator + tokens, API keys, audit). Each operation says the least role it needs (`x-berth-role`); `/healthz`, `/readyz`, ' +
              '`/openapi.json` and discovery need none. Missing or unknown token: 401; role too low: 403.',
          },
        },
      },
    },
    // Shared schemas keep their $id as their name in components.schemas (instead of def-0, def-1…).
    refResolver: { buildLocalReference: (json: { $id?: string }, _base: unknown, _fragment: unknown, i: number) => json.$id ?? `def-${i}` },
  };
}

/**
 * Turns ajv's errors into Berth's details: `where` is the field in dotted
 * form (`body.port`, `body.check.interval`, `query.version`), `message` ajv's
 * text, rephrased where ajv's names the field instead of the problem.
 */
export function validationDetails(errors: readonly FastifySchemaValidationError[], context: string): ErrorDetail[] {
  const details: ErrorDetail[] = [];
  for (const error of errors) {
    const path = error.instancePath
      .split('/')
      .slice(1)
      .map((segment) => segment.replace(/~1/g, '/').replace(/~0/g, '~'));
    // `query.index`, as the rules checked in the handlers name them, rather than fastify's `querystring.index`.
    let where = [context === 'querystring' ? 'query' : context, ...path].join('.');
    let message = error.message ?? error.keyword;
    if (error.keyword === 'required' && typeof error.params.missingProperty === 'string') {
      where = `${where}.${error.params.missingProperty}`;
      message = 'is required';
    } else if (error.keyword === 'additionalProperties' && typeof error.params.additionalProperty === 'string') {
      where = `${where}.${error.params.additionalProperty}`;
      message = 'is not a known field';
    } else if (error.keyword === 'enum' && Array.isArray(error.params.allowedValues)) {
      message = `must be one of ${error.params.allowedValues.map((v) => JSON.stringify(v)).join(', ')}`;
    }
    if (!details.some((d) => d.where === where && d.message === message)) details.push({ where, message });
  }
  return details;
}
