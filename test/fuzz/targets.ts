/**
 * What the fuzz tests feed (issue 33): every parser that reads what a registry, an archive or a user's
 * file hands us. Each target takes one input and either returns or throws; fuzz.test.ts checks that
 * what it throws is always a StowageError (a message for the user), never a TypeError, a RangeError or a
 * library's own error escaping, and that it does not hang.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { TarIndex } from '../../src/archive/tar-reader.js';
import { parseAuthFile } from '../../src/auth/authfile.js';
import { parseChallenges } from '../../src/auth/challenge.js';
import { parseRegistriesConf } from '../../src/config/registries.js';
import { parseStowageConfig } from '../../src/config/stowage.js';
import { parseConfig, parseIndex, parseManifest } from '../../src/image/documents.js';
import { parsePolicy } from '../../src/policy/policy.js';
import { parseRepositoryPattern } from '../../src/reference/pattern.js';
import { parseReference, parseRepository } from '../../src/reference/reference.js';
import { parseTransportReference } from '../../src/reference/transport.js';
import { nextLink } from '../../src/registry/pages.js';

export interface Target {
  name: string;
  /** bytes: the input is binary (mutated byte by byte); text: a string; json: a JSON document. */
  kind: 'bytes' | 'text' | 'json';
  /** Fragments mutations insert: the grammar's own punctuation finds more than random characters. */
  dictionary: string[];
  run(input: Buffer, scratch: string): unknown;
}

const text = (b: Buffer) => b.toString('utf8');
const ENV = { HOME: '/nonexistent-home' };

export const TARGETS: Target[] = [
  {
    name: 'tar',
    kind: 'bytes',
    dictionary: [
      'ustar\x0000',
      'ustar  \x00',
      '0000644\x00',
      '77777777777',
      '\x80\x00\x00',
      '../',
      '/',
      'x',
      'L',
      'K',
      'g',
      '5',
      '2',
      '1',
    ],
    // The reader works on files (it seeks), so the input is written to one first.
    async run(input, scratch) {
      const file = join(scratch, 'input.tar');
      await writeFile(file, input);
      const index = await TarIndex.open(file);
      return index.entries.size;
    },
  },
  {
    name: 'manifest',
    kind: 'json',
    dictionary: [
      '"schemaVersion":',
      '"mediaType":',
      '"layers":',
      '"digest":"sha256:',
      '"size":',
      '{',
      '[',
      '-1',
      '1e308',
      'null',
    ],
    run: (input) => {
      // The three document kinds a registry answers with, as the engine reads them.
      const out: unknown[] = [];
      for (const parse of [parseManifest, parseIndex, parseConfig]) {
        try {
          out.push(parse(input, 'the fuzzed document'));
        } catch (e) {
          out.push(e);
        }
      }
      const thrown = out.find((o) => o instanceof Error && o.name !== 'StowageError');
      if (thrown) throw thrown;
      return out;
    },
  },
  {
    name: 'www-authenticate',
    kind: 'text',
    dictionary: ['Bearer ', 'Basic ', 'realm=', 'service=', 'scope=', '"', '\\', ',', '=', ' '],
    run: (input) => parseChallenges(text(input)),
  },
  {
    name: 'link',
    kind: 'text',
    dictionary: ['<', '>', '; rel="next"', 'rel=next', '/v2/', '?n=100&last=', 'http://', '[', '%', ','],
    run: (input) => nextLink(text(input)),
  },
  {
    name: 'reference',
    kind: 'text',
    dictionary: [
      'docker://',
      'oci:',
      'oci-archive:',
      'docker-archive:',
      'dir:',
      ':',
      '@sha256:',
      '/',
      '.',
      '_',
      '-',
      'localhost',
      '127.0.0.1:5000',
      '**',
      '*',
      '{repository}',
    ],
    run: (input) => {
      const s = text(input);
      const out: unknown[] = [];
      for (const parse of [
        parseReference,
        parseRepository,
        parseTransportReference,
        parseRepositoryPattern,
      ]) {
        try {
          out.push(parse(s));
        } catch (e) {
          if (!(e instanceof Error) || e.name !== 'StowageError') throw e;
          out.push(e.message);
        }
      }
      return out;
    },
  },
  {
    name: 'registries-conf',
    kind: 'text',
    dictionary: [
      '[[registry]]',
      '[[registry.mirror]]',
      'location = ',
      'prefix = ',
      'insecure = true',
      'unqualified-search-registries = [',
      '[aliases]',
      '"',
      "'''",
      '\n',
      '=',
      '[',
      ']',
    ],
    run: (input) => parseRegistriesConf(text(input), 'registries.conf'),
  },
  {
    name: 'auth-json',
    kind: 'json',
    dictionary: [
      '"auths":',
      '"auth":',
      '"credHelpers":',
      '"credsStore":',
      '"identitytoken":',
      '"dXNlcjpwYXNz"',
      '{',
      '}',
    ],
    run: (input) => parseAuthFile(text(input), 'auth.json'),
  },
  {
    name: 'policy-json',
    kind: 'json',
    dictionary: [
      '"default":',
      '"transports":',
      '"docker":',
      '"type":',
      '"insecureAcceptAnything"',
      '"reject"',
      '"signedBy"',
      '"sigstoreSigned"',
      '"keyPath":',
      '"signedIdentity":',
      '{',
      '[]',
    ],
    run: (input) => parsePolicy(text(input), 'policy.json'),
  },
  {
    name: 'stowage-toml',
    kind: 'text',
    dictionary: [
      '[store]',
      '[store.s3]',
      '[server]',
      '[[server.token]]',
      '[[job]]',
      'source = ',
      'tags = [',
      'schedule = ',
      'keep = ',
      'path = ',
      'listen = ',
      '"',
      '\n',
      '=',
      '${',
      '}',
    ],
    run: (input) => parseStowageConfig(text(input), 'stowage.toml', ENV),
  },
];
