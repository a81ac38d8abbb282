// The read (autosaved draft, idempotent submit) and the explanation ratings, against the reading API.
//
// The autosave never loses a change: every change is sent at once (one request in flight; when it returns, the
// latest state goes next), on blur, and when the page is left (pagehide, or hidden) by navigator.sendBeacon.
// The page numbers its drafts (client_seq) and the server keeps the newest, so a late request never overwrites
// a newer draft. The last draft not yet confirmed is also kept in sessionStorage: a reload can be rendered
// before the beacon of the page it replaces arrives, and then restores that draft and sends it again.

const RETRY_MS = 5000;
const csrf = document.querySelector('meta[name="csrf-token"]')?.content ?? "";

export function uuid4() {
  // crypto.randomUUID needs a secure context; getRandomValues does not.
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

export async function send(method, url, body, { keepalive = false } = {}) {
  const response = await fetch(url, {
    method,
    keepalive,
    headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRF-Token": csrf },
    body: JSON.stringify(body),
  });
  const payload = await response.json().catch(() => null);
  if (!response.ok) {
    const detail = payload?.detail;
    const reason = typeof detail === "string" ? detail
      : Array.isArray(detail) ? detail.map((item) => item.msg ?? JSON.stringify(item)).join("; ")
        : `the server answered ${response.status}`;
    const error = new Error(reason);
    error.status = response.status;
    throw error;
  }
  return { status: response.status, payload };
}

function clock(date = new Date()) {
  return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

export class ReadForm {
  constructor({ form, status, studyId, read, getContext, base = "/api/reads", onSubmitted = () => {} }) {
    this.form = form;
    this.base = base; // a reader-study read goes to /api/assignments/{id}/reads
    this.onSubmitted = onSubmitted;
    this.status = status;
    this.studyId = studyId;
    this.getContext = getContext; // () => ({instanceId, assistance, firstPaintAt})
    this.pendingKey = `lumen.draft:${base}:${studyId ?? ""}`;
    const pending = this.resumable(read);
    const draft = pending ?? (read?.state === "draft" ? read : null);
    this.clientId = draft?.client_id ?? uuid4();
    // The reader's evidence marks (evidence.js sets them as they change); null: this page sends none.
    this.evidenceMarks = pending?.evidence_marks ?? read?.evidence_marks ?? null;
    this.baseSeconds = draft?.time_spent_seconds ?? 0;
    this.seq = Math.max(read?.client_seq ?? 0, pending?.client_seq ?? 0);
    this.dirty = false;
    this.saving = null;
    this.submitted = false;
    if (read) this.restore(read);
    if (pending) this.restore(pending);
    if (read?.state === "submitted") this.lock(read);
    form.addEventListener("change", () => this.touch());
    form.addEventListener("input", () => this.touch());
    form.addEventListener("focusout", () => this.dirty && this.save());
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    });
    // Leaving the page (reload, navigation, tab closed) or hiding it (the tab may be discarded): send now.
    window.addEventListener("pagehide", () => this.leave());
    document.addEventListener("visibilitychange", () => document.visibilityState === "hidden" && this.leave());
    this.timer = setInterval(() => this.dirty && this.save(), RETRY_MS); // retries a draft the server refused
    if (pending) this.touch(); // the server has an older draft than this page had: send it again
  }

  /** The draft kept by an earlier page of this read that the server may not have (newer than `read`), or null. */
  resumable(read) {
    const kept = JSON.parse(sessionStorage.getItem(this.pendingKey) ?? "null");
    const newer = kept && read?.state !== "submitted" && (!read || read.client_id === kept.client_id)
      && kept.client_seq > (read?.client_seq ?? -1);
    if (!newer) sessionStorage.removeItem(this.pendingKey);
    return newer ? kept : null;
  }

  restore(read) {
    for (const [name, value] of Object.entries(read.answers ?? {})) {
      const field = this.form.elements.namedItem(name);
      if (!field) continue;
      if (field instanceof RadioNodeList || field.type === "radio") {
        for (const input of this.form.querySelectorAll(`input[name="${name}"]`)) input.checked = input.value === String(value);
      } else field.value = value;
    }
  }

  answers() {
    const data = new FormData(this.form);
    const answers = {};
    for (const name of ["dr_grade", "confidence"]) if (data.has(name)) answers[name] = Number(data.get(name));
    if (data.has("dme")) answers.dme = data.get("dme") === "true";
    if (data.has("finding")) answers.finding = data.get("finding");
    const note = (data.get("note") ?? "").trim();
    if (note) answers.note = note;
    return answers;
  }

  body() {
    const { instanceId, assistance, firstPaintAt } = this.getContext();
    const elapsed = firstPaintAt == null ? 0 : (performance.now() - firstPaintAt) / 1000;
    // Milliseconds since the epoch, raised past the last number: a reload numbers its drafts after its page's.
    this.seq = Math.max(Date.now(), this.seq + 1);
    return {
      study_id: this.studyId,
      instance_id: instanceId,
      answers: this.answers(),
      time_spent_seconds: Math.round((this.baseSeconds + elapsed) * 10) / 10,
      assistance,
      client_seq: this.seq,
      ...(this.evidenceMarks ? { evidence_marks: this.evidenceMarks } : {}),
    };
  }

  /** Keep this draft in the tab until the server confirms a draft at least as new. */
  keep(body) {
    sessionStorage.setItem(this.pendingKey, JSON.stringify({ client_id: this.clientId, ...body }));
  }

  confirmed(read) {
    const kept = JSON.parse(sessionStorage.getItem(this.pendingKey) ?? "null");
    if (kept && kept.client_id === read.client_id && (read.client_seq ?? 0) >= kept.client_seq) {
      sessionStorage.removeItem(this.pendingKey);
    }
  }

  touch() {
    if (this.submitted) return;
    this.dirty = true;
    this.keep(this.body());
    this.save();
  }

  /** Send the draft; while one is in flight, the latest state is sent when it returns (one request at a time). */
  save() {
    if (this.submitted || this.saving) return this.saving;
    this.dirty = false;
    let sent = false;
    // keepalive: a request in flight when the page is left still reaches the server.
    this.saving = send("PUT", `${this.base}/${this.clientId}`, this.body(), { keepalive: true })
      .then(({ payload }) => {
        sent = true;
        this.confirmed(payload);
        this.say(`Draft saved ${clock()}`);
      })
      .catch((error) => {
        if (error.status === 409) return this.submittedElsewhere();
        this.dirty = true;
        this.say(`Draft not saved: ${error.message}`, "error");
      })
      .finally(() => {
        this.saving = null;
        if (sent && this.dirty) this.save();
      });
    return this.saving;
  }

  /** The page is being left or hidden: send what the server may not have yet, by a beacon that outlives it. */
  leave() {
    if (this.submitted || (!this.dirty && !this.saving)) return;
    this.dirty = false;
    const body = this.body();
    this.keep(body);
    const url = `${this.base}/${this.clientId}`;
    if (this.base === "/api/reads" && navigator.sendBeacon) {
      // A beacon cannot send headers: the CSRF token goes in the form, as with any form (app/auth).
      const form = new FormData();
      form.append("csrf_token", csrf);
      form.append("draft", JSON.stringify(body));
      if (navigator.sendBeacon(`${url}/draft`, form)) return;
    }
    send("PUT", url, body, { keepalive: true }).catch(() => {
      this.dirty = true;
    });
  }

  /** A draft answered 409: the read was submitted (by this page before a reload, or another tab). */
  async submittedElsewhere() {
    sessionStorage.removeItem(this.pendingKey);
    try {
      const response = await fetch(`${this.base}/${this.clientId}`, { headers: { Accept: "application/json" } });
      if (response.ok) return this.lock(await response.json());
    } catch (error) {
      console.warn("could not load the submitted read", error);
    }
    this.say("This read was submitted already: reload the page to see it.", "error");
  }

  async submit() {
    if (this.submitted) return;
    const body = this.body();
    const required = this.form.querySelectorAll("fieldset[data-field]");
    const missing = [...required].filter((set) => !(set.dataset.field in body.answers));
    for (const set of required) set.classList.toggle("missing", missing.includes(set));
    if (missing.length) {
      this.say(`Please answer: ${missing.map((set) => set.querySelector("legend").textContent).join(", ")}`, "error");
      return;
    }
    // Sent at once, not after a draft in flight: a draft that arrives after the submission is refused (409),
    // and a reload right after the click must not find the submission still waiting on the page.
    try {
      const { payload } = await send("POST", `${this.base}/${this.clientId}/submit`, body, { keepalive: true });
      this.lock(payload);
    } catch (error) {
      this.say(`Not submitted: ${error.message}`, "error");
    }
  }

  lock(read) {
    this.submitted = true;
    this.dirty = false;
    clearInterval(this.timer);
    sessionStorage.removeItem(this.pendingKey);
    for (const element of this.form.elements) element.disabled = true;
    const when = read.submitted_at ? clock(new Date(read.submitted_at)) : clock();
    this.say(`Submitted ${when} · ${Math.round(read.time_spent_seconds ?? 0)} s on case`, "ok");
    this.form.dataset.state = "submitted";
    this.form.dispatchEvent(new CustomEvent("readlocked", { detail: read })); // evidence.js freezes its marks
    this.onSubmitted(read);
  }

  say(text, kind = "") {
    this.status.textContent = text;
    this.status.className = `form-status ${kind}`;
  }
}

export class RatingForm {
  constructor({ form, status, title, badge, url = "/api/ratings", onSaved = () => {} }) {
    this.form = form;
    this.url = url;
    this.onSaved = onSaved;
    this.status = status;
    this.title = title;
    this.badge = badge;
    this.heatmap = null;
    this.clientIds = new Map(); // what is rated -> client id of the rating being written, reused on retry
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    });
  }

  // `target`: a heatmap ({id, method_label, target_label, rated}) or an explanation beyond maps
  // ({explanation, prediction_id, method_label, target_label, rated}: beyond.js); null hides the form.
  show(target) {
    this.heatmap = target;
    this.form.reset();
    this.title.textContent = target ? `${target.method_label} (${target.target_label})` : "";
    this.badge.hidden = !target?.rated;
    this.say("");
    for (const element of this.form.elements) element.disabled = !target;
    // Nothing to rate on this image (no AI result, outside the model's domain, a condition without one): no form.
    this.form.hidden = !target;
  }

  async submit() {
    const target = this.heatmap;
    if (!target) return;
    const answers = {};
    for (const set of this.form.querySelectorAll("fieldset[data-question]")) {
      const checked = set.querySelector("input:checked");
      if (checked) answers[set.dataset.question] = Number(checked.value);
    }
    if (!Object.keys(answers).length) {
      this.say("Answer at least one question.", "error");
      return;
    }
    const key = target.explanation ? `${target.explanation}:${target.prediction_id}` : `heatmap:${target.id}`;
    if (!this.clientIds.has(key)) this.clientIds.set(key, uuid4());
    const rated = target.explanation
      ? { prediction_id: target.prediction_id, explanation: target.explanation }
      : { heatmap_id: target.id };
    const body = {
      client_id: this.clientIds.get(key),
      ...rated,
      answers,
      comment: this.form.querySelector("textarea").value,
    };
    try {
      await send("POST", this.url, body);
      this.clientIds.delete(key); // the next rating of this explanation is a new one
      target.rated = true;
      this.badge.hidden = false;
      this.say(`Rating saved ${clock()}`, "ok");
      this.onSaved(target);
    } catch (error) {
      this.say(`Rating not saved: ${error.message}`, "error");
    }
  }

  say(text, kind = "") {
    this.status.textContent = text;
    this.status.className = `form-status ${kind}`;
  }
}

export class EventLog {
  constructor({ studyId, readClientId, url = "/api/assistance-events" }) {
    this.studyId = studyId;
    this.url = url;
    this.readClientId = readClientId;
    this.queue = [];
    setInterval(() => this.flush(), 3000);
    window.addEventListener("pagehide", () => this.flush(true));
  }

  add(event, instanceId, detail = {}) {
    this.queue.push({
      event,
      study_id: this.studyId,
      instance_id: instanceId,
      read_client_id: this.readClientId(),
      detail,
      client_at: new Date().toISOString(),
    });
  }

  async flush(keepalive = false) {
    if (!this.queue.length) return;
    const events = this.queue.splice(0, 200);
    try {
      await send("POST", this.url, { events }, { keepalive });
    } catch (error) {
      if (error.status >= 500 || error.status === undefined) this.queue.unshift(...events);
      console.warn("assistance events not stored", error);
    }
  }
}
