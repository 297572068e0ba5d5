/**
 * Names of the events Berth logs (the `event` field of a log line). One list,
 * so docs, alerts and tests grep for the same words.
 */
export const Events = {
  nodeStarting: 'node.starting',
  nodeReady: 'node.ready',
  nodeStopping: 'node.stopping',
  nodeStopped: 'node.stopped',
  nodeReloading: 'node.reloading',
  nodeReloaded: 'node.reloaded',
  nodeReloadFailed: 'node.reload-failed',
  rolloutStarted: 'rollout.started',
  rolloutReplaced: 'rollout.replaced',
  rolloutDone: 'rollout.done',
  rolloutFailed: 'rollout.failed',
  instanceStarted: 'instance.started',
  instanceExited: 'instance.exited',
  instanceStatus: 'instance.status',
  instanceRestarting: 'instance.restarting',
  instanceFailed: 'instance.failed',
  instanceDraining: 'instance.draining',
  instanceStopped: 'instance.stopped',
  instanceSpawnFailed: 'instance.spawn-failed',
  instanceOutput: 'instance.output',
  adminListening: 'admin.listening',
  adminAudit: 'admin.audit',
  adminTokenCreated: 'admin.token-created',
  breakerOpened: 'breaker.opened',
  breakerHalfOpen: 'breaker.half-open',
  breakerClosed: 'breaker.closed',
  instanceEjected: 'instance.ejected',
  instanceReturned: 'instance.returned',
} as const;

export type EventName = (typeof Events)[keyof typeof Events];
