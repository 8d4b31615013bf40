import type cliProgressType from 'cli-progress';
import type { ProgressEvent, ProgressListener } from '../core/progress.js';
import { formatBytes } from './format.js';

/** Renders engine progress events as bars on a terminal (stderr). Returns a stop function. */
export async function progressRenderer(
  stream: NodeJS.WriteStream,
): Promise<{ listener: ProgressListener; stop: () => void }> {
  if (!stream.isTTY) return { listener: () => {}, stop: () => {} };
  // Loaded only for a terminal: it is not needed otherwise.
  const cliProgress = (await import('cli-progress')).default;
  const multi = new cliProgress.MultiBar(
    {
      stream,
      clearOnComplete: false,
      hideCursor: true,
      format: ' {name} [{bar}] {percentage}% {done}/{size}',
      barsize: 30,
      fps: 10,
    },
    cliProgress.Presets.shades_classic,
  );
  const bars = new Map<string, cliProgressType.SingleBar>();
  const listener = (e: ProgressEvent) => {
    if (e.type === 'blob-start') {
      bars.set(
        e.digest,
        multi.create(e.size, 0, {
          name: e.digest.slice(7, 19),
          done: formatBytes(0),
          size: formatBytes(e.size),
        }),
      );
    } else if (e.type === 'blob-progress' || e.type === 'blob-done') {
      const bytes = e.type === 'blob-done' ? e.size : e.bytes;
      bars.get(e.digest)?.update(bytes, { done: formatBytes(bytes) });
    }
  };
  let stopped = false;
  const stop = () => {
    if (stopped) return;
    stopped = true;
    multi.stop();
  };
  return { listener, stop };
}
