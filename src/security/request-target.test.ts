import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { normalizeTarget } from './request-target.js';

const CANONICAL: [string, string][] = [
  ['/', '/'],
  ['/payments/charges/x?y=1', '/payments/charges/x?y=1'],
  ['/a//b', '/a/b'],
  ['//a///b/', '/a/b/'],
  ['/a/./b', '/a/b'],
  ['/a/b/../c', '/a/c'],
  ['/a/b/..', '/a/'],
  ['/a/.', '/a/'],
  ['/a/%2e%2e/b', '/b'],
  ['/a/%2E/b', '/a/b'],
  ['/a/.%2e/b', '/b'],
  ['/%61%62c', '/abc'],
  ['/a%20b', '/a%20b'],
  ['/a%2a', '/a%2A'],
  ['/users/../payments/x?q=../..', '/payments/x?q=../..'],
];

const REFUSED: [string, RegExp][] = [
  ['http://evil.example/x', /origin form/],
  ['*', /asterisk/],
  ['/..', /above its root/],
  ['/a/../../b', /above its root/],
  ['/%2e%2e/etc/passwd', /above its root/],
  ['/a%2fb', /encoded slash/],
  ['/a%2Fb', /encoded slash/],
  ['/a%5cb', /encoded slash or backslash/],
  ['/a\\b', /backslash/],
  ['/a%00b', /control/],
  ['/a%0d%0ab', /control/],
  ['/a%zz', /bad percent-encoding/],
  ['/a%2', /bad percent-encoding/],
  ['/a\u00e9', /non-ASCII/],
];

describe('normalizeTarget', () => {
  for (const [given, want] of CANONICAL) {
    it(`normalizes ${given} to ${want}`, () => assert.deepEqual(normalizeTarget(given), { ok: true, url: want }));
  }

  it('refuses an encoded slash even after a dot segment', () => {
    assert.equal(normalizeTarget('/a/..%2fb').ok, false);
  });

  for (const [given, why] of REFUSED) {
    it(`refuses ${JSON.stringify(given)}`, () => {
      const result = normalizeTarget(given);
      assert.equal(result.ok, false);
      if (!result.ok) assert.match(result.reason, why);
    });
  }

  it('returns a canonical path: no dot segments, no empty segments, idempotent (property)', () => {
    const segment = fc.oneof(fc.constantFrom('.', '..', '', '%2e', '%2E%2e', 'a', 'b', '%41', 'c%20d'), fc.stringMatching(/^[a-z0-9]{1,4}$/));
    fc.assert(
      fc.property(fc.array(segment, { maxLength: 12 }), (segments) => {
        const result = normalizeTarget(`/${segments.join('/')}`);
        if (!result.ok) return;
        const inner = result.url.split('/').slice(1, -1);
        assert.ok(!inner.includes('') && !inner.includes('.') && !inner.includes('..'), result.url);
        assert.ok(!/%2e/i.test(result.url), result.url);
        assert.deepEqual(normalizeTarget(result.url), result);
      }),
    );
  });
});
