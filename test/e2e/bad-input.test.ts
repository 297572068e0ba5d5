// Malformed and malicious requests on raw sockets, table-driven: each gets its
// expected status, the node keeps serving, and no instance ever receives a
// request it should not have (the instance prints every request it gets).
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { BerthProcess, makeProject, testManifest } from '../support/node-process.js';

const MANIFEST = testManifest(`groups:
  core:
    services:
      web:
        command: node web.mjs
        env: { LOG_REQUESTS: "1" }
        health: { http: /health, interval: 200ms, timeout: 150ms }
  other:
    services:
      side:
        command: node web.mjs
        env: { LOG_REQUESTS: "1" }
        health: { http: /health, interval: 200ms, timeout: 150ms }
`);

interface Case {
  name: string;
  /** The raw request; HOST is replaced by the gateway's address. */
  raw: string;
  status: number;
  /** The Berth error code in the JSON body, when the gateway (not Node's parser) answers. */
  code?: string;
  /** What the instance must receive instead, for requests that are normalized and served. */
  reaches?: string;
}

const get = (target: string, headers = ''): string => `GET ${target} HTTP/1.1\r\nHost: HOST\r\n${headers}\r\n`;
const post = (headers: string, body: string): string => `POST /core/web/upload HTTP/1.1\r\nHost: HOST\r\n${headers}\r\n${body}`;

const CASES: Case[] = [
  // Paths: normalized when a canonical form exists, refused when not.
  { name: 'double slashes are merged', raw: get('/core//web//echo'), status: 200, reaches: '/echo' },
  { name: 'dot segments are removed', raw: get('/core/./web/./echo'), status: 200, reaches: '/echo' },
  { name: 'a dot-dot into another group routes by the canonical path', raw: get('/other/../core/web/echo'), status: 200, reaches: '/echo' },
  { name: 'encoded unreserved characters are decoded', raw: get('/core/web/%65cho'), status: 200, reaches: '/echo' },
  { name: 'traversal to a path no group serves', raw: get('/core/web/../../etc/passwd'), status: 404, code: 'BERTH_ERR_NO_ROUTE' },
  { name: 'traversal above the root', raw: get('/core/web/../../../etc/passwd'), status: 400, code: 'BERTH_ERR_BAD_PATH' },
  { name: 'encoded traversal above the root', raw: get('/core/web/%2e%2e/%2e%2e/%2E%2E/etc/passwd'), status: 400, code: 'BERTH_ERR_BAD_PATH' },
  { name: 'half-encoded traversal', raw: get('/core/web/.%2e/.%2e/.%2e/x'), status: 400, code: 'BERTH_ERR_BAD_PATH' },
  { name: 'an encoded slash', raw: get('/core/web/a%2fb'), status: 400, code: 'BERTH_ERR_BAD_PATH' },
  { name: 'an encoded slash in upper case', raw: get('/core/web/..%2F..%2Fsecret'), status: 400, code: 'BERTH_ERR_BAD_PATH' },
  { name: 'an encoded backslash', raw: get('/core/web/a%5cb'), status: 400, code: 'BERTH_ERR_BAD_PATH' },
  { name: 'an encoded NUL', raw: get('/core/web/a%00b'), status: 400, code: 'BERTH_ERR_BAD_PATH' },
  { name: 'an encoded CR LF', raw: get('/core/web/a%0d%0aSet-Cookie:x'), status: 400, code: 'BERTH_ERR_BAD_PATH' },
  { name: 'a bad escape', raw: get('/core/web/%zz'), status: 400, code: 'BERTH_ERR_BAD_PATH' },
  { name: 'a truncated escape', raw: get('/core/web/a%2'), status: 400, code: 'BERTH_ERR_BAD_PATH' },
  { name: 'an absolute URL as the target', raw: get('http://evil.example/core/web/echo'), status: 400, code: 'BERTH_ERR_BAD_PATH' },
  { name: 'the asterisk form', raw: 'OPTIONS * HTTP/1.1\r\nHost: HOST\r\n\r\n', status: 400, code: 'BERTH_ERR_BAD_PATH' },
  { name: 'a raw space in the path', raw: 'GET /core/web/a b HTTP/1.1\r\nHost: HOST\r\n\r\n', status: 400 },
  { name: 'a non-ASCII byte in the path', raw: 'GET /core/web/\u00e9 HTTP/1.1\r\nHost: HOST\r\n\r\n', status: 400 },
  // Framing: request smuggling variants.
  { name: 'Content-Length with Transfer-Encoding', raw: post('Content-Length: 4\r\nTransfer-Encoding: chunked\r\n', '0\r\n\r\n'), status: 400 },
  { name: 'two different Content-Lengths', raw: post('Content-Length: 4\r\nContent-Length: 5\r\n', 'abcde'), status: 400 },
  { name: 'two equal Content-Lengths', raw: post('Content-Length: 4\r\nContent-Length: 4\r\n', 'abcd'), status: 400 },
  { name: 'a signed Content-Length', raw: post('Content-Length: +4\r\n', 'abcd'), status: 400 },
  { name: 'a negative Content-Length', raw: post('Content-Length: -1\r\n', ''), status: 400 },
  { name: 'Transfer-Encoding with another coding', raw: post('Transfer-Encoding: gzip, chunked\r\n', '0\r\n\r\n'), status: 501, code: 'BERTH_ERR_TRANSFER_CODING' },
  { name: 'Transfer-Encoding that is not chunked', raw: post('Transfer-Encoding: xchunked\r\n', '0\r\n\r\n'), status: 501, code: 'BERTH_ERR_TRANSFER_CODING' },
  { name: 'a space before the colon', raw: post('Transfer-Encoding : chunked\r\n', '0\r\n\r\n'), status: 400 },
  { name: 'Transfer-Encoding in HTTP/1.0', raw: 'POST /core/web/upload HTTP/1.0\r\nHost: HOST\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n', status: 400, code: 'BERTH_ERR_BAD_FRAMING' },
  { name: 'a bad chunk size', raw: post('Transfer-Encoding: chunked\r\n', 'zz\r\nabc\r\n0\r\n\r\n'), status: 400 },
  { name: 'two Host headers', raw: 'GET /core/web/echo HTTP/1.1\r\nHost: HOST\r\nHost: evil.example\r\n\r\n', status: 400, code: 'BERTH_ERR_BAD_FRAMING' },
  { name: 'no Host header', raw: 'GET /core/web/echo HTTP/1.1\r\n\r\n', status: 400 },
  { name: 'an obs-fold continuation line', raw: get('/core/web/echo', 'X-A: a\r\n b\r\n'), status: 400 },
  { name: 'LF-only line endings', raw: 'GET /core/web/echo HTTP/1.1\nHost: HOST\n\n', status: 400 },
  // Header names and values.
  { name: 'a NUL in a header value', raw: get('/core/web/echo', 'X-A: a\u0000b\r\n'), status: 400 },
  { name: 'a space in a header name', raw: get('/core/web/echo', 'X A: a\r\n'), status: 400 },
  { name: 'a bad method token', raw: 'G@T /core/web/echo HTTP/1.1\r\nHost: HOST\r\n\r\n', status: 400 },
  { name: 'too many headers', raw: get('/core/web/echo', Array.from({ length: 101 }, (_, i) => `X-H${i}: v\r\n`).join('')), status: 431, code: 'BERTH_ERR_TOO_MANY_HEADERS' },
  { name: 'an oversized header', raw: get('/core/web/echo', `X-Big: ${'a'.repeat(20_000)}\r\n`), status: 431 },
  { name: 'an oversized request target', raw: get(`/core/web/${'a'.repeat(20_000)}`), status: 431 },
];

/** Sends `raw` on its own connection; resolves with the status and body of the first response, then closes. */
function send(gateway: URL, raw: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    // Not end(): a half-closed client may see its connection dropped before a proxied answer comes back.
    const socket = connect(Number(gateway.port), gateway.hostname, () => socket.write(Buffer.from(raw.replaceAll('HOST', gateway.host), 'latin1')));
    let data = '';
    const done = (): void => {
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(data)?.[1] ?? 0);
      const head = data.indexOf('\r\n\r\n');
      const length = /\r\ncontent-length: (\d+)/i.exec(data.slice(0, head));
      // The first response only: after a refused, badly framed request the parser may answer the rest as another.
      resolve({ status, body: data.slice(head + 4, length ? head + 4 + Number(length[1]) : undefined) });
      socket.destroy();
    };
    socket.setEncoding('latin1');
    socket.on('data', (d: string) => {
      data += d;
      const head = data.indexOf('\r\n\r\n');
      if (head === -1) return;
      const length = /\r\ncontent-length: (\d+)/i.exec(data.slice(0, head));
      if (length && data.length - head - 4 >= Number(length[1])) done();
      else if (!length && /\r\ntransfer-encoding: chunked/i.test(data.slice(0, head)) && data.endsWith('0\r\n\r\n')) done();
    });
    socket.on('error', reject);
    socket.on('close', done);
  });
}

describe('bad input on raw sockets', () => {
  let project: Awaited<ReturnType<typeof makeProject>>;
  let node: BerthProcess;
  let gateway: URL;

  before(async () => {
    project = await makeProject(MANIFEST);
    node = await BerthProcess.start(project.file);
    gateway = new URL(String((await node.waitForLog((l) => l.event === 'node.ready')).gateway));
    await node.waitForInstances((xs) => xs.filter((r) => r.status === 'passing').length === 2);
  });

  after(async () => {
    await node?.stop();
    await project?.cleanup();
  });

  for (const c of CASES) {
    it(`${c.name}: ${c.status}`, async () => {
      const { status, body } = await send(gateway, c.raw);
      assert.equal(status, c.status, body.slice(0, 200));
      if (c.code) assert.equal((JSON.parse(body) as { code: string }).code, c.code);
      if (c.reaches) await node.waitForLog((l) => l.event === 'instance.output' && l.msg === `received GET ${c.reaches}`, 5_000);
    });
  }

  it('keeps serving, and no instance received a request it should not have', async (t) => {
    const ok = await send(gateway, get('/core/web/echo', 'Connection: close\r\n'));
    assert.equal(ok.status, 200);
    await node.waitForLog((l) => l.event === 'instance.output' && l.msg === 'received GET /echo');
    const received = node.logs.filter((l) => l.event === 'instance.output' && typeof l.msg === 'string' && l.msg.startsWith('received ')).map((l) => String(l.msg));
    const bad = received.filter((line) => /\.\.|%2f|%5c|%00|%0d|\\|\/\/|\/\.\//i.test(line.slice(line.indexOf('/'))) || !line.startsWith('received GET /') || line.includes('passwd'));
    assert.deepEqual(bad, [], `the instances received:\n${received.join('\n')}`);
    t.diagnostic(`${CASES.length} cases; the instances received ${received.length} requests, none they should not have`);
  });
});
