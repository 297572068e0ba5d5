/**
 * Authorization: a service's (or route's) `authorize` rules, compiled once
 * into a check that runs per request without building anything. A rule
 * applies when its methods and path glob match; it admits when the identity
 * meets every condition it sets; an anonymous caller is admitted only by a
 * rule marked `anonymous`. Nothing admitting is a refusal: default deny.
 */
import type { AuthorizeRule } from '../manifest/types.js';
import type { Identity } from './identity.js';

export type AuthorizeCheck = { ok: true } | { ok: false; reason: string };

export interface Authorizer {
  /** `path` as the instance sees it; a query string is ignored. */
  check(identity: Identity, method: string, path: string): AuthorizeCheck;
}

const ADMITTED: AuthorizeCheck = Object.freeze({ ok: true });

/**
 * A path glob as a RegExp anchored at both ends: `*` is any run of
 * characters within one segment (never `/`), `**` as a whole segment is any
 * number of segments, none included (`/a/**` matches `/a`, `/a/` and
 * everything under `/a/`). Any other character is itself. Throws TypeError
 * for a glob that does not start with `/` or has `**` inside a segment.
 */
export function globToRegExp(glob: string): RegExp {
  if (!glob.startsWith('/')) throw new TypeError(`a path glob starts with "/"; got ${JSON.stringify(glob)}`);
  const segments = glob.slice(1).split('/');
  let source = '';
  for (const segment of segments) {
    if (segment === '**') {
      // The slash before it is optional along with what follows: `/a/**` also matches `/a`.
      source += '(?:/.*)?';
      continue;
    }
    if (segment.includes('**')) throw new TypeError(`"**" must be a whole path segment (as in /a/**/b); got ${JSON.stringify(glob)}`);
    source += `/${segment.split('*').map(escapeRegExp).join('[^/]*')}`;
  }
  return new RegExp(`^${source}$`);
}

function escapeRegExp(text: string): string {
  return text.replace(/[\\^$.*+?()[\]{}|/]/g, '\\$&');
}

interface CompiledRule {
  methods: ReadonlySet<string> | null;
  path: RegExp | null;
  roles: readonly string[] | null;
  scopes: readonly string[] | null;
  claims: readonly (readonly [string, string])[] | null;
  anonymous: boolean;
}

/** Compiles rules once; throws TypeError for a bad path glob. */
export function compileRules(rules: readonly AuthorizeRule[]): Authorizer {
  const compiled: CompiledRule[] = rules.map((rule) => ({
    methods: rule.methods === null ? null : new Set(rule.methods),
    path: rule.path === null ? null : globToRegExp(rule.path),
    roles: rule.roles,
    scopes: rule.scopes,
    claims: rule.claims === null ? null : Object.entries(rule.claims),
    anonymous: rule.anonymous,
  }));
  return {
    check(identity, method, target) {
      const q = target.indexOf('?');
      const path = q === -1 ? target : target.slice(0, q);
      let applied: CompiledRule | undefined;
      for (const rule of compiled) {
        if (rule.methods !== null && !rule.methods.has(method)) continue;
        if (rule.path !== null && !rule.path.test(path)) continue;
        applied ??= rule;
        if (admits(rule, identity)) return ADMITTED;
      }
      return { ok: false, reason: refusal(applied, identity, method, path) };
    },
  };
}

function admits(rule: CompiledRule, identity: Identity): boolean {
  if (identity.kind === 'anonymous' && !rule.anonymous) return false;
  if (rule.roles !== null && !rule.roles.some((role) => identity.roles.includes(role))) return false;
  if (rule.scopes !== null && !rule.scopes.every((scope) => identity.scopes.includes(scope))) return false;
  if (rule.claims !== null) {
    for (const [name, expected] of rule.claims) if (!claimHolds(identity.claims[name], expected)) return false;
  }
  return true;
}

/** A claim equals the value; a list claim contains it. Numbers and booleans compare by their text (`email_verified: "true"`). */
function claimHolds(value: unknown, expected: string): boolean {
  if (Array.isArray(value)) return value.some((item) => scalarEquals(item, expected));
  return scalarEquals(value, expected);
}

function scalarEquals(value: unknown, expected: string): boolean {
  if (typeof value === 'string') return value === expected;
  if (typeof value === 'number' || typeof value === 'boolean') return String(value) === expected;
  return false;
}

/** Why nothing admitted: the first rule that applied says what it wanted. Names no claim value of the caller. */
function refusal(rule: CompiledRule | undefined, identity: Identity, method: string, path: string): string {
  if (rule === undefined) return `no authorize rule applies to ${method} ${path}`;
  if (identity.kind === 'anonymous') return `${method} ${path} needs an authenticated caller`;
  if (rule.roles !== null && !rule.roles.some((role) => identity.roles.includes(role))) return `${method} ${path} needs one of the roles ${rule.roles.join(', ')}`;
  if (rule.scopes !== null) {
    const missing = rule.scopes.filter((scope) => !identity.scopes.includes(scope));
    if (missing.length > 0) return `${method} ${path} needs the scopes ${missing.join(' ')}`;
  }
  return `${method} ${path}: the caller does not meet the conditions of any rule`;
}
