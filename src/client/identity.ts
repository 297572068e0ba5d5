import type { IncomingMessage } from 'node:http';
import { IDENTITY_KEY_ENV, verifyIdentity as verifyHeaders, type Identity, type IdentityCheck } from '../security/identity.js';

export type { Identity, IdentityCheck };

export interface VerifyIdentityOptions {
  /** The identity key. Default: `$BERTH_IDENTITY_KEY` (base64url), which Berth gives every instance it runs. */
  key?: Buffer;
  /** How far the gateway's signing time may be from now, either way. Default 300. */
  maxAgeSeconds?: number;
}

/** The environment's key, decoded once per distinct value. */
let envKey: { text: string; key: Buffer } | undefined;

function keyFromEnv(): Buffer | undefined {
  const text = process.env[IDENTITY_KEY_ENV];
  if (text === undefined || text === '') return undefined;
  if (envKey?.text !== text) envKey = { text, key: Buffer.from(text, 'base64url') };
  return envKey.key;
}

/**
 * Who made this request, as the Berth gateway that forwarded it established
 * it: checks the `x-berth-*` identity headers' signature against the
 * request's method and URL, and their age. A request that reached the
 * instance around the gateway, or was altered, or replayed late, is refused
 * with the reason. With no key (no option, no `BERTH_IDENTITY_KEY`) every
 * request is refused: fail closed.
 *
 *     const who = verifyIdentity(req);
 *     if (!who.ok) return res.writeHead(401).end();
 *     who.identity.subject, who.identity.roles, …
 */
export function verifyIdentity(req: IncomingMessage, options: VerifyIdentityOptions = {}): IdentityCheck {
  const key = options.key ?? keyFromEnv();
  if (key === undefined) return { ok: false, reason: `no identity key: ${IDENTITY_KEY_ENV} is not set (Berth sets it for the instances it runs) and none was given` };
  return verifyHeaders(req.headers, {
    key,
    method: req.method ?? 'GET',
    path: req.url ?? '/',
    nowSeconds: Math.floor(Date.now() / 1000),
    ...(options.maxAgeSeconds === undefined ? {} : { maxAgeSeconds: options.maxAgeSeconds }),
  });
}
