import type { Role, TokenInfo } from '../../admin/tokens.js';
import type { ExitCode } from '../exit-codes.js';
import { createSecret, listSecrets, revokeSecret, when, type SecretCommandOptions } from '../secret-commands.js';

export type TokenOptions = SecretCommandOptions;

/**
 * `berth token create --name N --role R`: a new token of the node. The
 * secret goes to stdout alone (`TOKEN=$(berth token create …)` keeps just
 * it); what it is goes to stderr. It is shown this once: the node keeps its
 * hash only.
 */
export function tokenCreate(options: TokenOptions & { name: string; role: Role }, out: NodeJS.WritableStream, err: NodeJS.WritableStream): Promise<ExitCode> {
  return createSecret(options, out, err, '/v1/tokens', { name: options.name, role: options.role }, (created: TokenInfo & { token: string }) => ({
    secret: created.token,
    note: `created token "${created.name}" (${created.role}), id ${created.id}; its secret is below, shown this once: keep it now`,
  }));
}

/** `berth token list`: every token of the node, without secrets. */
export function tokenList(options: TokenOptions, out: NodeJS.WritableStream): Promise<ExitCode> {
  return listSecrets(options, out, '/v1/tokens', ['id', 'name', 'role', 'created', 'last used'], (t: TokenInfo) => [t.id, t.name, t.role, when(t.createdAt), when(t.lastUsedAt)]);
}

/** `berth token revoke ID`: the token is refused from now on. Exit NOT_FOUND for an unknown id. */
export function tokenRevoke(options: TokenOptions & { id: string }, out: NodeJS.WritableStream, err: NodeJS.WritableStream): Promise<ExitCode> {
  return revokeSecret(options, out, err, '/v1/tokens');
}
