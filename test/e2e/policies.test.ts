// The gateway's policies as a manifest sets them: limits, hashing, deadlines,
// status retries, methods that are not retried, and the admin API's view.
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { request } from 'undici';
import type { InstanceRecord } from '../../src/catalog/types.js';
import { BerthProcess, makeProject, runCli, testManifest } from '../support/node-process.js';

const HEALTH = 'health: { http: /health, interval: 200ms, timeout: 150ms }';
const MANIFEST = testManifest(`groups:
  core:
    services:
      narrow:
        command: node web.mjs
        ${HEALTH}
        limits: { concurrency: 2, queue: 1 }
      wide:
        command: node web.mjs
        ${HEALTH}
      sticky:
        command: node web.mjs
        replicas: 3
        ${HEALTH}
        balancer: { hash: { header: x-user } }
      flaky:
        command: node web.mjs
        replicas: 2
        ${HEALTH}
        balancer: round-robin
        outlier: false
        breaker: false
`);

async function call(url: string, init: { method?: string; headers?: Record<string, string>; body?: string } = {}): Promise<{ status: number; headers: Record<string, unknown>; json: Record<string, unknown> }> {
  const res = await request(url, { method: (init.method ?? 'GET') as 'GET', headers: init.headers ?? {}, body: init.body ?? null });
  const text = await res.body.text();
  return { status: res.statusCode, headers: res.headers, json: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
}

async function control(instance: InstanceRecord, path: string): Promise<void> {
  const res = await request(`http://${instance.address}:${instance.port}/control/${path}`, { method: 'POST' });
  await res.body.text();
}

describe('gateway policies from the manifest', () => {
  let project: Awaited<ReturnType<typeof makeProject>>;
  let node: BerthProcess;
  let gw = '';

  before(async () => {
    project = await makeProject(MANIFEST);
    node = await BerthProcess.start(project.file);
    gw = String((await node.waitForLog((l) => l.event === 'node.ready')).gateway);
    await node.waitForInstances((xs) => xs.filter((r) => r.status === 'passing').length === 7);
  });

  after(async () => {
    await node?.stop();
    await project?.cleanup();
  });

  it('answers 503 with Retry-After past a service\'s limits, and other services keep answering', async () => {
    // 2 in flight + 1 queued; the fourth is refused at once.
    const slow = Array.from({ length: 3 }, () => call(`${gw}/core/narrow/slow?ms=600`));
    await new Promise((resolve) => setImmediate(resolve));
    let refused: Awaited<ReturnType<typeof call>> | undefined;
    for (let i = 0; i < 50 && !refused; i++) {
      const r = await call(`${gw}/core/narrow/slow?ms=1`);
      if (r.status === 503) refused = r;
    }
    assert.equal(refused?.json.code, 'BERTH_ERR_OVERLOADED');
    assert.equal(refused?.headers['retry-after'], '1');
    const other = await call(`${gw}/core/wide/echo`);
    assert.equal(other.status, 200);
    for (const r of await Promise.all(slow)) assert.equal(r.status, 200, 'the queued one was served when a slot freed');
  });

  it('sends one key to one instance with hash balancing', async () => {
    for (const user of ['ann', 'bob', 'cyd']) {
      const seen = new Set<string>();
      for (let i = 0; i < 8; i++) seen.add(String((await call(`${gw}/core/sticky/echo`, { headers: { 'x-user': user } })).json.instance));
      assert.equal(seen.size, 1, `${user} went to ${[...seen].join(', ')}`);
    }
  });

  it('passes the time left to the instance, shortened by the client\'s x-berth-timeout-ms', async () => {
    const plain = await call(`${gw}/core/wide/echo`);
    const given = Number((plain.json.headers as Record<string, string>)['x-berth-timeout-ms']);
    assert.ok(given > 4_000 && given <= 5_000, `a try has at most 5 s: got ${given}`);
    const shortened = await call(`${gw}/core/wide/echo`, { headers: { 'x-berth-timeout-ms': '1200' } });
    const left = Number((shortened.json.headers as Record<string, string>)['x-berth-timeout-ms']);
    assert.ok(left > 1_000 && left <= 1_200, `got ${left}`);
    const late = await call(`${gw}/core/wide/slow?ms=2000`, { headers: { 'x-berth-timeout-ms': '300' } });
    assert.equal(late.status, 504);
    assert.equal(late.json.code, 'BERTH_ERR_UPSTREAM_TIMEOUT');
  });

  it('retries a 503 on the other instance, but never a POST', async () => {
    const [bad, good] = await node.instances('flaky');
    await control(bad!, 'break?status=503');
    await control(bad!, 'health-ok');
    // One at a time: each retry is within the budget's minimum (3 at once); ten at once on a cold
    // service would be half retries, and the budget would rightly refuse some.
    const gets = [];
    for (let i = 0; i < 10; i++) gets.push(await call(`${gw}/core/flaky/`));
    for (const r of gets) {
      assert.equal(r.status, 200);
      assert.equal(r.json.instance, good!.id);
    }
    const posts = [];
    for (let i = 0; i < 6; i++) posts.push(await call(`${gw}/core/flaky/`, { method: 'POST', body: 'x' }));
    assert.ok(posts.some((r) => r.status === 503), 'a POST that reached the broken instance got its 503');
    await control(bad!, 'heal');
  });

  it('shows the policies and their state in the admin API', async () => {
    const detail = await node.api<{ policies: { limits: { concurrency: number }; balancer: { kind: string } }; state: { limits: { rejected: number }; budget: { granted: number } } }>('/v1/services/narrow');
    assert.equal(detail.policies.limits.concurrency, 2);
    assert.equal(detail.policies.balancer.kind, 'peak-ewma');
    assert.ok(detail.state.limits.rejected >= 1);
    const flaky = await node.api<{ state: { budget: { granted: number } } }>('/v1/services/flaky');
    assert.ok(flaky.state.budget.granted >= 1, 'the 503 retries took from the budget');
  });

  it('refuses a manifest whose policies are wrong, naming the field', async () => {
    await writeFile(join(project.dir, 'bad.yaml'), testManifest(`groups:
  core:
    services:
      web:
        command: node web.mjs
        retries: { attempts: 20, on: [connect, 200], backoff: 1s, maxBackoff: 100ms }
        balancer: { hash: {} }
        breaker: { instance: { failureRatio: 2 } }
`));
    const result = await runCli(['validate', '-f', `${project.dir}/bad.yaml`]);
    assert.equal(result.code, 3);
    for (const field of ['retries.attempts', 'retries.on[1]', 'retries.maxBackoff', 'balancer.hash', 'breaker.instance.failureRatio']) {
      assert.ok(result.stderr.includes(field) || result.stdout.includes(field), `${field} in:\n${result.stderr}${result.stdout}`);
    }
  });
});
