// payments/charges v1: creates and reads card charges. Amounts are decimal
// numbers in the shop's one currency; v2 (charges-v2.mjs) changes the shape.
import { HttpError, json, newId, readJson, serve } from './lib/http.mjs';

/** @type {Map<string, { id: string, amount: number, description: string, status: string, created: string }>} */
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
        const charge = {
          id: newId('ch'),
          amount: Math.round(amount * 100) / 100,
          description: typeof body.description === 'string' ? body.description : '',
          status: 'succeeded',
          created: new Date().toISOString(),
        };
        charges.set(charge.id, charge);
        json(res, 201, charge);
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
