// payments/refunds: records refunds against a charge id and lists them per
// charge. The ledger lives in this instance's memory.
import { HttpError, json, newId, readJson, serve } from './lib/http.mjs';

/** @type {Map<string, { id: string, chargeId: string, amount: number, reason: string, created: string }>} */
const refunds = new Map();

serve({
  name: 'refunds',
  version: '1.0.0',
  routes: [
    [
      'POST',
      '/refunds',
      async ({ req, res }) => {
        const body = await readJson(req);
        const { chargeId, amount } = body ?? {};
        if (typeof chargeId !== 'string' || chargeId === '' || typeof amount !== 'number' || !(amount > 0)) {
          throw new HttpError(400, 'bad_request', 'expected {"chargeId": "ch_…", "amount": <positive number>, "reason"?: "…"}');
        }
        const refund = {
          id: newId('re'),
          chargeId,
          amount,
          reason: typeof body.reason === 'string' ? body.reason : 'requested_by_customer',
          created: new Date().toISOString(),
        };
        refunds.set(refund.id, refund);
        json(res, 201, refund);
      },
    ],
    [
      'GET',
      '/refunds',
      ({ res, query }) => {
        const chargeId = query.get('chargeId');
        const list = [...refunds.values()].filter((r) => chargeId === null || r.chargeId === chargeId);
        json(res, 200, { refunds: list, total: list.reduce((sum, r) => sum + r.amount, 0) });
      },
    ],
    [
      'GET',
      '/refunds/:id',
      ({ res, params }) => {
        const refund = refunds.get(params.id);
        if (!refund) throw new HttpError(404, 'not_found', `no refund ${params.id}`);
        json(res, 200, refund);
      },
    ],
  ],
});
