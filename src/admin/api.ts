import Fastify, { type FastifyInstance } from 'fastify';
import type { Catalog } from '../catalog/catalog.js';
import { INSTANCE_STATUSES, type InstanceStatus } from '../catalog/types.js';
import { BerthError, isBerthError } from '../errors.js';
import type { ListenSpec, NodeSpec } from '../manifest/types.js';
import type { Logger } from '../telemetry/logger.js';
import type { NodeInfo } from '../node.js';

export interface AdminDeps {
  listen: ListenSpec;
  catalog: Catalog;
  logger: Logger;
  /** The manifest in force (it changes on reload). */
  spec: () => NodeSpec;
  node: () => NodeInfo | undefined;
}

export interface AdminServer {
  url: string;
  close(): Promise<void>;
}

export interface ServiceSummary {
  group: string;
  service: string;
  stable: string | null;
  versions: string[];
  instances: number;
  passing: number;
}

/** The admin API: REST over the catalog. Read-only in this release. */
export function buildAdminApi(deps: AdminDeps): FastifyInstance {
  const app = Fastify({ logger: false, return503OnClosing: true, forceCloseConnections: 'idle' });

  app.setErrorHandler((err, _request, reply) => {
    if (isBerthError(err)) return reply.status(err.status).send(err.toJSON());
    const status = (err as { statusCode?: number }).statusCode;
    if (status && status >= 400 && status < 500) {
      return reply.status(status).send({ code: 'BERTH_ERR_BAD_REQUEST', message: (err as Error).message });
    }
    deps.logger.error({ err }, 'admin API error');
    return reply.status(500).send(new BerthError('BERTH_ERR_INTERNAL', 'internal error; see the node log').toJSON());
  });
  app.setNotFoundHandler((request, reply) =>
    reply.status(404).send(new BerthError('BERTH_ERR_NOT_FOUND', `no route ${request.method} ${request.url}`).toJSON()),
  );

  app.get('/healthz', () => ({ status: 'ok', node: deps.node()?.name ?? null }));

  app.get('/v1/node', () => deps.node() ?? null);

  app.get('/v1/services', (): ServiceSummary[] => serviceSummaries(deps.spec(), deps.catalog));

  app.get<{ Querystring: { status?: string } }>('/v1/instances', (request) => {
    const statuses = parseStatuses(request.query.status);
    return deps.catalog.list(statuses ? { statuses } : {});
  });

  app.get<{ Params: { service: string }; Querystring: { status?: string } }>('/v1/services/:service/instances', (request) => {
    const { service } = request.params;
    if (!serviceSummaries(deps.spec(), deps.catalog).some((s) => s.service === service)) {
      throw new BerthError('BERTH_ERR_NOT_FOUND', `no service named "${service}"`);
    }
    const statuses = parseStatuses(request.query.status);
    return deps.catalog.list(statuses ? { service, statuses } : { service });
  });

  return app;
}

export async function startAdminServer(deps: AdminDeps): Promise<AdminServer> {
  const app = buildAdminApi(deps);
  try {
    await app.listen({ host: deps.listen.host, port: deps.listen.port });
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new BerthError('BERTH_ERR_LISTEN', `admin API cannot listen on ${deps.listen.host}:${deps.listen.port}: ${e.code ?? e.message}`, { cause: err });
  }
  const address = app.server.address();
  const port = typeof address === 'object' && address ? address.port : deps.listen.port;
  const host = deps.listen.host.includes(':') ? `[${deps.listen.host}]` : deps.listen.host;
  return { url: `http://${host}:${port}`, close: () => app.close() };
}

/** Services declared in the manifest, plus any the catalog knows of (e.g. registered from outside). */
export function serviceSummaries(spec: NodeSpec, catalog: Catalog): ServiceSummary[] {
  const byName = new Map<string, ServiceSummary>();
  for (const group of spec.groups) {
    for (const service of group.services) {
      byName.set(service.name, {
        group: group.name,
        service: service.name,
        stable: service.stable,
        versions: service.versions.map((v) => v.version),
        instances: 0,
        passing: 0,
      });
    }
  }
  for (const record of catalog.list()) {
    if (record.status === 'stopped') continue;
    let summary = byName.get(record.service);
    if (!summary) {
      summary = { group: record.group, service: record.service, stable: null, versions: [], instances: 0, passing: 0 };
      byName.set(record.service, summary);
    }
    if (!summary.versions.includes(record.version)) summary.versions.push(record.version);
    summary.instances++;
    if (record.status === 'passing') summary.passing++;
  }
  return [...byName.values()].sort((a, b) => a.group.localeCompare(b.group) || a.service.localeCompare(b.service));
}

function parseStatuses(text: string | undefined): InstanceStatus[] | undefined {
  if (!text) return undefined;
  const statuses = text.split(',').map((s) => s.trim());
  const bad = statuses.filter((s) => !(INSTANCE_STATUSES as readonly string[]).includes(s));
  if (bad.length > 0) {
    throw new BerthError('BERTH_ERR_BAD_REQUEST', `unknown status ${bad.map((b) => `"${b}"`).join(', ')}`, {
      details: [{ where: 'query.status', message: `expected a comma-separated list of ${INSTANCE_STATUSES.join(' | ')}` }],
    });
  }
  return statuses as InstanceStatus[];
}
