// Noisy neighbours against a real `berth up` on this machine (root, cgroups):
// a service that burns CPU (limit 0.5 core) and one that leaks memory
// (limit 128 MiB) next to a normal service under a paced load. The normal
// service must answer every request and never be killed, and its p99 is
// asked to stay within 25% of its baseline, measured in the same run with the
// hogs running but idle; the burner must be held to half a core, the leaker
// OOM-killed, said to be, and restarted. Then a fork bomb (limit 64 pids) while the admin API
// and the gateway keep answering, and nothing of it is left once the node stops.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import readline from 'node:readline';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { request } from 'undici';
import type { InstanceView } from '../../src/admin/api.js';
import { nodeCgroupDirs } from '../support/cgroups.js';
import { BerthProcess, makeProject, testManifest, waitForExit, type LogLine } from '../support/node-process.js';

/** Limits need root and cgroups; elsewhere Berth runs without them and says so, which is not what is tested here. */
const CGROUPS = existsSync('/sys/fs/cgroup/cgroup.procs') || existsSync('/sys/fs/cgroup/memory/cgroup.procs');
const SKIP = process.platform !== 'linux' || process.getuid?.() !== 0 || !CGROUPS ? 'needs root and cgroups (Linux)' : false;

const NOISY = testManifest(`groups:
  core:
    # All the load comes from one address: the edge's per-address rate limit would refuse most of it.
    rateLimit: false
    services:
      web:
        command: node web.mjs
        health: { http: /health, interval: 1s }
      burner:
        command: node hog.mjs
        resources: { cpu: 0.5 }
        # Its checks are answered between throttled periods (up to 50 ms late).
        health: { http: /health, interval: 1s, timeout: 1s }
      leaker:
        command: node hog.mjs
        resources: { memory: 128MiB }
        health: { http: /health, interval: 1s }
`);

/**
 * How the p99 comparison is kept honest on 2 shared, noisy cores:
 *
 * - One load for the whole test, never stopped, from a loader process of its
 *   own (LOADER) that does nothing else. This test process parses every line
 *   the node writes (an access line per request) and polls the admin API:
 *   its event loop must not sit between a response and its timestamp. And a
 *   fresh process per window would measure its own warm-up (measured here: a
 *   new loader's first 2 s have a p99 2-4× that of the rest).
 * - Warmed up first (WARMUP requests as fast as they go, thrown away): the
 *   gateway's p99 falls from ~4 ms to ~1.5 ms over its first thousands of
 *   requests (JIT, heap sizing); a baseline taken cold would flatter the hogs.
 *   After the burst the workers spread over the period again: in step, 16 at
 *   once, they measured their own queue (p50 3 ms instead of 0.7 ms).
 * - Paced, not closed-loop: each worker sends one GET per period, 16 × 20/s =
 *   320 req/s, far under what the gateway serves here (~2,500-4,000 req/s,
 *   slowloris.test.ts), so the latency is how promptly the gateway and the
 *   instance get a CPU, not a queue at saturation (which a 0.5-core hog moves
 *   by design).
 * - Interleaved in 1 s slices, A B A B… (ROUNDS of each): the noise of this
 *   machine drifts by the second (the p99 of one 1 s baseline slice to the
 *   next: 1.1-16 ms), so a baseline then a hog window would compare two
 *   moments of it. Each phase's p99 is over all its slices pooled: 3,840
 *   samples, the p99 is the 38th slowest, not one outlier.
 * - The hogs run in both phases, idle in A (the burner's thread exists and
 *   waits). A request counts in the phase it was sent in; the loader is told
 *   a slice has begun only once the hogs are on (or off). A slice in which
 *   the leaker was set off lasts (more slices of B) until it is back and
 *   passing: its kill, restart and start-up are B, never the next baseline.
 * - During B the test process waits on log lines only: an admin API call is
 *   answered by the node process that is also the gateway.
 * - The gateway's own timing of the same requests (its access lines) is
 *   reported beside the loader's: it leaves out the loader's wait for a CPU,
 *   the one part of the figure that is the test's, not the node's.
 */
const LOAD = { workers: 16, periodMs: 50 };
const WARMUP = 15_000;
/** One slice: 1 s at the pace. */
const SLICE_REQUESTS = 320;
const ROUNDS = 12;
/** The leaker is set off in rounds 1, 5, 9: each OOM kill and restart inside a B slice (or several). */
const LEAK_EVERY = 4;
/** The ratio asked of the p99 under the hogs to the baseline's. */
const P99_RATIO = 1.25;
/** UsageSampler's interval in the node (DEFAULT_USAGE_INTERVAL_MS). */
const SAMPLE_MS = 5_000;

/**
 * The load: `workers` workers sending GETs to `url` until told to end. Takes
 * one JSON command a line on stdin:
 *   { "phase": NAME, "requests": N, "paced": BOOL }  the next N requests sent count in phase NAME
 *     (paced: one per worker per period, a late response delays that worker's next one and the
 *     missed ones are not made up; not paced: as fast as they go); prints { "done": NAME } once
 *     all N have been answered, and goes on at the same pace, uncounted, until the next command
 *   { "end": true }  stops, and prints { "phases": { NAME: { latencies, errors, late } }, "gap": { errors } }
 * Latencies in ms, from the moment the request was sent to the end of the response. node:http
 * only: it runs from the project dir.
 */
const LOADER = String.raw`
import http from 'node:http';
import readline from 'node:readline';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
const { url, workers, periodMs } = JSON.parse(process.argv[2]);
const agent = new http.Agent({ keepAlive: true, maxSockets: workers });
const phases = {};
const gap = { errors: [] };
let current;
let paced = true;
/** Bumped when the pace changes: the workers take their places in the period again. */
let pacing = 0;
let ended = false;
const get = () => new Promise((resolve, reject) => {
  const req = http.get(url, { agent }, (res) => {
    res.resume();
    res.on('end', () => resolve(res.statusCode));
    res.on('error', reject);
  });
  req.on('error', reject);
  req.setTimeout(5000, () => req.destroy(new Error('no answer within 5 s')));
});
readline.createInterface({ input: process.stdin }).on('line', (line) => {
  const command = JSON.parse(line);
  if (command.end) ended = true;
  else {
    current = { name: command.phase, requests: command.requests, sent: 0, answered: 0, latencies: [], errors: [], late: 0 };
    phases[command.phase] = current;
    if (paced !== (command.paced !== false)) pacing++;
    paced = command.paced !== false;
  }
});
async function worker(offset) {
  let next = performance.now() + offset;
  let seen = pacing;
  while (!ended) {
    // Spread over the period, not all at once: after a burst the workers would otherwise send in step.
    if (seen !== pacing) {
      seen = pacing;
      next = performance.now() + offset;
    }
    const wait = next - performance.now();
    if (paced && wait > 0) await sleep(wait);
    const phase = current !== undefined && current.sent < current.requests ? current : undefined;
    if (phase) phase.sent++;
    const started = performance.now();
    // Sent more than 5 ms after its time: this process was held up (a diagnostic).
    if (phase && paced && started - next > 5) phase.late++;
    let error;
    try {
      const status = await get();
      if (status !== 200) error = 'HTTP ' + status;
    } catch (err) {
      error = err.message;
    }
    const latency = performance.now() - started;
    if (phase) {
      if (error === undefined) phase.latencies.push(latency);
      else phase.errors.push(error);
      if (++phase.answered === phase.requests) console.log(JSON.stringify({ done: phase.name }));
    } else if (error !== undefined) gap.errors.push(error);
    next = paced ? Math.max(next + periodMs, performance.now()) : performance.now();
  }
}
await Promise.all(Array.from({ length: workers }, (_, i) => worker((i * periodMs) / workers)));
agent.destroy();
const out = {};
for (const [name, p] of Object.entries(phases)) out[name] = { latencies: p.latencies, errors: p.errors, late: p.late };
console.log(JSON.stringify({ phases: out, gap }));
process.stdin.destroy();
`;

interface PhaseResult {
  latencies: number[];
  errors: string[];
  late: number;
}

/** The loader process: commands in, one JSON object a line out. */
class Loader {
  readonly #child: ChildProcess;
  readonly #lines: unknown[] = [];
  #waiters: { pred: (line: unknown) => boolean; resolve: (line: unknown) => void }[] = [];
  #stderr = '';
  readonly closed: Promise<unknown>;

  constructor(script: string, url: string) {
    this.#child = spawn(process.execPath, [script, JSON.stringify({ url, ...LOAD })], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.#child.stderr!.setEncoding('utf8').on('data', (d: string) => (this.#stderr += d));
    // 'close', not 'exit': the last line may still be in the pipe when the process has gone.
    this.closed = once(this.#child, 'close');
    readline.createInterface({ input: this.#child.stdout! }).on('line', (text) => {
      const line = JSON.parse(text) as unknown;
      this.#lines.push(line);
      this.#waiters = this.#waiters.filter((w) => {
        if (!w.pred(line)) return true;
        w.resolve(line);
        return false;
      });
    });
  }

  #next<T>(pred: (line: unknown) => boolean, timeoutMs: number): Promise<T> {
    const seen = this.#lines.find(pred);
    if (seen !== undefined) return Promise.resolve(seen as T);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`the loader said nothing matching within ${timeoutMs} ms; stderr: ${this.#stderr}`)), timeoutMs);
      this.#waiters.push({
        pred,
        resolve: (line) => {
          clearTimeout(timer);
          resolve(line as T);
        },
      });
    });
  }

  /** Counts the next `requests` requests in `phase`; resolves once they are all answered, with when (wall clock) it began and ended. */
  async phase(phase: string, requests: number, paced = true): Promise<{ from: number; to: number }> {
    const from = Date.now();
    this.#child.stdin!.write(`${JSON.stringify({ phase, requests, paced })}\n`);
    // Bounded: twice the time the phase takes at its pace.
    await this.#next((l) => (l as { done?: string }).done === phase, 2 * ((requests * LOAD.periodMs) / LOAD.workers) + 5_000);
    return { from, to: Date.now() };
  }

  async end(): Promise<{ phases: Record<string, PhaseResult>; gap: { errors: string[] } }> {
    this.#child.stdin!.write(`${JSON.stringify({ end: true })}\n`);
    // Bounded: each worker finishes the request it has in flight (at most 5 s), then the process exits.
    const [code] = (await this.closed) as [number | null];
    assert.equal(code, 0, `the loader failed: ${this.#stderr}`);
    const result = this.#lines.find((l) => (l as { phases?: unknown }).phases !== undefined);
    assert.ok(result, 'the loader printed its figures');
    return result as { phases: Record<string, PhaseResult>; gap: { errors: string[] } };
  }

  /** For `after`: only if a failed assertion left it running. */
  async kill(): Promise<void> {
    if (this.#child.exitCode !== null || this.#child.signalCode !== null) return;
    this.#child.kill('SIGKILL');
    await this.closed;
  }
}

interface Figures {
  samples: number;
  errors: string[];
  late: number;
  p50: number;
  p99: number;
  p999: number;
  max: number;
}

function figures(phases: readonly PhaseResult[]): Figures {
  const latencies = phases.flatMap((p) => p.latencies).sort((x, y) => x - y);
  const at = (q: number): number => Math.round((latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? NaN) * 100) / 100;
  return {
    samples: latencies.length,
    errors: phases.flatMap((p) => p.errors),
    late: phases.reduce((sum, p) => sum + p.late, 0),
    p50: at(0.5),
    p99: at(0.99),
    p999: at(0.999),
    max: at(1),
  };
}

function describeFigures(name: string, f: Figures): string {
  return `${name}: ${f.samples} ok, ${f.errors.length} errors, ${f.late} sent late; latency p50 ${f.p50} ms, p99 ${f.p99} ms, p99.9 ${f.p999} ms, max ${f.max} ms`;
}

/**
 * A file of the cgroup `pid` is in, for a controller: v1 `/sys/fs/cgroup/<controller><path>/<file>`,
 * v2 `/sys/fs/cgroup<path>/<file>` (where v2 names differ, the caller gives both).
 */
async function cgroupFile(pid: number, controller: string, v1File: string, v2File = v1File): Promise<string> {
  const lines = (await readFile(`/proc/${pid}/cgroup`, 'utf8')).trim().split('\n');
  const v1 = lines.map((l) => l.split(':')).find(([, controllers]) => controllers?.split(',').includes(controller));
  if (v1?.[2] !== undefined) return join('/sys/fs/cgroup', controller, v1[2], v1File);
  const v2 = lines.find((l) => l.startsWith('0::'));
  assert.ok(v2, `pid ${pid} is in no ${controller} cgroup: ${lines.join('; ')}`);
  return join('/sys/fs/cgroup', v2.slice(3), v2File);
}

/** The number on a `key N` line of a flat-keyed cgroup file; the whole file when `key` is null. */
async function readCounter(file: string, key: string | null = null): Promise<number> {
  const text = await readFile(file, 'utf8');
  if (key === null) return Number(text.trim());
  const line = text.split('\n').find((l) => l.startsWith(`${key} `));
  assert.ok(line, `no ${key} in ${file}`);
  return Number(line.split(' ')[1]);
}

/** The CPU time of `pid`'s cgroup, in seconds: cpuacct.usage (v1, ns) or cpu.stat usage_usec (v2). */
async function cgroupCpuSeconds(pid: number): Promise<number> {
  const file = await cgroupFile(pid, 'cpuacct', 'cpuacct.usage', 'cpu.stat');
  return file.endsWith('cpu.stat') ? (await readCounter(file, 'usage_usec')) / 1e6 : (await readCounter(file)) / 1e9;
}

/** Every process whose environment says it belongs to `instanceId` (what Berth gave it, and its children inherited). */
async function processesOf(instanceId: string): Promise<number[]> {
  const marker = `BERTH_INSTANCE=${instanceId}\0`;
  const found: number[] = [];
  for (const name of await readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const environ = await readFile(`/proc/${name}/environ`, 'latin1').catch(() => '');
    if (environ.includes(marker)) found.push(Number(name));
  }
  return found;
}

async function post(base: string, path: string): Promise<string> {
  const res = await request(`${base}${path}`, { method: 'POST' });
  const text = await res.body.text();
  assert.equal(res.statusCode, 200, `${path}: ${text}`);
  return text;
}

/**
 * Polls (bounded: every 250 ms, at most `timeoutMs`) until `check` holds for
 * the instance's record. For what no log line signals: usage samples.
 */
async function pollInstance(node: BerthProcess, service: string, check: (r: InstanceView) => boolean, timeoutMs: number): Promise<InstanceView> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const [record] = (await node.instances(service)) as InstanceView[];
    if (record && check(record)) return record;
    if (Date.now() > deadline) throw new Error(`${service}: condition not met within ${timeoutMs} ms: ${JSON.stringify(record)}`);
    await sleep(250);
  }
}

describe('noisy neighbours held to their limits', { skip: SKIP }, () => {
  let project: Awaited<ReturnType<typeof makeProject>>;
  let node: BerthProcess;
  let loader: Loader | undefined;
  let gw = '';
  /** What the first test measured, for the second to judge. */
  let measured: { base: Figures; hogged: Figures } | undefined;

  before(async () => {
    project = await makeProject(NOISY);
    await writeFile(join(project.dir, 'loader.mjs'), LOADER);
    node = await BerthProcess.start(project.file, ['--log-level', 'info']);
    gw = String((await node.waitForLog((l) => l.event === 'node.ready')).gateway);
    const isolation = await node.waitForLog((l) => l.event === 'node.isolation');
    assert.match(String(isolation.cgroups), /memory yes, cpu yes, pids yes/, 'this machine enforces the limits under test');
    await node.waitForInstances((xs) => xs.length === 3 && xs.every((r) => r.status === 'passing'));
  });

  after(async () => {
    await loader?.kill();
    await node?.stop();
    // Berth removes its cgroups when it stops, its own node group included.
    if (node) assert.deepEqual(await nodeCgroupDirs(node), []);
    await project?.cleanup();
  });

  it('holds-a-cpu-burner-to-half-a-core-and-oom-kills-a-leaker-while-a-normal-service-answers-every-request', async (t) => {
    const [web] = await node.instances('web');
    const [burner] = await node.instances('burner');
    assert.ok(web?.pid && burner?.pid);
    const at = (r: { port: number }): string => `http://127.0.0.1:${r.port}`;
    const cpuFile = await cgroupFile(burner.pid, 'cpu', 'cpu.stat');

    const load = new Loader(join(project.dir, 'loader.mjs'), `${gw}/core/web/`);
    loader = load;
    await load.phase('warmup', WARMUP, false);
    const burn = { cpuSeconds: 0, wallSeconds: 0, throttled: 0 };
    const ooms: LogLine[] = [];
    const windows: { phase: 'A' | 'B'; from: number; to: number }[] = [];
    /** The B slices the leaker was killed and restarted in. */
    const leakSlices = new Set<string>();
    const slices = { A: 0, B: 0 };
    const slice = async (phase: 'A' | 'B'): Promise<string> => {
      const name = `${phase}${++slices[phase]}`;
      windows.push({ phase, ...(await load.phase(name, SLICE_REQUESTS)) });
      return name;
    };
    for (let round = 1; round <= ROUNDS; round++) {
      await slice('A');

      // The burner spins from now until the end of this B; every LEAK_EVERY rounds the leaker grows until the kernel kills it.
      const leaking = round % LEAK_EVERY === 1;
      const [leaker] = await node.instances('leaker');
      assert.equal(leaker?.status, 'passing', `the leaker is back before round ${round}`);
      const throttledBefore = await readCounter(cpuFile, 'nr_throttled');
      const cpuBefore = await cgroupCpuSeconds(burner.pid);
      const t0 = performance.now();
      await post(at(burner), '/control/burn');
      let back: Promise<LogLine> | undefined;
      if (leaking) {
        await post(at(leaker), `/control/leak?mb=8&everyMs=20&maxMb=${4 * 128}`);
        // Waits on log lines only: an admin API call is answered by the node process that is also the gateway.
        back = node.waitForLog((l) => l.event === 'instance.oom-killed' && l.instance === leaker.id && !ooms.includes(l), 15_000).then((oom) => {
          ooms.push(oom);
          return node.waitForLog((l) => l.event === 'instance.status' && l.instance === leaker.id && l.to === 'passing' && String(l.time) >= String(oom.time), 15_000);
        });
      }
      let returned = !leaking;
      void back?.then(
        () => (returned = true),
        () => (returned = true),
      );
      // Until the leaker is back: its kill, restart and start-up count as B, not as the next baseline.
      do {
        const name = await slice('B');
        if (leaking) leakSlices.add(name);
      } while (!returned);
      await back;
      await post(at(burner), '/control/idle');
      burn.wallSeconds += (performance.now() - t0) / 1000;
      burn.cpuSeconds += (await cgroupCpuSeconds(burner.pid)) - cpuBefore;
      burn.throttled += (await readCounter(cpuFile, 'nr_throttled')) - throttledBefore;
    }
    // Once more, uncounted, for the node's sampler below: burning through a whole sample interval.
    const burningSince = Date.now();
    await post(at(burner), '/control/burn');
    const { phases, gap } = await load.end();

    const pick = (pred: (name: string) => boolean): PhaseResult[] => Object.entries(phases).filter(([name]) => pred(name)).map(([, p]) => p);
    const base = figures(pick((name) => name.startsWith('A')));
    const hogged = figures(pick((name) => name.startsWith('B')));
    measured = { base, hogged };
    const cores = burn.cpuSeconds / burn.wallSeconds;
    // The same requests as the gateway timed them (its access lines, by time): without the loader's own wait for a CPU.
    const gatewaySide = (phase: 'A' | 'B'): number => {
      const spans = windows.filter((w) => w.phase === phase);
      const durations = node.logs
        .filter((l) => l.event === 'access' && l.service === 'web' && spans.some((w) => Date.parse(String(l.time)) >= w.from && Date.parse(String(l.time)) <= w.to))
        .map((l) => Number(l.durationMs))
        .sort((x, y) => x - y);
      return durations[Math.floor(0.99 * durations.length)] ?? NaN;
    };
    t.diagnostic(`${slices.A} baseline slices, ${slices.B} with the hogs on (the leaker OOM-killed and restarted in ${[...leakSlices].join(', ')}), ${SLICE_REQUESTS} requests each`);
    t.diagnostic(`p99 of each baseline slice: ${pick((name) => name.startsWith('A')).map((p) => figures([p]).p99).join(', ')} ms`);
    t.diagnostic(`p99 of each hogs-on slice: ${pick((name) => name.startsWith('B')).map((p) => figures([p]).p99).join(', ')} ms`);
    t.diagnostic(describeFigures('baseline (hogs idle)', base));
    t.diagnostic(describeFigures('hogs on', hogged));
    t.diagnostic(describeFigures('hogs on, the slices without an OOM kill', figures(pick((name) => name.startsWith('B') && !leakSlices.has(name)))));
    t.diagnostic(`p99 ratio ${(hogged.p99 / base.p99).toFixed(3)} (asked: at most ${P99_RATIO}); p50 ratio ${(hogged.p50 / base.p50).toFixed(3)}`);
    t.diagnostic(`as the gateway timed them (access log): p99 ${gatewaySide('A')} ms baseline, ${gatewaySide('B')} ms hogs on`);
    t.diagnostic(`burner, from its cgroup: ${cores.toFixed(3)} cores over ${burn.wallSeconds.toFixed(1)} s, throttled in ${burn.throttled} periods`);

    // The normal service: every request answered, and never killed.
    assert.equal(base.samples + base.errors.length, slices.A * SLICE_REQUESTS);
    assert.deepEqual(base.errors.slice(0, 5), [], `no error in the baseline (${base.errors.length} in all)`);
    assert.deepEqual(hogged.errors.slice(0, 5), [], `no error next to the hogs (${hogged.errors.length} in all)`);
    assert.deepEqual(gap.errors.slice(0, 5), [], `no error between the slices (${gap.errors.length} in all)`);
    const [webAfter] = await node.instances('web');
    assert.equal(webAfter?.restarts, 0, 'the normal service was never restarted');
    assert.equal(webAfter?.pid, web.pid, 'the normal service still runs its first process');
    assert.equal(webAfter?.lastExit, null);
    assert.deepEqual(node.logs.filter((l) => l.service === 'web' && (l.event === 'instance.exited' || l.event === 'instance.oom-killed')), []);

    // The burner: held near half a core by its quota, though it asks for a whole one.
    assert.ok(cores <= 0.6, `the burner used ${cores.toFixed(3)} cores`);
    assert.ok(cores >= 0.3, `the burner did burn: ${cores.toFixed(3)} cores`);
    assert.ok(burn.throttled > 0, 'its quota throttled it');
    // …and the node's own sampler says so, over an interval it burned throughout (one that began after burningSince).
    const sampled = await pollInstance(node, 'burner', (r) => r.usage !== null && Date.parse(r.usage.at) >= burningSince + SAMPLE_MS + 1_000, 3 * SAMPLE_MS);
    t.diagnostic(`burner, from the admin API: ${sampled.usage?.cpuPercent?.toFixed(1)}% of a core (limit ${sampled.limits?.cpu} core)`);
    assert.equal(sampled.limits?.cpu, 0.5);
    assert.ok(sampled.usage?.cpuPercent !== null && sampled.usage?.cpuPercent !== undefined);
    assert.ok(sampled.usage.cpuPercent <= 60, `cpuPercent ${sampled.usage.cpuPercent}`);
    assert.ok(sampled.usage.cpuPercent >= 30, `cpuPercent ${sampled.usage.cpuPercent}: it was burning`);
    await post(at(sampled), '/control/idle');

    // The leaker: killed by the kernel at its limit each time it was set off, said so, and restarted.
    assert.equal(ooms.length, Math.ceil(ROUNDS / LEAK_EVERY));
    for (const oom of ooms) {
      assert.equal(oom.memoryLimit, 128 * 1024 * 1024);
      assert.equal(oom.msg, 'oom-killed (memory limit 128MiB)');
    }
    const [leaker] = await node.instances('leaker');
    assert.equal(leaker?.status, 'passing', 'the leaker runs again');
    assert.equal(leaker.restarts, ooms.length, 'restarted once per OOM kill');
    assert.equal(leaker.lastExit?.oomKilled, true);
    assert.equal(leaker.lastExit.signal, 'SIGKILL');
  });

  // Measured on this machine (2 shared cores; kernel HZ=250, preempt=none).
  // The pooled p99 next to both hogs: 1.3-3.6× the baseline's with 100 ms CFS
  // periods (9 runs), 1.6-3.0× with 10 ms periods (11 runs); p50 unchanged.
  // The gateway's own timing of the same requests (its access lines) says
  // 1.6-2.8×: not the loader's doing. Why, traced with `perf sched`: a thread
  // woken where a CPU-bound task runs waits for that task's slice, then for
  // the next scheduler tick (4 ms here), whatever its quota (a 1 ms quota
  // still ran 4 ms at a stretch); the gateway's and the instance's threads
  // queued 3.8-4.0 ms that way. The same test with one hog left idle, as the
  // gateway timed it: the burner alone 1.15-1.45× (3 runs), the leaker alone
  // 0.70-1.18× (5). The idle class for the burner's group (cpu.idle on
  // Berth's parent group: any wakeup preempts it at once) took the burner
  // alone to 0.88-1.11× (5 runs) but not both hogs (1.0-3.0×, 6 runs: the
  // leaker's allocation, OOM kill and restart have no CPU limit), and it
  // would make a limit mean next to no CPU under contention: not done. No
  // steady gain from the hogs' cpu.shares at 2 up to the root group or 0.1
  // ms scheduler slices for the gateway and the instance. 25% does not hold
  // here: the assertion is left as asked and marked todo, reported rather
  // than relaxed. More cores or a 1 ms tick would be what changes it.
  it(
    'keeps-the-p99-of-the-normal-service-within-25-percent-of-its-baseline',
    { todo: 'does not hold on this 2-core machine: p99 next to both hogs measured at 1.6-3.0× the baseline (see the diagnostics and the comment above)' },
    () => {
      assert.ok(measured, 'measured by the test before');
      const { base, hogged } = measured;
      assert.ok(hogged.p99 <= P99_RATIO * base.p99, `p99 ${hogged.p99} ms next to the hogs, baseline ${base.p99} ms: ${(hogged.p99 / base.p99).toFixed(2)}×, more than ${P99_RATIO}×`);
    },
  );
});

const BOMB = testManifest(`groups:
  core:
    # The checks below come from one address as fast as they are answered: the edge's per-address rate limit would refuse them.
    rateLimit: false
    services:
      web:
        command: node web.mjs
        health: { http: /health, interval: 1s }
      bomb:
        command: node forkbomb.mjs
        resources: { pids: 64 }
`);
const PIDS_LIMIT = 64;
/** How long the bomb keeps pushing at its limit while the node is asked to answer. */
const PRESSURE_MS = 3_000;

describe('a fork bomb held to its pids limit', { skip: SKIP }, () => {
  let project: Awaited<ReturnType<typeof makeProject>>;
  let node: BerthProcess | undefined;

  before(async () => {
    project = await makeProject(BOMB);
  });

  after(async () => {
    await node?.stop();
    // Berth removes its cgroups when it stops, its own node group included.
    if (node) assert.deepEqual(await nodeCgroupDirs(node), []);
    await project?.cleanup();
  });

  it('stops-at-64-pids-while-the-node-keeps-answering-and-leaves-nothing-behind', async (t) => {
    const live = await BerthProcess.start(project.file, ['--log-level', 'info']);
    node = live;
    const gw = String((await live.waitForLog((l) => l.event === 'node.ready')).gateway);
    await live.waitForInstances((xs) => xs.find((r) => r.service === 'web')?.status === 'passing');
    const [bomb] = await live.instances('bomb');
    assert.ok(bomb?.pid);
    const refused = await live.waitForLog((l) => l.event === 'instance.output' && l.instance === bomb.id && String(l.msg).startsWith('fork refused'));
    t.diagnostic(`the bomb: ${String(refused.msg)}`);
    assert.match(String(refused.msg), /^fork refused: EAGAIN/);

    // While it keeps pushing: its count never passes the limit, and the node answers within a second each time.
    const pidsFile = await cgroupFile(bomb.pid, 'pids', 'pids.current');
    let most = 0;
    let answers = 0;
    const slowest = { admin: 0, gateway: 0 };
    const deadline = performance.now() + PRESSURE_MS;
    while (performance.now() < deadline) {
      most = Math.max(most, await readCounter(pidsFile));
      const t0 = performance.now();
      const admin = await request(`${live.admin}/v1/instances`, { headers: live.auth(), headersTimeout: 1_000, bodyTimeout: 1_000 });
      await admin.body.text();
      const t1 = performance.now();
      const res = await request(`${gw}/core/web/`, { headersTimeout: 1_000, bodyTimeout: 1_000 });
      await res.body.text();
      const t2 = performance.now();
      assert.equal(admin.statusCode, 200);
      assert.equal(res.statusCode, 200);
      slowest.admin = Math.max(slowest.admin, t1 - t0);
      slowest.gateway = Math.max(slowest.gateway, t2 - t1);
      answers++;
      most = Math.max(most, await readCounter(pidsFile));
    }
    const maxEvents = await readCounter(await cgroupFile(bomb.pid, 'pids', 'pids.events'), 'max');
    const sampled = await pollInstance(live, 'bomb', (r) => r.usage !== null, 2 * SAMPLE_MS);
    const members = await processesOf(bomb.id);
    t.diagnostic(
      `pids.current at most ${most} (limit ${PIDS_LIMIT}), forks refused by the kernel ${maxEvents} times; admin API: ${sampled.usage?.processes} processes, ${sampled.usage?.threads} threads; ` +
        `${answers} rounds of answers, slowest admin ${slowest.admin.toFixed(1)} ms, gateway ${slowest.gateway.toFixed(1)} ms`,
    );
    assert.ok(most <= PIDS_LIMIT && most >= PIDS_LIMIT - 2, `pids.current peaked at ${most}`);
    assert.ok(maxEvents > 0, 'the kernel refused forks at the limit');
    assert.equal(sampled.limits?.pids, PIDS_LIMIT);
    assert.ok(sampled.usage && sampled.usage.threads <= PIDS_LIMIT, `threads ${sampled.usage?.threads}`);
    assert.ok(sampled.usage.processes > PIDS_LIMIT / 2, `it forked: ${sampled.usage.processes} processes`);
    assert.ok(answers > 0);
    assert.ok(members.length > PIDS_LIMIT / 2, `${members.length} processes of the bomb found`);
    const [still] = await live.instances('bomb');
    assert.equal(still?.restarts, 0, 'the bomb itself was not killed by its limit');

    const stopped = await live.stop();
    assert.equal(stopped.code, 0);
    await waitForExit(members, 2_000);
    assert.deepEqual(await processesOf(bomb.id), [], 'no process of the bomb is left');
    assert.equal(existsSync(pidsFile), false, 'its cgroup is gone');
  });
});
