/**
 * Who may call which admin route: one table, every route and the least role
 * it needs. A route missing from the table is refused to everyone (a test
 * checks that every registered route has an entry), so a new route is closed
 * until someone decides who may call it. Authentication is a bearer token
 * (tokens.ts); every mutating call, allowed or refused, is audited (audit.ts).
 */
import { randomUUID } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest, FastifySchema, RouteOptions } from 'fastify';
import { BerthError } from '../errors.js';
import type { AuditSink } from './audit.js';
import { maskSecrets } from './audit.js';
import { bearerToken } from '../security/bearer.js';
import { roleAtLeast, type AdminTokens, type Role, type TokenInfo } from './tokens.js';

export { bearerToken };

/** `public`: no token needed. Otherwise the least role. */
export type Access = 'public' | Role;

/**
 * Every route of the admin API and the least role that may call it. Viewers
 * read everything but secrets and the manifest's contents (`/v1/plan` shows
 * changed settings, environment values included); operators change what runs
 * and see the gateway's API keys (never their secrets); admins manage tokens
 * and API keys and read the audit log. Discovery is public: every
 * instance of a node calls it through `berth/client`, which has no token to send.
 */
export const ROUTE_ACCESS: Readonly<Record<string, Access>> = {
  'GET /healthz': 'public',
  'GET /readyz': 'public',
  'GET /openapi.json': 'public',
  'GET /v1/discovery/:service': 'public',
  'GET /metrics': 'viewer',
  'GET /v1/node': 'viewer',
  'GET /v1/services': 'viewer',
  'GET /v1/services/:service': 'viewer',
  'GET /v1/services/:service/instances': 'viewer',
  'GET /v1/groups': 'viewer',
  'GET /v1/instances': 'viewer',
  'GET /v1/plan': 'operator',
  'POST /v1/reload': 'operator',
  'POST /v1/registrations': 'operator',
  'PUT /v1/registrations/:id/heartbeat': 'operator',
  'DELETE /v1/registrations/:id': 'operator',
  'GET /v1/tokens': 'admin',
  'POST /v1/tokens': 'admin',
  'DELETE /v1/tokens/:id': 'admin',
  'GET /v1/apikeys': 'operator',
  'POST /v1/apikeys': 'admin',
  'DELETE /v1/apikeys/:id': 'admin',
  'GET /v1/audit': 'admin',
};

/** A path no route matches needs a token, so that a caller without one learns nothing of which routes exist. */
const UNMATCHED: Access = 'viewer';

export const MUTATING_METHODS: ReadonlySet<string> = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

/** The entry of `method route` in ROUTE_ACCESS (HEAD is GET's); undefined when it has none. */
export function accessFor(method: string, route: string): Access | undefined {
  const key = `${method === 'HEAD' ? 'GET' : method} ${route}`;
  return Object.hasOwn(ROUTE_ACCESS, key) ? ROUTE_ACCESS[key] : undefined;
}

export interface AccessDeps {
  tokens: Pick<AdminTokens, 'verify'>;
  audit: AuditSink;
}

declare module 'fastify' {
  interface FastifyRequest {
    /** The token the request came with, once verified; null without one. */
    principal: TokenInfo | null;
  }
}

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/** A caller's `x-request-id` when it is a sane one, else a new one: the id the audit log and the answer carry. */
export function requestId(request: { headers: Record<string, string | string[] | undefined> }): string {
  const given = request.headers['x-request-id'];
  return typeof given === 'string' && REQUEST_ID.test(given) ? given : randomUUID();
}

/**
 * Installs authentication, authorization and the audit on `app`. Call it
 * before any route is registered: its onRoute hook writes each route's
 * requirement into the OpenAPI document.
 */
export function installAccessControl(app: FastifyInstance, deps: AccessDeps): void {
  app.decorateRequest('principal', null);

  app.addHook('onRoute', (route) => describeAccess(route));

  app.addHook('onRequest', (request, reply, done) => {
    void reply.header('x-request-id', request.id);
    const route = request.routeOptions.url;
    const access = route === undefined ? UNMATCHED : accessFor(request.method, route);
    if (access === 'public') return done();
    const token = bearerToken(request.headers.authorization);
    if (token === undefined) {
      void reply.header('www-authenticate', 'Bearer realm="berth"');
      return done(new BerthError('BERTH_ERR_UNAUTHORIZED', 'this call needs a bearer token: send `authorization: Bearer <token>` (berth token create; docs/security.md)'));
    }
    const principal = deps.tokens.verify(token);
    if (principal === undefined) {
      void reply.header('www-authenticate', 'Bearer realm="berth", error="invalid_token"');
      return done(new BerthError('BERTH_ERR_UNAUTHORIZED', 'the bearer token is not one this node knows (mistyped, or revoked)'));
    }
    request.principal = principal;
    if (access === undefined) {
      return done(new BerthError('BERTH_ERR_FORBIDDEN', `${request.method} ${route ?? ''} has no access rule, so nobody may call it (src/admin/access.ts)`));
    }
    if (!roleAtLeast(principal.role, access)) {
      return done(new BerthError('BERTH_ERR_FORBIDDEN', `${request.method} ${route ?? request.url} needs the role ${access} or higher; token "${principal.name}" is ${principal.role}`));
    }
    return done();
  });

  // onSend runs before the answer leaves: a caller that saw the answer can read the entry at once.
  app.addHook('onSend', (request, reply, payload, done) => {
    if (MUTATING_METHODS.has(request.method)) deps.audit.record(auditEntry(request, reply, payload));
    done(null, payload);
  });
}

function auditEntry(request: FastifyRequest, reply: FastifyReply, payload: unknown): Parameters<AuditSink['record']>[0] {
  const principal = request.principal;
  const status = reply.statusCode;
  const route = request.routeOptions.url ?? request.url.split('?')[0] ?? request.url;
  const params = Object.fromEntries(Object.entries((request.params ?? {}) as Record<string, unknown>).map(([k, v]) => [k, String(v)]));
  const code = status >= 400 ? errorCode(payload) : undefined;
  return {
    time: new Date().toISOString(),
    requestId: request.id,
    actor: principal === null ? 'anonymous' : principal.name,
    actorId: principal?.id ?? null,
    role: principal?.role ?? null,
    method: request.method,
    route,
    params,
    ...(request.body === undefined || request.body === null ? {} : { body: maskSecrets(request.body) }),
    status,
    ...(code === undefined ? {} : { code }),
  };
}

function errorCode(payload: unknown): string | undefined {
  if (typeof payload !== 'string') return undefined;
  try {
    const code = (JSON.parse(payload) as { code?: unknown }).code;
    return typeof code === 'string' ? code : undefined;
  } catch {
    return undefined;
  }
}

const UNAUTHORIZED = { description: 'BERTH_ERR_UNAUTHORIZED: no bearer token, or one the node does not know', $ref: 'Error#' };
const FORBIDDEN = { description: 'BERTH_ERR_FORBIDDEN: the token\'s role is too low for this route', $ref: 'Error#' };

/** Writes the route's requirement into its schema, which @fastify/swagger turns into the operation's `security`. */
function describeAccess(route: RouteOptions): void {
  const method = Array.isArray(route.method) ? String(route.method[0]) : route.method;
  const access = accessFor(method, route.url);
  const schema = (route.schema ?? {}) as Record<string, unknown>;
  if (access === 'public') {
    route.schema = { ...schema, security: [], 'x-berth-role': 'public' } as FastifySchema;
    return;
  }
  const needs = access === undefined ? 'No access rule: refused to every token.' : `Needs a bearer token of role \`${access}\` or higher.`;
  const description = typeof schema.description === 'string' ? `${schema.description}\n\n${needs}` : needs;
  const response = { ...(schema.response as Record<string, unknown> | undefined), 401: UNAUTHORIZED, 403: FORBIDDEN };
  route.schema = { ...schema, description, response, security: [{ bearer: [] }], 'x-berth-role': access ?? 'none' } as FastifySchema;
}
