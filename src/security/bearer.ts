/**
 * The token of an `authorization: Bearer <token>` header (RFC 6750: the
 * scheme in any case, one token68); undefined when there is none or it is
 * malformed. The admin API's tokens and the gateway's JWTs both arrive so.
 */
export function bearerToken(authorization: string | undefined): string | undefined {
  if (authorization === undefined) return undefined;
  const match = /^Bearer +([A-Za-z0-9\-._~+/]+=*) *$/i.exec(authorization);
  return match?.[1];
}
