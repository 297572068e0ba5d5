// Malformed and malicious requests on raw sockets, table-driven: each gets its
// expected status, the node keeps serving, and no instance ever receives a
// request it should not have (the instance prints every request it gets).
// Besides the parser and path cases: forged, expired and otherwise wrong JWTs
// and API keys, forged identity and X-Forwarded-For headers, methods, body
// and header limits on a group that requires authentication.
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { exportJWK, exportSPKI, generateKeyPair, SignJWT, UnsecuredJWT, type CryptoKey, type JWTHeaderParameters, type JWTPayload } from 'jose';
import { verifyIdentity } from '../../src/security/identity.js';
import { BerthProcess, makeProject } from '../support/node-process.js';

const ISSUER = 'https://id.test/';
const PEM_ISSUER = 'https://pem.test/';
const AUDIENCE = 'berth-test';
const MAX_HEADERS = 30;

// Limits set below Node's defaults (16 KiB, 100 lines), so that the cases show the manifest's values apply.
const MANIFEST = `admin: { listen: "127.0.0.1:0" }
gateway: { listen: "127.0.0.1:0", maxHeaderSize: 4KiB, maxHeaders: ${MAX_HEADERS} }
dataDir: data
auth:
  jwt:
    main: { issuer: "${ISSUER}", audience: ${AUDIENCE}, algorithms: [RS256], jwksFile: jwks.json }
    pem: { issuer: "${PEM_ISSUER}", algorithms: [RS256], publicKey: public.pem }
groups:
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
  secure:
    auth: { jwt: [main, pem], apiKey: true }
    authorize: [{ path: "/**" }]
    services:
      api:
        command: node web.mjs
        env: { LOG_REQUESTS: "1" }
        health: { http: /health, interval: 200ms, timeout: 150ms }
        routes:
          - { path: /upload, methods: [POST], maxBody: 1KiB }
          - { path: /echo, methods: [GET] }
`;

// The issuer's keys: `main` publishes its public key in a JWKS file (kid k1), `pem` as a PEM file.
const keys = await generateKeyPair('RS256');
const stranger = await generateKeyPair('RS256');
const PUBLIC_PEM = await exportSPKI(keys.publicKey);
const JWKS = { keys: [{ ...(await exportJWK(keys.publicKey)), kid: 'k1', alg: 'RS256', use: 'sig' }] };
const NOW = Math.floor(Date.now() / 1000);

const claims = (over: JWTPayload = {}): JWTPayload => ({ iss: ISSUER, aud: AUDIENCE, sub: 'alice', roles: ['reader'], iat: NOW, exp: NOW + 600, ...over });
/** A token of `main` (or of whoever `over.iss` says), signed RS256 with its key unless told otherwise. */
const sign = (over: JWTPayload = {}, header: Partial<JWTHeaderParameters> = {}, key: CryptoKey | Uint8Array = keys.privateKey): Promise<string> =>
  new SignJWT(claims(over)).setProtectedHeader({ alg: 'RS256', kid: 'k1', ...header }).sign(key);
/** Replaces one part (0 header, 1 payload, 2 signature) of a compact token. */
const withPart = (token: string, index: number, part: string): string => token.split('.').map((p, i) => (i === index ? part : p)).join('.');
const b64 = (value: unknown): string => Buffer.from(JSON.stringify(value)).toString('base64url');
/** The same signature with one character in its middle changed (the last one may only carry padding bits). */
const flipped = (token: string): string => {
  const sig = token.split('.')[2]!;
  const at = sig.length >> 1;
  return withPart(token, 2, `${sig.slice(0, at)}${sig[at] === 'A' ? 'B' : 'A'}${sig.slice(at + 1)}`);
};

const VALID = await sign();
const TOKENS = {
  valid: VALID,
  pem: await sign({ iss: PEM_ISSUER, aud: undefined }, { kid: undefined }),
  none: new UnsecuredJWT(claims()).encode(),
  // The classic confusion: the issuer's public key, which anyone has, as an HMAC secret.
  hsWithPem: await new SignJWT(claims({ iss: PEM_ISSUER, aud: undefined })).setProtectedHeader({ alg: 'HS256' }).sign(new TextEncoder().encode(PUBLIC_PEM)),
  hsWithJwks: await new SignJWT(claims()).setProtectedHeader({ alg: 'HS256', kid: 'k1' }).sign(new TextEncoder().encode(PUBLIC_PEM)),
  expired: await sign({ iat: NOW - 7200, exp: NOW - 3600 }),
  notYetValid: await sign({ nbf: NOW + 3600 }),
  wrongAudience: await sign({ aud: 'someone-else' }),
  wrongIssuer: await sign({ iss: 'https://evil.test/' }),
  noExp: await sign({ exp: undefined }),
  issuedInTheFuture: await sign({ iat: NOW + 3600 }),
  tamperedPayload: withPart(VALID, 1, b64(claims({ sub: 'root', roles: ['admin'] }))),
  tamperedSignature: flipped(VALID),
  unknownKid: await sign({}, { kid: 'k9' }),
  strangersKey: await sign({}, {}, stranger.privateKey),
  malformed: 'not.a.jwt',
};

/** The request as the instance got it: web.mjs's /echo. */
interface Echo {
  method: string;
  url: string;
  headers: Record<string, string | string[] | undefined>;
}

interface Case {
  name: string;
  /** The raw request; `Host: HOST` gets the gateway's address. */
  raw: string;
  status: number;
  /** The Berth error code in the JSON body, when the gateway (not Node's parser) answers. */
  code?: string;
  /** What the gateway's message must say: refused for the right reason. */
  message?: RegExp;
  /** Response headers the answer must carry. */
  headers?: Record<string, RegExp>;
  /** What the instance must receive instead, for requests that are normalized and served. */
  reaches?: string;
  /** For requests served by /echo: what the instance must (not) have received. */
  echo?: (seen: Echo) => void;
}

const get = (target: string, headers = ''): string => `GET ${target} HTTP/1.1\r\nHost: HOST\r\n${headers}\r\n`;
const post = (headers: string, body: string): string => `POST /core/web/upload HTTP/1.1\r\nHost: HOST\r\n${headers}\r\n${body}`;
/** A request to the authenticated group's /echo. */
const secure = (headers: string, method = 'GET'): string => `${method} /secure/api/echo HTTP/1.1\r\nHost: HOST\r\n${headers}\r\n`;
const bearer = (token: string, headers = ''): string => secure(`Authorization: Bearer ${token}\r\n${headers}`);
const upload = (headers: string, body: string): string => `POST /secure/api/upload HTTP/1.1\r\nHost: HOST\r\n${headers}\r\n${body}`;
const upgrade = (headers: string): string =>
  `GET /secure/api/ws HTTP/1.1\r\nHost: HOST\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n${headers}\r\n`;
const chunked = (...sizes: number[]): string => `${sizes.map((n) => `${n.toString(16)}\r\n${'a'.repeat(n)}\r\n`).join('')}0\r\n\r\n`;
const headerLines = (n: number): string => Array.from({ length: n }, (_, i) => `X-H${i}: v\r\n`).join('');

const UNAUTHENTICATED = { status: 401, code: 'BERTH_ERR_UNAUTHENTICATED' } as const;
const INVALID_TOKEN = { 'www-authenticate': /^Bearer realm="berth", error="invalid_token"/ };
const FORGED_IDENTITY = 'X-Berth-Auth: jwt\r\nx-berth-subject: root\r\nX-BERTH-ROLES: admin\r\nx-berth-scopes: everything\r\nx-berth-issuer: https://evil.test/\r\nx-berth-identity-time: 9999999999\r\nX-Berth-Signature: v1=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\r\n';

/** The node's identity key (read once it started): what the gateway signs x-berth-signature with. */
let identityKey: Buffer;

/** No x-berth-* header but the deadline reached the instance: a client's copies were dropped and the route adds none. */
function noIdentity(seen: Echo): void {
  assert.deepEqual(Object.keys(seen.headers).filter((h) => h.startsWith('x-berth-') && h !== 'x-berth-timeout-ms'), []);
}

/** The gateway's identity for the token's subject, signed with the node's key, and nothing of the forgery. */
function gatewayIdentity(seen: Echo): void {
  const h = seen.headers;
  assert.equal(h['x-berth-auth'], 'jwt');
  assert.equal(h['x-berth-subject'], 'alice');
  assert.equal(h['x-berth-issuer'], ISSUER);
  assert.equal(h['x-berth-roles'], 'reader');
  assert.equal(h['x-berth-scopes'], undefined);
  const check = verifyIdentity(h, { key: identityKey, method: seen.method, path: seen.url, nowSeconds: Math.floor(Date.now() / 1000) });
  assert.ok(check.ok, `the instance's identity headers do not verify: ${JSON.stringify(check)}`);
}

/** X-Forwarded-For as the instance got it: the TCP peer alone, whatever the client claimed. */
function peerOnly(seen: Echo): void {
  assert.equal(seen.headers['x-forwarded-for'], '127.0.0.1');
}

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
  { name: 'too many headers', raw: get('/core/web/echo', headerLines(101)), status: 431, code: 'BERTH_ERR_TOO_MANY_HEADERS' },
  { name: 'an oversized header', raw: get('/core/web/echo', `X-Big: ${'a'.repeat(20_000)}\r\n`), status: 431 },
  { name: 'an oversized request target', raw: get(`/core/web/${'a'.repeat(20_000)}`), status: 431 },
  // The manifest's header limits (gateway.maxHeaderSize: 4KiB, gateway.maxHeaders: 30, Host included), on both sides of each.
  { name: 'a header under gateway.maxHeaderSize', raw: get('/core/web/echo', `X-Big: ${'a'.repeat(3_000)}\r\n`), status: 200, reaches: '/echo' },
  { name: 'a header over gateway.maxHeaderSize but under Node\'s default', raw: get('/core/web/echo', `X-Big: ${'a'.repeat(6_000)}\r\n`), status: 431 },
  { name: 'exactly gateway.maxHeaders header lines', raw: get('/core/web/echo', headerLines(MAX_HEADERS - 1)), status: 200, reaches: '/echo' },
  { name: 'one header line more than gateway.maxHeaders', raw: get('/core/web/echo', headerLines(MAX_HEADERS)), status: 431, code: 'BERTH_ERR_TOO_MANY_HEADERS' },
  { name: 'more than gateway.maxHeaders on an authenticated route, before the token is looked at', raw: bearer(TOKENS.valid, headerLines(MAX_HEADERS)), status: 431, code: 'BERTH_ERR_TOO_MANY_HEADERS' },
  // JWTs: the positive controls, then every way a token can be wrong (401, and never a step further).
  { name: 'a valid token of the JWKS issuer', raw: bearer(TOKENS.valid), status: 200, reaches: '/echo', echo: gatewayIdentity },
  { name: 'a valid token of the PEM issuer', raw: bearer(TOKENS.pem), status: 200, reaches: '/echo' },
  { name: 'the scheme in lower case', raw: secure(`Authorization: bearer ${TOKENS.valid}\r\n`), status: 200, reaches: '/echo' },
  { name: 'no credentials', raw: secure(''), ...UNAUTHENTICATED, message: /credentials are required/, headers: { 'www-authenticate': /^Bearer realm="berth", ApiKey header="x-api-key"$/ } },
  { name: 'alg none', raw: bearer(TOKENS.none), ...UNAUTHENTICATED, message: /algorithm not allowed/, headers: INVALID_TOKEN },
  { name: 'HS256 signed with the PEM issuer\'s public key as the secret', raw: bearer(TOKENS.hsWithPem), ...UNAUTHENTICATED, message: /algorithm not allowed/, headers: INVALID_TOKEN },
  { name: 'HS256 signed with the JWKS issuer\'s public key as the secret', raw: bearer(TOKENS.hsWithJwks), ...UNAUTHENTICATED, message: /algorithm not allowed/ },
  { name: 'an expired token', raw: bearer(TOKENS.expired), ...UNAUTHENTICATED, message: /expired/, headers: INVALID_TOKEN },
  { name: 'a token not yet valid (nbf)', raw: bearer(TOKENS.notYetValid), ...UNAUTHENTICATED, message: /not yet valid/ },
  { name: 'a token for another audience', raw: bearer(TOKENS.wrongAudience), ...UNAUTHENTICATED, message: /audience/ },
  { name: 'a token of an unknown issuer', raw: bearer(TOKENS.wrongIssuer), ...UNAUTHENTICATED, message: /issuer not accepted/ },
  { name: 'a token without exp', raw: bearer(TOKENS.noExp), ...UNAUTHENTICATED, message: /no exp claim/ },
  { name: 'a token issued in the future', raw: bearer(TOKENS.issuedInTheFuture), ...UNAUTHENTICATED, message: /future/ },
  { name: 'a tampered payload', raw: bearer(TOKENS.tamperedPayload), ...UNAUTHENTICATED, message: /signature invalid/ },
  { name: 'a tampered signature', raw: bearer(TOKENS.tamperedSignature), ...UNAUTHENTICATED, message: /signature invalid/ },
  { name: 'an unknown kid', raw: bearer(TOKENS.unknownKid), ...UNAUTHENTICATED, message: /unknown key id/ },
  { name: 'a known kid on a stranger\'s signature', raw: bearer(TOKENS.strangersKey), ...UNAUTHENTICATED, message: /signature invalid/ },
  { name: 'a malformed token', raw: bearer(TOKENS.malformed), ...UNAUTHENTICATED, message: /malformed/ },
  { name: 'Bearer with no token', raw: secure('Authorization: Bearer\r\n'), ...UNAUTHENTICATED, message: /not of a kind/ },
  { name: 'Bearer with two tokens', raw: secure(`Authorization: Bearer ${TOKENS.valid} ${TOKENS.valid}\r\n`), ...UNAUTHENTICATED, message: /not of a kind/ },
  { name: 'two Authorization headers, a valid one first', raw: secure(`Authorization: Bearer ${TOKENS.valid}\r\nAuthorization: Bearer ${TOKENS.tamperedPayload}\r\n`), status: 400, code: 'BERTH_ERR_BAD_FRAMING', message: /more than one Authorization/ },
  { name: 'two Authorization headers, a valid one last', raw: secure(`Authorization: Bearer ${TOKENS.malformed}\r\nAuthorization: Bearer ${TOKENS.valid}\r\n`), status: 400, code: 'BERTH_ERR_BAD_FRAMING' },
  { name: 'two Authorization headers on a route without authentication', raw: get('/core/web/echo', 'Authorization: Basic YWxpY2U6c2VjcmV0\r\nAuthorization: Basic cm9vdDpyb290\r\n'), status: 400, code: 'BERTH_ERR_BAD_FRAMING' },
  { name: 'Basic credentials', raw: secure('Authorization: Basic YWxpY2U6c2VjcmV0\r\n'), ...UNAUTHENTICATED },
  { name: 'a wrong API key', raw: secure('X-Api-Key: bk_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\r\n'), ...UNAUTHENTICATED, message: /API key is not valid/ },
  { name: 'a wrong API key next to a valid token', raw: bearer(TOKENS.valid, 'X-Api-Key: bk_nope\r\n'), ...UNAUTHENTICATED, message: /API key is not valid/ },
  // Identity headers are the gateway's to set: a client's are dropped, on anonymous and on authenticated routes.
  { name: 'forged identity headers on a route without authentication', raw: get('/core/web/echo', FORGED_IDENTITY), status: 200, reaches: '/echo', echo: noIdentity },
  { name: 'a forged x-berth-subject alone', raw: get('/core/web/echo', 'x-berth-subject: root\r\n'), status: 200, reaches: '/echo', echo: noIdentity },
  { name: 'forged identity headers next to a valid token', raw: bearer(TOKENS.valid, FORGED_IDENTITY), status: 200, reaches: '/echo', echo: gatewayIdentity },
  { name: 'forged identity headers without a token', raw: secure(FORGED_IDENTITY), ...UNAUTHENTICATED },
  // X-Forwarded-* from a peer that is no trusted proxy: replaced, never passed on.
  { name: 'a spoofed X-Forwarded-For', raw: get('/core/web/echo', 'X-Forwarded-For: 203.0.113.7\r\n'), status: 200, reaches: '/echo', echo: peerOnly },
  { name: 'a spoofed X-Forwarded-For list, twice', raw: get('/core/web/echo', 'X-Forwarded-For: 203.0.113.7, 10.0.0.1\r\nx-forwarded-for: 127.0.0.1\r\n'), status: 200, reaches: '/echo', echo: peerOnly },
  { name: 'a spoofed X-Forwarded-For on an authenticated route', raw: bearer(TOKENS.valid, 'X-Forwarded-For: 203.0.113.7\r\n'), status: 200, reaches: '/echo', echo: peerOnly },
  {
    name: 'spoofed X-Forwarded-Proto and -Host',
    raw: get('/core/web/echo', 'X-Forwarded-Proto: https\r\nX-Forwarded-Host: evil.example\r\n'),
    status: 200,
    reaches: '/echo',
    echo: (seen) => {
      assert.equal(seen.headers['x-forwarded-proto'], 'http');
      assert.notEqual(seen.headers['x-forwarded-host'], 'evil.example');
    },
  },
  // Methods: 405 before the credentials are looked at.
  { name: 'DELETE where only GET is allowed', raw: secure('', 'DELETE'), status: 405, code: 'BERTH_ERR_METHOD_NOT_ALLOWED', headers: { allow: /^GET$/ } },
  { name: 'POST with a valid token where only GET is allowed', raw: `POST /secure/api/echo HTTP/1.1\r\nHost: HOST\r\nAuthorization: Bearer ${TOKENS.valid}\r\nContent-Length: 2\r\n\r\nab`, status: 405, code: 'BERTH_ERR_METHOD_NOT_ALLOWED' },
  { name: 'GET where only POST is allowed', raw: 'GET /secure/api/upload HTTP/1.1\r\nHost: HOST\r\n\r\n', status: 405, code: 'BERTH_ERR_METHOD_NOT_ALLOWED', headers: { allow: /^POST$/ } },
  { name: 'a made-up method', raw: 'PURGE /secure/api/upload HTTP/1.1\r\nHost: HOST\r\n\r\n', status: 405, code: 'BERTH_ERR_METHOD_NOT_ALLOWED' },
  // Bodies (maxBody: 1KiB): by Content-Length before the credentials are looked at, chunked as it streams.
  { name: 'a body at maxBody', raw: upload(`Authorization: Bearer ${TOKENS.valid}\r\nContent-Length: 1024\r\n`, 'a'.repeat(1024)), status: 200, reaches: '/upload' },
  { name: 'a Content-Length over maxBody', raw: upload('Content-Length: 1025\r\n', 'a'.repeat(1025)), status: 413, code: 'BERTH_ERR_BODY_TOO_LARGE' },
  { name: 'a Content-Length over maxBody with a valid token', raw: upload(`Authorization: Bearer ${TOKENS.valid}\r\nContent-Length: 4096\r\n`, 'a'.repeat(4096)), status: 413, code: 'BERTH_ERR_BODY_TOO_LARGE' },
  { name: 'a chunked body under maxBody', raw: upload(`Authorization: Bearer ${TOKENS.valid}\r\nTransfer-Encoding: chunked\r\n`, chunked(500, 500)), status: 200, reaches: '/upload' },
  { name: 'a chunked body over maxBody', raw: upload(`Authorization: Bearer ${TOKENS.valid}\r\nTransfer-Encoding: chunked\r\n`, chunked(1000, 1000)), status: 413, code: 'BERTH_ERR_BODY_TOO_LARGE' },
  { name: 'a chunked body over maxBody without a token', raw: upload('Transfer-Encoding: chunked\r\n', chunked(2000)), ...UNAUTHENTICATED },
  // WebSocket upgrades: the same hygiene and edge as requests (web.mjs does not print upgrades; a 101 is the instance's answer).
  { name: 'an upgrade with a valid token', raw: upgrade(`Authorization: Bearer ${TOKENS.valid}\r\n`), status: 101 },
  { name: 'an upgrade without a token', raw: upgrade(''), ...UNAUTHENTICATED },
  { name: 'an upgrade with a tampered token', raw: upgrade(`Authorization: Bearer ${TOKENS.tamperedSignature}\r\n`), ...UNAUTHENTICATED, message: /signature invalid/ },
  { name: 'an upgrade with two Authorization headers', raw: upgrade(`Authorization: Bearer ${TOKENS.valid}\r\nAuthorization: Bearer ${TOKENS.tamperedPayload}\r\n`), status: 400, code: 'BERTH_ERR_BAD_FRAMING' },
  { name: 'an upgrade with two Host headers', raw: upgrade(`Authorization: Bearer ${TOKENS.valid}\r\nHost: evil.example\r\n`), status: 400, code: 'BERTH_ERR_BAD_FRAMING' },
  { name: 'an upgrade with more than gateway.maxHeaders', raw: upgrade(`Authorization: Bearer ${TOKENS.valid}\r\n${headerLines(MAX_HEADERS)}`), status: 431, code: 'BERTH_ERR_TOO_MANY_HEADERS' },
];

/** Sends `raw` on its own connection; resolves with the status, head and body of the first response, then closes. */
function send(gateway: URL, raw: string): Promise<{ status: number; head: string; body: string }> {
  return new Promise((resolve, reject) => {
    // Not end(): a half-closed client may see its connection dropped before a proxied answer comes back.
    const socket = connect(Number(gateway.port), gateway.hostname, () => socket.write(Buffer.from(raw.replaceAll('Host: HOST', `Host: ${gateway.host}`), 'latin1')));
    let data = '';
    let settled = false;
    const done = (): void => {
      if (settled) return;
      settled = true;
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(data)?.[1] ?? 0);
      const head = data.indexOf('\r\n\r\n');
      const length = /\r\ncontent-length: (\d+)/i.exec(data.slice(0, head));
      // The first response only: after a refused, badly framed request the parser may answer the rest as another.
      resolve({ status, head: data.slice(0, head), body: data.slice(head + 4, length ? head + 4 + Number(length[1]) : undefined) });
      socket.destroy();
    };
    socket.setEncoding('latin1');
    socket.on('data', (d: string) => {
      data += d;
      const head = data.indexOf('\r\n\r\n');
      if (head === -1) return;
      // An upgraded connection has no body to wait for: it is the instance's now.
      if (data.startsWith('HTTP/1.1 101 ')) return done();
      const length = /\r\ncontent-length: (\d+)/i.exec(data.slice(0, head));
      if (length && data.length - head - 4 >= Number(length[1])) done();
      else if (!length && /\r\ntransfer-encoding: chunked/i.test(data.slice(0, head)) && data.endsWith('0\r\n\r\n')) done();
    });
    // A request refused before its body was read ends with the gateway closing on unread bytes: a reset after the answer.
    socket.on('error', (err) => (data === '' ? reject(err) : done()));
    socket.on('close', done);
  });
}

/** `received METHOD URL`, as the instance prints a request. */
const receivedLine = (c: Case): string => `received ${c.raw.slice(0, c.raw.indexOf(' '))} ${c.reaches}`;

describe('bad input on raw sockets', () => {
  let project: Awaited<ReturnType<typeof makeProject>>;
  let node: BerthProcess;
  let gateway: URL;

  before(async () => {
    project = await makeProject(MANIFEST);
    await writeFile(join(project.dir, 'jwks.json'), JSON.stringify(JWKS));
    await writeFile(join(project.dir, 'public.pem'), PUBLIC_PEM);
    node = await BerthProcess.start(project.file);
    gateway = new URL(String((await node.waitForLog((l) => l.event === 'node.ready')).gateway));
    identityKey = Buffer.from((await readFile(join(node.dataDir, 'identity-key'), 'utf8')).trim(), 'base64url');
    await node.waitForInstances((xs) => xs.filter((r) => r.status === 'passing').length === 3);
  });

  after(async () => {
    await node?.stop();
    await project?.cleanup();
  });

  for (const c of CASES) {
    it(`${c.name}: ${c.status}`, async () => {
      const { status, head, body } = await send(gateway, c.raw);
      assert.equal(status, c.status, body.slice(0, 200));
      if (c.code) assert.equal((JSON.parse(body) as { code: string }).code, c.code);
      if (c.message) assert.match((JSON.parse(body) as { message: string }).message, c.message);
      for (const [name, value] of Object.entries(c.headers ?? {})) {
        assert.match(new RegExp(`\\r\\n${name}: ([^\\r]*)`, 'i').exec(head)?.[1] ?? '(none)', value, `${name} in\n${head}`);
      }
      if (c.echo) c.echo(JSON.parse(body) as Echo);
      if (c.reaches) await node.waitForLog((l) => l.event === 'instance.output' && l.msg === receivedLine(c), 5_000);
    });
  }

  it('keeps serving, and no instance received a request it should not have', async (t) => {
    assert.ok(CASES.length >= 60, `${CASES.length} cases`);
    // One last request to each instance: its output is one ordered pipe, so once this line is in, so is everything it printed before.
    const last = [get('/core/web/echo?last', 'Connection: close\r\n'), get('/other/side/echo?last'), bearer(TOKENS.valid).replace('/echo', '/echo?last')];
    for (const raw of last) assert.equal((await send(gateway, raw)).status, 200);
    await Promise.all(['core', 'other', 'secure'].map((group) => node.waitForLog((l) => l.event === 'instance.output' && l.group === group && l.msg === 'received GET /echo?last')));

    const received = node.logs.filter((l) => l.event === 'instance.output' && typeof l.msg === 'string' && l.msg.startsWith('received ')).map((l) => String(l.msg));
    const bad = received.filter((line) => /\.\.|%2f|%5c|%00|%0d|\\|\/\/|\/\.\//i.test(line.slice(line.indexOf('/'))) || line.includes('passwd'));
    assert.deepEqual(bad, [], `the instances received:\n${received.join('\n')}`);
    // Exactly what the table says reaches an instance, as many times as it says: a refused request that got through would be one more.
    const expected = [...CASES.filter((c) => c.reaches !== undefined).map(receivedLine), ...last.map(() => 'received GET /echo?last')].sort();
    const served = received.filter((line) => line !== 'received GET /health').sort();
    assert.deepEqual(served, expected, `the instances received:\n${received.join('\n')}`);
    t.diagnostic(`${CASES.length} cases; the instances received ${served.length} requests besides health checks, each one a case sent them`);
  });
});
