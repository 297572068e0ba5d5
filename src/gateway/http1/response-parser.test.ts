import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MAX_HEAD_BYTES, ResponseParseError, ResponseParser, type ResponseSink } from './response-parser.js';

/** Everything a parser told its sink, in order, and what it says of the connection after. */
interface Parsed {
  status: number | null;
  headers: string[] | null;
  /** Every onData chunk joined (latin1, so any byte shows). */
  body: string;
  /** The calls in order, consecutive data chunks folded into one 'data'. */
  calls: string[];
  keepAlive: boolean;
  keepAliveHintMs: number | null;
  busy: boolean;
}

class Recorder implements ResponseSink {
  status: number | null = null;
  headers: string[] | null = null;
  chunks: Buffer[] = [];
  calls: string[] = [];

  onHead(status: number, headers: string[]): void {
    this.calls.push('head');
    this.status = status;
    this.headers = headers;
  }

  onData(chunk: Buffer): void {
    assert.ok(chunk.length > 0, 'onData with an empty chunk');
    // Copied: a parser may hand on a view of a buffer the caller reuses.
    this.chunks.push(Buffer.from(chunk));
    if (this.calls.at(-1) !== 'data') this.calls.push('data');
  }

  onEnd(): void {
    this.calls.push('end');
  }
}

const bytes = (s: string): Buffer => Buffer.from(s, 'latin1');

function result(parser: ResponseParser, rec: Recorder): Parsed {
  return {
    status: rec.status,
    headers: rec.headers,
    body: Buffer.concat(rec.chunks).toString('latin1'),
    calls: rec.calls,
    keepAlive: parser.keepAlive,
    keepAliveHintMs: parser.keepAliveHintMs,
    busy: parser.busy,
  };
}

interface FeedOptions {
  method?: string;
  /** Call eof() after the last part (the instance closed the connection). */
  eof?: boolean;
}

/** Feeds `parts` to a new parser expecting the response to `method` (GET by default). */
function parse(parts: readonly Buffer[], options: FeedOptions = {}): Parsed {
  const rec = new Recorder();
  const parser = new ResponseParser(rec);
  parser.expect(options.method ?? 'GET');
  for (const part of parts) parser.feed(part);
  if (options.eof) parser.eof();
  return result(parser, rec);
}

/** The ways to cut `raw` tested everywhere: at each byte boundary in two, and byte by byte. */
function* splits(raw: Buffer): Generator<{ how: string; parts: Buffer[] }> {
  for (let i = 1; i < raw.length; i++) yield { how: `split at ${i}`, parts: [raw.subarray(0, i), raw.subarray(i)] };
  yield { how: 'byte by byte', parts: [...raw].map((b) => Buffer.from([b])) };
}

/** Parses `raw` whole, then cut in every way: all must agree with `expected`. */
function assertParses(raw: string | Buffer, expected: Partial<Parsed>, options: FeedOptions = {}): Parsed {
  const buf = typeof raw === 'string' ? bytes(raw) : raw;
  const whole = parse([buf], options);
  const picked = Object.fromEntries(Object.keys(expected).map((k) => [k, whole[k as keyof Parsed]]));
  assert.deepEqual(picked, expected);
  for (const { how, parts } of splits(buf)) assert.deepEqual(parse(parts, options), whole, how);
  return whole;
}

/** Parsing `raw` throws ResponseParseError, whole and cut in every way. */
function assertFails(raw: string | Buffer, message: RegExp, options: FeedOptions = {}): void {
  const buf = typeof raw === 'string' ? bytes(raw) : raw;
  const check = (err: unknown): boolean => {
    assert.ok(err instanceof ResponseParseError, `not a ResponseParseError: ${String(err)}`);
    assert.equal(err.code, 'BERTH_UPSTREAM_PROTOCOL');
    assert.equal(err.name, 'ResponseParseError');
    assert.match(err.message, message);
    return true;
  };
  assert.throws(() => parse([buf], options), check);
  for (const { how, parts } of splits(buf)) assert.throws(() => parse(parts, options), check, how);
}

const OK_HEAD = 'HTTP/1.1 200 OK\r\n';

describe('ResponseParser', () => {
  describe('framing', () => {
    it('reads-a-body-delimited-by-content-length', () => {
      assertParses(`${OK_HEAD}Content-Type: text/plain\r\nContent-Length: 11\r\n\r\nhello world`, {
        status: 200,
        headers: ['content-type', 'text/plain', 'content-length', '11'],
        body: 'hello world',
        calls: ['head', 'data', 'end'],
        keepAlive: true,
        keepAliveHintMs: null,
        busy: false,
      });
    });

    it('ends-a-content-length-zero-response-at-its-head', () => {
      assertParses(`HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n`, { status: 201, body: '', calls: ['head', 'end'], keepAlive: true, busy: false });
    });

    it('takes-body-bytes-as-they-are-even-when-they-look-like-a-head', () => {
      const body = 'HTTP/1.1 200 OK\r\n\r\n\0\r\r\n\n\xff';
      assertParses(`${OK_HEAD}Content-Length: ${body.length}\r\n\r\n${body}`, { body, calls: ['head', 'data', 'end'] });
    });

    it('reads-a-chunked-body-with-extensions-and-drops-its-trailers', () => {
      const raw = `${OK_HEAD}Transfer-Encoding: chunked\r\nTrailer: X-Sum\r\nX-A: 1\r\n\r\n` +
        '5;name=value\r\nhello\r\n' +
        '6 ; a=1;b="q"\r\n world\r\n' +
        'a\r\n\r\n01234567\r\n' +
        'B\r\n(11 bytes!)\r\n' +
        '0;last\r\nX-Sum: abc\r\nX-Other: d\r\n\r\n';
      assertParses(raw, {
        status: 200,
        headers: ['x-a', '1'],
        body: 'hello world\r\n01234567(11 bytes!)',
        calls: ['head', 'data', 'end'],
        keepAlive: true,
        busy: false,
      });
    });

    it('reads-a-chunked-body-without-trailers-and-an-empty-one', () => {
      assertParses(`${OK_HEAD}Transfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n`, { body: 'ok', calls: ['head', 'data', 'end'], keepAlive: true });
      assertParses(`${OK_HEAD}transfer-encoding:  Chunked \r\n\r\n0\r\n\r\n`, { body: '', calls: ['head', 'end'], headers: [] });
    });

    it('gives-the-same-result-for-a-chunked-body-cut-in-three-anywhere', () => {
      const raw = bytes(`${OK_HEAD}Transfer-Encoding: chunked\r\n\r\n3;x\r\nabc\r\n1\r\nd\r\n0\r\nT: v\r\n\r\n`);
      const whole = parse([raw]);
      assert.equal(whole.body, 'abcd');
      for (let i = 1; i < raw.length; i++)
        for (let j = i + 1; j < raw.length; j++) assert.deepEqual(parse([raw.subarray(0, i), raw.subarray(i, j), raw.subarray(j)]), whole, `cut at ${i} and ${j}`);
    });

    it('has-no-body-for-a-head-request-even-with-content-length', () => {
      assertParses(`${OK_HEAD}Content-Length: 1234\r\n\r\n`, { status: 200, headers: ['content-length', '1234'], body: '', calls: ['head', 'end'], keepAlive: true, busy: false }, { method: 'HEAD' });
      assertParses(`${OK_HEAD}Transfer-Encoding: chunked\r\n\r\n`, { headers: [], body: '', calls: ['head', 'end'], busy: false }, { method: 'HEAD' });
      // Neither length nor chunked: still no body (not one delimited by the close).
      assertParses(`${OK_HEAD}X: y\r\n\r\n`, { body: '', calls: ['head', 'end'], keepAlive: true }, { method: 'HEAD' });
    });

    it('has-no-body-for-204-and-304-even-with-content-length', () => {
      assertParses(`HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n`, { status: 204, headers: ['content-length', '10'], body: '', calls: ['head', 'end'], keepAlive: true, busy: false });
      assertParses(`HTTP/1.1 304 Not Modified\r\nETag: "x"\r\nContent-Length: 99\r\n\r\n`, { status: 304, headers: ['etag', '"x"', 'content-length', '99'], body: '', calls: ['head', 'end'] });
      assertParses(`HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n`, { status: 304, headers: [], body: '', calls: ['head', 'end'] });
    });

    it('skips-100-and-103-responses-then-reads-the-final-one', () => {
      const raw = 'HTTP/1.1 100 Continue\r\n\r\n' +
        'HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n' +
        'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok';
      assertParses(raw, { status: 200, headers: ['content-length', '2'], body: 'ok', calls: ['head', 'data', 'end'], keepAlive: true, busy: false });
    });

    it('stays-busy-after-a-1xx-until-the-final-response', () => {
      const rec = new Recorder();
      const parser = new ResponseParser(rec);
      parser.expect('GET');
      parser.feed(bytes('HTTP/1.1 100 Continue\r\n\r\n'));
      assert.deepEqual(rec.calls, []);
      assert.equal(parser.busy, true);
      parser.feed(bytes('HTTP/1.1 204 No Content\r\n\r\n'));
      assert.deepEqual(rec.calls, ['head', 'end']);
      assert.equal(rec.status, 204);
      assert.equal(parser.busy, false);
    });

    it('fails-a-101-switching-protocols', () => {
      assertFails('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n', /switched protocols/);
    });

    it('reads-a-body-delimited-by-the-close-until-eof', () => {
      const whole = assertParses(`${OK_HEAD}Content-Type: text/plain\r\n\r\nall of this\r\n\r\nand this`, {
        status: 200,
        headers: ['content-type', 'text/plain'],
        body: 'all of this\r\n\r\nand this',
        calls: ['head', 'data', 'end'],
        keepAlive: false,
        busy: false,
      }, { eof: true });
      assert.equal(whole.keepAlive, false);
      // Before the close the response is still going, and the connection is already known not to be reusable.
      const rec = new Recorder();
      const parser = new ResponseParser(rec);
      parser.expect('GET');
      parser.feed(bytes(`${OK_HEAD}\r\nsome`));
      assert.deepEqual(rec.calls, ['head', 'data']);
      assert.equal(parser.busy, true);
      assert.equal(parser.keepAlive, false);
      parser.eof();
      assert.deepEqual(rec.calls, ['head', 'data', 'end']);
      assert.equal(parser.busy, false);
    });

    it('ends-an-empty-close-delimited-body-at-eof', () => {
      assertParses(`HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n`, { status: 200, body: '', calls: ['head', 'end'], keepAlive: false }, { eof: true });
    });

    it('reads-one-response-after-another-on-the-same-parser', () => {
      const rec = new Recorder();
      const parser = new ResponseParser(rec);
      assert.equal(parser.busy, false);
      parser.expect('GET');
      assert.equal(parser.busy, true);
      assert.equal(parser.untouched, true);
      parser.feed(bytes(`${OK_HEAD}Content-Length: 3\r\nKeep-Alive: timeout=7\r\n\r\none`));
      assert.equal(parser.busy, false);
      assert.equal(parser.keepAliveHintMs, 7_000);
      parser.expect('HEAD');
      assert.equal(parser.keepAlive, false, 'expect() forgets the previous response');
      parser.feed(bytes(`${OK_HEAD}Content-Length: 3\r\n\r\n`));
      parser.expect('POST');
      parser.feed(bytes(`HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\ntwo\r\n0\r\n\r\n`));
      assert.deepEqual(rec.calls, ['head', 'data', 'end', 'head', 'end', 'head', 'data', 'end']);
      assert.equal(Buffer.concat(rec.chunks).toString(), 'onetwo');
      assert.equal(rec.status, 201);
      assert.equal(parser.keepAliveHintMs, null, 'the hint is the latest response\'s');
    });

    it('reports-untouched-only-until-the-first-byte', () => {
      const parser = new ResponseParser(new Recorder());
      parser.expect('GET');
      assert.equal(parser.untouched, true);
      parser.feed(bytes('H'));
      assert.equal(parser.untouched, false);
      assert.equal(parser.busy, true);
    });
  });

  describe('connection and fields', () => {
    it('keeps-an-http-1-0-connection-alive-only-with-connection-keep-alive', () => {
      assertParses('HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok', { keepAlive: false, body: 'ok', calls: ['head', 'data', 'end'] });
      assertParses('HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\nok', { keepAlive: true, headers: ['content-length', '2'], body: 'ok' });
      assertParses('HTTP/1.0 200 OK\r\nConnection: x-foo, keep-alive\r\nContent-Length: 0\r\n\r\n', { keepAlive: true });
    });

    it('keeps-an-http-1-1-connection-alive-unless-connection-close', () => {
      assertParses(`${OK_HEAD}Content-Length: 0\r\n\r\n`, { keepAlive: true });
      assertParses(`${OK_HEAD}Connection: close\r\nContent-Length: 2\r\n\r\nok`, { keepAlive: false, headers: ['content-length', '2'], body: 'ok' });
      assertParses(`${OK_HEAD}Connection: keep-alive, CLOSE\r\nContent-Length: 0\r\n\r\n`, { keepAlive: false });
      assertParses(`${OK_HEAD}Connection: keep-alive\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`, { keepAlive: false });
    });

    it('drops-the-fields-the-connection-field-names', () => {
      assertParses(`${OK_HEAD}Connection: X-Secret ,  x-other\r\nX-Secret: s\r\nX-Keep: k\r\nX-Other: o\r\nx-secret: again\r\nContent-Length: 0\r\n\r\n`, {
        headers: ['x-keep', 'k', 'content-length', '0'],
        keepAlive: true,
      });
    });

    it('drops-hop-by-hop-fields-and-lower-cases-the-rest', () => {
      const raw = `${OK_HEAD}Connection: keep-alive\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\nTrailer: X-T\r\n` +
        `Upgrade: h2c\r\nProxy-Authenticate: Basic\r\nTransfer-Encoding: chunked\r\nX-Request-ID: Abc\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nX-Empty:\r\nX-Spaces: \t padded \t \r\n\r\n0\r\n\r\n`;
      assertParses(raw, { headers: ['x-request-id', 'Abc', 'set-cookie', 'a=1', 'set-cookie', 'b=2', 'x-empty', '', 'x-spaces', 'padded'], keepAlive: true, keepAliveHintMs: 5_000 });
    });

    it('keeps-obs-text-in-field-values', () => {
      assertParses(`${OK_HEAD}X-Name: caf\xe9\r\nContent-Length: 0\r\n\r\n`, { headers: ['x-name', 'caf\xe9', 'content-length', '0'] });
    });

    it('forwards-a-repeated-identical-content-length-once', () => {
      assertParses(`${OK_HEAD}Content-Length: 3\r\nX: y\r\ncontent-length: 3\r\nCONTENT-LENGTH:003\r\n\r\nabc`, { headers: ['content-length', '3', 'x', 'y'], body: 'abc', calls: ['head', 'data', 'end'] });
    });

    it('reads-the-keep-alive-timeout-hint', () => {
      assertParses(`${OK_HEAD}Keep-Alive: timeout=5\r\nContent-Length: 0\r\n\r\n`, { keepAliveHintMs: 5_000, headers: ['content-length', '0'] });
      assertParses(`${OK_HEAD}Keep-Alive: max=100, Timeout = 30\r\nContent-Length: 0\r\n\r\n`, { keepAliveHintMs: 30_000 });
      assertParses(`${OK_HEAD}Keep-Alive: max=100\r\nContent-Length: 0\r\n\r\n`, { keepAliveHintMs: null });
      assertParses(`${OK_HEAD}Keep-Alive: xtimeout=5\r\nContent-Length: 0\r\n\r\n`, { keepAliveHintMs: null });
      assertParses(`${OK_HEAD}Content-Length: 0\r\n\r\n`, { keepAliveHintMs: null });
    });

    it('accepts-a-status-line-without-a-reason-and-any-3-digit-status', () => {
      assertParses('HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n', { status: 200 });
      assertParses('HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n', { status: 200 });
      assertParses('HTTP/1.1 599 Whatever It Says: here\r\nContent-Length: 0\r\n\r\n', { status: 599, headers: ['content-length', '0'] });
    });

    it('accepts-a-head-of-exactly-max-head-bytes-in-one-piece', () => {
      const prefix = `${OK_HEAD}Content-Length: 0\r\nX-Big: `;
      const head = prefix + 'a'.repeat(MAX_HEAD_BYTES - prefix.length);
      assert.equal(head.length, MAX_HEAD_BYTES);
      const out = parse([bytes(`${head}\r\n\r\n`)]);
      assert.deepEqual(out.calls, ['head', 'end']);
      assert.equal(out.headers?.[3]?.length, MAX_HEAD_BYTES - prefix.length);
      // Cut before its terminator, too.
      assert.deepEqual(parse([bytes(head), bytes('\r\n\r\n')]).calls, ['head', 'end']);
    });
  });

  describe('failures', () => {
    it('fails-obs-fold', () => {
      assertFails(`${OK_HEAD}X-A: a\r\n  b\r\nContent-Length: 0\r\n\r\n`, /folded/);
      assertFails(`${OK_HEAD}X-A: a\r\n\tb\r\nContent-Length: 0\r\n\r\n`, /folded/);
    });

    it('fails-a-bare-lf', () => {
      assertFails(`HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n`, /bare CR, LF or NUL/);
      assertFails(`${OK_HEAD}X-A: a\nb\r\nContent-Length: 0\r\n\r\n`, /bare CR, LF or NUL/);
    });

    it('fails-a-bare-cr', () => {
      assertFails(`${OK_HEAD}X-A: a\rb\r\nContent-Length: 0\r\n\r\n`, /bare CR, LF or NUL/);
      assertFails(`${OK_HEAD}X-A: a\r\r\n\r\n`, /bare CR, LF or NUL/);
    });

    it('fails-a-nul', () => {
      assertFails(`${OK_HEAD}X-A: a\0b\r\nContent-Length: 0\r\n\r\n`, /bare CR, LF or NUL/);
    });

    it('fails-a-header-name-that-is-not-a-token', () => {
      for (const name of ['X A', 'X-A ', ' X', '', 'X@', 'X(y)', 'X"', 'caf\xe9'])
        assertFails(`${OK_HEAD}Content-Length: 0\r\n${name}: v\r\n\r\n`, name.startsWith(' ') ? /folded/ : /invalid header name/);
    });

    it('fails-a-header-line-without-a-colon', () => {
      assertFails(`${OK_HEAD}X-A b\r\nContent-Length: 0\r\n\r\n`, /without a colon/);
      assertFails(`${OK_HEAD}Content-Length: 0\r\nX-A b\r\n\r\n`, /without a colon/);
    });

    it('fails-a-bad-status-line', () => {
      for (const line of ['HTTP/1.1 20 OK', 'HTTP/1.1 2000 OK', 'HTTP/1.1 200OK', 'HTTP/1.1 099 X', 'HTTP/1.1 2x0 X', 'HTTP/1.1  200 OK', 'HTTP/1.2 200 OK', 'HTTP/2 200 OK', 'http/1.1 200 OK', 'ICY 200 OK', 'HTTP/1.1', 'HTTP/1.1 '])
        assertFails(`${line}\r\nContent-Length: 0\r\n\r\n`, /invalid status line/);
    });

    it('fails-conflicting-content-lengths', () => {
      assertFails(`${OK_HEAD}Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd`, /invalid or conflicting Content-Length/);
      assertFails(`HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nContent-Length: 1\r\n\r\n`, /conflicting Content-Length/);
    });

    it('fails-a-content-length-that-is-not-digits', () => {
      for (const value of ['', 'abc', '-1', '+3', '0x3', '3 3', '3, 3', '3.0', '1234567890123456', '\xb3'])
        assertFails(`${OK_HEAD}Content-Length: ${value}\r\n\r\nabc`, /invalid or conflicting Content-Length/);
    });

    it('fails-transfer-encoding-with-content-length', () => {
      assertFails(`${OK_HEAD}Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n3\r\nabc\r\n0\r\n\r\n`, /both Transfer-Encoding and Content-Length/);
      assertFails(`${OK_HEAD}Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc`, /both Transfer-Encoding and Content-Length/);
    });

    it('fails-a-transfer-coding-other-than-chunked', () => {
      for (const te of ['gzip', 'gzip, chunked', 'chunked, gzip', 'identity', 'chunked;q=1', 'xchunked'])
        assertFails(`${OK_HEAD}Transfer-Encoding: ${te}\r\n\r\n0\r\n\r\n`, /transfer coding other than chunked/);
      assertFails(`${OK_HEAD}Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`, /transfer coding other than chunked/);
    });

    it('fails-a-bad-chunk-size', () => {
      const head = `${OK_HEAD}Transfer-Encoding: chunked\r\n\r\n`;
      for (const line of ['', 'z', '-1', '+1', '0x1', ' 1', '1 x', '1\tx', '1000000000000', `1;${'e'.repeat(300)}`, '1;a\rb'])
        assertFails(`${head}${line}\r\na\r\n0\r\n\r\n`, /chunk size|chunk-size line/);
      // A bare LF ends no chunk-size line: it shows in the line that runs on to the next CRLF.
      assertFails(`${head}1\na\r\n0\r\n\r\n`, /invalid chunk size/);
    });

    it('fails-a-chunk-longer-than-its-size', () => {
      assertFails(`${OK_HEAD}Transfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n`, /chunk longer than its size/);
      assertFails(`${OK_HEAD}Transfer-Encoding: chunked\r\n\r\n3\r\nabc\n0\r\n\r\n`, /chunk longer than its size/);
    });

    it('fails-a-head-larger-than-max-head-bytes', () => {
      const big = `${OK_HEAD}X-Big: ${'a'.repeat(MAX_HEAD_BYTES)}\r\n`;
      const check = (err: unknown): boolean => err instanceof ResponseParseError && /larger than 65536 bytes/.test(err.message);
      // Whole, terminator included.
      assert.throws(() => parse([bytes(`${big}Content-Length: 0\r\n\r\n`)]), check);
      // In pieces that never reach a terminator: fails once past the limit, not at the end.
      const rec = new Recorder();
      const parser = new ResponseParser(rec);
      parser.expect('GET');
      const piece = bytes('X-Filler: 0123456789012345678901234567890123456789\r\n');
      parser.feed(bytes(OK_HEAD));
      let fed = OK_HEAD.length;
      assert.throws(() => {
        for (;;) {
          parser.feed(piece);
          fed += piece.length;
          assert.ok(fed <= MAX_HEAD_BYTES + piece.length, 'not refused past the limit');
        }
      }, check);
      assert.ok(fed > MAX_HEAD_BYTES - piece.length);
      // One byte more than the limit, whole.
      const prefix = `${OK_HEAD}Content-Length: 0\r\nX-Big: `;
      assert.throws(() => parse([bytes(`${prefix}${'a'.repeat(MAX_HEAD_BYTES - prefix.length + 1)}\r\n\r\n`)]), check);
      assert.deepEqual(rec.calls, []);
    });

    it('fails-a-trailer-section-larger-than-its-limit-when-it-comes-in-pieces', () => {
      const parser = new ResponseParser(new Recorder());
      parser.expect('GET');
      parser.feed(bytes(`${OK_HEAD}Transfer-Encoding: chunked\r\n\r\n0\r\nX-T: `));
      assert.throws(() => parser.feed(bytes('t'.repeat(20_000))), (err: unknown) => err instanceof ResponseParseError && /trailer section that is too large/.test(err.message));
    });

    it('fails-bytes-after-the-end-of-the-response', () => {
      // In the same read as the end: the response is complete first, then the rest fails.
      const rec = new Recorder();
      const parser = new ResponseParser(rec);
      parser.expect('GET');
      assert.throws(() => parser.feed(bytes(`${OK_HEAD}Content-Length: 2\r\n\r\nokX`)), (err: unknown) => err instanceof ResponseParseError && /answer no request/.test(err.message));
      assert.deepEqual(rec.calls, ['head', 'data', 'end']);
      // In every cut, for each way a response can end.
      assertFails(`${OK_HEAD}Content-Length: 2\r\n\r\nokX`, /answer no request/);
      assertFails(`${OK_HEAD}Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nX`, /answer no request/);
      assertFails(`${OK_HEAD}Transfer-Encoding: chunked\r\n\r\n0\r\nT: v\r\n\r\nHTTP/1.1 200 OK\r\n\r\n`, /answer no request/);
      assertFails(`HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\nabc`, /answer no request/);
      assertFails(`${OK_HEAD}Content-Length: 3\r\n\r\nabc`, /answer no request/, { method: 'HEAD' });
    });

    it('fails-bytes-that-come-when-no-response-is-expected', () => {
      const parser = new ResponseParser(new Recorder());
      assert.throws(() => parser.feed(bytes(OK_HEAD)), ResponseParseError);
    });

    it('fails-eof-in-the-middle-of-a-response', () => {
      const cases: Array<[string, RegExp]> = [
        [`${OK_HEAD}Content-Length: 10\r\n\r\nabc`, /in the middle of its response/],
        [`${OK_HEAD}Content-Length: 10\r\n\r\n`, /in the middle of its response/],
        [`${OK_HEAD}Transfer-Encoding: chunked\r\n\r\n5\r\nab`, /in the middle of its response/],
        [`${OK_HEAD}Transfer-Encoding: chunked\r\n\r\n2\r\nab\r`, /in the middle of its response/],
        [`${OK_HEAD}Transfer-Encoding: chunked\r\n\r\n0\r\nT: v\r\n`, /in the middle of its response/],
        [`${OK_HEAD}Content-Length: 0\r\n`, /in the middle of its response/],
        ['HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 2', /in the middle of its response/],
      ];
      for (const [raw, message] of cases) {
        const rec = new Recorder();
        const parser = new ResponseParser(rec);
        parser.expect('GET');
        parser.feed(bytes(raw));
        assert.equal(parser.untouched, false);
        assert.throws(() => parser.eof(), (err: unknown) => err instanceof ResponseParseError && message.test(err.message), raw);
        assert.ok(!rec.calls.includes('end'), raw);
      }
    });

    it('fails-eof-before-any-byte-of-the-response-as-untouched', () => {
      const rec = new Recorder();
      const parser = new ResponseParser(rec);
      parser.expect('GET');
      assert.equal(parser.untouched, true);
      assert.throws(() => parser.eof(), (err: unknown) => err instanceof ResponseParseError && /before answering/.test(err.message));
      assert.deepEqual(rec.calls, []);
    });

    it('takes-eof-after-a-complete-response-or-before-any-request-quietly', () => {
      const parser = new ResponseParser(new Recorder());
      parser.eof();
      parser.expect('GET');
      parser.feed(bytes(`${OK_HEAD}Content-Length: 0\r\n\r\n`));
      parser.eof();
      assert.equal(parser.busy, false);
    });
  });

  describe('cases found in review', () => {
    it('does-not-keep-alive-an-http-1-0-response-with-transfer-encoding', () => {
      assertParses('HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n', { body: 'ok', keepAlive: false });
    });

    it('accepts-a-head-of-exactly-max-head-bytes-however-it-is-cut', () => {
      const prefix = `${OK_HEAD}Content-Length: 0\r\nX-Big: `;
      const raw = bytes(`${prefix}${'a'.repeat(MAX_HEAD_BYTES - prefix.length)}\r\n\r\n`);
      for (const cut of [1, 2, 3]) {
        const at = MAX_HEAD_BYTES + cut;
        assert.deepEqual(parse([raw.subarray(0, at), raw.subarray(at)]).calls, ['head', 'end'], `cut ${cut} byte(s) into the terminator`);
      }
    });

    it('fails-a-trailer-section-larger-than-its-limit-even-in-one-read', () => {
      const raw = `${OK_HEAD}Transfer-Encoding: chunked\r\n\r\n0\r\nX-T: ${'t'.repeat(20_000)}\r\n\r\n`;
      assert.throws(() => parse([bytes(raw)]), ResponseParseError);
    });
  });
});
