/** Progress events the engine emits; the CLI renders them, the API streams them. */
export type ProgressEvent =
  | { type: 'resolved'; reference: string; digest: string; mediaType: string; platforms: string[] }
  | { type: 'plan'; blobs: number; totalBytes: number }
  | { type: 'blob-start'; digest: string; size: number }
  | { type: 'blob-progress'; digest: string; bytes: number; size: number }
  | { type: 'blob-done'; digest: string; size: number }
  | { type: 'finalizing'; path: string };

export type ProgressListener = (event: ProgressEvent) => void;
