import { isBerthError } from '../../errors.js';
import type { ApiKeyInfo } from '../../security/api-keys.js';
import { ExitCode } from '../exit-codes.js';
import { connect, type NodeOptions } from '../node-address.js';
import { renderTable } from '../table.js';

export interface ApiKeyOptions extends NodeOptions {
  json?: boolean;
}

export interface ApiKeyCreateOptions extends ApiKeyOptions {
  name: string;
  groups: string[];
  subject?: string;
  roles?: string[];
  scopes?: string[];
}

/** `2024-05-01T12:03:44.123Z` → `2024-05-01 12:03` (UTC), as `berth token list` shows times. */
function when(iso: string | undefined): string {
  return iso === undefined ? '-' : `${iso.slice(0, 10)} ${iso.slice(11, 16)}`;
}

const listed = (items: readonly string[]): string => (items.length === 0 ? '-' : items.join(','));

/**
 * `berth apikey create NAME --group G…`: a new API key for the services of
 * those groups. The secret goes to stdout alone (`KEY=$(berth apikey create …)`
 * keeps just it); what it is goes to stderr. It is shown this once: the node
 * keeps its hash only.
 */
export async function apiKeyCreate(options: ApiKeyCreateOptions, out: NodeJS.WritableStream, err: NodeJS.WritableStream): Promise<ExitCode> {
  const client = await connect(options);
  try {
    const body = {
      name: options.name,
      groups: options.groups,
      ...(options.subject === undefined ? {} : { subject: options.subject }),
      ...(options.roles === undefined || options.roles.length === 0 ? {} : { roles: options.roles }),
      ...(options.scopes === undefined || options.scopes.length === 0 ? {} : { scopes: options.scopes }),
    };
    const created = await client.post<ApiKeyInfo & { secret: string }>('/v1/apikeys', body);
    if (options.json) {
      out.write(`${JSON.stringify(created, null, 2)}\n`);
    } else {
      err.write(`created API key "${created.name}" for ${created.groups.map((g) => (g === '*' ? 'every group' : `group ${g}`)).join(', ')}, id ${created.id}; its secret is below, shown this once: keep it now, send it as x-api-key\n`);
      out.write(`${created.secret}\n`);
    }
    return ExitCode.OK;
  } finally {
    await client.close();
  }
}

/** `berth apikey list`: every API key of the node, without secrets. */
export async function apiKeyList(options: ApiKeyOptions, out: NodeJS.WritableStream): Promise<ExitCode> {
  const client = await connect(options);
  try {
    const keys = await client.get<ApiKeyInfo[]>('/v1/apikeys');
    if (options.json) {
      out.write(`${JSON.stringify(keys, null, 2)}\n`);
    } else {
      const rows = keys.map((k) => [k.id, k.name, listed(k.groups), k.subject, listed(k.roles), listed(k.scopes), when(k.createdAt), when(k.lastUsedAt)]);
      const columns = ['id', 'name', 'groups', 'subject', 'roles', 'scopes', 'created', 'last used'].map((header) => ({ header }));
      out.write(`${renderTable(columns, rows)}\n`);
    }
    return ExitCode.OK;
  } finally {
    await client.close();
  }
}

/** `berth apikey revoke ID`: the gateway refuses the key from now on. Exit NOT_FOUND for an unknown id. */
export async function apiKeyRevoke(options: ApiKeyOptions & { id: string }, out: NodeJS.WritableStream, err: NodeJS.WritableStream): Promise<ExitCode> {
  const client = await connect(options);
  try {
    await client.delete(`/v1/apikeys/${encodeURIComponent(options.id)}`);
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
