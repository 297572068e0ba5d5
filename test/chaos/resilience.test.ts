// The gateway's default policies against instances that die, break, hang and
// slow down under steady load. Every service here runs with Berth's default
// resilience policies: the manifest sets none (the health check is the
// contract's), and turns off only the per-address rate limit.
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { request } from 'undici';
import type { InstanceRecord } from '../../src/catalog/types.js';
import { BerthProcess, makeProject, testManifest } from '../support/node-process.js';
import { steadyLoad, type LoadResult } from '../support/load.js';

const SERVICES = ['kill', 'broken', 'hung', 'slow', 'failing', 'storm'];
const MANIFEST = testManifest(`log: { level: info }
groups:
  core:
    # The one setting: all the load comes from one address, which the edge's per-address limit would refuse.
    rateLimit: false
    services:
${SERVICES.map(
  (name) => `      ${name}:
        command: node web.mjs
        replicas: 3
        health: { http: /health, interval: 1s, timeout: 500ms, healthyThreshold: 1, unhealthyThreshold: 2 }`,
).join('\n')}
`);

/** Tells one instance's web.mjs to misbehave (POST /control/…), straight at its port. */
async function control(instance: InstanceRecord, path: string): Promise<void> {
  const res = await request(`http://${instance.address}:${instance.port}/control/${path}`, { method: 'POST' });
  await res.body.text();
  assert.equal(res.statusCode, 200);
}

async function served(instance: InstanceRecord): Promise<number> {
  const res = await request(`http://${instance.address}:${instance.port}/control/count`);
  return ((await res.body.json()) as { served: number }).served;
}

function summary(result: LoadResult): string {
  const byStatus = new Map<number, number>();
  for (const r of result.requests) byStatus.set(r.status, (byStatus.get(r.status) ?? 0) + 1);
  return `${result.total} requests, ${result.failed} failed, by status ${JSON.stringify(Object.fromEntries(byStatus))}`;
}

describe('resilience with default policies', () => {
  let project: Awaited<ReturnType<typeof makeProject>>;
  let node: BerthProcess;
  let gw = '';

  before(async () => {
    project = await makeProject(MANIFEST);
    node = await BerthProcess.start(project.file, ['--log-level', 'info']);
    gw = String((await node.waitForLog((l) => l.event === 'node.ready', 60_000)).gateway);
    await node.waitForInstances((xs) => xs.filter((r) => r.status === 'passing').length === SERVICES.length * 3, 60_000);
  });

  after(async () => {
    await node?.stop();
    await project?.cleanup();
  });

  it('loses no request while a random instance is killed every 2-3 s', async (t) => {
    const load = steadyLoad(gw, '/core/kill/', { concurrency: 16, durationMs: 20_000 });
    let done = false;
    void load.finally(() => (done = true));
    const kills: string[] = [];
    // The chaos schedule (not a synchronisation): a kill every 2-3 s while the load runs.
    await sleep(1_000);
    while (!done) {
      const running = (await node.instances('kill')).filter((r) => r.status === 'passing' && r.pid);
      const victim = running[Math.floor(Math.random() * running.length)];
      if (victim?.pid) {
        process.kill(victim.pid, 'SIGKILL');
        kills.push(victim.id);
      }
      await Promise.race([sleep(2_000 + Math.random() * 1_000), load]);
    }
    const result = await load;
    const restarts = (await node.instances('kill')).reduce((n, r) => n + r.restarts, 0);
    t.diagnostic(`${kills.length} kills, ${restarts} restarts; ${summary(result)}`);
    assert.ok(kills.length >= 6, `${kills.length} kills`);
    assert.equal(result.failed, 0, JSON.stringify(result.requests.filter((r) => !r.ok).slice(0, 3)));
  });

  it('lets at most 10 errors through when an instance starts answering 500', async (t) => {
    const [victim] = await node.instances('broken');
    const load = steadyLoad(gw, '/core/broken/', {
      concurrency: 16,
      durationMs: 10_000,
      onRequest: (n) => {
        if (n === 1_000) void control(victim!, 'break?status=500');
      },
    });
    const result = await load;
    const errors = result.requests.filter((r) => r.status >= 500);
    t.diagnostic(`${summary(result)}; the broken instance served ${await served(victim!)}`);
    assert.ok(errors.length <= 10, `${errors.length} 5xx reached the clients`);
  });

  it('finishes the requests caught on a frozen instance on another one after the try timeout', async (t) => {
    const [victim] = await node.instances('hung');
    const load = steadyLoad(gw, '/core/hung/', { concurrency: 16, durationMs: 14_000 });
    // Freeze it once it is taking its share of the load (so requests are caught on it).
    const start = await served(victim!);
    for (let i = 0; i < 100 && (await served(victim!)) < start + 200; i++) await sleep(50);
    const frozenAt = performance.now();
    process.kill(victim!.pid!, 'SIGSTOP');
    const thaw = setTimeout(() => process.kill(victim!.pid!, 'SIGCONT'), 10_000);
    t.after(() => {
      clearTimeout(thaw);
      process.kill(victim!.pid!, 'SIGCONT');
    });
    const result = await load;
    const caught = result.requests.filter((r) => r.ok && r.durationMs !== undefined && r.durationMs >= 4_500);
    t.diagnostic(`${summary(result)}; ${caught.length} requests took the try timeout (5 s) and finished on ${[...new Set(caught.map((r) => r.instance))].join(', ')}`);
    assert.ok(frozenAt > 0);
    assert.equal(result.failed, 0, JSON.stringify(result.requests.filter((r) => !r.ok).slice(0, 3)));
    assert.ok(caught.length > 0, 'some requests were caught on the frozen instance');
    assert.ok(caught.every((r) => r.instance !== victim!.id), 'and finished elsewhere');
  });

  it('sends a slow instance under 5% of the requests', async (t) => {
    const [victim] = await node.instances('slow');
    await control(victim!, 'delay?ms=500');
    const before = await served(victim!);
    const result = await steadyLoad(gw, '/core/slow/', { concurrency: 16, durationMs: 10_000 });
    const toSlow = (await served(victim!)) - before;
    t.diagnostic(`${summary(result)}; the slow instance served ${toSlow} (${((100 * toSlow) / result.total).toFixed(2)}%)`);
    assert.equal(result.failed, 0);
    assert.ok(toSlow / result.total < 0.05, `${toSlow} of ${result.total}`);
  });

  it('ejects an instance answering 500 and opens its breaker, in /metrics and the admin API', async (t) => {
    const [victim] = await node.instances('failing');
    // Its health check keeps passing (status 500 only for requests): the gateway's own view must take it out.
    await control(victim!, 'break?status=500');
    await control(victim!, 'health-ok');
    const ejected = node.waitForLog((l) => l.event === 'instance.ejected' && l.instance === victim!.id, 30_000);
    const opened = node.waitForLog((l) => l.event === 'breaker.opened' && l.instance === victim!.id, 30_000);
    const load = steadyLoad(gw, '/core/failing/', { concurrency: 16, durationMs: 30_000, stop: () => Promise.all([ejected, opened]) });
    await Promise.all([ejected, opened]);
    const result = await load;
    t.diagnostic(summary(result));

    const detail = await node.api<{ state: { instances: { id: string; ejected: boolean; breaker: { state: string; timesOpened: number } | null }[] } }>('/v1/services/failing');
    const mine = detail.state.instances.find((i) => i.id === victim!.id);
    assert.equal(mine?.ejected, true, JSON.stringify(detail.state));
    assert.ok((mine?.breaker?.timesOpened ?? 0) >= 1, JSON.stringify(mine));
    const metrics = await (await request(`${node.admin}/metrics`, { headers: node.auth() })).body.text();
    assert.match(metrics, /berth_outlier_ejections_total\{group="core",service="failing",version="0\.0\.0",reason="consecutive-errors"\} [1-9]/);
    assert.match(metrics, new RegExp(`berth_circuit_breaker_opened_total\\{group="core",service="failing",version="0\\.0\\.0",instance="${victim!.id}"\\} [1-9]`));
    assert.match(metrics, /berth_outlier_ejected_instances\{group="core",service="failing",version="0\.0\.0"\} 1/);
  });

  it('keeps upstream tries within 1.2x the client requests when every instance fails', async (t) => {
    const instances = await node.instances('storm');
    for (const i of instances) await control(i, 'break?status=503');
    for (const i of instances) await control(i, 'health-ok');
    const before = await Promise.all(instances.map(served));
    const result = await steadyLoad(gw, '/core/storm/', { concurrency: 16, durationMs: 10_000 });
    const after = await Promise.all(instances.map(served));
    const tries = after.reduce((n, v, i) => n + v - before[i]!, 0);
    t.diagnostic(`${summary(result)}; ${tries} tries reached the instances (${(tries / result.total).toFixed(3)} per client request)`);
    assert.ok(tries <= 1.2 * result.total, `${tries} tries for ${result.total} requests`);
  });
});
