import assert from 'node:assert/strict';
import { once } from 'node:events';
import { watch } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { CheckTarget } from '../types.js';
import { CommandCheck } from './command.js';

let dir = '';
/** The supervisor hands checks the instance's whole environment, PATH included. */
const target = (env: Record<string, string> = {}): CheckTarget => ({ host: '127.0.0.1', port: 1, cwd: dir, env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env } });
const run = (command: string, t = target(), signal = new AbortController().signal) =>
  new CommandCheck({ kind: 'command', command }).run(t, signal);

/** Whether `pid` exists. Only used on our own child, which Node reaps before the check resolves. */
function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function killQuietly(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // Already gone: the expected case.
  }
}

/** Resolves when `name` appears in `folder` (renamed into place, so its content is complete). */
function appeared(folder: string, name: string): Promise<void> {
  return new Promise((resolve) => {
    const watcher = watch(folder, (_event, file) => {
      if (file === name) {
        watcher.close();
        resolve();
      }
    });
  });
}

describe('CommandCheck', { timeout: 10_000 }, () => {
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'berth-command-check-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('passes-on-exit-0-with-its-output', async () => {
    assert.deepEqual(await run('echo ok'), { status: 'passing', output: 'exit 0: ok' });
  });

  it('is-a-warning-on-exit-1', async () => {
    assert.deepEqual(await run('echo degraded >&2; exit 1'), { status: 'warning', output: 'exit 1: degraded' });
  });

  it('is-critical-on-exit-2', async () => {
    assert.deepEqual(await run('exit 2'), { status: 'critical', output: 'exit 2' });
  });

  it('runs-in-the-instance-cwd-with-its-env', async () => {
    const result = await run('printf "%s %s" "$PWD" "$BERTH_SERVICE"', target({ BERTH_SERVICE: 'charges' }));
    assert.equal(result.output, `exit 0: ${dir} charges`);
  });

  it('does-not-see-berths-own-environment', async () => {
    process.env.BERTH_CHECK_TEST_SECRET = 'leaked';
    try {
      assert.deepEqual(await run('printf "%s" "${BERTH_CHECK_TEST_SECRET-unset}"'), { status: 'passing', output: 'exit 0: unset' });
    } finally {
      delete process.env.BERTH_CHECK_TEST_SECRET;
    }
  });

  it('keeps-the-first-4-KiB-of-output-and-drains-the-rest', async () => {
    // 1 MiB: more than a pipe holds, so the child would block if the rest were not read.
    const result = await run('head -c 1048576 /dev/zero | tr "\\0" x');
    assert.equal(result.status, 'passing');
    assert.equal(result.output, `exit 0: ${'x'.repeat(4096)}`);
  });

  it('is-critical-when-killed-by-a-signal', async () => {
    assert.deepEqual(await run('kill -TERM $$'), { status: 'critical', output: 'killed by SIGTERM' });
  });

  it('is-critical-when-the-cwd-is-missing', async () => {
    const result = await new CommandCheck({ kind: 'command', command: 'true' }).run(
      { ...target(), cwd: path.join(dir, 'missing') },
      new AbortController().signal,
    );
    assert.equal(result.status, 'critical');
    assert.match(result.output, /ENOENT/);
  });

  it('abort-kills-the-whole-process-group', async () => {
    // A grandchild (a node process) reports in over TCP: its socket closing is how
    // the test sees it die, because a process that is not ours cannot be waited on.
    const grandchild = net.createServer();
    grandchild.listen(0, '127.0.0.1');
    await once(grandchild, 'listening');
    const connected = once(grandchild, 'connection') as Promise<[net.Socket]>;
    const ready = appeared(dir, 'pid');
    const controller = new AbortController();
    const script = 'require("net").connect(+process.env.PROBE_PORT, "127.0.0.1"); setInterval(() => {}, 1e6)';
    // The shell writes its pid, starts the grandchild, then becomes `sleep 30` (same pid, same group).
    const running = run(
      `echo $$ > pid.tmp && mv pid.tmp pid; "$NODE" -e '${script}' & exec sleep 30`,
      target({ NODE: process.execPath, PROBE_PORT: String((grandchild.address() as net.AddressInfo).port) }),
      controller.signal,
    );
    let pid = 0;
    try {
      const [[socket]] = await Promise.all([connected, ready]);
      pid = Number(await readFile(path.join(dir, 'pid'), 'utf8'));
      assert.equal(isAlive(pid), true, 'sleep 30 runs before the abort');
      socket.on('error', () => {});
      const socketClosed = new Promise((resolve) => socket.once('close', resolve));

      controller.abort(new Error('timeout'));
      assert.deepEqual(await running, { status: 'critical', output: 'timeout' });
      assert.equal(isAlive(pid), false, 'sleep 30 is gone after the abort');
      // Only the grandchild's exit closes its socket; without the group kill it would run for good.
      await socketClosed;
    } finally {
      // Only does something when the test failed: leave no process behind either way.
      if (pid > 0) killQuietly(-pid);
      grandchild.close();
    }
  });

  it('is-critical-at-once-when-already-aborted', async () => {
    const controller = new AbortController();
    controller.abort();
    assert.deepEqual(await run('exit 0', target(), controller.signal), { status: 'critical', output: 'timeout' });
  });
});
