// The study page's comparison with a prior, as radiology viewers do it: "Compare" on a prior opens the 1x2 layout
// of the reading room (layout.js) with this study's first image on the left and the prior's on the right, each
// labelled with its study date. Linked by default (zoom, pan, and the window between images of one modality);
// the Link button frees them, as the reading room's does. The priors and their first images come with the page
// (viewer/study.html, "priors-data"; the same as GET /api/studies/{id}/priors).
import { Layout } from "./layout.js";
import { Viewport } from "./viewer.js";

const $ = (id) => document.getElementById(id);

export function bindComparison() {
  const data = JSON.parse($("priors-data")?.textContent ?? "null");
  const section = $("compare");
  if (!data?.first_image || !section) return null;
  const state = { layout: null, priorId: null };

  async function open(prior) {
    section.hidden = false;
    $("compare-title").textContent = `This study and the study of ${prior.study_date ?? "no date"}`;
    if (!state.layout) {
      // The first cell is this study's image; the layout's second cell opens instances[1], the prior's.
      const stage = $("compare-current");
      const [canvas, overlay] = stage.querySelectorAll("canvas");
      const main = new Viewport({ stage, canvas, overlay });
      state.layout = new Layout({
        grid: $("compare-grid"),
        template: $("compare-cell"),
        main,
        instances: [data.first_image, prior.first_image],
        overlayFor: async () => false, // the comparison shows the images alone, no heatmap
      });
      await main.open(data.first_image);
      state.layout.set("1x2");
    } else {
      state.layout.instances[1] = prior.first_image;
      await state.layout.open(state.layout.cells[1], 1);
    }
    state.priorId = prior.id;
    state.layout.cells[1].stage.querySelector(".compare-label").textContent = prior.label;
    for (const button of document.querySelectorAll(".compare-button")) {
      button.setAttribute("aria-pressed", String(Number(button.dataset.studyId) === prior.id));
    }
    section.scrollIntoView({ block: "start" });
  }

  function setLinked(linked) {
    state.layout?.setLinked(linked);
    $("compare-link").setAttribute("aria-pressed", String(linked));
  }

  for (const button of document.querySelectorAll(".compare-button")) {
    const prior = data.priors.find((item) => item.id === Number(button.dataset.studyId));
    button.addEventListener("click", () => open(prior));
  }
  $("compare-link").addEventListener("click", () => setLinked(!(state.layout?.linked ?? true)));
  $("compare-close").addEventListener("click", () => {
    section.hidden = true;
  });
  return state;
}
