/**
 * `berth/client`: what a Node service uses to call the other services of its
 * Berth node with the gateway's policies, and to answer its health checks.
 * docs/client.md.
 */
export { BerthClient, createClient, type ClientOptions, type ClientResponse, type RequestOptions } from './client.js';
export { fromRequest, type CallContext } from './context.js';
export type { DiscoveredInstance } from './discovery.js';
export { healthHandler, type HealthOptions, type HealthStatus } from './health.js';
export { verifyIdentity, type Identity, type IdentityCheck, type VerifyIdentityOptions } from './identity.js';
export type { ClientBalancer, ClientPolicies } from './policies.js';
export { BerthError, isBerthError, type ErrorCode } from '../errors.js';
