/**
 * The admin API's audit log: one JSON line per mutating call (POST, PUT,
 * PATCH, DELETE), allowed or refused, appended to `<dataDir>/audit.log` and
 * logged as the event `admin.audit`. Who (token id, name, role, or
 * anonymous), what (method, route, params, the request body with secret-like
 * fields masked), when, and the result (status, error code). Never a token's
 * secret: the authorization header is not recorded, and no response body is.
 */
import { createWriteStream, type WriteStream } from 'node:fs';
import { open } from 'node:fs/promises';
import { once } from 'node:events';
import { join } from 'node:path';
import type { Logger } from '../telemetry/logger.js';
import { Events } from '../telemetry/events.js';
import type { Role } from './tokens.js';

export const AUDIT_FILE = 'audit.log';

export interface AuditEntry {
  time: string;
  requestId: string;
  /** Who: the name of the token that made the call, or `anonymous` for a call without a known one. */
  actor: string;
  /** The id of that token; null when anonymous. (Not `tokenId`: the log's redaction takes names with "token" for secrets.) */
  actorId: string | null;
  /** The role of that token; null when anonymous. */
  role: Role | null;
  method: string;
  /** The route as declared (`/v1/registrations/:id`), or the path asked for when no route matched. */
  route: string;
  params: Record<string, string>;
  /** The request body, secret-like fields masked; absent when there was none. */
  body?: unknown;
  status: number;
  /** The error code of a refused or failed call. */
  code?: string;
}

/** What the admin API needs of an audit log. */
export interface AuditSink {
  record(entry: AuditEntry): void;
  /** The last `limit` entries, oldest first. */
  tail(limit: number): Promise<AuditEntry[]>;
}

/** Field names whose values are never written: a body may carry credentials some day. */
const SECRET_FIELD = /secret|token|password|passwd|credential|authorization|api[-_]?key|private/i;
const MASK = '[redacted]';

/** A copy of `value` with every secret-like field masked, at any depth. */
export function maskSecrets(value: unknown, depth = 0): unknown {
  if (depth > 8) return MASK;
  if (Array.isArray(value)) return value.map((v) => maskSecrets(v, depth + 1));
  if (typeof value !== 'object' || value === null) return value;
  const out: Record<string, unknown> = {};
  for (const [key, v] of Object.entries(value)) out[key] = SECRET_FIELD.test(key) ? MASK : maskSecrets(v, depth + 1);
  return out;
}

/** Bytes read from the end of the file per step while looking for the last lines. */
const TAIL_CHUNK = 64 * 1024;

/** The audit log of one node: a file in its data dir, and its log. */
export class AuditLog implements AuditSink {
  readonly path: string;
  readonly #logger: Logger;
  readonly #stream: WriteStream;
  /** Settles when everything recorded so far is in the file. */
  #written: Promise<void> = Promise.resolve();
  #closed = false;

  private constructor(path: string, logger: Logger, stream: WriteStream) {
    this.path = path;
    this.#logger = logger;
    this.#stream = stream;
  }

  /** Opens `<dataDir>/audit.log` for appending (created with mode 0600: it names tokens and who used them). */
  static async open(dataDir: string, logger: Logger): Promise<AuditLog> {
    const path = join(dataDir, AUDIT_FILE);
    const stream = createWriteStream(path, { flags: 'a', mode: 0o600 });
    await once(stream, 'open');
    const log = new AuditLog(path, logger, stream);
    stream.on('error', (err) => logger.error({ err, file: path }, `cannot write the audit log ${path}`));
    return log;
  }

  record(entry: AuditEntry): void {
    const who = entry.actorId === null ? 'anonymous' : `${entry.actor} (${entry.role ?? '?'}, ${entry.actorId})`;
    this.#logger.info({ event: Events.adminAudit, ...entry }, `${entry.method} ${entry.route} → ${entry.status} by ${who}`);
    if (this.#closed) return;
    const line = `${JSON.stringify(entry)}\n`;
    const previous = this.#written;
    const written = new Promise<void>((resolve) => this.#stream.write(line, () => resolve()));
    this.#written = previous.then(() => written);
  }

  async tail(limit: number): Promise<AuditEntry[]> {
    await this.#written;
    return readTail(this.path, limit);
  }

  /** Writes what is pending and closes the file. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#written;
    await new Promise<void>((resolve) => this.#stream.end(() => resolve()));
  }
}

/** The last `limit` JSON lines of `path`, oldest first; lines that are not JSON (a torn write) are skipped. */
export async function readTail(path: string, limit: number): Promise<AuditEntry[]> {
  if (limit <= 0) return [];
  let handle;
  try {
    handle = await open(path, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  try {
    const { size } = await handle.stat();
    let position = size;
    const chunks: Buffer[] = [];
    let newlines = 0;
    // Read backwards until more than `limit` line breaks are in hand, or the file is read whole.
    while (position > 0 && newlines <= limit) {
      const length = Math.min(TAIL_CHUNK, position);
      position -= length;
      const buffer = Buffer.alloc(length);
      await handle.read(buffer, 0, length, position);
      chunks.unshift(buffer);
      newlines += countNewlines(buffer);
    }
    // Decoded once, whole: a chunk boundary may fall inside a multi-byte character.
    const text = Buffer.concat(chunks).toString('utf8');
    const lines = text.split('\n').filter((l) => l.trim() !== '');
    // Unless the whole file was read, the first line may be cut: drop it.
    const whole = position === 0 ? lines : lines.slice(1);
    const entries: AuditEntry[] = [];
    for (const line of whole.slice(-limit)) {
      try {
        entries.push(JSON.parse(line) as AuditEntry);
      } catch {
        // A line torn by a crash mid-write: not an entry.
      }
    }
    return entries;
  } finally {
    await handle.close();
  }
}

function countNewlines(buffer: Buffer): number {
  let n = 0;
  for (let i = buffer.indexOf(0x0a); i !== -1; i = buffer.indexOf(0x0a, i + 1)) n++;
  return n;
}
