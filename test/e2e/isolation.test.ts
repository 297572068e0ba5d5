// What a service may do and see when the manifest isolates it, against a real
// `berth up` as root: the user it runs as, the filesystem sandbox, secrets by
// reference, the limits and usage Berth shows, an OOM kill inside the sandbox,
// and a user that does not exist.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { request } from 'undici';
import type { InstanceView } from '../../src/admin/api.js';
import { nodeCgroupDirs } from '../support/cgroups.js';
import { BerthProcess, makeProject, runCli, testManifest } from '../support/node-process.js';

/** Users need root, the sandbox bubblewrap, limits cgroups; a machine without them runs none of it (and says so), which is not what is tested here. */
const CGROUPS = existsSync('/sys/fs/cgroup/cgroup.procs') || existsSync('/sys/fs/cgroup/memory/cgroup.procs');
const SKIP = process.platform !== 'linux' || process.getuid?.() !== 0 || !existsSync('/usr/bin/bwrap') || !CGROUPS ? 'needs root, bubblewrap and cgroups (Linux)' : false;

/** Letters and digits only, so a match in a JSON line is a match in the raw text. */
const SECRET = `tok${randomBytes(16).toString('hex')}`;
const ROTATED = `rot${randomBytes(16).toString('hex')}`;
const NOBODY = 65534;
const MEMORY_LIMIT = 256 * 1024 * 1024;
/** The sandboxed leaker's limit: room for Node.js to start, then its leak is killed within a few hundred ms. */
const HOG_MEMORY_MIB = 96;

const manifest = (tokenFile: string, memory: string): string =>
  testManifest(`groups:
  core:
    services:
      probe:
        command: node probe.mjs
        user: nobody
        sandbox: true
        resources: { memory: ${memory}, cpu: 1, pids: 128, openFiles: 1024 }
        env: { TOKEN: { secret: { file: ${tokenFile} } } }
        health: { http: /health, interval: 500ms }
      other:
        command: node probe.mjs
        user: nobody
        sandbox: true
        health: { http: /health, interval: 500ms }
      web:
        command: node web.mjs
        health: { http: /health, interval: 500ms }
      hog:
        command: node hog.mjs
        user: nobody
        sandbox: true
        resources: { memory: ${HOG_MEMORY_MIB}MiB }
        health: { http: /health, interval: 500ms }
      ghost:
        command: node web.mjs
        user: berth-no-such-user
`);
const MANIFEST = manifest('secrets/token', '256MiB');

interface ProbeAnswer {
  instance: string;
  ok?: boolean;
  code?: string;
  uid?: number;
  gid?: number;
  groups?: number[];
  sha256?: string | null;
}

describe('an isolated service', { skip: SKIP }, () => {
  let project: Awaited<ReturnType<typeof makeProject>>;
  let node: BerthProcess;
  let gw = '';

  /** What the probe (or `service`) answers to `/probe?query`, through the gateway. */
  const probe = async (query: string, service = 'probe'): Promise<ProbeAnswer> => {
    const res = await request(`${gw}/core/${service}/probe?${query}`);
    assert.equal(res.statusCode, 200);
    return (await res.body.json()) as ProbeAnswer;
  };
  const cli = (args: string[]): ReturnType<typeof runCli> => runCli([...args, '-f', project.file], { env: { BERTH_TOKEN: '', BERTH_ADMIN: '' } });
  const text = async (path: string): Promise<string> => {
    const res = await request(`${node.admin}${path}`, { headers: node.auth() });
    const body = await res.body.text();
    assert.equal(res.statusCode, 200, `${path}: ${body}`);
    return body;
  };

  before(async () => {
    project = await makeProject(MANIFEST);
    // mkdtemp makes the project 0700: nobody could not even reach its own command. A project folder is usually 0755.
    await chmod(project.dir, 0o755);
    // Readable by root alone: what the instance gets of it comes through its environment.
    await mkdir(join(project.dir, 'secrets'), { mode: 0o700 });
    await writeFile(join(project.dir, 'secrets', 'token'), `${SECRET}\n`, { mode: 0o600 });
    await writeFile(join(project.dir, 'secrets', 'rotated'), `${ROTATED}\n`, { mode: 0o600 });
    node = await BerthProcess.start(project.file, ['--log-level', 'info']);
    gw = String((await node.waitForLog((l) => l.event === 'node.ready')).gateway);
    // Users and the sandbox are probed when a service asks for them; a machine that cannot give them says so before ready.
    const problems = node.logs.filter((l) => l.event === 'node.isolation-problem').map((l) => l.msg);
    assert.deepEqual(problems, [], 'this machine switches users and sandboxes');
    await node.waitForInstances((xs) => ['probe', 'other', 'web', 'hog'].every((s) => xs.find((r) => r.service === s)?.status === 'passing'));
  });

  after(async () => {
    await node?.stop();
    // Berth removes its cgroups when it stops, its own node group included.
    if (node) assert.deepEqual(await nodeCgroupDirs(node), []);
    await project?.cleanup();
  });

  it('runs-as-nobody-in-a-sandbox-that-hides-the-data-dir-and-other-services', async () => {
    const id = await probe('id');
    assert.deepEqual([id.uid, id.gid, id.groups], [NOBODY, NOBODY, [NOBODY]]);

    const own = join(node.dataDir, 'services', 'core', 'probe');
    const theirs = join(node.dataDir, 'services', 'core', 'other');
    // The other service (the same user: only the sandbox keeps them apart) writes a file of its own.
    assert.equal((await probe(`write=${encodeURIComponent(join(theirs, 'private.txt'))}`, 'other')).ok, true);
    assert.ok(existsSync(join(theirs, 'private.txt')), 'it reached the other service\'s own dir on the host');

    const reads: Record<string, string> = {
      [join(node.dataDir, 'admin-token')]: 'ENOENT',
      [join(node.dataDir, 'store.json')]: 'ENOENT',
      [join(node.dataDir, 'identity-key')]: 'ENOENT',
      [join(theirs, 'private.txt')]: 'ENOENT',
      [join(project.dir, 'secrets', 'token')]: 'EACCES',
    };
    for (const path of Object.keys(reads)) assert.ok(existsSync(path), `${path} exists on the host`);
    const read: Record<string, string> = {};
    for (const path of Object.keys(reads)) {
      const answer = await probe(`read=${encodeURIComponent(path)}`);
      read[path] = answer.ok === true ? 'read' : String(answer.code);
    }
    assert.deepEqual(read, reads);
    // Its own code it can read: the cwd is there, read-only.
    assert.equal((await probe(`read=${encodeURIComponent(join(project.dir, 'probe.mjs'))}`)).ok, true);

    const marker = `probe-${randomBytes(4).toString('hex')}`;
    const writes: Record<string, string> = {
      [join(own, marker)]: 'ok',
      [join('/tmp', marker)]: 'ok',
      [join(project.dir, marker)]: 'EROFS',
      [join('/etc', marker)]: 'EROFS',
      [join('/var/tmp', marker)]: 'EROFS',
      [join('/usr/local', marker)]: 'EROFS',
      [join(theirs, marker)]: 'ENOENT',
    };
    const wrote: Record<string, string> = {};
    for (const path of Object.keys(writes)) {
      const answer = await probe(`write=${encodeURIComponent(path)}`);
      wrote[path] = answer.ok === true ? 'ok' : String(answer.code);
    }
    assert.deepEqual(wrote, writes);
    // Its own dir is the real one; its /tmp is its own; the data dir it sees is an empty tmpfs, so whatever it writes there is lost.
    assert.equal(await readFile(join(own, marker), 'utf8'), `written by ${id.instance}\n`);
    assert.equal(existsSync(join('/tmp', marker)), false, 'the sandbox\'s /tmp is not the host\'s');
    const planted = await probe(`write=${encodeURIComponent(join(node.dataDir, marker))}`);
    assert.equal(existsSync(join(node.dataDir, marker)), false, `a write to the data dir (${planted.ok === true ? 'ok in the sandbox' : planted.code}) never reaches it`);
    for (const path of Object.keys(writes).filter((p) => writes[p] !== 'ok')) assert.equal(existsSync(path), false, `${path} was not written`);
  });

  it('gives-a-secret-by-reference-to-the-instance-and-shows-it-nowhere', async () => {
    const expected = createHash('sha256').update(SECRET).digest('hex');
    assert.equal((await probe('sha256=TOKEN')).sha256, expected, 'the instance has the secret, without the trailing line break');

    // Nowhere an operator looks: the instance lists, status, and what a reload to a rotated file would do.
    await writeFile(project.file, manifest('secrets/rotated', '192MiB'));
    const planned = await text('/v1/plan');
    await writeFile(project.file, MANIFEST);
    const plan = JSON.parse(planned) as { changes: { replaced: { key: string; fields: string[] }[] }; text: string };
    // A new secret reference and a new limit take a new process: the running instance is replaced.
    assert.deepEqual(
      plan.changes.replaced.map((r) => [r.key, r.fields]),
      [['core/probe@0.0.0', ['secretEnv', 'isolation']]],
      plan.text,
    );
    const status = await cli(['status', '--json']);
    assert.equal(status.code, 0, status.stderr);
    const table = await cli(['status']);
    assert.equal(table.code, 0, table.stderr);
    const seen = {
      '/v1/services/probe/instances': await text('/v1/services/probe/instances'),
      '/v1/instances': await text('/v1/instances'),
      '/v1/services/probe': await text('/v1/services/probe'),
      '/v1/plan': planned,
      '/metrics': await text('/metrics'),
      'berth status --json': status.stdout + status.stderr,
      'berth status': table.stdout + table.stderr,
    };
    for (const [where, body] of Object.entries(seen)) {
      assert.ok(!body.includes(SECRET), `the secret appears in ${where}`);
      assert.ok(!body.includes(ROTATED), `the rotated secret appears in ${where}`);
    }
    await node.assertNeverLogged(SECRET, ROTATED);
  });

  it('shows-limits-and-usage-per-instance-in-status-and-metrics', async () => {
    // No log line says a sample was taken: a bounded poll, until one has a CPU figure (the second sample of an instance).
    const deadline = Date.now() + 15_000;
    let views: InstanceView[] = [];
    for (;;) {
      views = (await node.instances()) as InstanceView[];
      const sampled = ['probe', 'web'].every((s) => typeof views.find((r) => r.service === s)?.usage?.cpuPercent === 'number');
      if (sampled) break;
      assert.ok(Date.now() < deadline, `no usage sample within 15 s: ${JSON.stringify(views.map((r) => [r.service, r.usage]))}`);
      await sleep(250);
    }
    const probeView = views.find((r) => r.service === 'probe')!;
    const webView = views.find((r) => r.service === 'web')!;
    assert.deepEqual(probeView.limits, { memoryBytes: MEMORY_LIMIT, cpu: 1, pids: 128, openFiles: 1024 });
    assert.deepEqual(webView.limits, { memoryBytes: null, cpu: null, pids: null, openFiles: null });
    for (const view of [probeView, webView]) {
      const usage = view.usage!;
      assert.ok(usage.rssBytes > 1024 * 1024, `${view.service} rss ${usage.rssBytes}`);
      assert.ok(usage.cpuSeconds >= 0 && usage.threads >= 1 && usage.processes >= 1, JSON.stringify(usage));
    }
    // As root Berth reads the fds of an instance run as nobody too.
    assert.ok((probeView.usage?.openFds ?? 0) > 0);

    const json = await cli(['status', '--json']);
    assert.equal(json.code, 0, json.stderr);
    const shown = JSON.parse(json.stdout) as InstanceView[];
    const probeShown = shown.find((r) => r.id === probeView.id);
    assert.deepEqual(probeShown?.limits, probeView.limits);
    assert.equal(typeof probeShown?.usage?.cpuPercent, 'number');
    assert.equal(typeof probeShown?.usage?.rssBytes, 'number');

    const table = await cli(['status']);
    assert.equal(table.code, 0, table.stderr);
    const lines = table.stdout.split('\n');
    assert.deepEqual(lines[1]?.trim().split(/\s+/).slice(-2), ['CPU', 'MEM'], table.stdout);
    const cells = (id: string): string[] => lines.find((l) => l.includes(id))?.trim().split(/\s+/).slice(-2) ?? [];
    // CPU and MEM against the limit where there is one (`1.2%/100%`, `40MiB/256MiB`), alone where there is none.
    const [probeCpu, probeMem] = cells(probeView.id);
    assert.match(String(probeCpu), /^\d+(\.\d)?%\/100%$/, table.stdout);
    assert.match(String(probeMem), /^\d+(\.\d)?MiB\/256MiB$/, table.stdout);
    const [webCpu, webMem] = cells(webView.id);
    assert.match(String(webCpu), /^\d+(\.\d)?%$/, table.stdout);
    assert.match(String(webMem), /^\d+(\.\d)?MiB$/, table.stdout);

    const metrics = await text('/metrics');
    const series = (name: string, id: string): number | undefined => {
      const line = metrics.split('\n').find((l) => l.startsWith(`${name}{`) && l.includes(`instance="${id}"`));
      return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1));
    };
    assert.equal(series('berth_instance_memory_limit_bytes', probeView.id), MEMORY_LIMIT);
    assert.equal(series('berth_instance_cpu_limit_cores', probeView.id), 1);
    assert.equal(series('berth_instance_pids_limit', probeView.id), 128);
    // No limit: no series (not 0).
    assert.equal(series('berth_instance_memory_limit_bytes', webView.id), undefined);
    assert.equal(series('berth_instance_cpu_limit_cores', webView.id), undefined);
    for (const id of [probeView.id, webView.id]) {
      assert.ok((series('berth_instance_memory_rss_bytes', id) ?? 0) > 1024 * 1024, `rss of ${id}`);
      assert.ok(series('berth_instance_cpu_percent', id) !== undefined, `cpu of ${id}`);
      assert.ok((series('berth_instance_threads', id) ?? 0) >= 1, `threads of ${id}`);
      assert.ok((series('berth_instance_processes', id) ?? 0) >= 1, `processes of ${id}`);
    }
  });

  it('fails-an-instance-whose-user-does-not-exist-and-runs-the-rest', async () => {
    const [ghost] = await node.instances('ghost');
    assert.equal(ghost?.status, 'failed');
    assert.equal(ghost.pid, null);
    assert.match(String(ghost.reason), /user "berth-no-such-user" does not exist/);
    const refused = await node.waitForLog((l) => l.event === 'instance.spawn-failed' && l.instance === ghost.id);
    assert.match(String(refused.err), /berth-no-such-user/);
    // Refused once, not retried: a user does not appear by trying again.
    assert.equal(node.logs.filter((l) => l.event === 'instance.spawn-failed' && l.instance === ghost.id).length, 1);
    assert.equal(ghost.restarts, 0);

    assert.equal(node.child.exitCode, null, 'the node runs on');
    const others = await node.instances();
    for (const service of ['probe', 'other', 'web']) assert.equal(others.find((r) => r.service === service)?.status, 'passing', service);
    const res = await request(`${gw}/core/web/`);
    assert.equal(res.statusCode, 200);
    await res.body.text();
  });

  it('oom-kills-a-sandboxed-instance-at-its-memory-limit-says-so-and-restarts-it', async () => {
    // In a sandbox the process Berth watches is bwrap, which exits with the service's status: the kernel's kill is read from the cgroup, not the exit.
    const [hog] = await node.instances('hog');
    assert.ok(hog?.pid);
    const untouched = Object.fromEntries((await node.instances()).map((r) => [r.service, r]));
    const res = await request(`${gw}/core/hog/control/leak?mb=8&everyMs=20&maxMb=${4 * HOG_MEMORY_MIB}`, { method: 'POST' });
    assert.equal(res.statusCode, 200);
    await res.body.text();
    const oom = await node.waitForLog((l) => l.event === 'instance.oom-killed' && l.instance === hog.id, 15_000);
    assert.equal(oom.msg, `oom-killed (memory limit ${HOG_MEMORY_MIB}MiB)`);
    assert.equal(oom.memoryLimit, HOG_MEMORY_MIB * 1024 * 1024);
    await node.waitForLog((l) => l.event === 'instance.status' && l.instance === hog.id && l.to === 'passing' && String(l.time) >= String(oom.time), 15_000);
    const [restarted] = await node.instances('hog');
    assert.equal(restarted?.restarts, 1);
    assert.notEqual(restarted.pid, hog.pid);
    assert.equal(restarted.lastExit?.oomKilled, true);
    // bwrap reports a child killed by a signal as 128 + the signal, SIGKILL's 9.
    assert.deepEqual([restarted.lastExit.code, restarted.lastExit.signal], [137, null]);
    // No other instance was touched.
    for (const service of ['probe', 'other', 'web']) {
      const [now] = await node.instances(service);
      assert.deepEqual([now?.pid, now?.restarts, now?.status], [untouched[service]?.pid, untouched[service]?.restarts, 'passing'], service);
    }
  });
});
