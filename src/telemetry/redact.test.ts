import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { createScrubber, redactPaths, SECRET_CONTAINERS, SECRET_FIELDS } from './redact.js';

describe('createScrubber', () => {
  const scrub = createScrubber();

  const masked: [string, string][] = [
    ['Authorization: Bearer abc.def-ghi', 'Authorization: [redacted]'],
    ['authorization: Basic dXNlcjpwYXNz', 'authorization: [redacted]'],
    ['proxy-authorization: Digest abc', 'proxy-authorization: [redacted]'],
    ['sent Bearer eyJhbGciOi.eyJzdWIi.c2lnbmF0dXJl to the API', 'sent Bearer [redacted] to the API'],
    ['basic dXNlcjpwYXNz==', 'basic [redacted]'],
    ['Cookie: session=abc; theme=dark; sid=xyz', 'Cookie: [redacted]'],
    ['Set-Cookie: sid=abc; Path=/; HttpOnly', 'Set-Cookie: [redacted]'],
    ['X-Api-Key: k-123 accepted', 'X-Api-Key: [redacted] accepted'],
    ['received GET /orders?token=t0k3n&page=2', 'received GET /orders?token=[redacted]&page=2'],
    ['GET /login?user=bob&password=hunter2', 'GET /login?user=bob&password=[redacted]'],
    ['api_key=k1 apiKey=k2 API-KEY=k3', 'api_key=[redacted] apiKey=[redacted] API-KEY=[redacted]'],
    ['GITHUB_TOKEN=ghp_123 DB_PASSWORD=pw LOG=debug', 'GITHUB_TOKEN=[redacted] DB_PASSWORD=[redacted] LOG=debug'],
    ['node app.js --client-secret=s3 --port 80', 'node app.js --client-secret=[redacted] --port 80'],
    ['{"access_token":"abc\\"def","expires":3600}', '{"access_token":"[redacted]","expires":3600}'],
    ["{ authorization: 'Bearer x', host: 'h' }", "{ authorization: '[redacted]', host: 'h' }"],
    ['{"password": "unterminated', '{"password": "[redacted]"'],
    ['password: hunter2', 'password: [redacted]'],
    ['connecting to postgres://app:s3cr3t@db:5432/shop', 'connecting to postgres://app:[redacted]@db:5432/shop'],
    ['https://user:pa:ss@example.com/x', 'https://user:[redacted]@example.com/x'],
    ['/app;jsessionid=ABC123', '/app;jsessionid=[redacted]'],
  ];
  for (const [input, output] of masked) {
    it(`masks ${JSON.stringify(input)}`, () => {
      assert.equal(scrub(input), output);
    });
  }

  it('leaves-lines-without-secrets-as-they-are', () => {
    for (const line of [
      'GET /shop/cart/items 200 1.2ms',
      'listening on 3000',
      '{"level":"info","msg":"order 1234 paid","total":44.5}',
      'https://example.com/path?page=2&sort=asc',
      'the token bucket refilled',
      'basic',
      'user@example.com wrote: hello',
    ]) {
      assert.equal(scrub(line), line);
    }
  });

  it('is-idempotent-so-a-line-scrubbed-twice-reads-the-same', () => {
    for (const [input] of masked) assert.equal(scrub(scrub(input)), scrub(input));
  });

  it('masks-manifest-named-fields-as-whole-keys-and-a-paths-last-name', () => {
    const custom = createScrubber(['pin', 'body.card.number', 'headers["x-session"]']);
    assert.equal(custom('pin=1234 spin=3'), 'pin=[redacted] spin=3');
    assert.equal(custom('{"number":"4111 1111","count":2}'), '{"number":"[redacted]","count":2}');
    assert.equal(custom('X-Session: s-1'), 'X-Session: [redacted]');
    // The built-in words still apply.
    assert.equal(custom('token=t'), 'token=[redacted]');
  });

  it('stays-linear-on-hostile-lines', () => {
    for (const line of ['token'.repeat(3200), '//a:'.repeat(4000), 'bearer '.repeat(2300), 'x'.repeat(16_000), `"token":"${'a'.repeat(16_000)}`]) {
      const started = performance.now();
      scrub(line);
      assert.ok(performance.now() - started < 100, `${line.slice(0, 12)}… took ${performance.now() - started}ms`);
    }
  });
});

describe('redactPaths', () => {
  it('looks-for-every-secret-field-at-the-top-and-in-every-container', () => {
    const paths = new Set(redactPaths());
    assert.ok(paths.has('authorization'));
    assert.ok(paths.has('["set-cookie"]'));
    assert.ok(paths.has('req.headers.authorization'));
    assert.ok(paths.has('headers["x-api-key"]'));
    assert.ok(paths.has('err.token'));
    assert.equal(paths.size, SECRET_FIELDS.length * (1 + SECRET_CONTAINERS.length));
  });

  it('expands-bare-manifest-names-like-its-own-and-keeps-paths-as-given', () => {
    const paths = redactPaths(['ssn', 'x-session', 'body.card.number', 'headers["x-custom"]']);
    assert.ok(paths.includes('ssn') && paths.includes('details.ssn') && paths.includes('req.headers.ssn'));
    assert.ok(paths.includes('["x-session"]') && paths.includes('headers["x-session"]'));
    assert.ok(paths.includes('body.card.number') && paths.includes('headers["x-custom"]'));
    assert.ok(!paths.includes('err.body.card.number'));
  });
});

describe('Berth log call sites', () => {
  it('name-no-secret-looking-field-that-the-redact-paths-miss', async () => {
    // Every `{ key: … }` given to a log call or a child logger in src/: a key that
    // the scrubber would treat as secret must be censored by the redact paths too.
    const src = fileURLToPath(new URL('../../../src/', import.meta.url));
    const files = (await readdir(src, { recursive: true })).filter((f) => f.endsWith('.ts') && !f.endsWith('.test.ts'));
    const scrub = createScrubber();
    const redacted = new Set(SECRET_FIELDS);
    let sites = 0;
    const misses: string[] = [];
    for (const file of files) {
      const text = await readFile(join(src, file), 'utf8');
      for (const call of text.matchAll(/\.(?:trace|debug|info|warn|error|fatal|child)\(\s*\{/g)) {
        sites++;
        for (const key of topLevelKeys(text, (call.index ?? 0) + call[0].length - 1)) {
          if (scrub(`${key}=v`) !== `${key}=v` && !redacted.has(key)) misses.push(`${file}: ${key}`);
        }
      }
    }
    assert.ok(sites >= 40, `found only ${sites} log call sites: is the scan still right?`);
    assert.deepEqual(misses, []);
  });
});

/** The keys of the object literal whose `{` is at `open` (shorthand included, spreads not). */
function topLevelKeys(text: string, open: number): string[] {
  const keys: string[] = [];
  let depth = 0;
  let expectKey = true;
  for (let i = open; i < text.length; i++) {
    const c = text[i] as string;
    if (c === '{' || c === '(' || c === '[') {
      depth++;
      if (depth === 1) expectKey = true;
    } else if (c === '}' || c === ')' || c === ']') {
      depth--;
      if (depth === 0) break;
    } else if (c === '`' || c === "'" || c === '"') {
      const end = text.indexOf(c, i + 1);
      i = end === -1 ? text.length : end;
    } else if (depth === 1 && c === ',') expectKey = true;
    else if (depth === 1 && expectKey && /[A-Za-z_$]/.test(c)) {
      const key = /^[A-Za-z_$][\w$]*/.exec(text.slice(i))?.[0] ?? '';
      keys.push(key);
      i += key.length - 1;
      expectKey = false;
    } else if (depth === 1 && expectKey && c === '.') expectKey = false;
  }
  return keys;
}
