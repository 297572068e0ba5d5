/**
 * What each instance uses of the machine, read from /proc (Linux) once per
 * interval for every instance at once: CPU, resident memory, open file
 * descriptors, threads and processes. The admin API, `/metrics` and
 * `berth status` read the latest snapshot; nothing is read per request.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { setImmediate as nextTurn } from 'node:timers/promises';
import type { Clock, Timer } from '../../clock.js';
import type { ResourcesSpec } from '../../manifest/types.js';

/** One instance's usage at one moment, summed over every process of the instance. */
export interface Usage {
  /** When it was sampled (ISO 8601). */
  at: string;
  /**
   * CPU time used over the last interval per wall time, in percent of one
   * core: 150 is one and a half cores busy. null on the first sample, which
   * has nothing to compare with.
   */
  cpuPercent: number | null;
  /** CPU seconds used by its processes, and by the children they reaped, since they started; only grows. */
  cpuSeconds: number;
  /** Resident memory of its processes, summed (pages shared between them count once per process). */
  rssBytes: number;
  /** File descriptors open in its processes; null when Berth may not look (an instance run as another user). */
  openFds: number | null;
  threads: number;
  processes: number;
}

/** What the admin API and `/metrics` read: the latest usage and the limits in force, per instance id. */
export interface UsageSource {
  usage(id: string): Usage | undefined;
  limits(id: string): ResourcesSpec | undefined;
}

export interface TrackOptions {
  /**
   * The instance's cgroup directory (`/sys/fs/cgroup/…`): its members are
   * then read from `cgroup.procs`, which `setsid` and double forks do not
   * leave. Without it, they are the processes of the group `pid` leads.
   */
  cgroup?: string;
  /** The limits the instance runs under, answered by `limits(id)`. */
  limits?: ResourcesSpec;
}

export interface UsageSamplerOptions {
  clock: Clock;
  /** Between two passes; default 5 s. */
  intervalMs?: number;
  /** Where procfs is mounted; default `/proc`. */
  procRoot?: string;
  /** Told of a pass that failed as a whole (procfs unreadable); a vanished process is not a failure. */
  onError?: (err: unknown) => void;
}

export const DEFAULT_USAGE_INTERVAL_MS = 5_000;

/**
 * /proc/<pid>/stat counts CPU time in clock ticks of USER_HZ, which the kernel
 * fixes at 100 on every architecture Node runs on Linux (x64, arm, arm64,
 * ppc64le, s390x): assumed rather than asked of `getconf CLK_TCK` at start.
 * Memory needs no page size: it is read in kB from /proc/<pid>/status (VmRSS).
 */
const TICKS_PER_SECOND = 100;

/**
 * procfs (and cgroupfs) files read between two turns of the event loop. They
 * are read synchronously: both answer from the kernel's memory, never from a
 * disk, in ~20 µs a file, where a read through libuv's thread pool is five
 * round trips (open, stat, read, read, close) and a pass cost 3-4 × the CPU
 * (bench/usage). A batch holds the loop ~0.7 ms; a scan of a host with
 * thousands of processes is spread over as many turns.
 */
const READS_PER_TURN = 32;

/** The fields of /proc/<pid>/stat a pass uses. */
export interface ProcStat {
  pid: number;
  ppid: number;
  pgrp: number;
  /** Its own CPU ticks (user + system) plus those of the children it has reaped. */
  ticks: number;
  threads: number;
  /** Ticks after boot at which it started: with the pid, identifies the process across passes (pids are reused). */
  start: number;
}

interface Tracked {
  pid: number;
  cgroup: string | undefined;
  limits: ResourcesSpec | undefined;
  /** The previous pass' processes by `pid:start`: their ticks, and their parent. */
  previous: Map<string, { ticks: number; ppid: number }> | undefined;
  previousAt: number;
  cpuSeconds: number;
}

/**
 * Samples every tracked instance each `intervalMs` on the injected clock.
 *
 * CPU is the delta of the instance's CPU time between two passes over the
 * wall time between them. A process' time is its own (`utime + stime`) plus
 * what the kernel adds to it as it reaps each child (`cutime + cstime`), so a
 * worker that lived and died between two passes is still counted, in its
 * parent's time. When a process seen last pass is gone and its parent is a
 * member, the parent's child time has just absorbed that process' whole
 * time: what was already counted of it is taken off, so nothing counts twice.
 *
 * Cost: one pass per interval whatever the number of instances or readers.
 * Instances tracked by process group share one scan of every
 * /proc/<pid>/stat on the host (a process group has no list of its own);
 * those given a cgroup read its `cgroup.procs` instead. Then `status` and
 * the `fd` directory of each member. Readers only get the last snapshot.
 */
export class UsageSampler implements UsageSource {
  readonly #clock: Clock;
  readonly #intervalMs: number;
  readonly #proc: string;
  readonly #onError: (err: unknown) => void;
  readonly #tracked = new Map<string, Tracked>();
  readonly #snapshots = new Map<string, Usage>();
  #timer: Timer | undefined;
  #running = false;
  #pass: Promise<void> | undefined;

  constructor(options: UsageSamplerOptions) {
    this.#clock = options.clock;
    this.#intervalMs = options.intervalMs ?? DEFAULT_USAGE_INTERVAL_MS;
    this.#proc = options.procRoot ?? '/proc';
    this.#onError = options.onError ?? (() => {});
  }

  /** Samples `id` from the next pass on; tracking it again (a restarted process) starts its CPU over. */
  track(id: string, pid: number, options: TrackOptions = {}): void {
    this.#tracked.set(id, { pid, cgroup: options.cgroup, limits: options.limits, previous: undefined, previousAt: 0, cpuSeconds: 0 });
    this.#snapshots.delete(id);
  }

  /** Forgets `id` and its snapshot. */
  untrack(id: string): void {
    this.#tracked.delete(id);
    this.#snapshots.delete(id);
  }

  /** The latest usage of `id`; undefined when untracked or not sampled yet. */
  snapshot(id: string): Usage | undefined {
    return this.#snapshots.get(id);
  }

  /** Every latest usage, by instance id. */
  all(): ReadonlyMap<string, Usage> {
    return this.#snapshots;
  }

  usage(id: string): Usage | undefined {
    return this.#snapshots.get(id);
  }

  limits(id: string): ResourcesSpec | undefined {
    return this.#tracked.get(id)?.limits;
  }

  /** Samples every interval until `stop()`; the next pass is timed from the end of the last, so passes never overlap. */
  start(): void {
    if (this.#running) return;
    this.#running = true;
    if (this.#pass === undefined) this.#schedule();
  }

  stop(): void {
    this.#running = false;
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  /**
   * One pass over every tracked instance now; while one is already under way,
   * that one. Never rejects: a pass that fails goes to `onError`. The next
   * timed pass is scheduled before the returned promise settles.
   */
  sample(): Promise<void> {
    this.#pass ??= this.#sampleAll()
      .catch((err: unknown) => this.#onError(err))
      .finally(() => {
        this.#pass = undefined;
        if (this.#running && this.#timer === undefined) this.#schedule();
      });
    return this.#pass;
  }

  #schedule(): void {
    this.#timer = this.#clock.setTimeout(() => {
      this.#timer = undefined;
      void this.sample();
    }, this.#intervalMs);
  }

  async #sampleAll(): Promise<void> {
    if (this.#tracked.size === 0) return;
    const now = this.#clock.now();
    const entries = [...this.#tracked];
    const turns = new Turns();
    const leaders = new Set(entries.filter(([, t]) => t.cgroup === undefined).map(([, t]) => t.pid));
    const byGroup = leaders.size > 0 ? await this.#scanGroups(leaders, turns) : new Map<number, ProcStat[]>();
    for (const [id, tracked] of entries) {
      let usage: Usage | undefined;
      try {
        const members = tracked.cgroup === undefined ? (byGroup.get(tracked.pid) ?? []) : await this.#cgroupMembers(tracked.cgroup, turns);
        usage = await this.#measure(tracked, members, now, turns);
      } catch (err) {
        // One instance's unreadable cgroup does not stop the others being sampled.
        this.#onError(err);
        usage = undefined;
      }
      // Untracked (or tracked anew) while this pass read /proc: its answer is no longer wanted.
      if (this.#tracked.get(id) !== tracked) continue;
      if (usage === undefined) this.#snapshots.delete(id);
      else this.#snapshots.set(id, usage);
    }
  }

  /** One read of every /proc/<pid>/stat: the processes of each wanted process group. */
  async #scanGroups(leaders: ReadonlySet<number>, turns: Turns): Promise<Map<number, ProcStat[]>> {
    const groups = new Map<number, ProcStat[]>();
    const pids = readdirSync(this.#proc)
      .filter((name) => /^\d+$/.test(name))
      .map(Number);
    for (const stat of await turns.map(pids, 1, (pid) => this.#stat(pid))) {
      if (stat === undefined || !leaders.has(stat.pgrp)) continue;
      const members = groups.get(stat.pgrp);
      if (members === undefined) groups.set(stat.pgrp, [stat]);
      else members.push(stat);
    }
    return groups;
  }

  async #cgroupMembers(dir: string, turns: Turns): Promise<ProcStat[]> {
    const text = readOrUndefined(`${dir}/cgroup.procs`);
    if (text === undefined) return [];
    const pids = text
      .split('\n')
      .filter((line) => line !== '')
      .map(Number);
    return (await turns.map(pids, 1, (pid) => this.#stat(pid))).filter((s) => s !== undefined);
  }

  /** Usage of one instance from its members' stat; undefined when none is left. */
  async #measure(tracked: Tracked, members: readonly ProcStat[], now: number, turns: Turns): Promise<Usage | undefined> {
    if (members.length === 0) return undefined;
    const details = await turns.map(members, 2, (m) => [this.#rssBytes(m.pid), this.#openFds(m.pid)] as const);
    let rssBytes = 0;
    let openFds: number | null = 0;
    let threads = 0;
    for (let i = 0; i < members.length; i++) {
      const [rss, fds] = details[i]!;
      rssBytes += rss;
      openFds = fds === null || openFds === null ? null : openFds + fds;
      threads += members[i]!.threads;
    }

    const current = new Map(members.map((m) => [`${m.pid}:${m.start}`, { ticks: m.ticks, ppid: m.ppid }]));
    let cpuPercent: number | null = null;
    if (tracked.previous === undefined) {
      // The first sample: what the processes have used since they started.
      for (const m of members) tracked.cpuSeconds += m.ticks / TICKS_PER_SECOND;
    } else {
      const pids = new Set(members.map((m) => m.pid));
      let ticks = 0;
      for (const [key, member] of current) ticks += member.ticks - (tracked.previous.get(key)?.ticks ?? 0);
      for (const [key, before] of tracked.previous) {
        if (!current.has(key) && pids.has(before.ppid)) ticks -= before.ticks;
      }
      // Below zero only when a process left without a member reaping it (orphaned, or moved to another group).
      const seconds = Math.max(0, ticks) / TICKS_PER_SECOND;
      tracked.cpuSeconds += seconds;
      const wallSeconds = (now - tracked.previousAt) / 1000;
      cpuPercent = wallSeconds > 0 ? (seconds / wallSeconds) * 100 : null;
    }
    tracked.previous = current;
    tracked.previousAt = now;
    return { at: new Date(now).toISOString(), cpuPercent, cpuSeconds: tracked.cpuSeconds, rssBytes, openFds, threads, processes: members.length };
  }

  #stat(pid: number): ProcStat | undefined {
    const text = readOrUndefined(`${this.#proc}/${pid}/stat`);
    return text === undefined ? undefined : parseStat(pid, text);
  }

  /** VmRSS, in kB in the file; 0 for a zombie, which has no memory left (and no such line). */
  #rssBytes(pid: number): number {
    const text = readOrUndefined(`${this.#proc}/${pid}/status`);
    const kb = text === undefined ? undefined : /^VmRSS:\s+(\d+) kB$/m.exec(text)?.[1];
    return kb === undefined ? 0 : Number(kb) * 1024;
  }

  /** Entries of /proc/<pid>/fd: 0 when the process is gone, null when Berth may not read them. */
  #openFds(pid: number): number | null {
    try {
      return readdirSync(`${this.#proc}/${pid}/fd`).length;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EACCES' || code === 'EPERM') return null;
      if (code === 'ENOENT' || code === 'ESRCH') return 0;
      throw err;
    }
  }
}

/**
 * The fields of /proc/<pid>/stat (proc(5)). The command name, field 2, is in
 * parentheses and may itself hold spaces and parentheses: fields are counted
 * from the last `)`.
 */
export function parseStat(pid: number, text: string): ProcStat | undefined {
  const end = text.lastIndexOf(')');
  if (end === -1) return undefined;
  // From field 3 (state) on: index i is field i + 3.
  const f = text.slice(end + 2).split(' ');
  const field = (n: number): number => Number(f[n - 3]);
  const stat = {
    pid,
    ppid: field(4),
    pgrp: field(5),
    ticks: field(14) + field(15) + field(16) + field(17),
    threads: field(20),
    start: field(22),
  };
  return Object.values(stat).every(Number.isFinite) ? stat : undefined;
}

/** A file's text; undefined when it (or its process, or its cgroup) is gone. Other errors are real ones. */
function readOrUndefined(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ESRCH') return undefined;
    throw err;
  }
}

/** The procfs reads of one pass, and a turn of the event loop after every READS_PER_TURN of them. */
class Turns {
  #reads = 0;

  /** `read` of every item in order, each item costing `reads` reads. */
  async map<T, R>(items: readonly T[], reads: number, read: (item: T) => R): Promise<R[]> {
    const out: R[] = [];
    for (const item of items) {
      if (this.#reads >= READS_PER_TURN) {
        this.#reads = 0;
        await nextTurn();
      }
      this.#reads += reads;
      out.push(read(item));
    }
    return out;
  }
}
