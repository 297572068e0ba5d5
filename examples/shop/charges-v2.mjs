// payments/charges v2: same resource as v1, new shape. Amounts are integer
// minor units (cents) with an ISO 4217 currency, and every answer says
// `apiVersion: 2` so a client can tell which version the gateway picked. As
// in v1, a bearer token makes the charge its user's (auth/tokens tells whose).
import { bearerUser } from './lib/calls.mjs';
import { HttpError, json, newId, readJson, serve } from './lib/http.mjs';

const CURRENCIES = new Set(['EUR', 'USD', 'GBP', 'CHF', 'JPY']);
const DEFAULT_CURRENCY = process.env.CHARGES_CURRENCY ?? 'EUR';

/** @type {Map<string, Record<string, unknown>>} */
const charges = new Map();

function answer(res, status, body) {
  json(res, status, { ...body, apiVersion: 2 });
}

serve({
  name: 'charges',
  version: '2.0.0',
  routes: [
    [
      'POST',
      '/charges',
      async ({ req, res }) => {
        const body = await readJson(req);
        const amount = body?.amount;
        const currency = typeof body?.currency === 'string' ? body.currency.toUpperCase() : DEFAULT_CURRENCY;
        if (!Number.isSafeInteger(amount) || amount <= 0) {
          throw new HttpError(400, 'bad_request', 'expected {"amount": <positive integer, minor units>, "currency"?: "EUR"}');
        }
        if (!CURRENCIES.has(currency)) {
          throw new HttpError(400, 'bad_request', `unsupported currency ${currency}; one of ${[...CURRENCIES].join(', ')}`);
        }
        const payer = await bearerUser(req);
        const charge = {
          id: newId('ch2'),
          amount,
          currency,
          description: typeof body.description === 'string' ? body.description : '',
          user: payer?.user ?? null,
          status: 'succeeded',
          created: new Date().toISOString(),
        };
        charges.set(charge.id, charge);
        answer(res, 201, payer ? { charge, checkedBy: payer.checkedBy } : { charge });
      },
    ],
    ['GET', '/charges', ({ res }) => answer(res, 200, { charges: [...charges.values()], count: charges.size })],
    [
      'GET',
      '/charges/:id',
      ({ res, params }) => {
        const charge = charges.get(params.id);
        if (!charge) throw new HttpError(404, 'not_found', `no charge ${params.id}`);
        answer(res, 200, { charge });
      },
    ],
  ],
});
