import net from 'node:net';
import type { CheckSpec } from '../../manifest/types.js';
import type { Check, CheckTarget } from '../types.js';

type TcpSpec = Extract<CheckSpec, { kind: 'tcp' }>;
type Outcome = Awaited<ReturnType<Check['run']>>;

/**
 * Passing when a TCP connection to the port opens (Kubernetes `tcpSocket`,
 * Consul `tcp`). The connection is destroyed at once: the check proves the
 * port accepts, it sends nothing.
 */
export class TcpCheck implements Check {
  readonly #port: number | undefined;

  constructor(spec: TcpSpec) {
    this.#port = spec.port;
  }

  run(target: CheckTarget, signal: AbortSignal): Promise<Outcome> {
    if (signal.aborted) return Promise.resolve({ status: 'critical', output: 'timeout' });
    return new Promise((resolve) => {
      const socket = net.connect({ host: target.host, port: this.#port ?? target.port });
      const settle = (outcome: Outcome): void => {
        signal.removeEventListener('abort', onAbort);
        socket.removeAllListeners('connect');
        // A late error after destroy must not become an unhandled 'error' event.
        socket.on('error', () => {});
        socket.destroy();
        resolve(outcome);
      };
      const onAbort = (): void => settle({ status: 'critical', output: 'timeout' });
      signal.addEventListener('abort', onAbort, { once: true });
      socket.once('connect', () => settle({ status: 'passing', output: 'connected' }));
      socket.once('error', (err) => settle({ status: 'critical', output: describeError(err) }));
    });
  }
}

/**
 * Short, stable wording for a socket or process error, as operators read it in
 * `lastCheck.output`: `connect ECONNREFUSED`, `getaddrinfo ENOTFOUND`, `spawn ENOENT`.
 * The address is left out: the instance record already carries it.
 */
export function describeError(err: unknown): string {
  if (err instanceof Error) {
    const { code, syscall } = err as NodeJS.ErrnoException;
    if (syscall && code) return `${syscall} ${code}`;
    const text = err.message || code || err.name;
    return text.length > 200 ? `${text.slice(0, 200)}…` : text;
  }
  return String(err);
}
