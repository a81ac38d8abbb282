// Explanations beyond heatmaps in the assistance panel (app/reading/beyond.py): the written justification,
// the concept evidence and the similar confirmed cases of one prediction. They are listed with the heatmap
// methods in the panel's explanation list; the one picked shows in the map controls' place (so the panel keeps
// its size) and is what the rating form rates, on the same Likert questions as a map. The server leaves out
// (null) what a reader-study condition does not show.
import { el } from "./ai_state.js";

const NAMES = {
  similar_cases: "Similar confirmed cases",
  concepts: "Concept evidence",
  justification: "Written justification",
};

const rated = new Set(); // "explanation:prediction id" rated in this page

// The explanations beyond maps a reader may rate on this image, in the panel's order.
export function beyondTargets(a) {
  if (!a) return [];
  return ["justification", "concepts", "similar_cases"]
    .filter((explanation) => a[explanation])
    .map((explanation) => ({
      explanation,
      prediction_id: a.prediction_id,
      method_label: NAMES[explanation],
      target_label: a.label,
      get rated() {
        return rated.has(`${explanation}:${a.prediction_id}`);
      },
      set rated(value) {
        if (value) rated.add(`${explanation}:${a.prediction_id}`);
      },
    }));
}

function heading(explanation) {
  return el("h3", "beyond-heading", NAMES[explanation]);
}

function justificationNodes(a) {
  const box = el("section", "beyond beyond-justification");
  box.setAttribute("aria-label", NAMES.justification);
  box.append(heading("justification"));
  for (const sentence of a.justification) box.append(el("p", "justification-sentence", sentence));
  box.append(el("p", "muted small", "Composed by fixed rules from the numbers the model stored; no language model."));
  return box;
}

function conceptNodes(a) {
  const c = a.concepts;
  const box = el("section", "beyond beyond-concepts");
  box.setAttribute("aria-label", NAMES.concepts);
  box.append(heading("concepts"));
  const headline = c.headline ? `Evidence resembles: ${c.headline}.` : "No learnt concept stands out in this prediction's evidence.";
  box.append(el("p", "concept-headline", headline));
  const list = el("ul", "concept-list");
  for (const item of c.items) {
    const validated = item.validated !== false;
    const row = el("li", `concept concept-${item.strength}${validated ? "" : " unvalidated"}`);
    const word = validated ? item.strength : "not validated";
    row.append(el("span", "concept-name", item.concept), " ", el("span", `badge concept-strength strength-${validated ? item.strength : "none"}`, word));
    row.title = `sensitivity ${item.sensitivity.toFixed(4)}` +
      (item.accuracy != null ? `; the concept vector tells held-out examples from random ones ${Math.round(item.accuracy * 100)}% of the time` : "") +
      (validated ? "" : ", not better than chance: not told as evidence");
    list.append(row);
  }
  box.append(list);
  const link = el("a", "small", "What these concepts are and how they were measured");
  link.href = c.page_url;
  link.target = "_blank";
  link.rel = "noopener";
  box.append(link);
  return box;
}

function similarNodes(a) {
  const s = a.similar_cases;
  const box = el("section", "beyond beyond-similar");
  box.setAttribute("aria-label", NAMES.similar_cases);
  box.append(heading("similar_cases"));
  const k = s.cases.length;
  const what = a.multilabel ? `have ${a.label}` : `were graded ${a.label}`;
  box.append(el("p", "similar-summary", `${s.agreeing} of the ${k} most similar confirmed cases ${what}.`));
  const grid = el("div", "similar-grid");
  for (const item of s.cases) {
    const figure = el("figure", `similar-case ${item.agrees ? "agrees" : "differs"}`);
    const img = el("img");
    img.src = item.thumbnail_url;
    img.alt = `Reference case ${item.case_id}: ${item.labels.join(", ") || "no finding"}`;
    img.loading = "lazy";
    const caption = el("figcaption");
    caption.append(el("strong", "similar-label", item.labels.join(", ") || "no finding"), el("br"),
      el("span", "muted small", `similarity ${item.similarity.toFixed(2)}`));
    figure.title = item.case_id;
    figure.append(img, caption);
    grid.append(figure);
  }
  box.append(grid);
  let note = `From ${s.library}.`;
  if (s.precision != null && s.prior != null) {
    note += ` On the test split, ${Math.round(s.precision * 100)}% of such neighbours share the case's label (chance: ${Math.round(s.prior * 100)}%).`;
  }
  box.append(el("p", "muted small", note));
  return box;
}

// The view of one explanation beyond maps (`explanation`: similar_cases, concepts or justification) of `a`,
// shown in the map controls' place when the reader picks it from the explanation list.
export function beyondView(a, explanation) {
  if (!a?.[explanation]) return null;
  if (explanation === "justification") return justificationNodes(a);
  if (explanation === "concepts") return conceptNodes(a);
  return similarNodes(a);
}
