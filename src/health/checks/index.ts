import type { CheckSpec } from '../../manifest/types.js';
import type { Check } from '../types.js';
import { CommandCheck } from './command.js';
import { HttpCheck, type ConnectOptions } from './http.js';
import { TcpCheck } from './tcp.js';

export { CommandCheck } from './command.js';
export { HttpCheck, closeHttpChecks, type ConnectOptions } from './http.js';
export { TcpCheck, describeError } from './tcp.js';

/**
 * The check a manifest asks for; undefined for `none` (the instance is passing
 * once it runs). `tls`: an HTTP check probes over HTTPS with these settings.
 */
export function createCheck(spec: CheckSpec, tls?: ConnectOptions): Check | undefined {
  switch (spec.kind) {
    case 'http':
      return new HttpCheck(spec, tls);
    case 'tcp':
      return new TcpCheck(spec);
    case 'command':
      return new CommandCheck(spec);
    case 'none':
      return undefined;
  }
}
