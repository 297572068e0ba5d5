import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface, type Interface } from 'node:readline';
import { describe, it } from 'node:test';
import { FakeClock } from '../../testing/fake-clock.js';
import { parseStat, UsageSampler } from './usage.js';

const INTERVAL_MS = 500;

/** Burns `ms` of this process' own CPU time (user + system), as the kernel counts it for getrusage. */
const BURN = `function burn(ms) {
  const start = process.cpuUsage();
  let x = 0;
  for (;;) {
    const used = process.cpuUsage(start);
    if (used.user + used.system >= ms * 1000) return (used.user + used.system) / 1e6;
    for (let i = 0; i < 1e5; i++) x += i;
  }
}`;

interface Child {
  process: ChildProcess;
  pid: number;
  /** The next line the child writes. */
  line(): Promise<string>;
  send(line: string): void;
  /** SIGKILL to its whole process group, and wait for it. */
  kill(): Promise<void>;
}

/** A node child leading its own process group, as an instance does (process.ts). */
async function child(script: string): Promise<Child> {
  const proc = spawn(process.execPath, ['-e', `${BURN}\n${script}`], { detached: true, stdio: ['pipe', 'pipe', 'inherit'] });
  const lines: Interface = createInterface({ input: proc.stdout });
  const iterator = lines[Symbol.asyncIterator]();
  const exited = once(proc, 'exit');
  const c: Child = {
    process: proc,
    pid: proc.pid!,
    line: async () => {
      const next = await iterator.next();
      assert.ok(!next.done, 'the child ended before writing a line');
      return next.value;
    },
    send: (line) => proc.stdin.write(`${line}\n`),
    kill: async () => {
      try {
        process.kill(-proc.pid!, 'SIGKILL');
      } catch {
        // Already gone.
      }
      if (proc.exitCode === null && proc.signalCode === null) await exited;
      lines.close();
    },
  };
  assert.equal(await c.line(), 'ready');
  return c;
}

async function withChildren(scripts: string[], fn: (children: Child[]) => Promise<void>): Promise<void> {
  const children: Child[] = [];
  try {
    for (const script of scripts) children.push(await child(script));
    await fn(children);
  } finally {
    await Promise.all(children.map((c) => c.kill()));
  }
}

describe('UsageSampler', () => {
  it('reports-the-cpu-a-child-burns-between-two-samples', () =>
    withChildren([`process.stdin.on('data', () => console.log(burn(300))); console.log('ready');`], async ([busy]) => {
      const clock = new FakeClock();
      const sampler = new UsageSampler({ clock, intervalMs: INTERVAL_MS });
      sampler.track('web-1', busy!.pid);
      await sampler.sample();
      const first = sampler.snapshot('web-1');
      assert.equal(first?.cpuPercent, null, 'nothing to compare the first sample with');
      assert.ok(first.cpuSeconds > 0, 'node used some CPU to start');

      busy!.send('burn');
      const burned = Number(await busy!.line());
      clock.advance(INTERVAL_MS);
      await sampler.sample();
      const second = sampler.snapshot('web-1');
      const used = second!.cpuSeconds - first.cpuSeconds;
      // /proc truncates utime and stime each to whole ticks (10 ms): at least what the child measured, less two ticks.
      assert.ok(used >= burned - 0.02, `${used} s counted, ${burned} s burned`);
      // At least 0.28 s of CPU over 0.5 s (the fake clock's wall time): at least 56 %.
      assert.ok(second!.cpuPercent! > 50, `cpuPercent ${second!.cpuPercent}`);
      assert.ok(Math.abs(second!.cpuPercent! - (used / (INTERVAL_MS / 1000)) * 100) < 1e-6);
      assert.equal(second!.at, new Date(clock.now()).toISOString());
    }));

  it('counts-a-worker-that-lived-and-died-between-two-samples', () =>
    withChildren(
      [
        `const { spawnSync } = require('node:child_process');
        process.stdin.on('data', () => {
          spawnSync(process.execPath, ['-e', ${JSON.stringify(`${BURN}\nburn(300)`)}]);
          console.log('done');
        });
        console.log('ready');`,
      ],
      async ([parent]) => {
        const clock = new FakeClock();
        const sampler = new UsageSampler({ clock, intervalMs: INTERVAL_MS });
        sampler.track('web-1', parent!.pid);
        await sampler.sample();
        const before = sampler.snapshot('web-1')!.cpuSeconds;
        parent!.send('work');
        assert.equal(await parent!.line(), 'done');
        clock.advance(INTERVAL_MS);
        await sampler.sample();
        // Never seen by a pass: its time reached the parent's when the parent reaped it
        // (at least 0.3 s less a tick for each of utime, stime, cutime and cstime).
        const used = sampler.snapshot('web-1')!.cpuSeconds - before;
        assert.ok(used >= 0.26, `${used} s`);
      },
    ));

  it('counts-a-reaped-worker-once-not-again-in-its-parent', () =>
    withChildren(
      [
        `const { spawn } = require('node:child_process');
        const worker = spawn(process.execPath, ['-e', ${JSON.stringify(`${BURN}\nburn(300); console.log('burned'); process.stdin.on('data', () => process.exit(0));`)}], { stdio: ['pipe', 'pipe', 'inherit'] });
        worker.stdout.once('data', () => console.log('burned'));
        worker.on('exit', () => console.log('reaped'));
        process.stdin.on('data', () => worker.stdin.write('exit\\n'));
        console.log('ready');`,
      ],
      async ([parent]) => {
        assert.equal(await parent!.line(), 'burned');
        const clock = new FakeClock();
        const sampler = new UsageSampler({ clock, intervalMs: INTERVAL_MS });
        sampler.track('web-1', parent!.pid);
        await sampler.sample();
        assert.equal(sampler.snapshot('web-1')?.processes, 2);
        const before = sampler.snapshot('web-1')!.cpuSeconds;
        assert.ok(before >= 0.28, `the worker's 0.3 s is counted while it runs: ${before} s`);

        parent!.send('stop the worker');
        assert.equal(await parent!.line(), 'reaped');
        clock.advance(INTERVAL_MS);
        await sampler.sample();
        const usage = sampler.snapshot('web-1')!;
        assert.equal(usage.processes, 1);
        // The worker's 0.3 s landed in the parent's child time; it was counted before it exited.
        assert.ok(usage.cpuSeconds - before < 0.15, `${usage.cpuSeconds - before} s counted for an idle interval`);
        assert.ok(usage.cpuPercent! < 30, `${usage.cpuPercent} %`);
      },
    ));

  it('sums-rss-threads-and-processes-over-the-process-group', () =>
    withChildren(
      [
        `const { spawn } = require('node:child_process');
        globalThis.held = Buffer.alloc(64 * 1024 * 1024, 1);
        const sleeper = spawn('sleep', ['60'], { stdio: 'ignore' });
        sleeper.on('spawn', () => console.log('ready'));
        process.stdin.on('data', () => console.log(process.memoryUsage().rss));`,
      ],
      async ([holder]) => {
        const sampler = new UsageSampler({ clock: new FakeClock() });
        sampler.track('web-1', holder!.pid);
        holder!.send('rss?');
        const own = Number(await holder!.line());
        await sampler.sample();
        const usage = sampler.snapshot('web-1')!;
        assert.equal(usage.processes, 2, 'node and its sleep');
        assert.ok(usage.rssBytes >= 60 * 1024 ** 2, `${usage.rssBytes} bytes`);
        // Node's own figure plus a `sleep` (well under 10 MiB).
        assert.ok(usage.rssBytes >= own && usage.rssBytes < own + 10 * 1024 ** 2, `${usage.rssBytes} against node's own ${own}`);
        // Node runs several threads (libuv, V8); sleep one.
        assert.ok(usage.threads >= 3, `${usage.threads} threads`);
      },
    ));

  it('counts-open-file-descriptors', () =>
    withChildren(
      [
        `const fs = require('node:fs'); const fds = []; for (let i = 0; i < 20; i++) fds.push(fs.openSync('/dev/null', 'r')); console.log('ready'); setInterval(() => {}, 60_000);`,
        `console.log('ready'); setInterval(() => {}, 60_000);`,
      ],
      async ([opener, plain]) => {
        const sampler = new UsageSampler({ clock: new FakeClock() });
        sampler.track('opener', opener!.pid);
        sampler.track('plain', plain!.pid);
        await sampler.sample();
        const opened = sampler.snapshot('opener')!.openFds!;
        const baseline = sampler.snapshot('plain')!.openFds!;
        assert.ok(opened >= 20, `${opened} fds`);
        assert.ok(opened - baseline >= 18, `${opened} fds against ${baseline} for a child that opened none`);
      },
    ));

  it('reads-members-from-the-cgroup-when-given-one', () =>
    withChildren([`console.log('ready'); setInterval(() => {}, 60_000);`, `console.log('ready'); setInterval(() => {}, 60_000);`], async ([a, b]) => {
      // cgroup.procs as the kernel writes it: one pid a line. Two groups in one cgroup are one instance.
      const dir = await mkdtemp(join(tmpdir(), 'berth-usage-'));
      try {
        await writeFile(join(dir, 'cgroup.procs'), `${a!.pid}\n${b!.pid}\n`);
        const sampler = new UsageSampler({ clock: new FakeClock() });
        sampler.track('web-1', a!.pid, { cgroup: dir });
        sampler.track('web-2', b!.pid);
        await sampler.sample();
        assert.equal(sampler.snapshot('web-1')?.processes, 2);
        assert.equal(sampler.snapshot('web-2')?.processes, 1);

        await rm(join(dir, 'cgroup.procs'));
        await sampler.sample();
        assert.equal(sampler.snapshot('web-1'), undefined, 'a removed cgroup has no usage');
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    }));

  it('drops-the-usage-of-a-group-that-is-gone-and-of-an-untracked-instance', () =>
    withChildren([`console.log('ready'); setInterval(() => {}, 60_000);`, `console.log('ready'); setInterval(() => {}, 60_000);`], async ([a, b]) => {
      const sampler = new UsageSampler({ clock: new FakeClock() });
      const limits = { memoryBytes: 128 * 1024 ** 2, cpu: 0.5, pids: null, openFiles: 1024 };
      sampler.track('web-1', a!.pid, { limits });
      sampler.track('web-2', b!.pid);
      await sampler.sample();
      assert.deepEqual([...sampler.all().keys()].sort(), ['web-1', 'web-2']);
      assert.deepEqual(sampler.limits('web-1'), limits);
      assert.equal(sampler.usage('web-1'), sampler.snapshot('web-1'));

      await a!.kill();
      sampler.untrack('web-2');
      assert.equal(sampler.limits('web-2'), undefined);
      await sampler.sample();
      assert.deepEqual([...sampler.all().keys()], []);
    }));

  it('samples-every-interval-on-the-clock-until-stopped', () =>
    withChildren([`console.log('ready'); setInterval(() => {}, 60_000);`], async ([a]) => {
      const clock = new FakeClock();
      const errors: unknown[] = [];
      const sampler = new UsageSampler({ clock, intervalMs: INTERVAL_MS, onError: (err) => errors.push(err) });
      sampler.track('web-1', a!.pid);
      sampler.start();
      clock.advance(INTERVAL_MS - 1);
      assert.equal(await sampler.sample().then(() => sampler.snapshot('web-1')?.at), new Date(clock.now()).toISOString(), 'an explicit pass');
      const before = sampler.snapshot('web-1')!.at;
      clock.advance(1);
      // The timer's pass is under way: sample() waits for it rather than starting another.
      await sampler.sample();
      assert.notEqual(sampler.snapshot('web-1')!.at, before);
      assert.equal(sampler.snapshot('web-1')!.at, new Date(clock.now()).toISOString());
      assert.equal(clock.pendingTimers, 1, 'the next pass is scheduled');
      sampler.stop();
      assert.equal(clock.pendingTimers, 0);
      assert.deepEqual(errors, []);
    }));

  it('tells-onError-when-procfs-cannot-be-read', async () => {
    const errors: unknown[] = [];
    const sampler = new UsageSampler({ clock: new FakeClock(), procRoot: '/nonexistent-proc', onError: (err) => errors.push(err) });
    sampler.track('web-1', 1);
    await sampler.sample();
    assert.equal(errors.length, 1);
    assert.equal(sampler.snapshot('web-1'), undefined);
  });
});

describe('UsageSampler on a host of many processes', () => {
  /** A procfs of `count` processes 1…count (stat, status, an fd dir), the first `members` of them in process group 1. */
  async function fakeProc(count: number, members: number): Promise<string> {
    const root = await mkdtemp(join(tmpdir(), 'berth-proc-'));
    const pids = Array.from({ length: count }, (_, i) => i + 1);
    await Promise.all(
      pids.map(async (pid) => {
        const dir = join(root, String(pid));
        await mkdir(join(dir, 'fd'), { recursive: true });
        const pgrp = pid <= members ? 1 : pid;
        // Fields 3…: state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime cutime cstime priority nice threads itrealvalue starttime
        await writeFile(join(dir, 'stat'), `${pid} (p ${pid}) S 1 ${pgrp} ${pgrp} 0 -1 0 0 0 0 0 ${pid} 1 0 0 20 0 2 0 ${1000 + pid} 0 0`);
        await writeFile(join(dir, 'status'), `Name:\tp\nVmRSS:\t     4 kB\n`);
        await writeFile(join(dir, 'fd', '0'), '');
      }),
    );
    return root;
  }

  it('reads-a-scan-in-batches-and-lets-the-event-loop-turn-between-them', async () => {
    const procRoot = await fakeProc(400, 40);
    try {
      const sampler = new UsageSampler({ clock: new FakeClock(), procRoot });
      sampler.track('web-1', 1);
      // Counts the turns of the event loop while the pass runs.
      let turns = 0;
      let done = false;
      const spin = (): void => {
        if (done) return;
        turns++;
        setImmediate(spin);
      };
      setImmediate(spin);
      await sampler.sample();
      done = true;
      const usage = sampler.snapshot('web-1');
      assert.equal(usage?.processes, 40);
      assert.equal(usage.threads, 80);
      assert.equal(usage.rssBytes, 40 * 4 * 1024);
      assert.equal(usage.openFds, 40);
      // utime 1…40 and stime 1 each, in ticks of 1/100 s.
      assert.ok(Math.abs(usage.cpuSeconds - (820 + 40) / 100) < 1e-9, `cpuSeconds ${usage.cpuSeconds}`);
      // 400 stat files and 40 × (status + fd): 480 reads, 32 a turn. All in one turn would be 0.
      assert.ok(turns >= 12, `the loop turned ${turns} times during the pass`);
    } finally {
      await rm(procRoot, { recursive: true, force: true });
    }
  });
});

describe('parseStat', () => {
  it('counts-fields-from-the-last-parenthesis-of-the-command-name', () => {
    const text = '4242 (evil) name (x) S 1 4240 4240 0 -1 4194560 10 0 0 0 250 50 7 3 20 0 5 0 123456 1000 300 18446744073709551615 0';
    assert.deepEqual(parseStat(4242, text), { pid: 4242, ppid: 1, pgrp: 4240, ticks: 310, threads: 5, start: 123456 });
    assert.equal(parseStat(1, ''), undefined);
    assert.equal(parseStat(1, '1 (x) S'), undefined);
  });
});
