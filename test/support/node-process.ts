import { AssertionError } from 'node:assert';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile, cp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { request } from 'undici';
import { readTokenFile } from '../../src/admin/tokens.js';
import type { InstanceRecord } from '../../src/catalog/types.js';
import { splitLines } from '../../src/supervisor/line-splitter.js';

export const ROOT = resolve(fileURLToPath(import.meta.url), '../../../..');
export const BERTH_BIN = join(ROOT, 'bin/berth.js');
export const FIXTURES = join(ROOT, 'test/fixtures/services');

export type LogLine = Record<string, unknown> & { msg?: string; event?: string; level?: string };

/** A test node's manifest: admin API and gateway on ephemeral ports, data in the project dir, then `body` (groups…). */
export function testManifest(body: string): string {
  return `admin: { listen: "127.0.0.1:0" }\ngateway: { listen: "127.0.0.1:0" }\ndataDir: data\n${body}`;
}

/** A temp dir with the fixture services copied in and a manifest; removed by `cleanup`. */
export async function makeProject(manifest: string): Promise<{ dir: string; file: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'berth-test-'));
  await cp(FIXTURES, dir, { recursive: true });
  const file = join(dir, 'berth.yaml');
  await writeFile(file, manifest);
  return { dir, file, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/** Runs the `berth` CLI to completion. */
export async function runCli(args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [BERTH_BIN, ...args], { cwd: options.cwd ?? ROOT, env: { ...process.env, ...options.env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const [code] = (await once(child, 'exit')) as [number | null];
  return { code, stdout, stderr };
}

/**
 * A real `berth up` process with JSON logs. Tests wait on its log events
 * (pushed, not polled) and read state through its admin API.
 */
export class BerthProcess {
  readonly child: ChildProcess;
  readonly logs: LogLine[] = [];
  /** stdout as written, one entry a line: what an operator's log collector receives. */
  readonly stdout: string[] = [];
  readonly stderr: string[] = [];
  admin = '';
  /** The node's data dir, from its `node.starting` line. */
  dataDir = '';
  /**
   * The admin token the node wrote to `<dataDir>/admin-token` on its first
   * start: what the CLI on this machine uses, and what `api()` and `call()` send.
   */
  token = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Resolves when stdout and stderr are closed too: after the exit, the last lines may still be in the pipes. */
  readonly #closed: Promise<void>;
  #waiters: { pred: (l: LogLine) => boolean; resolve: (l: LogLine) => void }[] = [];

  constructor(file: string, extraArgs: string[] = []) {
    // Run as users do: the executable itself, so its shebang's runtime flags apply.
    this.child = spawn(BERTH_BIN, ['up', '-f', file, '--log-format', 'json', ...extraArgs], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.exited = new Promise((resolve) => this.child.once('exit', (code, signal) => resolve({ code, signal })));
    this.#closed = new Promise((resolve) => this.child.once('close', () => resolve()));
    splitLines(this.child.stdout!, (line) => {
      this.stdout.push(line);
      let parsed: LogLine;
      try {
        parsed = JSON.parse(line) as LogLine;
      } catch {
        parsed = { msg: line, unparsed: true };
      }
      this.logs.push(parsed);
      this.#waiters = this.#waiters.filter((w) => {
        if (!w.pred(parsed)) return true;
        w.resolve(parsed);
        return false;
      });
    });
    splitLines(this.child.stderr!, (line) => this.stderr.push(line));
  }

  static async start(file: string, extraArgs: string[] = []): Promise<BerthProcess> {
    const node = new BerthProcess(file, extraArgs);
    try {
      const ready = await node.waitForLog((l) => l.event === 'node.ready', 30_000);
      node.admin = String(ready.admin);
      node.dataDir = String((await node.waitForLog((l) => l.event === 'node.starting')).dataDir);
      node.token = (await readTokenFile(node.dataDir)) ?? '';
      return node;
    } catch (err) {
      // Nobody else holds this process: do not leave it (and its instances) behind.
      await node.stop('SIGKILL');
      throw err;
    }
  }

  /** Resolves with the first log line (past or future) matching `pred`. */
  waitForLog(pred: (l: LogLine) => boolean, timeoutMs = 20_000): Promise<LogLine> {
    const seen = this.logs.find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiters = this.#waiters.filter((w) => w.resolve !== done);
        this.child.off('exit', onExit);
        reject(new Error(`no matching log line within ${timeoutMs}ms; last lines:\n${this.logs.slice(-15).map((l) => JSON.stringify(l)).join('\n')}\nstderr: ${this.stderr.join('\n')}`));
      }, timeoutMs);
      const done = (l: LogLine): void => {
        clearTimeout(timer);
        // A test that waits for many lines must not pile up exit listeners.
        this.child.off('exit', onExit);
        resolve(l);
      };
      const onExit = (): void => {
        if (this.#waiters.some((w) => w.resolve === done)) {
          clearTimeout(timer);
          reject(new Error(`berth exited before the expected log line; stderr: ${this.stderr.join('\n')}`));
        }
      };
      this.#waiters.push({ pred, resolve: done });
      this.child.once('exit', onExit);
    });
  }

  /** Resolves with the next log line after now matching `pred`. */
  nextLog(pred: (l: LogLine) => boolean, timeoutMs = 20_000): Promise<LogLine> {
    const from = this.logs.length;
    return this.waitForLog((l) => this.logs.indexOf(l) >= from && pred(l), timeoutMs);
  }

  /**
   * Rejects if any of `texts` appears anywhere in what this node wrote to
   * stdout and stderr, raw. Once the node has exited it first waits for the
   * pipes to close, so after `stop()` that is every line it ever wrote. Give
   * it letters and digits: a character JSON escapes would hide a match.
   */
  async assertNeverLogged(...texts: string[]): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) await this.#closed;
    for (const line of [this.stdout, this.stderr].flat()) {
      const found = texts.find((text) => line.includes(text));
      if (found !== undefined) throw new AssertionError({ message: `${JSON.stringify(found)} appeared in the node's output:\n${line}` });
    }
  }

  /** `authorization: Bearer` with the node's admin token (none when `token` is null). */
  auth(token: string | null = this.token): Record<string, string> {
    return token === null || token === '' ? {} : { authorization: `Bearer ${token}` };
  }

  /** GET `path` of the admin API with the node's admin token; throws on an error status. */
  async api<T>(path: string): Promise<T> {
    const res = await request(`${this.admin}${path}`, { headers: this.auth() });
    const body = await res.body.json();
    if (res.statusCode >= 400) throw new Error(`${path}: ${res.statusCode} ${JSON.stringify(body)}`);
    return body as T;
  }

  /** Any call to the admin API: with the node's admin token unless `token` says another (null: none). */
  async call(method: 'GET' | 'POST' | 'PUT' | 'DELETE', path: string, body?: unknown, token: string | null = this.token): Promise<{ status: number; body: unknown; headers: Record<string, string | string[] | undefined> }> {
    const headers = body === undefined ? this.auth(token) : { ...this.auth(token), 'content-type': 'application/json' };
    const res = await request(`${this.admin}${path}`, { method, headers, ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
    const text = await res.body.text();
    return { status: res.statusCode, body: text === '' ? undefined : (JSON.parse(text) as unknown), headers: res.headers };
  }

  instances(service?: string): Promise<InstanceRecord[]> {
    return this.api<InstanceRecord[]>(service ? `/v1/services/${service}/instances` : '/v1/instances');
  }

  /**
   * Waits until `check` holds for the node's instances. Each round waits for the
   * next instance event in the log, so this follows the node rather than sleeping.
   */
  async waitForInstances(check: (all: InstanceRecord[]) => boolean, timeoutMs = 30_000): Promise<InstanceRecord[]> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const next = this.nextLog((l) => typeof l.event === 'string' && l.event.startsWith('instance.') && l.event !== 'instance.output', Math.max(1, deadline - Date.now())).catch(() => undefined);
      const all = await this.instances();
      if (check(all)) return all;
      if (Date.now() >= deadline || !(await next)) {
        throw new Error(`condition not met within ${timeoutMs}ms; instances: ${JSON.stringify(all.map((r) => [r.id, r.status, r.pid, r.restarts, r.reason]))}`);
      }
    }
  }

  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(signal);
    return this.exited;
  }
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Resolves when every pid is gone, or rejects listing the survivors; checks at each `tickMs`. */
export async function waitForExit(pids: number[], timeoutMs: number, tickMs = 50): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const { setTimeout: wait } = await import('node:timers/promises');
  while (pids.some(isAlive)) {
    if (Date.now() > deadline) throw new Error(`still alive after ${timeoutMs}ms: ${pids.filter(isAlive).join(', ')}`);
    await wait(tickMs);
  }
}
