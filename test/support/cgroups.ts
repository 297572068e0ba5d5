import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { BerthProcess } from './node-process.js';

/**
 * The node's own cgroups that still exist (`berth/<node>-<hash of the data
 * dir>` in each hierarchy): none once the node has stopped, since Berth
 * removes them then.
 */
export async function nodeCgroupDirs(node: BerthProcess): Promise<string[]> {
  const name = node.logs.find((l) => l.event === 'node.starting')?.node;
  if (typeof name !== 'string' || node.dataDir === '') return [];
  const group = `${name}-${createHash('sha256').update(node.dataDir).digest('hex').slice(0, 8)}`;
  const roots = existsSync('/sys/fs/cgroup/cgroup.controllers') ? ['/sys/fs/cgroup'] : (await readdir('/sys/fs/cgroup')).map((c) => join('/sys/fs/cgroup', c));
  return roots.map((root) => join(root, 'berth', group)).filter((dir) => existsSync(dir));
}
