import assert from 'node:assert/strict';
import { once } from 'node:events';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { request } from 'undici';
import type { InstanceRecord } from '../../src/catalog/types.js';
import { BerthProcess, makeProject, testManifest } from '../support/node-process.js';

const MANIFEST = testManifest(`groups:
  core:
    endpoint: /core
    services:
      web:
        command: node web.mjs
        health: { http: /health, interval: 200ms, timeout: 150ms, startPeriod: 0s }
`);

interface Discovered {
  id: string;
  version: string;
  address: string;
  port: number;
  source: string;
  tags: string[];
}

async function send(node: BerthProcess, method: 'POST' | 'PUT' | 'DELETE' | 'GET', path: string, body?: unknown): Promise<{ status: number; body: unknown }> {
  const { status, body: answer } = await node.call(method, path, body);
  return { status, body: answer };
}

async function discover(node: BerthProcess, service: string, query = ''): Promise<Discovered[]> {
  return node.api<Discovered[]>(`/v1/discovery/${service}${query}`);
}

const statusLog = (id: string, to: string) => (l: Record<string, unknown>) => l.event === 'instance.status' && l.instance === id && l.to === to;

describe('external registration on a real node', () => {
  let project: Awaited<ReturnType<typeof makeProject>>;
  let node: BerthProcess;
  /** The external service: a plain node:http server this test runs, not Berth. */
  let external: http.Server;
  let externalPort: number;

  before(async () => {
    project = await makeProject(MANIFEST);
    node = await BerthProcess.start(project.file);
    external = http.createServer((_req, res) => res.end('external'));
    external.listen(0, '127.0.0.1');
    await once(external, 'listening');
    externalPort = (external.address() as AddressInfo).port;
  });

  after(async () => {
    await node?.stop();
    external?.closeAllConnections();
    external?.close();
    await project?.cleanup();
  });

  it('is ready, and describes every route in /openapi.json', async () => {
    const ready = await send(node, 'GET', '/readyz');
    assert.deepEqual(ready, { status: 200, body: { status: 'ready' } });
    const doc = await node.api<{ openapi: string; paths: Record<string, Record<string, unknown>> }>('/openapi.json');
    assert.match(doc.openapi, /^3\./);
    for (const path of [
      '/healthz',
      '/readyz',
      '/openapi.json',
      '/v1/node',
      '/v1/services',
      '/v1/groups',
      '/v1/instances',
      '/v1/services/{service}/instances',
      '/v1/discovery/{service}',
      '/v1/registrations',
      '/v1/registrations/{id}/heartbeat',
      '/v1/registrations/{id}',
    ]) {
      assert.ok(doc.paths[path], `${path} is documented`);
    }
  });

  it('takes a TTL registration: starting, passing on heartbeat, critical without, back on heartbeat, gone on delete', async () => {
    const id = 'ledger-ext-1';
    const created = await send(node, 'POST', '/v1/registrations', {
      id,
      group: 'core',
      service: 'ledger',
      version: '1.4.0',
      address: '127.0.0.1',
      port: externalPort,
      ttl: '1s',
      tags: ['e2e'],
    });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    assert.equal((created.body as InstanceRecord).status, 'starting');
    // Registered but no heartbeat yet: not discoverable.
    assert.deepEqual(await discover(node, 'ledger'), []);

    const beat = await send(node, 'PUT', `/v1/registrations/${id}/heartbeat`);
    const lastBeat = Date.now();
    assert.equal(beat.status, 200);
    assert.equal((beat.body as InstanceRecord).status, 'passing');
    const found = await discover(node, 'ledger', '?version=%5E1');
    assert.deepEqual(found.map((d) => [d.id, d.version, d.address, d.port, d.source, d.tags]), [[id, '1.4.0', '127.0.0.1', externalPort, 'external', ['e2e']]]);
    // It answers at the address it registered.
    const res = await request(`http://${found[0]!.address}:${found[0]!.port}/`);
    assert.equal(await res.body.text(), 'external');
    assert.deepEqual(await discover(node, 'ledger', '?version=2.x'), []);
    // The gateway routes to it like to a supervised instance.
    const gw = String((await node.waitForLog((l) => l.event === 'node.ready')).gateway);
    const viaGateway = await request(`${gw}/core/ledger/anything`);
    assert.equal(viaGateway.statusCode, 200);
    assert.equal(await viaGateway.body.text(), 'external');

    // The group lists it beside the manifest's services.
    const groups = await node.api<{ name: string; services: { name: string; passing: number }[] }[]>('/v1/groups');
    assert.deepEqual(groups.find((g) => g.name === 'core')?.services.find((s) => s.name === 'ledger'), { name: 'ledger', stable: null, versions: ['1.4.0'], instances: 1, passing: 1 });

    // No more heartbeats: critical once the TTL runs out, and out of discovery.
    const critical = await node.waitForLog(statusLog(id, 'critical'), 10_000);
    assert.ok(Date.now() - lastBeat >= 900, `critical ${Date.now() - lastBeat}ms after the last heartbeat, TTL is 1s`);
    assert.equal(critical.check, 'TTL expired: no heartbeat for 1s');
    assert.deepEqual(await discover(node, 'ledger'), []);
    const [record] = await node.instances('ledger');
    assert.equal(record?.status, 'critical');
    assert.equal(record?.reason, 'TTL expired: no heartbeat for 1s');
    const unrouted = await request(`${gw}/core/ledger/anything`);
    assert.equal(unrouted.statusCode, 503, 'a critical external instance leaves routing');
    await unrouted.body.text();

    // Heartbeats resume: back in discovery.
    const back = await send(node, 'PUT', `/v1/registrations/${id}/heartbeat`, { status: 'passing', output: 'resumed' });
    assert.equal(back.status, 200);
    assert.deepEqual((await discover(node, 'ledger')).map((d) => d.id), [id]);
    await node.waitForLog(statusLog(id, 'passing'));
    const rerouted = await request(`${gw}/core/ledger/anything`);
    assert.equal(await rerouted.body.text(), 'external', 'back in routing once heartbeats resume');

    const deleted = await send(node, 'DELETE', `/v1/registrations/${id}`);
    assert.equal(deleted.status, 204);
    await node.waitForLog((l) => l.event === 'registration.deregistered' && l.instance === id);
    const gone = await send(node, 'GET', '/v1/discovery/ledger');
    assert.equal(gone.status, 404);
    assert.equal((gone.body as { code: string }).code, 'BERTH_ERR_NOT_FOUND');
    assert.equal((await send(node, 'PUT', `/v1/registrations/${id}/heartbeat`)).status, 404);
  });

  it('refuses bad registrations with 400 and supervised instances with 409', async () => {
    const bad = await send(node, 'POST', '/v1/registrations', { group: 'core', service: 'ledger', address: '127.0.0.1', port: 0, ttl: '1s', check: { http: '/health' } });
    assert.equal(bad.status, 400);
    const details = (bad.body as { details: { where: string }[] }).details.map((d) => d.where).sort();
    assert.deepEqual(details, ['body.port']); // schema problems first; the ttl/check rule is checked once the shape is right
    const both = await send(node, 'POST', '/v1/registrations', { group: 'core', service: 'ledger', address: '127.0.0.1', port: 80, ttl: '1s', check: { http: '/health' } });
    assert.deepEqual((both.body as { details: unknown }).details, [{ where: 'body.check', message: 'exactly one of ttl (heartbeats) and check (HTTP) is required' }]);

    const all = await node.waitForInstances((xs) => xs.some((r) => r.service === 'web' && r.status === 'passing'));
    const web = all.find((r) => r.service === 'web');
    assert.ok(web);
    const conflict = await send(node, 'DELETE', `/v1/registrations/${web.id}`);
    assert.equal(conflict.status, 409);
    assert.equal((conflict.body as { code: string }).code, 'BERTH_ERR_REGISTRATION_CONFLICT');
    assert.ok((await discover(node, 'web')).some((d) => d.id === web.id && d.source === 'supervised'));
  });

  it('keeps a registration across a node restart and resumes its TTL', async () => {
    const id = 'ledger-ext-2';
    assert.equal((await send(node, 'POST', '/v1/registrations', { id, group: 'core', service: 'ledger', address: '127.0.0.1', port: externalPort, ttl: '2s' })).status, 201);
    assert.equal((await send(node, 'PUT', `/v1/registrations/${id}/heartbeat`)).status, 200);
    await node.stop();

    node = await BerthProcess.start(project.file);
    await node.waitForLog((l) => l.event === 'registration.registered' && l.instance === id && l.resumed === true);
    const [resumed] = await node.instances('ledger');
    assert.equal(resumed?.id, id);
    assert.equal(resumed?.status, 'passing');
    // Its TTL counts again from the restart, so silence turns it critical.
    await node.waitForLog(statusLog(id, 'critical'), 10_000);
    assert.equal((await send(node, 'PUT', `/v1/registrations/${id}/heartbeat`)).status, 200);
    assert.deepEqual((await discover(node, 'ledger')).map((d) => d.id), [id]);
  });
});
