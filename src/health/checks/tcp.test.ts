import assert from 'node:assert/strict';
import { once } from 'node:events';
import net from 'node:net';
import { describe, it } from 'node:test';
import type { CheckTarget } from '../types.js';
import { TcpCheck, describeError } from './tcp.js';

const target = (port: number): CheckTarget => ({ host: '127.0.0.1', port, cwd: process.cwd(), env: {} });
const signal = (): AbortSignal => new AbortController().signal;

async function listen(): Promise<{ server: net.Server; port: number; sockets: net.Socket[] }> {
  const sockets: net.Socket[] = [];
  const server = net.createServer((socket) => sockets.push(socket));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, port: (server.address() as net.AddressInfo).port, sockets };
}

async function close(server: net.Server): Promise<void> {
  server.close();
  await once(server, 'close');
}

describe('TcpCheck', { timeout: 10_000 }, () => {
  it('passes-when-the-port-accepts-and-closes-the-connection', async () => {
    const { server, port, sockets } = await listen();
    try {
      const result = await new TcpCheck({ kind: 'tcp' }).run(target(port), signal());
      assert.deepEqual(result, { status: 'passing', output: 'connected' });
      if (sockets.length === 0) await once(server, 'connection');
      const socket = sockets[0];
      assert.ok(socket);
      // The check hangs up at once: the server sees the end of its socket.
      socket.resume();
      socket.on('error', () => {});
      if (!socket.closed) await new Promise((resolve) => socket.once('close', resolve));
    } finally {
      await close(server);
    }
  });

  it('probes-the-spec-port-over-the-instance-port', async () => {
    const { server, port, sockets } = await listen();
    try {
      const result = await new TcpCheck({ kind: 'tcp', port }).run(target(1), signal());
      assert.equal(result.status, 'passing');
      if (sockets.length === 0) await once(server, 'connection');
      for (const s of sockets) s.destroy();
    } finally {
      await close(server);
    }
  });

  it('is-critical-when-refused', async () => {
    const { server, port } = await listen();
    await close(server);
    const result = await new TcpCheck({ kind: 'tcp' }).run(target(port), signal());
    assert.deepEqual(result, { status: 'critical', output: 'connect ECONNREFUSED' });
  });

  it('is-critical-at-once-when-already-aborted', async () => {
    const controller = new AbortController();
    controller.abort();
    const result = await new TcpCheck({ kind: 'tcp' }).run(target(1), controller.signal);
    assert.deepEqual(result, { status: 'critical', output: 'timeout' });
  });

  it('abort-during-connect-destroys-the-socket', async () => {
    const { server, port, sockets } = await listen();
    try {
      const controller = new AbortController();
      const run = new TcpCheck({ kind: 'tcp' }).run(target(port), controller.signal);
      // Aborted synchronously, before the connect can complete.
      controller.abort();
      assert.deepEqual(await run, { status: 'critical', output: 'timeout' });
      for (const s of sockets) s.destroy();
    } finally {
      await close(server);
    }
  });

  it('describes-errors-as-syscall-and-code', () => {
    const err = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:1'), { code: 'ECONNREFUSED', syscall: 'connect' });
    assert.equal(describeError(err), 'connect ECONNREFUSED');
    assert.equal(describeError(new Error('other side closed')), 'other side closed');
    assert.equal(describeError('boom'), 'boom');
  });
});
