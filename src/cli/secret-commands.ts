/**
 * What `berth token` and `berth apikey` share: the node keeps both as records
 * of a secret (src/security/stored-secrets.ts) under an admin API collection
 * (`/v1/tokens`, `/v1/apikeys`) and the three commands read the same way.
 */
import { isBerthError } from '../errors.js';
import { ExitCode } from './exit-codes.js';
import { connect, type NodeOptions } from './node-address.js';
import { renderTable } from './table.js';

export interface SecretCommandOptions extends NodeOptions {
  json?: boolean;
}

/** What `create` prints of a new record when not asked for JSON. */
export interface CreatedSecret {
  /** Alone on stdout. */
  secret: string;
  /** On stderr: what was created. */
  note: string;
}

/** `2024-05-01T12:03:44.123Z` → `2024-05-01 12:03` (UTC): enough to tell records apart, short enough for a table. */
export function when(iso: string | undefined): string {
  return iso === undefined ? '-' : `${iso.slice(0, 10)} ${iso.slice(11, 16)}`;
}

/**
 * Posts `body` to `collection`. The secret goes to stdout alone
 * (`X=$(berth … create …)` keeps just it); what it is goes to stderr. With
 * `--json`, the node's answer, whole, on stdout.
 */
export async function createSecret<T>(
  options: SecretCommandOptions,
  out: NodeJS.WritableStream,
  err: NodeJS.WritableStream,
  collection: string,
  body: object,
  shown: (created: T) => CreatedSecret,
): Promise<ExitCode> {
  const client = await connect(options);
  try {
    const created = await client.post<T>(collection, body);
    if (options.json) {
      out.write(`${JSON.stringify(created, null, 2)}\n`);
    } else {
      const { secret, note } = shown(created);
      err.write(`${note}\n`);
      out.write(`${secret}\n`);
    }
    return ExitCode.OK;
  } finally {
    await client.close();
  }
}

/** Lists `collection`: the node's answer with `--json`, else a table of `headers` with `row` of each record. */
export async function listSecrets<T>(options: SecretCommandOptions, out: NodeJS.WritableStream, collection: string, headers: readonly string[], row: (record: T) => string[]): Promise<ExitCode> {
  const client = await connect(options);
  try {
    const records = await client.get<T[]>(collection);
    if (options.json) {
      out.write(`${JSON.stringify(records, null, 2)}\n`);
    } else {
      out.write(`${renderTable(headers.map((header) => ({ header })), records.map(row))}\n`);
    }
    return ExitCode.OK;
  } finally {
    await client.close();
  }
}

/** Deletes `<collection>/<id>`. Exit NOT_FOUND, with the node's message, for an unknown id. */
export async function revokeSecret(options: SecretCommandOptions & { id: string }, out: NodeJS.WritableStream, err: NodeJS.WritableStream, collection: string): Promise<ExitCode> {
  const client = await connect(options);
  try {
    await client.delete(`${collection}/${encodeURIComponent(options.id)}`);
    out.write(options.json ? `${JSON.stringify({ revoked: true, id: options.id })}\n` : `revoked ${options.id}\n`);
    return ExitCode.OK;
  } catch (e) {
    if (!isBerthError(e, 'BERTH_ERR_NOT_FOUND')) throw e;
    if (options.json) out.write(`${JSON.stringify({ revoked: false, id: options.id, code: e.code, message: e.message })}\n`);
    else err.write(`berth: ${e.message}\n`);
    return ExitCode.NOT_FOUND;
  } finally {
    await client.close();
  }
}
