/**
 * Berth as a library (`import … from 'berth'`): run a node from code, read a
 * manifest, and the errors both raise. Services calling each other use
 * `berth/client` instead (docs/client.md).
 */
export { BerthNode, readNodeFile, type NodeInfo, type ReloadOutcome } from './node.js';
export { loadManifest, parseManifest, formatManifestError } from './manifest/load.js';
export type { NodeSpec, GroupSpec, ServiceSpec, VersionSpec, PolicySpec } from './manifest/types.js';
export { BerthError, ErrorCodes, isBerthError, type ErrorCode } from './errors.js';
