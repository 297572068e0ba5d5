import { spawn, type ChildProcessByStdio } from 'node:child_process';
import type { Readable } from 'node:stream';
import type { CheckSpec } from '../../manifest/types.js';
import type { Check, CheckTarget } from '../types.js';
import { describeError } from './tcp.js';

type CommandSpec = Extract<CheckSpec, { kind: 'command' }>;
type Outcome = Awaited<ReturnType<Check['run']>>;

/** Output kept from stdout and stderr together; the rest is read and dropped so the child never blocks on a full pipe. */
const OUTPUT_CAP = 4096;

/**
 * Runs `/bin/sh -c COMMAND` in the instance's working dir with the
 * instance's environment (and nothing of Berth's). Nagios/Consul exit codes: 0 passing, 1 warning, anything else
 * (or a signal) critical. The shell leads its own process group so an abort
 * kills everything the command started, not just the shell.
 */
export class CommandCheck implements Check {
  readonly #command: string;

  constructor(spec: CommandSpec) {
    this.#command = spec.command;
  }

  run(target: CheckTarget, signal: AbortSignal): Promise<Outcome> {
    if (signal.aborted) return Promise.resolve({ status: 'critical', output: 'timeout' });
    return new Promise((resolve) => {
      let settled = false;
      const settle = (outcome: Outcome): void => {
        if (settled) return;
        settled = true;
        signal.removeEventListener('abort', onAbort);
        resolve(outcome);
      };

      let child: ChildProcessByStdio<null, Readable, Readable>;
      try {
        child = spawn('/bin/sh', ['-c', this.#command], {
          cwd: target.cwd,
          // Exactly the instance's environment (it carries PATH): a check sees what the instance sees, not Berth's secrets.
          env: target.env,
          detached: true,
          stdio: ['ignore', 'pipe', 'pipe'],
        });
      } catch (err) {
        settle({ status: 'critical', output: describeError(err) });
        return;
      }

      const chunks: Buffer[] = [];
      let size = 0;
      const collect = (chunk: Buffer): void => {
        if (size < OUTPUT_CAP) chunks.push(chunk);
        size += chunk.length;
      };
      child.stdout.on('data', collect);
      child.stderr.on('data', collect);
      // Reading our end after destroy can fail with EPIPE-like errors; the exit status is what counts.
      child.stdout.on('error', () => {});
      child.stderr.on('error', () => {});

      let aborted = false;
      const onAbort = (): void => {
        aborted = true;
        killGroup(child.pid);
        // A grandchild that left the group could keep the pipes open; don't wait on them.
        child.stdout.destroy();
        child.stderr.destroy();
      };
      signal.addEventListener('abort', onAbort, { once: true });

      child.once('error', (err) => settle({ status: 'critical', output: describeError(err) }));
      // 'close' comes after the exit and the end of both pipes: the output is complete.
      child.once('close', (code, sig) => {
        if (aborted) return settle({ status: 'critical', output: 'timeout' });
        const text = Buffer.concat(chunks).subarray(0, OUTPUT_CAP).toString('utf8').trim();
        const head = code === null ? `killed by ${sig ?? 'signal'}` : `exit ${code}`;
        const status = code === 0 ? 'passing' : code === 1 ? 'warning' : 'critical';
        settle({ status, output: text ? `${head}: ${text}` : head });
      });
    });
  }
}

function killGroup(pid: number | undefined): void {
  if (pid === undefined) return;
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    // ESRCH: the group is already gone.
  }
}
