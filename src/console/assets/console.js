// stowage web console: progressive enhancement only. Every page reads and works without it; with it,
// the job list and a job's page update live (Server-Sent Events), and copy buttons copy.
const $ = (s, el = document) => el.querySelector(s);

// The job list: the server sends the rendered rows whenever they change.
const jobRows = $('tbody[data-live-jobs]');
if (jobRows) {
  const es = new EventSource(jobRows.dataset.liveJobs);
  es.addEventListener('rows', (e) => {
    jobRows.innerHTML = JSON.parse(e.data).html;
  });
}

// One job: progress, per-blob bars, the event log and its state, from the job's own event stream.
const job = $('[data-job-events]');
if (job?.dataset.jobEvents) {
  const progress = $('progress', job);
  const progressText = $('[data-progress-text]', job);
  const state = $('[data-job-state]', job);
  const log = $('[data-job-log]', job);
  const blobs = $('[data-job-blobs]', job);
  const bars = new Map();
  // Sizes as the server and the CLI write them (src/core/figures.ts): decimal units, one decimal.
  const fmt = (n) => {
    const units = ['B', 'kB', 'MB', 'GB', 'TB', 'PB'];
    let v = n;
    let i = 0;
    for (; v >= 999.95 && i < units.length - 1; i++) v /= 1000;
    return i === 0 ? `${Math.round(v)} B` : `${v.toFixed(1)} ${units[i]}`;
  };
  // One <progress> a blob (no inline style: the CSP allows none), found by the server's rendering or made.
  for (const bar of blobs.querySelectorAll('progress'))
    bars.set(bar.getAttribute('aria-label').slice(5), bar);
  const blobBar = (d) => {
    const short = d.digest.slice(7, 19);
    let bar = bars.get(short);
    if (!bar) {
      const name = document.createElement('span');
      name.className = 'mono';
      name.textContent = short;
      bar = document.createElement('progress');
      bar.max = 1;
      bar.value = 0;
      bar.setAttribute('aria-label', `blob ${short}`);
      const size = document.createElement('span');
      size.textContent = fmt(d.size);
      blobs.append(name, bar, size);
      bars.set(short, bar);
    }
    return bar;
  };
  // Time left as the CLI writes it (src/core/figures.ts formatTimeLeft).
  const left = (s) => {
    if (s === null || s === undefined) return 'time left unknown';
    if (s < 120) return `${s} s left`;
    const m = Math.round(s / 60);
    return m < 120 ? `${m} min left` : `${Math.floor(m / 60)} h ${m % 60} min left`;
  };
  // The service's progress events carry the rate and time left (src/core/rate.ts), as the CLI shows them.
  const STALLED_AFTER_MS = 3000;
  let quiet;
  const showProgress = (d, stalled) => {
    const totals = `${fmt(d.bytesDone)} of ${fmt(d.bytes)}, ${d.blobsDone} of ${d.blobs} blobs`;
    const pace =
      d.bytesDone >= d.bytes || d.bytesPerSecond === undefined
        ? ''
        : stalled
          ? ', stalled, time left unknown'
          : `, ${fmt(d.bytesPerSecond)}/s, ${left(d.secondsLeft)}`;
    progressText.textContent = totals + pace;
  };
  const es = new EventSource(job.dataset.jobEvents);
  // A link clicked while the job ends must win over the reload below, or it is silently undone.
  let leaving = false;
  addEventListener('beforeunload', () => {
    leaving = true;
  });
  const line = (type, data) => {
    const row = document.createElement('div');
    row.textContent = `${type} ${JSON.stringify(data)}`;
    log.append(row);
    log.scrollTop = log.scrollHeight;
  };
  // The stream replays the job from its first event: the server's rendering of them is replaced.
  log.textContent = '';
  for (const type of ['state', 'progress', 'tag', 'blob', 'end']) {
    es.addEventListener(type, (e) => {
      const data = JSON.parse(e.data);
      if (type !== 'progress' && type !== 'blob') line(type, data);
      if (type === 'state') state.textContent = data.state;
      if (type === 'state') state.className = `state-${data.state}`;
      if (type === 'progress' && data.bytes > 0) {
        progress.max = data.bytes;
        progress.value = data.bytesDone;
        showProgress(data, data.stalled);
        // No progress for a while (or a replayed past one): the rate it gave is no longer the rate.
        clearTimeout(quiet);
        quiet = setTimeout(() => showProgress(data, true), STALLED_AFTER_MS);
      }
      if (type === 'blob') blobBar(data).value = data.state === 'planned' ? 0 : 1;
      if (type === 'end') {
        clearTimeout(quiet);
        es.close();
        job.dataset.ended = data.state;
        // The finished job's page: its result and links, rendered by the server.
        setTimeout(() => leaving || location.reload(), 300);
      }
    });
  }
}

for (const button of /** @type {NodeListOf<HTMLButtonElement>} */ (
  document.querySelectorAll('button[data-copy]')
)) {
  button.addEventListener('click', () => {
    navigator.clipboard?.writeText($(button.dataset.copy).textContent.trim());
    button.textContent = 'Copied';
  });
}
