import { spawn, type ChildProcess } from 'node:child_process';

/**
 * Why a watchdog: instances run in process groups of their own (so a signal to
 * Berth's terminal does not reach them and a stop reaches their whole tree),
 * which also means nothing kills them when Berth is SIGKILLed. This small bash
 * loop, started detached, holds the read end of a pipe from Berth and is told
 * each instance's process group. When the pipe closes without a goodbye
 * (Berth died), it sends the groups SIGTERM, then SIGKILL to what is left after
 * a grace. A graceful stop says `bye` first, so the watchdog exits quietly.
 *
 * The window between fork and the `+pgid` line is a few microseconds of one
 * synchronous call; the cgroup isolation (docs/isolation.md) closes it fully.
 */
const SCRIPT = String.raw`
trap '' INT HUP TERM
groups=" "
while IFS= read -r line; do
  case "$line" in
    +*) groups="$groups${'$'}{line#+} " ;;
    -*) groups="${'$'}{groups// ${'$'}{line#-} / }" ;;
    bye) exit 0 ;;
  esac
done
[ -z "${'$'}{groups// /}" ] && exit 0
for g in $groups; do kill -TERM -- "-$g" 2>/dev/null; done
for i in $(seq 1 "$GRACE_TENTHS"); do
  alive=0
  for g in $groups; do kill -0 -- "-$g" 2>/dev/null && alive=1; done
  [ "$alive" = 0 ] && exit 0
  sleep 0.1
done
for g in $groups; do kill -KILL -- "-$g" 2>/dev/null; done
exit 0
`;

export class Watchdog {
  readonly #child: ChildProcess;
  #closed = false;

  private constructor(child: ChildProcess) {
    this.#child = child;
  }

  /** Starts the watchdog; `graceMs` is how long groups get between SIGTERM and SIGKILL once Berth is gone. */
  static start(graceMs = 3000): Watchdog {
    const child = spawn('/bin/bash', ['-c', SCRIPT], {
      detached: true,
      stdio: ['pipe', 'ignore', 'ignore'],
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', GRACE_TENTHS: String(Math.max(1, Math.ceil(graceMs / 100))) },
    });
    // The watchdog must never keep Berth alive, and an EPIPE (it died) must not crash Berth.
    child.unref();
    child.stdin?.on('error', () => {});
    (child.stdin as unknown as { unref?: () => void } | null)?.unref?.();
    return new Watchdog(child);
  }

  get pid(): number | undefined {
    return this.#child.pid;
  }

  watch(pgid: number): void {
    this.#send(`+${pgid}`);
  }

  unwatch(pgid: number): void {
    this.#send(`-${pgid}`);
  }

  /** Graceful end: every instance is already stopped, nothing is to be killed. */
  close(): void {
    if (this.#closed) return;
    this.#send('bye');
    this.#closed = true;
    this.#child.stdin?.end();
  }

  #send(line: string): void {
    if (this.#closed || !this.#child.stdin?.writable) return;
    this.#child.stdin.write(`${line}\n`);
  }
}
