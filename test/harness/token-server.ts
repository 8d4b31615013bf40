/**
 * A token server for docker-registry's token auth, written with node:crypto: RS256 JWTs whose `kid`
 * is the libtrust fingerprint of the signing key, with the matching certificate in the registry's
 * rootcertbundle. Anonymous requests get pull only; the test user gets what it asks for.
 */
import { createHash, createPrivateKey, createPublicKey, type KeyObject, sign } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createServer, type Server, type ServerResponse } from 'node:http';

export const TOKEN_SERVICE = 'test-registry';
export const TOKEN_ISSUER = 'test-issuer';

const BASE32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

function base32(buf: Buffer): string {
  let bits = 0;
  let value = 0;
  let out = '';
  for (const byte of buf) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += BASE32[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += BASE32[(value << (5 - bits)) & 31];
  return out;
}

/** libtrust key id: SHA-256 of the DER SubjectPublicKeyInfo, first 30 bytes, base32, 4-char groups. */
export function libtrustKeyId(publicKey: KeyObject): string {
  const der = publicKey.export({ type: 'spki', format: 'der' });
  const b32 = base32(createHash('sha256').update(der).digest().subarray(0, 30));
  return b32.match(/.{4}/g)!.join(':');
}

function b64url(v: Buffer | string): string {
  return Buffer.from(v).toString('base64url');
}

export interface TokenServer {
  url: string;
  port: number;
  /** Token requests seen (for assertions). */
  requests: { account?: string; scope: string[]; authorized: boolean }[];
  close(): Promise<void>;
}

export async function startTokenServer(opts: {
  port: number;
  keyFile: string;
  users: Record<string, string>;
}): Promise<TokenServer> {
  const key = createPrivateKey(await readFile(opts.keyFile));
  const kid = libtrustKeyId(createPublicKey(key));
  const requests: TokenServer['requests'] = [];
  const server: Server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    if (url.pathname !== '/token') {
      res.writeHead(404).end();
      return;
    }
    const issueFor = (user: string | undefined, rawScopes: string[]) => {
      const scopes = rawScopes.flatMap((sc) => sc.split(' ')).filter(Boolean);
      requests.push({ account: user, scope: scopes, authorized: true });
      issue(res, user, scopes);
    };
    if (req.method === 'POST') {
      // OAuth2 refresh-token grant: the refresh token is "refresh:USER" for a known user.
      const parts: Buffer[] = [];
      req.on('data', (c: Buffer) => parts.push(c));
      req.on('end', () => {
        const form = new URLSearchParams(Buffer.concat(parts).toString());
        const refresh = form.get('refresh_token') ?? '';
        const u = refresh.startsWith('refresh:') ? refresh.slice(8) : '';
        if (form.get('grant_type') !== 'refresh_token' || !(u in opts.users)) {
          requests.push({ account: u, scope: form.getAll('scope'), authorized: false });
          res
            .writeHead(401, { 'content-type': 'application/json' })
            .end('{"details":"invalid refresh token"}');
          return;
        }
        issueFor(u, form.getAll('scope'));
      });
      return;
    }
    let user: string | undefined;
    const auth = req.headers.authorization;
    if (auth?.startsWith('Basic ')) {
      const [u, ...p] = Buffer.from(auth.slice(6), 'base64').toString().split(':');
      if (!u || opts.users[u] !== p.join(':')) {
        requests.push({ account: u, scope: url.searchParams.getAll('scope'), authorized: false });
        res.writeHead(401, { 'content-type': 'application/json' }).end('{"details":"invalid credentials"}');
        return;
      }
      user = u;
    }
    issueFor(user, url.searchParams.getAll('scope'));
  });

  function issue(res: ServerResponse, user: string | undefined, scopes: string[]) {
    const access = scopes.flatMap((s) => {
      const m = /^(repository|registry):([^:]+(?::\d+)?[^:]*):(.+)$/.exec(s);
      if (!m) return [];
      const wanted = m[3]!.split(',');
      const allowed = user ? wanted : wanted.filter((a) => a === 'pull');
      return allowed.length > 0 ? [{ type: m[1], name: m[2], actions: allowed }] : [];
    });
    const now = Math.floor(Date.now() / 1000);
    const header = { alg: 'RS256', typ: 'JWT', kid };
    const claims = {
      iss: TOKEN_ISSUER,
      sub: user ?? '',
      aud: TOKEN_SERVICE,
      exp: now + 300,
      nbf: now - 10,
      iat: now,
      jti: `${now}-${Math.random().toString(36).slice(2)}`,
      access,
    };
    const signingInput = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
    const signature = sign('RSA-SHA256', Buffer.from(signingInput), key);
    const token = `${signingInput}.${b64url(signature)}`;
    res.writeHead(200, { 'content-type': 'application/json' }).end(
      JSON.stringify({
        token,
        access_token: token,
        expires_in: 300,
        issued_at: new Date(now * 1000).toISOString(),
      }),
    );
  }
  await new Promise<void>((resolve) => server.listen(opts.port, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${opts.port}/token`,
    port: opts.port,
    requests,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}
