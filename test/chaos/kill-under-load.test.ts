import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { BerthProcess, makeProject, testManifest } from '../support/node-process.js';
import { steadyLoad } from '../support/load.js';

const MANIFEST = testManifest(`log: { level: warn }
groups:
  core:
    # All the load comes from one address: the edge's per-address limit would refuse most of it.
    rateLimit: false
    services:
      web:
        command: node web.mjs
        replicas: 3
        health: { http: /health, interval: 250ms, timeout: 200ms }
        restart: { policy: always, backoff: 200ms }
`);

describe('kill -9 of an instance under steady load', () => {
  let project: Awaited<ReturnType<typeof makeProject>>;
  let node: BerthProcess;

  before(async () => {
    project = await makeProject(MANIFEST);
    // warn: no access log, but the instance events this test reads are logged at warn or info…
    node = await BerthProcess.start(project.file, ['--log-level', 'info']);
    await node.waitForInstances((xs) => xs.filter((r) => r.status === 'passing').length === 3);
  });

  after(async () => {
    await node?.stop();
    await project?.cleanup();
  });

  it('fails fewer than 1% of requests, none after the exit was noticed, and the instance gets traffic again once passing', async (t) => {
    const gw = String((await node.waitForLog((l) => l.event === 'node.ready')).gateway);
    const [victim] = await node.instances('web');
    let killedAt = 0;
    const load = steadyLoad(gw, '/core/web/echo', {
      concurrency: 16,
      durationMs: 8000,
      onRequest: (n) => {
        if (n === 2000 && !killedAt) {
          killedAt = Date.now();
          process.kill(victim!.pid!, 'SIGKILL');
        }
      },
    });
    const exited = await node.waitForLog((l) => l.event === 'instance.exited' && l.instance === victim!.id);
    const back = await node.waitForLog((l) => l.event === 'instance.status' && l.instance === victim!.id && l.to === 'passing' && Date.parse(String(l.time)) > killedAt);
    const result = await load;
    const noticedAt = Date.parse(String(exited.time));
    const passingAgainAt = Date.parse(String(back.time));
    const failures = result.requests.filter((r) => !r.ok);
    t.diagnostic(`${result.total} requests, ${result.failed} failed; exit noticed ${noticedAt - killedAt}ms after the kill; passing again after ${passingAgainAt - killedAt}ms`);

    assert.ok(killedAt > 0, 'the kill happened under load');
    assert.ok(result.failed / result.total < 0.01, `${result.failed} of ${result.total} failed: ${JSON.stringify(failures.slice(0, 3))}`);
    // The route table drops the instance when its exit is noticed (the log line is written right after).
    const late = failures.filter((r) => r.wallStart > noticedAt + 5);
    assert.deepEqual(late, [], 'no failure for requests started after the exit was noticed');
    const servedAfter = result.requests.filter((r) => r.ok && r.instance === victim!.id && r.wallStart > passingAgainAt + 100);
    assert.ok(servedAfter.length > 0, 'the restarted instance serves again once passing');
  });
});
