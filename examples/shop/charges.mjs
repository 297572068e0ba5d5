// payments/charges v1: creates and reads card charges. Amounts are decimal
// numbers in the shop's one currency; v2 (charges-v2.mjs) changes the shape.
// A charge sent with `Authorization: Bearer <token>` is made for that token's
// user, which auth/tokens tells (a call through berth/client: lib/calls.mjs).
import { bearerUser } from './lib/calls.mjs';
import { HttpError, json, newId, readJson, serve } from './lib/http.mjs';

/** @type {Map<string, { id: string, amount: number, description: string, user: string | null, status: string, created: string }>} */
const charges = new Map();

serve({
  name: 'charges',
  version: '1.0.0',
  routes: [
    [
      'POST',
      '/charges',
      async ({ req, res }) => {
        const body = await readJson(req);
        const amount = body?.amount;
        if (typeof amount !== 'number' || !Number.isFinite(amount) || amount <= 0) {
          throw new HttpError(400, 'bad_request', 'expected a JSON body {"amount": <positive number>, "description"?: "…"}');
        }
        const payer = await bearerUser(req);
        const charge = {
          id: newId('ch'),
          amount: Math.round(amount * 100) / 100,
          description: typeof body.description === 'string' ? body.description : '',
          user: payer?.user ?? null,
          status: 'succeeded',
          created: new Date().toISOString(),
        };
        charges.set(charge.id, charge);
        // checkedBy: which tokens instance vouched for the user, and the request id it saw (this request's).
        json(res, 201, payer ? { ...charge, checkedBy: payer.checkedBy } : charge);
      },
    ],
    ['GET', '/charges', ({ res }) => json(res, 200, { charges: [...charges.values()] })],
    [
      'GET',
      '/charges/:id',
      ({ res, params }) => {
        const charge = charges.get(params.id);
        if (!charge) throw new HttpError(404, 'not_found', `no charge ${params.id}`);
        json(res, 200, charge);
      },
    ],
  ],
});
