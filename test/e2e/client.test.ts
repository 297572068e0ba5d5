import assert from 'node:assert/strict';
import { once } from 'node:events';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { createClient, type BerthClient, type DiscoveredInstance } from '../../src/client/index.js';
import { BerthProcess, makeProject, testManifest } from '../support/node-process.js';

const MANIFEST = testManifest(`groups:
  core:
    endpoint: /core
    services:
      web:
        command: node web.mjs
        replicas: 2
        health: { http: /health, interval: 200ms, timeout: 150ms }
`);

/** berth/client against a real `berth up`: discovery through its admin API, kept current by the watch. */
describe('berth/client on a real node', () => {
  let project: Awaited<ReturnType<typeof makeProject>>;
  let node: BerthProcess;
  let client: BerthClient;
  let external: http.Server;
  let externalPort: number;
  /** Every list the client's watch reported, per service, and who waits for one. */
  const reported: { service: string; ids: string[] }[] = [];
  let waiters: { pred: (service: string, ids: string[]) => boolean; resolve: () => void }[] = [];

  /** Resolves once the watch has reported a list of `service` that `pred` accepts (reported before or after the call). */
  function reports(service: string, pred: (ids: string[]) => boolean): Promise<void> {
    if (reported.some((r) => r.service === service && pred(r.ids))) return Promise.resolve();
    return new Promise((resolve) => waiters.push({ pred: (s, ids) => s === service && pred(ids), resolve }));
  }

  async function admin(method: 'POST' | 'PUT' | 'DELETE', path: string, body?: unknown): Promise<number> {
    return (await node.call(method, path, body)).status;
  }

  before(async () => {
    project = await makeProject(MANIFEST);
    node = await BerthProcess.start(project.file);
    await node.waitForInstances((xs) => xs.filter((r) => r.service === 'web' && r.status === 'passing').length === 2);
    external = http.createServer((req, res) => res.end(JSON.stringify({ external: true, requestId: req.headers['x-request-id'] })));
    external.listen(0, '127.0.0.1');
    await once(external, 'listening');
    externalPort = (external.address() as AddressInfo).port;
    client = createClient({
      admin: node.admin,
      onChange: (service: string, instances: readonly DiscoveredInstance[]) => {
        const ids = instances.map((i) => i.id).sort();
        reported.push({ service, ids });
        waiters = waiters.filter((w) => {
          if (!w.pred(service, ids)) return true;
          w.resolve();
          return false;
        });
      },
    });
  });

  after(async () => {
    await client?.close();
    await node?.stop();
    external?.closeAllConnections();
    external?.close();
    await project?.cleanup();
  });

  it('calls-a-supervised-instance-with-the-request-id-and-the-time-left', async () => {
    const res = await client.request('web', '/echo', { requestId: 'e2e-client-1', timeoutMs: 2_000 });
    assert.equal(res.status, 200);
    const seen = await res.json<{ instance: string; headers: Record<string, string> }>();
    const ids = (await node.instances('web')).map((r) => r.id);
    assert.ok(ids.includes(seen.instance), `answered by ${seen.instance}, one of ${ids.join(', ')}`);
    assert.equal(res.instance, seen.instance);
    assert.equal(seen.headers['x-request-id'], 'e2e-client-1');
    const left = Number(seen.headers['x-berth-timeout-ms']);
    assert.ok(left > 0 && left <= 2_000, `x-berth-timeout-ms ${left}`);
  });

  it('hears-of-a-registration-and-a-deregistration-through-the-watch-without-a-call', async () => {
    const register = async (id: string): Promise<void> => {
      assert.equal(await admin('POST', '/v1/registrations', { id, group: 'core', service: 'ledger', version: '1.0.0', address: '127.0.0.1', port: externalPort, ttl: '1m' }), 201);
      assert.equal(await admin('PUT', `/v1/registrations/${id}/heartbeat`), 200);
    };
    await register('ledger-1');
    const first = await client.request('ledger', '/', { requestId: 'e2e-ledger' });
    assert.deepEqual(await first.json(), { external: true, requestId: 'e2e-ledger' });

    await register('ledger-2');
    await reports('ledger', (ids) => ids.join() === 'ledger-1,ledger-2');
    assert.deepEqual((await client.instances('ledger')).map((i) => i.id).sort(), ['ledger-1', 'ledger-2']);

    assert.equal(await admin('DELETE', '/v1/registrations/ledger-1'), 204);
    await reports('ledger', (ids) => ids.join() === 'ledger-2');
    const after = await client.request('ledger', '/');
    assert.equal(after.instance, 'ledger-2');
    await after.text();
  });

  it('hears-of-a-supervised-instance-that-stops-passing', async () => {
    await client.instances('web');
    const sick = await client.request('web', '/control/health-fail', { method: 'POST' });
    await sick.text();
    await reports('web', (ids) => ids.length === 1 && !ids.includes(sick.instance));
    for (let i = 0; i < 4; i++) {
      const res = await client.request('web', '/');
      assert.notEqual(res.instance, sick.instance, 'calls go to the instance that still passes');
      await res.text();
    }
  });

  it('close-ends-the-watch-at-once', async () => {
    const started = performance.now();
    await client.close();
    // A watch query waits 30 s on the node: close does not wait for it.
    assert.ok(performance.now() - started < 5_000, `close took ${Math.round(performance.now() - started)}ms`);
    await assert.rejects(client.request('web', '/'), { code: 'BERTH_ERR_CLIENT_CLOSED' });
  });
});
