// Live updates of a study's AI (app/live, docs/api.md "Live updates"): the server's event stream while its
// jobs run, polling /api/studies/{id}/ai where EventSource is missing or cannot connect. Stops by itself once
// `finished(state)` says nothing more will come.

const POLL_MS = 3000;
const MAX_FAILED_CONNECTS = 3; // in a row, without one that opened: then poll instead

export function followStudy(studyId, { onState, onResults, onRefused = () => {}, finished }) {
  let source = null;
  let timer = null;
  let stopped = false;
  let failedConnects = 0;

  function stop() {
    stopped = true;
    source?.close();
    source = null;
    clearTimeout(timer);
  }

  // Results before state: the state that says "done" ends the subscription.
  function apply(instances, state) {
    if (instances) onResults(instances);
    if (state) {
      onState(state);
      if (finished(state)) stop();
    }
  }

  async function poll() {
    if (stopped) return;
    try {
      const response = await fetch(`/api/studies/${studyId}/ai`, { headers: { Accept: "application/json" } });
      if ([401, 403, 404].includes(response.status)) {
        const body = await response.json().catch(() => ({}));
        stop();
        onRefused({ status: response.status, detail: body.detail ?? "" });
        return;
      }
      if (!response.ok) throw new Error(`status ${response.status}`);
      const snapshot = await response.json();
      apply(snapshot.instances, snapshot.state);
    } catch (error) {
      console.warn("AI state refresh failed, retrying", error);
    }
    if (!stopped) timer = setTimeout(poll, POLL_MS);
  }

  function fallBack() {
    source?.close();
    source = null;
    poll();
  }

  function listen() {
    source = new EventSource(`/api/studies/${studyId}/events`);
    source.addEventListener("open", () => {
      failedConnects = 0;
    });
    source.addEventListener("results", (event) => apply(JSON.parse(event.data).instances, null));
    source.addEventListener("state", (event) => apply(null, JSON.parse(event.data)));
    source.addEventListener("end", stop); // no job is queued or running: nothing more will come
    source.addEventListener("refused", (event) => {
      const refusal = JSON.parse(event.data);
      if (refusal.status === 503) return fallBack(); // the server holds too many streams: poll instead
      stop();
      onRefused(refusal);
    });
    source.addEventListener("error", () => {
      // CLOSED: the server answered with an error status and EventSource gives up. Otherwise the stream ended
      // (its five minutes, a restart) and EventSource reconnects by itself after the server's `retry:`.
      failedConnects += 1;
      if (source?.readyState === EventSource.CLOSED || failedConnects >= MAX_FAILED_CONNECTS) fallBack();
    });
  }

  if (typeof EventSource === "function") listen();
  else poll();
  return {
    stop,
    get mode() {
      return stopped ? "stopped" : source ? "stream" : "poll";
    },
  };
}

// The worklist's rows as the server changes them (app/live, docs/api.md "Live updates"): `onRows({ids, studies,
// active})` with the rows that changed and the ids of every row, newest first. Where EventSource is missing or
// cannot connect three times in a row, /api/worklist is polled instead: every 2 s while a study is queued or
// running, else every 15 s (new uploads). `refresh()` asks /api/worklist once (after this page's own upload).
const WORKLIST_POLL_MS = 2000;
const WORKLIST_IDLE_POLL_MS = 15000;

export function followWorklist({ onRows, onSignedOut }) {
  let source = null;
  let timer = null;
  let polling = false;
  let failedConnects = 0;

  async function refresh() {
    const response = await fetch("/api/worklist", { headers: { Accept: "application/json" } });
    if (response.status === 401) {
      stop();
      onSignedOut();
      return null;
    }
    if (!response.ok) throw new Error(`worklist answered ${response.status}`);
    const worklist = await response.json();
    onRows({ ids: worklist.studies.map((row) => row.id), studies: worklist.studies, active: worklist.active });
    return worklist;
  }

  async function poll() {
    let delay = WORKLIST_POLL_MS;
    try {
      const worklist = await refresh();
      if (!worklist) return;
      if (!worklist.active) delay = WORKLIST_IDLE_POLL_MS;
    } catch (error) {
      console.warn("worklist refresh failed, retrying", error);
    }
    if (polling) timer = setTimeout(poll, delay);
  }

  function stop() {
    polling = false;
    source?.close();
    source = null;
    clearTimeout(timer);
  }

  function fallBack() {
    source?.close();
    source = null;
    polling = true;
    poll();
  }

  function listen() {
    source = new EventSource("/api/worklist/events");
    source.addEventListener("open", () => {
      failedConnects = 0;
    });
    source.addEventListener("rows", (event) => onRows(JSON.parse(event.data)));
    source.addEventListener("refused", (event) => {
      const refusal = JSON.parse(event.data);
      if (refusal.status === 401) {
        stop();
        onSignedOut();
      } else fallBack(); // 503: the server holds too many streams
    });
    source.addEventListener("error", () => {
      failedConnects += 1;
      if (source?.readyState === EventSource.CLOSED || failedConnects >= MAX_FAILED_CONNECTS) fallBack();
    });
  }

  if (typeof EventSource === "function") listen();
  else fallBack();
  return {
    refresh,
    stop,
    get mode() {
      return source ? "stream" : polling ? "poll" : "stopped";
    },
  };
}
