/**
 * What a reload would change: the difference between the manifest in force
 * and a new one, as data (`planChanges`) and as text (`formatPlan`), in the
 * spirit of `terraform plan` / `nomad job plan`. Pure: no I/O, no clock.
 */
import { relative, isAbsolute } from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import { formatDuration } from '../duration.js';
import type { EndpointSpec, GroupSpec, ListenSpec, NodeSpec, SecretRef, ServiceSpec, VersionSpec } from './types.js';

/**
 * The parts of a version an instance is started with. When one of them
 * changes, running instances cannot take it: they are replaced, one at a time.
 */
export const INSTANCE_FIELDS = ['command', 'cwd', 'env', 'secretEnv', 'isolation', 'health', 'restart', 'stop'] as const;
export type InstanceField = (typeof INSTANCE_FIELDS)[number];

export interface VersionRef {
  /** `group/service@version`. */
  key: string;
  group: string;
  service: string;
  version: string;
}

/** A version added or removed, with its number of instances. */
export interface VersionPlan extends VersionRef {
  replicas: number;
}

/** Only `replicas` differs: instances are started or stopped, the others are left alone. */
export interface ScalePlan extends VersionRef {
  from: number;
  to: number;
}

/** An instance field differs: every running instance is replaced by one started with the new spec. */
export interface ReplacePlan extends VersionRef {
  /** Which instance fields differ, in `INSTANCE_FIELDS` order. */
  fields: InstanceField[];
  /** Replicas before and after (equal unless the replica count changes too). */
  from: number;
  to: number;
}

export interface GroupPlan {
  group: string;
  endpoint: string;
}

export interface EndpointPlan {
  group: string;
  from: string;
  to: string;
}

export interface StablePlan {
  group: string;
  service: string;
  from: string;
  to: string;
}

/** A setting the gateway takes live: `gateway.listen`, a service's balancer or timeout… */
export interface SettingPlan {
  /** `gateway`, `group payments`, `payments/charges` or a version key. */
  target: string;
  field: string;
  from: string;
  to: string;
}

/** A node-level setting a running node cannot change (it needs a restart). */
export interface RestartPlan {
  field: string;
  from: string;
  to: string;
}

export interface Plan {
  added: VersionPlan[];
  removed: VersionPlan[];
  scaled: ScalePlan[];
  replaced: ReplacePlan[];
  groupsAdded: GroupPlan[];
  groupsRemoved: GroupPlan[];
  endpoints: EndpointPlan[];
  stable: StablePlan[];
  settings: SettingPlan[];
  /** Non-empty means a reload is refused: these need `berth up` to be restarted. */
  restartRequired: RestartPlan[];
}

/** Version fields that name it or are handled on their own (replicas → scale, stable → stable changes). */
const VERSION_OWN_FIELDS = new Set<string>(['key', 'group', 'service', 'version', 'stable', 'replicas', ...INSTANCE_FIELDS]);
const SERVICE_OWN_FIELDS = new Set<string>(['group', 'name', 'stable', 'versions', 'policies']);
const GROUP_OWN_FIELDS = new Set<string>(['name', 'services', 'endpoint']);
/**
 * Node fields a running node cannot change: its identity in the catalog, where
 * its store lives, the admin API's socket, the address every instance was
 * given, and the log level (the logger is built once, and `--log-level` wins).
 */
const RESTART_FIELDS = ['nodeName', 'dataDir', 'admin', 'instanceHost', 'logLevel'] as const;
/** Node fields that are not settings: the file is the one being reloaded; groups are compared one by one. */
const NODE_IGNORED_FIELDS = new Set<string>(['file', 'dir', 'groups', 'gateway', 'auth', ...RESTART_FIELDS]);

/** Which instance fields of a version differ between `a` and `b` (empty: running instances can stay). */
export function changedInstanceFields(a: VersionSpec, b: VersionSpec): InstanceField[] {
  return INSTANCE_FIELDS.filter((field) =>
    field === 'command'
      ? // `line` is for display: the same argv written differently starts the same process.
        !isDeepStrictEqual({ ...a.command, line: '' }, { ...b.command, line: '' })
      : !isDeepStrictEqual(a[field], b[field]),
  );
}

/** What applying `next` to a node running `current` would do. */
export function planChanges(current: NodeSpec, next: NodeSpec): Plan {
  const plan: Plan = {
    added: [],
    removed: [],
    scaled: [],
    replaced: [],
    groupsAdded: [],
    groupsRemoved: [],
    endpoints: [],
    stable: [],
    settings: [],
    restartRequired: [],
  };

  planNode(current, next, plan);

  const groupsBefore = new Map(current.groups.map((g) => [g.name, g]));
  const groupsAfter = new Map(next.groups.map((g) => [g.name, g]));
  for (const [name, group] of groupsBefore) {
    if (!groupsAfter.has(name)) plan.groupsRemoved.push({ group: name, endpoint: formatEndpoint(group.endpoint) });
  }
  for (const [name, group] of groupsAfter) {
    const before = groupsBefore.get(name);
    if (!before) {
      plan.groupsAdded.push({ group: name, endpoint: formatEndpoint(group.endpoint) });
      continue;
    }
    if (!isDeepStrictEqual(before.endpoint, group.endpoint)) {
      plan.endpoints.push({ group: name, from: formatEndpoint(before.endpoint), to: formatEndpoint(group.endpoint) });
    }
    plan.settings.push(...otherFields(`group ${name}`, before, group, GROUP_OWN_FIELDS));
    planServices(before, group, plan);
  }

  const versionsBefore = new Map(current.groups.flatMap((g) => g.services.flatMap((s) => s.versions)).map((v) => [v.key, v]));
  const versionsAfter = new Map(next.groups.flatMap((g) => g.services.flatMap((s) => s.versions)).map((v) => [v.key, v]));
  for (const [key, v] of versionsBefore) {
    if (!versionsAfter.has(key)) plan.removed.push({ ...ref(v), replicas: v.replicas });
  }
  for (const [key, v] of versionsAfter) {
    const before = versionsBefore.get(key);
    if (!before) {
      plan.added.push({ ...ref(v), replicas: v.replicas });
      continue;
    }
    const fields = changedInstanceFields(before, v);
    if (fields.length > 0) plan.replaced.push({ ...ref(v), fields, from: before.replicas, to: v.replicas });
    else if (before.replicas !== v.replicas) plan.scaled.push({ ...ref(v), from: before.replicas, to: v.replicas });
    plan.settings.push(...otherFields(key, before, v, VERSION_OWN_FIELDS));
  }

  const byKey = (a: { key: string }, b: { key: string }): number => a.key.localeCompare(b.key);
  plan.added.sort(byKey);
  plan.removed.sort(byKey);
  plan.scaled.sort(byKey);
  plan.replaced.sort(byKey);
  plan.groupsAdded.sort((a, b) => a.group.localeCompare(b.group));
  plan.groupsRemoved.sort((a, b) => a.group.localeCompare(b.group));
  plan.endpoints.sort((a, b) => a.group.localeCompare(b.group));
  plan.stable.sort((a, b) => a.group.localeCompare(b.group) || a.service.localeCompare(b.service));
  return plan;
}

function planNode(current: NodeSpec, next: NodeSpec, plan: Plan): void {
  for (const field of RESTART_FIELDS) {
    const from = current[field];
    const to = next[field];
    if (isDeepStrictEqual(from, to)) continue;
    if (field === 'admin') {
      plan.restartRequired.push({ field: 'admin.listen', from: formatListen(current.admin.listen), to: formatListen(next.admin.listen) });
    } else if (field === 'dataDir') {
      plan.restartRequired.push({ field, from: displayPath(current.dataDir, current.dir), to: displayPath(next.dataDir, next.dir) });
    } else {
      plan.restartRequired.push({ field, from: formatValue(field, from), to: formatValue(field, to) });
    }
  }
  // The gateway reconfigures itself from the new spec, its listener included.
  if (!isDeepStrictEqual(current.gateway.listen, next.gateway.listen)) {
    plan.settings.push({ target: 'gateway', field: 'listen', from: formatListen(current.gateway.listen), to: formatListen(next.gateway.listen) });
  }
  plan.settings.push(...otherFields('gateway', current.gateway, next.gateway, new Set(['listen'])));
  // JWT issuers are swapped live; the identity key is in every instance's environment, so it needs a restart.
  if (!isDeepStrictEqual(current.auth.jwt, next.auth.jwt)) {
    plan.settings.push({ target: 'auth', field: 'jwt', from: current.auth.jwt.map((i) => i.name).join(', ') || 'none', to: next.auth.jwt.map((i) => i.name).join(', ') || 'none' });
  }
  if (!isDeepStrictEqual(current.auth.identityKey, next.auth.identityKey)) {
    plan.restartRequired.push({ field: 'auth.identityKey', from: describeRef(current.auth.identityKey), to: describeRef(next.auth.identityKey) });
  }
  // A node-level setting this file does not know yet is assumed to need a restart: refusing is safe, ignoring is not.
  for (const field of unionKeys(current, next)) {
    if (NODE_IGNORED_FIELDS.has(field)) continue;
    const from = (current as unknown as Record<string, unknown>)[field];
    const to = (next as unknown as Record<string, unknown>)[field];
    if (!isDeepStrictEqual(from, to)) plan.restartRequired.push({ field, from: formatValue(field, from), to: formatValue(field, to) });
  }
}

function describeRef(ref: SecretRef | null): string {
  return ref === null ? 'generated' : 'env' in ref ? `env ${ref.env}` : `file ${ref.file}`;
}

function planServices(before: GroupSpec, after: GroupSpec, plan: Plan): void {
  const services = new Map(before.services.map((s) => [s.name, s]));
  for (const service of after.services) {
    const old = services.get(service.name);
    if (!old) continue;
    if (old.stable !== service.stable) plan.stable.push({ group: after.name, service: service.name, from: old.stable, to: service.stable });
    plan.settings.push(...otherFields(`${after.name}/${service.name}`, old, service, SERVICE_OWN_FIELDS));
    plan.settings.push(...policyChanges(`${after.name}/${service.name}`, old.policies, service.policies));
  }
}

/** Policy settings that differ, one line per leaf (`retries.attempts: 2 → 3`), a policy turned on or off as a whole. */
function policyChanges(target: string, a: unknown, b: unknown, path = ''): SettingPlan[] {
  if (isDeepStrictEqual(a, b)) return [];
  const bothMaps = a !== null && b !== null && typeof a === 'object' && typeof b === 'object' && !Array.isArray(a) && !Array.isArray(b);
  if (!bothMaps) {
    const leaf = path.split('.').pop() ?? path;
    const field = path.replace(/Ms(?=\.|$)/g, '');
    // A whole policy turned off or on reads as that, not as its settings.
    if (a === null || b === null) return [{ target, field, from: a === null ? 'off' : 'on', to: b === null ? 'off' : 'on' }];
    return [{ target, field, from: formatValue(leaf, a), to: formatValue(leaf, b) }];
  }
  const changes: SettingPlan[] = [];
  for (const key of unionKeys(a, b)) {
    changes.push(...policyChanges(target, (a as Record<string, unknown>)[key], (b as Record<string, unknown>)[key], path ? `${path}.${key}` : key));
  }
  return changes;
}

/** Every field of `a`/`b` not in `own` that differs: settings added to the manifest later are reported without touching this file. */
function otherFields<T extends object>(target: string, a: T, b: T, own: ReadonlySet<string>): SettingPlan[] {
  const changes: SettingPlan[] = [];
  for (const field of unionKeys(a, b)) {
    if (own.has(field)) continue;
    const from = (a as Record<string, unknown>)[field];
    const to = (b as Record<string, unknown>)[field];
    if (isDeepStrictEqual(from, to)) continue;
    const name = field.endsWith('Ms') ? field.slice(0, -2) : field;
    changes.push({ target, field: name, from: formatValue(field, from), to: formatValue(field, to) });
  }
  return changes;
}

function unionKeys(a: object, b: object): string[] {
  return [...new Set([...Object.keys(a), ...Object.keys(b)])].sort();
}

function ref(v: VersionSpec): VersionRef {
  return { key: v.key, group: v.group, service: v.service, version: v.version };
}

function formatValue(field: string, value: unknown): string {
  if (value === undefined) return '(none)';
  if (typeof value === 'number' && field.endsWith('Ms')) return formatDuration(value);
  if (typeof value === 'string') return value;
  return JSON.stringify(value);
}

export function formatEndpoint(endpoint: EndpointSpec): string {
  switch (endpoint.kind) {
    case 'path':
      return endpoint.prefix;
    case 'host':
      return `{ host: ${endpoint.host} }`;
    case 'port':
      return `{ port: ${endpoint.port} }`;
  }
}

function formatListen(listen: ListenSpec): string {
  return `${listen.host.includes(':') ? `[${listen.host}]` : listen.host}:${listen.port}`;
}

/** A path inside the manifest's folder as written there (`.berth`), any other as it is. */
function displayPath(path: string, dir: string): string {
  const rel = relative(dir, path);
  return rel !== '' && !rel.startsWith('..') && !isAbsolute(rel) ? rel : path;
}

/** True when applying the plan would change nothing. */
export function isEmptyPlan(plan: Plan): boolean {
  return Object.values(plan).every((list: unknown[]) => list.length === 0);
}

const instances = (n: number): string => `${n} instance${n === 1 ? '' : 's'}`;

/**
 * The plan as people read it, one change a line:
 *
 *     + group search  endpoint /search
 *     + payments/charges@3.0.0  2 instances
 *     - users/legacy@1.0.0  1 instance
 *     ~ payments/charges@1.0.0  replicas 3 → 5
 *     ~ payments/charges@2.0.0  replace 1 instance (command, env)
 *     ~ group payments  endpoint /payments → { host: pay.example.com }
 *     ~ payments/charges  stable 1.0.0 → 2.0.0
 *     ! dataDir .berth → /var/berth  (needs a restart)
 *
 * or `no changes`.
 */
export function formatPlan(plan: Plan): string {
  if (isEmptyPlan(plan)) return 'no changes';
  const lines: string[] = [];
  for (const g of plan.groupsAdded) lines.push(`+ group ${g.group}  endpoint ${g.endpoint}`);
  for (const g of plan.groupsRemoved) lines.push(`- group ${g.group}`);
  for (const e of plan.endpoints) lines.push(`~ group ${e.group}  endpoint ${e.from} → ${e.to}`);

  const versionLines: { key: string; order: number; text: string }[] = [
    ...plan.added.map((v) => ({ key: v.key, order: 0, text: `+ ${v.key}  ${instances(v.replicas)}` })),
    ...plan.removed.map((v) => ({ key: v.key, order: 1, text: `- ${v.key}  ${instances(v.replicas)}` })),
    ...plan.scaled.map((v) => ({ key: v.key, order: 2, text: `~ ${v.key}  replicas ${v.from} → ${v.to}` })),
    ...plan.replaced.map((v) => ({
      key: v.key,
      order: 3,
      text: `~ ${v.key}  replace ${instances(Math.min(v.from, v.to))} (${v.fields.join(', ')})${v.from === v.to ? '' : `, replicas ${v.from} → ${v.to}`}`,
    })),
  ];
  versionLines.sort((a, b) => a.key.localeCompare(b.key) || a.order - b.order);
  lines.push(...versionLines.map((l) => l.text));

  for (const s of plan.stable) lines.push(`~ ${s.group}/${s.service}  stable ${s.from} → ${s.to}`);
  for (const s of plan.settings) lines.push(`~ ${s.target}  ${s.field} ${s.from} → ${s.to}`);
  for (const r of plan.restartRequired) lines.push(`! ${r.field} ${r.from} → ${r.to}  (needs a restart)`);
  return lines.join('\n');
}

/** Counts for logs and summaries. */
export function planCounts(plan: Plan): Record<'added' | 'removed' | 'scaled' | 'replaced' | 'restartRequired', number> {
  return {
    added: plan.added.length,
    removed: plan.removed.length,
    scaled: plan.scaled.length,
    replaced: plan.replaced.length,
    restartRequired: plan.restartRequired.length,
  };
}

/**
 * `next`, except that the versions named in `keys` keep their spec from
 * `current`: what a node runs after the rollouts of those versions failed.
 * A later reload then plans their replacement again instead of hiding it.
 */
export function keepVersions(next: NodeSpec, current: NodeSpec, keys: ReadonlySet<string>): NodeSpec {
  if (keys.size === 0) return next;
  const old = new Map(current.groups.flatMap((g) => g.services.flatMap((s) => s.versions)).map((v) => [v.key, v]));
  const service = (s: ServiceSpec): ServiceSpec => ({
    ...s,
    versions: s.versions.map((v) => {
      const kept = keys.has(v.key) ? old.get(v.key) : undefined;
      return kept ? { ...kept, stable: v.stable } : v;
    }),
  });
  return { ...next, groups: next.groups.map((g) => ({ ...g, services: g.services.map(service) })) };
}
