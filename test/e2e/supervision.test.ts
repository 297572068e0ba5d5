import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { request } from 'undici';
import type { InstanceRecord } from '../../src/catalog/types.js';
import { BerthProcess, makeProject, waitForExit, testManifest } from '../support/node-process.js';

const MANIFEST = testManifest(`groups:
  core:
    services:
      web:
        command: node web.mjs
        replicas: 2
        health: { http: /health, interval: 200ms, timeout: 150ms, unhealthyThreshold: 2, startPeriod: 0s, restartAfter: 1s }
        restart: { policy: always, backoff: 100ms, maxBackoff: 1s }
        stopTimeout: 2s
  batch:
    services:
      crasher:
        command: node crash.mjs
        health: false
        restart: { policy: always, backoff: 20ms, maxBackoff: 100ms, maxRestarts: 3 }
`);

const passingWeb = (all: InstanceRecord[]): boolean =>
  all.filter((r) => r.service === 'web' && r.status === 'passing').length === 2;

describe('supervision of real instances', () => {
  let project: Awaited<ReturnType<typeof makeProject>>;
  let node: BerthProcess;

  before(async () => {
    project = await makeProject(MANIFEST);
    node = await BerthProcess.start(project.file);
  });

  after(async () => {
    await node?.stop();
    await project?.cleanup();
  });

  it('starts every replica with its identity and reports it passing only after a check passed', async () => {
    const all = await node.waitForInstances(passingWeb);
    const web = all.filter((r) => r.service === 'web');
    assert.equal(web.length, 2);
    for (const r of web) {
      assert.ok(r.pid && r.port > 0, 'has a pid and a port');
      assert.equal(r.lastCheck?.status, 'passing');
      const res = await request(`http://127.0.0.1:${r.port}/whoami`);
      const body = (await res.body.json()) as { instance: string; version: string };
      assert.deepEqual(body, { instance: r.id, version: '0.0.0', path: '/whoami' });
    }
    const started = node.logs.filter((l) => l.event === 'instance.started' && l.service === 'web');
    assert.ok(started.length >= 2);
    // No instance was ever reported passing before its first check result.
    for (const r of web) {
      // The API can be ahead of the log lines, which the node writes in batches.
      await node.waitForLog((l) => l.instance === r.id && l.event === 'instance.status' && l.to === 'passing');
      const firstPassing = node.logs.findIndex((l) => l.instance === r.id && l.event === 'instance.status' && l.to === 'passing');
      assert.ok(firstPassing > node.logs.findIndex((l) => l.instance === r.id && l.event === 'instance.started'));
    }
  });

  it('captures instance output line by line, tagged with its identity', async () => {
    const line = await node.waitForLog((l) => l.event === 'instance.output' && typeof l.msg === 'string' && l.msg.startsWith('listening on'));
    assert.equal(line.group, 'core');
    assert.equal(line.service, 'web');
    assert.equal(line.version, '0.0.0');
    assert.match(String(line.instance), /^web-0\.0\.0-/);
    assert.equal(line.stream, 'stdout');
  });

  it('puts a crash-looping service in failed after its restart limit and leaves the others alone', async () => {
    const all = await node.waitForInstances((xs) => xs.some((r) => r.service === 'crasher' && r.status === 'failed'));
    const crasher = all.find((r) => r.service === 'crasher')!;
    assert.equal(crasher.restarts, 3);
    assert.match(String(crasher.reason), /crash loop/);
    assert.equal(crasher.lastExit?.code, 3);
    const web = all.filter((r) => r.service === 'web');
    assert.ok(web.every((r) => r.status === 'passing' && r.restarts === 0), JSON.stringify(web));
    // Backoff grew between attempts.
    const delays = node.logs.filter((l) => l.event === 'instance.restarting' && l.service === 'crasher').map((l) => Number(l.delayMs));
    assert.equal(delays.length, 3);
    assert.ok(delays[2]! > delays[0]!, `delays ${delays.join(', ')}`);
  });

  it('restarts a SIGKILLed instance with backoff, counts it, and it passes again', async () => {
    const [victim] = (await node.waitForInstances(passingWeb)).filter((r) => r.service === 'web');
    const exited = node.nextLog((l) => l.event === 'instance.exited' && l.instance === victim!.id);
    process.kill(victim!.pid!, 'SIGKILL');
    const exit = await exited;
    assert.equal(exit.signal, 'SIGKILL');
    const restarting = await node.waitForLog((l) => l.event === 'instance.restarting' && l.instance === victim!.id);
    assert.ok(Number(restarting.delayMs) > 0);
    const all = await node.waitForInstances((xs) => xs.some((r) => r.id === victim!.id && r.status === 'passing' && r.restarts === 1));
    const again = all.find((r) => r.id === victim!.id)!;
    assert.notEqual(again.pid, victim!.pid);
    assert.equal(again.lastExit?.signal, 'SIGKILL');
  });

  it('marks an instance critical after unhealthyThreshold failed checks and restarts it after restartAfter', async () => {
    const [victim] = (await node.waitForInstances(passingWeb)).filter((r) => r.service === 'web' && r.restarts === 0);
    assert.ok(victim, 'an instance that was not restarted yet');
    await (await request(`http://127.0.0.1:${victim.port}/control/health-fail`, { method: 'POST' })).body.text();
    const critical = await node.waitForLog((l) => l.event === 'instance.status' && l.instance === victim.id && l.to === 'critical');
    // The fall takes unhealthyThreshold (2) consecutive failures: the first one alone changes nothing.
    assert.equal(node.logs.filter((l) => l.event === 'instance.status' && l.instance === victim.id && l.to === 'critical').length, 1);
    const restarting = await node.waitForLog((l) => l.event === 'instance.restarting' && l.instance === victim.id && l.cause === 'health');
    const criticalFor = Date.parse(String(restarting.time)) - Date.parse(String(critical.time));
    assert.ok(criticalFor >= 950, `restarted after ${criticalFor}ms critical, expected >= restartAfter (1s)`);
    const all = await node.waitForInstances((xs) => xs.some((r) => r.id === victim.id && r.status === 'passing' && r.restarts === 1));
    assert.notEqual(all.find((r) => r.id === victim.id)!.pid, victim.pid);
    await waitForExit([victim.pid!], 5000);
  });
});
