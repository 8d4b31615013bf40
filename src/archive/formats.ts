/** The archive formats stowage writes and reads (a module of its own: the CLI's help needs just this). */
export type ArchiveFormat = 'oci-archive' | 'docker-archive' | 'oci' | 'dir';
export const ARCHIVE_FORMATS: readonly ArchiveFormat[] = ['oci-archive', 'docker-archive', 'oci', 'dir'];
