// The compose form: its fields, the checks beside each field, and the body it sends.

import { chooseModel } from "./models.js";
import {
  durationSetBy, fillProducer, producerProblems, producerValues, setUpProducer, showSectionsError,
  sync as syncProducer,
} from "./producer.js";
import { $, state } from "./state.js";

export const UPLOADS = ["input_audio", "melody"];
const MAX_SEED = 2n ** 63n - 1n;
const NUMBER_FIELDS = ["duration", "temperature", "top_p", "guidance_scale", "loudness_lufs",
  "continuation_start", "continuation_end"];
const FIELDS = ["prompt", "duration", "format", "seed", "temperature", "top_k", "top_p",
  "guidance_scale", "normalization", "loudness_lufs", "continuation_start", "continuation_end"];
// Fields the server names whose control has another id ("key-error" is the API key dialog's).
const CONTROL_IDS = { key: "musical_key" };

export const form = $("form");

export function setUpForm() {
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  for (const chip of document.querySelectorAll(".chip")) {
    chip.addEventListener("click", () => {
      $("prompt").value = chip.textContent;
      $("prompt").focus();
    });
  }
  $("normalization").addEventListener("change", syncLoudness);
  for (const name of UPLOADS) {
    $(name).addEventListener("change", () => {
      if (name === "input_audio") state.source = null; // a file of the user's: no lineage
      showFile(name);
    });
    $(name + "-clear").addEventListener("click", () => {
      setUpload(name, null);
      $(name).focus();
    });
  }
  form.addEventListener("input", (event) => {
    if (event.target.name) setFieldError(event.target.name, "");
  });
  syncLoudness();
  setUpProducer({ filesAttached: () => uploadsToSend().length > 0 });
}

export function syncLoudness() {
  $("loudness_lufs").disabled = $("normalization").value !== "loudness";
}

export function showFile(name) {
  const file = $(name).files[0];
  const from = name === "input_audio" && state.source ? ` · from track ${state.source.slice(0, 8)}` : "";
  $(name + "-info").textContent = file ? `${file.name} · ${(file.size / 1024).toFixed(0)} KB${from}` : "";
  $(name + "-clear").hidden = !file;
  if (name === "input_audio") syncRange();
  setFieldError(name, "");
  syncProducer(); // sections cannot go with a file
}

// From/To pick a part of the audio to continue: shown with a file, or once set.
function syncRange() {
  const set = Number($("continuation_start").value) > 0 || $("continuation_end").value.trim() !== "";
  $("continuation-range").hidden = !$("input_audio").files.length && !set;
}

// Put `file` (or nothing) in an upload field; `source` is the history track it came from.
export function setUpload(name, file, source = null) {
  const transfer = new DataTransfer();
  if (file) transfer.items.add(file);
  $(name).files = transfer.files;
  if (name === "input_audio") state.source = file ? source : null;
  showFile(name);
}

export function showGroup(id, on) {
  $(id).hidden = !on;
  $(id).disabled = !on; // a hidden group's fields are neither validated nor sent
}

export function setFieldError(name, message) {
  const slot = $(name + "-error");
  const control = $(name);
  if (!slot) return false;
  slot.textContent = message;
  if (control) {
    if (message) control.setAttribute("aria-invalid", "true");
    else control.removeAttribute("aria-invalid");
  }
  if (message && control && control.closest("details")) control.closest("details").open = true;
  if (message && control && control.closest("#continuation-range")) $("continuation-range").hidden = false;
  return true;
}

export function clearErrors() {
  for (const slot of form.querySelectorAll(".error-text")) slot.textContent = "";
  for (const control of form.querySelectorAll("[aria-invalid]")) control.removeAttribute("aria-invalid");
  $("form-error").replaceChildren();
}

export function showError(error) {
  const box = $("form-error");
  box.replaceChildren();
  let first = null;
  const rest = [];
  for (const field of error.fields || []) {
    const path = String(field.field || "");
    let name = path.startsWith("sections.") ? "sections" : path.split(".").pop();
    if (name === "duration" && durationSetBy()) name = durationSetBy(); // bars or sections set it
    if (name === "sections") {
      first = first || showSectionsError(field.message, null, path);
      continue;
    }
    name = CONTROL_IDS[name] || name;
    if (setFieldError(name, field.message)) first = first || $(name);
    else rest.push(`${field.field}: ${field.message}`);
  }
  let text = error.message || String(error);
  if (error.retryAfter) text += ` Try again in ${error.retryAfter} s.`;
  if (error.fields && error.fields.length && !rest.length) text = "Please fix the highlighted fields.";
  box.append(text);
  if (rest.length) {
    const list = document.createElement("ul");
    for (const line of rest) {
      const item = document.createElement("li");
      item.textContent = line;
      list.append(item);
    }
    box.append(list);
  }
  if (first) first.focus();
}

// Constraint validation as the browser would, but with the messages next to each field.
export function validate() {
  const prompt = $("prompt");
  prompt.setCustomValidity(prompt.value.trim() || !prompt.required ? "" : "Describe the music you want.");
  const seed = $("seed");
  let seedMessage = "";
  if (seed.value.trim() && /^\d+$/.test(seed.value.trim()) && BigInt(seed.value.trim()) > MAX_SEED) {
    seedMessage = "Must be at most 9223372036854775807.";
  }
  seed.setCustomValidity(seedMessage);
  let first = null;
  for (const control of form.elements) {
    if (!control.name || control.willValidate === false) continue;
    if (!control.checkValidity()) {
      let message = control.validationMessage;
      if (control === seed && control.validity.patternMismatch) message = "Use whole digits only, or leave it blank.";
      setFieldError(control.name, message);
      first = first || control;
    }
  }
  if (!first) {
    for (const problem of producerProblems()) {
      const target = problem.field === "sections"
        ? showSectionsError(problem.message, problem.control)
        : (setFieldError(problem.field, problem.message), $(problem.field));
      first = first || target;
    }
  }
  if (first) {
    $("form-error").textContent = "Please fix the highlighted fields.";
    first.focus();
  }
  return !first;
}

export function formValues() {
  const values = {};
  for (const name of FIELDS) {
    const control = $(name);
    const raw = control.value.trim();
    if (control.closest("fieldset") && control.closest("fieldset").disabled) continue;
    if (name === "duration" && control.disabled) continue; // bars or sections set it
    if (name === "prompt" || name === "format" || name === "normalization") values[name] = control.value;
    else if (name === "seed") { if (raw) values.seed = raw; }
    else if (name === "top_k") values.top_k = raw === "" ? raw : Number.parseInt(raw, 10);
    else if (name === "continuation_end") { if (raw) values.continuation_end = Number(raw); }
    else if (NUMBER_FIELDS.includes(name)) values[name] = raw === "" ? raw : Number(raw);
  }
  Object.assign(values, producerValues());
  if ($("model").value) values.model = $("model").value;
  if (state.source && uploadsToSend().includes("input_audio")) values.source_track = state.source;
  return values;
}

export function uploadsToSend() {
  // an input in a disabled fieldset reports itself enabled: ask the fieldset
  return UPLOADS.filter((n) => !$(n).matches(":disabled") && $(n).files.length);
}

// JSON with the seed as exact digits (a JS number would round it).
export function jsonBody(values) {
  const { seed, ...rest } = values;
  const json = JSON.stringify(rest);
  return seed === undefined ? json : `{"seed":${seed},` + json.slice(1);
}

// JSON, or a form when there is a file to send.
export function requestBody(values) {
  const files = uploadsToSend();
  if (files.length) {
    const data = new FormData();
    for (const [name, value] of Object.entries(values)) data.append(name, String(value));
    for (const name of files) data.append(name, $(name).files[0]);
    return { body: data, headers: {} };
  }
  return { body: jsonBody(values), headers: { "Content-Type": "application/json" } };
}

// The form set to a stored request (its uploads cleared; `seed` null: a random one).
export function fillForm(request, seed) {
  clearErrors();
  const set = (name, value) => { if (value !== undefined && value !== null) $(name).value = String(value); };
  set("prompt", request.prompt);
  set("duration", request.duration);
  set("format", request.format);
  set("temperature", request.temperature);
  set("top_k", request.top_k);
  set("top_p", request.top_p);
  set("guidance_scale", request.guidance_scale);
  set("normalization", request.normalization);
  set("loudness_lufs", request.loudness_lufs);
  $("seed").value = seed === undefined || seed === null ? "" : String(seed);
  chooseModel(request.model);
  $("model").dispatchEvent(new Event("change"));
  syncLoudness();
  for (const name of UPLOADS) setUpload(name, null);
  $("continuation_start").value = String(request.continuation_start ?? 0);
  $("continuation_end").value = request.continuation_end == null ? "" : String(request.continuation_end);
  syncRange();
  fillProducer(request);
}
