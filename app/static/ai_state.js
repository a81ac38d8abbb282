// The AI state of a study, drawn with DOM nodes (never innerHTML with data): same markup as _ai_state.html.

export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

export function renderAiState(container, row) {
  const oldFill = container.querySelector(".progress-bar");
  if (oldFill && container.dataset.state === "running" && row.ai_state === "running") {
    // Move the existing bar so that its width animates instead of jumping.
    oldFill.style.width = `${row.ai_progress}%`;
    oldFill.parentElement.setAttribute("aria-valuenow", String(row.ai_progress));
    container.querySelector(".progress-text").textContent = `${row.ai_progress}%`;
    return;
  }
  const nodes = [];
  if (row.ai_state === "no_model") {
    nodes.push(el("span", "badge badge-muted", "no model for this modality"));
  } else if (row.ai_state === "queued") {
    nodes.push(el("span", "badge badge-queued", "queued"));
    const place = queuePlace(row);
    if (place) nodes.push(document.createTextNode(" "), el("span", "queue-place", place));
  } else if (row.ai_state === "running") {
    nodes.push(el("span", "badge badge-running", "running"));
    const bar = el("div", "progress");
    bar.setAttribute("role", "progressbar");
    bar.setAttribute("aria-valuemin", "0");
    bar.setAttribute("aria-valuemax", "100");
    bar.setAttribute("aria-valuenow", String(row.ai_progress));
    const fill = el("div", "progress-bar");
    fill.style.width = `${row.ai_progress}%`;
    bar.append(fill);
    nodes.push(bar, el("span", "progress-text", `${row.ai_progress}%`));
  } else if (row.ai_state === "done") {
    nodes.push(el("span", "badge badge-done", "done"));
    // The model's label is AI assistance: hidden with it (body.assist-off .assist).
    if (row.ai_label) nodes.push(document.createTextNode(" "), el("strong", "ai-label assist", row.ai_label));
  } else if (row.ai_state === "failed") {
    nodes.push(el("span", "badge badge-failed", "failed"));
    if (row.ai_error) nodes.push(document.createTextNode(" "), el("span", "ai-error", row.ai_error));
  }
  container.replaceChildren(...nodes);
  container.dataset.state = row.ai_state;
}

function ordinal(n) {
  const suffix = [11, 12, 13].includes(n % 100) ? "th" : ({ 1: "st", 2: "nd", 3: "rd" }[n % 10] ?? "th");
  return `${n}${suffix}`;
}

// "3rd, about 12 s": the place of a queued study's first job, as _ai_state.html writes it.
export function queuePlace(row) {
  if (!row.queue_position) return "";
  const seconds = row.queue_expected_start_s;
  if (seconds === null || seconds === undefined) return ordinal(row.queue_position);
  const wait = seconds < 90 ? `about ${Math.round(seconds)} s` : `about ${Math.round(seconds / 60)} min`;
  return `${ordinal(row.queue_position)}, ${wait}`;
}

export function isActive(state) {
  return state === "queued" || state === "running";
}
