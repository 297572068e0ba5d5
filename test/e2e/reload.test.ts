import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import type { InstanceRecord } from '../../src/catalog/types.js';
import { BerthProcess, isAlive, makeProject, runCli, testManifest } from '../support/node-process.js';

const HEALTH = '{ http: /health, interval: 200ms, timeout: 150ms, startPeriod: 0s }';

/** A manifest with `web` (its replicas, env and command as given) and the other services named. */
function manifest(options: { replicas?: number; env?: string; command?: string; extra?: string; services?: string[]; top?: string } = {}): string {
  const services = options.services ?? ['old'];
  return testManifest(`${options.top ?? ''}
groups:
  core:
    services:
      web:
        command: ${options.command ?? 'node web.mjs'}
        replicas: ${options.replicas ?? 2}
        health: ${HEALTH}
        drainTimeout: 1s
        stopTimeout: 2s
${options.env ? `        env: ${options.env}\n` : ''}${options.extra ?? ''}${services
    .map(
      (name) => `      ${name}:
        command: node web.mjs
        health: ${HEALTH}
        drainTimeout: 1s
        stopTimeout: 2s
`,
    )
    .join('')}`);
}

const running = (all: InstanceRecord[], service?: string): InstanceRecord[] =>
  all.filter((r) => r.status !== 'stopped' && r.status !== 'failed' && (service === undefined || r.service === service));
const passing = (all: InstanceRecord[], service: string): number => all.filter((r) => r.service === service && r.status === 'passing').length;
const idsAndPids = (all: InstanceRecord[]): string[] =>
  running(all)
    .map((r) => `${r.id}:${r.pid}:${r.status}`)
    .sort();

describe('reload without restart (real berth up)', () => {
  let project: Awaited<ReturnType<typeof makeProject>>;
  let node: BerthProcess;
  const cli = (...args: string[]): ReturnType<typeof runCli> => runCli([...args, '-f', project.file]);

  before(async () => {
    project = await makeProject(manifest());
    node = await BerthProcess.start(project.file);
    await node.waitForInstances((all) => passing(all, 'web') === 2 && passing(all, 'old') === 1);
  });

  after(async () => {
    await node?.stop();
    await project?.cleanup();
  });

  it('plan-prints-the-changes-and-applies-nothing', async () => {
    const before = idsAndPids(await node.instances());
    await writeFile(project.file, manifest({ replicas: 3, services: ['api'] }));
    const { code, stdout, stderr } = await cli('plan');
    assert.equal(code, 0, stderr);
    assert.equal(stdout, ['+ core/api@0.0.0  1 instance', '- core/old@0.0.0  1 instance', '~ core/web@0.0.0  replicas 2 → 3', ''].join('\n'));

    const json = await cli('plan', '--json');
    assert.equal(json.code, 0);
    const changes = JSON.parse(json.stdout) as { added: { key: string }[]; removed: { key: string }[]; scaled: { key: string; from: number; to: number }[] };
    assert.deepEqual(changes.added.map((v) => v.key), ['core/api@0.0.0']);
    assert.deepEqual(changes.scaled.map((v) => [v.key, v.from, v.to]), [['core/web@0.0.0', 2, 3]]);

    assert.deepEqual(idsAndPids(await node.instances()), before, 'nothing started or stopped');
    assert.ok(!node.logs.some((l) => l.event === 'node.reloaded'));
  });

  it('reload-scales-adds-and-removes-services-and-the-catalog-follows', async () => {
    const before = await node.instances();
    const { code, stdout, stderr } = await cli('reload');
    assert.equal(code, 0, stderr);
    assert.match(stdout, /^\+ core\/api@0\.0\.0 {2}1 instance$/m);
    assert.match(stdout, /^- core\/old@0\.0\.0 {2}1 instance$/m);
    assert.match(stdout, /^~ core\/web@0\.0\.0 {2}replicas 2 → 3$/m);
    assert.match(stdout, /^reloaded: 2 started, 1 stopped, 0 replaced$/m);

    const all = await node.waitForInstances((xs) => passing(xs, 'web') === 3 && passing(xs, 'api') === 1);
    assert.equal(running(all, 'old').length, 0, 'the removed service is stopped');
    const old = all.find((r) => r.service === 'old');
    assert.equal(old?.status, 'stopped');
    assert.equal(old?.reason, 'removed from the manifest');
    // The two web instances that ran before still run: a scale-up touches nobody.
    for (const r of before.filter((x) => x.service === 'web')) assert.ok(all.some((x) => x.id === r.id && x.pid === r.pid && x.status === 'passing'));

    const services = await node.api<{ service: string }[]>('/v1/services');
    assert.deepEqual(services.map((s) => s.service).sort(), ['api', 'web']);
    const reloaded = await node.waitForLog((l) => l.event === 'node.reloaded');
    assert.equal(reloaded.started, 2);
    assert.equal(reloaded.stopped, 1);
  });

  it('a-broken-manifest-is-refused-with-every-error-and-nothing-changes', async () => {
    const before = idsAndPids(await node.instances());
    await writeFile(project.file, manifest({ replicas: -1, extra: '        replica: 2\n', services: ['api'] }));
    const { code, stdout, stderr } = await cli('reload');
    assert.equal(code, 3, stdout + stderr);
    const located = stderr.split('\n').filter((l) => /berth\.yaml:\d+:\d+/.test(l));
    assert.equal(located.length, 2, stderr);
    assert.ok(located.some((l) => /replicas/.test(l) && /berth\.yaml:10:/.test(l)), stderr);
    assert.ok(located.some((l) => /replica\b/.test(l)), stderr);
    assert.match(stderr, /nothing changed/);

    const failed = await node.waitForLog((l) => l.event === 'node.reload-failed');
    assert.equal(failed.code, 'BERTH_ERR_MANIFEST_INVALID');
    assert.equal((await cli('plan')).code, 3);
    const json = await cli('reload', '--json');
    assert.equal(json.code, 3);
    assert.equal((JSON.parse(json.stdout) as { code: string; errors: unknown[] }).errors.length, 2);

    const after = await node.instances();
    assert.deepEqual(idsAndPids(after), before, 'same instances, same processes');
    for (const r of running(after)) assert.ok(isAlive(r.pid!));
    // The running configuration is still the good one.
    assert.deepEqual((await node.api<{ service: string }[]>('/v1/services')).map((s) => s.service).sort(), ['api', 'web']);
  });

  it('a-changed-env-replaces-instances-one-at-a-time', async () => {
    const before = running(await node.instances(), 'web');
    await writeFile(project.file, manifest({ replicas: 3, env: '{ COLOR: green }', services: ['api'] }));
    const { code, stdout, stderr } = await cli('reload');
    assert.equal(code, 0, stderr);
    assert.match(stdout, /^~ core\/web@0\.0\.0 {2}replace 3 instances \(env\)$/m);
    assert.match(stdout, /^reloaded: 0 started, 0 stopped, 3 replaced$/m);

    const all = await node.instances();
    const web = running(all, 'web');
    assert.equal(web.length, 3);
    assert.equal(passing(all, 'web'), 3, 'the reply comes once every new instance passes');
    for (const r of web) assert.ok(!before.some((b) => b.id === r.id), `${r.id} is new`);
    for (const b of before) assert.match(all.find((r) => r.id === b.id)?.reason ?? '', /^replaced by web-0\.0\.0-/);
    assert.equal(node.logs.filter((l) => l.event === 'rollout.replaced').length, 3);
  });

  it('a-rollout-that-fails-keeps-the-old-instances-and-exits-1', async () => {
    const before = idsAndPids(await node.instances());
    await writeFile(project.file, manifest({ replicas: 3, env: '{ COLOR: green }', command: 'node crash.mjs', extra: '        restart: never\n', services: ['api'] }));
    const { code, stdout, stderr } = await cli('reload');
    assert.equal(code, 1, stdout + stderr);
    assert.match(stdout, /replace 3 instances \(command, restart\)/);
    assert.match(stderr, /rollout of core\/web@0\.0\.0 failed: new instance web-0\.0\.0-\w+ failed: exited with code 3 \(restart: never\); its old instances keep running/);
    assert.deepEqual(idsAndPids(await node.instances()), before);
    // The failed version still runs its old spec, so the change is still planned.
    const plan = await cli('plan');
    assert.match(plan.stdout, /^~ core\/web@0\.0\.0 {2}replace 3 instances \(command, restart\)$/m);
  });

  it('a-change-that-needs-a-restart-is-refused-and-named', async () => {
    const before = idsAndPids(await node.instances());
    await writeFile(project.file, manifest({ replicas: 3, env: '{ COLOR: green }', services: ['api'], top: 'node: renamed' }));
    const plan = await cli('plan');
    assert.equal(plan.code, 0);
    assert.match(plan.stdout, /^! nodeName \S+ → renamed {2}\(needs a restart\)$/m);
    assert.match(plan.stderr, /would refuse/);
    const { code, stderr } = await cli('reload');
    assert.equal(code, 1);
    assert.match(stderr, /reload refused: nodeName cannot change while the node runs/);
    assert.match(stderr, /nothing changed/);
    assert.deepEqual(idsAndPids(await node.instances()), before);
  });

  it('sighup-reloads-the-manifest', async () => {
    await writeFile(project.file, manifest({ replicas: 1, env: '{ COLOR: green }', services: ['api', 'extra'] }));
    const reloaded = node.nextLog((l) => l.event === 'node.reloaded');
    node.child.kill('SIGHUP');
    const line = await reloaded;
    assert.equal(line.added, 1);
    assert.equal(line.scaled, 1);
    const all = await node.waitForInstances((xs) => passing(xs, 'extra') === 1 && running(xs, 'web').length === 1);
    assert.equal(passing(all, 'web'), 1);

    // A broken manifest on SIGHUP is logged and the node keeps running as it was.
    const before = idsAndPids(await node.instances());
    await writeFile(project.file, 'groups: {}\n');
    const refused = node.nextLog((l) => l.event === 'node.reload-failed');
    node.child.kill('SIGHUP');
    assert.equal((await refused).code, 'BERTH_ERR_MANIFEST_INVALID');
    assert.deepEqual(idsAndPids(await node.instances()), before);
    assert.equal(node.child.exitCode, null, 'the node still runs');
  });
});
