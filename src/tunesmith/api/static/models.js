// The model picker: the served models from GET /models (hidden when there is one), and what the
// chosen one can do, which decides the controls the form shows.

import { authHeaders, readJson } from "./api.js";
import { $, state } from "./state.js";

// Fill the picker from GET /models; the choice made stays while it is still served.
export async function loadModels() {
  let body;
  try {
    const response = await fetch("/models", { headers: authHeaders() });
    if (!response.ok) return false;
    body = await readJson(response);
  } catch {
    return false;
  }
  state.models = Array.isArray(body.models) ? body.models : [];
  const select = $("model");
  const kept = select.value;
  select.replaceChildren(...state.models.map(option));
  const ids = state.models.map((m) => m.id);
  select.value = ids.includes(kept) ? kept : (body.default || ids[0] || "");
  $("model-field").hidden = state.models.length < 2;
  return true;
}

function option(model) {
  const item = document.createElement("option");
  const can = model.abilities || {};
  const traits = [can.melody && "melody", can.stereo && "stereo", model.default && "default"];
  item.value = model.id;
  item.textContent = [model.id, ...traits.filter(Boolean)].join(" · ");
  item.title = model.checkpoint;
  return item;
}

export function chosenModel() {
  return (state.models || []).find((m) => m.id === $("model").value) || null;
}

// What the chosen model can do; without GET /models, what /healthz says of the default.
export function abilities() {
  const model = chosenModel();
  if (model && model.abilities) return model.abilities;
  const health = state.health || {};
  return { melody: !!health.follows_melody, continuation: !!health.continues_audio };
}

// Pick `id` if it is served (a stored request's model); else keep the choice.
export function chooseModel(id) {
  if (id && (state.models || []).some((m) => m.id === id)) $("model").value = id;
}
