import assert from 'node:assert/strict';
import { cp, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { InstanceRecord } from '../../src/catalog/types.js';
import { parseManifest } from '../../src/manifest/load.js';
import { versionsOf } from '../../src/manifest/types.js';
import { BerthProcess, ROOT, runCli } from '../support/node-process.js';

/** The shop example as shipped, on ephemeral ports so it never clashes with a running `npm start`. */
describe('the shop example', () => {
  let dir: string;
  let file: string;
  let node: BerthProcess;
  let expected: number;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'berth-shop-'));
    await cp(join(ROOT, 'examples/shop'), dir, { recursive: true, filter: (src) => !src.includes('.berth') });
    // The services import 'berth/client': in the repository that is the package's self-reference; copied out, it needs the package beside them.
    await mkdir(join(dir, 'node_modules'));
    await symlink(ROOT, join(dir, 'node_modules', 'berth'), 'dir');
    file = join(dir, 'berth.yaml');
    const text = (await readFile(file, 'utf8')).replace(/127\.0\.0\.1:80\d\d/g, '127.0.0.1:0');
    await writeFile(file, text);
    expected = versionsOf(parseManifest(text, file)).reduce((n, v) => n + v.replicas, 0);
    node = await BerthProcess.start(file);
  });

  after(async () => {
    await node?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('starts every instance of every group and they all reach passing', async () => {
    const all = await node.waitForInstances((xs) => xs.length === expected && xs.every((r) => r.status === 'passing'), 60_000);
    assert.deepEqual([...new Set(all.map((r) => r.group))].sort(), ['auth', 'payments', 'storage', 'users']);
    assert.ok(new Set(all.map((r) => r.service)).size >= 5);
    const charges = all.filter((r) => r.service === 'charges');
    assert.deepEqual([...new Set(charges.map((r) => r.version))].sort(), ['1.0.0', '2.0.0']);
  });

  it('berth status --json lists them, and the table shows them', async () => {
    const json = await runCli(['status', '--json', '-f', file]);
    assert.equal(json.code, 0, json.stderr);
    const listed = JSON.parse(json.stdout) as InstanceRecord[];
    assert.equal(listed.length, expected);
    assert.ok(listed.every((r) => r.status === 'passing' && r.pid !== null && r.port > 0));

    const table = await runCli(['ps', '-f', file]);
    assert.equal(table.code, 0, table.stderr);
    assert.match(table.stdout, /GROUP\s+SERVICE\s+VERSION\s+INSTANCE\s+STATUS/);
    for (const r of listed) assert.ok(table.stdout.includes(r.id), `table lists ${r.id}`);
  });

  it('every group answers through the gateway, v2 by path and by Accept-Version', async () => {
    const { request } = await import('undici');
    const gw = String((await node.waitForLog((l) => l.event === 'node.ready')).gateway);
    const call = async (path: string, init: { method?: 'GET' | 'POST' | 'PUT'; body?: string; headers?: Record<string, string> } = {}): Promise<{ status: number; json: Record<string, unknown> }> => {
      const res = await request(`${gw}${path}`, { method: init.method ?? 'GET', ...(init.body ? { body: init.body } : {}), headers: { 'content-type': 'application/json', ...init.headers } });
      return { status: res.statusCode, json: (await res.body.json()) as Record<string, unknown> };
    };
    const token = await call('/auth/tokens/token', { method: 'POST', body: JSON.stringify({ user: 'ann' }) });
    assert.ok(token.status < 300, JSON.stringify(token.json));
    const charges = await call('/payments/charges/charges');
    assert.equal(charges.status, 200);
    assert.equal(charges.json.version, '1.0.0');
    assert.equal((await call('/payments/charges/v2/charges')).json.version, '2.0.0');
    assert.equal((await call('/payments/charges/charges', { headers: { 'accept-version': '^2' } })).json.version, '2.0.0');
    // refunds is behind an API key; a key without the support role may read, not refund.
    assert.equal((await call('/payments/refunds/refunds')).status, 401);
    const created = await runCli(['apikey', 'create', 'desk', '--group', 'payments', '--role', 'support', '-f', file]);
    assert.equal(created.code, 0, created.stderr);
    const reader = await runCli(['apikey', 'create', 'viewer', '--group', 'payments', '-f', file]);
    const desk = { 'x-api-key': created.stdout.trim() };
    assert.equal((await call('/payments/refunds/refunds', { headers: desk })).status, 200);
    const refund = JSON.stringify({ chargeId: 'ch_1', amount: 2.5 });
    assert.equal((await call('/payments/refunds/refunds', { method: 'POST', body: refund, headers: desk })).status, 201);
    assert.equal((await call('/payments/refunds/refunds', { method: 'POST', body: refund, headers: { 'x-api-key': reader.stdout.trim() } })).status, 403);
    assert.ok((await call('/users/profiles/profiles/ann', { method: 'PUT', body: JSON.stringify({ name: 'Ann' }) })).status < 300);
    assert.equal((await call('/storage/files/files')).status, 200);
    assert.equal((await call('/storage/blobs/blobs')).status, 200);
  });

  it('services call each other through berth/client and the request id follows the request', async () => {
    const { request } = await import('undici');
    const gw = String((await node.waitForLog((l) => l.event === 'node.ready')).gateway);
    const call = async (method: 'GET' | 'POST', path: string, headers: Record<string, string>, body?: unknown): Promise<{ status: number; requestId: unknown; json: Record<string, unknown> }> => {
      const res = await request(`${gw}${path}`, { method, headers: { 'content-type': 'application/json', ...headers }, ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
      return { status: res.statusCode, requestId: res.headers['x-request-id'], json: (await res.body.json()) as Record<string, unknown> };
    };
    const token = await call('POST', '/auth/tokens/token', { 'x-request-id': 'e2e-token' }, { user: 'zoe' });
    assert.equal(token.status, 201, JSON.stringify(token.json));
    const bearer = { authorization: `Bearer ${String(token.json.token)}` };
    const tokens = (await node.instances('tokens')).map((r) => r.id);

    // gateway → charges (one of four instances, v1 by default) → berth/client → tokens
    const charge = await call('POST', '/payments/charges/charges', { ...bearer, 'x-request-id': 'e2e-charge-1' }, { amount: 3 });
    assert.equal(charge.status, 201, JSON.stringify(charge.json));
    assert.deepEqual([charge.requestId, charge.json.requestId, charge.json.user], ['e2e-charge-1', 'e2e-charge-1', 'zoe']);
    const checkedBy = charge.json.checkedBy as { instance: string; requestId: string };
    assert.equal(checkedBy.requestId, 'e2e-charge-1', 'tokens saw the id the gateway gave charges');
    assert.ok(tokens.includes(checkedBy.instance));

    // gateway → profiles → berth/client → tokens, and v2 of charges too
    const me = await call('GET', '/users/profiles/me', { ...bearer, 'x-request-id': 'e2e-me-1' });
    assert.deepEqual([me.status, me.json.user, (me.json.checkedBy as { requestId: string }).requestId], [200, 'zoe', 'e2e-me-1']);
    const v2 = await call('POST', '/payments/charges/v2/charges', { ...bearer, 'x-request-id': 'e2e-charge-2' }, { amount: 300 });
    assert.deepEqual([v2.status, (v2.json.charge as { user: string }).user, (v2.json.checkedBy as { requestId: string }).requestId], [201, 'zoe', 'e2e-charge-2']);

    const forged = await call('POST', '/payments/charges/charges', { authorization: 'Bearer nope' }, { amount: 3 });
    assert.equal(forged.status, 401);
  });

  it('the admin API answers the contract shape for a service', async () => {
    const charges = await node.instances('charges');
    for (const r of charges) {
      for (const key of ['id', 'group', 'service', 'version', 'address', 'port', 'pid', 'status', 'restarts'] as const) {
        assert.ok(key in r, `instance has ${key}`);
      }
    }
    const services = await node.api<{ service: string; stable: string | null }[]>('/v1/services');
    assert.equal(services.find((s) => s.service === 'charges')?.stable, '1.0.0');
    assert.equal((await node.api<{ status: string }>('/healthz')).status, 'ok');
  });
});
