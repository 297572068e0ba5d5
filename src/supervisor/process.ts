import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import type { CommandSpec } from '../manifest/types.js';
import { BerthError } from '../errors.js';
import { splitLines } from './line-splitter.js';

/** After SIGKILL, members leave within milliseconds; poll for at most 2 s. */
const GROUP_EXIT_POLL_MS = 10;
const GROUP_EXIT_POLLS = 200;

export interface ExitStatus {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface SpawnOptions {
  command: CommandSpec;
  cwd: string;
  env: Record<string, string>;
  onLine(stream: 'stdout' | 'stderr', line: string): void;
}

/**
 * One running instance process, leader of its own process group: every signal
 * goes to the whole group, so `sh -c` wrappers and workers forked by the
 * service are stopped with it.
 */
export class InstanceProcess {
  readonly pid: number;
  readonly exited: Promise<ExitStatus>;
  #exit: ExitStatus | undefined;

  private constructor(child: ChildProcess, pid: number) {
    this.pid = pid;
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        this.#exit = { code, signal };
        resolve(this.#exit);
      });
    });
  }

  /** Spawns the process; rejects with BERTH_ERR_SPAWN when it cannot start at all. */
  static async spawn(options: SpawnOptions): Promise<InstanceProcess> {
    const child = spawn(options.command.file, options.command.args, {
      cwd: options.cwd,
      env: options.env,
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    try {
      await once(child, 'spawn');
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      throw new BerthError('BERTH_ERR_SPAWN', `cannot start "${options.command.line}" in ${options.cwd}: ${e.code ?? e.message}`, { cause: err });
    }
    if (child.stdout) splitLines(child.stdout, (line) => options.onLine('stdout', line));
    if (child.stderr) splitLines(child.stderr, (line) => options.onLine('stderr', line));
    return new InstanceProcess(child, child.pid as number);
  }

  get exitStatus(): ExitStatus | undefined {
    return this.#exit;
  }

  /** Signals the whole process group (0 only probes it); false when the group is already gone. */
  signal(signal: NodeJS.Signals | 0): boolean {
    try {
      process.kill(-this.pid, signal);
      return true;
    } catch {
      return false;
    }
  }

  /**
   * Stop signal to the group, then SIGKILL after `timeoutMs`. Resolves with the
   * leader's exit once the group has been killed (leftover members included).
   */
  async stop(signal: NodeJS.Signals, timeoutMs: number): Promise<ExitStatus> {
    if (this.#exit) return this.killGroup();
    this.signal(signal);
    let timer: NodeJS.Timeout | undefined;
    const killed = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), timeoutMs);
    });
    const first = await Promise.race([this.exited, killed]);
    clearTimeout(timer);
    const exit = first === 'timeout' ? await this.killGroup() : (await this.killGroup(), first);
    return exit;
  }

  /**
   * Whether the leader left by itself or not, no member of its group may
   * outlive it: SIGKILL the group and wait (bounded) until the kernel has
   * removed every member, so "stopped" means the whole tree is gone.
   */
  async killGroup(): Promise<ExitStatus> {
    this.signal('SIGKILL');
    const exit = await this.exited;
    for (let i = 0; i < GROUP_EXIT_POLLS && this.signal(0); i++) {
      await new Promise((resolve) => setTimeout(resolve, GROUP_EXIT_POLL_MS));
    }
    return exit;
  }
}
