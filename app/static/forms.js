// The read (autosaved draft, idempotent submit) and the explanation ratings, against the reading API.

const AUTOSAVE_MS = 5000;
const DEBOUNCE_MS = 800;
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
    this.clientId = read?.state === "draft" ? read.client_id : uuid4();
    this.baseSeconds = read?.state === "draft" ? read.time_spent_seconds ?? 0 : 0;
    this.dirty = false;
    this.saving = null;
    this.submitted = false;
    if (read) this.restore(read);
    if (read?.state === "submitted") this.lock(read);
    form.addEventListener("change", () => this.touch());
    form.addEventListener("input", () => this.touch());
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    });
    this.timer = setInterval(() => this.dirty && this.save(), AUTOSAVE_MS);
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
    return {
      study_id: this.studyId,
      instance_id: instanceId,
      answers: this.answers(),
      time_spent_seconds: Math.round((this.baseSeconds + elapsed) * 10) / 10,
      assistance,
    };
  }

  touch() {
    if (this.submitted) return;
    this.dirty = true;
    clearTimeout(this.debounce);
    this.debounce = setTimeout(() => this.save(), DEBOUNCE_MS);
  }

  async save() {
    if (this.submitted || this.saving) return this.saving;
    this.dirty = false;
    this.saving = send("PUT", `${this.base}/${this.clientId}`, this.body())
      .then(() => this.say(`Draft saved ${clock()}`))
      .catch((error) => {
        this.dirty = true;
        this.say(`Draft not saved: ${error.message}`, "error");
      })
      .finally(() => {
        this.saving = null;
      });
    return this.saving;
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
    clearTimeout(this.debounce);
    await this.saving;
    try {
      const { payload } = await send("POST", `${this.base}/${this.clientId}/submit`, body);
      this.lock(payload);
    } catch (error) {
      this.say(`Not submitted: ${error.message}`, "error");
    }
  }

  lock(read) {
    this.submitted = true;
    clearInterval(this.timer);
    for (const element of this.form.elements) element.disabled = true;
    const when = read.submitted_at ? clock(new Date(read.submitted_at)) : clock();
    this.say(`Submitted ${when} · ${Math.round(read.time_spent_seconds ?? 0)} s on case`, "ok");
    this.form.dataset.state = "submitted";
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
    this.clientIds = new Map(); // heatmap id -> client id of the rating being written, reused on retry
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    });
  }

  show(heatmap) {
    this.heatmap = heatmap;
    this.form.reset();
    this.title.textContent = heatmap ? `${heatmap.method_label} (${heatmap.target_label})` : "";
    this.badge.hidden = !heatmap?.rated;
    this.say("");
    for (const element of this.form.elements) element.disabled = !heatmap;
    // No heatmap on this image (no AI result, outside the model's domain, a condition without maps): no form.
    this.form.hidden = !heatmap;
  }

  async submit() {
    const heatmap = this.heatmap;
    if (!heatmap) return;
    const answers = {};
    for (const set of this.form.querySelectorAll("fieldset[data-question]")) {
      const checked = set.querySelector("input:checked");
      if (checked) answers[set.dataset.question] = Number(checked.value);
    }
    if (!Object.keys(answers).length) {
      this.say("Answer at least one question.", "error");
      return;
    }
    if (!this.clientIds.has(heatmap.id)) this.clientIds.set(heatmap.id, uuid4());
    const body = {
      client_id: this.clientIds.get(heatmap.id),
      heatmap_id: heatmap.id,
      answers,
      comment: this.form.querySelector("textarea").value,
    };
    try {
      await send("POST", this.url, body);
      this.clientIds.delete(heatmap.id); // the next rating of this heatmap is a new one
      heatmap.rated = true;
      this.badge.hidden = false;
      this.say(`Rating saved ${clock()}`, "ok");
      this.onSaved(heatmap);
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
