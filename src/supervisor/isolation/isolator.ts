/**
 * What the supervisor asks of isolation (docs/isolation.md): before an
 * instance starts, its cgroup with the limits the machine can enforce, its
 * user, its sandbox and the command line that puts it in all three; after it
 * exits, whether the kernel OOM-killed it, and its cgroup emptied and removed.
 *
 * Two implementations of the limits sit behind it: cgroups (v1 or v2,
 * detected) where the machine has them, and the plain process (rlimits only)
 * where it has not. A limit the machine cannot enforce is said once, when the
 * node starts (`problems`), and the instance runs without it; a user or a
 * sandbox that cannot be had refuses the instance instead (running a service
 * that asked to be unprivileged as root would be worse than not running it).
 */
import { createHash } from 'node:crypto';
import { dirname, join } from 'node:path';
import { BerthError } from '../../errors.js';
import type { CommandSpec, ResourcesSpec, VersionSpec } from '../../manifest/types.js';
import { cgroupDriver, detectCgroups, neededControllers, unsupportedLimits, type CgroupDriver, type CgroupSupport, type InstanceCgroup } from './cgroups.js';
import { isolationSupport, launchCommand, prepareServiceDir, resolveUser, type IsolationSupport } from './launch.js';

/** One instance, ready to spawn. */
export interface PreparedInstance {
  /** What to spawn: the service's command inside the launcher chain (or the command itself when nothing isolates it). */
  command: CommandSpec;
  /** The instance's cgroup directory (for usage sampling), or undefined without one. */
  cgroupDir: string | undefined;
  /** The limits actually in force (those the machine cannot enforce are null). */
  limits: ResourcesSpec;
  /** OOM kills in the instance's cgroup so far (0 without a memory limit). */
  oomKills(): Promise<number>;
  /** Kills whatever is left of the instance and removes its cgroup. Idempotent. */
  release(): Promise<void>;
}

export interface IsolatorOptions {
  nodeName: string;
  /** Berth's data dir: hidden from sandboxed instances; services' own dirs live under `services/`. */
  dataDir: string;
  /** Detection results (tests pass their own). */
  cgroups?: CgroupSupport | null;
  support?: IsolationSupport;
}

export class Isolator {
  readonly #options: IsolatorOptions;
  readonly #cgroups: CgroupSupport | null;
  readonly #driver: CgroupDriver | null;
  /** Probed on first need (it runs setpriv and bwrap): a node with no user and no sandbox never pays for it. */
  #support: Promise<IsolationSupport> | undefined;

  private constructor(options: IsolatorOptions, cgroups: CgroupSupport | null, support: IsolationSupport | undefined) {
    this.#options = options;
    this.#cgroups = cgroups;
    // The data dir is in the name: two nodes on one machine under the same name (a test run, a staging copy) must not sweep each other's groups.
    const owner = `${options.nodeName}-${createHash('sha256').update(options.dataDir).digest('hex').slice(0, 8)}`;
    this.#driver = cgroups ? cgroupDriver(cgroups, owner) : null;
    this.#support = support && Promise.resolve(support);
  }

  /** Detects what this machine can enforce, and empties the cgroups a previous run of this node left. */
  static async open(options: IsolatorOptions): Promise<Isolator> {
    const cgroups = options.cgroups !== undefined ? options.cgroups : process.platform === 'linux' ? await detectCgroups() : null;
    const isolator = new Isolator(options, cgroups, options.support);
    await isolator.#driver?.sweep();
    return isolator;
  }

  /** The cgroups this machine offers, for the start-up line. */
  get cgroups(): string {
    const c = this.#cgroups;
    const controllers = c ? Object.entries(c.controllers).map(([name, s]) => `${name} ${s.available ? 'yes' : `no (${s.message})`}`) : [];
    return c ? `v${c.version}: ${controllers.join(', ')}` : 'none';
  }

  /**
   * Every setting of these versions this machine cannot honour, one line
   * each, with what Berth does instead: for `berth up` to say before anything
   * starts.
   */
  async problems(versions: readonly VersionSpec[]): Promise<string[]> {
    const out: string[] = [];
    for (const v of versions) {
      const iso = v.isolation;
      for (const limit of unsupportedLimits(this.#cgroups, iso.resources)) out.push(`${v.key}: ${limit}; it runs without that limit`);
      if (iso.user === null && iso.sandbox === null) continue;
      const support = await this.#probe();
      if (iso.user !== null && support.user !== true) out.push(`${v.key}: cannot run as another user (${support.user}); its instances are not started`);
      if (iso.sandbox !== null && support.sandbox !== true) out.push(`${v.key}: no filesystem sandbox (${support.sandbox}); its instances are not started`);
    }
    return out;
  }

  /** Removes every cgroup of this node, its own included: call once every instance has stopped. */
  async close(): Promise<void> {
    await this.#driver?.close();
  }

  #probe(): Promise<IsolationSupport> {
    this.#support ??= isolationSupport();
    return this.#support;
  }

  /** The cgroup, user, service dir and command line of one start of an instance. Rejects with BERTH_ERR_ISOLATION when the instance must not start. */
  async prepare(instanceId: string, spec: VersionSpec): Promise<PreparedInstance> {
    const iso = spec.isolation;
    if (iso.user !== null || iso.sandbox !== null) {
      const support = await this.#probe();
      if (iso.user !== null && support.user !== true) throw new BerthError('BERTH_ERR_ISOLATION', `cannot run ${spec.key} as another user: ${support.user}`);
      if (iso.sandbox !== null && support.sandbox !== true) throw new BerthError('BERTH_ERR_ISOLATION', `cannot sandbox ${spec.key}: ${support.sandbox}`);
    }
    const user = iso.user === null ? null : await resolveUser(iso.user);
    const limits = this.#enforceable(iso.resources);
    const cgroup: InstanceCgroup | null = this.#driver && neededControllers(limits).length > 0 ? await this.#driver.create(instanceId, limits) : null;
    try {
      let sandbox = null;
      if (iso.sandbox !== null) {
        const serviceDir = join(this.#options.dataDir, 'services', spec.group, spec.service);
        await prepareServiceDir(serviceDir, user);
        sandbox = { dataDir: this.#options.dataDir, serviceDir, writable: iso.sandbox.writable, cwd: spec.cwd };
      }
      const procsFiles = cgroup?.procsFiles ?? [];
      const argv = launchCommand({ command: spec.command, procsFiles, openFiles: limits.openFiles, user, sandbox });
      const command: CommandSpec = { ...spec.command, file: argv.file, args: argv.args };
      return {
        command,
        cgroupDir: procsFiles[0] === undefined ? undefined : dirname(procsFiles[0]),
        limits,
        oomKills: () => cgroup?.oomKills() ?? Promise.resolve(0),
        release: () => cgroup?.release() ?? Promise.resolve(),
      };
    } catch (err) {
      await cgroup?.release();
      throw err;
    }
  }

  /** The limits with those the machine cannot enforce taken out (problems() said so at start). */
  #enforceable(resources: ResourcesSpec): ResourcesSpec {
    const c = this.#cgroups?.controllers;
    return {
      memoryBytes: c?.memory.available ? resources.memoryBytes : null,
      cpu: c?.cpu.available ? resources.cpu : null,
      pids: c?.pids.available ? resources.pids : null,
      openFiles: resources.openFiles,
    };
  }
}
