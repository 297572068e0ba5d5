import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, it } from 'node:test';
import { request } from 'undici';
import { healthHandler, type HealthOptions } from './health.js';

/** A node:http server whose listener tries the health handler first, then answers 404. */
async function withServer(options: HealthOptions, fn: (base: string) => Promise<void>): Promise<void> {
  const health = healthHandler(options);
  const server = createServer((req, res) => {
    if (health(req, res)) return;
    res.writeHead(404).end('not health');
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  try {
    await fn(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
  } finally {
    server.closeAllConnections();
    server.close();
  }
}

async function get(url: string, method: 'GET' | 'HEAD' | 'POST' = 'GET'): Promise<{ status: number; text: string }> {
  const res = await request(url, { method });
  return { status: res.statusCode, text: await res.body.text() };
}

describe('berth/client: healthHandler', () => {
  it('answers-the-statuses-berth-checks-read', async () => {
    let verdict: boolean | 'warning' | Error = true;
    await withServer(
      {
        check: () => {
          if (verdict instanceof Error) throw verdict;
          return verdict;
        },
      },
      async (base) => {
        const passing = await get(`${base}/health`);
        assert.equal(passing.status, 200);
        assert.equal((JSON.parse(passing.text) as { status: string }).status, 'passing');
        verdict = 'warning';
        assert.equal((await get(`${base}/health?probe=1`)).status, 429);
        verdict = false;
        assert.equal((await get(`${base}/health`)).status, 503);
        verdict = new Error('database unreachable');
        const failed = await get(`${base}/health`);
        assert.deepEqual([failed.status, (JSON.parse(failed.text) as { output: string }).output], [503, 'database unreachable']);
        assert.deepEqual(await get(`${base}/health`, 'HEAD'), { status: 503, text: '' });
      },
    );
  });

  it('leaves-other-paths-and-methods-to-the-service', () =>
    withServer({ path: '/healthz' }, async (base) => {
      assert.equal((await get(`${base}/healthz`)).status, 200);
      assert.deepEqual(await get(`${base}/health`), { status: 404, text: 'not health' });
      assert.deepEqual(await get(`${base}/healthz`, 'POST'), { status: 404, text: 'not health' });
    }));
});
