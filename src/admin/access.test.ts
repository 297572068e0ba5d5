import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { request } from 'undici';
import { planChanges } from '../manifest/diff.js';
import type { TestSecurity } from '../testing/admin-security.js';
import { openAdminFixture, type AdminFixture } from '../testing/admin-node.js';
import { accessFor, bearerToken, MUTATING_METHODS, ROUTE_ACCESS } from './access.js';
import { buildAdminApi } from './api.js';
import { AUDIT_FILE, type AuditEntry } from './audit.js';
import type { Role } from './tokens.js';

const MANIFEST = 'groups:\n  core:\n    services:\n      web: { command: node web.js }\n';
const REGISTRATION = { id: 'ext-1', group: 'core', service: 'web', address: '127.0.0.1', port: 7001, ttl: '10s' };

/** A request for every route of ROUTE_ACCESS, with its params filled in and a body that passes validation. */
function sample(key: string): { method: string; path: string; body?: unknown } {
  const [method = '', route = ''] = key.split(' ');
  const path = route.replace(':service', 'web').replace(':id', 'ext-1');
  if (key === 'POST /v1/registrations') return { method, path, body: REGISTRATION };
  if (key === 'POST /v1/tokens') return { method, path, body: { name: 'made', role: 'viewer' } };
  if (key === 'POST /v1/apikeys') return { method, path, body: { name: 'made', groups: ['core'] } };
  return { method, path };
}

describe('admin API access control', () => {
  let fixture: AdminFixture;
  let dir: string;
  let security: TestSecurity;
  let app: FastifyInstance;
  let url: string;
  const routes: string[] = [];
  let reloads = 0;

  before(async () => {
    fixture = await openAdminFixture(MANIFEST, 'berth-access-');
    ({ dir, security } = fixture);
    const spec = fixture.spec;
    app = buildAdminApi({
      ...fixture.deps,
      // Every optional route is on, so that the table is checked against all of them.
      metrics: { contentType: 'text/plain', text: () => Promise.resolve('# none\n') },
      reload: {
        plan: () => Promise.resolve(planChanges(spec, spec)),
        reload: () => {
          reloads++;
          return Promise.resolve({ plan: planChanges(spec, spec), result: { started: 0, stopped: 0, replaced: 0, failed: [] } });
        },
      },
      security: security.security,
    });
    app.addHook('onRoute', (route) => {
      for (const method of [route.method].flat()) if (method !== 'HEAD') routes.push(`${method} ${route.url}`);
    });
    // A route someone adds without deciding who may call it.
    app.get('/v1/forgotten', () => ({ secret: 'nobody should see this' }));
    url = await fixture.listen(app);
  });

  after(async () => {
    await app.close();
    await fixture.close();
  });

  async function call(method: string, path: string, options: { token?: string; body?: unknown; headers?: Record<string, string> } = {}): Promise<{ status: number; body: Record<string, unknown>; headers: Record<string, unknown> }> {
    const headers: Record<string, string> = { ...options.headers };
    if (options.token !== undefined) headers.authorization = `Bearer ${options.token}`;
    if (options.body !== undefined) headers['content-type'] = 'application/json';
    const res = await request(`${url}${path}`, { method: method as 'GET', headers, body: options.body === undefined ? null : JSON.stringify(options.body) });
    const text = await res.body.text();
    let body: Record<string, unknown> = {};
    try {
      body = text === '' ? {} : (JSON.parse(text) as Record<string, unknown>);
    } catch {
      // Not JSON (metrics).
    }
    return { status: res.statusCode, body, headers: res.headers };
  }

  const auditTail = async (n: number): Promise<AuditEntry[]> => security.audit.tail(n);

  it('has-an-entry-for-every-registered-route-and-none-for-a-route-that-does-not-exist', () => {
    const registered = routes.filter((r) => r !== 'GET /v1/forgotten');
    assert.deepEqual(registered.filter((r) => !Object.hasOwn(ROUTE_ACCESS, r)), [], 'every route has an access rule');
    assert.deepEqual(Object.keys(ROUTE_ACCESS).filter((r) => !registered.includes(r)), [], 'every rule names a route');
    assert.equal(accessFor('HEAD', '/v1/services'), 'viewer', 'HEAD is GET');
    assert.equal(accessFor('GET', '/v1/forgotten'), undefined);
  });

  it('refuses-a-route-without-an-entry-even-to-an-admin', async () => {
    const res = await call('GET', '/v1/forgotten', { token: security.secrets.admin });
    assert.equal(res.status, 403);
    assert.equal(res.body.code, 'BERTH_ERR_FORBIDDEN');
    assert.match(String(res.body.message), /no access rule/);
  });

  it('answers-401-with-www-authenticate-to-every-non-public-route-without-a-token', async () => {
    for (const [key, access] of Object.entries(ROUTE_ACCESS)) {
      const { method, path, body } = sample(key);
      const res = await call(method, path, body === undefined ? {} : { body });
      if (access === 'public') {
        assert.ok(res.status < 400, `${key} is public: ${res.status}`);
        continue;
      }
      assert.equal(res.status, 401, key);
      assert.equal(res.body.code, 'BERTH_ERR_UNAUTHORIZED', key);
      assert.equal(res.headers['www-authenticate'], 'Bearer realm="berth"', key);
    }
  });

  it('answers-401-to-an-unknown-or-malformed-token-without-echoing-it', async () => {
    const bad = 'berth_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA';
    const unknown = await call('GET', '/v1/services', { token: bad });
    assert.equal(unknown.status, 401);
    assert.equal(unknown.headers['www-authenticate'], 'Bearer realm="berth", error="invalid_token"');
    assert.ok(!JSON.stringify(unknown.body).includes(bad));
    const basic = await call('GET', '/v1/services', { headers: { authorization: `Basic ${Buffer.from('a:b').toString('base64')}` } });
    assert.equal(basic.status, 401);
  });

  it('lets-each-role-do-what-its-rank-allows-and-refuses-the-rest-with-403', async () => {
    const ranks: Role[] = ['viewer', 'operator', 'admin'];
    for (const role of ranks) {
      for (const [key, access] of Object.entries(ROUTE_ACCESS)) {
        if (access === 'public' || MUTATING_METHODS.has(key.split(' ')[0] ?? '')) continue;
        const { method, path } = sample(key);
        const res = await call(method, path, { token: security.secrets[role] });
        const allowed = ranks.indexOf(role) >= ranks.indexOf(access);
        if (allowed) assert.notEqual(res.status, 403, `${role} may ${key}`);
        else assert.deepEqual([res.status, res.body.code], [403, 'BERTH_ERR_FORBIDDEN'], `${role} may not ${key}`);
      }
    }
  });

  it('refuses-every-mutating-call-of-a-viewer-with-403-and-audits-each', async () => {
    const mutating = Object.keys(ROUTE_ACCESS).filter((k) => MUTATING_METHODS.has(k.split(' ')[0] ?? ''));
    assert.ok(mutating.length >= 6);
    for (const key of mutating) {
      const { method, path, body } = sample(key);
      const res = await call(method, path, { token: security.secrets.viewer, ...(body === undefined ? {} : { body }), headers: { 'x-request-id': `viewer-${key.replace(/\W+/g, '-')}` } });
      assert.equal(res.status, 403, key);
      const [last] = await auditTail(1);
      assert.deepEqual(
        { who: last?.actor, role: last?.role, method: last?.method, route: last?.route, status: last?.status, code: last?.code, requestId: last?.requestId },
        { who: 'test-viewer', role: 'viewer', method, route: key.split(' ')[1], status: 403, code: 'BERTH_ERR_FORBIDDEN', requestId: `viewer-${key.replace(/\W+/g, '-')}` },
        key,
      );
    }
  });

  it('lets-an-operator-reload-and-register-and-audits-it-with-params-and-body', async () => {
    const before = reloads;
    const reload = await call('POST', '/v1/reload', { token: security.secrets.operator });
    assert.equal(reload.status, 200);
    assert.equal(reloads, before + 1);
    const registered = await call('POST', '/v1/registrations', { token: security.secrets.operator, body: REGISTRATION });
    assert.equal(registered.status, 201);
    const heartbeat = await call('PUT', '/v1/registrations/ext-1/heartbeat', { token: security.secrets.operator });
    assert.equal(heartbeat.status, 200);
    const [r, reg, hb] = await auditTail(3);
    assert.deepEqual([r?.route, r?.status, r?.actor], ['/v1/reload', 200, 'test-operator']);
    assert.deepEqual(reg?.body, REGISTRATION);
    assert.deepEqual([hb?.route, hb?.params, hb?.status], ['/v1/registrations/:id/heartbeat', { id: 'ext-1' }, 200]);
    assert.equal((await call('POST', '/v1/tokens', { token: security.secrets.operator, body: { name: 'x', role: 'admin' } })).status, 403, 'an operator cannot mint an admin');
  });

  it('creates-lists-and-revokes-tokens-as-admin-and-never-writes-a-secret-to-the-audit-log', async () => {
    const created = await call('POST', '/v1/tokens', { token: security.secrets.admin, body: { name: 'ci', role: 'operator' } });
    assert.equal(created.status, 201);
    const secret = String(created.body.token);
    assert.match(secret, /^berth_/);
    assert.equal((await call('GET', '/v1/plan', { token: secret })).status, 200, 'the new token works at once');

    const listed = await call('GET', '/v1/tokens', { token: security.secrets.admin });
    const all = listed.body as unknown as Record<string, unknown>[];
    assert.ok(all.some((t) => t.id === created.body.id && t.name === 'ci' && t.role === 'operator'));
    assert.ok(all.every((t) => !('token' in t) && !('sha256' in t)), 'no secret and no hash in the list');

    assert.equal((await call('DELETE', `/v1/tokens/${String(created.body.id)}`, { token: security.secrets.admin })).status, 204);
    assert.equal((await call('GET', '/v1/plan', { token: secret })).status, 401, 'refused once revoked');
    assert.equal((await call('DELETE', '/v1/tokens/tok_000000000000', { token: security.secrets.admin })).status, 404);

    const file = await readFile(join(dir, AUDIT_FILE), 'utf8');
    for (const s of [secret, ...Object.values(security.secrets)]) assert.ok(!file.includes(s), 'no secret in the audit log');
    const audit = await call('GET', '/v1/audit?limit=3', { token: security.secrets.admin });
    const entries = audit.body as unknown as AuditEntry[];
    assert.equal(entries.length, 3);
    assert.deepEqual(entries.map((e) => `${e.method} ${e.route} ${e.status}`), ['POST /v1/tokens 201', 'DELETE /v1/tokens/:id 204', 'DELETE /v1/tokens/:id 404']);
    assert.deepEqual(entries[0]?.body, { name: 'ci', role: 'operator' });
  });

  it('audits-anonymous-mutating-calls-and-calls-to-unknown-paths', async () => {
    const res = await call('DELETE', '/v1/registrations/ext-1');
    assert.equal(res.status, 401);
    const unknown = await call('POST', '/v1/nothing-here');
    assert.equal(unknown.status, 401, 'no token: nothing learnt about which paths exist');
    assert.equal((await call('POST', '/v1/nothing-here', { token: security.secrets.viewer })).status, 404);
    const [anon, unknownAnon, unknownViewer] = await auditTail(3);
    assert.deepEqual([anon?.actor, anon?.actorId, anon?.route, anon?.params, anon?.status, anon?.code], ['anonymous', null, '/v1/registrations/:id', { id: 'ext-1' }, 401, 'BERTH_ERR_UNAUTHORIZED']);
    assert.deepEqual([unknownAnon?.route, unknownAnon?.status], ['/v1/nothing-here', 401]);
    assert.deepEqual([unknownViewer?.route, unknownViewer?.status, unknownViewer?.code], ['/v1/nothing-here', 404, 'BERTH_ERR_NOT_FOUND']);
  });

  it('documents-the-bearer-scheme-and-each-operations-role-in-openapi', async () => {
    const res = await call('GET', '/openapi.json');
    assert.equal(res.status, 200);
    const doc = res.body as { components: { securitySchemes: Record<string, { type: string; scheme: string }> }; paths: Record<string, Record<string, { security?: unknown[]; 'x-berth-role'?: string; responses: Record<string, unknown> }>> };
    assert.deepEqual([doc.components.securitySchemes.bearer?.type, doc.components.securitySchemes.bearer?.scheme], ['http', 'bearer']);
    for (const [key, access] of Object.entries(ROUTE_ACCESS)) {
      const [method = '', route = ''] = key.split(' ');
      const op = doc.paths[route.replace(/:(\w+)/g, '{$1}')]?.[method.toLowerCase()];
      assert.ok(op, `${key} is in the document`);
      assert.equal(op['x-berth-role'], access, key);
      if (access === 'public') {
        assert.deepEqual(op.security, [], key);
      } else {
        assert.deepEqual(op.security, [{ bearer: [] }], key);
        assert.ok(op.responses['401'] && op.responses['403'], `${key} documents 401 and 403`);
      }
    }
  });

  it('reads-a-bearer-header', () => {
    assert.equal(bearerToken('Bearer berth_abc-_'), 'berth_abc-_');
    assert.equal(bearerToken('bearer   berth_x  '), 'berth_x');
    assert.equal(bearerToken('Bearer'), undefined);
    assert.equal(bearerToken('Basic abc'), undefined);
    assert.equal(bearerToken('Bearer a b'), undefined);
    assert.equal(bearerToken(undefined), undefined);
  });
});
