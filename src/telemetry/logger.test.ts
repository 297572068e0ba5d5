import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { describe, it } from 'node:test';
import { createLogger, type Logger, type LoggerOptions } from './logger.js';
import { SECRET_CONTAINERS, SECRET_FIELDS } from './redact.js';

const SECRET = 's3cr3t-value';

/** A logger writing into an array, and its lines as text and parsed. */
function capture(options: Partial<LoggerOptions> = {}): { log: Logger; text: () => string; lines: () => Record<string, unknown>[] } {
  const out: string[] = [];
  const log = createLogger({ format: 'json', level: 'trace', destination: { write: (line: string) => void out.push(line) }, ...options });
  return { log, text: () => out.join(''), lines: () => out.map((l) => JSON.parse(l) as Record<string, unknown>) };
}

function at(object: unknown, path: string[]): unknown {
  return path.reduce<unknown>((o, key) => (o as Record<string, unknown> | undefined)?.[key], object);
}

describe('createLogger: redaction', () => {
  it('censors-every-secret-field-at-the-top-and-in-every-container', () => {
    const { log, text, lines } = capture();
    for (const name of SECRET_FIELDS) {
      for (const container of ['', ...SECRET_CONTAINERS]) {
        const path = [...(container === '' ? [] : container.split('.')), name];
        const fields = path.reduceRight<unknown>((inner, key) => ({ [key]: inner }), SECRET) as Record<string, unknown>;
        log.info(fields, 'line');
      }
    }
    assert.ok(!text().includes(SECRET), 'a secret field was written');
    assert.equal(lines().length, SECRET_FIELDS.length * (1 + SECRET_CONTAINERS.length));
    assert.equal(at(lines()[0], ['authorization']), '[redacted]');
  });

  it('censors-header-maps-as-node-gives-them-and-keeps-other-headers', () => {
    const { log, lines } = capture();
    log.info({
      req: { method: 'GET', headers: { authorization: `Bearer ${SECRET}`, cookie: `session=${SECRET}`, host: 'shop.example.com' } },
      res: { statusCode: 200, headers: { 'set-cookie': [`sid=${SECRET}`, `csrf=${SECRET}`], 'content-type': 'text/plain' } },
      headers: { 'x-api-key': SECRET, 'proxy-authorization': `Basic ${SECRET}`, accept: '*/*' },
    });
    const line = lines()[0];
    assert.deepEqual(at(line, ['req', 'headers']), { authorization: '[redacted]', cookie: '[redacted]', host: 'shop.example.com' });
    assert.deepEqual(at(line, ['res', 'headers']), { 'set-cookie': '[redacted]', 'content-type': 'text/plain' });
    assert.deepEqual(at(line, ['headers']), { 'x-api-key': '[redacted]', 'proxy-authorization': '[redacted]', accept: '*/*' });
  });

  it('scrubs-instance-output-lines-and-free-text-fields', () => {
    const { log, text, lines } = capture();
    log.child({ instance: 'web-1.0.0-abcde' }).info({ event: 'instance.output', stream: 'stdout' }, `Authorization: Bearer ${SECRET}`);
    log.warn({ event: 'instance.output', stream: 'stderr' }, `fetching https://bot:${SECRET}@git.example.com/repo?access_token=${SECRET}`);
    log.info({ event: 'instance.started', command: `node app.js --api-key=${SECRET}` }, 'started');
    log.info({ event: 'instance.status', check: `HTTP 500: {"error":"bad","password":"${SECRET}"}` }, 'critical');
    log.info({ event: 'access', path: `/shop/web/login;jsessionid=${SECRET}`, status: 200 }, `GET /shop/web/login;jsessionid=${SECRET} 200 1.0ms`);
    log.error({ reason: `cannot start: token=${SECRET}` }, 'failed');
    assert.ok(!text().includes(SECRET), text());
    const [output, stderr, started, status] = lines();
    assert.equal(output?.msg, 'Authorization: [redacted]');
    assert.equal(output?.instance, 'web-1.0.0-abcde');
    assert.equal(stderr?.msg, 'fetching https://bot:[redacted]@git.example.com/repo?access_token=[redacted]');
    assert.equal(started?.command, 'node app.js --api-key=[redacted]');
    assert.equal(status?.check, 'HTTP 500: {"error":"bad","password":"[redacted]"}');
  });

  it('scrubs-error-messages-and-stacks-and-censors-their-secret-fields', () => {
    const { log, text, lines } = capture();
    const err = Object.assign(new Error(`request to http://u:${SECRET}@api/ failed`, { cause: new Error(`password=${SECRET}`) }), {
      headers: { authorization: SECRET },
      token: SECRET,
    });
    log.error({ err }, 'reload failed');
    log.error(err);
    log.error({ err: `spawn failed: secret=${SECRET}` }, 'cannot start instance');
    log.error({ err: { code: 'BERTH_ERR_X', message: `Bearer ${SECRET} refused` } }, 'the node failed to start');
    assert.ok(!text().includes(SECRET), text());
    const first = lines()[0];
    assert.equal(at(first, ['err', 'token']), '[redacted]');
    assert.equal(at(first, ['err', 'headers', 'authorization']), '[redacted]');
    assert.match(String(at(first, ['err', 'stack'])), /^Error: request to http:\/\/u:\[redacted\]@api\/ failed/);
    assert.equal(lines()[1]?.msg, 'request to http://u:[redacted]@api/ failed');
  });

  it('censors-secret-fields-in-child-bindings', () => {
    const { log, text } = capture();
    log.child({ token: SECRET, registration: 'r-1' }).info('registered');
    assert.ok(!text().includes(SECRET));
    assert.match(text(), /"token":"\[redacted\]"/);
  });

  it('redacts-the-fields-the-manifest-names-structured-and-in-free-text', () => {
    const { log, text, lines } = capture({ redact: ['ssn', 'body.card.number'] });
    log.info({ ssn: SECRET, details: { ssn: SECRET }, body: { card: { number: SECRET, brand: 'visa' } } }, `customer ssn=${SECRET}`);
    assert.ok(!text().includes(SECRET), text());
    assert.equal(at(lines()[0], ['body', 'card', 'brand']), 'visa');
    assert.equal(lines()[0]?.msg, 'customer ssn=[redacted]');
  });

  it('writes-an-ordinary-access-line-unchanged', () => {
    const { log, lines } = capture();
    const fields = { requestId: 'abc', method: 'GET', path: '/shop/cart/items', status: 200, group: 'shop', service: 'cart', durationMs: 1.5 };
    log.child({ event: 'access' }).info(fields, 'GET /shop/cart/items 200 1.5ms');
    const { time: _time, level: _level, ...rest } = lines()[0] ?? {};
    assert.deepEqual(rest, { event: 'access', ...fields, msg: 'GET /shop/cart/items 200 1.5ms' });
  });

  it('keeps-secrets-out-of-the-pretty-format-too', () => {
    const out: string[] = [];
    const destination = new Writable({
      write(chunk: Buffer, _encoding, done) {
        out.push(chunk.toString());
        done();
      },
    });
    const log = createLogger({ format: 'pretty', level: 'info', destination });
    log.info({ headers: { authorization: SECRET }, reason: `token=${SECRET}` }, `Cookie: sid=${SECRET}`);
    assert.ok(out.join('').length > 0);
    assert.ok(!out.join('').includes(SECRET), out.join(''));
  });
});
