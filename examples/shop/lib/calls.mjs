// Calls from one shop service to another through berth/client: the client
// finds the other service's passing instances through the node's admin API
// ($BERTH_ADMIN, which Berth gives every instance) and keeps them current
// with a watch; it balances, retries and breaks circuits as the gateway does;
// and fromRequest(req) passes the incoming request's id and what is left of
// its deadline on to the call, so one id follows a request through the shop.
import { createClient, fromRequest, isBerthError } from 'berth/client';
import { HttpError } from './http.mjs';

/** One client per process: it connects to nothing until the first call. */
export const client = createClient();

const BEARER = /^Bearer\s+(\S+)$/i;

/**
 * Who the request's `Authorization: Bearer <token>` belongs to, as auth/tokens
 * says: `{ user, checkedBy: { instance, requestId } }`, or null when the
 * request has no such header. 401 for a token tokens does not know, 503 when
 * tokens cannot be asked.
 * @param {import('node:http').IncomingMessage} req
 */
export async function bearerUser(req) {
  const token = BEARER.exec(req.headers.authorization ?? '')?.[1];
  if (token === undefined) return null;
  let res;
  try {
    res = await client.request('tokens', `/verify?token=${encodeURIComponent(token)}`, fromRequest(req));
  } catch (err) {
    throw new HttpError(503, 'auth_unavailable', `cannot check the token: ${isBerthError(err) ? `${err.code}: ${err.message}` : err.message}`);
  }
  const body = await res.json();
  if (res.status === 401) throw new HttpError(401, 'invalid_token', 'unknown or expired token');
  if (res.status !== 200) throw new HttpError(503, 'auth_unavailable', `tokens answered ${res.status}`);
  return { user: body.user, checkedBy: { instance: body.instance, requestId: body.requestId } };
}

/**
 * The `name` in a user's profile (users/profiles), or null: best effort, at
 * most 500 ms, and null too when profiles is down or the replica that answered
 * does not hold that profile (each keeps its own).
 * @param {import('node:http').IncomingMessage} req
 * @param {string} user
 */
export async function profileName(req, user) {
  const context = fromRequest(req);
  try {
    const res = await client.request('profiles', `/profiles/${encodeURIComponent(user)}`, {
      requestId: context.requestId,
      timeoutMs: Math.min(500, context.timeoutMs ?? 500),
    });
    const body = await res.json();
    return res.status === 200 && typeof body.profile?.name === 'string' ? body.profile.name : null;
  } catch {
    return null;
  }
}
