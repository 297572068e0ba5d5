import { readFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { parse } from 'yaml';
import { ADMIN_TOKEN_FILE, readTokenFile } from '../admin/tokens.js';
import { loadManifest } from '../manifest/load.js';
import { readNodeFile } from '../node.js';
import { AdminClient, type AdminClientOptions } from './admin-client.js';

const DEFAULT_ADMIN = 'http://127.0.0.1:8081';

/** How a command names its node: the manifest, and optionally the admin address and a token. */
export interface NodeOptions {
  file: string;
  admin?: string;
  token?: string;
}

/** Where a node's admin API is, and the token to call it with. */
export interface NodeTarget {
  url: string;
  token?: string;
  /** Where the token came from (`--token`, `BERTH_TOKEN`, or the token file's path), for error messages. */
  tokenFrom?: string;
}

/**
 * Where the node's admin API is: --admin, else $BERTH_ADMIN, else the node
 * file in the manifest's data dir (right even when the manifest says port 0,
 * and found even when the manifest is broken: only its `dataDir` is read, so a
 * reload of a broken file still reaches the node, which answers with every
 * problem), else the manifest's admin.listen, else the default address.
 *
 * And the token: --token, else $BERTH_TOKEN, else the `admin-token` file the
 * node wrote into its data dir, but only when the address is the one that
 * node file gives, so a local admin token is never sent to another node.
 */
export async function nodeTarget(options: NodeOptions): Promise<NodeTarget> {
  const file = resolve(options.file);
  const dataDir = resolve(dirname(file), await dataDirOf(file));
  const running = await readNodeFile(dataDir);
  const url = options.admin || process.env.BERTH_ADMIN || running?.admin || (await listenOf(file));
  if (options.token) return { url, token: options.token, tokenFrom: '--token' };
  if (process.env.BERTH_TOKEN) return { url, token: process.env.BERTH_TOKEN, tokenFrom: 'BERTH_TOKEN' };
  if (running !== undefined && sameAddress(url, running.admin)) {
    const token = await readTokenFile(running.dataDir);
    if (token !== undefined) return { url, token, tokenFrom: join(running.dataDir, ADMIN_TOKEN_FILE) };
  }
  return { url };
}

/** The admin address alone (see nodeTarget). */
export async function adminUrl(options: NodeOptions): Promise<string> {
  return (await nodeTarget(options)).url;
}

/** A client of the node `options` names, with its token. */
export async function connect(options: NodeOptions, clientOptions: Omit<AdminClientOptions, 'token'> = {}): Promise<AdminClient> {
  const target = await nodeTarget(options);
  return new AdminClient(target.url, { ...clientOptions, ...(target.token === undefined ? {} : { token: target.token, tokenFrom: target.tokenFrom }) });
}

/** The manifest's `dataDir` as written (default `.berth`); the file need not be valid, nor exist. */
async function dataDirOf(file: string): Promise<string> {
  try {
    const raw = parse(await readFile(file, 'utf8'), { logLevel: 'silent' }) as { dataDir?: unknown } | null;
    if (raw !== null && typeof raw === 'object' && typeof raw.dataDir === 'string') return raw.dataDir;
  } catch {
    // Not YAML, or no file: the default data dir.
  }
  return '.berth';
}

async function listenOf(file: string): Promise<string> {
  try {
    const { host, port } = (await loadManifest(file)).admin.listen;
    return `http://${host.includes(':') ? `[${host}]` : host}:${port}`;
  } catch {
    return DEFAULT_ADMIN;
  }
}

function sameAddress(a: string, b: string): boolean {
  const origin = (text: string): string | undefined => {
    try {
      return new URL(/^[a-z][a-z0-9+.-]*:\/\//i.test(text) ? text : `http://${text}`).origin;
    } catch {
      return undefined;
    }
  };
  const left = origin(a);
  return left !== undefined && left === origin(b);
}
