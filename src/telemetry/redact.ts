/**
 * What keeps secrets out of Berth's log lines: pino `redact` paths that
 * censor secret-named fields whole, and a scrubber that masks secrets quoted
 * inside free text (messages, instance output, the access log's path, error
 * messages). The logger wires both in (logger.ts), so every line gets them,
 * whoever writes it.
 */
import { pino } from 'pino';

/** What a redacted value reads as. */
export const CENSOR = '[redacted]';

/**
 * Field names whose value is a secret: header names as Node gives them
 * (lowercase) and as people write them, and the usual spellings of keys.
 * Matched exactly (pino's redaction is case-sensitive).
 */
export const SECRET_FIELDS: readonly string[] = [
  'authorization', 'Authorization', 'proxy-authorization', 'Proxy-Authorization',
  'cookie', 'Cookie', 'set-cookie', 'Set-Cookie',
  'x-api-key', 'X-Api-Key', 'apiKey', 'api_key', 'apikey',
  'token', 'accessToken', 'access_token', 'refreshToken', 'refresh_token', 'idToken', 'id_token',
  'secret', 'clientSecret', 'client_secret',
  'password', 'passwd',
];

/**
 * Where a secret field is looked for, besides the line's own fields. pino
 * needs explicit paths: a leading wildcard (`*.token`) would reach one level
 * under any field, but then every field of every line goes through the
 * redactor — measured 2.5 → 40 µs per access-log line. So the objects a log
 * line carries (Berth's `err` and `details`, header maps, request and response
 * shapes of libraries) are named; a secret deeper than these is not censored
 * by name.
 */
export const SECRET_CONTAINERS: readonly string[] = [
  'headers', 'req', 'res', 'request', 'response', 'err', 'error', 'details', 'body', 'query', 'config',
  'req.headers', 'res.headers', 'request.headers', 'response.headers', 'err.headers', 'error.headers',
];

/**
 * Fields whose string value is free text that may quote a secret (a check's
 * output, a command line, a path): scrubbed, not censored whole. `msg` is the
 * message itself, instance output lines included.
 */
export const FREE_TEXT_FIELDS: readonly string[] = ['msg', 'reason', 'check', 'command', 'path', 'url', 'error'];

const IDENTIFIER = /^[A-Za-z_$][\w$]*$/;
/** A manifest `log.redact` entry that is a name, not a path. */
const BARE_NAME = /^[A-Za-z_$][\w$-]*$/;

/**
 * The pino `redact` paths: every secret field (and every bare name in
 * `extra`) at the top level and in each container; `extra`'s paths as given.
 */
export function redactPaths(extra: readonly string[] = []): string[] {
  const names = [...SECRET_FIELDS, ...extra.filter((e) => BARE_NAME.test(e))];
  const paths = new Set<string>();
  for (const name of names) {
    const quoted = `[${JSON.stringify(name)}]`;
    paths.add(IDENTIFIER.test(name) ? name : quoted);
    for (const container of SECRET_CONTAINERS) paths.add(`${container}${IDENTIFIER.test(name) ? `.${name}` : quoted}`);
  }
  for (const path of extra) if (!BARE_NAME.test(path)) paths.add(path);
  return [...paths];
}

/**
 * Words that make a `key=value` or `key: value` a secret in free text. A word
 * matches inside a longer key too (`GITHUB_TOKEN=`, `x-api-key:`,
 * `"refresh_token":`, `JSESSIONID=`): masking a harmless `tokenCount=3` is the
 * cheaper mistake.
 */
const SECRET_WORDS = String.raw`authorization|cookie|api[-_]?key|token|secret|passw(?:or)?d|pwd|credential|sess(?:ion)?[-_]?id`;
/** A quoted value, its closing quote optional so an unterminated one is masked to the end. */
const QUOTED = String.raw`"(?:[^"\\]|\\.)*"?|'(?:[^'\\]|\\.)*'?`;

/** Masks the secrets free text may quote; returns `text` itself when there are none. */
export type Scrubber = (text: string) => string;

/**
 * Builds the scrubber: one regular expression, compiled once, that masks
 * - `Bearer <x>` and `Basic <x>` credentials,
 * - the password in a URL's `user:password@`,
 * - a cookie header's value, to the end of the line (every cookie in it),
 * - the value of a secret-looking key in `key=value` (query strings, forms,
 *   env, logfmt), `key: value` (header lines, YAML) and `"key": "value"` (JSON,
 *   util.inspect) forms: a quoted value whole, else one word (after an
 *   auth scheme such as `Bearer `), up to a space, `&`, `;` or `,`,
 * - the same for the field names in `extra` (a path's last name), matched as
 *   whole keys.
 * Instance output can be high-volume: the expression fails fast on a line
 * with nothing to mask (about 4 ns a character), and every part that could
 * backtrack is bounded (a key's tail, a URL's user and password), so a
 * hostile line cannot make it quadratic.
 */
export function createScrubber(extra: readonly string[] = []): Scrubber {
  const names = [...new Set(extra.map(lastName).filter((n): n is string => n !== undefined))].map(escapeRegExp);
  const key = names.length > 0 ? String.raw`(?:${SECRET_WORDS})[\w-]{0,64}|(?<![\w-])(?:${names.join('|')})` : String.raw`(?:${SECRET_WORDS})[\w-]{0,64}`;
  const separator = String.raw`["']?\s*[:=]\s*`;
  const pattern = new RegExp(
    [
      String.raw`\b((?:bearer|basic)\s+)[\w.~+/-]+=*`,
      String.raw`(\/\/[^\s/?#@:]{1,256}:)[^\s/?#@]{1,256}(?=@)`,
      String.raw`(\b(?:set-)?cookie${separator})(?:${QUOTED}|[^"'\r\n]+)`,
      String.raw`((?:${key})${separator})(?:${QUOTED}|(?:(?:bearer|basic|digest|token)\s+)?[^\s&;,"']+)`,
    ].join('|'),
    'gi',
  );
  const mask = (match: string, scheme?: string, userinfo?: string, cookie?: string, name?: string): string => {
    const prefix = scheme ?? userinfo ?? cookie ?? name ?? '';
    const quote = match[prefix.length];
    return quote === '"' || quote === "'" ? `${prefix}${quote}${CENSOR}${quote}` : `${prefix}${CENSOR}`;
  };
  return (text) => text.replace(pattern, mask);
}

/** The last named segment of a field name or pino path: `body.card.number` → `number`, `headers["x-session"]` → `x-session`. */
function lastName(path: string): string | undefined {
  const segments = [...path.matchAll(/[^.[\]"']+/g)].map((m) => m[0]).filter((s) => s !== '*' && !/^\d+$/.test(s));
  return segments[segments.length - 1];
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

type Serializer = (value: unknown) => unknown;

/**
 * pino serializers that scrub the free-text fields and errors (message and
 * stack, which carry the message again). pino runs them on the message, on
 * each line's fields and on child bindings, before the redact paths apply.
 */
export function scrubbingSerializers(scrub: Scrubber): Record<string, Serializer> {
  const text: Serializer = (value) => (typeof value === 'string' ? scrub(value) : value);
  const serializers: Record<string, Serializer> = Object.fromEntries(FREE_TEXT_FIELDS.map((field) => [field, text]));
  serializers.err = (value) => {
    if (typeof value === 'string') return scrub(value);
    const serialized: unknown = value instanceof Error ? pino.stdSerializers.err(value) : value;
    if (typeof serialized !== 'object' || serialized === null || Array.isArray(serialized)) return serialized;
    // A copy: a plain object given as `err` is the caller's.
    const copy = { ...(serialized as Record<string, unknown>) };
    if (typeof copy.message === 'string') copy.message = scrub(copy.message);
    if (typeof copy.stack === 'string') copy.stack = scrub(copy.stack);
    return copy;
  };
  return serializers;
}
