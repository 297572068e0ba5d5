import { createServer } from 'node:net';
import { BerthError } from '../errors.js';

/**
 * Hands out free TCP ports for instances. The kernel picks a free one (bind to
 * port 0); ports handed out recently are not handed out again, since an
 * instance that has not bound its port yet still looks free.
 */
export class PortAllocator {
  readonly #host: string;
  readonly #recent = new Map<number, number>();
  readonly #holdMs: number;

  constructor(host: string, holdMs = 60_000) {
    this.#host = host;
    this.#holdMs = holdMs;
  }

  /** `preferred` is reused when it is still free (an instance keeps its port across restarts). */
  async allocate(preferred?: number): Promise<number> {
    const now = Date.now();
    for (const [port, at] of this.#recent) if (now - at > this.#holdMs) this.#recent.delete(port);
    if (preferred !== undefined && (await this.#isFree(preferred))) {
      this.#recent.set(preferred, now);
      return preferred;
    }
    for (let attempt = 0; attempt < 20; attempt++) {
      const port = await this.#bind(0);
      if (port !== undefined && !this.#recent.has(port)) {
        this.#recent.set(port, now);
        return port;
      }
    }
    throw new BerthError('BERTH_ERR_NO_PORT', `no free port on ${this.#host} after 20 attempts`);
  }

  async #isFree(port: number): Promise<boolean> {
    return (await this.#bind(port)) === port;
  }

  #bind(port: number): Promise<number | undefined> {
    return new Promise((resolve) => {
      const server = createServer();
      server.unref();
      server.once('error', () => resolve(undefined));
      server.listen({ host: this.#host, port, exclusive: true }, () => {
        const address = server.address();
        const bound = typeof address === 'object' && address ? address.port : undefined;
        server.close(() => resolve(bound));
      });
    });
  }
}
