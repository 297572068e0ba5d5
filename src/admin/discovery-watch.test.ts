import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Agent } from 'undici';
import type { InstanceRecord } from '../catalog/types.js';
import { startAdminNode, type AdminNode } from '../testing/admin-node.js';
import { FakeClock } from '../testing/fake-clock.js';
import { instanceRecord } from '../testing/instance-record.js';

const MANIFEST = `
groups:
  core:
    endpoint: /core
    services:
      web:
        command: node web.js
        stable: "1.0.0"
        versions:
          "1.0.0": {}
          "2.0.0": {}
      other:
        command: node other.js
`;

interface Discovery {
  status: number;
  index: string | undefined;
  stable: string | undefined;
  connection: string | undefined;
  ids: string[];
  body: { code?: string; details?: { where: string; message: string }[] };
}

// Each test's own connections, closed before its node: a pooled connection of an earlier test would hold a node's close up.
let agent = new Agent();

async function discover(node: AdminNode, query: string, signal?: AbortSignal): Promise<Discovery> {
  const res = await agent.request({ origin: node.url, path: `/v1/discovery/web${query}`, method: 'GET', ...(signal ? { signal } : {}) });
  const body = (await res.body.json()) as Discovery['body'] & { id: string }[];
  const header = (name: string): string | undefined => {
    const value = res.headers[name];
    return typeof value === 'string' ? value : undefined;
  };
  return {
    status: res.statusCode,
    index: header('x-berth-index'),
    stable: header('x-berth-stable'),
    connection: header('connection'),
    ids: Array.isArray(body) ? body.map((i) => i.id) : [],
    body,
  };
}

async function withNode(fn: (node: AdminNode, clock: FakeClock) => Promise<void>): Promise<void> {
  const clock = new FakeClock();
  const node = await startAdminNode(MANIFEST, { clock });
  agent = new Agent();
  try {
    await fn(node, clock);
  } finally {
    await agent.destroy();
    await node.close();
  }
}

/** An instance of web, passing unless `fields` say otherwise. */
const web = (id: string, fields: Partial<InstanceRecord> = {}): InstanceRecord => instanceRecord({ id, group: 'core', service: 'web', ...fields });

describe('admin API: blocking discovery queries', () => {
  it('answers-the-index-and-the-stable-version-and-blocks-until-the-passing-set-changes', () =>
    withNode(async (node) => {
      await node.catalog.put(web('web-a'));
      const first = await discover(node, '');
      assert.deepEqual([first.status, first.ids, first.stable], [200, ['web-a'], '1.0.0']);
      assert.match(first.index ?? '', /^\d+$/);

      const blocked = discover(node, `?index=${first.index}&wait=1m`);
      await node.waiters(1);
      await node.catalog.put(web('web-b', { port: 4001 }));
      const next = await blocked;
      assert.deepEqual(next.ids, ['web-a', 'web-b']);
      assert.notEqual(next.index, first.index);
      assert.equal(node.waiting, 0);
    }));

  it('answers-at-once-for-an-index-that-is-not-the-current-one', () =>
    withNode(async (node) => {
      await node.catalog.put(web('web-a'));
      const first = await discover(node, '');
      const stale = await discover(node, `?index=${Number(first.index) + 1000}&wait=5m`);
      assert.deepEqual([stale.status, stale.ids, stale.index], [200, ['web-a'], first.index]);
      assert.equal(node.waiting, 0);
    }));

  it('is-not-woken-by-changes-that-leave-the-passing-set-as-it-is', () =>
    withNode(async (node, clock) => {
      await node.catalog.put(web('web-a'));
      const first = await discover(node, '');
      const blocked = discover(node, `?index=${first.index}&wait=10s`);
      await node.waiters(1);
      // Another service, a non-passing instance, and a rewrite of web-a that discovery does not show: none changes the answer.
      await node.catalog.put(instanceRecord({ id: 'other-a', group: 'core', service: 'other' }));
      await node.catalog.put(web('web-b', { status: 'starting', port: 4001 }));
      await node.catalog.put(web('web-a', { updatedAt: '2024-02-01T00:00:00.000Z', lastCheck: { status: 'passing', output: 'HTTP 200', at: '2024-02-01T00:00:00.000Z', durationMs: 1 } }));
      assert.equal(node.waiting, 1, 'still waiting');
      clock.advance(10_000);
      const answer = await blocked;
      assert.deepEqual([answer.status, answer.ids, answer.index], [200, ['web-a'], first.index]);
    }));

  it('waits-for-a-change-of-its-own-version-range-only', () =>
    withNode(async (node) => {
      await node.catalog.put(web('web-a'));
      const first = await discover(node, '?version=^2');
      assert.deepEqual(first.ids, []);
      const blocked = discover(node, `?version=%5E2&index=${first.index}&wait=1m`);
      await node.waiters(1);
      await node.catalog.put(web('web-b', { port: 4001 }));
      assert.equal(node.waiting, 1, 'a 1.x instance does not answer a query for ^2');
      await node.catalog.put(web('web-c', { version: '2.0.0', port: 4002 }));
      const next = await blocked;
      assert.deepEqual(next.ids, ['web-c']);
    }));

  it('sees-an-instance-that-stops-passing', () =>
    withNode(async (node) => {
      await node.catalog.put(web('web-a'));
      await node.catalog.put(web('web-b', { port: 4001 }));
      const first = await discover(node, '');
      const blocked = discover(node, `?index=${first.index}`);
      await node.waiters(1);
      await node.catalog.put(web('web-b', { port: 4001, status: 'critical' }));
      assert.deepEqual((await blocked).ids, ['web-a']);
    }));

  it('refuses-a-bad-wait-or-index-with-400-and-the-field', () =>
    withNode(async (node) => {
      const long = await discover(node, '?index=1&wait=6m');
      assert.equal(long.status, 400);
      assert.equal(long.body.code, 'BERTH_ERR_BAD_REQUEST');
      assert.deepEqual(long.body.details?.map((d) => d.where), ['query.wait']);
      const garbage = await discover(node, '?index=1&wait=soon');
      assert.deepEqual(garbage.body.details?.map((d) => d.where), ['query.wait']);
      const negative = await discover(node, '?index=-1');
      assert.equal(negative.status, 400);
      assert.deepEqual(negative.body.details?.map((d) => d.where), ['query.index']);
      assert.equal((await discover(node, '?index=abc')).status, 400);
    }));

  it('ends-at-the-wait-with-the-same-answer-and-index', () =>
    withNode(async (node, clock) => {
      const first = await discover(node, '');
      const blocked = discover(node, `?index=${first.index}&wait=2s`);
      await node.waiters(1);
      clock.advance(1_999);
      assert.equal(node.waiting, 1);
      clock.advance(1);
      const answer = await blocked;
      assert.deepEqual([answer.status, answer.ids, answer.index], [200, [], first.index]);
    }));

  it('removes-the-wait-when-the-client-hangs-up', () =>
    withNode(async (node) => {
      const first = await discover(node, '');
      const controller = new AbortController();
      const blocked = discover(node, `?index=${first.index}&wait=5m`, controller.signal);
      await node.waiters(1);
      controller.abort();
      await assert.rejects(blocked);
      await node.waiters(0);
      assert.equal(node.waiting, 0);
    }));

  it('answers-waiting-queries-at-once-when-the-node-closes', () =>
    withNode(async (node) => {
      const first = await discover(node, '');
      const blocked = discover(node, `?index=${first.index}&wait=5m`);
      await node.waiters(1);
      // Would hang until the wait ended (5 minutes) if the waits held the server open.
      await node.stopApi();
      const answer = await blocked;
      assert.deepEqual([answer.status, answer.index, answer.connection], [200, first.index, 'close']);
      assert.equal(node.waiting, 0);
    }));
});
