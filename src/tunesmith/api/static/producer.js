// The producer's controls: an exact tempo, whole bars, a seamless loop, a key, a fade, and
// sections played in order. The checks here mirror the server's rules; its 422 still has the
// last word, shown beside the field it names.

import { $, state } from "./state.js";
import { fmt, productionText } from "./words.js";

const TONICS = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"];
const FLATS = { "C#": "D♭", "D#": "E♭", "F#": "G♭", "G#": "A♭", "A#": "B♭" };
const MAX_SECTIONS = 32;
const MAX_BARS = 1024;

let filesAttached = () => false;
let ownDuration = null; // the duration the user typed, kept while bars or sections set it
let stretches = true;    // whether the server has Rubber Band's tool, which bpm and key need
const NO_RUBBERBAND = "This server cannot: it needs Rubber Band's tool (rubberband-cli).";

// `filesAttached()`: whether the request will go as a form (sections cannot).
export function setUpProducer(options) {
  filesAttached = options.filesAttached;
  fillKeys();
  $("producer").addEventListener("input", sync);
  $("producer").addEventListener("change", sync);
  $("sections-list").addEventListener("input", clearSectionsError);
  $("section-add").addEventListener("click", () => {
    const row = addSection();
    row.querySelector(".section-prompt").focus();
  });
  sync();
}

function fillKeys() {
  const select = $("musical_key");
  for (const mode of ["major", "minor"]) {
    const group = document.createElement("optgroup");
    group.label = mode === "major" ? "Major" : "Minor";
    for (const tonic of TONICS) {
      const item = document.createElement("option");
      item.value = `${tonic} ${mode}`; // as the server spells it back
      item.textContent = `${tonic.replace("#", "♯")}${FLATS[tonic] ? ` / ${FLATS[tonic]}` : ""} ${mode}`;
      group.append(item);
    }
    select.append(group);
  }
}

// What /healthz says: without Rubber Band (`rubberband: false`) a BPM or a key is refused.
export function applyServer(health) {
  stretches = health.rubberband !== false;
  $("bpm-hint").textContent = stretches ? "40 to 240, made exact" : "Unavailable: the server lacks Rubber Band";
  $("musical_key-hint").textContent = stretches ? "Shifted to it by the smallest step" : "Unavailable: the server lacks Rubber Band";
}

// ---------------------------------------------------------------- reading the controls
function numberIn(id) {
  const raw = $(id).value.trim();
  const value = Number(raw);
  return raw && Number.isFinite(value) ? value : null;
}

// The tempo when it is one the server takes; else none (bars and loop wait for it).
function tempo() {
  const bpm = numberIn("bpm");
  return bpm !== null && bpm >= 40 && bpm <= 240 ? bpm : null;
}

function beatsPerBar() {
  const beats = numberIn("beats_per_bar");
  return beats !== null && Number.isInteger(beats) && beats >= 1 && beats <= 16 ? beats : 4;
}

function wholeBars(value) {
  return value !== null && Number.isInteger(value) && value >= 1 && value <= MAX_BARS;
}

function rows() {
  return [...$("sections-list").children];
}

// One section as the user set it, and its length in seconds (null: not a length yet).
function readSection(row) {
  const prompt = row.querySelector(".section-prompt").value;
  const unit = row.querySelector(".section-unit").value;
  const raw = row.querySelector(".section-length").value.trim();
  const value = raw && Number.isFinite(Number(raw)) ? Number(raw) : null;
  const bpm = tempo();
  let seconds = null;
  if (unit === "bars") {
    if (bpm !== null && wholeBars(value)) seconds = (value * beatsPerBar() * 60) / bpm;
  } else if (value !== null && value > 0) {
    seconds = value;
  }
  return { prompt, unit, value, seconds };
}

// What sets the duration instead of the duration field: the sections, or bars at a tempo.
function derived() {
  const sections = rows().map(readSection);
  if (sections.length) {
    const seconds = sections.reduce((sum, s) => sum + (s.seconds || 0), 0);
    return { from: "sections", seconds, text: `The sections' total: ${fmt(seconds)} s` };
  }
  const bpm = tempo();
  const bars = numberIn("bars");
  if (bpm === null || !wholeBars(bars)) return null;
  const beats = beatsPerBar();
  const seconds = (bars * beats * 60) / bpm;
  return { from: "bars", seconds, text: `${bars} bars of ${beats} beats at ${bpm} BPM: ${fmt2(seconds)} s` };
}

function fmt2(seconds) {
  return String(Math.round(seconds * 100) / 100);
}

// ---------------------------------------------------------------- keeping the controls consistent
export function sync() {
  const bpm = tempo();
  const sectioned = rows().length > 0;
  $("bars").disabled = bpm === null || sectioned;
  $("beats_per_bar").disabled = bpm === null;
  $("loop").disabled = bpm === null;
  const looping = !$("loop").disabled && $("loop").checked;
  $("fade_out").disabled = looping;
  $("bars-hint").textContent = bpm === null ? "Needs a BPM" : sectioned ? "The sections set the length" : "Whole bars: they set the length";
  $("loop-hint").textContent = bpm === null ? "Needs a BPM" : "The file loops seamlessly";
  $("fade_out-hint").textContent = looping ? "A loop has no ending to fade" : "Seconds at the end";
  for (const option of document.querySelectorAll("#sections-list option[value=bars]")) option.disabled = bpm === null;

  const duration = $("duration");
  const set = derived();
  if (set) {
    if (!duration.disabled) ownDuration = duration.value;
    duration.disabled = true;
    duration.value = set.seconds > 0 ? fmt2(set.seconds) : "";
    $("duration-derived").textContent = set.text;
  } else if (duration.disabled) {
    duration.disabled = false;
    if (ownDuration !== null) duration.value = ownDuration;
    ownDuration = null;
  }
  $("duration-derived").hidden = !set;
  $("duration-hint").hidden = !!set;
  renderTimeline();
}

// ---------------------------------------------------------------- sections
function addSection(section = {}) {
  const list = $("sections-list");
  const previous = rows().at(-1);
  const row = document.createElement("li");
  row.className = "section-row";
  row.innerHTML = `
    <label class="sr-label section-prompt-label"></label>
    <input type="text" class="section-prompt" maxlength="500" autocomplete="off" placeholder="e.g. intro, sparse drums">
    <label class="sr-label section-length-label"></label>
    <input type="number" class="section-length" inputmode="decimal" min="0" step="any">
    <select class="section-unit"><option value="duration">s</option><option value="bars">bars</option></select>
    <button type="button" class="btn-link section-remove">Remove</button>`;
  const prompt = row.querySelector(".section-prompt");
  const length = row.querySelector(".section-length");
  const unit = row.querySelector(".section-unit");
  prompt.value = section.prompt || "";
  if (section.bars != null) {
    unit.value = "bars";
    length.value = String(section.bars);
  } else if (section.duration != null) {
    length.value = String(section.duration);
  } else if (previous) { // a new row: as long as the one before it
    unit.value = previous.querySelector(".section-unit").value;
    length.value = previous.querySelector(".section-length").value;
  } else if (tempo() !== null) {
    unit.value = "bars";
    length.value = "4";
  } else {
    length.value = $("duration").value || "10";
  }
  row.querySelector(".section-remove").addEventListener("click", () => removeSection(row));
  list.append(row);
  renumber();
  sync();
  return row;
}

function removeSection(row) {
  const next = row.nextElementSibling || row.previousElementSibling;
  row.remove();
  clearSectionsError();
  renumber();
  sync();
  (next ? next.querySelector(".section-remove") : $("section-add")).focus();
}

function renumber() {
  rows().forEach((row, i) => {
    const n = i + 1;
    const id = `section-${n}`;
    row.querySelector(".section-prompt").id = `${id}-prompt`;
    row.querySelector(".section-prompt-label").htmlFor = `${id}-prompt`;
    row.querySelector(".section-prompt-label").textContent = `Section ${n}: what it adds to the prompt`;
    row.querySelector(".section-length").id = `${id}-length`;
    row.querySelector(".section-length-label").htmlFor = `${id}-length`;
    row.querySelector(".section-length-label").textContent = `Section ${n}: length`;
    row.querySelector(".section-unit").setAttribute("aria-label", `Section ${n}: unit`);
    row.querySelector(".section-remove").setAttribute("aria-label", `Remove section ${n}`);
  });
  $("section-add").disabled = rows().length >= MAX_SECTIONS;
}

// The sections as a bar of proportional segments, and their total in words.
function renderTimeline() {
  const sections = rows().map(readSection);
  const timeline = $("sections-timeline");
  timeline.hidden = !sections.length;
  timeline.replaceChildren(...sections.map((s, i) => {
    const segment = document.createElement("div");
    segment.className = "segment";
    segment.style.flexGrow = String(s.seconds || 0);
    const name = s.prompt.trim() || `section ${i + 1}`;
    const length = s.seconds ? `${fmt(s.seconds)} s` : "?";
    segment.title = `${i + 1}. ${name}: ${length}`;
    const label = document.createElement("span");
    label.textContent = `${i + 1}. ${name}`;
    const small = document.createElement("small");
    small.textContent = length;
    segment.append(label, small);
    return segment;
  }));
  const total = sections.reduce((sum, s) => sum + (s.seconds || 0), 0);
  const unset = sections.filter((s) => !s.seconds).length;
  let text = "None: one prompt plays the whole track.";
  if (sections.length) {
    text = `${sections.length} section${sections.length > 1 ? "s" : ""}, ${fmt(total)} s in all`;
    if (unset) text += ` (${unset} without a length yet)`;
  }
  $("sections-total").textContent = text;
  $("sections-upload").hidden = !(sections.length && filesAttached());
}

// ---------------------------------------------------------------- the request
// Only the fields the user set; the server's defaults stand for the rest.
export function producerValues() {
  const values = {};
  const bpm = numberIn("bpm");
  if (bpm !== null) values.bpm = bpm;
  const bars = numberIn("bars");
  if (!$("bars").disabled && bars !== null) values.bars = bars;
  const beats = numberIn("beats_per_bar");
  if (!$("beats_per_bar").disabled && beats !== null && beats !== 4) values.beats_per_bar = beats;
  if (!$("loop").disabled && $("loop").checked) values.loop = true;
  if ($("musical_key").value) values.key = $("musical_key").value;
  const fade = numberIn("fade_out");
  if (!$("fade_out").disabled && fade) values.fade_out = fade;
  const sections = rows().map(readSection);
  if (sections.length) {
    values.sections = sections.map((s) => ({ prompt: s.prompt, [s.unit]: s.value }));
  }
  return values;
}

// Whether the duration field is set by bars or sections: then a duration error is theirs.
export function durationSetBy() {
  const set = derived();
  return set ? set.from : null;
}

// What the server would refuse, found before sending: [{field, message, control}].
export function producerProblems() {
  const problems = [];
  if (!stretches && $("bpm").value.trim()) problems.push({ field: "bpm", message: NO_RUBBERBAND });
  if (!stretches && $("musical_key").value) problems.push({ field: "musical_key", message: NO_RUBBERBAND });
  const set = derived();
  if (set && set.seconds > state.maxDuration) {
    problems.push({ field: set.from, message: `They make ${fmt(set.seconds)} s: at most ${fmt(state.maxDuration)} s on this server.` });
  } else if (set && set.from === "bars" && set.seconds < 1) {
    problems.push({ field: "bars", message: `They make ${fmt2(set.seconds)} s: at least 1 s.` });
  }
  const fade = numberIn("fade_out");
  const length = set ? set.seconds : numberIn("duration");
  if (!$("fade_out").disabled && fade && length !== null && fade > length && $("fade_out").checkValidity()) {
    problems.push({ field: "fade_out", message: `Must be at most the track's ${fmt(length)} s.` });
  }
  const sections = rows();
  if (sections.length && filesAttached()) {
    problems.push({ field: "sections", message: "Sections go in a JSON request only: remove the uploaded file, or the sections.", control: $("section-add") });
  }
  sections.forEach((row, i) => {
    const s = readSection(row);
    if (!s.prompt.trim()) {
      problems.push({ field: "sections", message: `Section ${i + 1}: say what it adds.`, control: row.querySelector(".section-prompt") });
    }
    let wrong = "";
    if (s.unit === "bars" && tempo() === null) wrong = "bars need a BPM";
    else if (s.unit === "bars" && !wholeBars(s.value)) wrong = `whole bars, 1 to ${MAX_BARS}`;
    else if (s.unit !== "bars" && !s.seconds) wrong = "a length of more than 0 s";
    if (wrong) problems.push({ field: "sections", message: `Section ${i + 1}: ${wrong}.`, control: row.querySelector(".section-length") });
  });
  return problems;
}

// A sections problem, the page's or the server's (`path`: "sections", "sections.1.prompt"...):
// the message under the timeline, the row's control marked. Returns what to focus.
export function showSectionsError(message, control, path) {
  const parts = String(path || "").split(".");
  const index = Number(parts[1]);
  const row = parts.length > 1 && Number.isInteger(index) ? rows()[index] : null;
  if (row) {
    control = row.querySelector(parts[2] === "prompt" ? ".section-prompt" : ".section-length");
    message = `Section ${index + 1}${parts[2] ? ` ${parts[2]}` : ""}: ${message}`;
  }
  const slot = $("sections-error");
  slot.textContent = slot.textContent ? `${slot.textContent} ${message}` : message;
  if (control && control !== $("section-add")) control.setAttribute("aria-invalid", "true");
  $("producer").open = true;
  return control || $("section-add");
}

function clearSectionsError() {
  $("sections-error").textContent = "";
  for (const control of $("sections-list").querySelectorAll("[aria-invalid]")) control.removeAttribute("aria-invalid");
}

// The controls set to a stored request (fillForm has set its duration already).
export function fillProducer(request) {
  const text = (value) => (value === undefined || value === null ? "" : String(value));
  $("bpm").value = text(request.bpm);
  $("bars").value = text(request.bars);
  $("beats_per_bar").value = text(request.beats_per_bar ?? 4);
  $("loop").checked = !!request.loop;
  $("musical_key").value = text(request.key);
  $("fade_out").value = request.fade_out ? String(request.fade_out) : "";
  $("sections-list").replaceChildren();
  for (const section of request.sections || []) addSection(section);
  renumber();
  $("duration").disabled = false;
  ownDuration = null;
  sync();
  if (request.bpm != null || request.key || request.fade_out || (request.sections || []).length) $("producer").open = true;
}

// What the producer's analysis found, and any warning (absent: nothing shown).
export function showProduction(result) {
  const text = productionText(result.production);
  $("production").textContent = text ? `Producer: ${text}.` : "";
  $("production").hidden = !text;
  const warnings = Array.isArray(result.warnings) ? result.warnings.filter(Boolean) : [];
  $("warnings").replaceChildren(...warnings.map((warning) => {
    const item = document.createElement("li");
    item.textContent = String(warning);
    return item;
  }));
  $("warnings").hidden = !warnings.length;
}
