#!/usr/bin/env node
// bench/policies: Berth's hand-written circuit breaker against cockatiel's, and
// its token bucket store against rate-limiter-flexible's RateLimiterMemory: the
// libraries DESIGN.md would take if they fitted the hot path. One process,
// interleaved, several rounds. Each policy is asked once per request, so what
// is measured is the cost it adds to one request.
// A benchmark, not a test: it prints figures and ratios and exits 0.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { GCProfiler } from 'node:v8';
import { parseArgs } from 'node:util';
import { BrokenCircuitError, ConsecutiveBreaker, SamplingBreaker, circuitBreaker, handleAll } from 'cockatiel';
import { RateLimiterMemory } from 'rate-limiter-flexible';

const HELP = `usage: npm run bench:policies -- [options]

Times cockatiel's circuit breaker policy against Berth's CircuitBreaker, and
rate-limiter-flexible's RateLimiterMemory against Berth's MemoryRateLimitStore
(dist/src/, so build first: the npm script does), interleaved.

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

// Rate limits: rules no request reaches, so that both admit every call and
// neither drops its state during the run (rate-limiter-flexible's window is a
// minute, so each key costs it one timer, not one a second).
const LIMIT_POINTS = 1e9;
const LIMIT_WINDOW_S = 60;
const BERTH_RULE = { ratePerSecond: 1, burst: LIMIT_POINTS };
const SPENT_RULE = { ratePerSecond: 1 / 3_600, burst: 1 };
// What the gateway puts before the client address in a bucket key.
const KEY_PREFIX = 'shop/orders|ip|';
const MANY_KEYS = 10_000;
const manyKeys = Array.from({ length: MANY_KEYS }, (_, i) => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`);
// Read from an array, as the many keys are: a constant would let V8 fold the
// gateway's concatenation into one string, whose hash it then keeps.
const oneKey = ['203.0.113.9'];

async function main() {
  const opts = parseOptions(process.argv.slice(2));
  const { CircuitBreaker, systemClock, MemoryRateLimitStore } = await loadBerth();
  await checkSameBehaviour(CircuitBreaker);
  await checkSameLimits(MemoryRateLimitStore);

  const cockatielConsecutive = () => circuitBreaker(handleAll, { halfOpenAfter: OPEN_MS, breaker: new ConsecutiveBreaker(5) });
  const cockatielSampling = () =>
    circuitBreaker(handleAll, { halfOpenAfter: OPEN_MS, breaker: new SamplingBreaker({ threshold: 0.5, duration: WINDOW_MS, minimumRps: MINIMUM_RPS }) });
  const berthConsecutive = () => new CircuitBreaker(berthConfig({ consecutiveFailures: 5 }), systemClock);
  const berthSampling = () => new CircuitBreaker(berthConfig({ failureRatio: 0.5, minRequests: MIN_REQUESTS }), systemClock);
  const flexible = (points = LIMIT_POINTS, duration = LIMIT_WINDOW_S) => new RateLimiterMemory({ points, duration });
  // Refused: one point an hour, spent before the timed calls.
  const flexibleSpent = () => {
    const limiter = flexible(1, 3_600);
    void limiter.consume('203.0.113.9');
    return limiter;
  };
  const berthSpent = () => {
    const store = new MemoryRateLimitStore();
    store.take(`${KEY_PREFIX}203.0.113.9`, SPENT_RULE, Date.now());
    return store;
  };

  // Each variant has a loop of its own, so that no call site is shared (and
  // made polymorphic) between them.
  const variants = [
    { group: 'floor', name: 'work()', run: (n) => loopBare(n) },
    { group: 'floor', name: 'Date.now()', run: (n) => loopClock(n) },
    { group: 'floor', name: 'await work()', run: (n) => loopAwait(n) },
    { group: 'floor', name: 'map.get(prefix + ip)', map: new Map([[KEY_PREFIX + oneKey[0], value]]), run(n) { return loopKeyLookup(this.map, n); } },
    { group: 'consecutive', name: 'cockatiel', policy: cockatielConsecutive(), run(n) { return loopCockatiel(this.policy, n); } },
    { group: 'consecutive', name: 'berth', breaker: berthConsecutive(), run(n) { return loopBerth(this.breaker, n); } },
    { group: 'sampling', name: 'cockatiel', policy: cockatielSampling(), run(n) { return loopCockatielSampling(this.policy, n); } },
    { group: 'sampling', name: 'berth', breaker: berthSampling(), run(n) { return loopBerthSampling(this.breaker, n); } },
    { group: 'limit-1-key', name: 'flexible', limiter: flexible(), run(n) { return loopFlexibleOneKey(this.limiter, n); } },
    { group: 'limit-1-key', name: 'berth', store: new MemoryRateLimitStore(), run(n) { return loopBerthOneKey(this.store, n); } },
    { group: 'limit-10k-keys', name: 'flexible', limiter: flexible(), run(n) { return loopFlexibleManyKeys(this.limiter, n); } },
    { group: 'limit-10k-keys', name: 'berth', store: new MemoryRateLimitStore(), run(n) { return loopBerthManyKeys(this.store, n); } },
    { group: 'limit-refused', name: 'flexible', limiter: flexibleSpent(), run(n) { return loopFlexibleRefused(this.limiter, n); } },
    { group: 'limit-refused', name: 'berth', store: berthSpent(), run(n) { return loopBerthRefused(this.store, n); } },
  ];
  // The reference of each comparison, and the floor taken off each side for its own cost.
  const comparisons = [
    { group: 'consecutive', reference: 'cockatiel', referenceFloor: 'await work()', berthFloor: 'work()' },
    { group: 'sampling', reference: 'cockatiel', referenceFloor: 'await work()', berthFloor: 'work()' },
    { group: 'limit-1-key', reference: 'flexible', referenceFloor: 'await work()', berthFloor: null },
    { group: 'limit-10k-keys', reference: 'flexible', referenceFloor: 'await work()', berthFloor: null },
    { group: 'limit-refused', reference: 'flexible', referenceFloor: 'await work()', berthFloor: null },
  ];

  log(`bench/policies: ${fmtInt(opts.calls)} calls per variant × ${opts.rounds} rounds; Node ${process.version}, cockatiel ${versionOf('cockatiel')}, rate-limiter-flexible ${versionOf('rate-limiter-flexible')}`);
  log('consecutive: cockatiel circuitBreaker(handleAll, { breaker: new ConsecutiveBreaker(5) }).execute(work)');
  log('             berth     tryAcquire() → work() → onSuccess(), CircuitBreaker { consecutiveFailures: 5 }');
  log(`sampling:    cockatiel SamplingBreaker { threshold: 0.5, duration: ${WINDOW_MS}, minimumRps: ${MINIMUM_RPS} }`);
  log(`             berth     CircuitBreaker { failureRatio: 0.5, windowMs: ${WINDOW_MS}, minRequests: ${MIN_REQUESTS} }`);
  log(`limit-*:     flexible  await new RateLimiterMemory({ points: ${LIMIT_POINTS}, duration: ${LIMIT_WINDOW_S} }).consume(ip)`);
  log(`             berth     new MemoryRateLimitStore().take('${KEY_PREFIX}' + ip, { ratePerSecond: 1, burst: ${LIMIT_POINTS} }, Date.now())`);
  log(`             1-key: one address; 10k-keys: ${fmtInt(MANY_KEYS)} addresses in turn; refused: one address over its limit (flexible rejects, berth answers allowed: false)`);

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
  log('reference / berth, median ns/call (reference: cockatiel for the breakers, rate-limiter-flexible for the limits);');
  log('own cost: minus the floor of each (await work() for the references, work() for the berth breakers; the berth');
  log('limits are whole: their Date.now() read is the caller\'s, and the references read the clock inside):');
  for (const { group, reference, referenceFloor, berthFloor } of comparisons) {
    const r = find(group, reference);
    const b = find(group, 'berth');
    const rOwn = r.ns - find('floor', referenceFloor).ns;
    const bOwn = berthFloor === null ? b.ns : b.ns - find('floor', berthFloor).ns;
    log(`  ${group.padEnd(15)} ×${(r.ns / b.ns).toFixed(1)}   own cost ${fmtNs(rOwn)} vs ${fmtNs(bOwn)} ns   B/call ${fmtBytes(r.bytes)} vs ${fmtBytes(b.bytes)}`);
  }
  log('');
  log('B/call: heap allocated per call over 100,000 calls after the timed rounds (v8.GCProfiler: growth of the');
  log('used heap plus what each GC freed). Date.now() returns a boxed double: its 16 B are the clock\'s, not the breaker\'s.');
  log('A berth limit call allocates its RateDecision and the key it is given (prefix + address, as the gateway builds it).');
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

// What any store keyed by string pays before its own work: build the key,
// then hash it (a new string each call) to find the entry.
function loopKeyLookup(map, n) {
  let sink = 0;
  for (let i = 0; i < n; i++) if (map.get(KEY_PREFIX + oneKey[i & 0]).ok) sink++;
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

// Rate limits. The berth loops build the key as the gateway does (a string
// concatenation, so its hash is computed each call); rate-limiter-flexible
// prefixes every key itself.

async function loopFlexibleOneKey(limiter, n) {
  let sink = 0;
  for (let i = 0; i < n; i++) if ((await limiter.consume(oneKey[i & 0])).remainingPoints >= 0) sink++;
  return sink;
}

function loopBerthOneKey(store, n) {
  let sink = 0;
  for (let i = 0; i < n; i++) if (store.take(KEY_PREFIX + oneKey[i & 0], BERTH_RULE, Date.now()).allowed) sink++;
  return sink;
}

async function loopFlexibleManyKeys(limiter, n) {
  let sink = 0;
  for (let i = 0; i < n; i++) if ((await limiter.consume(manyKeys[i % MANY_KEYS])).remainingPoints >= 0) sink++;
  return sink;
}

function loopBerthManyKeys(store, n) {
  let sink = 0;
  for (let i = 0; i < n; i++) if (store.take(KEY_PREFIX + manyKeys[i % MANY_KEYS], BERTH_RULE, Date.now()).allowed) sink++;
  return sink;
}

async function loopFlexibleRefused(limiter, n) {
  let sink = 0;
  for (let i = 0; i < n; i++) {
    try {
      await limiter.consume(oneKey[i & 0]);
    } catch {
      sink++;
    }
  }
  return sink;
}

function loopBerthRefused(store, n) {
  let sink = 0;
  for (let i = 0; i < n; i++) if (!store.take(KEY_PREFIX + oneKey[i & 0], SPENT_RULE, Date.now()).allowed) sink++;
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

// Both limiters must admit the same burst from one address and refuse the
// next request; and the timed variants must admit (or refuse) every call.
async function checkSameLimits(MemoryRateLimitStore) {
  const flexible = new RateLimiterMemory({ points: 5, duration: 60 });
  const store = new MemoryRateLimitStore();
  const rule = { ratePerSecond: 5 / 60, burst: 5 };
  for (let i = 1; i <= 6; i++) {
    const f = await flexible.consume('203.0.113.9').then(() => true, () => false);
    const b = store.take(`${KEY_PREFIX}203.0.113.9`, rule, Date.now()).allowed;
    if (f !== (i <= 5)) throw new Error(`rate limit: rate-limiter-flexible ${f ? 'admitted' : 'refused'} request ${i} of a burst of 5`);
    if (b !== (i <= 5)) throw new Error(`rate limit: berth ${b ? 'admitted' : 'refused'} request ${i} of a burst of 5`);
  }
  store.close();
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
    const [{ CircuitBreaker }, { systemClock }, { MemoryRateLimitStore }] = await Promise.all([
      import('../../dist/src/resilience/circuit-breaker.js'),
      import('../../dist/src/clock.js'),
      import('../../dist/src/security/rate-limit.js'),
    ]);
    return { CircuitBreaker, systemClock, MemoryRateLimitStore };
  } catch (err) {
    throw new UsageError(`cannot load dist/src/ (${err.message}): run \`npm run build\` first, or use \`npm run bench:policies\``);
  }
}

function versionOf(pkg) {
  const require = createRequire(import.meta.url);
  // rate-limiter-flexible's exports hide its package.json: find it from the entry point.
  const main = require.resolve(pkg);
  const root = main.slice(0, main.lastIndexOf(`/node_modules/${pkg}/`) + `/node_modules/${pkg}/`.length);
  return JSON.parse(readFileSync(`${root}package.json`, 'utf8')).version;
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
