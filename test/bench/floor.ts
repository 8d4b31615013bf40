/**
 * Floor experiments for the upload benchmarks: the same blobs sent by curl with nothing else in the
 * way (no start-up, no digest check, no planning), so a ratio to skopeo can be told apart from what the
 * registry itself costs. Each blob goes in one POST and one PUT with its digest, the fewest requests the
 * distribution API allows, all blobs at once.
 */
import { stat } from 'node:fs/promises';

/**
 * bash -c script. Arguments: host, repository, then pairs of digest and source; a source is a file
 * (sent with curl -T) or an http:// URL (fetched by one curl and piped into the PUT of another).
 */
const CURL_UPLOAD = `host=$1 repo=$2; shift 2
up() {
  loc=$(curl -sS -f -D - -o /dev/null -X POST "http://$host/v2/$repo/blobs/uploads/" | tr -d '\\r' | sed -n 's/^[Ll]ocation: //p')
  case $loc in http*) ;; *) loc="http://$host$loc" ;; esac
  case $loc in *\\?*) sep='&' ;; *) sep='?' ;; esac
  put=(curl -sS -f -o /dev/null -X PUT -H 'Content-Type: application/octet-stream' "$loc\${sep}digest=$1")
  case $2 in
    http://*) set -o pipefail; curl -sS -f "$2" | "\${put[@]}" -T - ;;
    *) "\${put[@]}" -T "$2" ;;
  esac
}
pids=()
while [ $# -gt 0 ]; do up "$1" "$2" & pids+=($!); shift 2; done
for p in "\${pids[@]}"; do wait "$p" || exit 1; done`;

export interface FloorBlob {
  digest: string;
  /** A file, or the blob's URL in another registry. */
  source: string;
}

/** The command (bash) and arguments that upload `blobs` into `host/repository` all at once. */
export function curlUpload(host: string, repository: string, blobs: FloorBlob[]): [string, string[]] {
  const pairs = blobs.flatMap((b) => [b.digest, b.source]);
  return ['bash', ['-c', CURL_UPLOAD, 'curl-upload', host, repository, ...pairs]];
}

/** The blobs of an unpacked OCI layout's blobs/sha256 directory, as upload sources. */
export function layoutBlobs(dir: string, names: string[]): FloorBlob[] {
  return names.map((n) => ({ digest: `sha256:${n}`, source: `${dir}/${n}` }));
}

export async function largestBlob(blobs: FloorBlob[]): Promise<FloorBlob> {
  const sizes = await Promise.all(blobs.map(async (b) => ({ b, size: (await stat(b.source)).size })));
  return sizes.reduce((a, c) => (c.size > a.size ? c : a)).b;
}
