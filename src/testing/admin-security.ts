import { pino } from 'pino';
import type { AdminSecurity } from '../admin/api.js';
import { AuditLog } from '../admin/audit.js';
import { AdminTokens, type Role } from '../admin/tokens.js';
import type { Store } from '../catalog/store.js';
import { ApiKeys } from '../security/api-keys.js';
import type { Clock } from '../clock.js';
import type { Logger } from '../telemetry/logger.js';

/** The admin API's security for a test: tokens and API keys in `store`, the audit log in `dir`, and one token per role. */
export interface TestSecurity {
  security: AdminSecurity;
  tokens: AdminTokens;
  apiKeys: ApiKeys;
  audit: AuditLog;
  /** A secret per role. */
  secrets: Record<Role, string>;
  close(): Promise<void>;
}

export async function testSecurity(store: Store, dir: string, options: { logger?: Logger; clock?: Clock } = {}): Promise<TestSecurity> {
  const tokens = await AdminTokens.open(store, options.clock ? { clock: options.clock } : {});
  const apiKeys = await ApiKeys.open(store, options.clock ? { clock: options.clock } : {});
  const audit = await AuditLog.open(dir, options.logger ?? pino({ level: 'silent' }));
  const secrets = {
    viewer: (await tokens.create('test-viewer', 'viewer')).secret,
    operator: (await tokens.create('test-operator', 'operator')).secret,
    admin: (await tokens.create('test-admin', 'admin')).secret,
  };
  return {
    security: { tokens, apiKeys, audit },
    tokens,
    apiKeys,
    audit,
    secrets,
    close: async () => {
      await audit.close();
      await apiKeys.close();
      await tokens.close();
    },
  };
}
