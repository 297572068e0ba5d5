import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { mkdir, rename, rm, writeFile } from 'node:fs/promises';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import tls from 'node:tls';
import { Client } from 'undici';
import { useCerts, type CertPair } from '../../test/support/certs.js';
import { isBerthError, type BerthError } from '../errors.js';
import { FakeClock } from '../testing/fake-clock.js';
import { CertificateWatcher, hstsHeader, serverTlsOptions, upstreamConnectOptions, type CertificateFiles, type CertificateHandlers, type ServerContext, type WatchDirectory } from './tls.js';

const pki = useCerts('berth-tls-');
let seq = 0;

/** A fresh directory holding `pair` as tls.crt and tls.key, as a listener's files would be. */
async function liveDir(pair: CertPair): Promise<{ dir: string; certFile: string; keyFile: string }> {
  const dir = join(pki.root, `live-${++seq}`);
  await mkdir(dir);
  const certFile = join(dir, 'tls.crt');
  const keyFile = join(dir, 'tls.key');
  await Promise.all([writeFile(certFile, pair.cert), writeFile(keyFile, pair.key)]);
  return { dir, certFile, keyFile };
}

/** Replaces a file the way cert-manager and certbot do: write a temp file beside it, rename it over. */
async function replace(file: string, content: string): Promise<void> {
  await writeFile(`${file}.tmp`, content);
  await rename(`${file}.tmp`, file);
}

/** Calls recorded as they come; `next()` resolves with the next one not yet taken. */
class Calls<T> {
  readonly seen: T[] = [];
  #taken = 0;
  #waiting: ((value: T) => void) | undefined;

  readonly push = (value: T): void => {
    this.seen.push(value);
    const waiting = this.#waiting;
    this.#waiting = undefined;
    if (waiting) waiting(this.seen[this.#taken++] as T);
  };

  next(): Promise<T> {
    if (this.#taken < this.seen.length) return Promise.resolve(this.seen[this.#taken++] as T);
    return new Promise((resolve) => (this.#waiting = resolve));
  }
}

const filesOf = (files: { certFile: string; keyFile: string }): CertificateFiles => ({ certFile: files.certFile, keyFile: files.keyFile, minVersion: 'TLSv1.2' });

function handlers(over: Partial<CertificateHandlers> = {}): CertificateHandlers {
  return { onChange: () => {}, onError: () => {}, ...over };
}

async function loadError(files: { certFile: string; keyFile: string }, over: Partial<CertificateHandlers> = {}): Promise<BerthError> {
  try {
    const watcher = await CertificateWatcher.load(filesOf(files), handlers(over));
    watcher.close();
  } catch (err) {
    assert.ok(isBerthError(err, 'BERTH_ERR_TLS_MATERIAL'), `expected BERTH_ERR_TLS_MATERIAL, got ${String(err)}`);
    return err;
  }
  assert.fail('load succeeded');
}

/** A directory watch driven by the test: `fire(dir)` is a file event in it. */
function fakeWatch(): { watchDirectory: WatchDirectory; fire(dir: string): void; open: Map<string, number> } {
  const listeners = new Map<string, () => void>();
  const open = new Map<string, number>();
  return {
    open,
    watchDirectory: (dir, onEvent) => {
      listeners.set(dir, onEvent);
      open.set(dir, (open.get(dir) ?? 0) + 1);
      return { close: () => void open.set(dir, (open.get(dir) ?? 0) - 1) };
    },
    fire: (dir) => listeners.get(dir)?.(),
  };
}

describe('CertificateWatcher.load', () => {
  it('loads-the-pair-with-its-expiry-and-a-tls-1.2-floor', async () => {
    const files = await liveDir(pki.certs.server);
    const watcher = await CertificateWatcher.load(filesOf(files), handlers());
    try {
      const context = watcher.current();
      assert.equal(context.cert, pki.certs.server.cert);
      assert.equal(context.key, pki.certs.server.key);
      assert.equal(context.minVersion, 'TLSv1.2');
      assert.equal(watcher.notAfter.getTime(), new Date(new X509Certificate(pki.certs.server.cert).validTo).getTime());
      assert.ok(watcher.notAfter.getTime() > Date.now() + 29 * 86_400_000);
    } finally {
      watcher.close();
    }
  });

  it('refuses-a-key-that-is-not-the-certificates-naming-both-files', async () => {
    const files = await liveDir(pki.certs.server);
    await writeFile(files.keyFile, pki.certs.server2.key);
    const err = await loadError(files);
    assert.ok(err.message.includes(files.keyFile) && err.message.includes(files.certFile), err.message);
    assert.match(err.message, /does not belong/);
  });

  it('names-a-file-that-cannot-be-read', async () => {
    const files = await liveDir(pki.certs.server);
    await rm(files.keyFile);
    const err = await loadError(files);
    assert.match(err.message, new RegExp(`^${files.keyFile}: cannot read the private key: ENOENT`));
  });

  it('names-the-file-when-its-directory-is-missing', async () => {
    const certFile = join(pki.root, 'nowhere', 'tls.crt');
    const err = await loadError({ certFile, keyFile: join(pki.root, 'nowhere', 'tls.key') });
    assert.ok(err.message.includes(certFile), err.message);
  });

  it('names-a-certificate-file-that-is-not-pem', async () => {
    const files = await liveDir(pki.certs.server);
    await writeFile(files.certFile, 'not a certificate\n');
    const err = await loadError(files);
    assert.equal(err.message, `${files.certFile}: not a PEM certificate`);
  });

  it('names-a-key-file-that-is-not-pem', async () => {
    const files = await liveDir(pki.certs.server);
    await writeFile(files.keyFile, '-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----\n');
    const err = await loadError(files);
    assert.equal(err.message, `${files.keyFile}: not a PEM private key`);
  });

  it('leaves-no-watch-open-when-loading-fails', async () => {
    const files = await liveDir(pki.certs.server);
    await rm(files.certFile);
    const watch = fakeWatch();
    await loadError(files, { watchDirectory: watch.watchDirectory });
    assert.deepEqual([...watch.open.values()], [0]);
  });
});

describe('CertificateWatcher reloads', () => {
  it('reloads-once-a-burst-of-events-has-been-quiet-for-100ms', async () => {
    const files = await liveDir(pki.certs.server);
    const clock = new FakeClock();
    const watch = fakeWatch();
    const changes = new Calls<ServerContext>();
    const watcher = await CertificateWatcher.load(filesOf(files), handlers({ clock, watchDirectory: watch.watchDirectory, onChange: changes.push }));
    try {
      await Promise.all([writeFile(files.certFile, pki.certs.server2.cert), writeFile(files.keyFile, pki.certs.server2.key)]);
      watch.fire(files.dir);
      clock.advance(60);
      watch.fire(files.dir);
      clock.advance(60);
      // 120 ms after the first event but 60 after the last: still waiting, on one timer.
      assert.equal(clock.pendingTimers, 1);
      clock.advance(40);
      assert.equal(clock.pendingTimers, 0);
      const context = await changes.next();
      assert.equal(context.cert, pki.certs.server2.cert);
      assert.equal(context.key, pki.certs.server2.key);
      assert.equal(context.minVersion, 'TLSv1.2');
      assert.equal(watcher.current().cert, pki.certs.server2.cert);
      assert.equal(watcher.notAfter.getTime(), new Date(new X509Certificate(pki.certs.server2.cert).validTo).getTime());
    } finally {
      watcher.close();
    }
    assert.equal(changes.seen.length, 1);
  });

  it('keeps-the-pair-in-use-when-the-new-one-is-bad', async () => {
    const files = await liveDir(pki.certs.server);
    const clock = new FakeClock();
    const watch = fakeWatch();
    const errors = new Calls<BerthError>();
    const changes = new Calls<ServerContext>();
    const watcher = await CertificateWatcher.load(filesOf(files), handlers({ clock, watchDirectory: watch.watchDirectory, onChange: changes.push, onError: errors.push }));
    try {
      // Half a renewal: the new key beside the old certificate.
      await writeFile(files.keyFile, pki.certs.server2.key);
      watch.fire(files.dir);
      clock.advance(100);
      const err = await errors.next();
      assert.equal(err.code, 'BERTH_ERR_TLS_MATERIAL');
      assert.ok(err.message.includes(files.keyFile), err.message);
      assert.equal(watcher.current().cert, pki.certs.server.cert);
      assert.equal(watcher.current().key, pki.certs.server.key);
      // The other half lands: its event completes the renewal.
      await writeFile(files.certFile, pki.certs.server2.cert);
      watch.fire(files.dir);
      clock.advance(100);
      assert.equal((await changes.next()).cert, pki.certs.server2.cert);
    } finally {
      watcher.close();
    }
  });

  it('keeps-the-pair-in-use-when-the-listener-refuses-the-new-one', async () => {
    const files = await liveDir(pki.certs.server);
    const clock = new FakeClock();
    const watch = fakeWatch();
    const errors = new Calls<BerthError>();
    const onChange = (): void => {
      throw new Error('setSecureContext failed');
    };
    const watcher = await CertificateWatcher.load(filesOf(files), handlers({ clock, watchDirectory: watch.watchDirectory, onChange, onError: errors.push }));
    try {
      await Promise.all([writeFile(files.certFile, pki.certs.server2.cert), writeFile(files.keyFile, pki.certs.server2.key)]);
      watch.fire(files.dir);
      clock.advance(100);
      assert.match((await errors.next()).message, /the new pair was not taken: setSecureContext failed$/);
      assert.equal(watcher.current().cert, pki.certs.server.cert);
    } finally {
      watcher.close();
    }
  });

  it('does-not-call-back-when-the-files-hold-the-same-pair', async () => {
    const files = await liveDir(pki.certs.server);
    const clock = new FakeClock();
    const watch = fakeWatch();
    const changes = new Calls<ServerContext>();
    const errors = new Calls<BerthError>();
    const watcher = await CertificateWatcher.load(filesOf(files), handlers({ clock, watchDirectory: watch.watchDirectory, onChange: changes.push, onError: errors.push }));
    await replace(files.certFile, pki.certs.server.cert);
    watch.fire(files.dir);
    clock.advance(100);
    await watcher.settled();
    watcher.close();
    assert.deepEqual(changes.seen, []);
    assert.deepEqual(errors.seen, []);
  });

  it('does-not-call-back-after-close-even-mid-reload', async () => {
    const files = await liveDir(pki.certs.server);
    const clock = new FakeClock();
    const watch = fakeWatch();
    const changes = new Calls<ServerContext>();
    const watcher = await CertificateWatcher.load(filesOf(files), handlers({ clock, watchDirectory: watch.watchDirectory, onChange: changes.push }));
    await Promise.all([writeFile(files.certFile, pki.certs.server2.cert), writeFile(files.keyFile, pki.certs.server2.key)]);
    watch.fire(files.dir);
    clock.advance(100);
    // The timer has fired and the files are being read.
    watcher.close();
    await watcher.settled();
    assert.deepEqual(changes.seen, []);
    assert.equal(watcher.current().cert, pki.certs.server.cert);
  });

  it('replays-an-event-seen-while-the-files-were-read', async () => {
    const files = await liveDir(pki.certs.server);
    const clock = new FakeClock();
    const watch = fakeWatch();
    const watchDirectory: WatchDirectory = (dir, onEvent, onError) => {
      const handle = watch.watchDirectory(dir, onEvent, onError);
      onEvent();
      return handle;
    };
    const watcher = await CertificateWatcher.load(filesOf(files), handlers({ clock, watchDirectory }));
    try {
      assert.equal(clock.pendingTimers, 1);
    } finally {
      watcher.close();
    }
  });

  it('watches-each-directory-once-and-close-removes-watches-and-timers', async () => {
    const files = await liveDir(pki.certs.server);
    const keyDir = join(pki.root, `keys-${++seq}`);
    await mkdir(keyDir);
    const keyFile = join(keyDir, 'tls.key');
    await writeFile(keyFile, pki.certs.server.key);
    const clock = new FakeClock();
    const watch = fakeWatch();
    const watcher = await CertificateWatcher.load(filesOf({ certFile: files.certFile, keyFile }), handlers({ clock, watchDirectory: watch.watchDirectory }));
    assert.deepEqual(Object.fromEntries(watch.open), { [files.dir]: 1, [keyDir]: 1 });
    watch.fire(keyDir);
    assert.equal(clock.pendingTimers, 1);
    watcher.close();
    assert.equal(clock.pendingTimers, 0);
    assert.deepEqual(Object.fromEntries(watch.open), { [files.dir]: 0, [keyDir]: 0 });
    watch.fire(files.dir);
    assert.equal(clock.pendingTimers, 0);

    const same = fakeWatch();
    const both = await CertificateWatcher.load(filesOf(files), handlers({ clock, watchDirectory: same.watchDirectory }));
    both.close();
    assert.deepEqual([...same.open.keys()], [files.dir]);
  });
});

interface Listener {
  server: https.Server;
  port: number;
  /** TLS connections the server accepted. */
  connections: number;
  close(): Promise<void>;
}

/** An HTTPS server answering each request with the serial of the certificate its connection was made with. */
async function listen(options: https.ServerOptions): Promise<Listener> {
  const server = https.createServer(options, (req, res) => {
    const socket = req.socket as tls.TLSSocket;
    const own = socket.getCertificate();
    res.end(own && 'serialNumber' in own ? own.serialNumber : '');
  });
  const listener: Listener = {
    server,
    port: 0,
    connections: 0,
    close: async () => {
      server.closeAllConnections();
      server.close();
      await once(server, 'close');
    },
  };
  server.on('secureConnection', () => listener.connections++);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  listener.port = (server.address() as AddressInfo).port;
  return listener;
}

/** Completes a TLS handshake with the listener and hangs up; rejects when the handshake fails. */
async function handshake(port: number, options: tls.ConnectionOptions = {}): Promise<{ serial: string; protocol: string | null; alpn: string | false | null }> {
  const socket = tls.connect({ host: '127.0.0.1', port, ca: pki.certs.ca.cert, ...options });
  try {
    await once(socket, 'secureConnect');
    return { serial: socket.getPeerCertificate().serialNumber, protocol: socket.getProtocol(), alpn: socket.alpnProtocol };
  } finally {
    socket.destroy();
  }
}

async function handshakeError(port: number, options: tls.ConnectionOptions): Promise<NodeJS.ErrnoException> {
  try {
    await handshake(port, options);
  } catch (err) {
    return err as NodeJS.ErrnoException;
  }
  assert.fail('the handshake succeeded');
}

describe('HTTPS listener', { timeout: 20_000 }, () => {
  it('a-renewed-pair-serves-new-connections-while-open-ones-keep-going', async () => {
    const files = await liveDir(pki.certs.server);
    const changes = new Calls<ServerContext>();
    const wired: { server?: https.Server } = {};
    const watcher = await CertificateWatcher.load(
      filesOf(files),
      handlers({
        onChange: (context) => {
          wired.server?.setSecureContext(context);
          changes.push(context);
        },
      }),
    );
    const listener = await listen(serverTlsOptions({ minVersion: 'TLSv1.2' }, watcher.current()));
    wired.server = listener.server;
    const client = new Client(`https://127.0.0.1:${listener.port}`, { connect: { ca: pki.certs.ca.cert } });
    try {
      const first = await client.request({ method: 'GET', path: '/' });
      assert.equal(await first.body.text(), pki.certs.server.serial);
      assert.equal((await handshake(listener.port)).serial, pki.certs.server.serial);

      await replace(files.keyFile, pki.certs.server2.key);
      await replace(files.certFile, pki.certs.server2.cert);
      // Between the two renames a watcher may see half a renewal (and report it): wait for the whole one.
      while ((await changes.next()).cert !== pki.certs.server2.cert);

      assert.equal((await handshake(listener.port)).serial, pki.certs.server2.serial);
      const before = listener.connections;
      const again = await client.request({ method: 'GET', path: '/' });
      assert.equal(again.statusCode, 200);
      // The keep-alive connection made before the swap answered, with the certificate it was made with.
      assert.equal(await again.body.text(), pki.certs.server.serial);
      assert.equal(listener.connections, before);
    } finally {
      await client.close();
      watcher.close();
      await listener.close();
    }
  });

  it('a-garbage-key-is-reported-and-new-connections-keep-the-old-certificate', async () => {
    const files = await liveDir(pki.certs.server);
    const errors = new Calls<BerthError>();
    const changes = new Calls<ServerContext>();
    const wired: { server?: https.Server } = {};
    const watcher = await CertificateWatcher.load(
      filesOf(files),
      handlers({
        onChange: (context) => {
          wired.server?.setSecureContext(context);
          changes.push(context);
        },
        onError: errors.push,
      }),
    );
    const listener = await listen(serverTlsOptions({ minVersion: 'TLSv1.2' }, watcher.current()));
    wired.server = listener.server;
    try {
      await writeFile(files.keyFile, 'garbage\n');
      const err = await errors.next();
      assert.equal(err.code, 'BERTH_ERR_TLS_MATERIAL');
      assert.ok(err.message.startsWith(files.keyFile), err.message);
      assert.equal((await handshake(listener.port)).serial, pki.certs.server.serial);
      assert.deepEqual(changes.seen, []);
    } finally {
      watcher.close();
      await listener.close();
    }
  });

  it('refuses-a-client-that-offers-only-tls-1.1', async () => {
    // SECLEVEL=0 lets this client really offer TLS 1.1 (by default OpenSSL 3 would not even try),
    // so the refusal tested is the server's.
    const legacy: tls.ConnectionOptions = { minVersion: 'TLSv1', maxVersion: 'TLSv1.1', ciphers: 'DEFAULT@SECLEVEL=0' };
    const listener = await listen(serverTlsOptions({ minVersion: 'TLSv1.2' }, pki.certs.server));
    const permissive = await listen({ cert: pki.certs.server.cert, key: pki.certs.server.key, minVersion: 'TLSv1', ciphers: 'DEFAULT@SECLEVEL=0' });
    try {
      const err = await handshakeError(listener.port, legacy);
      assert.equal(err.code, 'ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION');
      // The same client gets through to a server that allows it: the refusal above is the options'.
      assert.equal((await handshake(permissive.port, legacy)).protocol, 'TLSv1.1');
    } finally {
      await listener.close();
      await permissive.close();
    }
  });

  it('never-goes-below-tls-1.2-whatever-the-spec-says', () => {
    const options = serverTlsOptions({ minVersion: 'TLSv1' as 'TLSv1.2' }, pki.certs.server);
    assert.equal(options.minVersion, 'TLSv1.2');
  });

  it('a-tls-1.3-floor-refuses-tls-1.2', async () => {
    const listener = await listen(serverTlsOptions({ minVersion: 'TLSv1.3' }, pki.certs.server));
    try {
      const err = await handshakeError(listener.port, { maxVersion: 'TLSv1.2' });
      assert.equal(err.code, 'ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION');
      assert.equal((await handshake(listener.port)).protocol, 'TLSv1.3');
    } finally {
      await listener.close();
    }
  });

  it('negotiates-http/1.1-over-alpn', async () => {
    const listener = await listen(serverTlsOptions({ minVersion: 'TLSv1.2' }, pki.certs.server));
    try {
      const { alpn, protocol } = await handshake(listener.port, { ALPNProtocols: ['h2', 'http/1.1'] });
      assert.equal(alpn, 'http/1.1');
      assert.equal(protocol, 'TLSv1.3');
    } finally {
      await listener.close();
    }
  });
});

describe('hstsHeader', () => {
  it('writes-max-age-and-the-flags-asked-for', () => {
    assert.equal(hstsHeader({ maxAgeSeconds: 31_536_000, includeSubDomains: true, preload: true }), 'max-age=31536000; includeSubDomains; preload');
    assert.equal(hstsHeader({ maxAgeSeconds: 300, includeSubDomains: false, preload: false }), 'max-age=300');
    assert.equal(hstsHeader({ maxAgeSeconds: 60, includeSubDomains: false, preload: true }), 'max-age=60; preload');
  });
});

describe('upstreamConnectOptions', () => {
  it('reads-the-ca-and-client-pair-once', async () => {
    const options = await upstreamConnectOptions({ caFile: pki.certs.ca.certFile, certFile: pki.certs.client.certFile, keyFile: pki.certs.client.keyFile, serverName: 'orders.internal', verify: true });
    assert.deepEqual(options, { ca: pki.certs.ca.cert, cert: pki.certs.client.cert, key: pki.certs.client.key, servername: 'orders.internal', rejectUnauthorized: true });
  });

  it('sets-only-what-the-spec-gives', async () => {
    assert.deepEqual(await upstreamConnectOptions({ verify: true }), { rejectUnauthorized: true });
    assert.deepEqual(await upstreamConnectOptions({ verify: false }), { rejectUnauthorized: false });
  });

  it('names-a-missing-ca-file', async () => {
    const caFile = join(pki.root, 'missing-ca.pem');
    await assert.rejects(upstreamConnectOptions({ caFile, verify: true }), (err: unknown) => isBerthError(err, 'BERTH_ERR_TLS_MATERIAL') && err.message === `${caFile}: cannot read the CA bundle: ENOENT`);
  });

  it('names-a-ca-file-that-is-not-pem', async () => {
    const caFile = join(pki.root, 'garbage-ca.pem');
    await writeFile(caFile, 'nope');
    await assert.rejects(upstreamConnectOptions({ caFile, verify: true }), (err: unknown) => isBerthError(err, 'BERTH_ERR_TLS_MATERIAL') && err.message === `${caFile}: not a PEM certificate`);
  });

  it('refuses-a-client-certificate-without-its-key-or-with-another', async () => {
    await assert.rejects(upstreamConnectOptions({ certFile: pki.certs.client.certFile, verify: true }), (err: unknown) => isBerthError(err, 'BERTH_ERR_TLS_MATERIAL') && err.message.includes(pki.certs.client.certFile));
    await assert.rejects(upstreamConnectOptions({ certFile: pki.certs.client.certFile, keyFile: pki.certs.server.keyFile, verify: true }), (err: unknown) => isBerthError(err, 'BERTH_ERR_TLS_MATERIAL') && err.message.includes(pki.certs.server.keyFile));
  });
});
