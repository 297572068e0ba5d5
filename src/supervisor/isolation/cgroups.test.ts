import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join, relative } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, afterEach, before, describe, it } from 'node:test';
import type { ResourcesSpec } from '../../manifest/types.js';
import {
  cgroupDriver,
  cpuBandwidth,
  detectCgroups,
  kernelCgroupFs,
  unsupportedLimits,
  type CgroupDriver,
  type CgroupFs,
  type CgroupSupport,
  type InstanceCgroup,
} from './cgroups.js';

const MiB = 1024 * 1024;
const CONTROLLERS = ['memory', 'cpu', 'pids'] as const;
const NO_LIMITS: ResourcesSpec = { memoryBytes: null, cpu: null, pids: null, openFiles: null };
const limits = (l: Partial<ResourcesSpec>): ResourcesSpec => ({ ...NO_LIMITS, ...l });

// ---------------------------------------------------------------- a fake kernel
// A cgroup filesystem in a temp dir: mkdir fills a group with the files the
// kernel would give it, rmdir refuses a populated group, writes to
// subtree_control and cgroup.kill act as the kernel's do. Every write is logged.

const errno = (code: string, path: string): NodeJS.ErrnoException => Object.assign(new Error(`${code}: ${path}`), { code });

/** A pid no process can have (above the kernel's 2^22 ceiling): a fake group's member that must never be signalled for real. */
const FAKE_PID = 99_999_999;

class FakeKernel implements CgroupFs {
  readonly writes: [file: string, value: string][] = [];
  denyMkdir: string | null = null;

  constructor(
    readonly root: string,
    readonly version: 1 | 2,
  ) {}

  async mkdir(path: string): Promise<void> {
    if (this.denyMkdir !== null) throw errno(this.denyMkdir, path);
    await mkdir(path);
    for (const [file, value] of Object.entries(await this.#groupFiles(path))) await writeFile(join(path, file), value);
  }

  async rmdir(path: string): Promise<void> {
    if ((await this.subdirs(path)).length > 0) throw errno('EBUSY', path);
    if ((await readFile(join(path, 'cgroup.procs'), 'utf8')).trim() !== '') throw errno('EBUSY', path);
    await rm(path, { recursive: true });
  }

  read(path: string): Promise<string> {
    return readFile(path, 'utf8');
  }

  async write(path: string, value: string): Promise<void> {
    if (!existsSync(path)) throw errno('ENOENT', path);
    this.writes.push([relative(this.root, path), value]);
    const dir = dirname(path);
    if (basename(path) === 'cgroup.subtree_control') {
      const populated = dir !== this.root && (await readFile(join(dir, 'cgroup.procs'), 'utf8')).trim() !== '';
      if (populated) throw errno('EBUSY', path);
      const offered = words(await readFile(join(dir, 'cgroup.controllers'), 'utf8'));
      const enabled = words(await readFile(path, 'utf8'));
      for (const token of value.split(/\s+/).filter(Boolean)) {
        const c = token.slice(1);
        if (!offered.has(c)) throw errno('EINVAL', path);
        if (token.startsWith('+')) enabled.add(c);
        else enabled.delete(c);
      }
      await writeFile(path, [...enabled].join(' ') + '\n');
    } else if (basename(path) === 'cgroup.kill') {
      await writeFile(join(dir, 'cgroup.procs'), '');
    } else {
      await writeFile(path, value + '\n');
    }
  }

  exists(path: string): Promise<boolean> {
    return kernelCgroupFs.exists(path);
  }

  subdirs(path: string): Promise<string[]> {
    return kernelCgroupFs.subdirs(path);
  }

  /** The files this kernel puts in a new group at `path`. */
  async #groupFiles(path: string): Promise<Record<string, string>> {
    if (this.version === 2) {
      const passed = await readFile(join(dirname(path), 'cgroup.subtree_control'), 'utf8');
      const files: Record<string, string> = { ...V2_CORE, 'cgroup.controllers': passed };
      for (const c of words(passed)) Object.assign(files, V2_FILES[c]);
      return files;
    }
    const hierarchy = relative(this.root, path).split('/')[0] ?? '';
    return v1Files(hierarchy);
  }
}

const words = (text: string): Set<string> => new Set(text.split(/\s+/).filter(Boolean));

const V2_CORE = { 'cgroup.procs': '', 'cgroup.subtree_control': '\n', 'cgroup.events': 'populated 0\nfrozen 0\n', 'cgroup.kill': '', 'cpu.stat': 'usage_usec 0\nuser_usec 0\nsystem_usec 0\n' };
const V2_FILES: Record<string, Record<string, string>> = {
  memory: { 'memory.max': 'max\n', 'memory.swap.max': 'max\n', 'memory.current': '0\n', 'memory.events': 'low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n' },
  cpu: { 'cpu.max': 'max 100000\n', 'cpu.weight': '100\n' },
  pids: { 'pids.max': 'max\n', 'pids.current': '0\n' },
};
const V1_FILES: Record<string, Record<string, string>> = {
  memory: {
    'memory.limit_in_bytes': '9223372036854771712\n',
    'memory.memsw.limit_in_bytes': '9223372036854771712\n',
    'memory.swappiness': '60\n',
    'memory.usage_in_bytes': '0\n',
    'memory.oom_control': 'oom_kill_disable 0\nunder_oom 0\noom_kill 0\n',
  },
  cpu: { 'cpu.cfs_period_us': '100000\n', 'cpu.cfs_quota_us': '-1\n', 'cpu.stat': 'nr_periods 0\nnr_throttled 0\nthrottled_time 0\n' },
  cpuacct: { 'cpuacct.usage': '0\n' },
  pids: { 'pids.max': 'max\n', 'pids.current': '0\n' },
};
function v1Files(hierarchy: string): Record<string, string> {
  const files: Record<string, string> = { 'cgroup.procs': '', tasks: '' };
  for (const c of hierarchy.split(',')) Object.assign(files, V1_FILES[c]);
  return files;
}

const temps: string[] = [];
async function tempRoot(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'berth-cgroups-'));
  temps.push(dir);
  return dir;
}

/** A v2 root as the kernel shows it: what it offers, and what it passes on to its children. */
async function fakeV2(offered: string, passed: string): Promise<FakeKernel> {
  const root = await tempRoot();
  await writeFile(join(root, 'cgroup.controllers'), offered + '\n');
  await writeFile(join(root, 'cgroup.subtree_control'), passed + '\n');
  await writeFile(join(root, 'cgroup.procs'), '1\n');
  return new FakeKernel(root, 2);
}

/** A v1 root: one mount per entry (`cpu,cpuacct` for a co-mount). */
async function fakeV1(mounts: string[]): Promise<FakeKernel> {
  const root = await tempRoot();
  for (const m of mounts) {
    await mkdir(join(root, m));
    for (const [file, value] of Object.entries(v1Files(m))) await writeFile(join(root, m, file), value);
  }
  return new FakeKernel(root, 1);
}

const text = (file: string): Promise<string> => readFile(file, 'utf8').then((t) => t.trim());

after(async () => {
  for (const dir of temps) await rm(dir, { recursive: true, force: true });
});

// ---------------------------------------------------------------- v2, on the fake kernel
// This machine has no cgroup v2 controllers (its unified hierarchy is empty),
// so the v2 driver could not be run against a real kernel here: these tests
// check its writes and its parsing against a fake one.

describe('cgroup v2 driver (fake kernel: no v2 controllers on the test machine)', () => {
  it('detects-v2-and-enables-the-controllers-from-the-root-down-to-the-parent', async () => {
    const k = await fakeV2('cpuset cpu io memory hugetlb pids rdma misc', 'cpu memory');
    const support = await detectCgroups(k.root, { fs: k });
    assert.ok(support);
    assert.equal(support.version, 2);
    assert.deepEqual(support.controllers, { memory: { available: true, dir: k.root }, cpu: { available: true, dir: k.root }, pids: { available: true, dir: k.root } });
    assert.equal(support.cpuacct, null);
    assert.deepEqual(words(await text(join(k.root, 'cgroup.subtree_control'))), new Set(['cpu', 'memory', 'pids']));
    assert.deepEqual(words(await text(join(k.root, 'berth', 'cgroup.subtree_control'))), new Set(['cpu', 'memory', 'pids']));
    assert.deepEqual(k.writes.filter(([f]) => f === 'cgroup.subtree_control'), [['cgroup.subtree_control', '+pids']]);
    assert.deepEqual(await k.subdirs(join(k.root, 'berth')), [], 'the probe group is removed');
  });

  it('says-why-a-controller-is-unavailable-and-which-limit-needs-it', async () => {
    const k = await fakeV2('cpu memory', 'cpu memory');
    const support = await detectCgroups(k.root, { fs: k });
    assert.ok(support);
    assert.equal(support.controllers.memory.available, true);
    const pids = support.controllers.pids;
    assert.ok(!pids.available);
    assert.equal(pids.reason, 'not-mounted');
    assert.match(pids.message, /pids controller is not in .*cgroup\.controllers/);
    const [problem, ...rest] = unsupportedLimits(support, limits({ memoryBytes: 64 * MiB, pids: 10 }));
    assert.deepEqual(rest, []);
    assert.match(problem ?? '', /^resources\.pids needs the cgroup pids controller, which is not available \(not-mounted\)/);
    await assert.rejects(cgroupDriver(support, 'node-a', k).create('api-1', limits({ pids: 10 })), /resources\.pids needs the cgroup pids controller/);
  });

  it('leaves-a-unified-hierarchy-without-controllers-untouched', async () => {
    // A hybrid host's /sys/fs/cgroup/unified: v2 mounted, every controller bound to v1.
    const k = await fakeV2('', '');
    const support = await detectCgroups(k.root, { fs: k });
    assert.ok(support);
    assert.deepEqual(CONTROLLERS.map((c) => support.controllers[c].available), [false, false, false]);
    assert.equal(existsSync(join(k.root, 'berth')), false);
    assert.deepEqual(k.writes, []);
  });

  it('reports-not-enabled-when-the-parent-group-holds-processes', async () => {
    const k = await fakeV2('cpu memory pids', 'cpu memory pids');
    await k.mkdir(join(k.root, 'berth'));
    await writeFile(join(k.root, 'berth', 'cgroup.procs'), `${FAKE_PID}\n`);
    const support = await detectCgroups(k.root, { fs: k });
    assert.ok(support);
    const memory = support.controllers.memory;
    assert.ok(!memory.available);
    assert.equal(memory.reason, 'not-enabled');
    assert.match(memory.message, /berth\/cgroup\.subtree_control \(EBUSY: the group holds processes\)/);
  });

  it('reports-a-parent-it-cannot-create', async () => {
    const k = await fakeV2('cpu memory pids', 'cpu memory pids');
    k.denyMkdir = 'EACCES';
    const support = await detectCgroups(k.root, { fs: k });
    assert.ok(support);
    const cpu = support.controllers.cpu;
    assert.ok(!cpu.available);
    assert.equal(cpu.reason, process.getuid?.() === 0 ? 'not-writable' : 'not-root');
    assert.match(cpu.message, /cannot create a cpu group under .*berth \(EACCES\)/);
  });

  it('writes-memory-max-swap-cpu-max-and-pids-max-in-one-group', async () => {
    const k = await fakeV2('cpu memory pids', 'cpu memory pids');
    const support = await detectCgroups(k.root, { fs: k });
    assert.ok(support);
    const cg = await cgroupDriver(support, 'node-a', k).create('api-1.2.0+b1-3fa9c', limits({ memoryBytes: 64 * MiB, cpu: 1.5, pids: 100 }));
    const dir = join(k.root, 'berth', 'node-a', 'api-1.2.0+b1-3fa9c');
    assert.deepEqual(cg.procsFiles, [join(dir, 'cgroup.procs')]);
    assert.equal(await text(join(dir, 'memory.max')), String(64 * MiB));
    assert.equal(await text(join(dir, 'memory.swap.max')), '0');
    assert.equal(await text(join(dir, 'cpu.max')), '15000 10000');
    assert.equal(await text(join(dir, 'pids.max')), '100');
    assert.deepEqual(words(await text(join(k.root, 'berth', 'node-a', 'cgroup.subtree_control'))), new Set(['cpu', 'memory', 'pids']));
  });

  it('gives-10-ms-periods-and-lengthens-them-only-where-the-quota-would-fall-under-1-ms', () => {
    assert.deepEqual(cpuBandwidth(0.5), { quotaUs: 5_000, periodUs: 10_000 });
    assert.deepEqual(cpuBandwidth(2), { quotaUs: 20_000, periodUs: 10_000 });
    assert.deepEqual(cpuBandwidth(0.1), { quotaUs: 1_000, periodUs: 10_000 });
    assert.deepEqual(cpuBandwidth(0.05), { quotaUs: 1_000, periodUs: 20_000 });
    assert.deepEqual(cpuBandwidth(0.003), { quotaUs: 1_000, periodUs: 333_334 });
    // The kernel's bounds: quota at least 1 ms, period at most 1 s.
    assert.deepEqual(cpuBandwidth(0.0001), { quotaUs: 1_000, periodUs: 1_000_000 });
  });

  it('writes-only-the-files-of-the-limits-set', async () => {
    const k = await fakeV2('cpu memory pids', 'cpu memory pids');
    const support = await detectCgroups(k.root, { fs: k });
    assert.ok(support);
    const driver = cgroupDriver(support, 'node-a', k);
    const cg = await driver.create('api-1', limits({ cpu: 0.001 }));
    const inGroup = k.writes.filter(([f]) => f.startsWith('berth/node-a/api-1/'));
    assert.deepEqual(inGroup, [['berth/node-a/api-1/cpu.max', '1000 1000000']]);
    assert.equal(await text(join(k.root, 'berth', 'node-a', 'api-1', 'memory.max')), 'max');
    const none = await driver.create('api-2', NO_LIMITS);
    assert.deepEqual(none.procsFiles, []);
    assert.equal(existsSync(join(k.root, 'berth', 'node-a', 'api-2')), false);
    await cg.release();
  });

  it('reads-oom-kills-memory-cpu-and-pids-from-the-kernel-files', async () => {
    const k = await fakeV2('cpu memory pids', 'cpu memory pids');
    const support = await detectCgroups(k.root, { fs: k });
    assert.ok(support);
    const cg = await cgroupDriver(support, 'node-a', k).create('api-1', limits({ memoryBytes: 64 * MiB }));
    const dir = join(k.root, 'berth', 'node-a', 'api-1');
    assert.equal(await cg.oomKills(), 0);
    await writeFile(join(dir, 'memory.events'), 'low 0\nhigh 0\nmax 14\noom 2\noom_kill 2\noom_group_kill 0\n');
    await writeFile(join(dir, 'memory.current'), '52428800\n');
    await writeFile(join(dir, 'cpu.stat'), 'usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n');
    await writeFile(join(dir, 'pids.current'), '7\n');
    assert.equal(await cg.oomKills(), 2);
    assert.equal(await cg.memoryBytes(), 50 * MiB);
    assert.equal(await cg.cpuUsageNs(), 1_500_000);
    assert.equal(await cg.pids(), 7);
    await cg.release();
    assert.equal(await cg.oomKills(), 2, 'the last count read outlives the group');
    assert.equal(await cg.memoryBytes(), null);
  });

  it('releases-through-cgroup-kill-once-and-removes-the-group', async () => {
    const k = await fakeV2('cpu memory pids', 'cpu memory pids');
    const support = await detectCgroups(k.root, { fs: k });
    assert.ok(support);
    const cg = await cgroupDriver(support, 'node-a', k).create('api-1', limits({ pids: 5 }));
    const dir = join(k.root, 'berth', 'node-a', 'api-1');
    await writeFile(join(dir, 'cgroup.procs'), `${FAKE_PID}\n`);
    await Promise.all([cg.release(), cg.release()]);
    await cg.release();
    assert.equal(existsSync(dir), false);
    assert.deepEqual(k.writes.filter(([f]) => f.endsWith('cgroup.kill')), [['berth/node-a/api-1/cgroup.kill', '1']]);
  });

  it('replaces-a-stale-group-of-the-same-name-and-sweeps-what-a-previous-run-left', async () => {
    const k = await fakeV2('cpu memory pids', 'cpu memory pids');
    const support = await detectCgroups(k.root, { fs: k });
    assert.ok(support);
    const before = cgroupDriver(support, 'node-a', k);
    await before.create('api-1', limits({ pids: 5 }));
    await before.create('api-2', limits({ memoryBytes: 8 * MiB }));
    const dir = join(k.root, 'berth', 'node-a', 'api-1');
    await k.mkdir(join(dir, 'nested'));
    const again = await cgroupDriver(support, 'node-a', k).create('api-1', limits({ pids: 9 }));
    assert.equal(await text(join(dir, 'pids.max')), '9');
    assert.equal(existsSync(join(dir, 'nested')), false, 'the stale group went, sub-groups and all');
    assert.equal(await cgroupDriver(support, 'node-a', k).sweep(), 2);
    assert.deepEqual(await k.subdirs(join(k.root, 'berth', 'node-a')), []);
    await again.release();
  });
});

// ---------------------------------------------------------------- both versions: refusals

describe('cgroup detection and refusals', () => {
  it('finds-no-cgroup-filesystem-in-an-empty-dir', async () => {
    assert.equal(await detectCgroups(await tempRoot()), null);
    assert.equal(await detectCgroups('/nonexistent/berth-cgroups'), null);
    assert.deepEqual(unsupportedLimits(null, NO_LIMITS), []);
    assert.deepEqual(unsupportedLimits(null, limits({ memoryBytes: 64 * MiB, openFiles: 1024 })), ['resources.memory needs the cgroup memory controller, but no cgroup filesystem is mounted']);
  });

  it('refuses-names-that-are-not-one-path-segment', async () => {
    const k = await fakeV1(['memory', 'cpu', 'cpuacct', 'pids']);
    const support = await detectCgroups(k.root, { fs: k });
    assert.ok(support);
    assert.throws(() => cgroupDriver(support, 'a/b', k), /node name "a\/b" cannot name a cgroup/);
    assert.throws(() => cgroupDriver(support, '..', k), /cannot name a cgroup/);
    const driver = cgroupDriver(support, 'node-a', k);
    for (const bad of ['', '.', '..', '../x', 'a/b', '.hidden', 'x y', 'a'.repeat(256)]) {
      await assert.rejects(driver.create(bad, limits({ pids: 5 })), /instance name .* cannot name a cgroup/, bad);
    }
    await assert.rejects(detectCgroups(k.root, { fs: k, parent: '../etc' }), /cgroup parent/);
  });

  it('v1-names-the-missing-hierarchy-and-shares-a-co-mounted-cpu-cpuacct-group', async () => {
    const k = await fakeV1(['cpu,cpuacct', 'pids']);
    const support = await detectCgroups(k.root, { fs: k });
    assert.ok(support);
    assert.equal(support.version, 1);
    assert.deepEqual(support.controllers.cpu, { available: true, dir: join(k.root, 'cpu,cpuacct') });
    assert.deepEqual(support.cpuacct, { available: true, dir: join(k.root, 'cpu,cpuacct') });
    assert.deepEqual(support.controllers.memory, { available: false, reason: 'not-mounted', message: `no cgroup v1 hierarchy with the memory controller is mounted under ${k.root}` });
    const driver = cgroupDriver(support, 'node-a', k);
    await assert.rejects(driver.create('api-1', limits({ memoryBytes: 64 * MiB })), /resources\.memory needs the cgroup memory controller, which is not available \(not-mounted\)/);
    const cg = await driver.create('api-1', limits({ cpu: 0.25 }));
    const dir = join(k.root, 'cpu,cpuacct', 'berth', 'node-a', 'api-1');
    assert.deepEqual(cg.procsFiles, [join(dir, 'cgroup.procs')]);
    assert.equal(await text(join(dir, 'cpu.cfs_quota_us')), '2500');
    await writeFile(join(dir, 'cpuacct.usage'), '123456789\n');
    assert.equal(await cg.cpuUsageNs(), 123_456_789);
    assert.equal(await cg.memoryBytes(), null);
    await cg.release();
    assert.equal(existsSync(dir), false);
  });
});

// ---------------------------------------------------------------- v1, on this machine's kernel

const ROOT = '/sys/fs/cgroup';
const V1_SKIP =
  process.getuid?.() !== 0
    ? 'needs root: only root can create cgroups in the v1 hierarchy'
    : existsSync(join(ROOT, 'cgroup.controllers')) || !existsSync(join(ROOT, 'memory', 'memory.limit_in_bytes'))
      ? `needs a cgroup v1 memory hierarchy at ${ROOT}/memory`
      : false;
/** A parent of this run's own, so parallel runs and a real node's `berth` never meet. */
const PARENT = `berth-test-${process.pid}`;
const NODE = 'node-a';

interface Launched {
  child: ChildProcess;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Resolves with the first line the child writes to stdout. */
  line: Promise<string>;
  stdout(): string;
}

describe('cgroup v1 driver on this machine', { skip: V1_SKIP }, () => {
  let support: CgroupSupport;
  let driver: CgroupDriver;
  const groups: InstanceCgroup[] = [];
  const children: ChildProcess[] = [];

  /** The launcher's pattern: the wrapper shell joins every group, then execs, so nothing runs outside the limits. */
  function launch(cg: InstanceCgroup, argv: string[]): Launched {
    const quote = (s: string): string => `'${s.replaceAll("'", `'\\''`)}'`;
    const script = ['set -e', ...cg.procsFiles.map((f) => `echo $$ > ${quote(f)}`), 'exec "$@"'].join('; ');
    const child = spawn('/bin/sh', ['-c', script, 'sh', ...argv], { detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    let out = '';
    const line = new Promise<string>((resolve, reject) => {
      child.stdout?.on('data', (chunk: Buffer) => {
        out += chunk.toString();
        const nl = out.indexOf('\n');
        if (nl >= 0) resolve(out.slice(0, nl));
      });
      child.once('exit', () => reject(new Error(`exited before writing a line; stdout: ${out}`)));
    });
    line.catch(() => undefined);
    child.stderr?.resume();
    const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
    return { child, exit, line, stdout: () => out };
  }

  const node = (code: string): string[] => [process.execPath, '-e', code];
  const create = async (name: string, l: ResourcesSpec): Promise<InstanceCgroup> => {
    const cg = await driver.create(name, l);
    groups.push(cg);
    return cg;
  };

  before(async () => {
    const detected = await detectCgroups(ROOT, { parent: PARENT });
    assert.ok(detected && detected.version === 1, 'cgroup v1 detected');
    for (const c of ['memory', 'cpu', 'pids'] as const) assert.ok(detected.controllers[c].available, `${c}: ${JSON.stringify(detected.controllers[c])}`);
    support = detected;
    driver = cgroupDriver(support, NODE);
  });

  afterEach(async () => {
    for (const cg of groups.splice(0)) await cg.release();
    for (const child of children.splice(0)) {
      if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) continue;
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {
        // Already gone with its group.
      }
    }
  });

  after(async () => {
    await driver.sweep();
    const mounts = new Set([support.controllers.memory, support.controllers.cpu, support.controllers.pids, support.cpuacct].flatMap((c) => (c?.available ? [c.dir] : [])));
    for (const mount of mounts) {
      for (const dir of [join(mount, PARENT, NODE), join(mount, PARENT)]) await kernelCgroupFs.rmdir(dir).catch((err: NodeJS.ErrnoException) => assert.equal(err.code, 'ENOENT'));
      assert.equal(existsSync(join(mount, PARENT)), false, `${mount}/${PARENT} is left behind`);
    }
  });

  it('writes-the-limits-into-each-controller-hierarchy', async () => {
    const cg = await create('limits-1', limits({ memoryBytes: 64 * MiB, cpu: 0.5, pids: 32, openFiles: 1024 }));
    const dirs = cg.procsFiles.map(dirname);
    assert.deepEqual(dirs, [join(ROOT, 'memory', PARENT, NODE, 'limits-1'), join(ROOT, 'cpu', PARENT, NODE, 'limits-1'), join(ROOT, 'cpuacct', PARENT, NODE, 'limits-1'), join(ROOT, 'pids', PARENT, NODE, 'limits-1')]);
    const [memory = '', cpu = '', , pids = ''] = dirs;
    assert.equal(await text(join(memory, 'memory.limit_in_bytes')), String(64 * MiB));
    if (existsSync(join(memory, 'memory.memsw.limit_in_bytes'))) assert.equal(await text(join(memory, 'memory.memsw.limit_in_bytes')), String(64 * MiB));
    assert.equal(await text(join(memory, 'memory.swappiness')), '0');
    assert.equal(await text(join(cpu, 'cpu.cfs_period_us')), '10000');
    assert.equal(await text(join(cpu, 'cpu.cfs_quota_us')), '5000');
    assert.equal(await text(join(pids, 'pids.max')), '32');
    assert.equal(await cg.pids(), 0);
    assert.equal(await cg.oomKills(), 0);
    await cg.release();
    await cg.release();
    for (const dir of dirs) assert.equal(existsSync(dir), false, `${dir} removed`);
  });

  it('oom-kills-a-process-past-its-memory-limit-and-counts-it', async () => {
    const cg = await create('oom', limits({ memoryBytes: 64 * MiB }));
    const run = launch(
      cg,
      node(`
        const fs = require('node:fs');
        console.log(fs.readFileSync('/proc/self/cgroup', 'utf8').split('\\n').find((l) => l.includes(':memory:')));
        const kept = [];
        for (let i = 0; i < 256; i++) kept.push(Buffer.alloc(1 << 20, 1));
        console.log('survived 256 MiB');
      `),
    );
    assert.match(await run.line, new RegExp(`:memory:/${PARENT}/${NODE}/oom$`));
    const exit = await run.exit;
    assert.deepEqual(exit, { code: null, signal: 'SIGKILL' });
    assert.doesNotMatch(run.stdout(), /survived/);
    assert.equal(await cg.oomKills(), 1);
    const charged = await cg.memoryBytes();
    assert.ok(charged !== null && charged <= 64 * MiB, `charged ${charged}`);
  });

  it('a-fork-loop-stops-at-pids-max-and-release-kills-what-is-left', async () => {
    const cg = await create('forks', limits({ pids: 32 }));
    const run = launch(
      cg,
      node(`
        const { spawn } = require('node:child_process');
        let spawned = 0;
        const next = () => {
          const c = spawn('sleep', ['30'], { stdio: 'ignore' });
          c.on('error', (e) => console.log(JSON.stringify({ spawned, code: e.code })));
          c.on('spawn', () => { spawned++; next(); });
        };
        next();
        setInterval(() => {}, 60000);
      `),
    );
    const result = JSON.parse(await run.line) as { spawned: number; code: string };
    assert.equal(result.code, 'EAGAIN');
    assert.ok(result.spawned > 0 && result.spawned < 32, `spawned ${result.spawned}`);
    assert.equal(await cg.pids(), 32, 'the node process, its threads and the sleeps fill the group');
    const procs = (await readFile(cg.procsFiles[0] ?? '', 'utf8')).split('\n').filter(Boolean).map(Number);
    assert.equal(procs.length, result.spawned + 1);
    await cg.release();
    assert.deepEqual(await run.exit, { code: null, signal: 'SIGKILL' });
    for (const pid of procs) {
      // Gone, or a zombie its new parent has not reaped yet: nothing runs.
      const state = await readFile(`/proc/${pid}/stat`, 'utf8').then((s) => s.slice(s.lastIndexOf(')') + 2, s.lastIndexOf(')') + 3), () => 'gone');
      assert.ok(state === 'gone' || state === 'Z' || state === 'X', `pid ${pid} is ${state}`);
    }
    for (const file of cg.procsFiles) assert.equal(existsSync(dirname(file)), false);
  });

  it('holds-a-busy-loop-to-its-cpu-quota', async (t) => {
    const cg = await create('busy', limits({ cpu: 0.2 }));
    const run = launch(cg, node(`console.log('spinning'); for (;;) {}`));
    await run.line;
    const usage0 = await cg.cpuUsageNs();
    const wall0 = process.hrtime.bigint();
    await sleep(2000);
    const usage1 = await cg.cpuUsageNs();
    const wall1 = process.hrtime.bigint();
    assert.ok(usage0 !== null && usage1 !== null, 'cpuacct counts the group');
    const cores = (usage1 - usage0) / Number(wall1 - wall0);
    const stat = await text(join(dirname(cg.procsFiles[0] ?? ''), 'cpu.stat'));
    const throttled = Number(/nr_throttled (\d+)/.exec(stat)?.[1]);
    t.diagnostic(`busy loop at cpu 0.2: ${cores.toFixed(3)} cores over ${(Number(wall1 - wall0) / 1e9).toFixed(2)} s, throttled ${throttled} times`);
    assert.ok(cores <= 0.3, `used ${cores.toFixed(3)} cores`);
    assert.ok(cores >= 0.05, `used ${cores.toFixed(3)} cores: did the loop run in the group?`);
    assert.ok(throttled > 0);
  });

  it('empties-and-replaces-a-stale-group-of-the-same-name', async () => {
    const stale = await driver.create('restarted', limits({ pids: 8 }));
    const run = launch(stale, ['sleep', '30']);
    for (let i = 0; i < 200 && (await stale.pids()) !== 1; i++) await sleep(10);
    assert.equal(await stale.pids(), 1);
    const fresh = await create('restarted', limits({ pids: 16 }));
    assert.deepEqual(await run.exit, { code: null, signal: 'SIGKILL' });
    assert.equal(await text(join(dirname(fresh.procsFiles[0] ?? ''), 'pids.max')), '16');
    assert.equal(await fresh.pids(), 0);
  });

  it('sweeps-the-groups-a-previous-run-left-and-kills-their-processes', async () => {
    await driver.create('left-1', limits({ memoryBytes: 32 * MiB }));
    const left = await driver.create('left-2', limits({ pids: 8 }));
    const run = launch(left, ['sleep', '30']);
    for (let i = 0; i < 200 && (await left.pids()) !== 1; i++) await sleep(10);
    assert.equal(await cgroupDriver(support, NODE).sweep(), 2);
    assert.deepEqual(await run.exit, { code: null, signal: 'SIGKILL' });
    for (const mount of ['memory', 'cpu', 'cpuacct', 'pids']) assert.deepEqual(await kernelCgroupFs.subdirs(join(ROOT, mount, PARENT, NODE)).catch(() => []), []);
  });

  it('needs-no-group-when-no-cgroup-limit-is-set', async () => {
    const cg = await create('plain', limits({ openFiles: 1024 }));
    assert.deepEqual(cg.procsFiles, []);
    assert.equal(await cg.memoryBytes(), null);
    assert.equal(await cg.pids(), null);
    assert.equal(await cg.cpuUsageNs(), null);
    assert.equal(await cg.oomKills(), 0);
  });
});
