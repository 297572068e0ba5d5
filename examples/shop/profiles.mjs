// users/profiles: in-memory CRUD of JSON profiles. Each instance keeps its
// own map (a real service would use a database), which makes the answering
// `instance` easy to see when requests are spread over replicas. `GET /me`
// answers the profile of a bearer token's user, asking auth/tokens whose
// token it is (through berth/client: lib/calls.mjs).
import { bearerUser } from './lib/calls.mjs';
import { HttpError, json, readJson, serve } from './lib/http.mjs';

const ID = /^[A-Za-z0-9_.-]{1,64}$/;
/** @type {Map<string, { id: string, profile: Record<string, unknown>, createdAt: string, updatedAt: string }>} */
const profiles = new Map();

function checkId(id) {
  if (!ID.test(id)) throw new HttpError(400, 'bad_request', 'profile ids are 1-64 letters, digits, ".", "_" or "-"');
}

serve({
  name: 'profiles',
  version: '1.0.0',
  routes: [
    ['GET', '/profiles', ({ res }) => json(res, 200, { profiles: [...profiles.values()], count: profiles.size })],
    [
      'GET',
      '/me',
      async ({ req, res }) => {
        const who = await bearerUser(req);
        if (!who) throw new HttpError(401, 'unauthenticated', 'send Authorization: Bearer <token> (a token from POST /auth/tokens/token)');
        // null when this replica does not hold the user's profile (each keeps its own).
        json(res, 200, { user: who.user, profile: profiles.get(who.user)?.profile ?? null, checkedBy: who.checkedBy });
      },
    ],
    [
      'GET',
      '/profiles/:id',
      ({ res, params }) => {
        checkId(params.id);
        const entry = profiles.get(params.id);
        if (!entry) throw new HttpError(404, 'not_found', `no profile ${params.id}`);
        json(res, 200, entry);
      },
    ],
    [
      'PUT',
      '/profiles/:id',
      async ({ req, res, params }) => {
        checkId(params.id);
        const profile = await readJson(req, 16 * 1024);
        if (typeof profile !== 'object' || profile === null || Array.isArray(profile)) {
          throw new HttpError(400, 'bad_request', 'a profile is a JSON object, e.g. {"name": "Ada", "email": "ada@example.com"}');
        }
        const now = new Date().toISOString();
        const existing = profiles.get(params.id);
        const entry = { id: params.id, profile, createdAt: existing?.createdAt ?? now, updatedAt: now };
        profiles.set(params.id, entry);
        json(res, existing ? 200 : 201, entry);
      },
    ],
    [
      'DELETE',
      '/profiles/:id',
      ({ res, params }) => {
        checkId(params.id);
        if (!profiles.delete(params.id)) throw new HttpError(404, 'not_found', `no profile ${params.id}`);
        json(res, 200, { deleted: params.id });
      },
    ],
  ],
});
