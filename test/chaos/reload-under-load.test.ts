import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import { request } from 'undici';
import { BerthProcess, makeProject, runCli, testManifest } from '../support/node-process.js';
import { steadyLoad } from '../support/load.js';

const manifest = (webReplicas: number, webEnv: string, services: string): string =>
  testManifest(`groups:
  core:
    # All the load comes from one address: the edge's per-address limit would refuse most of it.
    rateLimit: false
    services:
      web:
        command: node web.mjs
        replicas: ${webReplicas}
        env: { GENERATION: "${webEnv}" }
        health: { http: /health, interval: 200ms, timeout: 150ms }
        drainTimeout: 5s
${services}
`);

const OLD = `      old:
        command: node web.mjs
        health: { http: /health, interval: 200ms, timeout: 150ms }`;
const NEW = `      fresh:
        command: node web.mjs
        health: { http: /health, interval: 200ms, timeout: 150ms }`;

describe('reload under load', () => {
  let project: Awaited<ReturnType<typeof makeProject>>;
  let node: BerthProcess;
  let gw: string;

  before(async () => {
    project = await makeProject(manifest(2, 'a', OLD));
    node = await BerthProcess.start(project.file);
    gw = String((await node.waitForLog((l) => l.event === 'node.ready')).gateway);
    await node.waitForInstances((xs) => xs.filter((r) => r.status === 'passing').length === 3);
  });

  after(async () => {
    await node?.stop();
    await project?.cleanup();
  });

  it('applies a new replica count, a new service and a removed service with 0 failed requests', async (t) => {
    const load = steadyLoad(gw, '/core/web/echo', { concurrency: 8, durationMs: 6000 });
    await writeFile(project.file, manifest(3, 'a', NEW));
    const reload = await runCli(['reload', '-f', project.file]);
    assert.equal(reload.code, 0, reload.stdout + reload.stderr);
    const result = await load;
    t.diagnostic(`${result.total} requests during the reload, ${result.failed} failed`);
    assert.equal(result.failed, 0, JSON.stringify(result.requests.filter((r) => !r.ok).slice(0, 3)));

    const all = await node.waitForInstances((xs) => xs.filter((r) => r.service === 'web' && r.status === 'passing').length === 3 && xs.some((r) => r.service === 'fresh' && r.status === 'passing'));
    assert.ok(all.filter((r) => r.service === 'old').every((r) => r.status === 'stopped'));
    const fresh = await request(`${gw}/core/fresh/echo`);
    assert.equal(fresh.statusCode, 200);
    await fresh.body.text();
    const old = await request(`${gw}/core/old/echo`);
    assert.equal(old.statusCode, 404);
    await old.body.text();
  });

  it('replaces every instance of a changed version one by one with 0 failed requests', async (t) => {
    const before = (await node.instances('web')).filter((r) => r.status === 'passing').map((r) => r.id);
    const load = steadyLoad(gw, '/core/web/echo', { concurrency: 8, durationMs: 8000 });
    await writeFile(project.file, manifest(3, 'b', NEW));
    const reload = await runCli(['reload', '-f', project.file]);
    assert.equal(reload.code, 0, reload.stdout + reload.stderr);
    const result = await load;
    t.diagnostic(`${result.total} requests during the rollout, ${result.failed} failed`);
    assert.equal(result.failed, 0, JSON.stringify(result.requests.filter((r) => !r.ok).slice(0, 3)));
    const after = (await node.instances('web')).filter((r) => r.status === 'passing');
    assert.equal(after.length, 3);
    assert.ok(after.every((r) => !before.includes(r.id)), 'every instance was replaced');
  });

  it('refuses a broken manifest under load and changes nothing', async () => {
    const before = (await node.instances()).filter((r) => r.status === 'passing').map((r) => `${r.id}:${r.pid}`).sort();
    const load = steadyLoad(gw, '/core/web/echo', { concurrency: 4, durationMs: 2000 });
    await writeFile(project.file, manifest(3, 'b', NEW).replace('replicas: 3', 'replicas: lots'));
    const reload = await runCli(['reload', '-f', project.file]);
    assert.equal(reload.code, 3);
    assert.match(reload.stdout + reload.stderr, /berth\.yaml:\d+:\d+/);
    const result = await load;
    assert.equal(result.failed, 0);
    const after = (await node.instances()).filter((r) => r.status === 'passing').map((r) => `${r.id}:${r.pid}`).sort();
    assert.deepEqual(after, before);
  });
});
