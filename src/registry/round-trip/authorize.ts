/**
 * Authorization: the registry's own origin gets the credentials or token its challenge asks for
 * (never a host an upload location or a redirect names); a 401 is answered once, with a new
 * challenge's token, when the request can be sent again; a last 401 or a 403 becomes an error that
 * says what to do.
 */
import type { Authenticator } from '../../auth/authenticator.js';
import { StowageError } from '../../errors.js';
import { errorDetail } from '../status.js';
import { isReplayable, isWrite, type Step } from './chain.js';

export type Authorizer = Pick<
  Authenticator,
  'authorization' | 'setChallenge' | 'invalidate' | 'credentialsFor'
>;

export function authorize(host: string, auth: Authorizer): Step {
  return async (req, next) => {
    const sameOrigin = req.url.origin === req.origin;
    for (let challenged = false; ; challenged = true) {
      const authorization = sameOrigin ? await auth.authorization(req.scope, req.signal) : undefined;
      const headers = authorization ? { ...req.headers, authorization } : req.headers;
      const res = await next({ ...req, headers });
      if (res.statusCode === 401) {
        await res.body.dump();
        const again =
          !challenged && isReplayable(req) && auth.setChallenge(res.headers['www-authenticate'], req.scope);
        if (again) {
          auth.invalidate(req.scope);
          continue;
        }
        throw new StowageError(
          'UNAUTHORIZED',
          (await auth.credentialsFor(req.scope))
            ? `${host} rejected the credentials for ${req.what} (HTTP 401); check the username and password`
            : `${host} requires authentication for ${req.what} (HTTP 401); pass --creds USER:PASS or add credentials to auth.json`,
        );
      }
      if (res.statusCode === 403) {
        const detail = await errorDetail(res);
        const may = isWrite(req) || req.scope.includes('push') ? 'push to' : 'read';
        throw new StowageError(
          'DENIED',
          `${host} denied access to ${req.what} (HTTP 403${detail}); check that the account may ${may} it`,
        );
      }
      return res;
    }
  };
}
