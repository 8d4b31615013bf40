/**
 * Credentials against the real registries: login (basic and token auth) verified before anything is
 * stored, auth.json written atomically with mode 0600 and read by skopeo (and skopeo's read by us),
 * namespace keys, a credential helper (a test script speaking the docker-credential-helpers protocol),
 * the OS keyring for real (the kernel keyring in a fresh session keyring, gnome-keyring in a private
 * D-Bus session), logout; and no secret in anything printed.
 */
import { chmod, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { BIN, harness, insecureConf, stowage, workdir } from './harness/cli.js';
import { startFaultProxy } from './harness/fault-proxy.js';
import { run } from './harness/processes.js';

const h = harness();
const basic = h.registries.basic;
const token = h.registries.token;
const b64 = (s: string) => Buffer.from(s).toString('base64');
const WRONG = 'wrong-secret-4a1f';
const small = (host: string) => `${host}/fixtures/small:v1`;

/** Every output of every run in a test, to check that no secret ever appears. */
function transcript() {
  const seen: string[] = [];
  return {
    seen,
    async stowage(args: string[], opts: { env: NodeJS.ProcessEnv; input?: string }) {
      const r = await stowage(args, opts);
      seen.push(r.stdout, r.stderr);
      return r;
    },
    assertNoSecret(...secrets: string[]) {
      const all = seen.join('\n');
      for (const s of secrets) {
        expect(all).not.toContain(s);
        expect(all).not.toContain(b64(`${h.user}:${s}`));
      }
    },
  };
}

async function shell(script: string, env: NodeJS.ProcessEnv): Promise<{ stdout: string; stderr: string }> {
  return run('bash', ['-c', script], { env });
}

describe('login, logout and stored credentials', () => {
  it('logs in to basic and token registries: verified, stored 0600, read back by skopeo and by pulls', async () => {
    const t = transcript();
    const w = await workdir('login', insecureConf(basic.host, token.host));
    const authfile = join(w.dir, 'auth.json');
    for (const reg of [basic, token]) {
      // A wrong password is refused by the registry and nothing is written.
      const bad = await t.stowage(
        ['login', '-u', h.user, '--password-stdin', '--authfile', authfile, reg.host],
        {
          env: w.env,
          input: `${WRONG}\n`,
        },
      );
      expect(bad.code, bad.stderr).toBe(4);
      expect(bad.stderr).toMatch(/rejected the credentials/);
      // Nothing stored for it: no file yet (basic, first), or the file unchanged and without it (token).
      if (reg === basic) expect(await stat(authfile).catch(() => undefined)).toBeUndefined();
      else expect(Object.keys(JSON.parse(await readFile(authfile, 'utf8')).auths)).toEqual([basic.host]);
      const ok = await t.stowage(
        ['login', '-u', h.user, '--password-stdin', '--authfile', authfile, reg.host],
        {
          env: w.env,
          input: `${h.password}\n`,
        },
      );
      expect(ok.code, ok.stderr).toBe(0);
      expect(ok.stdout).toContain(`Login Succeeded! (credentials for ${reg.host} in ${authfile})`);
      // skopeo uses what we wrote.
      const inspected = await run('skopeo', [
        'inspect',
        '--tls-verify=false',
        '--authfile',
        authfile,
        `docker://${reg.host}/fixtures/small:v1`,
      ]);
      expect(JSON.parse(inspected.stdout).Digest).toBe(h.fixtures.images.small!.digest);
      const pulled = await t.stowage(
        [
          'pull',
          '-q',
          '--authfile',
          authfile,
          `${reg.host}/fixtures/small:v1`,
          '-o',
          join(w.dir, `${reg.mode}.tar`),
        ],
        { env: w.env },
      );
      expect(pulled.code, pulled.stderr).toBe(0);
    }
    expect((await stat(authfile)).mode & 0o777).toBe(0o600);
    const content = JSON.parse(await readFile(authfile, 'utf8'));
    expect(Object.keys(content.auths).sort()).toEqual([basic.host, token.host].sort());
    expect(content.auths[basic.host].auth).toBe(b64(`${h.user}:${h.password}`));
    const get = await t.stowage(['login', '--get-login', '--authfile', authfile, basic.host], { env: w.env });
    expect(get.stdout).toBe(`${h.user}\n`);

    // Logout removes one entry and keeps the rest; a second logout says there is nothing.
    const out = await t.stowage(['logout', '--authfile', authfile, basic.host], { env: w.env });
    expect(out.code, out.stderr).toBe(0);
    expect(Object.keys(JSON.parse(await readFile(authfile, 'utf8')).auths)).toEqual([token.host]);
    const again = await t.stowage(['logout', '--authfile', authfile, basic.host], { env: w.env });
    expect(again.code).toBe(5);
    expect(again.stderr).toContain(`not logged in to ${basic.host}`);
    expect((await t.stowage(['logout', '--all', '--authfile', authfile], { env: w.env })).code).toBe(0);
    expect(JSON.parse(await readFile(authfile, 'utf8')).auths).toEqual({});
    t.assertNoSecret(h.password, WRONG);
  });

  it('shares the default auth.json with skopeo both ways, and refuses to clobber a broken one', async () => {
    const t = transcript();
    const w = await workdir('login-default', insecureConf(basic.host));
    await mkdir(w.env.XDG_RUNTIME_DIR!, { recursive: true });
    // skopeo login writes $XDG_RUNTIME_DIR/containers/auth.json; stowage pulls with it.
    await run('skopeo', ['login', '--tls-verify=false', '-u', h.user, '-p', h.password, basic.host], {
      env: w.env,
    });
    const pulled = await t.stowage(
      ['pull', '-q', `${basic.host}/fixtures/small:v1`, '-o', join(w.dir, 'a.tar')],
      {
        env: w.env,
      },
    );
    expect(pulled.code, pulled.stderr).toBe(0);
    await run('skopeo', ['logout', basic.host], { env: w.env });
    const none = await t.stowage(
      ['pull', '-q', `${basic.host}/fixtures/small:v1`, '-o', join(w.dir, 'b.tar')],
      {
        env: w.env,
      },
    );
    expect(none.code).toBe(4);
    // stowage login writes the same file; skopeo reads it.
    const login = await t.stowage(['login', '-u', h.user, '--password-stdin', basic.host], {
      env: w.env,
      input: h.password,
    });
    expect(login.code, login.stderr).toBe(0);
    const path = join(w.env.XDG_RUNTIME_DIR!, 'containers/auth.json');
    expect(login.stdout).toContain(path);
    const viaSkopeo = await run(
      'skopeo',
      ['inspect', '--tls-verify=false', `docker://${basic.host}/fixtures/small:v1`],
      {
        env: w.env,
      },
    );
    expect(JSON.parse(viaSkopeo.stdout).Digest).toBe(h.fixtures.images.small!.digest);

    // A broken auth.json is left alone, and the error does not echo its contents.
    await writeFile(path, `{"auths": ${h.password}`);
    const broken = await t.stowage(['login', '-u', h.user, '--password-stdin', basic.host], {
      env: w.env,
      input: h.password,
    });
    expect(broken.code).toBe(2);
    expect(await readFile(path, 'utf8')).toBe(`{"auths": ${h.password}`);
    t.assertNoSecret(h.password);
  });

  it('asks for the user name and the password on a terminal, without echoing the password', async () => {
    const w = await workdir('login-tty', insecureConf(basic.host));
    const authfile = join(w.dir, 'auth.json');
    // util-linux script(1) gives the CLI a pseudo-terminal; each answer is typed once its prompt has
    // appeared (not after a fixed sleep: under load a password typed early would be echoed).
    const cmd = `"${process.execPath}" "${BIN}" login --authfile ${authfile} ${basic.host}`;
    const dialogue = `
      set -e
      fifo="${w.dir}/tty-in"; out="${w.dir}/tty-out"
      mkfifo "$fifo"; : >"$out"
      script -qec '${cmd}' /dev/null <"$fifo" >"$out" 2>&1 &
      pid=$!
      exec 3>"$fifo"
      wait_for() { for _ in $(seq 1200); do grep -q "$1" "$out" && return 0; sleep 0.05; done; echo "never prompted: $1"; exit 1; }
      wait_for 'Username: '
      printf '%s\\n' "$USERNAME_ANSWER" >&3
      wait_for 'Password: '
      printf '%s\\n' "$PW" >&3
      wait "$pid"
      exec 3>&-
      cat "$out"`;
    const { stdout } = await shell(dialogue, { ...w.env, PW: h.password, USERNAME_ANSWER: h.user });
    expect(stdout).toContain('Username: ');
    expect(stdout).toContain(h.user);
    expect(stdout).toContain('Password: ');
    expect(stdout).toContain('Login Succeeded!');
    expect(stdout).not.toContain(h.password);
    expect(JSON.parse(await readFile(authfile, 'utf8')).auths[basic.host].auth).toBe(
      b64(`${h.user}:${h.password}`),
    );
    // Without a terminal and without --password-stdin, it says what to do.
    const noTty = await stowage(['login', '-u', h.user, '--authfile', authfile, basic.host], { env: w.env });
    expect(noTty.code).toBe(2);
    expect(noTty.stderr).toContain('no terminal to ask for the password on; pipe it with --password-stdin');
  });

  it('matches namespace keys before the registry key', async () => {
    const w = await workdir('namespaces', insecureConf(basic.host));
    const authfile = join(w.dir, 'auth.json');
    await writeFile(
      authfile,
      JSON.stringify({
        auths: {
          [basic.host]: { auth: b64(`${h.user}:${WRONG}`) },
          [`${basic.host}/fixtures`]: { auth: b64(`${h.user}:${h.password}`) },
        },
      }),
    );
    const ok = await stowage(
      ['pull', '-q', '--authfile', authfile, `${basic.host}/fixtures/small:v1`, '-o', join(w.dir, 'a.tar')],
      {
        env: w.env,
      },
    );
    expect(ok.code, ok.stderr).toBe(0);
    const other = await stowage(['inspect', '--authfile', authfile, `${basic.host}/elsewhere/small:v1`], {
      env: w.env,
    });
    expect(other.code).toBe(4);
    expect(other.stderr + other.stdout).not.toContain(WRONG);
  });

  it('falls back to a GET with the identity token as the secret where the token service has no OAuth2 POST', async () => {
    // The token service (behind a proxy) answers the OAuth2 POST with 405; the registry's challenge,
    // rewritten by a proxy in front of it, sends clients there.
    const tokenProxy = await startFaultProxy({
      upstream: h.tokenServerUrl,
      fault: (req) => (req.method === 'POST' ? { kind: 'status', status: 405 } : undefined),
    });
    const service = /service="([^"]+)"/.exec(
      (await fetch(`${token.url}/v2/`)).headers.get('www-authenticate') ?? '',
    )?.[1];
    const front = await startFaultProxy({
      upstream: token.url,
      fault: () => ({
        kind: 'headers',
        headers: { 'www-authenticate': `Bearer realm="${tokenProxy.url}/token",service="${service}"` },
      }),
    });
    try {
      const w = await workdir('identity-get', insecureConf(front.host));
      const authfile = join(w.dir, 'auth.json');
      // A service without the OAuth2 endpoint takes the token as the password of a basic login.
      await writeFile(
        authfile,
        JSON.stringify({ auths: { [front.host]: { auth: b64(`${h.user}:`), identitytoken: h.password } } }),
      );
      const archive = join(w.dir, 'a.tar');
      expect(
        (
          await stowage(['pull', '-q', small(front.host), '-o', archive], {
            env: { ...w.env, REGISTRY_AUTH_FILE: authfile },
          })
        ).code,
      ).toBe(0);
      const pushed = await stowage(
        ['push', '-q', '--authfile', authfile, archive, `${front.host}/identity-get/small:v1`],
        {
          env: w.env,
        },
      );
      expect(pushed.code, pushed.stderr).toBe(0);
      const asked = tokenProxy.seen.map(
        (q) => `${q.method} ${q.headers.authorization ? 'with' : 'without'} credentials`,
      );
      expect(asked).toContain('POST without credentials');
      expect(asked).toContain('GET with credentials');
      const basicAuth = tokenProxy.seen.find((q) => q.method === 'GET')!.headers.authorization!;
      expect(basicAuth).toBe(`Basic ${b64(`${h.user}:${h.password}`)}`);
    } finally {
      await front.close();
      await tokenProxy.close();
    }
  });

  it('exchanges an identity (refresh) token from auth.json for access tokens (OAuth2 POST)', async () => {
    const w = await workdir('identity-token', insecureConf(token.host));
    const authfile = join(w.dir, 'auth.json');
    await writeFile(
      authfile,
      JSON.stringify({
        auths: { [token.host]: { auth: b64(`${h.user}:`), identitytoken: `refresh:${h.user}` } },
      }),
    );
    const archive = join(w.dir, 'a.tar');
    expect(
      (
        await stowage(
          ['pull', '-q', '--authfile', authfile, `${token.host}/fixtures/small:v1`, '-o', archive],
          { env: w.env },
        )
      ).code,
    ).toBe(0);
    // Push needs the credentialed token: it works only if the refresh token was exchanged.
    const pushed = await stowage(
      ['push', '-q', '--authfile', authfile, archive, `${token.host}/refreshed/small:v1`],
      {
        env: w.env,
      },
    );
    expect(pushed.code, pushed.stderr).toBe(0);
    await writeFile(
      authfile,
      JSON.stringify({
        auths: { [token.host]: { auth: b64(`${h.user}:`), identitytoken: 'refresh:nobody' } },
      }),
    );
    const refused = await stowage(
      ['push', '--authfile', authfile, archive, `${token.host}/refreshed/small:v2`],
      {
        env: w.env,
      },
    );
    expect(refused.code).toBe(4);
    expect(refused.stderr).toMatch(/token service .* rejected the credentials/);
    expect(refused.stderr).not.toContain('refresh:nobody');
  });

  it('gets, stores and erases through a credential helper (auth.json credHelpers and registries.conf)', async () => {
    const t = transcript();
    const w = await workdir(
      'helper',
      `credential-helpers = ["containers-auth.json", "stowagetest"]\n${insecureConf(basic.host, token.host)}`,
    );
    const bin = join(w.dir, 'bin');
    const store = join(w.dir, 'helper-store.json');
    await mkdir(bin);
    // A helper by the docker-credential-helpers protocol, keeping its secrets in a JSON file.
    const script = `#!/usr/bin/env python3
import json, sys, os
path = ${JSON.stringify(store)}
data = json.load(open(path)) if os.path.exists(path) else {}
action = sys.argv[1]
if action == 'get':
    server = sys.stdin.read().strip()
    if server not in data:
        print('credentials not found in native keychain'); sys.exit(1)
    json.dump({'ServerURL': server, 'Username': data[server][0], 'Secret': data[server][1]}, sys.stdout)
elif action == 'store':
    req = json.load(sys.stdin)
    data[req['ServerURL']] = [req['Username'], req['Secret']]
    json.dump(data, open(path, 'w'))
elif action == 'erase':
    server = sys.stdin.read().strip()
    if server not in data:
        print('credentials not found in native keychain'); sys.exit(1)
    del data[server]
    json.dump(data, open(path, 'w'))
`;
    await writeFile(join(bin, 'docker-credential-stowagetest'), script);
    await chmod(join(bin, 'docker-credential-stowagetest'), 0o755);
    const env = { ...w.env, PATH: `${bin}:${w.env.PATH}` };
    const authfile = join(w.dir, 'auth.json');
    await writeFile(authfile, JSON.stringify({ auths: {}, credHelpers: { [basic.host]: 'stowagetest' } }));

    // login stores through the helper auth.json names for the registry, not in the file.
    const login = await t.stowage(
      ['login', '-u', h.user, '--password-stdin', '--authfile', authfile, basic.host],
      {
        env,
        input: h.password,
      },
    );
    expect(login.code, login.stderr).toBe(0);
    expect(login.stdout).toContain('credential helper docker-credential-stowagetest');
    expect(JSON.parse(await readFile(authfile, 'utf8')).auths).toEqual({});
    expect(JSON.parse(await readFile(store, 'utf8'))[basic.host]).toEqual([h.user, h.password]);
    const pulled = await t.stowage(
      ['pull', '-q', '--authfile', authfile, `${basic.host}/fixtures/small:v1`, '-o', join(w.dir, 'a.tar')],
      {
        env,
      },
    );
    expect(pulled.code, pulled.stderr).toBe(0);

    // registries.conf credential-helpers: the token registry's credentials come from the helper alone.
    await writeFile(
      store,
      JSON.stringify({ ...JSON.parse(await readFile(store, 'utf8')), [token.host]: [h.user, h.password] }),
    );
    const viaConf = await t.stowage(
      ['pull', '-q', `${token.host}/fixtures/small:v1`, '-o', join(w.dir, 'b.tar')],
      { env },
    );
    expect(viaConf.code, viaConf.stderr).toBe(0);

    const out = await t.stowage(['logout', '--authfile', authfile, basic.host], { env });
    expect(out.code, out.stderr).toBe(0);
    expect(JSON.parse(await readFile(store, 'utf8'))[basic.host]).toBeUndefined();

    // A helper that is not installed is named in the error.
    await writeFile(authfile, JSON.stringify({ credHelpers: { [basic.host]: 'missing-helper' } }));
    const missing = await t.stowage(
      ['pull', '--authfile', authfile, `${basic.host}/fixtures/small:v1`, '-o', join(w.dir, 'c.tar')],
      {
        env,
      },
    );
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain('docker-credential-missing-helper is not installed');
    t.assertNoSecret(h.password);
  });

  it('keeps credentials in the kernel keyring and in gnome-keyring, and says when no keyring is reachable', async () => {
    const w = await workdir('keyring', insecureConf(basic.host));
    const node = process.execPath;
    const ref = `${basic.host}/fixtures/small:v1`;
    const steps = (out: string) =>
      [
        `printf %s "$PW" | "${node}" "${BIN}" login -u ${h.user} --password-stdin --store keyring ${basic.host}`,
        `"${node}" "${BIN}" pull -q ${ref} -o ${join(w.dir, out)}`,
        `"${node}" "${BIN}" login --get-login ${basic.host}`,
        `"${node}" "${BIN}" logout ${basic.host}`,
        // A second logout finds nothing in the keyring, and says so rather than claim a removal.
        `if "${node}" "${BIN}" logout ${basic.host}; then echo claimed-a-removal; exit 1; fi`,
        `if "${node}" "${BIN}" pull -q ${ref} -o ${join(w.dir, `${out}.2`)} 2>/dev/null; then echo still-logged-in; exit 1; fi`,
      ].join(' && ');
    const env = { ...w.env, PW: h.password };

    // The kernel keyring, in a session keyring of its own.
    const kernel = await shell(`keyctl session - bash -c '${steps('kernel.tar')}'`, {
      ...env,
      STOWAGE_KEYRING: 'keyutils',
    });
    expect(kernel.stdout).toContain('Login Succeeded! (credentials for');
    expect(kernel.stdout).toContain('the OS keyring');
    expect(kernel.stdout).toContain(
      `${h.user}\nRemoved login credentials for ${basic.host} from the OS keyring`,
    );
    expect(kernel.stdout + kernel.stderr).not.toContain(h.password);
    expect(await readFile(join(w.dir, 'kernel.tar')).then((b) => b.length)).toBeGreaterThan(0);

    // gnome-keyring's Secret Service, in a private D-Bus session with a fresh, unlocked keyring.
    const secretHome = join(w.dir, 'secret-home');
    await mkdir(secretHome);
    const gnome = await shell(
      `dbus-run-session -- bash -c 'eval "$(printf unlock-pw | gnome-keyring-daemon --unlock --components=secrets)" >/dev/null; ${steps('secret.tar')}'`,
      { ...env, HOME: secretHome, STOWAGE_KEYRING: 'secret-service' },
    );
    expect(gnome.stdout).toContain(`Removed login credentials for ${basic.host} from the OS keyring`);
    expect(gnome.stdout + gnome.stderr).not.toContain(h.password);

    // No Secret Service reachable: a clear error, nothing stored anywhere.
    const noBus = await stowage(
      ['login', '-u', h.user, '--password-stdin', '--store', 'keyring', basic.host],
      {
        env: {
          ...w.env,
          STOWAGE_KEYRING: 'secret-service',
          DBUS_SESSION_BUS_ADDRESS: `unix:path=${join(w.dir, 'no-bus')}`,
        },
        input: h.password,
      },
    );
    expect(noBus.code).toBe(2);
    expect(noBus.stderr).toMatch(/the Secret Service is not reachable .*store credentials in auth\.json/);
    expect(noBus.stderr).not.toContain(h.password);
  });
});
