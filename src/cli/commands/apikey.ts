import type { ApiKeyInfo } from '../../security/api-keys.js';
import type { ExitCode } from '../exit-codes.js';
import { createSecret, listSecrets, revokeSecret, when, type SecretCommandOptions } from '../secret-commands.js';

export type ApiKeyOptions = SecretCommandOptions;

export interface ApiKeyCreateOptions extends ApiKeyOptions {
  name: string;
  groups: string[];
  subject?: string;
  roles?: string[];
  scopes?: string[];
}

const listed = (items: readonly string[]): string => (items.length === 0 ? '-' : items.join(','));

/**
 * `berth apikey create NAME --group G…`: a new API key for the services of
 * those groups. The secret goes to stdout alone (`KEY=$(berth apikey create …)`
 * keeps just it); what it is goes to stderr. It is shown this once: the node
 * keeps its hash only.
 */
export function apiKeyCreate(options: ApiKeyCreateOptions, out: NodeJS.WritableStream, err: NodeJS.WritableStream): Promise<ExitCode> {
  const body = {
    name: options.name,
    groups: options.groups,
    ...(options.subject === undefined ? {} : { subject: options.subject }),
    ...(options.roles === undefined || options.roles.length === 0 ? {} : { roles: options.roles }),
    ...(options.scopes === undefined || options.scopes.length === 0 ? {} : { scopes: options.scopes }),
  };
  return createSecret(options, out, err, '/v1/apikeys', body, (created: ApiKeyInfo & { secret: string }) => ({
    secret: created.secret,
    note: `created API key "${created.name}" for ${created.groups.map((g) => (g === '*' ? 'every group' : `group ${g}`)).join(', ')}, id ${created.id}; its secret is below, shown this once: keep it now, send it as x-api-key`,
  }));
}

/** `berth apikey list`: every API key of the node, without secrets. */
export function apiKeyList(options: ApiKeyOptions, out: NodeJS.WritableStream): Promise<ExitCode> {
  const headers = ['id', 'name', 'groups', 'subject', 'roles', 'scopes', 'created', 'last used'];
  return listSecrets(options, out, '/v1/apikeys', headers, (k: ApiKeyInfo) => [k.id, k.name, listed(k.groups), k.subject, listed(k.roles), listed(k.scopes), when(k.createdAt), when(k.lastUsedAt)]);
}

/** `berth apikey revoke ID`: the gateway refuses the key from now on. Exit NOT_FOUND for an unknown id. */
export function apiKeyRevoke(options: ApiKeyOptions & { id: string }, out: NodeJS.WritableStream, err: NodeJS.WritableStream): Promise<ExitCode> {
  return revokeSecret(options, out, err, '/v1/apikeys');
}
