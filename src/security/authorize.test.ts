import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import type { AuthorizeRule } from '../manifest/types.js';
import { compileRules, globToRegExp } from './authorize.js';
import { ANONYMOUS, type Identity } from './identity.js';

function rule(overrides: Partial<AuthorizeRule>): AuthorizeRule {
  return { methods: null, path: null, roles: null, scopes: null, claims: null, anonymous: false, ...overrides };
}

function caller(overrides: Partial<Identity> = {}): Identity {
  return { kind: 'jwt', subject: 'alice', issuer: 'https://id.example.com/', roles: [], scopes: [], claims: {}, ...overrides };
}

/** A path segment: anything but "/" (and no "?", which starts the query). */
const segment = fc.string({ minLength: 0, maxLength: 8 }).filter((s) => !s.includes('/') && !s.includes('?'));
const path = fc.array(segment, { maxLength: 6 }).map((segments) => `/${segments.join('/')}`);

describe('path globs', () => {
  it('matches-literal-paths-exactly-whatever-characters-they-hold', () => {
    fc.assert(
      fc.property(path, path, (a, b) => {
        assert.equal(globToRegExp(a.replace(/\*/g, '')).test(b.replace(/\*/g, '')), a.replace(/\*/g, '') === b.replace(/\*/g, ''));
      }),
    );
    assert.ok(globToRegExp('/a.b/(c)/[d]/e+f/$').test('/a.b/(c)/[d]/e+f/$'));
    assert.ok(!globToRegExp('/a.b').test('/axb'), 'a dot is a dot');
  });

  it('double-star-matches-every-path-under-its-prefix-and-the-prefix-itself', () => {
    fc.assert(
      fc.property(fc.array(segment, { maxLength: 6 }), (rest) => {
        const under = `/a/${rest.join('/')}`;
        assert.ok(globToRegExp('/a/**').test(under), under);
        assert.ok(globToRegExp('/**').test(under), under);
      }),
    );
    assert.ok(globToRegExp('/a/**').test('/a'));
    assert.ok(!globToRegExp('/a/**').test('/ab'), 'a segment boundary, not a string prefix');
    assert.ok(!globToRegExp('/a/**').test('/b/a'));
  });

  it('double-star-in-the-middle-matches-zero-or-more-segments', () => {
    fc.assert(
      fc.property(fc.array(segment, { maxLength: 5 }), (middle) => {
        const p = ['/a', ...middle, 'z'].join('/');
        assert.ok(globToRegExp('/a/**/z').test(p), p);
      }),
    );
    assert.ok(!globToRegExp('/a/**/z').test('/a/zz'));
  });

  it('star-matches-within-one-segment-and-never-crosses-a-slash', () => {
    fc.assert(
      fc.property(segment, segment, (s, t) => {
        assert.ok(globToRegExp('/x/*').test(`/x/${s}`));
        assert.ok(!globToRegExp('/x/*').test(`/x/${s}/${t}`), 'one segment only');
        assert.ok(globToRegExp('/x/*/y').test(`/x/${s}/y`));
        assert.ok(globToRegExp('/files/*.png').test(`/files/${s}.png`));
        assert.ok(!globToRegExp('/files/*.png').test(`/files/${s}/${t}.png`));
      }),
    );
  });

  it('refuses-a-glob-without-a-leading-slash-or-with-double-star-inside-a-segment', () => {
    assert.throws(() => globToRegExp('a/b'), TypeError);
    assert.throws(() => globToRegExp('/a**'), /whole path segment/);
  });
});

describe('authorize rules', () => {
  it('denies-by-default', () => {
    const none = compileRules([]);
    assert.deepEqual(none.check(caller(), 'GET', '/'), { ok: false, reason: 'no authorize rule applies to GET /' });
    const onlyPost = compileRules([rule({ methods: ['POST'] })]);
    assert.equal(onlyPost.check(caller(), 'GET', '/').ok, false, 'a rule whose methods do not match does not apply');
    assert.equal(onlyPost.check(caller(), 'POST', '/').ok, true);
  });

  it('admits-an-anonymous-caller-only-by-a-rule-marked-anonymous', () => {
    const authenticated = compileRules([rule({})]);
    assert.equal(authenticated.check(caller(), 'GET', '/x').ok, true, 'a rule without conditions admits any authenticated caller');
    assert.deepEqual(authenticated.check(ANONYMOUS, 'GET', '/x'), { ok: false, reason: 'GET /x needs an authenticated caller' });
    const open = compileRules([rule({ path: '/public/**', anonymous: true })]);
    assert.equal(open.check(ANONYMOUS, 'GET', '/public/logo.png').ok, true);
    assert.equal(open.check(ANONYMOUS, 'GET', '/private').ok, false);
    const anonymousWithRole = compileRules([rule({ anonymous: true, roles: ['admin'] })]);
    assert.equal(anonymousWithRole.check(ANONYMOUS, 'GET', '/').ok, false, 'anonymous holds no role');
  });

  it('needs-one-of-the-roles-every-scope-and-every-claim', () => {
    const rules = compileRules([
      rule({ methods: ['GET'], path: '/orders/*', scopes: ['orders:read'] }),
      rule({ methods: ['DELETE'], path: '/orders/*', roles: ['admin', 'ops'], scopes: ['orders:read', 'orders:write'] }),
      rule({ path: '/tenants/acme/**', claims: { tenant: 'acme', email_verified: 'true' } }),
    ]);
    assert.equal(rules.check(caller({ scopes: ['orders:read'] }), 'GET', '/orders/7').ok, true);
    assert.deepEqual(rules.check(caller(), 'GET', '/orders/7'), { ok: false, reason: 'GET /orders/7 needs the scopes orders:read' });
    assert.equal(rules.check(caller({ roles: ['ops'], scopes: ['orders:read', 'orders:write'] }), 'DELETE', '/orders/7').ok, true);
    assert.deepEqual(rules.check(caller({ roles: ['viewer'], scopes: ['orders:read', 'orders:write'] }), 'DELETE', '/orders/7'), { ok: false, reason: 'DELETE /orders/7 needs one of the roles admin, ops' });
    assert.equal(rules.check(caller({ roles: ['admin'], scopes: ['orders:write'] }), 'DELETE', '/orders/7').ok, false, 'every scope');
    assert.equal(rules.check(caller({ claims: { tenant: 'acme', email_verified: true } }), 'PUT', '/tenants/acme/users/1').ok, true, 'a boolean claim compares by its text');
    assert.equal(rules.check(caller({ claims: { tenant: ['other', 'acme'], email_verified: 'true' } }), 'PUT', '/tenants/acme').ok, true, 'a list claim contains the value');
    assert.equal(rules.check(caller({ claims: { tenant: 'other', email_verified: true } }), 'PUT', '/tenants/acme').ok, false);
    assert.equal(rules.check(caller({ claims: { tenant: 'acme' } }), 'PUT', '/tenants/acme').ok, false, 'every claim');
    assert.equal(rules.check(caller({ claims: { tenant: { name: 'acme' }, email_verified: 'true' } }), 'PUT', '/tenants/acme').ok, false, 'an object claim equals no text');
  });

  it('admits-when-any-applicable-rule-admits', () => {
    const rules = compileRules([rule({ roles: ['admin'] }), rule({ path: '/health', anonymous: true })]);
    assert.equal(rules.check(ANONYMOUS, 'GET', '/health').ok, true, 'the second rule admits though the first refuses');
    assert.equal(rules.check(caller({ roles: ['admin'] }), 'GET', '/anything').ok, true);
  });

  it('matches-the-path-without-its-query-string', () => {
    const rules = compileRules([rule({ path: '/orders/*', anonymous: true })]);
    assert.equal(rules.check(ANONYMOUS, 'GET', '/orders/7?x=/../admin').ok, true);
    assert.equal(rules.check(ANONYMOUS, 'GET', '/admin?/orders/7').ok, false, 'a query cannot make a path match');
  });

  it('never-admits-an-anonymous-caller-without-an-anonymous-rule-whatever-the-request', () => {
    fc.assert(
      fc.property(fc.array(fc.record({ methods: fc.constantFrom<string[] | null>(null, ['GET'], ['POST', 'PUT']), path: fc.constantFrom(null, '/**', '/a/*', '/a/**'), roles: fc.constantFrom<string[] | null>(null, ['r']) })), fc.constantFrom('GET', 'POST', 'DELETE'), path, (partial, method, p) => {
        const rules = compileRules(partial.map((r) => rule(r)));
        assert.equal(rules.check(ANONYMOUS, method, p).ok, false);
      }),
    );
  });
});
