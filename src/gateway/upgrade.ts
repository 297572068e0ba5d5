import type { IncomingMessage } from 'node:http';
import { connect, type Socket } from 'node:net';
import { connect as connectTls, type ConnectionOptions } from 'node:tls';
import { upstreamHeaders } from './headers.js';
import type { Target } from './target.js';

export interface UpgradeRoute {
  target: Target;
  path: string;
  requestId: string;
  prefix: string;
  /** The service's timeout, for x-berth-timeout-ms (the handshake's; a WebSocket then lives as long as both ends want). */
  timeoutMs: number;
  proto: 'http' | 'https';
  forwardedFor: string;
  identity: string[] | null;
  /** TLS to the instance (the service's `tls:`), or undefined for plain TCP. */
  tls: ConnectionOptions | undefined;
  /** A tunnel with no byte either way for this long is closed (`gateway.timeouts.idle`; WebSocket pings keep a live one open). */
  idleMs: number;
}

/**
 * HTTP/1.1 upgrade (WebSocket): the request head is replayed to the instance
 * with the gateway's forwarding headers (Connection/Upgrade kept, as the
 * handshake needs them), then bytes flow both ways untouched. Whatever the
 * instance answers — 101 or a refusal — reaches the client as sent.
 */
export function proxyUpgrade(req: IncomingMessage, client: Socket, head: Buffer, route: UpgradeRoute, done: () => void): void {
  const address = { host: route.target.address, port: route.target.port };
  const upstream = route.tls ? connectTls({ ...route.tls, ...address }) : connect(address);
  const ready = route.tls ? 'secureConnect' : 'connect';
  let finished = false;
  const finish = (): void => {
    if (finished) return;
    finished = true;
    client.destroy();
    upstream.destroy();
    done();
  };
  upstream.setNoDelay(true);
  client.setNoDelay(true);
  // Once upgraded, the listener's timeouts no longer watch the socket: a peer that vanished without a FIN would hold the tunnel, and its instance's slot, for ever.
  client.setTimeout(route.idleMs, finish);
  upstream.setTimeout(route.idleMs, finish);
  upstream.once(ready, () => {
    const headers = upstreamHeaders(req, { requestId: route.requestId, prefix: route.prefix, proto: route.proto, timeoutMs: route.timeoutMs, forwardedFor: route.forwardedFor, identity: route.identity });
    const lines = [`${req.method} ${route.path} HTTP/1.1`];
    for (let i = 0; i < headers.length; i += 2) lines.push(`${headers[i]}: ${headers[i + 1]}`);
    lines.push(`connection: upgrade`, `upgrade: ${req.headers.upgrade ?? 'websocket'}`);
    upstream.write(`${lines.join('\r\n')}\r\n\r\n`);
    if (head.length > 0) upstream.write(head);
    upstream.pipe(client);
    client.pipe(upstream);
  });
  upstream.once('error', () => {
    if (!upstream.readyState || upstream.connecting) {
      const body = JSON.stringify({ code: 'BERTH_ERR_UPSTREAM_CONNECT', message: 'cannot connect to the instance', requestId: route.requestId });
      client.end(`HTTP/1.1 502 Bad Gateway\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
    }
    finish();
  });
  upstream.once('close', finish);
  // Either side's FIN ends the tunnel once it is passed on (WebSocket never half-closes): an instance that
  // ignores the FIN of a departed client would otherwise hold the tunnel, and the instance in flight, for ever.
  client.once('end', () => upstream.end(finish));
  upstream.once('end', () => client.end(finish));
  client.once('error', finish);
  client.once('close', finish);
}
