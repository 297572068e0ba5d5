#!/usr/bin/env node
// bench/gateway: Berth's gateway against the same instance reached directly
// and through nginx, measured in one run, interleaved, several rounds.
// A benchmark, not a test: it prints figures and ratios and exits 0.
// Method and recorded figures: docs/performance.md.
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { cpus, release, tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const CLK_TCK = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout?.trim()) || 100;
const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(HERE, '../..');
const BERTH_BIN = join(ROOT, 'bin/berth.js');

/** The node flags on a script's `#!/usr/bin/env -S node …` line. */
function shebangFlags(script) {
  const first = readFileSync(script, 'utf8').split('\n', 1)[0] ?? '';
  const words = first.replace(/^#!\S*\s*(-S\s+)?/, '').split(/\s+/).filter(Boolean);
  return words[0] === 'node' ? words.slice(1) : [];
}
const ROUTE = '/bench/echo';
const REQUEST_PATH = '/hello';
const PROJECT_TARGET = { reqRatio: 0.6, p99Ratio: 2 };
const ALL_TARGETS = ['direct', 'nginx', 'node-proxy', 'berth', 'berth+log'];
const DEFAULT_TARGETS = ['direct', 'nginx', 'berth', 'berth+log'];

const HELP = `usage: npm run bench:gateway -- [options]

Measures Berth's gateway against direct-to-instance and nginx, interleaved.

  --duration <time>     per round and target (default 10s)
  --warmup <time>       per target, before the first round and again before
                        each of its rounds, not measured (default 2s)
  --rounds <n>          rounds of every target (default 3)
  --connections <n>     wrk connections (default 64)
  --threads <n>         wrk threads (default 1)
  --replicas <n>        instances of the service (default 1; try 3)
  --targets <list>      some of ${ALL_TARGETS.join(',')}
                        (default ${DEFAULT_TARGETS.join(',')});
                        berth: log.level warn (no access log lines);
                        berth+log: log.level info, access log JSON to /dev/null;
                        node-proxy: node:http + Berth's HTTP/1.1 client and nothing else
                        (node-proxy.mjs), the floor for a Node gateway
  --max-other <pct>     a round during which processes the bench did not start,
                        plus the hypervisor's steal, took more than pct % of a
                        core is repeated (default 25)
  --retries <n>         repeats of a noisy round at most (default 2; then kept, with a warning)
  --wait-quiet <time>   before starting, wait up to this long for such other
                        load to fall under --max-other (default 0: do not wait)
  --no-pin              do not pin processes to CPUs
  --profile             run the berth nodes (and node-proxy) with --cpu-prof;
                        print each one's top 25 self-time functions over its
                        measured rounds, in µs per request (the figures then
                        include the profiler's cost)
  --node-flags <flags>  extra Node.js flags for the Berth nodes and node-proxy,
                        space-separated (--node-flags=--trace-gc; output goes
                        to the log files kept with --keep)
  --json                print the results as JSON instead of tables
  --json-out <file>     also write the JSON to a file (tables still printed)
  --keep                keep the temp dir (manifests, logs, profiles)
  -h, --help`;

// ---------------------------------------------------------------- options

function parseOptions(argv) {
  let values;
  try {
    values = parseOptionValues(argv);
  } catch (err) {
    throw new UsageError(`${err.message}\n(npm run bench:gateway -- --help for usage)`);
  }
  if (values.help) {
    process.stdout.write(`${HELP}\n`);
    process.exit(0);
  }
  return validOptions(values);
}

function parseOptionValues(argv) {
  return parseArgs({
    args: argv,
    options: {
      duration: { type: 'string', default: '10s' },
      warmup: { type: 'string', default: '2s' },
      rounds: { type: 'string', default: '3' },
      connections: { type: 'string', default: '64' },
      threads: { type: 'string', default: '1' },
      replicas: { type: 'string', default: '1' },
      targets: { type: 'string', default: DEFAULT_TARGETS.join(',') },
      'max-other': { type: 'string', default: '25' },
      retries: { type: 'string', default: '2' },
      'wait-quiet': { type: 'string', default: '0s' },
      'no-pin': { type: 'boolean', default: false },
      profile: { type: 'boolean', default: false },
      'node-flags': { type: 'string', default: '' },
      json: { type: 'boolean', default: false },
      'json-out': { type: 'string' },
      keep: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  }).values;
}

function validOptions(values) {
  const targets = values.targets.split(',').map((t) => t.trim()).filter(Boolean);
  for (const t of targets) if (!ALL_TARGETS.includes(t)) throw new UsageError(`unknown target ${t} (expected some of ${ALL_TARGETS.join(',')})`);
  return {
    durationS: seconds(values.duration, 'duration'),
    warmupS: seconds(values.warmup, 'warmup', true),
    rounds: positiveInt(values.rounds, 'rounds'),
    connections: positiveInt(values.connections, 'connections'),
    threads: positiveInt(values.threads, 'threads'),
    replicas: positiveInt(values.replicas, 'replicas'),
    targets: ALL_TARGETS.filter((t) => targets.includes(t)),
    maxOther: positiveInt(values['max-other'], 'max-other'),
    retries: nonNegativeInt(values.retries, 'retries'),
    waitQuietS: seconds(values['wait-quiet'], 'wait-quiet', true),
    pin: !values['no-pin'],
    profile: values.profile,
    nodeFlags: values['node-flags'].split(/\s+/).filter(Boolean),
    json: values.json,
    jsonOut: values['json-out'] ? resolve(values['json-out']) : null,
    keep: values.keep,
  };
}

class UsageError extends Error {}

function seconds(text, name, zeroOk = false) {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(text);
  if (!m) throw new UsageError(`--${name}: expected a duration like 10s, got ${text}`);
  const value = Number(m[1]) * (m[2] === 'ms' ? 0.001 : m[2] === 'm' ? 60 : 1);
  if (value < 1 && !(zeroOk && value === 0)) throw new UsageError(`--${name}: at least 1s (wrk counts whole seconds)`);
  return Math.round(value);
}

function nonNegativeInt(text, name) {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 0) throw new UsageError(`--${name}: expected an integer ≥ 0, got ${text}`);
  return n;
}

function positiveInt(text, name) {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1) throw new UsageError(`--${name}: expected a positive integer, got ${text}`);
  return n;
}

// ---------------------------------------------------------------- processes

/** Everything this run started; killed on the way out, whatever the way. */
const children = new Set();

function start(name, file, args, { stdout = 'ignore', stderr = 'ignore', env } = {}) {
  const proc = spawn(file, args, { stdio: ['ignore', stdout, stderr], detached: true, env: env ?? process.env });
  const child = { name, proc, exited: false, exit: null };
  child.exit = new Promise((resolveExit) => {
    proc.once('exit', (code, signal) => {
      child.exited = true;
      children.delete(child);
      resolveExit({ code, signal });
    });
    proc.once('error', (err) => {
      child.exited = true;
      children.delete(child);
      resolveExit({ code: null, signal: null, error: err });
    });
  });
  children.add(child);
  return child;
}

/** Signal, wait up to `graceMs`, then SIGKILL the child's whole process group. */
async function stop(child, signal, graceMs) {
  if (child.exited) return;
  try {
    process.kill(child.proc.pid, signal);
  } catch {
    /* already gone */
  }
  const timer = sleep(graceMs).then(() => 'timeout');
  if ((await Promise.race([child.exit, timer])) === 'timeout') {
    killGroup(child.proc.pid);
    await Promise.race([child.exit, sleep(2000)]);
  }
}

function killGroup(pid) {
  for (const target of [-pid, pid]) {
    try {
      process.kill(target, 'SIGKILL');
    } catch {
      /* already gone */
    }
  }
}

/** What an interrupted run removes once its processes are stopped. */
const run = { tmp: null };

let cleaning;
/** Stops every child (Berth gracefully: it drains its instances and writes its profile). */
function cleanup() {
  cleaning ??= Promise.all(
    // Node processes exit on SIGTERM, writing their CPU profile when --profile asked for one.
    [...children].map((c) => (c.name.startsWith('berth') ? stop(c, 'SIGTERM', 15_000) : c.name === 'node-proxy' ? stop(c, 'SIGTERM', 5000) : c.name === 'nginx' ? stop(c, 'SIGQUIT', 3000) : stop(c, 'SIGKILL', 1000))),
  );
  return cleaning;
}

process.on('exit', () => {
  // Last resort (an uncaught error, a second Ctrl-C): nothing this run started survives it.
  for (const c of children) killGroup(c.proc.pid);
});

function taskset(args) {
  spawnSync('taskset', args, { stdio: 'ignore' });
}

/** Pins every thread of a running process (taskset -p alone moves only the main thread). */
function pinPid(pid, cpu) {
  taskset(['-a', '-pc', String(cpu), String(pid)]);
}

function withCpu(pin, cpu, file, args) {
  return pin ? ['taskset', ['-c', String(cpu), file, ...args]] : [file, args];
}

// ---------------------------------------------------------------- /proc

function rssBytes(pid) {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const m = /VmRSS:\s+(\d+) kB/.exec(status);
    return m ? Number(m[1]) * 1024 : null;
  } catch {
    return null;
  }
}

function childPids(pid) {
  const out = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      // Fields after the command name (which may contain spaces): state ppid ...
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid) out.push(Number(entry));
    } catch {
      /* exited meanwhile */
    }
  }
  return out;
}

/**
 * Clock ticks per CPU from /proc/stat: `idle` (idle + iowait), `irq` (irq +
 * softirq; loopback TCP is mostly softirq work, which the kernel also charges
 * to the process it interrupted), `steal` (the hypervisor ran someone else).
 * Busy time is taken as wall time less idle and steal: the other fields are
 * tick samples, and fell short of wall time on this VM under load.
 */
function cpuTimes() {
  const cores = [];
  for (const line of readFileSync('/proc/stat', 'utf8').split('\n')) {
    const m = /^cpu(\d+)\s+(.*)$/.exec(line);
    if (!m) continue;
    const [, , , idle, iowait, irq, softirq, steal] = m[2].split(/\s+/).map(Number);
    cores[Number(m[1])] = { idle: idle + iowait, irq: irq + softirq, steal };
  }
  return { at: process.hrtime.bigint(), cores };
}

/** Wall time between two cpuTimes() in clock ticks, and per-field deltas summed over cores. */
function cpuDelta(before, after) {
  const wall = Math.max(1, (Number(after.at - before.at) / 1e9) * CLK_TCK);
  const sum = (field) => after.cores.reduce((acc, c, i) => acc + c[field] - before.cores[i][field], 0);
  const busyPerCore = after.cores.map((c, i) => Math.min(100, Math.max(0, Math.round((1 - (c.idle - before.cores[i].idle) / wall) * 100))));
  const busy = after.cores.length * wall - sum('idle') - sum('steal');
  return { wall, busy, busyPerCore, irq: sum('irq'), steal: sum('steal') };
}

/** utime + stime of one process (all its threads), and of its reaped children, in clock ticks; null once it is gone. */
function cpuTicks(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // After the command: state(0) ppid(1) … utime(11) stime(12) cutime(13) cstime(14).
    return { self: Number(f[11]) + Number(f[12]), children: Number(f[13]) + Number(f[14]) };
  } catch {
    return null;
  }
}

/** % of one core not idle over `ms`, steal included (the bench itself is asleep meanwhile). */
async function processLoad(ms) {
  const a = cpuTimes();
  await sleep(ms);
  const d = cpuDelta(a, cpuTimes());
  return Math.round(((d.busy + d.steal) / d.wall) * 100);
}

// ---------------------------------------------------------------- helpers

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function freePort() {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolvePort(port));
    });
  });
}

async function getJson(url, token, timeoutMs = 2000) {
  const res = await fetch(url, { headers: { authorization: `Bearer ${token}` }, signal: AbortSignal.timeout(timeoutMs) });
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`);
  return res.json();
}

async function waitFor(what, timeoutMs, probe, alive) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    if (alive && !alive()) throw new Error(`${what}: the process exited`);
    try {
      const value = await probe();
      if (value) return value;
    } catch (err) {
      last = err;
    }
    await sleep(100);
  }
  throw new Error(`${what}: not ready after ${timeoutMs / 1000}s${last ? ` (${last.message})` : ''}`);
}

function tail(file, lines = 15) {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '';
  }
}

function fill(template, values) {
  return template.replace(/\{\{(\w+)\}\}/g, (_, key) => {
    if (!(key in values)) throw new Error(`template: no value for {{${key}}}`);
    return String(values[key]);
  });
}

function median(xs) {
  const v = xs.filter((x) => typeof x === 'number' && Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return null;
  const mid = Math.floor(v.length / 2);
  return v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
}

function versionOf(file, args) {
  const r = spawnSync(file, args, { encoding: 'utf8' });
  return `${r.stdout ?? ''}${r.stderr ?? ''}`.split('\n').find((l) => l.trim())?.trim() ?? 'unknown';
}

/** Which Berth was measured: the commit, whether src/ differs from it, and a hash of the compiled code that ran. */
function codeVersion() {
  const git = (args) => spawnSync('git', args, { cwd: ROOT, encoding: 'utf8' }).stdout?.trim() ?? '';
  const hash = createHash('sha256');
  const walk = (dir) => {
    for (const entry of readdirSync(dir, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) walk(path);
      else if (entry.name.endsWith('.js') && !entry.name.endsWith('.test.js')) hash.update(entry.name).update(readFileSync(path));
    }
  };
  walk(join(ROOT, 'dist/src'));
  return { commit: git(['rev-parse', '--short', 'HEAD']) || 'unknown', srcChanged: git(['status', '--porcelain', 'src']).length > 0, dist: hash.digest('hex').slice(0, 12) };
}

function which(name, extra = []) {
  for (const dir of [...(process.env.PATH ?? '').split(':'), ...extra]) {
    if (dir && existsSync(join(dir, name))) return join(dir, name);
  }
  return null;
}

const log = (line) => process.stderr.write(`${line}\n`);

// ---------------------------------------------------------------- berth

/** Starts one Berth node on the bench manifest and waits until the gateway answers through a passing instance. */
async function startBerth({ name, tmp, opts, accessLog }) {
  const dir = join(tmp, name.replace(/\W/g, '-'));
  const dataDir = join(dir, 'data');
  const manifest = join(dir, 'berth.yaml');
  mkdirSync(dir, { recursive: true });
  writeFileSync(
    manifest,
    fill(readFileSync(join(HERE, 'berth.template.yaml'), 'utf8'), {
      dataDir: JSON.stringify(dataDir),
      logLevel: accessLog ? 'info' : 'warn',
      node: JSON.stringify(process.execPath),
      instanceScript: JSON.stringify(join(HERE, 'upstream.mjs')),
      replicas: opts.replicas,
    }),
  );
  const logFile = join(dir, 'berth.log');
  // The access-log variant writes its lines where they cost what writing costs but fill no disk.
  const out = openSync(accessLog ? '/dev/null' : logFile, 'w');
  const err = openSync(join(dir, 'berth.stderr'), 'w');
  const profileDir = opts.profile ? join(dir, 'profile') : null;
  // Berth as users run it: with the runtime flags its executable's shebang sets.
  const nodeArgs = [...shebangFlags(BERTH_BIN), ...opts.nodeFlags, ...(profileDir ? ['--cpu-prof', '--cpu-prof-dir', profileDir] : [])];
  const [file, args] = withCpu(opts.pin, 1, process.execPath, [...nodeArgs, BERTH_BIN, 'up', '-f', manifest, '--log-format', 'json']);
  const child = start(name, file, args, { stdout: out, stderr: err });
  closeSync(out);
  closeSync(err);
  const alive = () => !child.exited;
  try {
    // node.json carries the admin and gateway URLs whatever the log level (node.ready is an info line).
    const info = await waitFor(`${name} node file`, 30_000, () => JSON.parse(readFileSync(join(dataDir, 'node.json'), 'utf8')), alive);
    // The admin token the node wrote on its first start (docs/security.md).
    info.token = readFileSync(join(dataDir, 'admin-token'), 'utf8').trim();
    const instances = await waitFor(`${name} passing instances`, 30_000, async () => {
      const list = await getJson(`${info.admin}/v1/services/echo/instances`, info.token);
      const passing = list.filter((r) => r.status === 'passing');
      return passing.length >= opts.replicas ? passing : null;
    }, alive);
    const url = `${info.gateway}${ROUTE}${REQUEST_PATH}`;
    await waitFor(`${name} gateway route`, 15_000, async () => (await fetch(url, { signal: AbortSignal.timeout(2000) })).status === 200, alive);
    return { name, child, pid: child.proc.pid, info, instances, url, dir, profileDir, accessLog, logFile: accessLog ? null : logFile };
  } catch (e) {
    throw new Error(`${e.message}\n--- ${name} stderr ---\n${tail(join(dir, 'berth.stderr'))}\n--- ${name} log ---\n${accessLog ? '(sent to /dev/null)' : tail(logFile)}`);
  }
}

const pidsOf = (node) => node.instances.map((r) => r.pid).filter(Boolean);

/** Re-reads a node's instances (a restart gives a new pid) and pins them to CPU 0 with wrk. */
async function refreshInstances(node, opts, warnings) {
  const list = (await getJson(`${node.info.admin}/v1/services/echo/instances`, node.info.token)).filter((r) => r.status === 'passing');
  const before = new Map(node.instances.map((r) => [r.id, r]));
  for (const r of list) {
    const old = before.get(r.id);
    if (old && (old.pid !== r.pid || old.restarts !== r.restarts)) warnings.add(`${node.name}: instance ${r.id} restarted during the run (pid ${old.pid} → ${r.pid})`);
  }
  if (list.length < opts.replicas) warnings.add(`${node.name}: only ${list.length} of ${opts.replicas} instances passing at some round`);
  node.instances = list.length > 0 ? list : node.instances;
  if (opts.pin) for (const r of node.instances) if (r.pid) pinPid(r.pid, 0);
}

// ---------------------------------------------------------------- nginx

async function startNginx({ tmp, opts, instances, nginxBin }) {
  const port = await freePort();
  const conf = join(tmp, 'nginx.conf');
  const errorLog = join(tmp, 'nginx-error.log');
  writeFileSync(
    conf,
    fill(readFileSync(join(HERE, 'nginx.template.conf'), 'utf8'), {
      tmp,
      port,
      servers: instances.map((r) => `    server ${r.address}:${r.port};`).join('\n'),
    }),
  );
  const stderr = openSync(join(tmp, 'nginx.stderr'), 'w');
  const [file, args] = withCpu(opts.pin, 1, nginxBin, ['-p', `${tmp}/`, '-c', conf, '-e', errorLog]);
  const child = start('nginx', file, args, { stderr });
  closeSync(stderr);
  const url = `http://127.0.0.1:${port}${ROUTE}${REQUEST_PATH}`;
  try {
    await waitFor('nginx', 10_000, async () => (await fetch(url, { signal: AbortSignal.timeout(2000) })).status === 200, () => !child.exited);
  } catch (e) {
    throw new Error(`${e.message}\n--- nginx ---\n${tail(join(tmp, 'nginx.stderr'))}\n${tail(errorLog)}`);
  }
  const workers = childPids(child.proc.pid);
  return { child, url, port, masterPid: child.proc.pid, workerPid: workers[0] ?? null };
}

// ---------------------------------------------------------------- node-proxy

async function startNodeProxy({ tmp, opts, instances }) {
  const port = await freePort();
  const stderr = openSync(join(tmp, 'node-proxy.stderr'), 'w');
  const profileDir = opts.profile ? join(tmp, 'node-proxy-profile') : null;
  const nodeArgs = [...opts.nodeFlags, ...(profileDir ? ['--cpu-prof', '--cpu-prof-dir', profileDir] : [])];
  const [file, args] = withCpu(opts.pin, 1, process.execPath, [...nodeArgs, join(HERE, 'node-proxy.mjs')]);
  const child = start('node-proxy', file, args, { stderr, env: { ...process.env, PORT: String(port), PREFIX: ROUTE, INSTANCES: instances.map((r) => `${r.address}:${r.port}`).join(',') } });
  closeSync(stderr);
  const url = `http://127.0.0.1:${port}${ROUTE}${REQUEST_PATH}`;
  try {
    await waitFor('node-proxy', 10_000, async () => (await fetch(url, { signal: AbortSignal.timeout(2000) })).status === 200, () => !child.exited);
  } catch (e) {
    throw new Error(`${e.message}\n--- node-proxy ---\n${tail(join(tmp, 'node-proxy.stderr'))}`);
  }
  return { name: 'node-proxy', child, url, pid: child.proc.pid, profileDir };
}

// ---------------------------------------------------------------- wrk

const UNIT_MS = { us: 0.001, ms: 1, s: 1000, m: 60_000 };

/** Parses wrk --latency output: req/s, p50, p99, average latency, error counts. */
export function parseWrk(text) {
  const num = (re) => {
    const m = re.exec(text);
    return m ? Number(m[1]) : null;
  };
  const latency = (label) => {
    const m = new RegExp(`^\\s*${label}\\s+([\\d.]+)(us|ms|s|m)\\b`, 'm').exec(text);
    return m ? Number(m[1]) * UNIT_MS[m[2]] : null;
  };
  const socket = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(text);
  const socketErrors = socket ? socket.slice(1, 5).reduce((a, b) => a + Number(b), 0) : 0;
  return {
    requests: num(/(\d+) requests in/),
    reqPerSec: num(/Requests\/sec:\s+([\d.]+)/),
    avgMs: latency('Latency'),
    p50Ms: latency('50%'),
    p99Ms: latency('99%'),
    non2xx: num(/Non-2xx or 3xx responses: (\d+)/) ?? 0,
    socketErrors,
    socketDetail: socket ? { connect: +socket[1], read: +socket[2], write: +socket[3], timeout: +socket[4] } : null,
  };
}

/**
 * One wrk run. Besides wrk's figures: the busy share of each core, and where
 * the CPU went: the gateway process, the instances, wrk (reaped child, so it
 * shows in this process's cutime), and everything else on the machine.
 */
async function runWrk({ url, durationS, opts, wrkBin, rssPids, gatewayPid, instancePids }) {
  const args = [`-t${opts.threads}`, `-c${opts.connections}`, `-d${durationS}s`, '--latency', url];
  const [file, fargs] = withCpu(opts.pin, 0, wrkBin, args);
  const ticks = (pids) => pids.reduce((sum, pid) => sum + (cpuTicks(pid)?.self ?? 0), 0);
  // Kernel threads (ksoftirqd above all) do part of loopback TCP's work: counted apart from the noise.
  const kernelPids = childPids(2);
  const before = { cores: cpuTimes(), gateway: gatewayPid ? ticks([gatewayPid]) : 0, instances: ticks(instancePids), me: cpuTicks(process.pid), kernel: ticks(kernelPids) };
  const child = start('wrk', file, fargs, { stdout: 'pipe', stderr: 'pipe' });
  let output = '';
  child.proc.stdout.on('data', (d) => (output += d));
  child.proc.stderr.on('data', (d) => (output += d));
  // RSS sampled once a second; the figure kept is the last, taken at the end of the round.
  const rss = {};
  const sample = () => {
    for (const [key, pid] of Object.entries(rssPids)) if (pid) rss[key] = rssBytes(pid) ?? rss[key] ?? null;
  };
  const sampler = setInterval(sample, 1000);
  const killer = setTimeout(() => killGroup(child.proc.pid), (durationS + 15) * 1000);
  const { code, signal } = await child.exit;
  clearInterval(sampler);
  clearTimeout(killer);
  sample();
  const after = { cores: cpuTimes(), gateway: gatewayPid ? ticks([gatewayPid]) : 0, instances: ticks(instancePids), me: cpuTicks(process.pid), kernel: ticks(kernelPids) };
  if (code !== 0) throw new Error(`wrk exited with ${signal ?? code}:\n${output}`);
  const parsed = parseWrk(output);
  if (parsed.reqPerSec === null) throw new Error(`cannot read wrk's output:\n${output}`);
  const d = cpuDelta(before.cores, after.cores);
  const wallTicks = d.wall;
  const used = {
    gateway: after.gateway - before.gateway,
    instances: after.instances - before.instances,
    wrk: after.me.children - before.me.children,
    bench: after.me.self - before.me.self,
    kernel: after.kernel - before.kernel,
  };
  // Busy time on the machine that none of the benchmark's processes account for: the noise.
  const other = Math.max(0, d.busy - used.gateway - used.instances - used.wrk - used.bench - used.kernel);
  const pct = (t) => Math.round((t / wallTicks) * 100);
  const perRequestTicks = gatewayPid ? used.gateway : used.instances;
  return {
    ...parsed,
    rss,
    cpu: d.busyPerCore,
    cpuUse: { gateway: gatewayPid ? pct(used.gateway) : null, instances: pct(used.instances), wrk: pct(used.wrk), kernel: pct(used.kernel), irq: pct(d.irq), other: pct(other), steal: pct(d.steal) },
    cpuUsPerRequest: parsed.requests ? (perRequestTicks * (1e6 / CLK_TCK)) / parsed.requests : null,
  };
}

// ---------------------------------------------------------------- profile

/**
 * Self time per function from a V8 .cpuprofile, idle excluded, plus a roll-up
 * by origin. With `windows` ([start, end] in µs of the monotonic clock, which
 * V8's profiler and process.hrtime share), only samples inside them count:
 * the measured rounds, not start-up or the other targets' rounds.
 */
export function summarizeProfile(profile, { top = 25, windows = null } = {}) {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const self = new Map();
  const { samples, timeDeltas } = profile;
  let t = profile.startTime;
  for (let i = 0; i < samples.length; i++) {
    t += timeDeltas[i];
    if (windows && !windows.some(([a, b]) => t >= a && t <= b)) continue;
    // A sample lasts until the next one is taken.
    const dt = i + 1 < timeDeltas.length ? timeDeltas[i + 1] : 0;
    self.set(samples[i], (self.get(samples[i]) ?? 0) + Math.max(dt, 0));
  }
  const fns = new Map();
  const origins = new Map();
  let busy = 0;
  let idle = 0;
  for (const [id, us] of self) {
    const { callFrame: f } = byId.get(id);
    if (f.functionName === '(idle)') {
      idle += us;
      continue;
    }
    busy += us;
    const where = f.url ? `${shortUrl(f.url)}:${f.lineNumber + 1}` : '';
    const key = `${f.functionName || '(anonymous)'}\t${where}`;
    fns.set(key, (fns.get(key) ?? 0) + us);
    const origin = originOf(f);
    origins.set(origin, (origins.get(origin) ?? 0) + us);
  }
  const pct = (us) => (busy > 0 ? (us / busy) * 100 : 0);
  return {
    wallMs: windows ? windows.reduce((a, [x, y]) => a + (y - x), 0) / 1000 : (profile.endTime - profile.startTime) / 1000,
    busyMs: busy / 1000,
    idleMs: idle / 1000,
    top: [...fns]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([key, us]) => {
        const [fn, where] = key.split('\t');
        return { function: fn, location: where, selfMs: us / 1000, selfPct: pct(us) };
      }),
    origins: [...origins].sort((a, b) => b[1] - a[1]).map(([origin, us]) => ({ origin, selfMs: us / 1000, selfPct: pct(us) })),
  };
}

function shortUrl(url) {
  const path = url.startsWith('file://') ? fileURLToPath(url) : url;
  if (path.startsWith('/')) {
    const nm = path.lastIndexOf('/node_modules/');
    return nm === -1 ? relative(ROOT, path) : path.slice(nm + 1);
  }
  return path;
}

function originOf(f) {
  if (['(program)', '(garbage collector)', '(root)'].includes(f.functionName) && !f.url) return f.functionName;
  if (!f.url) return 'native (V8 builtins, C++)';
  const url = shortUrl(f.url);
  const nm = /^node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (nm) return `npm: ${nm[1]}`;
  if (url.startsWith('node:')) {
    const mod = url.replace(/^node:(internal\/)?/, '');
    if (/^(http|_http_|http_parser|streams\/|stream)/.test(mod)) return 'node: http + streams';
    if (/^(net|stream_base_commons|dgram|dns|timers|async_hooks|process\/task_queues)/.test(mod)) return 'node: net, timers, ticks';
    if (/^deps\/undici/.test(mod)) return 'node: bundled undici (fetch)';
    return 'node: other';
  }
  if (url.startsWith('dist/src/')) return `berth: ${url.split('/')[2]}`;
  return url;
}

function readProfiles(dir, windows) {
  if (!dir || !existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((f) => f.endsWith('.cpuprofile'))
    .map((f) => ({ file: join(dir, f), ...summarizeProfile(JSON.parse(readFileSync(join(dir, f), 'utf8')), { windows: windows.length ? windows : null }) }));
}

// ---------------------------------------------------------------- output

const fmtInt = (n) => (n === null ? '–' : Math.round(n).toLocaleString('en-US'));
const fmtMs = (n) => (n === null ? '–' : n < 1 ? `${(n * 1000).toFixed(0)} µs` : `${n.toFixed(2)} ms`);
const fmtMb = (n) => (n === null || n === undefined ? '–' : `${(n / 1048576).toFixed(1)} MB`);
const fmtRatio = (n) => (n === null ? '–' : n.toFixed(2));
const ratio = (a, b) => (a === null || b === null || b === 0 ? null : a / b);

/** Columns right-aligned except those named in `left` (by index; the first by default). */
function table(rows, left = [0]) {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => String(r[i]).length)));
  return rows.map((r) => r.map((c, i) => (left.includes(i) ? String(c).padEnd(widths[i]) : String(c).padStart(widths[i]))).join('  ').trimEnd()).join('\n');
}

function summarize(rounds) {
  return {
    reqPerSec: median(rounds.map((r) => r.reqPerSec)),
    reqPerSecMin: Math.min(...rounds.map((r) => r.reqPerSec)),
    reqPerSecMax: Math.max(...rounds.map((r) => r.reqPerSec)),
    p50Ms: median(rounds.map((r) => r.p50Ms)),
    p99Ms: median(rounds.map((r) => r.p99Ms)),
    avgMs: median(rounds.map((r) => r.avgMs)),
    errors: rounds.reduce((a, r) => a + r.non2xx + r.socketErrors, 0),
    rssBytes: median(rounds.map((r) => r.rss.gateway ?? null)),
    instanceRssBytes: median(rounds.map((r) => r.rss.instance ?? null)),
    cpu0: median(rounds.map((r) => r.cpu[0])),
    cpu1: median(rounds.map((r) => r.cpu[1])),
    gatewayCpu: median(rounds.map((r) => r.cpuUse.gateway)),
    instancesCpu: median(rounds.map((r) => r.cpuUse.instances)),
    wrkCpu: median(rounds.map((r) => r.cpuUse.wrk)),
    otherCpu: median(rounds.map((r) => r.cpuUse.other)),
    irqCpu: median(rounds.map((r) => r.cpuUse.irq)),
    kernelCpu: median(rounds.map((r) => r.cpuUse.kernel)),
    stealCpu: median(rounds.map((r) => r.cpuUse.steal)),
    cpuUsPerRequest: median(rounds.map((r) => r.cpuUsPerRequest)),
  };
}

function report(result) {
  const { config, machine, targets, ratios, warnings, profiles } = result;
  const lines = [];
  lines.push(`Berth gateway benchmark: ${config.rounds} round${config.rounds === 1 ? '' : 's'} × ${config.durationS} s per target, interleaved (${config.targets.join(' → ')}), ${config.warmupS} s warm-up each`);
  lines.push(`wrk -t${config.threads} -c${config.connections} --latency GET ${REQUEST_PATH} (100-byte JSON); ${config.replicas} instance(s) of a node:http service`);
  lines.push(`machine: ${machine.cpus} × ${machine.cpuModel}, Linux ${machine.kernel}, Node ${machine.node}, ${machine.nginx}, ${machine.wrk}`);
  lines.push(`berth: commit ${machine.berth.commit}${machine.berth.srcChanged ? ' + uncommitted changes in src/' : ''}, compiled code ${machine.berth.dist} (dist/src), run ${result.startedAt}`);
  lines.push(`noise at the start: ${machine.loadAtStart}% of a core; rounds where other processes + steal took > ${config.maxOther}% of a core are repeated (up to ${config.retries}×): ${Object.values(targets).reduce((a, t) => a + t.rounds.reduce((b, r) => b + r.repeats, 0), 0)} repeats`);
  lines.push(
    config.pin
      ? 'pinning: gateway under test (nginx / Berth node / node-proxy) alone on CPU 1; wrk, the instances and the idle gateways on CPU 0; in direct rounds the instance moves to CPU 1'
      : 'pinning: off (the scheduler places everything)',
  );
  if (config.profile) lines.push('note: --profile: the Node gateways (berth, node-proxy) ran under the CPU profiler; their figures include its cost');
  lines.push('access log: berth = off (log.level warn: access lines are below the level); berth+log = on (log.level info, JSON lines to /dev/null); nginx = off');
  lines.push('');
  const header = ['target', 'req/s', 'min–max', 'p50', 'p99', 'errors', 'RSS', 'CPU µs/req'];
  const rows = [header];
  const cpuRows = [['target', 'gateway', 'instances', 'wrk', 'softirq', 'kthreads', 'other', 'steal', 'CPU0 busy', 'CPU1 busy']];
  for (const [name, t] of Object.entries(targets)) {
    const s = t.summary;
    const direct = name === 'direct';
    rows.push([
      name,
      fmtInt(s.reqPerSec),
      `${fmtInt(s.reqPerSecMin)}–${fmtInt(s.reqPerSecMax)}`,
      fmtMs(s.p50Ms),
      fmtMs(s.p99Ms),
      fmtInt(s.errors),
      direct ? `${fmtMb(s.instanceRssBytes)}*` : fmtMb(s.rssBytes),
      s.cpuUsPerRequest === null ? '–' : `${s.cpuUsPerRequest.toFixed(1)}${direct ? '*' : ''}`,
    ]);
    cpuRows.push([name, pctText(s.gatewayCpu), pctText(s.instancesCpu), pctText(s.wrkCpu), pctText(s.irqCpu), pctText(s.kernelCpu), pctText(s.otherCpu), pctText(s.stealCpu), pctText(s.cpu0), pctText(s.cpu1)]);
  }
  lines.push(table(rows));
  lines.push(`RSS before any load: ${Object.entries(targets).map(([n, t]) => `${n} ${fmtMb(t.summary.idleRssBytes)}`).join(', ')}`);
  lines.push('medians over rounds. RSS: the gateway process at the end of a round (nginx: its worker). CPU µs/req: CPU time of');
  lines.push('the gateway process per request (user + system), the figure least disturbed by other load. *direct: the instance.');
  lines.push('');
  lines.push('where the CPU went during the rounds (% of one core, medians; kthreads: kernel threads such as ksoftirqd;');
  lines.push('other: processes the bench did not start, i.e. noise):');
  lines.push(table(cpuRows));
  lines.push('');
  lines.push('req/s per round:');
  for (const [name, t] of Object.entries(targets)) lines.push(`  ${name.padEnd(10)} ${t.rounds.map((r) => fmtInt(r.reqPerSec)).join('  ')}`);
  lines.push('');
  lines.push('ratios: of the medians, and round by round (median, range):');
  const rrows = [['', 'medians', 'by round', 'range', '']];
  for (const r of ratios) rrows.push([`  ${r.name}`, fmtRatio(r.value), fmtRatio(r.paired.median), `${fmtRatio(r.paired.min)}–${fmtRatio(r.paired.max)}`, r.note]);
  if (rrows.length > 1) lines.push(table(rrows, [0, 4]));
  if (warnings.length) {
    lines.push('');
    for (const w of warnings) lines.push(`warning: ${w}`);
  }
  for (const p of profiles) {
    lines.push('');
    // µs per request: the profile's time over the requests wrk counted in the same rounds.
    const perReq = (ms) => (p.requests > 0 ? ((ms * 1000) / p.requests).toFixed(1) : '–');
    lines.push(`CPU profile of ${p.node} (node --cpu-prof, ${p.node}'s measured rounds only): busy ${(p.busyMs / 1000).toFixed(1)} s of ${(p.wallMs / 1000).toFixed(1)} s, ${fmtInt(p.requests)} requests, ${perReq(p.busyMs)} µs/req`);
    lines.push(table([['  self ms', 'self %', 'µs/req', 'function', 'location'], ...p.top.map((f) => [`  ${f.selfMs.toFixed(0)}`, f.selfPct.toFixed(1), perReq(f.selfMs), f.function, f.location])], [3, 4]));
    lines.push('  by origin:');
    lines.push(table(p.origins.slice(0, 14).map((o) => [`    ${o.origin}`, `${o.selfMs.toFixed(0)} ms`, `${o.selfPct.toFixed(1)} %`, `${perReq(o.selfMs)} µs/req`])));
    lines.push(`  file: ${p.file}${result.config.keep ? '' : ' (removed with the temp dir; --keep keeps it)'}`);
  }
  return lines.join('\n');
}

const pctText = (n) => (n === null ? '–' : `${n}%`);

/**
 * Ratios of the medians, and the same ratio taken round by round (targets of
 * one round ran minutes apart at most, so a slow drift of the machine
 * cancels out): its median and range.
 */
function ratiosOf(targets) {
  const out = [];
  const summaryField = { reqPerSec: 'reqPerSec', p99Ms: 'p99Ms', p50Ms: 'p50Ms', cpuUsPerRequest: 'cpuUsPerRequest' };
  const add = (name, a, b, field, note) => {
    const ta = targets[a];
    const tb = targets[b];
    if (!ta || !tb) return;
    const value = ratio(ta.summary[summaryField[field]], tb.summary[summaryField[field]]);
    if (value === null) return;
    const paired = ta.rounds.map((r, i) => ratio(r[field], tb.rounds[i]?.[field] ?? null)).filter((v) => v !== null);
    out.push({ name, value, paired: { median: median(paired), min: Math.min(...paired), max: Math.max(...paired) }, note: note?.(value) ?? '' });
  };
  const meets = (target, cmp) => (v) => `project target ${cmp === 'ge' ? '≥' : '≤'} ${target.toFixed(2)}: ${(cmp === 'ge' ? v >= target : v <= target) ? 'met' : 'NOT met'}`;
  for (const b of ['berth', 'berth+log']) {
    add(`${b} / direct req/s`, b, 'direct', 'reqPerSec');
    add(`${b} / nginx req/s`, b, 'nginx', 'reqPerSec', meets(PROJECT_TARGET.reqRatio, 'ge'));
    add(`${b} p99 / nginx p99`, b, 'nginx', 'p99Ms', meets(PROJECT_TARGET.p99Ratio, 'le'));
    add(`${b} p50 / nginx p50`, b, 'nginx', 'p50Ms');
    add(`${b} / nginx CPU µs/req`, b, 'nginx', 'cpuUsPerRequest', () => 'gateway CPU per request');
  }
  add('nginx / direct req/s', 'nginx', 'direct', 'reqPerSec');
  add('node-proxy / nginx req/s', 'node-proxy', 'nginx', 'reqPerSec');
  add('node-proxy / nginx CPU µs/req', 'node-proxy', 'nginx', 'cpuUsPerRequest');
  add('berth / node-proxy req/s', 'berth', 'node-proxy', 'reqPerSec', () => 'Berth above bare node:http + its client');
  add('berth / node-proxy CPU µs/req', 'berth', 'node-proxy', 'cpuUsPerRequest');
  add('berth+log / berth req/s', 'berth+log', 'berth', 'reqPerSec', () => 'the cost of the access log');
  add('berth+log / berth CPU µs/req', 'berth+log', 'berth', 'cpuUsPerRequest');
  return out;
}

// ---------------------------------------------------------------- main

async function main() {
  const opts = parseOptions(process.argv.slice(2));
  const wrkBin = which('wrk');
  const nginxBin = which('nginx', ['/usr/sbin', '/usr/local/sbin', '/usr/local/nginx/sbin']);
  if (!wrkBin) throw new UsageError('wrk is not installed (scripts/install-deps.sh installs it)');
  if (opts.targets.includes('nginx') && !nginxBin) throw new UsageError('nginx is not installed (scripts/install-deps.sh installs it), or leave it out with --targets');
  if (!existsSync(join(ROOT, 'dist/src/cli/main.js'))) throw new UsageError('Berth is not built: run npm run build');
  const ncpu = cpus().length;
  if (opts.pin && (ncpu < 2 || !which('taskset'))) {
    log(`pinning off: ${ncpu < 2 ? 'one CPU' : 'taskset not found'}`);
    opts.pin = false;
  }
  const machine = {
    cpus: ncpu,
    cpuModel: cpus()[0]?.model ?? 'unknown',
    kernel: release(),
    node: process.version,
    nginx: nginxBin ? versionOf(nginxBin, ['-v']) : 'nginx: not used',
    wrk: versionOf(wrkBin, ['--version']).replace(/\s+Copyright.*$/, ''),
    berth: codeVersion(),
  };

  const startedAt = new Date().toISOString();
  const tmp = await mkdtemp(join(tmpdir(), 'berth-bench-'));
  run.tmp = opts.keep ? null : tmp;
  const expectedS = opts.targets.length * (opts.warmupS + opts.rounds * (opts.durationS + 3) * (1 + opts.retries)) + opts.waitQuietS + 120;
  const overall = setTimeout(() => {
    log(`bench: still running after ${expectedS} s: giving up`);
    void cleanup().then(() => process.exit(1));
  }, expectedS * 1000);
  overall.unref();

  let failed = false;
  const warnings = new Set();
  const nodes = {};
  const profileWindows = {};
  const profiled = [];
  let result;
  try {
    log(`bench: temp dir ${tmp}`);
    if (opts.waitQuietS > 0) {
      const deadline = Date.now() + opts.waitQuietS * 1000;
      let load = await processLoad(2000);
      while (load > opts.maxOther && Date.now() < deadline) {
        log(`bench: other processes and steal take ${load}% of a core; waiting for quiet (up to ${opts.waitQuietS} s)`);
        load = await processLoad(5000);
      }
      if (load > opts.maxOther) warnings.add(`the machine was not quiet at the start (${load}% of a core taken by other processes and steal)`);
    }
    machine.loadAtStart = await processLoad(1000);
    const berthTargets = opts.targets.filter((t) => t.startsWith('berth'));
    // direct and nginx need instances: the berth node's, started even when berth itself is not measured.
    const needMain = opts.targets.some((t) => t !== 'berth+log');
    if (needMain) nodes.berth = await startBerth({ name: 'berth', tmp, opts, accessLog: false });
    if (berthTargets.includes('berth+log')) nodes['berth+log'] = await startBerth({ name: 'berth+log', tmp, opts, accessLog: true });
    for (const t of berthTargets) profiled.push(nodes[t]);
    for (const n of Object.values(nodes)) await refreshInstances(n, opts, warnings);
    const main = nodes.berth ?? nodes['berth+log'];
    const nginx = opts.targets.includes('nginx') ? await startNginx({ tmp, opts, instances: main.instances, nginxBin }) : null;
    const nodeProxy = opts.targets.includes('node-proxy') ? await startNodeProxy({ tmp, opts, instances: main.instances }) : null;
    if (nodeProxy) profiled.push(nodeProxy);
    if (nginx && !nginx.workerPid) warnings.add('nginx worker pid not found: no RSS for nginx');
    if (opts.pin) for (const n of Object.values(nodes)) pinPid(n.pid, 1);

    const direct = main.instances[0];
    const plan = {
      direct: () => ({ url: `http://${direct.address}:${direct.port}${REQUEST_PATH}`, rssPids: { instance: direct.pid }, gatewayPid: null, instancePids: [direct.pid] }),
      nginx: () => ({ url: nginx.url, rssPids: { gateway: nginx.workerPid }, gatewayPid: nginx.workerPid, instancePids: pidsOf(main) }),
      'node-proxy': () => ({ url: nodeProxy.url, rssPids: { gateway: nodeProxy.pid }, gatewayPid: nodeProxy.pid, instancePids: pidsOf(main) }),
      berth: () => ({ url: nodes.berth.url, rssPids: { gateway: nodes.berth.pid }, gatewayPid: nodes.berth.pid, instancePids: pidsOf(nodes.berth) }),
      'berth+log': () => ({ url: nodes['berth+log'].url, rssPids: { gateway: nodes['berth+log'].pid }, gatewayPid: nodes['berth+log'].pid, instancePids: pidsOf(nodes['berth+log']) }),
    };
    // Each gateway's processes, to give CPU 1 to the one under test alone.
    const gatewayPids = {
      nginx: nginx ? [nginx.masterPid, nginx.workerPid].filter(Boolean) : [],
      'node-proxy': nodeProxy ? [nodeProxy.pid] : [],
      berth: nodes.berth ? [nodes.berth.pid] : [],
      'berth+log': nodes['berth+log'] ? [nodes['berth+log'].pid] : [],
    };
    const measure = async (target, durationS) => {
      const run = plan[target]();
      // The idle gateways wait on CPU 0 (with wrk and the instances), so their
      // own periodic work (health checks, timers, an idle-time GC of a Berth
      // node) never takes CPU 1 from the gateway under test; it moves to CPU 1.
      if (opts.pin) for (const [name, pids] of Object.entries(gatewayPids)) for (const pid of pids) pinPid(pid, name === target ? 1 : 0);
      // Direct: the instance gets the core a gateway gets, instead of sharing CPU 0 with wrk.
      if (opts.pin && target === 'direct') pinPid(direct.pid, 1);
      try {
        return await runWrk({ ...run, durationS, opts, wrkBin });
      } finally {
        if (opts.pin && target === 'direct') pinPid(direct.pid, 0);
      }
    };

    // RSS before any load: what each gateway costs at rest.
    const idleRss = {};
    for (const target of opts.targets) {
      const pid = plan[target]().rssPids.gateway ?? plan[target]().rssPids.instance;
      idleRss[target] = pid ? rssBytes(pid) : null;
    }
    if (opts.warmupS > 0) {
      for (const target of opts.targets) {
        log(`warm-up  ${target.padEnd(10)} ${opts.warmupS} s`);
        await measure(target, opts.warmupS);
      }
    }
    const targets = Object.fromEntries(opts.targets.map((t) => [t, { rounds: [] }]));
    for (let round = 1; round <= opts.rounds; round++) {
      for (const target of opts.targets) {
        for (const n of Object.values(nodes)) await refreshInstances(n, opts, warnings);
        // Each round starts from a warm gateway: between its rounds a gateway sits
        // idle while the others are measured (30-40 s with four or five targets),
        // long enough for V8 to shrink a Berth node's heap, which the round would
        // then measure growing back (Berth's p99 18-30 ms in such runs, 13 ms with
        // this warm-up). Every target gets it, nginx too; it is not measured.
        if (opts.warmupS > 0) await measure(target, opts.warmupS);
        await sleep(500);
        let r;
        for (let attempt = 0; ; attempt++) {
          const startedUs = Number(process.hrtime.bigint() / 1000n);
          r = await measure(target, opts.durationS);
          r.repeats = attempt;
          const noise = r.cpuUse.other + r.cpuUse.steal;
          if (noise <= opts.maxOther) {
            (profileWindows[target] ??= []).push([startedUs, Number(process.hrtime.bigint() / 1000n)]);
            break;
          }
          if (attempt >= opts.retries) {
            (profileWindows[target] ??= []).push([startedUs, Number(process.hrtime.bigint() / 1000n)]);
            warnings.add(`${target} round ${round}: other processes took ${r.cpuUse.other}% and steal ${r.cpuUse.steal}% of a core (kept after ${attempt} repeats)`);
            break;
          }
          log(`round ${round}/${opts.rounds} ${target.padEnd(10)} other processes took ${r.cpuUse.other}%, steal ${r.cpuUse.steal}% of a core: repeating the round`);
          await sleep(2000);
        }
        targets[target].rounds.push({ round, ...r });
        if (r.non2xx || r.socketErrors) warnings.add(`${target} round ${round}: ${r.non2xx} non-2xx, ${r.socketErrors} socket errors ${JSON.stringify(r.socketDetail)}`);
        log(`round ${round}/${opts.rounds} ${target.padEnd(10)} ${fmtInt(r.reqPerSec).padStart(8)} req/s  p50 ${fmtMs(r.p50Ms)}  p99 ${fmtMs(r.p99Ms)}  CPU ${r.cpu.map(pctText).join('/')}`);
      }
    }
    for (const t of Object.values(targets)) t.summary = summarize(t.rounds);
    for (const [name, t] of Object.entries(targets)) t.summary.idleRssBytes = idleRss[name];
    result = {
      startedAt,
      config: { ...opts, route: `${ROUTE}${REQUEST_PATH}`, accessLog: { berth: false, 'berth+log': true, nginx: false } },
      machine,
      targets,
      ratios: ratiosOf(targets),
      warnings: [],
      profiles: [],
    };
  } catch (err) {
    failed = true;
    if (!interrupted) log(`bench: ${err instanceof UsageError ? err.message : err.stack ?? err}`);
  } finally {
    log('bench: stopping everything it started');
    await cleanup();
  }
  if (result) {
    result.warnings = [...warnings];
    if (opts.profile) {
      for (const n of profiled) {
        const requests = result.targets[n.name]?.rounds.reduce((a, r) => a + (r.requests ?? 0), 0) ?? 0;
        for (const p of readProfiles(n.profileDir, profileWindows[n.name] ?? [])) result.profiles.push({ node: n.name, requests, ...p });
      }
    }
    process.stdout.write(opts.json ? `${JSON.stringify(result, null, 2)}\n` : `\n${report(result)}\n`);
    if (opts.jsonOut) writeFileSync(opts.jsonOut, `${JSON.stringify(result, null, 2)}\n`);
  }
  if (opts.keep || (failed && !interrupted)) log(`bench: temp dir kept: ${tmp}`);
  else await rm(tmp, { recursive: true, force: true });
  return failed ? 1 : 0;
}

let interrupted = false;
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    if (interrupted) process.exit(130); // second Ctrl-C: the exit hook SIGKILLs what is left
    interrupted = true;
    log(`bench: ${signal}: stopping everything it started`);
    void cleanup()
      .then(() => (run.tmp ? rm(run.tmp, { recursive: true, force: true }) : undefined))
      .finally(() => process.exit(130));
  });
}

main().then(
  (code) => {
    if (!interrupted) process.exit(code); // else the signal handler exits once it has cleaned up
  },
  async (err) => {
    log(`bench: ${err instanceof UsageError ? err.message : err.stack ?? err}`);
    await cleanup();
    process.exit(err instanceof UsageError ? 2 : 1);
  },
);
