import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isLoopbackHost, listenersClash, parseListen } from './listen.js';

describe('parseListen', () => {
  it('reads-host-port-ipv6-and-bare-ports', () => {
    assert.deepEqual(parseListen('127.0.0.1:8080'), { host: '127.0.0.1', port: 8080 });
    assert.deepEqual(parseListen('localhost:80'), { host: 'localhost', port: 80 });
    assert.deepEqual(parseListen('[::1]:9000'), { host: '::1', port: 9000 });
    assert.deepEqual(parseListen('0.0.0.0:0'), { host: '0.0.0.0', port: 0 });
    assert.deepEqual(parseListen(8080), { host: '127.0.0.1', port: 8080 });
    assert.deepEqual(parseListen('9090'), { host: '127.0.0.1', port: 9090 });
  });

  it('refuses-what-is-not-an-address', () => {
    for (const bad of ['', 'localhost', ':8080', '127.0.0.1:', '127.0.0.1:65536', '::1:80', '[nothost]:80', 'a b:80', 70000, -1, 1.5]) {
      assert.equal(parseListen(bad), undefined, String(bad));
    }
  });

  it('sees-a-clash-on-the-same-port-unless-it-is-ephemeral', () => {
    assert.ok(listenersClash({ host: '127.0.0.1', port: 80 }, { host: '127.0.0.1', port: 80 }));
    assert.ok(listenersClash({ host: '0.0.0.0', port: 80 }, { host: '127.0.0.1', port: 80 }));
    assert.ok(!listenersClash({ host: '127.0.0.1', port: 80 }, { host: '127.0.0.2', port: 80 }));
    assert.ok(!listenersClash({ host: '127.0.0.1', port: 0 }, { host: '127.0.0.1', port: 0 }));
  });

  it('tells-loopback-hosts-from-the-rest', () => {
    for (const host of ['127.0.0.1', '127.3.4.5', '::1', 'localhost', 'LocalHost', '::ffff:127.0.0.1']) assert.ok(isLoopbackHost(host), host);
    for (const host of ['0.0.0.0', '::', '10.0.0.1', '192.168.1.2', 'example.com', '128.0.0.1', 'localhost.example.com']) assert.ok(!isLoopbackHost(host), host);
  });
});
