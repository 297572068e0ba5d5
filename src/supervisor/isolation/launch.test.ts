import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, chown, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { isBerthError } from '../../errors.js';
import type { CommandSpec } from '../../manifest/types.js';
import { LAUNCH_FAILED_EXIT, isolationSupport, launchCommand, prepareServiceDir, resolveUser, type LaunchArgv, type LaunchOptions } from './launch.js';

const ROOT = process.getuid?.() === 0;
const support = await isolationSupport();
const NEEDS_ROOT = ROOT ? false : 'needs root: only root can switch users and raise limits (run the tests as root to cover them)';
const NEEDS_SANDBOX = NEEDS_ROOT || (support.sandbox === true ? false : `no sandbox on this machine: ${support.sandbox} (scripts/install-deps.sh installs bubblewrap)`);
const NOBODY = { uid: 65534, gid: 65534 };

function command(file: string, ...args: string[]): CommandSpec {
  return { line: [file, ...args].join(' '), file, args, shell: false };
}

/** A service written in JavaScript, run by this very node binary. */
function nodeService(source: string): CommandSpec {
  return command(process.execPath, '-e', source);
}

function options(overrides: Partial<LaunchOptions> & Pick<LaunchOptions, 'command'>): LaunchOptions {
  return { procsFiles: [], openFiles: null, user: null, sandbox: null, ...overrides };
}

interface Run {
  pid: number;
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/**
 * Spawns the chain as the supervisor does (detached: leader of its own
 * group). `onLine` sees each stdout line with the leader's pid. SIGKILLs the
 * group if it outlives `timeoutMs`, so a broken chain fails, never hangs.
 */
function runChain(launch: LaunchArgv, cwd: string, onLine?: (line: string, pid: number) => void, timeoutMs = 10_000): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(launch.file, launch.args, { cwd, env: { PATH: process.env.PATH ?? '/usr/bin:/bin' }, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let partial = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      stdout += chunk;
      const lines = (partial + chunk).split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) onLine?.(line, child.pid as number);
    });
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    const timer = setTimeout(() => {
      try {
        process.kill(-(child.pid as number), 'SIGKILL');
      } catch {
        // already gone
      }
    }, timeoutMs);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ pid: child.pid as number, code, signal, stdout, stderr });
    });
  });
}

async function groupGone(pgid: number): Promise<boolean> {
  for (let i = 0; i < 200; i++) {
    try {
      process.kill(-pgid, 0);
    } catch {
      return true;
    }
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  return false;
}

describe('launchCommand', () => {
  it('leaves-a-command-without-isolation-unwrapped', () => {
    assert.deepEqual(launchCommand(options({ command: command('/usr/bin/env', 'A=1') })), { file: '/usr/bin/env', args: ['A=1'] });
  });

  it('chains-sh-setpriv-bwrap-env-then-the-command', () => {
    const sandbox = { dataDir: '/srv/berth', serviceDir: '/srv/berth/services/g/s', writable: ['/srv/uploads'], cwd: '/srv/app' };
    const { file, args } = launchCommand(
      options({ command: command('node', 'server.js'), procsFiles: ['/cg/memory/x/cgroup.procs', '/cg/pids/x/cgroup.procs'], openFiles: 1024, user: { uid: 1001, gid: 1002 }, sandbox }),
    );
    assert.equal(file, '/bin/sh');
    assert.equal(args[0], '-c');
    assert.deepEqual(args.slice(2, 7), ['sh', '2', '/cg/memory/x/cgroup.procs', '/cg/pids/x/cgroup.procs', '1024']);
    const rest = args.slice(7);
    const at = (name: string): number => rest.findIndex((arg) => arg === name || arg.endsWith(`/${name}`));
    assert.equal(at('setpriv'), 0);
    assert.ok(at('bwrap') > at('setpriv') && at('env') > at('bwrap'), rest.join(' '));
    assert.deepEqual(rest.slice(-2), ['node', 'server.js']);
    assert.deepEqual(rest.slice(1, 9), ['--reuid', '1001', '--regid', '1002', '--clear-groups', '--inh-caps=-all', '--bounding-set=-all', '--no-new-privs']);
    const bwrap = rest.slice(at('bwrap'), at('env')).join(' ');
    assert.match(bwrap, /--ro-bind \/ \/ --dev \/dev --proc \/proc --tmpfs \/tmp --tmpfs \/srv\/berth --bind \/srv\/berth\/services\/g\/s \/srv\/berth\/services\/g\/s --bind \/srv\/uploads \/srv\/uploads --chdir \/srv\/app/);
    assert.match(bwrap, /--die-with-parent/);
    assert.match(bwrap, /--unshare-pid/);
    assert.doesNotMatch(bwrap, /--new-session/);
  });

  it('gives-a-named-user-its-own-groups-and-numeric-ids-none', () => {
    const named = launchCommand(options({ command: command('true'), user: { uid: 1001, gid: 1001, name: 'svc' } })).args;
    const numeric = launchCommand(options({ command: command('true'), user: { uid: 1001, gid: 1001, name: null } })).args;
    assert.ok(named.includes('--init-groups') && !named.includes('--clear-groups'));
    assert.ok(numeric.includes('--clear-groups') && !numeric.includes('--init-groups'));
  });

  it('keeps-every-value-out-of-the-shell-script', () => {
    const plain = launchCommand(options({ command: command('a'), procsFiles: ['/a'], openFiles: 64 }));
    const nasty = `/x'"; touch /tmp/pwned; $(id) \`id\`\n`;
    const hostile = launchCommand(options({ command: command(nasty, nasty), procsFiles: [nasty], openFiles: 99 }));
    assert.equal(hostile.args[1], plain.args[1]);
    assert.ok(!hostile.args[1]?.includes('99'));
  });

  it('refuses-root-and-relative-paths', () => {
    assert.throws(() => launchCommand(options({ command: command('true'), user: { uid: 0, gid: 0 } })), (err: unknown) => isBerthError(err, 'BERTH_ERR_ISOLATION') && /root/.test(err.message));
    assert.throws(() => launchCommand(options({ command: command('true'), procsFiles: ['cgroup.procs'] })), /absolute/);
    assert.throws(
      () => launchCommand(options({ command: command('true'), sandbox: { dataDir: '/d', serviceDir: '/d/s', writable: ['uploads'], cwd: '/' } })),
      /absolute paths, not "uploads"/,
    );
  });

  it('writes-the-leaders-pid-to-each-procs-file-passed-as-arguments', async () => {
    const dir = await mkdtemp('/tmp/berth-launch-');
    try {
      // Names a script would run if it interpolated them (in its cwd, `dir`).
      const marker = join(dir, 'pwned');
      const files = [join(dir, `a'b $(touch pwned) "c"`), join(dir, `d;touch pwned\ne`), join(dir, '`touch pwned`')];
      await Promise.all(files.map((file) => writeFile(file, '')));
      const result = await runChain(launchCommand(options({ command: nodeService('console.log(process.pid)'), procsFiles: files })), dir);
      assert.equal(result.code, 0, result.stderr);
      // exec all the way: the pid the launcher wrote is the service's, and the leader's.
      assert.equal(result.stdout.trim(), String(result.pid));
      for (const file of files) assert.equal(await readFile(file, 'utf8'), `${result.pid}\n`);
      assert.equal(existsSync(marker), false);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('stops-before-the-service-when-a-cgroup-cannot-be-joined', async () => {
    const dir = await mkdtemp('/tmp/berth-launch-');
    try {
      const ran = join(dir, 'ran');
      const launch = launchCommand(options({ command: command('/usr/bin/touch', ran), procsFiles: [join(dir, 'missing', 'cgroup.procs')] }));
      const result = await runChain(launch, dir);
      assert.equal(result.code, LAUNCH_FAILED_EXIT);
      assert.match(result.stderr, /berth: cannot join cgroup/);
      assert.equal(existsSync(ran), false);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('resolveUser', () => {
  it('looks-a-name-up-in-the-passwd-database', async () => {
    assert.deepEqual(await resolveUser({ name: 'nobody' }), { ...NOBODY, name: 'nobody' });
  });

  it('names-an-unknown-user', async () => {
    await assert.rejects(resolveUser({ name: 'berth-no-such-user' }), (err: unknown) => isBerthError(err, 'BERTH_ERR_ISOLATION') && err.message.includes('"berth-no-such-user" does not exist'));
  });

  it('refuses-root-by-name-or-id', async () => {
    await assert.rejects(resolveUser({ name: 'root' }), /"root" is root \(uid 0\)/);
    await assert.rejects(resolveUser({ uid: 0, gid: 0 }), /uid 0 is root/);
  });

  it('takes-numeric-ids-as-given', async () => {
    assert.deepEqual(await resolveUser({ uid: 4242, gid: 4343 }), { uid: 4242, gid: 4343, name: null });
  });
});

describe('isolationSupport', () => {
  it('says-why-when-something-cannot-work', () => {
    if (ROOT) assert.equal(support.user, true);
    else assert.match(String(support.user), /not root: it cannot switch users/);
    assert.ok(support.sandbox === true || (typeof support.sandbox === 'string' && support.sandbox.length > 0));
  });
});

describe('the chain as root', { skip: NEEDS_ROOT }, () => {
  let groups: number[] = [];
  const dir = '/';

  before(() => {
    // Supplementary groups for Berth itself, so a leak would show.
    groups = process.getgroups?.() ?? [];
    process.setgroups?.([0, 4, 42]);
  });

  after(() => {
    process.setgroups?.(groups);
  });

  it('would-leak-berths-groups-without-the-chain', async () => {
    const result = await runChain({ file: '/usr/bin/id', args: ['-G'] }, dir);
    assert.deepEqual(result.stdout.trim().split(' ').map(Number).sort((a, b) => a - b), [0, 4, 42]);
  });

  it('runs-as-the-numeric-user-with-no-supplementary-group', async () => {
    const launch = launchCommand(options({ command: command('/bin/sh', '-c', 'id -u; id -g; id -G'), user: NOBODY }));
    const result = await runChain(launch, dir);
    assert.equal(result.code, 0, result.stderr);
    assert.deepEqual(result.stdout.trim().split('\n'), ['65534', '65534', '65534']);
  });

  it('runs-as-the-named-user-with-its-own-groups-only', async () => {
    const user = await resolveUser({ name: 'nobody' });
    const result = await runChain(launchCommand(options({ command: command('/usr/bin/id', '-G'), user })), dir);
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout.trim(), '65534');
  });

  it('leaves-no-capability-and-no-way-to-gain-one', async () => {
    const launch = launchCommand(options({ command: command('/bin/grep', '-E', '^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs):', '/proc/self/status'), user: NOBODY }));
    const result = await runChain(launch, dir);
    assert.equal(result.code, 0, result.stderr);
    const status = Object.fromEntries(result.stdout.trim().split('\n').map((line) => line.split(/:\s+/) as [string, string]));
    assert.deepEqual(status, { CapInh: '0000000000000000', CapPrm: '0000000000000000', CapEff: '0000000000000000', CapBnd: '0000000000000000', CapAmb: '0000000000000000', NoNewPrivs: '1' });
  });

  it('sets-the-open-files-limit-soft-and-hard', async () => {
    const launch = launchCommand(options({ command: command('/bin/sh', '-c', 'ulimit -Sn; ulimit -Hn'), openFiles: 321, user: NOBODY }));
    const result = await runChain(launch, dir);
    assert.equal(result.code, 0, result.stderr);
    assert.deepEqual(result.stdout.trim().split('\n'), ['321', '321']);
  });
});

describe('the sandbox', { skip: NEEDS_SANDBOX }, () => {
  let base = '';
  let dataDir = '';
  let serviceDir = '';
  let otherDir = '';
  let cwd = '';
  let extra = '';

  before(async () => {
    // Under /var/tmp, not /tmp: the sandbox's private /tmp hides the host's /tmp (a service's own folder there is bound back read-only, but the data dirs these tests look into would not be).
    base = await mkdtemp('/var/tmp/berth-launch-');
    await chmod(base, 0o755);
    dataDir = join(base, 'data');
    await mkdir(dataDir, { mode: 0o755 });
    await writeFile(join(dataDir, 'secret'), 'root only', { mode: 0o600 });
    await writeFile(join(dataDir, 'public'), 'anyone outside', { mode: 0o644 });
    await chmod(join(dataDir, 'public'), 0o644);
    serviceDir = join(dataDir, 'services', 'shop', 'web');
    otherDir = join(dataDir, 'services', 'shop', 'billing');
    await prepareServiceDir(serviceDir, NOBODY);
    // Same user, so only the sandbox keeps one service out of the other's folder.
    await prepareServiceDir(otherDir, NOBODY);
    await writeFile(join(otherDir, 'ledger'), 'billing data', { mode: 0o644 });
    await chown(join(otherDir, 'ledger'), NOBODY.uid, NOBODY.gid);
    // World-writable, so a refused write is the read-only mount, not permissions.
    cwd = join(base, 'app');
    extra = join(base, 'uploads');
    for (const dir of [cwd, extra]) {
      await mkdir(dir);
      await chmod(dir, 0o777);
    }
  });

  after(async () => {
    await rm(base, { recursive: true, force: true });
  });

  const sandboxed = (source: string, writable: string[] = []): LaunchArgv =>
    launchCommand(options({ command: nodeService(source), user: NOBODY, procsFiles: [], openFiles: null, sandbox: { dataDir, serviceDir, writable, cwd } }));

  /** Runs `ops` (path → 'read' | 'write' | 'list') in the sandbox; each answers 'ok', its content, or the error code. */
  async function attempt(ops: Record<string, 'read' | 'write' | 'list'>, writable: string[] = []): Promise<Record<string, string>> {
    const source = `
      const fs = require('node:fs');
      const out = {};
      for (const [path, op] of Object.entries(${JSON.stringify(ops)})) {
        try {
          if (op === 'read') out[path] = fs.readFileSync(path, 'utf8');
          else if (op === 'list') out[path] = fs.readdirSync(path).sort().join(',');
          else { fs.writeFileSync(path, 'x'); out[path] = 'ok'; }
        } catch (err) { out[path] = err.code; }
      }
      console.log(JSON.stringify(out));`;
    const result = await runChain(sandboxed(source, writable), cwd);
    assert.equal(result.code, 0, result.stderr);
    return JSON.parse(result.stdout) as Record<string, string>;
  }

  it('hides-berths-data-dir-and-other-services', async () => {
    // Outside the sandbox nobody could read two of these.
    const result = await attempt({
      [join(dataDir, 'secret')]: 'read',
      [join(dataDir, 'public')]: 'read',
      [join(otherDir, 'ledger')]: 'read',
      [dataDir]: 'list',
      [join(dataDir, 'services', 'shop')]: 'list',
    });
    assert.deepEqual(result, {
      [join(dataDir, 'secret')]: 'ENOENT',
      [join(dataDir, 'public')]: 'ENOENT',
      [join(otherDir, 'ledger')]: 'ENOENT',
      [dataDir]: 'services',
      [join(dataDir, 'services', 'shop')]: 'web',
    });
  });

  it('writes-its-service-dir-and-tmp-and-nothing-else', async () => {
    const repo = join(process.cwd(), 'berth-launch-test');
    const result = await attempt({
      [join(serviceDir, 'state')]: 'write',
      '/tmp/scratch': 'write',
      '/etc/berth-launch-test': 'write',
      [repo]: 'write',
      [join(cwd, 'out')]: 'write',
      [join(extra, 'file')]: 'write',
    });
    assert.deepEqual(result, {
      [join(serviceDir, 'state')]: 'ok',
      '/tmp/scratch': 'ok',
      '/etc/berth-launch-test': 'EROFS',
      // A checkout under /tmp (CI's clean clone) is not there at all: the private /tmp hides it.
      [repo]: repo.startsWith('/tmp/') ? 'ENOENT' : 'EROFS',
      [join(cwd, 'out')]: 'EROFS',
      [join(extra, 'file')]: 'EROFS',
    });
    assert.equal(await readFile(join(serviceDir, 'state'), 'utf8'), 'x');
  });

  it('writes-the-folders-listed-as-writable', async () => {
    const result = await attempt({ [join(cwd, 'out')]: 'write', [join(extra, 'file')]: 'write' }, [cwd, extra]);
    assert.deepEqual(result, { [join(cwd, 'out')]: 'ok', [join(extra, 'file')]: 'ok' });
    assert.equal(await readFile(join(extra, 'file'), 'utf8'), 'x');
  });

  it('keeps-its-tmp-private', async () => {
    const name = `/tmp/berth-launch-${randomBytes(6).toString('hex')}`;
    const result = await attempt({ [name]: 'write' });
    assert.equal(result[name], 'ok');
    assert.equal(existsSync(name), false);
  });

  it('runs-in-its-cwd-and-sees-only-its-own-processes', async () => {
    const result = await runChain(sandboxed(`console.log(JSON.stringify({ cwd: process.cwd(), uid: process.getuid(), pids: require('node:fs').readdirSync('/proc').filter((e) => /^\\d+$/.test(e)) }))`), '/');
    assert.equal(result.code, 0, result.stderr);
    const seen = JSON.parse(result.stdout) as { cwd: string; uid: number; pids: string[] };
    assert.equal(seen.cwd, cwd);
    assert.equal(seen.uid, NOBODY.uid);
    // bwrap's init and the service: not Berth, not other instances of the same user.
    assert.deepEqual(seen.pids.sort(), ['1', '2']);
  });

  it('lets-the-stop-signal-to-the-group-run-the-services-handler-to-the-end', async () => {
    const source = `
      process.on('SIGTERM', () => setTimeout(() => { console.log('drained'); process.exit(0); }, 300));
      console.log('ready');
      setInterval(() => {}, 1000);`;
    const result = await runChain(sandboxed(source), cwd, (line, pid) => {
      if (line === 'ready') process.kill(-pid, 'SIGTERM');
    });
    // The leader (bwrap's monitor) outlived the signal and reports the service's own exit.
    assert.deepEqual([result.code, result.signal], [0, null], result.stderr);
    assert.equal(result.stdout, 'ready\ndrained\n');
    assert.equal(await groupGone(result.pid), true);
  });

  it('gives-the-service-default-signal-dispositions', async () => {
    // No handler: SIGTERM must kill it, as it would outside the sandbox.
    const launch = launchCommand(options({ command: command('/bin/sh', '-c', 'echo ready; exec sleep 30'), user: NOBODY, sandbox: { dataDir, serviceDir, writable: [], cwd } }));
    const started = Date.now();
    const result = await runChain(launch, cwd, (line, pid) => {
      if (line === 'ready') process.kill(-pid, 'SIGTERM');
    });
    assert.equal(result.code, 128 + 15, result.stderr);
    assert.ok(Date.now() - started < 5_000);
    assert.equal(await groupGone(result.pid), true);
  });

  it('takes-the-whole-sandbox-down-with-sigkill-to-the-group', async () => {
    const sleepers = (): string[] =>
      execFileSync('ps', ['-o', 'pgid=,args=', '-u', String(NOBODY.uid)], { encoding: 'utf8' })
        .split('\n')
        .filter((line) => /\bsleep 31$/.test(line))
        .map((line) => line.trim().split(/\s+/)[0] ?? '');
    // A child that left the process group (setsid) still dies with the pid namespace.
    const source = `
      const escaped = require('node:child_process').spawn('sleep', ['31'], { detached: true, stdio: 'ignore' });
      escaped.once('spawn', () => console.log('ready'));
      setInterval(() => {}, 1000);`;
    let before: string[] = [];
    const result = await runChain(sandboxed(source), cwd, (line, pid) => {
      if (line !== 'ready') return;
      before = sleepers();
      process.kill(-pid, 'SIGKILL');
    });
    assert.equal(result.signal, 'SIGKILL');
    assert.equal(before.length, 1);
    assert.notEqual(before[0], String(result.pid));
    let after = before;
    for (let i = 0; i < 40 && after.length > 0; i++) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      after = sleepers();
    }
    assert.deepEqual(after, []);
  });
});
