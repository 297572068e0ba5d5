import { constants } from 'node:fs';
import { access, mkdir, readdir, readFile, rmdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { BerthError, type ErrorCode } from '../../errors.js';
import type { ResourcesSpec } from '../../manifest/types.js';

// Kernel-enforced limits of an instance, cgroup v1 or v2 (docs/isolation.md).
// Layout: `<hierarchy>/<parent>/<node>/<instance>`, parent `berth` by default;
// v1 has one such tree per controller mount, v2 one in the unified hierarchy.
// Berth itself never joins a group: the launcher (launch.ts) writes its own
// pid into `procsFiles` before it execs, so no instruction of the service
// ever runs outside its limits, and whatever it forks stays inside them.

/** The controllers Berth sets limits with. */
export type CgroupController = 'memory' | 'cpu' | 'pids';
export const CGROUP_CONTROLLERS: readonly CgroupController[] = Object.freeze(['memory', 'cpu', 'pids']);

/**
 * Why a controller cannot be used: its hierarchy is not mounted (v2: not in
 * the root's `cgroup.controllers`), the kernel lacks the limit's file, it
 * cannot be enabled in `cgroup.subtree_control` (v2), or a group cannot be
 * created under the parent (as root, or because Berth is not root).
 */
export type CgroupUnavailableReason = 'not-mounted' | 'not-supported' | 'not-enabled' | 'not-writable' | 'not-root';

export type ControllerSupport =
  | { available: true; /** v1: the controller's mount; v2: the root. */ dir: string }
  | { available: false; reason: CgroupUnavailableReason; message: string };

export interface CgroupSupport {
  version: 1 | 2;
  root: string;
  /** Berth's own group under each hierarchy, holding one group per node. */
  parent: string;
  controllers: Readonly<Record<CgroupController, ControllerSupport>>;
  /** v1: the cpuacct hierarchy, which counts a group's CPU time. v2: null (every group's cpu.stat has it). */
  cpuacct: ControllerSupport | null;
}

/** The few file operations on a cgroup filesystem; tests give a fake kernel over a temp dir. */
export interface CgroupFs {
  /** One level; fails with EEXIST when it exists. */
  mkdir(path: string): Promise<void>;
  rmdir(path: string): Promise<void>;
  read(path: string): Promise<string>;
  /** One write of the whole value to an existing file (cgroup files take one value per write). */
  write(path: string, value: string): Promise<void>;
  exists(path: string): Promise<boolean>;
  /** Names of the subdirectories (child groups); fails with ENOENT when `path` is missing. */
  subdirs(path: string): Promise<string[]>;
}

export const kernelCgroupFs: CgroupFs = Object.freeze({
  mkdir: async (path: string) => {
    await mkdir(path);
  },
  rmdir: (path: string) => rmdir(path),
  read: (path: string) => readFile(path, 'utf8'),
  // No O_CREAT: a group's files are the kernel's, so writing one it lacks must be ENOENT, not an attempt to create it.
  write: (path: string, value: string) => writeFile(path, value, { flag: constants.O_WRONLY | constants.O_TRUNC }),
  exists: (path: string) => access(path).then(
    () => true,
    () => false,
  ),
  subdirs: async (path: string) => (await readdir(path, { withFileTypes: true })).filter((d) => d.isDirectory()).map((d) => d.name),
});

/** The live group(s) of one instance. */
export interface InstanceCgroup {
  /**
   * The `cgroup.procs` files the launcher writes its own pid to, each in turn,
   * before it execs the service (v1: one per controller; v2: one). Empty when
   * the limits need no controller.
   */
  readonly procsFiles: readonly string[];
  /** Processes of the group the kernel's OOM killer has killed (v1 memory.oom_control `oom_kill`, kernel ≥ 4.13; v2 memory.events). The last count read survives release(). */
  oomKills(): Promise<number>;
  /** Memory charged to the group now, bytes; null without a memory group. */
  memoryBytes(): Promise<number | null>;
  /** CPU time used by the group since it was created, ns; null without CPU accounting (v1: no cpuacct). */
  cpuUsageNs(): Promise<number | null>;
  /** Processes and threads in the group now; null without a pids group. */
  pids(): Promise<number | null>;
  /** SIGKILLs whatever is left in the group, waits (bounded) until it is empty, then removes it. Idempotent. */
  release(): Promise<void>;
}

/** Creates instances' groups for one node. */
export interface CgroupDriver {
  /**
   * A fresh group for the instance `name` with these limits (openFiles is an
   * rlimit, not a cgroup's). A group of the same name left by a crash is
   * emptied and removed first. Rejects when a limit's controller is unavailable.
   */
  create(name: string, limits: ResourcesSpec): Promise<InstanceCgroup>;
  /** Empties and removes every group of this node: what a previous run left. Resolves with how many instances had one. */
  sweep(): Promise<number>;
  /** sweep(), then removes the node's own group (when the node stops): nothing of it stays behind. */
  close(): Promise<void>;
}

export interface DetectOptions {
  /** Berth's group under each hierarchy; one path segment. */
  parent?: string;
  fs?: CgroupFs;
}

// The instance could not be given its limits, so it cannot start: the closest
// code today. A dedicated non-retryable code would let the supervisor stop retrying.
const CGROUP_ERROR: ErrorCode = 'BERTH_ERR_ISOLATION';

/**
 * The CFS bandwidth period. Shorter than the kernel's and Kubernetes' 100 ms
 * default: a limited instance then runs in bursts of at most its share of
 * 10 ms (5 ms for half a core) instead of 50 ms, so a neighbour woken while it
 * burns waits less. Measured in test/chaos/isolation.test.ts (a normal
 * service next to a 0.5-core burner): its p99 fell from 6.3 ms to 4-5 ms.
 */
const CPU_PERIOD_US = 10_000;
/** The kernel refuses a CFS quota under 1 ms and a period over 1 s. */
const CPU_MIN_QUOTA_US = 1_000;
const CPU_MAX_PERIOD_US = 1_000_000;
/** After SIGKILL, members leave within milliseconds; poll for at most 2 s (as process.ts does for a group). */
const RELEASE_POLL_MS = 10;
const RELEASE_POLLS = 200;

/** A node name, instance id or parent: one path segment, never `.`/`..`, no slash, at most 255 bytes. */
const SEGMENT = /^[A-Za-z0-9][A-Za-z0-9._+-]{0,254}$/;

const LIMIT_OF: Record<CgroupController, string> = { memory: 'resources.memory', cpu: 'resources.cpu', pids: 'resources.pids' };

/** A file each controller puts in every group: a probe group without it means the kernel lacks the feature. */
const V1_MARKER: Record<CgroupController | 'cpuacct', string> = {
  memory: 'memory.limit_in_bytes',
  cpu: 'cpu.cfs_quota_us',
  pids: 'pids.max',
  cpuacct: 'cpuacct.usage',
};
const V2_MARKER: Record<CgroupController, string> = { memory: 'memory.max', cpu: 'cpu.max', pids: 'pids.max' };

// ---------------------------------------------------------------- detection

/**
 * What this machine lets Berth limit: the cgroup version and, per controller,
 * whether Berth can create a group under `<hierarchy>/<parent>` (it tries:
 * mkdir and rmdir of a probe). On v2 it enables the controllers in the
 * root's and the parent's `cgroup.subtree_control` when they are not yet.
 * Creates the parent group when missing. null: no cgroup filesystem at `root`.
 */
export async function detectCgroups(root = '/sys/fs/cgroup', options: DetectOptions = {}): Promise<CgroupSupport | null> {
  const fs = options.fs ?? kernelCgroupFs;
  const parent = safeSegment(options.parent ?? 'berth', 'cgroup parent');
  if (await fs.exists(join(root, 'cgroup.controllers'))) return detectV2(fs, root, parent);
  return detectV1(fs, root, parent);
}

async function detectV1(fs: CgroupFs, root: string, parent: string): Promise<CgroupSupport | null> {
  let entries: string[];
  try {
    entries = (await fs.subdirs(root)).sort();
  } catch {
    return null;
  }
  // A mount is named after its controllers (`memory`, `cpu,cpuacct`); a mount of exactly that name wins.
  const mounts = new Map<string, string>();
  for (const name of entries) {
    const dir = join(root, name);
    if (!(await fs.exists(join(dir, 'cgroup.procs')))) continue;
    for (const controller of name.split(',')) if (!mounts.has(controller) || controller === name) mounts.set(controller, dir);
  }
  if (mounts.size === 0) return null;
  const result = new Map<string, ControllerSupport>();
  // One probe per hierarchy: co-mounted controllers share their groups.
  const byMount = new Map<string, [string, string][]>();
  for (const c of [...CGROUP_CONTROLLERS, 'cpuacct'] as const) {
    const mount = mounts.get(c);
    if (mount === undefined) result.set(c, { available: false, reason: 'not-mounted', message: `no cgroup v1 hierarchy with the ${c} controller is mounted under ${root}` });
    else byMount.set(mount, [...(byMount.get(mount) ?? []), [c, V1_MARKER[c]]]);
  }
  for (const [mount, markers] of byMount) for (const [c, s] of await probe(fs, mount, parent, markers)) result.set(c, s);
  return { version: 1, root, parent, controllers: record(result), cpuacct: supportOf(result, 'cpuacct') };
}

async function detectV2(fs: CgroupFs, root: string, parent: string): Promise<CgroupSupport> {
  const mounted = words(await fs.read(join(root, 'cgroup.controllers')));
  const result = new Map<string, ControllerSupport>();
  const wanted: CgroupController[] = [];
  for (const c of CGROUP_CONTROLLERS) {
    if (mounted.has(c)) wanted.push(c);
    else {
      result.set(c, {
        available: false,
        reason: 'not-mounted',
        message: `the ${c} controller is not in ${join(root, 'cgroup.controllers')} (bound to a v1 hierarchy, or not built into the kernel)`,
      });
    }
  }
  // Nothing to limit with: leave the hierarchy as it is (no parent group).
  if (wanted.length === 0) return { version: 2, root, parent, controllers: record(result), cpuacct: null };
  const base = join(root, parent);
  // Each group from the root down to the instance's parent must pass a controller on in its subtree_control.
  const rootFailures = await enableControllers(fs, root, wanted);
  try {
    await mkdirIfMissing(fs, base);
  } catch (err) {
    for (const c of wanted) result.set(c, cannotCreate(c, base, err));
    return { version: 2, root, parent, controllers: record(result), cpuacct: null };
  }
  const baseFailures = await enableControllers(fs, base, wanted.filter((c) => !rootFailures.has(c)));
  const enabled: CgroupController[] = [];
  for (const c of wanted) {
    const failure = rootFailures.get(c) ?? baseFailures.get(c);
    if (failure === undefined) enabled.push(c);
    else result.set(c, { available: false, reason: 'not-enabled', message: `the ${c} controller cannot be enabled in ${failure}` });
  }
  const probed = await probe(fs, root, parent, enabled.map((c) => [c, V2_MARKER[c]]));
  for (const [c, s] of probed) result.set(c, s);
  return { version: 2, root, parent, controllers: record(result), cpuacct: null };
}

/** Adds `+c` to `dir`'s subtree_control for each one missing; returns the ones refused, with where and why. */
async function enableControllers(fs: CgroupFs, dir: string, controllers: readonly CgroupController[]): Promise<Map<CgroupController, string>> {
  const failures = new Map<CgroupController, string>();
  const file = join(dir, 'cgroup.subtree_control');
  let enabled: Set<string>;
  try {
    enabled = words(await fs.read(file));
  } catch (err) {
    for (const c of controllers) failures.set(c, `${file} (${errorCode(err)})`);
    return failures;
  }
  for (const c of controllers) {
    if (enabled.has(c)) continue;
    // One controller per write: a refused one does not take the others down with it.
    try {
      await fs.write(file, `+${c}`);
    } catch (err) {
      failures.set(c, `${file} (${errorCode(err)}${errorCode(err) === 'EBUSY' ? ': the group holds processes' : ''})`);
    }
  }
  return failures;
}

/** Creates and removes `<dir>/<parent>/.probe-<pid>`; a controller whose marker file is missing in it is not supported. */
async function probe(fs: CgroupFs, dir: string, parent: string, markers: readonly (readonly [string, string])[]): Promise<Map<string, ControllerSupport>> {
  const result = new Map<string, ControllerSupport>();
  if (markers.length === 0) return result;
  const base = join(dir, parent);
  // A dot first: no node name can collide with it.
  const probeDir = join(base, `.probe-${process.pid}`);
  try {
    await mkdirIfMissing(fs, base);
    await removeIfPresent(fs, probeDir);
    await fs.mkdir(probeDir);
  } catch (err) {
    for (const [c] of markers) result.set(c, cannotCreate(c, base, err));
    return result;
  }
  try {
    for (const [c, marker] of markers) {
      if (await fs.exists(join(probeDir, marker))) result.set(c, { available: true, dir });
      else result.set(c, { available: false, reason: 'not-supported', message: `a ${c} group has no ${marker}: the kernel lacks this limit` });
    }
  } finally {
    await removeIfPresent(fs, probeDir);
  }
  return result;
}

function cannotCreate(controller: string, base: string, err: unknown): ControllerSupport {
  const code = errorCode(err);
  const denied = code === 'EACCES' || code === 'EPERM' || code === 'EROFS';
  if (denied && process.getuid?.() !== 0) {
    return { available: false, reason: 'not-root', message: `cannot create a ${controller} group under ${base} (${code}): Berth is not running as root and the hierarchy is not delegated to its user` };
  }
  return { available: false, reason: 'not-writable', message: `cannot create a ${controller} group under ${base} (${code})` };
}

function record(map: ReadonlyMap<string, ControllerSupport>): Record<CgroupController, ControllerSupport> {
  return { memory: supportOf(map, 'memory'), cpu: supportOf(map, 'cpu'), pids: supportOf(map, 'pids') };
}

function supportOf(map: ReadonlyMap<string, ControllerSupport>, c: string): ControllerSupport {
  return map.get(c) ?? { available: false, reason: 'not-mounted', message: `the ${c} controller was not found` };
}

// ---------------------------------------------------------------- limits

/** The controllers these limits need (openFiles needs none: it is an rlimit). */
export function neededControllers(limits: ResourcesSpec): CgroupController[] {
  const needed: CgroupController[] = [];
  if (limits.memoryBytes !== null) needed.push('memory');
  if (limits.cpu !== null) needed.push('cpu');
  if (limits.pids !== null) needed.push('pids');
  return needed;
}

/**
 * One message per limit this machine cannot enforce, naming the setting, the
 * controller and why; empty when all can be. For the node to refuse to start
 * (or to start the version) before anything is spawned.
 */
export function unsupportedLimits(support: CgroupSupport | null, limits: ResourcesSpec): string[] {
  return neededControllers(limits).flatMap((c) => {
    const s = support?.controllers[c];
    if (s === undefined) return [`${LIMIT_OF[c]} needs the cgroup ${c} controller, but no cgroup filesystem is mounted`];
    return s.available ? [] : [`${LIMIT_OF[c]} needs the cgroup ${c} controller, which is not available (${s.reason}): ${s.message}`];
  });
}

/** The CFS quota for `cores` per 100 ms period, µs. */
/**
 * The CFS quota and period for `cores`: 10 ms periods, longer where a small
 * limit would need a quota under the kernel's 1 ms (0.05 core: 1 ms per 20 ms).
 */
export function cpuBandwidth(cores: number): { quotaUs: number; periodUs: number } {
  const periodUs = Math.min(CPU_MAX_PERIOD_US, Math.max(CPU_PERIOD_US, Math.ceil(CPU_MIN_QUOTA_US / cores)));
  return { quotaUs: Math.max(CPU_MIN_QUOTA_US, Math.round(cores * periodUs)), periodUs };
}

function checkLimits(limits: ResourcesSpec): void {
  const bad = (what: string): never => {
    throw new BerthError(CGROUP_ERROR, `invalid resource limit: ${what}`);
  };
  if (limits.memoryBytes !== null && !(Number.isSafeInteger(limits.memoryBytes) && limits.memoryBytes > 0)) bad(`memory ${limits.memoryBytes} is not a positive number of bytes`);
  if (limits.cpu !== null && !(Number.isFinite(limits.cpu) && limits.cpu > 0)) bad(`cpu ${limits.cpu} is not a positive number of cores`);
  if (limits.pids !== null && !(Number.isSafeInteger(limits.pids) && limits.pids > 0)) bad(`pids ${limits.pids} is not a positive integer`);
}

// ---------------------------------------------------------------- drivers

/** The driver for the detected version, for the node `node`. */
export function cgroupDriver(support: CgroupSupport, node: string, fs: CgroupFs = kernelCgroupFs): CgroupDriver {
  safeSegment(node, 'node name');
  return support.version === 1 ? new CgroupV1Driver(support, node, fs) : new CgroupV2Driver(support, node, fs);
}

class CgroupV1Driver implements CgroupDriver {
  readonly #support: CgroupSupport;
  readonly #node: string;
  readonly #fs: CgroupFs;

  constructor(support: CgroupSupport, node: string, fs: CgroupFs) {
    this.#support = support;
    this.#node = node;
    this.#fs = fs;
  }

  async create(name: string, limits: ResourcesSpec): Promise<InstanceCgroup> {
    safeSegment(name, 'instance name');
    checkLimits(limits);
    const problems = unsupportedLimits(this.#support, limits);
    if (problems.length > 0) throw new BerthError(CGROUP_ERROR, `instance ${name}: ${problems.join('; ')}`);
    await removeGroups(this.#fs, this.#nodeDirs().map((d) => join(d, name)));

    const fs = this.#fs;
    const dirOf = (mount: string): string => join(mount, this.#support.parent, this.#node, name);
    const created: string[] = [];
    // One group per hierarchy: controllers mounted together (`cpu,cpuacct`) share it.
    const make = async (mount: string): Promise<string> => {
      const dir = dirOf(mount);
      if (created.includes(dir)) return dir;
      await mkdirIfMissing(fs, join(mount, this.#support.parent));
      await mkdirIfMissing(fs, join(mount, this.#support.parent, this.#node));
      await fs.mkdir(dir);
      created.push(dir);
      return dir;
    };
    const files: GroupFiles = { oomEvents: null, memoryCurrent: null, cpuUsage: null, pidsCurrent: null, kill: null };
    try {
      if (limits.memoryBytes !== null) {
        const dir = await make(mountOf(this.#support.controllers.memory));
        const bytes = String(limits.memoryBytes);
        await writeValue(fs, join(dir, 'memory.limit_in_bytes'), bytes);
        // Memory+swap at the same figure, so swapping cannot dodge the limit (present with swap accounting).
        const memsw = join(dir, 'memory.memsw.limit_in_bytes');
        if (await fs.exists(memsw)) await writeValue(fs, memsw, bytes);
        // Best effort: without memsw accounting this still keeps the group's pages out of swap; the limit stands without it.
        await fs.write(join(dir, 'memory.swappiness'), '0').catch(() => undefined);
        files.oomEvents = join(dir, 'memory.oom_control');
        files.memoryCurrent = join(dir, 'memory.usage_in_bytes');
      }
      if (limits.cpu !== null) {
        const dir = await make(mountOf(this.#support.controllers.cpu));
        const { quotaUs, periodUs } = cpuBandwidth(limits.cpu);
        await writeValue(fs, join(dir, 'cpu.cfs_period_us'), String(periodUs));
        await writeValue(fs, join(dir, 'cpu.cfs_quota_us'), String(quotaUs));
        // CPU time is counted by cpuacct: co-mounted with cpu (`cpu,cpuacct`), or a hierarchy of its own to join as well.
        const acct = this.#support.cpuacct;
        if (acct?.available === true) {
          const acctDir = await make(acct.dir);
          files.cpuUsage = { file: join(acctDir, 'cpuacct.usage'), key: null, nsPerUnit: 1 };
        }
      }
      if (limits.pids !== null) {
        const dir = await make(mountOf(this.#support.controllers.pids));
        await writeValue(fs, join(dir, 'pids.max'), String(limits.pids));
        files.pidsCurrent = join(dir, 'pids.current');
      }
    } catch (err) {
      await removeGroups(fs, created).catch(() => undefined);
      throw err instanceof BerthError ? err : new BerthError(CGROUP_ERROR, `instance ${name}: cannot create its cgroup: ${reasonOf(err)}`, { cause: err });
    }
    return new KernelGroup(fs, created, files);
  }

  async sweep(): Promise<number> {
    return sweepNodeDirs(this.#fs, this.#nodeDirs());
  }

  async close(): Promise<void> {
    await this.sweep();
    for (const dir of this.#nodeDirs()) await this.#fs.rmdir(dir).catch(() => undefined);
  }

  /** `<mount>/<parent>/<node>` in every usable hierarchy, each once (a co-mount is one hierarchy). */
  #nodeDirs(): string[] {
    const s = this.#support;
    const mounts = [s.controllers.memory, s.controllers.cpu, s.controllers.pids, s.cpuacct].flatMap((c) => (c?.available === true ? [c.dir] : []));
    return [...new Set(mounts)].map((m) => join(m, s.parent, this.#node));
  }
}

class CgroupV2Driver implements CgroupDriver {
  readonly #support: CgroupSupport;
  readonly #node: string;
  readonly #fs: CgroupFs;
  #nodeReady: Promise<void> | undefined;

  constructor(support: CgroupSupport, node: string, fs: CgroupFs) {
    this.#support = support;
    this.#node = node;
    this.#fs = fs;
  }

  get #nodeDir(): string {
    return join(this.#support.root, this.#support.parent, this.#node);
  }

  async create(name: string, limits: ResourcesSpec): Promise<InstanceCgroup> {
    safeSegment(name, 'instance name');
    checkLimits(limits);
    const problems = unsupportedLimits(this.#support, limits);
    if (problems.length > 0) throw new BerthError(CGROUP_ERROR, `instance ${name}: ${problems.join('; ')}`);
    const fs = this.#fs;
    const dir = join(this.#nodeDir, name);
    await removeGroups(fs, [dir]);
    if (neededControllers(limits).length === 0) return new KernelGroup(fs, [], { oomEvents: null, memoryCurrent: null, cpuUsage: null, pidsCurrent: null, kill: null });
    const created: string[] = [];
    try {
      await this.#ensureNode();
      await fs.mkdir(dir);
      created.push(dir);
      if (limits.memoryBytes !== null) {
        await writeValue(fs, join(dir, 'memory.max'), String(limits.memoryBytes));
        // Present with swap accounting: no swap at all, so swapping cannot dodge memory.max.
        const swap = join(dir, 'memory.swap.max');
        if (await fs.exists(swap)) await writeValue(fs, swap, '0');
      }
      if (limits.cpu !== null) {
        const { quotaUs, periodUs } = cpuBandwidth(limits.cpu);
        await writeValue(fs, join(dir, 'cpu.max'), `${quotaUs} ${periodUs}`);
      }
      if (limits.pids !== null) await writeValue(fs, join(dir, 'pids.max'), String(limits.pids));
    } catch (err) {
      await removeGroups(fs, created).catch(() => undefined);
      throw err instanceof BerthError ? err : new BerthError(CGROUP_ERROR, `instance ${name}: cannot create its cgroup: ${reasonOf(err)}`, { cause: err });
    }
    const available = (c: CgroupController): boolean => this.#support.controllers[c].available;
    // Every controller available is enabled for the node's groups, so their counters read even where no limit is set.
    return new KernelGroup(fs, created, {
      oomEvents: available('memory') ? join(dir, 'memory.events') : null,
      memoryCurrent: available('memory') ? join(dir, 'memory.current') : null,
      cpuUsage: { file: join(dir, 'cpu.stat'), key: 'usage_usec', nsPerUnit: 1000 },
      pidsCurrent: available('pids') ? join(dir, 'pids.current') : null,
      kill: join(dir, 'cgroup.kill'),
    });
  }

  async sweep(): Promise<number> {
    return sweepNodeDirs(this.#fs, [this.#nodeDir]);
  }

  async close(): Promise<void> {
    await this.sweep();
    await this.#fs.rmdir(this.#nodeDir).catch(() => undefined);
    this.#nodeReady = undefined;
  }

  /** `<root>/<parent>/<node>`, passing every available controller on to the instances' groups. */
  #ensureNode(): Promise<void> {
    this.#nodeReady ??= (async () => {
      const s = this.#support;
      const controllers = CGROUP_CONTROLLERS.filter((c) => s.controllers[c].available);
      await mkdirIfMissing(this.#fs, join(s.root, s.parent));
      await mkdirIfMissing(this.#fs, this.#nodeDir);
      for (const dir of [join(s.root, s.parent), this.#nodeDir]) {
        const refused = await enableControllers(this.#fs, dir, controllers);
        const first = [...refused][0];
        if (first !== undefined) throw new BerthError(CGROUP_ERROR, `the ${first[0]} controller cannot be enabled in ${first[1]}`);
      }
    })().catch((err: unknown) => {
      this.#nodeReady = undefined;
      throw err;
    });
    return this.#nodeReady;
  }
}

/** Where a group's counters are; null: not kept for this group. */
interface GroupFiles {
  /** A file with an `oom_kill N` line. */
  oomEvents: string | null;
  memoryCurrent: string | null;
  /** The file, the key of its line (null: the whole file is the number), and ns per unit. */
  cpuUsage: { file: string; key: string | null; nsPerUnit: number } | null;
  pidsCurrent: string | null;
  /** v2 cgroup.kill (kernel ≥ 5.14): the kernel kills the whole group at once. */
  kill: string | null;
}

class KernelGroup implements InstanceCgroup {
  readonly procsFiles: readonly string[];
  readonly #fs: CgroupFs;
  readonly #dirs: readonly string[];
  readonly #files: GroupFiles;
  #oomKills = 0;
  #released: Promise<void> | undefined;

  constructor(fs: CgroupFs, dirs: readonly string[], files: GroupFiles) {
    this.#fs = fs;
    this.#dirs = Object.freeze([...dirs]);
    this.#files = files;
    this.procsFiles = Object.freeze(dirs.map((d) => join(d, 'cgroup.procs')));
  }

  async oomKills(): Promise<number> {
    if (this.#files.oomEvents === null) return 0;
    const n = await readKey(this.#fs, this.#files.oomEvents, 'oom_kill');
    if (n !== null) this.#oomKills = n;
    return this.#oomKills;
  }

  memoryBytes(): Promise<number | null> {
    return this.#files.memoryCurrent === null ? Promise.resolve(null) : readNumber(this.#fs, this.#files.memoryCurrent);
  }

  async cpuUsageNs(): Promise<number | null> {
    const usage = this.#files.cpuUsage;
    if (usage === null) return null;
    const n = usage.key === null ? await readNumber(this.#fs, usage.file) : await readKey(this.#fs, usage.file, usage.key);
    return n === null ? null : n * usage.nsPerUnit;
  }

  pids(): Promise<number | null> {
    return this.#files.pidsCurrent === null ? Promise.resolve(null) : readNumber(this.#fs, this.#files.pidsCurrent);
  }

  release(): Promise<void> {
    this.#released ??= (async () => {
      await this.oomKills();
      // cgroup.kill (v2, kernel ≥ 5.14) kills the group at once; the SIGKILL loop below catches anything it misses either way.
      if (this.#files.kill !== null && (await this.#fs.exists(this.#files.kill))) await this.#fs.write(this.#files.kill, '1').catch(() => undefined);
      await removeGroups(this.#fs, this.#dirs);
    })().catch((err: unknown) => {
      // Not released after all: a later call tries again.
      this.#released = undefined;
      throw err;
    });
    return this.#released;
  }
}

// ---------------------------------------------------------------- emptying and removing groups

/**
 * SIGKILLs every process in the groups and their descendants until none is
 * left (bounded), then removes them, deepest first. Missing groups are fine.
 * A pid read from cgroup.procs could in theory exit and be reused before the
 * kill reaches it; v2's cgroup.kill, tried first by release(), has no such window.
 */
async function removeGroups(fs: CgroupFs, dirs: readonly string[]): Promise<void> {
  const tree = (await Promise.all(dirs.map((d) => walk(fs, d)))).flat();
  if (tree.length === 0) return;
  for (let i = 0; ; i++) {
    const pids = await procsOf(fs, tree);
    if (pids.length === 0) break;
    if (i === RELEASE_POLLS) {
      throw new BerthError(CGROUP_ERROR, `processes ${pids.join(', ')} are still in ${tree.join(', ')} ${(RELEASE_POLLS * RELEASE_POLL_MS) / 1000}s after SIGKILL (uninterruptible sleep?)`);
    }
    for (const pid of pids) {
      // Never Berth itself, whatever a group's file says.
      if (pid === process.pid) continue;
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // ESRCH: it left between the read and the kill.
      }
    }
    await sleep(RELEASE_POLL_MS);
  }
  for (const dir of tree) {
    for (let i = 0; ; i++) {
      try {
        await fs.rmdir(dir);
        break;
      } catch (err) {
        const code = errorCode(err);
        if (code === 'ENOENT') break;
        // EBUSY a moment after the last member left: the kernel is still tearing the group down.
        if (code !== 'EBUSY' || i === RELEASE_POLLS) throw new BerthError(CGROUP_ERROR, `cannot remove cgroup ${dir}: ${reasonOf(err)}`, { cause: err });
        await sleep(RELEASE_POLL_MS);
      }
    }
  }
}

async function sweepNodeDirs(fs: CgroupFs, nodeDirs: readonly string[]): Promise<number> {
  const names = new Set<string>();
  const groups: string[] = [];
  for (const nodeDir of nodeDirs) {
    for (const name of await subdirsIfPresent(fs, nodeDir)) {
      names.add(name);
      groups.push(join(nodeDir, name));
    }
  }
  await removeGroups(fs, groups);
  return names.size;
}

/** The group and its descendants, children before parents. */
async function walk(fs: CgroupFs, dir: string): Promise<string[]> {
  if (!(await fs.exists(dir))) return [];
  const children = await subdirsIfPresent(fs, dir);
  const below = await Promise.all(children.map((c) => walk(fs, join(dir, c))));
  return [...below.flat(), dir];
}

async function procsOf(fs: CgroupFs, dirs: readonly string[]): Promise<number[]> {
  const pids = new Set<number>();
  for (const dir of dirs) {
    let text: string;
    try {
      text = await fs.read(join(dir, 'cgroup.procs'));
    } catch (err) {
      if (errorCode(err) === 'ENOENT') continue;
      throw err;
    }
    for (const line of text.split('\n')) {
      const pid = Number(line);
      if (line !== '' && Number.isSafeInteger(pid) && pid > 0) pids.add(pid);
    }
  }
  return [...pids];
}

// ---------------------------------------------------------------- small helpers

function safeSegment(value: string, what: string): string {
  if (!SEGMENT.test(value)) {
    throw new BerthError(CGROUP_ERROR, `${what} ${JSON.stringify(value)} cannot name a cgroup: it must be one path segment of letters, digits, ".", "_", "+" and "-", starting with a letter or digit`);
  }
  return value;
}

function mountOf(support: ControllerSupport): string {
  // unsupportedLimits() has been checked before any use.
  if (!support.available) throw new BerthError('BERTH_ERR_INTERNAL', `cgroup controller used while unavailable: ${support.message}`);
  return support.dir;
}

async function mkdirIfMissing(fs: CgroupFs, dir: string): Promise<void> {
  try {
    await fs.mkdir(dir);
  } catch (err) {
    if (errorCode(err) !== 'EEXIST') throw err;
  }
}

async function removeIfPresent(fs: CgroupFs, dir: string): Promise<void> {
  try {
    await fs.rmdir(dir);
  } catch (err) {
    if (errorCode(err) !== 'ENOENT') throw err;
  }
}

async function subdirsIfPresent(fs: CgroupFs, dir: string): Promise<string[]> {
  try {
    return await fs.subdirs(dir);
  } catch (err) {
    if (errorCode(err) === 'ENOENT') return [];
    throw err;
  }
}

async function writeValue(fs: CgroupFs, file: string, value: string): Promise<void> {
  try {
    await fs.write(file, value);
  } catch (err) {
    throw new BerthError(CGROUP_ERROR, `cannot write ${JSON.stringify(value)} to ${file}: ${reasonOf(err)}`, { cause: err });
  }
}

/** A file holding one number; null when missing (released) or `max`. */
async function readNumber(fs: CgroupFs, file: string): Promise<number | null> {
  const text = await readIfPresent(fs, file);
  if (text === null) return null;
  const n = Number(text.trim());
  return Number.isFinite(n) ? n : null;
}

/** The number on the `key N` line of a flat-keyed file (memory.events, memory.oom_control, cpu.stat). */
async function readKey(fs: CgroupFs, file: string, key: string): Promise<number | null> {
  const text = await readIfPresent(fs, file);
  if (text === null) return null;
  for (const line of text.split('\n')) {
    const [k, v] = line.trim().split(/\s+/);
    if (k === key && v !== undefined) {
      const n = Number(v);
      return Number.isFinite(n) ? n : null;
    }
  }
  return null;
}

async function readIfPresent(fs: CgroupFs, file: string): Promise<string | null> {
  try {
    return await fs.read(file);
  } catch (err) {
    if (errorCode(err) === 'ENOENT' || errorCode(err) === 'ENODEV') return null;
    throw err;
  }
}

function words(text: string): Set<string> {
  return new Set(text.split(/\s+/).filter((w) => w !== ''));
}

function errorCode(err: unknown): string {
  return (err as NodeJS.ErrnoException | undefined)?.code ?? 'unknown error';
}

function reasonOf(err: unknown): string {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return code ?? (err instanceof Error ? err.message : String(err));
}
