#!/usr/bin/env node
// bench/policies: Berth's hand-written circuit breaker against cockatiel's, the
// library DESIGN.md would take if it fitted the hot path, in one process,
// interleaved, several rounds. The breaker is asked once per request, so what
// is measured is the cost it adds around a trivial synchronous function.
// A benchmark, not a test: it prints figures and ratios and exits 0.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { GCProfiler } from 'node:v8';
import { parseArgs } from 'node:util';
import { BrokenCircuitError, ConsecutiveBreaker, SamplingBreaker, circuitBreaker, handleAll } from 'cockatiel';

const HELP = `usage: npm run bench:policies -- [options]

Times cockatiel's circuit breaker policy against Berth's CircuitBreaker
(dist/src/resilience/, so build first: the npm script does), interleaved.

  --calls <n>    calls per variant and round (default 2000000)
  --rounds <n>   rounds of every variant; each figure is the median (default 3)
  -h, --help`;

const WINDOW_MS = 10_000;
const OPEN_MS = 10_000;
// cockatiel's SamplingBreaker needs windowMs × minimumRps / 1000 requests in
// the window before its ratio counts; Berth's minRequests says the same directly.
const MINIMUM_RPS = 5;
const MIN_REQUESTS = (WINDOW_MS / 1000) * MINIMUM_RPS;

const value = { ok: true };
const work = () => value;

async function main() {
  const opts = parseOptions(process.argv.slice(2));
  const { CircuitBreaker, systemClock } = await loadBerth();
  await checkSameBehaviour(CircuitBreaker);

  const cockatielConsecutive = () => circuitBreaker(handleAll, { halfOpenAfter: OPEN_MS, breaker: new ConsecutiveBreaker(5) });
  const cockatielSampling = () =>
    circuitBreaker(handleAll, { halfOpenAfter: OPEN_MS, breaker: new SamplingBreaker({ threshold: 0.5, duration: WINDOW_MS, minimumRps: MINIMUM_RPS }) });
  const berthConsecutive = () => new CircuitBreaker(berthConfig({ consecutiveFailures: 5 }), systemClock);
  const berthSampling = () => new CircuitBreaker(berthConfig({ failureRatio: 0.5, minRequests: MIN_REQUESTS }), systemClock);

  // Each variant has a loop of its own, so that no call site is shared (and
  // made polymorphic) between them.
  const variants = [
    { group: 'floor', name: 'work()', run: (n) => loopBare(n) },
    { group: 'floor', name: 'Date.now()', run: (n) => loopClock(n) },
    { group: 'floor', name: 'await work()', run: (n) => loopAwait(n) },
    { group: 'consecutive', name: 'cockatiel', policy: cockatielConsecutive(), run(n) { return loopCockatiel(this.policy, n); } },
    { group: 'consecutive', name: 'berth', breaker: berthConsecutive(), run(n) { return loopBerth(this.breaker, n); } },
    { group: 'sampling', name: 'cockatiel', policy: cockatielSampling(), run(n) { return loopCockatielSampling(this.policy, n); } },
    { group: 'sampling', name: 'berth', breaker: berthSampling(), run(n) { return loopBerthSampling(this.breaker, n); } },
  ];

  log(`bench/policies: ${fmtInt(opts.calls)} calls per variant × ${opts.rounds} rounds; Node ${process.version}, cockatiel ${cockatielVersion()}`);
  log('consecutive: cockatiel circuitBreaker(handleAll, { breaker: new ConsecutiveBreaker(5) }).execute(work)');
  log('             berth     tryAcquire() → work() → onSuccess(), CircuitBreaker { consecutiveFailures: 5 }');
  log(`sampling:    cockatiel SamplingBreaker { threshold: 0.5, duration: ${WINDOW_MS}, minimumRps: ${MINIMUM_RPS} }`);
  log(`             berth     CircuitBreaker { failureRatio: 0.5, windowMs: ${WINDOW_MS}, minRequests: ${MIN_REQUESTS} }`);

  const warmup = Math.min(opts.calls, 200_000);
  for (const v of variants) await v.run(warmup);

  const ns = new Map(variants.map((v) => [v, []]));
  for (let round = 1; round <= opts.rounds; round++) {
    for (const v of variants) {
      const t0 = process.hrtime.bigint();
      await v.run(opts.calls);
      ns.get(v).push(Number(process.hrtime.bigint() - t0) / opts.calls);
    }
    log(`round ${round}/${opts.rounds} ${variants.map((v) => `${v.group}/${v.name} ${fmtNs(ns.get(v).at(-1))}`).join('  ')}`);
  }

  const rows = [['', '', 'ns/call', 'rounds', 'B/call']];
  for (const v of variants) {
    v.ns = median(ns.get(v));
    v.bytes = await allocatedPerCall(v, Math.min(opts.calls, 100_000));
    rows.push([v.group, v.name, fmtNs(v.ns), ns.get(v).map(fmtNs).join(' '), fmtBytes(v.bytes)]);
  }
  log('');
  log(table(rows, [0, 1]));

  const find = (group, name) => variants.find((v) => v.group === group && v.name === name);
  log('');
  log('cockatiel / berth, median ns/call; own cost: minus the floor of each (await work() for cockatiel, work() for berth):');
  for (const group of ['consecutive', 'sampling']) {
    const c = find(group, 'cockatiel');
    const b = find(group, 'berth');
    const cOwn = c.ns - find('floor', 'await work()').ns;
    const bOwn = b.ns - find('floor', 'work()').ns;
    log(`  ${group.padEnd(12)} ×${(c.ns / b.ns).toFixed(1)}   own cost ${fmtNs(cOwn)} vs ${fmtNs(bOwn)} ns`);
  }
  log('');
  log('B/call: heap allocated per call over 100,000 calls after the timed rounds (v8.GCProfiler: growth of the');
  log('used heap plus what each GC freed). Date.now() returns a boxed double: its 16 B are the clock\'s, not the breaker\'s.');
}

// ---------------------------------------------------------------- the loops

function loopBare(n) {
  let sink = 0;
  for (let i = 0; i < n; i++) if (work().ok) sink++;
  return sink;
}

// What one clock read costs: Berth's ratio window reads the clock once per
// result (cockatiel's SamplingBreaker calls Date.now() as often).
function loopClock(n) {
  let sink = 0;
  for (let i = 0; i < n; i++) sink += Date.now() & 1;
  return sink;
}

async function loopAwait(n) {
  let sink = 0;
  for (let i = 0; i < n; i++) if ((await work()).ok) sink++;
  return sink;
}

async function loopCockatiel(policy, n) {
  let sink = 0;
  for (let i = 0; i < n; i++) if ((await policy.execute(work)).ok) sink++;
  return sink;
}

async function loopCockatielSampling(policy, n) {
  let sink = 0;
  for (let i = 0; i < n; i++) if ((await policy.execute(work)).ok) sink++;
  return sink;
}

function loopBerth(breaker, n) {
  let sink = 0;
  for (let i = 0; i < n; i++) {
    if (!breaker.tryAcquire()) continue;
    if (work().ok) sink++;
    breaker.onSuccess();
  }
  return sink;
}

function loopBerthSampling(breaker, n) {
  let sink = 0;
  for (let i = 0; i < n; i++) {
    if (!breaker.tryAcquire()) continue;
    if (work().ok) sink++;
    breaker.onSuccess();
  }
  return sink;
}

// ---------------------------------------------------------------- checks

// The comparison is only fair if both breakers do the same job: each must
// open on the same failure and then refuse calls.
async function checkSameBehaviour(CircuitBreaker) {
  const boom = () => {
    throw new Error('boom');
  };
  const cases = [
    {
      name: 'consecutive',
      opensAt: 5,
      cockatiel: circuitBreaker(handleAll, { halfOpenAfter: OPEN_MS, breaker: new ConsecutiveBreaker(5) }),
      berth: new CircuitBreaker(berthConfig({ consecutiveFailures: 5 }), { now: () => Date.now() }),
    },
    {
      name: 'sampling',
      opensAt: MIN_REQUESTS,
      cockatiel: circuitBreaker(handleAll, { halfOpenAfter: OPEN_MS, breaker: new SamplingBreaker({ threshold: 0.5, duration: WINDOW_MS, minimumRps: MINIMUM_RPS }) }),
      berth: new CircuitBreaker(berthConfig({ failureRatio: 0.5, minRequests: MIN_REQUESTS }), { now: () => Date.now() }),
    },
  ];
  for (const c of cases) {
    for (let i = 1; i <= c.opensAt; i++) {
      const err = await c.cockatiel.execute(boom).then(() => null, (e) => e);
      if (err?.message !== 'boom') throw new Error(`${c.name}: cockatiel refused call ${i} before it failed ${c.opensAt} times`);
      if (!c.berth.tryAcquire()) throw new Error(`${c.name}: berth refused call ${i} before it failed ${c.opensAt} times`);
      c.berth.onFailure();
    }
    const refused = await c.cockatiel.execute(work).then(() => null, (e) => e);
    if (!(refused instanceof BrokenCircuitError)) throw new Error(`${c.name}: cockatiel did not open after ${c.opensAt} failures`);
    if (c.berth.tryAcquire()) throw new Error(`${c.name}: berth did not open after ${c.opensAt} failures`);
  }
}

// ---------------------------------------------------------------- measuring

async function allocatedPerCall(variant, calls) {
  const profiler = new GCProfiler();
  profiler.start();
  const before = process.memoryUsage().heapUsed;
  await variant.run(calls);
  const after = process.memoryUsage().heapUsed;
  const { statistics } = profiler.stop();
  const freed = statistics.reduce((sum, gc) => sum + gc.beforeGC.heapStatistics.usedHeapSize - gc.afterGC.heapStatistics.usedHeapSize, 0);
  return (after - before + freed) / calls;
}

// ---------------------------------------------------------------- plumbing

function berthConfig(rules) {
  return { consecutiveFailures: 0, failureRatio: 0, windowMs: WINDOW_MS, minRequests: 0, openMs: OPEN_MS, maxOpenMs: OPEN_MS * 6, halfOpenRequests: 1, ...rules };
}

async function loadBerth() {
  try {
    const [{ CircuitBreaker }, { systemClock }] = await Promise.all([
      import('../../dist/src/resilience/circuit-breaker.js'),
      import('../../dist/src/clock.js'),
    ]);
    return { CircuitBreaker, systemClock };
  } catch (err) {
    throw new UsageError(`cannot load dist/src/resilience/ (${err.message}): run \`npm run build\` first, or use \`npm run bench:policies\``);
  }
}

function cockatielVersion() {
  const require = createRequire(import.meta.url);
  return JSON.parse(readFileSync(require.resolve('cockatiel/package.json'), 'utf8')).version;
}

function parseOptions(argv) {
  let values;
  try {
    values = parseArgs({
      args: argv,
      options: {
        calls: { type: 'string', default: '2000000' },
        rounds: { type: 'string', default: '3' },
        help: { type: 'boolean', short: 'h', default: false },
      },
      strict: true,
    }).values;
  } catch (err) {
    throw new UsageError(`${err.message}\n(npm run bench:policies -- --help for usage)`);
  }
  if (values.help) {
    process.stdout.write(`${HELP}\n`);
    process.exit(0);
  }
  return { calls: positiveInt(values.calls, 'calls'), rounds: positiveInt(values.rounds, 'rounds') };
}

class UsageError extends Error {}

function positiveInt(text, name) {
  const n = Number(text.replaceAll('_', ''));
  if (!Number.isSafeInteger(n) || n < 1) throw new UsageError(`--${name}: expected a positive integer, got ${text}`);
  return n;
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

function table(rows, left = [0]) {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => String(r[i]).length)));
  return rows.map((r) => r.map((c, i) => (left.includes(i) ? String(c).padEnd(widths[i]) : String(c).padStart(widths[i]))).join('  ').trimEnd()).join('\n');
}

const fmtInt = (n) => Math.round(n).toLocaleString('en-US');
const fmtNs = (ns) => (ns < 10 ? ns.toFixed(2) : ns < 100 ? ns.toFixed(1) : ns.toFixed(0));
const fmtBytes = (b) => (Math.abs(b) < 1 ? '0' : b.toFixed(0));
const log = (line) => process.stdout.write(`${line}\n`);

main().catch((err) => {
  process.stderr.write(`${err instanceof UsageError ? err.message : err.stack}\n`);
  process.exitCode = err instanceof UsageError ? 2 : 1;
});
