import { isBerthError } from '../../errors.js';
import type { Role, TokenInfo } from '../../admin/tokens.js';
import { ExitCode } from '../exit-codes.js';
import { connect, type NodeOptions } from '../node-address.js';
import { renderTable } from '../table.js';

export interface TokenOptions extends NodeOptions {
  json?: boolean;
}

/** `2024-05-01T12:03:44.123Z` → `2024-05-01 12:03` (UTC): enough to tell tokens apart, short enough for a table. */
function when(iso: string | undefined): string {
  return iso === undefined ? '-' : `${iso.slice(0, 10)} ${iso.slice(11, 16)}`;
}

/**
 * `berth token create --name N --role R`: a new token of the node. The
 * secret goes to stdout alone (`TOKEN=$(berth token create …)` keeps just
 * it); what it is goes to stderr. It is shown this once: the node keeps its
 * hash only.
 */
export async function tokenCreate(options: TokenOptions & { name: string; role: Role }, out: NodeJS.WritableStream, err: NodeJS.WritableStream): Promise<ExitCode> {
  const client = await connect(options);
  try {
    const created = await client.post<TokenInfo & { token: string }>('/v1/tokens', { name: options.name, role: options.role });
    if (options.json) {
      out.write(`${JSON.stringify(created, null, 2)}\n`);
    } else {
      err.write(`created token "${created.name}" (${created.role}), id ${created.id}; its secret is below, shown this once: keep it now\n`);
      out.write(`${created.token}\n`);
    }
    return ExitCode.OK;
  } finally {
    await client.close();
  }
}

/** `berth token list`: every token of the node, without secrets. */
export async function tokenList(options: TokenOptions, out: NodeJS.WritableStream): Promise<ExitCode> {
  const client = await connect(options);
  try {
    const tokens = await client.get<TokenInfo[]>('/v1/tokens');
    if (options.json) {
      out.write(`${JSON.stringify(tokens, null, 2)}\n`);
    } else {
      const rows = tokens.map((t) => [t.id, t.name, t.role, when(t.createdAt), when(t.lastUsedAt)]);
      out.write(`${renderTable([{ header: 'id' }, { header: 'name' }, { header: 'role' }, { header: 'created' }, { header: 'last used' }], rows)}\n`);
    }
    return ExitCode.OK;
  } finally {
    await client.close();
  }
}

/** `berth token revoke ID`: the token is refused from now on. Exit NOT_FOUND for an unknown id. */
export async function tokenRevoke(options: TokenOptions & { id: string }, out: NodeJS.WritableStream, err: NodeJS.WritableStream): Promise<ExitCode> {
  const client = await connect(options);
  try {
    await client.delete(`/v1/tokens/${encodeURIComponent(options.id)}`);
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
