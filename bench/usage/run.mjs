#!/usr/bin/env node
// bench/usage: what one pass of the usage sampler costs on a host of many
// processes, against the least any such pass can cost (one synchronous read
// of every /proc/<pid>/stat) and against the same reads through libuv's
// thread pool (fs/promises, 32 at a time: how the sampler read before).
// Linux only. Starts `--processes` sleeping processes for the run (killed at
// the end, bounded by `sleep`'s own time), one process group of `--members`
// standing for a tracked instance. Interleaved rounds; medians.
// A benchmark, not a test: it prints figures and ratios and exits 0.
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { performance } from 'node:perf_hooks';
import { setImmediate as nextTurn, setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { systemClock } from '../../dist/src/clock.js';
import { UsageSampler } from '../../dist/src/supervisor/isolation/usage.js';

const HELP = `usage: npm run bench:usage -- [options]

Times one pass of Berth's UsageSampler (dist/src/, so build first: the npm
script does) over a host of many processes, against a bare synchronous read
of every /proc/<pid>/stat and against the same reads through the thread pool.

  --processes <n>  sleeping processes started for the run (default 1000)
  --members <n>    of them, in the tracked instance's process group (default 50)
  --passes <n>     passes per variant and round (default 20)
  --rounds <n>     rounds of every variant; each figure is the median (default 3)
  -h, --help`;

const { values } = parseArgs({
  options: {
    processes: { type: 'string', default: '1000' },
    members: { type: 'string', default: '50' },
    passes: { type: 'string', default: '20' },
    rounds: { type: 'string', default: '3' },
    help: { type: 'boolean', short: 'h' },
  },
});
if (values.help) {
  console.log(HELP);
  process.exit(0);
}
if (process.platform !== 'linux') {
  console.error('bench/usage reads /proc: Linux only');
  process.exit(1);
}
const PROCESSES = Number(values.processes);
const MEMBERS = Math.min(Number(values.members), PROCESSES);
const PASSES = Number(values.passes);
const ROUNDS = Number(values.rounds);
/** The sleepers' own bound: a run killed before its end leaves nothing for longer. */
const SLEEP_S = 600;

/** A shell leading its own process group, with `count` sleepers in it; resolves once they all run. */
async function group(count) {
  const shell = spawn('/bin/sh', ['-c', `i=0; while [ $i -lt ${count} ]; do sleep ${SLEEP_S} & i=$((i+1)); done; echo started; wait`], {
    detached: true,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  await new Promise((resolve, reject) => {
    shell.stdout.once('data', resolve);
    shell.once('exit', () => reject(new Error('the sleepers did not start')));
  });
  return shell;
}

/** The longest time between two turns of the event loop while it watches, ms: how long the loop was blocked at most. */
function turnWatch() {
  let last = performance.now();
  let longest = 0;
  let watching = true;
  const turn = () => {
    const now = performance.now();
    longest = Math.max(longest, now - last);
    last = now;
    if (watching) setImmediate(turn);
  };
  setImmediate(turn);
  return {
    stop: () => {
      watching = false;
      // And the stretch since the last turn: all of a pass that never lets the loop turn.
      return Math.max(longest, performance.now() - last);
    },
  };
}

const stats = () => readdirSync('/proc').filter((name) => /^\d+$/.test(name));

const variants = {
  /** The floor: every stat file, read once, synchronously. */
  floor: async () => {
    for (const pid of stats()) {
      try {
        readFileSync(`/proc/${pid}/stat`, 'utf8');
      } catch {
        // Gone since the listing.
      }
    }
  },
  /** The same reads through libuv's thread pool, 32 at a time. */
  threadpool: async () => {
    const pids = (await readdir('/proc')).filter((name) => /^\d+$/.test(name));
    for (let i = 0; i < pids.length; i += 32) {
      await Promise.all(pids.slice(i, i + 32).map((pid) => readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined)));
    }
  },
};

const tracked = await group(MEMBERS);
const others = PROCESSES > MEMBERS ? await group(PROCESSES - MEMBERS) : undefined;
const sampler = new UsageSampler({ clock: systemClock, onError: (err) => console.error(err) });
sampler.track('bench-1', tracked.pid);
variants.berth = () => sampler.sample();

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const figures = Object.fromEntries(Object.keys(variants).map((name) => [name, []]));
try {
  for (let round = 0; round < ROUNDS; round++) {
    for (const [name, pass] of Object.entries(variants)) {
      await pass(); // warm-up, unmeasured
      const blocks = [];
      const cpu = process.cpuUsage();
      const start = process.hrtime.bigint();
      for (let i = 0; i < PASSES; i++) {
        const turns = turnWatch();
        await pass();
        blocks.push(turns.stop());
        // A turn between passes, so that one pass' block is not counted with the next one's.
        await nextTurn();
      }
      const wallMs = Number(process.hrtime.bigint() - start) / 1e6 / PASSES;
      const used = process.cpuUsage(cpu);
      figures[name].push({ cpuMs: (used.user + used.system) / 1000 / PASSES, wallMs, blockMs: median(blocks), maxBlockMs: Math.max(...blocks) });
      await sleep(50);
    }
  }
} finally {
  for (const shell of [tracked, others]) {
    if (shell) process.kill(-shell.pid, 'SIGKILL');
  }
}

const usage = sampler.snapshot('bench-1');
const row = (name) => {
  const f = figures[name];
  return {
    cpuMs: median(f.map((x) => x.cpuMs)),
    wallMs: median(f.map((x) => x.wallMs)),
    blockMs: median(f.map((x) => x.blockMs)),
    maxBlockMs: Math.max(...f.map((x) => x.maxBlockMs)),
  };
};
console.log(`bench/usage: ${stats().length} processes on the host during the run (${PROCESSES} started), the tracked group ${MEMBERS}; ${ROUNDS} rounds of ${PASSES} passes`);
console.log(`the sampler saw: ${usage?.processes} processes, ${usage?.openFds} open fds, ${usage?.rssBytes} bytes RSS`);
console.log('variant     CPU ms/pass  wall ms/pass  event loop blocked, ms: a pass\' longest (median)  the longest of all');
for (const name of Object.keys(variants)) {
  const r = row(name);
  console.log(`${name.padEnd(11)} ${r.cpuMs.toFixed(2).padStart(11)}  ${r.wallMs.toFixed(2).padStart(12)}  ${r.blockMs.toFixed(2).padStart(48)}  ${r.maxBlockMs.toFixed(2).padStart(17)}`);
}
const floor = row('floor');
const berth = row('berth');
const pool = row('threadpool');
console.log(`ratios: berth / floor CPU ${(berth.cpuMs / floor.cpuMs).toFixed(2)}; threadpool / floor CPU ${(pool.cpuMs / floor.cpuMs).toFixed(2)}; a pass' longest block, berth / floor ${(berth.blockMs / floor.blockMs).toFixed(2)}`);
