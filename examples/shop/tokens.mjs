// auth/tokens: issues opaque random tokens for a user and verifies them.
// Tokens live in this instance's memory, so the manifest runs one replica.
// A new token's answer carries the user's `name` from users/profiles when it
// has one (best effort, through berth/client: lib/calls.mjs); profiles and
// charges call /verify back.
import { randomBytes } from 'node:crypto';
import { profileName } from './lib/calls.mjs';
import { HttpError, json, readJson, serve } from './lib/http.mjs';

const TTL_MS = Number(process.env.TOKEN_TTL_MS ?? 3_600_000);
/** @type {Map<string, { user: string, expiresAt: number }>} */
const tokens = new Map();

function live(token) {
  const entry = tokens.get(token);
  if (entry && entry.expiresAt <= Date.now()) {
    tokens.delete(token);
    return undefined;
  }
  return entry;
}

serve({
  name: 'tokens',
  version: '1.0.0',
  routes: [
    [
      'POST',
      '/token',
      async ({ req, res }) => {
        const body = await readJson(req);
        const user = body?.user;
        if (typeof user !== 'string' || user.trim() === '' || user.length > 200) {
          throw new HttpError(400, 'bad_request', 'expected a JSON body {"user": "<name>"}');
        }
        const token = randomBytes(24).toString('base64url');
        const expiresAt = Date.now() + TTL_MS;
        // Expired tokens are dropped when looked up; a sweep now and then bounds the rest.
        if (tokens.size >= 10_000) for (const t of tokens.keys()) live(t);
        tokens.set(token, { user, expiresAt });
        json(res, 201, { token, user, name: await profileName(req, user), expiresAt: new Date(expiresAt).toISOString() });
      },
    ],
    [
      'GET',
      '/verify',
      ({ res, query }) => {
        const token = query.get('token') ?? '';
        const entry = live(token);
        if (!entry) return json(res, 401, { valid: false, error: 'invalid_token', message: 'unknown or expired token' });
        json(res, 200, { valid: true, user: entry.user, expiresAt: new Date(entry.expiresAt).toISOString() });
      },
    ],
    [
      // The token travels in the body, not the path, so it stays out of access logs.
      'POST',
      '/revoke',
      async ({ req, res }) => {
        const body = await readJson(req);
        if (typeof body?.token !== 'string') throw new HttpError(400, 'bad_request', 'expected a JSON body {"token": "…"}');
        if (!tokens.delete(body.token)) throw new HttpError(404, 'not_found', 'unknown token');
        json(res, 200, { revoked: true });
      },
    ],
  ],
});
