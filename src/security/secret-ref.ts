/**
 * Secrets the manifest names by reference (`{ env }` or `{ file }`), read
 * when the node starts. Errors name the variable or the file, never the value.
 */
import { readFile } from 'node:fs/promises';
import { BerthError } from '../errors.js';
import type { SecretRef } from '../manifest/types.js';

/** `environment variable X` or `file /path`: how an error names a secret. */
export function describeSecret(ref: SecretRef): string {
  return 'env' in ref ? `environment variable ${ref.env}` : `file ${ref.file}`;
}

/**
 * The bytes of a secret: an environment variable's value (UTF-8), or a
 * file's contents less a trailing line break (`echo secret > file` adds one
 * nobody means as part of the secret). An unset or empty one is an error.
 */
export async function readSecret(ref: SecretRef): Promise<Buffer> {
  if ('env' in ref) {
    const value = process.env[ref.env];
    if (value === undefined || value === '') throw new BerthError('BERTH_ERR_AUTH_CONFIG', `the ${describeSecret(ref)} is not set (or empty)`);
    return Buffer.from(value, 'utf8');
  }
  let bytes: Buffer;
  try {
    bytes = await readFile(ref.file);
  } catch (err) {
    throw new BerthError('BERTH_ERR_AUTH_CONFIG', `the ${describeSecret(ref)} cannot be read: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, { cause: err });
  }
  let end = bytes.length;
  if (end > 0 && bytes[end - 1] === 0x0a) end--;
  if (end > 0 && bytes[end - 1] === 0x0d) end--;
  if (end === 0) throw new BerthError('BERTH_ERR_AUTH_CONFIG', `the ${describeSecret(ref)} is empty`);
  return bytes.subarray(0, end);
}
