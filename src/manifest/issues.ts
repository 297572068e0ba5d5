/**
 * Turning "something is wrong at this path" into a line a person can act on:
 * `berth.yaml:12:9 groups.payments.services.charges.replicas` plus what was
 * expected and what was found.
 */
import { isAlias, isMap, isScalar, isSeq, type Document, type LineCounter, type Node } from 'yaml';
import type { z } from 'zod';

export type ManifestPath = readonly (string | number)[];

/** One problem in a manifest, before it is given a line number. */
export interface ManifestIssue {
  path: ManifestPath;
  message: string;
}

/** `groups.payments.services.charges.versions["2.0.0"].args[1]` */
export function dottedPath(path: ManifestPath): string {
  let out = '';
  for (const segment of path) {
    if (typeof segment === 'number') out += `[${segment}]`;
    else if (/^[A-Za-z_][A-Za-z0-9_-]*$/.test(segment)) out += out === '' ? segment : `.${segment}`;
    else out += `[${JSON.stringify(segment)}]`;
  }
  return out;
}

export function isPlainMap(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function valueAt(data: unknown, path: ManifestPath): unknown {
  let current = data;
  for (const segment of path) {
    if (Array.isArray(current) && typeof segment === 'number') current = current[segment];
    else if (isPlainMap(current) && Object.hasOwn(current, segment)) current = current[segment];
    else return undefined;
  }
  return current;
}

/** What was found, as the person wrote it: `"three"`, `-1`, `a list`. */
export function describeValue(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value.length > 80 ? `${value.slice(0, 77)}...` : value);
  if (value === null) return 'an empty value';
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  return 'a map';
}

function withFound(message: string, found: unknown): string {
  return message.startsWith('expected ') && !message.includes(', got ') ? `${message}, got ${describeValue(found)}` : message;
}

/** One zod issue as one or more manifest issues (an unknown-keys issue becomes one per key, at that key). */
export function fromZodIssue(issue: z.core.$ZodIssue, data: unknown): ManifestIssue[] {
  const path = issue.path.filter((p): p is string | number => typeof p !== 'symbol');
  switch (issue.code) {
    case 'unrecognized_keys': {
      const lines = issue.message.split('\n');
      return issue.keys.map((key, i) => ({ path: [...path, key], message: lines[i] ?? `unknown key ${JSON.stringify(key)}` }));
    }
    case 'invalid_key': {
      // The key itself is wrong (a group named "Payments", an env var named "PORT").
      const key = path[path.length - 1];
      const inner = issue.issues[0]?.message ?? 'invalid key';
      return [{ path, message: withFound(inner, key) }];
    }
    default: {
      const found = valueAt(data, path);
      const key = path[path.length - 1];
      if (found === undefined && typeof key === 'string') {
        return [{ path, message: `missing required key ${JSON.stringify(key)} (${issue.message})` }];
      }
      return [{ path, message: withFound(issue.message, found) }];
    }
  }
}

export interface Position {
  line: number;
  col: number;
}

/**
 * The line and column for a path: the key that holds the value (`replicas:`),
 * or for a path that goes further than the document, the key of the deepest map
 * that exists (where a missing key should have been written).
 */
export function positionOf(doc: Document, lineCounter: LineCounter, path: ManifestPath): Position {
  let current: unknown = doc.contents;
  let anchor: Node | null = isNode(current) ? current : null;
  for (const segment of path) {
    if (isAlias(current)) current = current.resolve(doc);
    if (isMap(current)) {
      const pair = current.items.find((p) => keyText(p.key) === String(segment));
      if (pair === undefined) break;
      if (isNode(pair.key)) anchor = pair.key;
      current = pair.value;
    } else if (isSeq(current) && typeof segment === 'number') {
      const item = current.items[segment];
      if (!isNode(item)) break;
      anchor = item;
      current = item;
    } else {
      break;
    }
  }
  const offset = anchor?.range?.[0];
  if (offset === undefined) return { line: 1, col: 1 };
  return lineCounter.linePos(offset);
}

function isNode(value: unknown): value is Node {
  return typeof value === 'object' && value !== null && 'range' in value;
}

function keyText(key: unknown): string {
  if (isScalar(key)) return String(key.value);
  return String(key);
}
