/**
 * Tarballs for fixtures, written by a third party (tar-stream), not by stowage's own tar header code: a
 * bug shared by our writer and our reader cannot hide behind a fixture made with the same code.
 */
import { writeFile } from 'node:fs/promises';
import { pack } from 'tar-stream';

export interface TarFixtureEntry {
  name: string;
  type?: 'file' | 'directory' | 'symlink';
  data?: Buffer | string;
  linkname?: string;
}

/** Writes `entries` as a tar file at `path`, in order, with a fixed mtime (`mtime` seconds). */
export async function writeTarFixture(path: string, entries: TarFixtureEntry[], mtime = 0): Promise<void> {
  const p = pack();
  const chunks: Buffer[] = [];
  p.on('data', (c: unknown) => chunks.push(c as Buffer));
  const done = new Promise<void>((resolve, reject) => {
    p.on('end', resolve);
    p.on('error', reject);
  });
  for (const e of entries) {
    const type = e.type ?? 'file';
    const data = Buffer.from(e.data ?? '');
    const header = {
      name: e.name,
      type,
      mtime: new Date(mtime * 1000),
      mode: type === 'directory' ? 0o755 : type === 'symlink' ? 0o777 : 0o644,
      uid: 0,
      gid: 0,
      ...(type === 'file' ? { size: data.length } : {}),
      ...(e.linkname !== undefined ? { linkname: e.linkname } : {}),
    };
    await new Promise<void>((resolve, reject) =>
      type === 'file'
        ? p.entry(header, data, (err) => (err ? reject(err) : resolve()))
        : p.entry(header, (err) => (err ? reject(err) : resolve())),
    );
  }
  p.finalize();
  await done;
  await writeFile(path, Buffer.concat(chunks));
}
