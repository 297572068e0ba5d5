import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import type { InstanceRecord } from '../../src/catalog/types.js';
import { BerthProcess, isAlive, makeProject, runCli, waitForExit, testManifest } from '../support/node-process.js';

const MANIFEST = testManifest(`groups:
  core:
    services:
      web:
        command: node web.mjs
        replicas: 2
        env: { SPAWN_CHILD: 1 }
        health: { http: /health, interval: 200ms, timeout: 150ms }
      stubborn:
        command: node web.mjs
        env: { IGNORE_SIGTERM: 1 }
        health: { http: /health, interval: 200ms, timeout: 150ms }
        stopTimeout: 1s
`);

const allPassing = (all: InstanceRecord[]): boolean => all.length === 3 && all.every((r) => r.status === 'passing');

/** Pids of every instance and of the grandchildren they forked (they log them). */
function processTree(node: BerthProcess, all: InstanceRecord[]): number[] {
  const grandchildren = node.logs
    .filter((l) => l.event === 'instance.output' && typeof l.msg === 'string' && l.msg.startsWith('grandchild '))
    .map((l) => Number(String(l.msg).split(' ')[1]));
  return [...all.map((r) => r.pid!), ...grandchildren];
}

describe('stopping a node', () => {
  const cleanups: (() => Promise<unknown>)[] = [];
  after(async () => {
    for (const c of cleanups.reverse()) await c();
  });

  it('SIGTERM stops every instance and its children within their grace, then exits 0', async () => {
    const project = await makeProject(MANIFEST);
    cleanups.push(() => project.cleanup());
    const node = await BerthProcess.start(project.file);
    cleanups.push(() => node.stop('SIGKILL'));
    const pids = processTree(node, await node.waitForInstances(allPassing));
    assert.equal(pids.length, 5, 'three instances and two grandchildren');
    const t0 = Date.now();
    const { code } = await node.stop('SIGTERM');
    const took = Date.now() - t0;
    assert.equal(code, 0);
    // Berth returns only once its instances are gone: none may outlive it.
    assert.deepEqual(pids.filter(isAlive), []);
    // The stubborn one ignores SIGTERM: it is SIGKILLed after its 1s stopTimeout, not later.
    assert.ok(took < 5000, `stop took ${took}ms`);
    assert.ok(node.logs.some((l) => l.event === 'instance.stopped' && l.service === 'stubborn' && l.signal === 'SIGKILL'));
    assert.ok(node.logs.some((l) => l.event === 'instance.draining'));
  });

  it('SIGKILL to Berth leaves no instance process alive', async () => {
    const project = await makeProject(MANIFEST);
    cleanups.push(() => project.cleanup());
    const node = await BerthProcess.start(project.file);
    cleanups.push(() => node.stop('SIGKILL'));
    const pids = processTree(node, await node.waitForInstances(allPassing));
    assert.ok(pids.every(isAlive));
    await node.stop('SIGKILL');
    // The watchdog sends SIGTERM, then SIGKILL after 3s to what is left (the stubborn one).
    await waitForExit(pids, 10_000);
  });

  it('a restarted node reads its catalog back from the data dir and keeps the history', async () => {
    const project = await makeProject(MANIFEST);
    cleanups.push(() => project.cleanup());
    const first = await BerthProcess.start(project.file);
    cleanups.push(() => first.stop('SIGKILL'));
    const before = await first.waitForInstances(allPassing);
    assert.equal((await first.stop('SIGTERM')).code, 0);

    const second = await BerthProcess.start(project.file);
    cleanups.push(() => second.stop('SIGKILL'));
    const all = await second.waitForInstances((xs) => xs.filter((r) => r.status === 'passing').length === 3);
    for (const old of before) {
      const kept = all.find((r) => r.id === old.id);
      assert.ok(kept, `old instance ${old.id} kept in the catalog`);
      assert.equal(kept.status, 'stopped');
      assert.equal(kept.createdAt, old.createdAt);
    }
    assert.equal(all.filter((r) => r.status === 'passing' && !before.some((b) => b.id === r.id)).length, 3);

    // `berth status` hides the history unless asked.
    const hidden = await runCli(['status', '--json', '-f', project.file]);
    assert.equal(hidden.code, 0, hidden.stderr);
    assert.equal((JSON.parse(hidden.stdout) as InstanceRecord[]).length, 3);
    const shown = await runCli(['status', '--json', '--all', '-f', project.file]);
    assert.equal((JSON.parse(shown.stdout) as InstanceRecord[]).length, 6);
    await second.stop('SIGTERM');
  });

  it('refuses a second node on the same data dir', async () => {
    const project = await makeProject(MANIFEST);
    cleanups.push(() => project.cleanup());
    const first = await BerthProcess.start(project.file);
    cleanups.push(() => first.stop('SIGKILL'));
    const second = new BerthProcess(project.file);
    const { code } = await second.exited;
    assert.equal(code, 1);
    assert.ok(second.logs.some((l) => String(l.msg).includes('already runs on')), JSON.stringify(second.logs));
    await first.stop('SIGTERM');
  });
});
