/**
 * The trust policy container users already have: containers-policy.json(5), read from --policy, else
 * $HOME/.config/containers/policy.json, else /etc/containers/policy.json. Parsed strictly, as the man
 * page asks (an unknown field rejects the file), and asked for the requirements of an image by its
 * transport and the most specific scope that names it.
 */
import { readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import { StowageError } from '../errors.js';
import { formatReference, type ImageReference } from '../reference/reference.js';

const signedIdentitySchema = z.discriminatedUnion('type', [
  z.strictObject({ type: z.literal('matchExact') }),
  z.strictObject({ type: z.literal('matchRepoDigestOrExact') }),
  z.strictObject({ type: z.literal('matchRepository') }),
  z.strictObject({ type: z.literal('exactReference'), dockerReference: z.string().min(1) }),
  z.strictObject({ type: z.literal('exactRepository'), dockerRepository: z.string().min(1) }),
  z.strictObject({
    type: z.literal('remapIdentity'),
    prefix: z.string().min(1),
    signedPrefix: z.string().min(1),
  }),
]);

const requirementSchema = z.discriminatedUnion('type', [
  z.strictObject({ type: z.literal('insecureAcceptAnything') }),
  z.strictObject({ type: z.literal('reject') }),
  z.strictObject({
    type: z.literal('signedBy'),
    keyType: z.string(),
    keyPath: z.string().optional(),
    keyPaths: z.array(z.string()).optional(),
    keyData: z.string().optional(),
    signedIdentity: signedIdentitySchema.optional(),
  }),
  z.strictObject({
    type: z.literal('sigstoreSigned'),
    keyPath: z.string().optional(),
    keyPaths: z.array(z.string()).optional(),
    keyData: z.string().optional(),
    keyDatas: z.array(z.string()).optional(),
    fulcio: z.record(z.string(), z.unknown()).optional(),
    rekorPublicKeyPath: z.string().optional(),
    rekorPublicKeyPaths: z.array(z.string()).optional(),
    rekorPublicKeyData: z.string().optional(),
    rekorPublicKeyDatas: z.array(z.string()).optional(),
    signedIdentity: signedIdentitySchema.optional(),
  }),
]);

const policySchema = z.strictObject({
  default: z.array(requirementSchema).min(1),
  transports: z.record(z.string(), z.record(z.string(), z.array(requirementSchema).min(1))).optional(),
});

export type SignedIdentity = z.infer<typeof signedIdentitySchema>;
export type Requirement = z.infer<typeof requirementSchema>;

export interface Policy {
  /** Where it was read (for messages). */
  path: string;
  default: Requirement[];
  transports: Record<string, Record<string, Requirement[]>>;
}

/** Parses policy.json text; INVALID_CONFIG naming the file and the field on anything it does not know. */
export function parsePolicy(text: string, path: string): Policy {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new StowageError('INVALID_CONFIG', `${path} is not valid JSON: ${(e as Error).message}`);
  }
  const r = policySchema.safeParse(raw);
  if (!r.success) {
    const issue = r.error.issues[0]!;
    throw new StowageError(
      'INVALID_CONFIG',
      `${path}: ${issue.path.join('.') || '(top)'}: ${issue.message}; see containers-policy.json(5)`,
    );
  }
  return { path, default: r.data.default, transports: r.data.transports ?? {} };
}

/**
 * The policy in force: `path` if given (it must exist), else the user's, else the system's. Undefined
 * when there is none at all: then nothing is checked, as docker does (skopeo refuses to run).
 */
export async function loadPolicy(
  opts: { path?: string | undefined; env?: NodeJS.ProcessEnv } = {},
): Promise<Policy | undefined> {
  if (opts.path) {
    const text = await readFile(opts.path, 'utf8').catch((e: NodeJS.ErrnoException) => {
      throw new StowageError(
        'INVALID_ARGUMENT',
        `cannot read the policy ${opts.path}: ${e.code ?? e.message}`,
      );
    });
    return parsePolicy(text, opts.path);
  }
  const home = opts.env?.HOME ?? homedir();
  for (const path of [join(home, '.config/containers/policy.json'), '/etc/containers/policy.json']) {
    const text = await readFile(path, 'utf8').catch(() => undefined);
    if (text !== undefined) return parsePolicy(text, path);
  }
  return undefined;
}

/**
 * The scopes of a registry image, most specific first: the reference with its tag or digest, the
 * repository, each namespace above it, the registry, and the wildcards for its domain (*.example.com).
 */
export function dockerScopes(ref: ImageReference): string[] {
  const repo = `${ref.domain}/${ref.path}`;
  const scopes: string[] = [];
  if (ref.tag || ref.digest) scopes.push(formatReference(ref));
  scopes.push(repo);
  const parts = repo.split('/');
  for (let i = parts.length - 1; i >= 1; i--) scopes.push(parts.slice(0, i).join('/'));
  const host = ref.domain.replace(/:\d+$/, '');
  const labels = host.split('.');
  for (let i = 1; i < labels.length; i++) scopes.push(`*.${labels.slice(i).join('.')}`);
  return [...new Set(scopes)];
}

/** The requirements for an image: its transport's most specific scope, else its default, else the policy's. */
export function requirementsFor(
  policy: Policy,
  transport: string,
  scopes: string[],
): { requirements: Requirement[]; scope: string } {
  const t = policy.transports[transport];
  for (const scope of scopes) {
    const r = t?.[scope];
    if (r) return { requirements: r, scope: `transports.${transport}["${scope}"]` };
  }
  if (t?.['']) return { requirements: t[''], scope: `transports.${transport}[""]` };
  return { requirements: policy.default, scope: 'default' };
}
