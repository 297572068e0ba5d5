import assert from 'node:assert/strict';
import { once } from 'node:events';
import net from 'node:net';
import { afterEach, describe, it } from 'node:test';
import tls from 'node:tls';
import { useCerts } from '../../test/support/certs.js';
import { ConnectionGuard, type ConnectionGuardOptions, type ConnectionLimits, type ConnectionRefusal } from './connection-guard.js';

type Outcome = { kind: 'accepted'; server: net.Socket } | { kind: 'refused'; reason: ConnectionRefusal; ip: string };

/**
 * A listener on port 0 behind a guard, and a way to connect from a given
 * loopback address and learn what the server side made of it. Connections
 * are made one at a time, so the next outcome is the last connection's.
 */
class Bench {
  readonly guard: ConnectionGuard;
  readonly servers: net.Server[] = [];
  readonly clients: net.Socket[] = [];
  readonly refusals: { reason: ConnectionRefusal; ip: string }[] = [];
  #waiting: ((o: Outcome) => void)[] = [];

  constructor(limits: ConnectionLimits, options: Omit<ConnectionGuardOptions, 'onRefused'> = {}) {
    this.guard = new ConnectionGuard(limits, {
      ...options,
      onRefused: (reason, ip) => {
        this.refusals.push({ reason, ip });
        this.#waiting.shift()?.({ kind: 'refused', reason, ip });
      },
    });
  }

  async listen(server: net.Server = net.createServer()): Promise<number> {
    // The server's own listener runs after the guard's: a socket it refused arrives destroyed.
    server.on('connection', (socket) => {
      if (!socket.destroyed) this.#waiting.shift()?.({ kind: 'accepted', server: socket });
    });
    this.guard.attach(server);
    this.servers.push(server);
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    return (server.address() as net.AddressInfo).port;
  }

  /** What the server side makes of the next connection. */
  next(): Promise<Outcome> {
    return new Promise<Outcome>((resolve) => this.#waiting.push(resolve));
  }

  /** Connects from `from` (a loopback address) and waits for the server side to accept or refuse. */
  async connect(port: number, from: string): Promise<Outcome> {
    const outcome = this.next();
    const client = net.connect({ port, host: '127.0.0.1', localAddress: from });
    this.clients.push(client);
    // A refused client may see its socket reset: that is the point, not a failure.
    client.on('error', () => {});
    return outcome;
  }

  /** Closes one accepted connection from the client side, and waits until the server side has closed too. */
  async hangUp(accepted: Outcome): Promise<void> {
    assert.equal(accepted.kind, 'accepted');
    if (accepted.kind !== 'accepted') return;
    const closed = once(accepted.server, 'close');
    const client = this.clients.find((c) => c.localPort === accepted.server.remotePort);
    assert.ok(client, 'the client side of the connection');
    client.destroy();
    await closed;
  }

  async close(): Promise<void> {
    for (const c of this.clients) c.destroy();
    await Promise.all(this.servers.map((s) => new Promise((resolve) => s.close(resolve))));
  }
}

const accepted = (o: Outcome): boolean => o.kind === 'accepted';

describe('ConnectionGuard', () => {
  let bench: Bench | undefined;
  afterEach(async () => {
    await bench?.close();
    bench = undefined;
  });

  it('refuses-a-connection-past-the-per-ip-cap-and-counts-it', async () => {
    bench = new Bench({ max: 10, perIp: 2 });
    const port = await bench.listen();
    assert.ok(accepted(await bench.connect(port, '127.0.0.2')));
    assert.ok(accepted(await bench.connect(port, '127.0.0.2')));
    assert.deepEqual(await bench.connect(port, '127.0.0.2'), { kind: 'refused', reason: 'per-ip', ip: '127.0.0.2' });
    assert.ok(accepted(await bench.connect(port, '127.0.0.3')), 'another address has its own count');
    assert.equal(bench.guard.open, 3);
    assert.equal(bench.guard.openFor('127.0.0.2'), 2);
    assert.equal(bench.guard.openFor('127.0.0.3'), 1);
    assert.deepEqual(bench.guard.refused, { total: 0, perIp: 1 });
  });

  it('refuses-a-connection-past-the-total-cap-whatever-its-address', async () => {
    bench = new Bench({ max: 2, perIp: 10 });
    const port = await bench.listen();
    assert.ok(accepted(await bench.connect(port, '127.0.0.2')));
    assert.ok(accepted(await bench.connect(port, '127.0.0.3')));
    assert.deepEqual(await bench.connect(port, '127.0.0.4'), { kind: 'refused', reason: 'total', ip: '127.0.0.4' });
    assert.equal(bench.guard.open, 2);
    assert.equal(bench.guard.openFor('127.0.0.4'), 0);
    assert.deepEqual(bench.guard.refused, { total: 1, perIp: 0 });
  });

  it('closes-the-refused-socket-so-the-client-sees-it-end', async () => {
    bench = new Bench({ max: 1, perIp: 1 });
    const port = await bench.listen();
    await bench.connect(port, '127.0.0.2');
    await bench.connect(port, '127.0.0.2');
    const refused = bench.clients[1]!;
    if (!refused.closed) await once(refused, 'close');
    assert.equal(refused.closed, true);
  });

  it('lowers-the-counts-when-connections-close-and-admits-again', async () => {
    bench = new Bench({ max: 10, perIp: 2 });
    const port = await bench.listen();
    const first = await bench.connect(port, '127.0.0.2');
    const second = await bench.connect(port, '127.0.0.2');
    assert.equal((await bench.connect(port, '127.0.0.2')).kind, 'refused');
    await bench.hangUp(first);
    assert.equal(bench.guard.openFor('127.0.0.2'), 1);
    assert.equal(bench.guard.open, 1);
    const third = await bench.connect(port, '127.0.0.2');
    assert.ok(accepted(third), 'a place was freed');
    await bench.hangUp(second);
    await bench.hangUp(third);
    assert.equal(bench.guard.open, 0);
    assert.equal(bench.guard.openFor('127.0.0.2'), 0);
  });

  it('applies-new-limits-to-new-connections-and-keeps-the-open-ones', async () => {
    bench = new Bench({ max: 10, perIp: 1 });
    const port = await bench.listen();
    assert.ok(accepted(await bench.connect(port, '127.0.0.2')));
    assert.equal((await bench.connect(port, '127.0.0.2')).kind, 'refused');
    bench.guard.update({ max: 10, perIp: 3 });
    assert.ok(accepted(await bench.connect(port, '127.0.0.2')));
    assert.ok(accepted(await bench.connect(port, '127.0.0.2')));
    bench.guard.update({ max: 2, perIp: 1 });
    assert.equal(bench.guard.open, 3, 'open connections past the new limits stay open');
    assert.deepEqual(await bench.connect(port, '127.0.0.3'), { kind: 'refused', reason: 'total', ip: '127.0.0.3' });
    assert.deepEqual(bench.guard.refused, { total: 1, perIp: 1 });
    assert.throws(() => bench?.guard.update({ max: 0, perIp: 1 }), RangeError);
  });

  it('holds-the-limits-across-every-listener-it-is-attached-to', async () => {
    bench = new Bench({ max: 2, perIp: 10 });
    const a = await bench.listen();
    const b = await bench.listen();
    assert.ok(accepted(await bench.connect(a, '127.0.0.2')));
    assert.ok(accepted(await bench.connect(b, '127.0.0.2')));
    assert.equal((await bench.connect(b, '127.0.0.3')).kind, 'refused');
    assert.equal(bench.guard.openFor('127.0.0.2'), 2);
  });

  it('stops-counting-a-detached-listener-but-releases-what-it-counted', async () => {
    bench = new Bench({ max: 1, perIp: 1 });
    const port = await bench.listen();
    const counted = await bench.connect(port, '127.0.0.2');
    bench.guard.detach(bench.servers[0]!);
    assert.ok(accepted(await bench.connect(port, '127.0.0.2')), 'not refused once detached');
    assert.equal(bench.guard.open, 1);
    await bench.hangUp(counted);
    assert.equal(bench.guard.open, 0);
  });

  it('exempts-addresses-from-the-per-ip-cap-but-not-from-the-total', async () => {
    bench = new Bench({ max: 3, perIp: 1 }, { perIpExempt: (ip) => ip === '127.0.0.2' });
    const port = await bench.listen();
    assert.ok(accepted(await bench.connect(port, '127.0.0.2')));
    assert.ok(accepted(await bench.connect(port, '127.0.0.2')));
    assert.ok(accepted(await bench.connect(port, '127.0.0.2')));
    assert.equal((await bench.connect(port, '127.0.0.2')).kind, 'refused');
    assert.deepEqual(bench.refusals, [{ reason: 'total', ip: '127.0.0.2' }]);
    assert.equal(bench.guard.openFor('127.0.0.2'), 3);
  });

  it('rejects-limits-that-are-not-positive-integers-or-infinity', () => {
    assert.throws(() => new ConnectionGuard({ max: 0, perIp: 1 }), RangeError);
    assert.throws(() => new ConnectionGuard({ max: 1, perIp: 1.5 }), RangeError);
    assert.throws(() => new ConnectionGuard({ max: Number.NaN, perIp: 1 }), RangeError);
    assert.equal(new ConnectionGuard({ max: Infinity, perIp: Infinity }).open, 0);
  });
});

describe('ConnectionGuard on a TLS listener', () => {
  const pki = useCerts('berth-guard-');

  it('refuses-before-the-handshake-and-counts-tls-connections-until-they-close', async () => {
    const server = tls.createServer({ key: pki.certs.server.key, cert: pki.certs.server.cert });
    const handshakes: tls.TLSSocket[] = [];
    server.on('secureConnection', (s) => handshakes.push(s));
    // The TLS socket over a refused raw socket reports the reset; nothing to do about it here.
    server.on('tlsClientError', () => {});
    const bench = new Bench({ max: 10, perIp: 1 });
    try {
      const port = await bench.listen(server);
      const tlsConnect = (): Promise<tls.TLSSocket | Error> =>
        new Promise((resolve) => {
          const socket = net.connect({ port, host: '127.0.0.1', localAddress: '127.0.0.2' });
          const c = tls.connect({ socket, ca: pki.certs.ca.cert, servername: 'localhost' });
          bench.clients.push(socket, c);
          c.once('secureConnect', () => resolve(c));
          c.once('error', (err: Error) => {
            c.destroy();
            resolve(err);
          });
          c.once('close', () => resolve(new Error('closed before the handshake')));
        });
      const admitted = bench.next();
      const first = await tlsConnect();
      assert.ok(first instanceof tls.TLSSocket, first instanceof Error ? first.message : 'not a TLS socket');
      const raw = await admitted;
      assert.equal(raw.kind, 'accepted');
      const refused = bench.next();
      const second = await tlsConnect();
      assert.ok(second instanceof Error, 'the second connection from the address is refused');
      assert.deepEqual(await refused, { kind: 'refused', reason: 'per-ip', ip: '127.0.0.2' });
      assert.equal(handshakes.length, 1, 'no handshake was completed for the refused socket');
      assert.equal(bench.guard.open, 1);
      // The guard counts the raw socket, which closes with the TLS one over it.
      if (raw.kind !== 'accepted') return;
      const closed = once(raw.server, 'close');
      first.destroy();
      await closed;
      assert.equal(bench.guard.open, 0);
      assert.equal(bench.guard.openFor('127.0.0.2'), 0);
    } finally {
      await bench.close();
    }
  });
});
