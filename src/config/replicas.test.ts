import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { tempDirs } from '../../test/harness/temp-dirs.js';
import { s3Credentials } from './replicas.js';
import { parseStowageConfig } from './stowage.js';

const temp = tempDirs();

const replicated = `
[store.s3]
endpoint = "http://127.0.0.1:7480"
bucket = "stowage-archive"
prefix = "team-a/"

[server]
database = "postgres://stowage@127.0.0.1:5432/stowage"
`;

describe('the replicated mode in stowage.toml', () => {
  it('reads [store.s3] with [server] database, and nothing of it without them', () => {
    const c = parseStowageConfig(replicated, 'stowage.toml', {});
    expect(c.s3).toEqual({ endpoint: 'http://127.0.0.1:7480', bucket: 'stowage-archive', prefix: 'team-a/' });
    expect(c.server.database).toBe('postgres://stowage@127.0.0.1:5432/stowage');
    expect(parseStowageConfig('', 'stowage.toml', {}).s3).toBeUndefined();
  });

  it('refuses what cannot work, naming the key and the way out', () => {
    const parse = (text: string) => () => parseStowageConfig(text, 'stowage.toml', {});
    expect(parse(replicated.slice(0, replicated.indexOf('[server]')))).toThrow(
      /\[store.s3\] needs \[server\] database/,
    );
    expect(parse(replicated.replace('stowage-archive', 'Bad_Bucket'))).toThrow(
      /key "store.s3.bucket": an S3 bucket name/,
    );
    expect(parse(replicated.replace('team-a/', '/abs'))).toThrow(/key "store.s3.prefix"/);
    expect(parse(replicated.replace('http://127.0.0.1:7480', '127.0.0.1:7480'))).toThrow(
      /key "store.s3.endpoint"/,
    );
    // A password in the URL would sit in a file others read, and in every message naming it.
    expect(parse(replicated.replace('stowage@', 'stowage:hunter2@'))).toThrow(
      /key "server.database": .*without a password/,
    );
    expect(parse(`${replicated}\n[store]\npath = "/srv/store"\n`)).toThrow();
  });

  it('takes S3 keys from a credentials file or the environment, and names neither key in its errors', async () => {
    const dir = await temp('stowage-s3creds-');
    const file = join(dir, 'credentials');
    await writeFile(
      file,
      '[default]\naws_access_key_id = AKIDFILE\naws_secret_access_key = s3cr3t-from-file\n',
    );
    const s3 = { endpoint: 'http://127.0.0.1:7480', bucket: 'stowage-archive' };
    expect(await s3Credentials({ ...s3, 'credentials-file': file }, {})).toEqual({
      accessKeyId: 'AKIDFILE',
      secretAccessKey: 's3cr3t-from-file',
    });
    expect(
      await s3Credentials(s3, { AWS_ACCESS_KEY_ID: 'AKIDENV', AWS_SECRET_ACCESS_KEY: 'from-env' }),
    ).toEqual({
      accessKeyId: 'AKIDENV',
      secretAccessKey: 'from-env',
    });
    await expect(s3Credentials(s3, { AWS_ACCESS_KEY_ID: 'AKIDENV' })).rejects.toThrow(
      /AWS_SECRET_ACCESS_KEY/,
    );
    await writeFile(file, 'access-key-id = AKIDHALF\n');
    const half = await s3Credentials({ ...s3, 'credentials-file': file }, {}).catch((e: Error) => e);
    expect(String(half)).toMatch(/needs an access-key-id and a secret-access-key line/);
    expect(String(half)).not.toContain('AKIDHALF');
  });
});
