import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { request } from 'undici';
import type { Catalog } from '../catalog/catalog.js';
import type { InstanceRecord } from '../catalog/types.js';
import type { Registrations } from '../registry/registrations.js';
import type { ApiKeys } from '../security/api-keys.js';
import { openAdminFixture } from '../testing/admin-node.js';
import type { Usage, UsageSource } from '../supervisor/isolation/usage.js';
import { buildAdminApi, type AdminDeps, type InstanceView } from './api.js';
import type { Role } from './tokens.js';

const MANIFEST = `
groups:
  payments:
    endpoint: /payments
    services:
      charges:
        command: node charges.js
        stable: "1.0.0"
        versions:
          "1.0.0": {}
          "2.0.0": { command: node charges-v2.js }
  stock:
    endpoint: { port: 9001 }
    services:
      inventory:
        command: node inventory.js
`;

interface Api {
  url: string;
  catalog: Catalog;
  regs: Registrations;
  setReady: (ready: boolean) => void;
  /** A token secret per role. */
  secrets: Record<Role, string>;
  /** The API keys the admin API manages, as the gateway would verify them. */
  apiKeys: ApiKeys;
  /** Sends the test's admin token; pass `token` to send another, or null to send none. */
  call: (method: 'GET' | 'POST' | 'PUT' | 'DELETE', path: string, body?: unknown, token?: string | null) => Promise<{ status: number; body: unknown; type: string | undefined }>;
}

/** A real admin API listening on port 0 over a real catalog; `extra` adds optional dependencies. */
async function withApi(fn: (api: Api) => Promise<void>, extra: Partial<AdminDeps> = {}): Promise<void> {
  const fixture = await openAdminFixture(MANIFEST);
  const { catalog, regs, security } = fixture;
  let ready = false;
  const app = buildAdminApi({ ...fixture.deps, ready: () => ready, ...extra });
  const url = await fixture.listen(app);
  try {
    await fn({
      url,
      catalog,
      regs,
      setReady: (r) => (ready = r),
      secrets: security.secrets,
      apiKeys: security.apiKeys,
      call: async (method, path, body, token = security.secrets.admin) => {
        const headers: Record<string, string> = token === null ? {} : { authorization: `Bearer ${token}` };
        const res = await request(`${url}${path}`, {
          method,
          headers: body === undefined ? headers : { ...headers, 'content-type': 'application/json' },
          ...(body === undefined ? {} : { body: JSON.stringify(body) }),
        });
        const text = await res.body.text();
        const type = res.headers['content-type'];
        return { status: res.statusCode, body: text === '' ? undefined : JSON.parse(text), type: typeof type === 'string' ? type : undefined };
      },
    });
  } finally {
    await app.close();
    await fixture.close();
  }
}

const REGISTRATION = { id: 'charges-ext-1', group: 'payments', service: 'charges', version: '2.1.0', address: '127.0.0.1', port: 7001, ttl: '10s', tags: ['eu'] };

function supervised(id: string, version: string, status: InstanceRecord['status']): InstanceRecord {
  const at = '2024-01-01T00:00:00.000Z';
  return {
    id,
    node: 'node-a',
    group: 'payments',
    service: 'charges',
    version,
    address: '127.0.0.1',
    port: 4000 + Number(id.slice(-1)),
    pid: 100,
    status,
    restarts: 0,
    source: 'supervised',
    createdAt: at,
    startedAt: at,
    updatedAt: at,
    lastCheck: null,
    lastExit: null,
    reason: null,
    weight: 1,
    registration: null,
  };
}

type ErrorBody = { code: string; message: string; details?: { where?: string; message: string }[] };

describe('admin API: registration requests', () => {
  it('answers 400 with one detail per invalid field', () =>
    withApi(async ({ call }) => {
      const port = await call('POST', '/v1/registrations', { ...REGISTRATION, port: 70_000 });
      assert.equal(port.status, 400);
      assert.deepEqual(port.body, {
        code: 'BERTH_ERR_BAD_REQUEST',
        message: 'invalid body: body.port must be <= 65535',
        details: [{ where: 'body.port', message: 'must be <= 65535' }],
      });

      const many = await call('POST', '/v1/registrations', { service: 'charges', address: 'h', port: 'eighty', tll: '10s' });
      assert.equal(many.status, 400);
      assert.deepEqual(
        (many.body as ErrorBody).details?.map((d) => d.where).sort(),
        ['body.group', 'body.port', 'body.tll'],
      );

      const version = await call('POST', '/v1/registrations', { ...REGISTRATION, version: 'v2' });
      assert.equal(version.status, 400);
      assert.deepEqual((version.body as ErrorBody).details, [
        { where: 'body.version', message: 'must be a strict semver version like 1.2.3 (no "v", no build metadata), got "v2"' },
      ]);

      const both = await call('POST', '/v1/registrations', { ...REGISTRATION, check: { http: '/health' } });
      assert.equal(both.status, 400);
      assert.deepEqual((both.body as ErrorBody).details, [{ where: 'body.check', message: 'exactly one of ttl (heartbeats) and check (HTTP) is required' }]);

      const { ttl: _ttl, ...neither } = REGISTRATION;
      const none = await call('POST', '/v1/registrations', neither);
      assert.equal(none.status, 400);
      assert.deepEqual((none.body as ErrorBody).details, [{ where: 'body', message: 'exactly one of ttl (heartbeats) and check (HTTP) is required' }]);

      const place = await call('POST', '/v1/registrations', { ...REGISTRATION, group: 'nowhere' });
      assert.deepEqual((place.body as ErrorBody).details, [{ where: 'body.group', message: 'no group "nowhere" in the manifest (groups: payments, stock)' }]);
      const owner = await call('POST', '/v1/registrations', { ...REGISTRATION, group: 'stock' });
      assert.deepEqual((owner.body as ErrorBody).details, [{ where: 'body.service', message: 'service "charges" belongs to group "payments"; a service lives in one group' }]);

      const json = await call('POST', '/v1/registrations', undefined);
      assert.equal(json.status, 400);
      assert.equal((json.body as ErrorBody).code, 'BERTH_ERR_BAD_REQUEST');
      assert.match(String(json.type), /application\/json/);
    }));

  it('registers (201), heartbeats (200) and deregisters (204) an external instance', () =>
    withApi(async ({ url, call, catalog, secrets }) => {
      const created = await call('POST', '/v1/registrations', REGISTRATION);
      assert.equal(created.status, 201);
      const record = created.body as InstanceRecord;
      assert.equal(record.status, 'starting');
      assert.equal(record.source, 'external');
      assert.deepEqual(record.registration?.tags, ['eu']);

      // No body at all, and an empty JSON body, are plain `passing` heartbeats.
      const plain = await call('PUT', '/v1/registrations/charges-ext-1/heartbeat');
      assert.equal(plain.status, 200);
      assert.equal((plain.body as InstanceRecord).status, 'passing');
      const empty = await request(`${url}/v1/registrations/charges-ext-1/heartbeat`, { method: 'PUT', headers: { 'content-type': 'application/json', authorization: `Bearer ${secrets.operator}` }, body: '' });
      assert.equal(empty.statusCode, 200);
      assert.equal(((await empty.body.json()) as InstanceRecord).status, 'passing');

      const warning = await call('PUT', '/v1/registrations/charges-ext-1/heartbeat', { status: 'warning', output: 'slow disk' });
      assert.equal(warning.status, 200);
      assert.equal((warning.body as InstanceRecord).status, 'warning');
      assert.equal((warning.body as InstanceRecord).lastCheck?.output, 'slow disk');

      const badStatus = await call('PUT', '/v1/registrations/charges-ext-1/heartbeat', { status: 'fine' });
      assert.equal(badStatus.status, 400);
      assert.deepEqual((badStatus.body as ErrorBody).details, [{ where: 'body.status', message: 'must be one of "passing", "warning", "critical"' }]);

      const deleted = await call('DELETE', '/v1/registrations/charges-ext-1');
      assert.equal(deleted.status, 204);
      assert.equal(deleted.body, undefined);
      assert.equal(catalog.get('charges-ext-1'), undefined);
      const again = await call('DELETE', '/v1/registrations/charges-ext-1');
      assert.equal(again.status, 404);
      assert.equal((again.body as ErrorBody).code, 'BERTH_ERR_NOT_FOUND');
      assert.equal((await call('PUT', '/v1/registrations/nobody/heartbeat')).status, 404);
    }));

  it('refuses to heartbeat or delete a supervised instance (409)', () =>
    withApi(async ({ call, catalog }) => {
      await catalog.put(supervised('charges-1.0.0-aaaa1', '1.0.0', 'passing'));
      for (const [method, path] of [
        ['PUT', '/v1/registrations/charges-1.0.0-aaaa1/heartbeat'],
        ['DELETE', '/v1/registrations/charges-1.0.0-aaaa1'],
      ] as const) {
        const res = await call(method, path);
        assert.equal(res.status, 409, `${method} ${path}`);
        assert.equal((res.body as ErrorBody).code, 'BERTH_ERR_REGISTRATION_CONFLICT');
        assert.match((res.body as ErrorBody).message, /supervised/);
      }
      assert.equal(catalog.get('charges-1.0.0-aaaa1')?.status, 'passing');
    }));
});

describe('admin API: discovery and groups', () => {
  it('lists passing instances only, supervised and external, filtered by a semver range', () =>
    withApi(async ({ call, catalog, regs }) => {
      await catalog.put(supervised('charges-1.0.0-aaaa1', '1.0.0', 'passing'));
      await catalog.put(supervised('charges-1.0.0-aaaa2', '1.0.0', 'critical'));
      await catalog.put(supervised('charges-2.0.0-bbbb3', '2.0.0', 'passing'));
      await regs.register(REGISTRATION);
      await regs.register({ ...REGISTRATION, id: 'charges-ext-2', port: 7002 }); // starting: not discovered

      const ids = async (query: string): Promise<string[]> => {
        const res = await call('GET', `/v1/discovery/charges${query}`);
        assert.equal(res.status, 200, JSON.stringify(res.body));
        return (res.body as { id: string }[]).map((r) => r.id);
      };
      assert.deepEqual(await ids(''), ['charges-1.0.0-aaaa1', 'charges-2.0.0-bbbb3']);
      await regs.heartbeat('charges-ext-1');
      assert.deepEqual(await ids(''), ['charges-1.0.0-aaaa1', 'charges-2.0.0-bbbb3', 'charges-ext-1']);
      assert.deepEqual(await ids('?version=%5E2'), ['charges-2.0.0-bbbb3', 'charges-ext-1']);
      assert.deepEqual(await ids('?version=1.x'), ['charges-1.0.0-aaaa1']);
      assert.deepEqual(await ids('?version=%3E%3D2.1%20%3C3'), ['charges-ext-1']);
      assert.deepEqual(await ids('?version=3'), []);

      const full = await call('GET', '/v1/discovery/charges?version=2.1.0');
      assert.deepEqual(full.body, [
        { id: 'charges-ext-1', group: 'payments', service: 'charges', version: '2.1.0', address: '127.0.0.1', port: 7001, weight: 1, node: 'node-a', source: 'external', tags: ['eu'] },
      ]);

      const bad = await call('GET', '/v1/discovery/charges?version=not-a-range');
      assert.equal(bad.status, 400);
      assert.deepEqual((bad.body as ErrorBody).details, [{ where: 'query.version', message: 'must be a semver range like ^2, 1.x, >=1.2 <2 or 2.1.0' }]);
      const unknown = await call('GET', '/v1/discovery/chargez');
      assert.equal(unknown.status, 404);
      assert.deepEqual(unknown.body, { code: 'BERTH_ERR_NOT_FOUND', message: 'no service named "chargez"' });
    }));

  it('lists every group of the manifest with its endpoint and services, external ones included', () =>
    withApi(async ({ call, regs }) => {
      await regs.register({ id: 'ledger-1', group: 'payments', service: 'ledger', version: '0.3.0', address: 'ledger.internal', port: 9000, ttl: '30s' });
      await regs.heartbeat('ledger-1');
      const res = await call('GET', '/v1/groups');
      assert.equal(res.status, 200);
      assert.deepEqual(res.body, [
        {
          name: 'payments',
          endpoint: { kind: 'path', prefix: '/payments' },
          services: [
            { name: 'charges', stable: '1.0.0', versions: ['1.0.0', '2.0.0'], instances: 0, passing: 0 },
            { name: 'ledger', stable: null, versions: ['0.3.0'], instances: 1, passing: 1 },
          ],
        },
        {
          name: 'stock',
          endpoint: { kind: 'port', port: 9001 },
          services: [{ name: 'inventory', stable: '0.0.0', versions: ['0.0.0'], instances: 0, passing: 0 }],
        },
      ]);
    }));
});

describe('admin API: instance usage and limits', () => {
  const sampled: Usage = { at: '2024-01-01T00:00:05.000Z', cpuPercent: 37.5, cpuSeconds: 12.25, rssBytes: 50_331_648, openFds: null, threads: 11, processes: 2 };
  const limited = { memoryBytes: 134_217_728, cpu: 0.5, pids: null, openFiles: 1024 };
  const usage: UsageSource = {
    usage: (id) => (id === 'charges-1.0.0-aaaa1' ? sampled : undefined),
    limits: (id) => (id === 'charges-1.0.0-aaaa1' || id === 'charges-2.0.0-bbbb3' ? limited : undefined),
  };

  it('merges-usage-and-limits-into-both-instance-lists-without-storing-them', () =>
    withApi(async ({ call, catalog, regs }) => {
      await catalog.put(supervised('charges-1.0.0-aaaa1', '1.0.0', 'passing'));
      // Just started: limits in force, not sampled yet.
      await catalog.put(supervised('charges-2.0.0-bbbb3', '2.0.0', 'starting'));
      await regs.register(REGISTRATION);

      for (const path of ['/v1/instances', '/v1/services/charges/instances']) {
        const res = await call('GET', path, undefined);
        assert.equal(res.status, 200, path);
        const byId = new Map((res.body as InstanceView[]).map((r) => [r.id, r]));
        assert.deepEqual(byId.get('charges-1.0.0-aaaa1')?.usage, sampled, path);
        assert.deepEqual(byId.get('charges-1.0.0-aaaa1')?.limits, limited, path);
        assert.equal(byId.get('charges-2.0.0-bbbb3')?.usage, null, path);
        assert.deepEqual(byId.get('charges-2.0.0-bbbb3')?.limits, limited, path);
        assert.deepEqual([byId.get('charges-ext-1')?.usage, byId.get('charges-ext-1')?.limits], [null, null], `${path}: an external instance`);
      }
      // The catalog record is untouched: samples are never store writes.
      assert.ok(!('usage' in (catalog.get('charges-1.0.0-aaaa1') ?? {})));
    }, { usage }));

  it('answers-null-usage-and-limits-without-a-usage-source', () =>
    withApi(async ({ call, catalog }) => {
      await catalog.put(supervised('charges-1.0.0-aaaa1', '1.0.0', 'passing'));
      const [only] = (await call('GET', '/v1/instances')).body as InstanceView[];
      assert.deepEqual([only?.usage, only?.limits], [null, null]);
    }));

  it('documents-usage-and-limits-in-the-instance-schema', () =>
    withApi(async ({ call }) => {
      const doc = (await call('GET', '/openapi.json')).body as { components: { schemas: Record<string, { properties: Record<string, unknown>; required?: string[] }> } };
      const { Usage: usageSchema, Limits: limitsSchema, Instance: instance } = doc.components.schemas;
      assert.deepEqual(usageSchema?.required, ['at', 'cpuPercent', 'cpuSeconds', 'rssBytes', 'openFds', 'threads', 'processes']);
      assert.deepEqual(limitsSchema?.required, ['memoryBytes', 'cpu', 'pids', 'openFiles']);
      assert.match(JSON.stringify(instance?.properties.usage), /#\/components\/schemas\/Usage/);
      assert.match(JSON.stringify(instance?.properties.limits), /#\/components\/schemas\/Limits/);
    }));
});

describe('admin API: node routes and the OpenAPI document', () => {
  it('answers /readyz 503 until the node is ready, then 200', () =>
    withApi(async ({ call, setReady }) => {
      assert.deepEqual(await call('GET', '/readyz'), { status: 503, body: { status: 'starting' }, type: 'application/json; charset=utf-8' });
      setReady(true);
      assert.deepEqual((await call('GET', '/readyz')).body, { status: 'ready' });
      assert.equal((await call('GET', '/readyz')).status, 200);
    }));

  it('describes every route, its parameters, bodies, responses and the error schema', () =>
    withApi(async ({ call }) => {
      const res = await call('GET', '/openapi.json');
      assert.equal(res.status, 200);
      const doc = res.body as {
        openapi: string;
        paths: Record<string, Record<string, { parameters?: { name: string; in: string }[]; requestBody?: unknown; responses: Record<string, unknown> }>>;
        components: { schemas: Record<string, unknown> };
      };
      assert.match(doc.openapi, /^3\./);
      const routes = Object.entries(doc.paths).flatMap(([path, ops]) => Object.keys(ops).map((m) => `${m.toUpperCase()} ${path}`));
      const expected = [
        'DELETE /v1/registrations/{id}',
        'GET /healthz',
        'GET /openapi.json',
        'GET /readyz',
        'GET /v1/discovery/{service}',
        'GET /v1/groups',
        'GET /v1/instances',
        'GET /v1/node',
        'GET /v1/services',
        'GET /v1/services/{service}/instances',
        'POST /v1/registrations',
        'PUT /v1/registrations/{id}/heartbeat',
      ];
      // Routes added later (GET /metrics) may be listed too; none of these may be missing.
      assert.deepEqual(expected.filter((r) => !routes.includes(r)), []);
      for (const [route, op] of Object.entries(doc.paths).flatMap(([path, ops]) => Object.entries(ops).map(([m, o]) => [`${m} ${path}`, o] as const))) {
        assert.ok(Object.keys(op.responses).length > 0, `${route} documents its responses`);
      }
      for (const name of ['Error', 'Instance', 'DiscoveredInstance', 'Group', 'ServiceSummary', 'Registration']) assert.ok(doc.components.schemas[name], name);
      const register = doc.paths['/v1/registrations']?.post;
      assert.ok(register?.requestBody, 'POST /v1/registrations documents its body');
      assert.deepEqual(Object.keys(register.responses).sort(), ['201', '400', '401', '403', '409']);
      assert.deepEqual(JSON.stringify(register.responses['400']).includes('#/components/schemas/Error'), true);
      const discovery = doc.paths['/v1/discovery/{service}']?.get;
      assert.deepEqual(discovery?.parameters?.map((p) => `${p.in}.${p.name}`).sort(), ['path.service', 'query.index', 'query.version', 'query.wait']);
      assert.deepEqual(Object.keys(doc.paths['/v1/registrations/{id}']?.delete?.responses ?? {}).sort(), ['204', '401', '403', '404', '409']);
    }));
});

describe('admin API: API keys', () => {
  it('lets-an-operator-list-but-only-an-admin-create-or-revoke-and-a-viewer-neither', () =>
    withApi(async ({ call, secrets }) => {
      const body = { name: 'ci', groups: ['payments'] };
      const viewerList = await call('GET', '/v1/apikeys', undefined, secrets.viewer);
      assert.deepEqual([viewerList.status, (viewerList.body as ErrorBody).code], [403, 'BERTH_ERR_FORBIDDEN']);
      assert.equal((await call('POST', '/v1/apikeys', body, secrets.viewer)).status, 403);
      assert.equal((await call('POST', '/v1/apikeys', body, secrets.operator)).status, 403, 'an operator cannot mint a key');
      assert.equal((await call('GET', '/v1/apikeys', undefined, secrets.operator)).status, 200);
      const created = await call('POST', '/v1/apikeys', body, secrets.admin);
      assert.equal(created.status, 201);
      const id = (created.body as { id: string }).id;
      assert.equal((await call('DELETE', `/v1/apikeys/${id}`, undefined, secrets.viewer)).status, 403);
      assert.equal((await call('DELETE', `/v1/apikeys/${id}`, undefined, secrets.operator)).status, 403);
      assert.equal((await call('DELETE', `/v1/apikeys/${id}`, undefined, secrets.admin)).status, 204);
      assert.equal((await call('GET', '/v1/apikeys', undefined, null)).status, 401);
    }));

  it('shows-the-secret-once-never-in-the-list-and-refuses-a-revoked-key', () =>
    withApi(async ({ call, apiKeys }) => {
      const created = await call('POST', '/v1/apikeys', { name: 'billing-batch', groups: ['payments', 'stock'], subject: 'svc:billing', roles: ['batch'], scopes: ['charges:write', 'charges:read'] });
      assert.equal(created.status, 201);
      const key = created.body as { id: string; secret: string; createdAt: string };
      assert.match(key.secret, /^bk_[A-Za-z0-9_-]{43}$/);
      assert.match(key.id, /^key_[0-9a-f]{12}$/);
      assert.deepEqual(created.body, {
        id: key.id,
        name: 'billing-batch',
        groups: ['payments', 'stock'],
        subject: 'svc:billing',
        roles: ['batch'],
        scopes: ['charges:write', 'charges:read'],
        createdAt: key.createdAt,
        secret: key.secret,
      });
      const check = apiKeys.verify(key.secret, 'stock');
      assert.ok(check.ok, 'the gateway accepts it at once');
      assert.equal(check.identity.subject, 'svc:billing');

      const listed = await call('GET', '/v1/apikeys');
      assert.equal(listed.status, 200);
      const text = JSON.stringify(listed.body);
      assert.ok(!text.includes(key.secret) && !text.includes('sha256') && !text.includes('secret'), 'no secret and no hash in the list');
      const [only] = listed.body as Record<string, unknown>[];
      assert.deepEqual(Object.keys(only ?? {}).sort(), ['createdAt', 'groups', 'id', 'lastUsedAt', 'name', 'roles', 'scopes', 'subject']);

      assert.equal((await call('DELETE', `/v1/apikeys/${key.id}`)).status, 204);
      assert.deepEqual(apiKeys.verify(key.secret, 'stock'), { ok: false, reason: 'unknown' }, 'refused once revoked');
      const again = await call('DELETE', `/v1/apikeys/${key.id}`);
      assert.deepEqual([again.status, (again.body as ErrorBody).code], [404, 'BERTH_ERR_NOT_FOUND']);
      assert.deepEqual((await call('GET', '/v1/apikeys')).body, []);
    }));

  it('defaults-the-subject-to-the-name-and-accepts-star-for-every-group', () =>
    withApi(async ({ call }) => {
      const created = await call('POST', '/v1/apikeys', { name: 'everywhere', groups: ['*'] });
      assert.equal(created.status, 201);
      assert.deepEqual([(created.body as { subject: string }).subject, (created.body as { roles: string[] }).roles], ['everywhere', []]);
    }));

  it('refuses-a-bad-body-with-every-problem-and-a-group-the-manifest-does-not-have', () =>
    withApi(async ({ call }) => {
      const bad = await call('POST', '/v1/apikeys', { name: 'has space', groups: [], roles: ['a,b'], extra: 1 });
      assert.equal(bad.status, 400);
      const wheres = (bad.body as ErrorBody).details?.map((d) => d.where).sort();
      assert.deepEqual(wheres, ['body.extra', 'body.groups', 'body.name', 'body.roles.0']);
      const unknown = await call('POST', '/v1/apikeys', { name: 'typo', groups: ['payment'] });
      assert.equal(unknown.status, 400);
      assert.match((unknown.body as ErrorBody).message, /no group "payment" in the manifest \(groups: payments, stock/);
      assert.deepEqual((await call('GET', '/v1/apikeys')).body, [], 'nothing created');
    }));

  it('documents-the-api-key-routes-in-openapi', () =>
    withApi(async ({ call }) => {
      const doc = (await call('GET', '/openapi.json')).body as { paths: Record<string, Record<string, { 'x-berth-role'?: string; responses: Record<string, unknown> }>>; components: { schemas: Record<string, unknown> } };
      assert.ok(doc.components.schemas.ApiKey);
      assert.equal(doc.paths['/v1/apikeys']?.get?.['x-berth-role'], 'operator');
      assert.equal(doc.paths['/v1/apikeys']?.post?.['x-berth-role'], 'admin');
      assert.deepEqual(Object.keys(doc.paths['/v1/apikeys']?.post?.responses ?? {}).sort(), ['201', '400', '401', '403']);
      assert.deepEqual(Object.keys(doc.paths['/v1/apikeys/{id}']?.delete?.responses ?? {}).sort(), ['204', '401', '403', '404']);
    }));
});
