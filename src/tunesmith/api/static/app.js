// The studio page: compose a prompt, hear it as it is made, keep a history of what was made.
// Each part lives in its own module; this one asks the server what it can do and starts them.

import { askKey, authHeaders, readJson, setUpKeyDialog, updateKeyButton, apiKey } from "./api.js";
import { setUpCurl } from "./curl.js";
import { setUpForm, showGroup } from "./form.js";
import { loadHistory, renderHistoryActions, setUpHistory } from "./history.js";
import { resume, setUpJob } from "./job.js";
import { abilities, loadModels } from "./models.js";
import { applyServer } from "./producer.js";
import { setUpRecorders } from "./recorder.js";
import { $, state } from "./state.js";
import { modelName } from "./words.js";

async function loadHealth() {
  const pill = $("server-status");
  let retry = 0;
  try {
    const response = await fetch("/healthz", { headers: authHeaders() });
    const body = await readJson(response);
    applyHealth(body);
    if (response.ok) {
      pill.dataset.state = "ok";
      pill.textContent = `${modelName(body.model)} · ${body.device || "?"} · ${body.precision || ""}`.replace(/ · $/, "");
      pill.title = `${body.model}; kernels: ${body.kernels || "?"}; jobs in flight: ${body.in_flight ?? 0}`;
      if (body.auth_required && !apiKey()) {
        askKey("This server needs an API key.", false).then(() => loadHistory(false), () => {});
      }
      return;
    }
    pill.dataset.state = body.status === "error" ? "error" : "loading";
    pill.textContent = body.status === "error" ? "Model failed to load" : `Loading ${modelName(body.model)}…`;
    pill.title = body.message || "";
    retry = body.status === "error" ? 30 : Math.min(Number(response.headers.get("Retry-After")) || 5, 5);
  } catch {
    pill.dataset.state = "error";
    pill.textContent = "Server unreachable";
    retry = 5;
  }
  setTimeout(loadHealth, retry * 1000);
}

function applyHealth(body) {
  state.health = body;
  if (Number(body.max_duration) > 0) state.maxDuration = Number(body.max_duration);
  const max = state.maxDuration;
  $("duration").max = String(max);
  $("duration-hint").textContent = `1 to ${max % 1 ? max.toFixed(1) : max} seconds`;
  // a melody model takes a melody; the others continue audio (an intro)
  // the sampling fields start from the server's defaults; a value the user changed stays
  for (const [name, value] of Object.entries(body.defaults || {})) {
    const input = $(name);
    if (!input) continue;
    if (input.value === input.defaultValue) input.value = String(value);
    input.defaultValue = String(value);
  }
  applyServer(body);
  applyAbilities();
}

// Only the controls the chosen model supports: a melody model takes a melody; a model that
// continues audio takes an intro.
function applyAbilities() {
  const can = abilities();
  showGroup("continuation-group", !!can.continuation);
  showGroup("melody-group", !!can.melody);
  renderHistoryActions();
}

// A model's abilities are its engine's once it has loaded: ask again on each choice.
$("model").addEventListener("change", () => {
  applyAbilities();
  loadModels().then((ok) => { if (ok) applyAbilities(); });
});

setUpKeyDialog(() => loadHistory(false));
setUpForm();
setUpJob();
setUpHistory();
setUpCurl();
setUpRecorders();
updateKeyButton();
loadHealth();
loadModels().then((ok) => { if (ok) applyAbilities(); });
loadHistory(false);
resume();
window.tunesmithStudio = { state }; // for debugging from the console
