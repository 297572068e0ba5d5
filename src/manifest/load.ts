/**
 * Reading a manifest: YAML → schema + rules (every problem at once, each with
 * file:line:col and its path) → `NodeSpec`.
 */
import { readFile } from 'node:fs/promises';
import { relative, resolve } from 'node:path';
import { isAlias, isScalar, LineCounter, parseDocument, visit, type Document, type YAMLError } from 'yaml';
import { BerthError, type ErrorDetail } from '../errors.js';
import { describeValue, dottedPath, fromZodIssue, isPlainMap, positionOf, type ManifestIssue } from './issues.js';
import { normalize } from './normalize.js';
import { checkRules } from './rules.js';
import { manifestSchema } from './schema.js';
import type { NodeSpec } from './types.js';

/**
 * Parses and validates manifest text. `file` is the manifest's path: it names
 * the file in messages and relative paths resolve from its folder.
 * Throws `BerthError` (`BERTH_ERR_MANIFEST_SYNTAX` or `BERTH_ERR_MANIFEST_INVALID`)
 * whose `details` list every problem, in document order.
 */
export function parseManifest(text: string, file: string): NodeSpec {
  const path = resolve(file);
  const lineCounter = new LineCounter();
  // `merge` lets a manifest share settings with anchors and `<<: *defaults`; logLevel keeps yaml from printing warnings of its own.
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true, merge: true, logLevel: 'error' });

  if (doc.errors.length > 0) {
    const details = doc.errors.map((err) => {
      const { line, col } = lineCounter.linePos(err.pos[0]);
      return { where: `${path}:${line}:${col}`, message: syntaxMessage(err, doc) };
    });
    throw problems('BERTH_ERR_MANIFEST_SYNTAX', path, details);
  }

  const complexKeys = nonScalarKeys(doc).map((offset) => {
    const { line, col } = lineCounter.linePos(offset);
    return { where: `${path}:${line}:${col}`, message: 'expected a plain key (a name), got a list or map used as a key' };
  });
  if (complexKeys.length > 0) throw problems('BERTH_ERR_MANIFEST_INVALID', path, complexKeys);

  let data: unknown;
  try {
    data = doc.toJS({ maxAliasCount: 100 });
  } catch (err) {
    // Only an alias bomb gets here: the parse itself succeeded.
    throw problems('BERTH_ERR_MANIFEST_SYNTAX', path, [{ where: `${path}:1:1`, message: (err as Error).message }]);
  }

  if (data === null || data === undefined) {
    throw problems('BERTH_ERR_MANIFEST_INVALID', path, [
      { where: `${path}:1:1`, message: 'the manifest is empty: expected a map with at least "groups" (see docs/manifest.md)' },
    ]);
  }
  if (!isPlainMap(data)) {
    throw problems('BERTH_ERR_MANIFEST_INVALID', path, [
      { where: `${path}:1:1`, message: `expected a map with at least "groups" at the top of the manifest, got ${describeValue(data)}` },
    ]);
  }

  const parsed = manifestSchema.safeParse(data);
  const issues: ManifestIssue[] = [...(parsed.success ? [] : parsed.error.issues.flatMap((issue) => fromZodIssue(issue, data))), ...checkRules(data)];
  if (issues.length > 0 || !parsed.success) {
    throw problems('BERTH_ERR_MANIFEST_INVALID', path, located(issues, doc, lineCounter, path));
  }
  return normalize(parsed.data, path);
}

/** Reads and validates a manifest file. Throws `BERTH_ERR_MANIFEST_NOT_FOUND` naming the path when it cannot be read. */
export async function loadManifest(file: string): Promise<NodeSpec> {
  const path = resolve(file);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why =
      code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'is a folder, not a manifest file' : code === 'EACCES' ? 'permission denied' : (err as Error).message;
    throw new BerthError('BERTH_ERR_MANIFEST_NOT_FOUND', `${path}: cannot read the manifest: ${why}`, { cause: err });
  }
  return parseManifest(text, path);
}

/**
 * A manifest error as people read it: the message, then one line per problem,
 * `  berth.yaml:12:9  groups.payments.services.charges.replicas: expected …`,
 * with the file relative to the current folder when that is shorter.
 */
export function formatManifestError(err: BerthError): string {
  const lines = [shortenLeadingPath(err.message)];
  for (const detail of err.details) {
    const where = detail.where === undefined ? undefined : /^(.+?):(\d+):(\d+)(?: (.*))?$/s.exec(detail.where);
    if (where === null) lines.push(`  ${detail.where ?? ''}: ${detail.message}`);
    else if (where === undefined) lines.push(`  ${detail.message}`);
    else {
      const [, file = '', line, col, path] = where;
      lines.push(`  ${shorten(file)}:${line}:${col}  ${path === undefined || path === '' ? '' : `${path}: `}${detail.message}`);
    }
  }
  return lines.join('\n');
}

function shorten(file: string): string {
  const rel = relative(process.cwd(), file);
  return rel !== '' && rel.length < file.length ? rel : file;
}

function shortenLeadingPath(message: string): string {
  const colon = message.indexOf(': ');
  return colon > 0 && message.startsWith('/') ? shorten(message.slice(0, colon)) + message.slice(colon) : message;
}

function problems(code: 'BERTH_ERR_MANIFEST_SYNTAX' | 'BERTH_ERR_MANIFEST_INVALID', path: string, details: ErrorDetail[]): BerthError {
  return new BerthError(code, `${path}: ${details.length} ${details.length === 1 ? 'problem' : 'problems'}`, { details });
}

function located(issues: readonly ManifestIssue[], doc: Document, lineCounter: LineCounter, file: string): ErrorDetail[] {
  const seen = new Set<string>();
  return issues
    .map((issue, order) => ({ ...positionOf(doc, lineCounter, issue.path), order, issue }))
    .sort((a, b) => a.line - b.line || a.col - b.col || a.order - b.order)
    .map(({ line, col, issue }) => {
      const path = dottedPath(issue.path);
      return { where: `${file}:${line}:${col}${path === '' ? '' : ` ${path}`}`, message: issue.message };
    })
    .filter((d) => {
      const key = `${d.where}\n${d.message}`;
      if (seen.has(key)) return false;
      seen.add(key);
      return true;
    });
}

function syntaxMessage(err: YAMLError, doc: Document): string {
  switch (err.code) {
    case 'DUPLICATE_KEY': {
      const key = keyAt(doc, err.pos[0]);
      return key === undefined ? 'duplicate key: a key may appear only once in a map' : `duplicate key ${JSON.stringify(key)}: a key may appear only once in a map`;
    }
    case 'MULTIPLE_DOCS':
      return 'a manifest is one YAML document, found a second one (a "---" line)';
    case 'TAB_AS_INDENT':
      return 'tabs are not allowed as indentation in YAML: indent with spaces';
    default:
      return `not valid YAML: ${err.message.charAt(0).toLowerCase()}${err.message.slice(1)}`;
  }
}

/** Offsets of keys that are lists or maps (`? [a, b]: 1`): JSON-like data cannot hold them. */
function nonScalarKeys(doc: Document): number[] {
  const offsets: number[] = [];
  visit(doc, {
    Pair(_, pair) {
      if (pair.key !== null && !isScalar(pair.key) && !isAlias(pair.key)) offsets.push((pair.key as { range?: [number, number, number] }).range?.[0] ?? 0);
    },
  });
  return offsets;
}

function keyAt(doc: Document, offset: number): string | undefined {
  let found: string | undefined;
  visit(doc, {
    Pair(_, pair) {
      if (isScalar(pair.key) && pair.key.range?.[0] === offset) {
        found = String(pair.key.value);
        return visit.BREAK;
      }
      return undefined;
    },
  });
  return found;
}
