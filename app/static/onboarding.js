// The onboarding page follows its worker: while it inspects or checks, the progress bar and the stage follow the
// row (GET /api/onboardings/ID each second); when the state changes the page is loaded again to show what came.
(function () {
  const panel = document.getElementById("onboarding");
  if (!panel || panel.dataset.running !== "true") return;
  const id = panel.dataset.onboardingId;
  const state = panel.dataset.state;
  const bar = document.getElementById("onboarding-progress");
  const stage = document.getElementById("onboarding-stage");
  async function poll() {
    try {
      const response = await fetch(`/api/onboardings/${id}`, { headers: { Accept: "application/json" } });
      if (response.ok) {
        const row = await response.json();
        if (row.state !== state) { window.location.reload(); return; }
        if (bar) { bar.value = row.progress; bar.textContent = `${row.progress}%`; }
        if (stage) stage.textContent = row.stage;
      }
    } catch (error) {
      // The server restarting: try again at the next tick.
    }
    window.setTimeout(poll, 1000);
  }
  window.setTimeout(poll, 1000);
})();
