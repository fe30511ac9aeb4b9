// The history of stored tracks: each entry with every parameter it ran with, its waveform, its
// lineage, and what can be done with it (vary, re-run, edit, continue, download, delete).

import { ApiError, api, apiJson, readJson } from "./api.js";
import { fillForm, form, setUpload } from "./form.js";
import { abilities } from "./models.js";
import { pauseOthers } from "./job.js";
import { $, CONTEXT_SECONDS, announce, state } from "./state.js";
import { lazyWaveform } from "./waveform.js";
import { ago, fmt, modelName, productionText, shortId, speedText } from "./words.js";

// Request fields shown by name below; any other field a record carries is shown as it is.
const SHOWN = new Set(["prompt", "duration", "seed", "temperature", "top_k", "top_p",
  "guidance_scale", "format", "normalization", "loudness_lufs", "continuation_start",
  "continuation_end", "source_track", "model", "bpm", "bars", "beats_per_bar", "loop", "key",
  "fade_out", "sections"]);

export function setUpHistory() {
  $("history-refresh").addEventListener("click", () => loadHistory(false));
  $("history-more").addEventListener("click", () => loadHistory(true));
}

export async function loadHistory(more) {
  const params = new URLSearchParams({ limit: "10" });
  if (more && state.historyNext) params.set("before", state.historyNext);
  $("history-status").textContent = more ? "Loading more…" : "";
  try {
    const { body } = await apiJson(`/tracks?${params}`);
    const list = $("history-list");
    if (!more) list.replaceChildren();
    for (const track of body.tracks || []) list.append(trackItem(track));
    state.historyNext = body.next || null;
    $("history-more").hidden = !state.historyNext;
    $("history-empty").hidden = list.children.length > 0;
    $("history-status").textContent = "";
    showLineage();
  } catch (error) {
    $("history-status").textContent = error.status === 401
      ? "Set the API key to see the history." : `History unavailable: ${error.message}`;
  }
}

function continues() {
  return !!abilities().continuation;
}

export function renderHistoryActions() {
  for (const b of document.querySelectorAll("#history-list .continue")) b.hidden = !continues();
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function button(text, className, onClick, title) {
  const b = element("button", `btn btn-small ${className}`, text);
  b.type = "button";
  if (title) b.title = title;
  b.addEventListener("click", onClick);
  return b;
}

function trackItem(track) {
  const record = track.record || {};
  const request = record.request || {};
  const format = record.format || request.format || "";
  const item = element("li", "track");
  item.dataset.id = track.id;
  item.id = `track-${track.id}`;
  item._track = track;

  const prompt = element("p", "track-prompt", request.prompt || "(no prompt)");
  const meta = element("p", "track-meta");
  const when = [`${fmt(record.duration ?? request.duration)} s`, format, ago(track.created || record.created)];
  const speed = record.generation_seconds > 0 ? speedText(record.duration / record.generation_seconds) : "";
  meta.textContent = [...when, speed].filter(Boolean).join(" · ");
  if (speed) meta.title = `${record.generation_seconds} s to make ${fmt(record.duration)} s of audio`;

  const audio = document.createElement("audio");
  audio.controls = true;
  audio.preload = "metadata"; // its length shows before it is played
  audio.src = track.public_url;
  audio.setAttribute("aria-label", `Play: ${request.prompt || track.id}`);
  audio.addEventListener("play", () => pauseOthers(audio));
  const note = element("p", "track-note");
  note.hidden = true;
  audio.addEventListener("error", () => {
    showNote(item, "Its audio cannot be loaded: gone from storage (a delete that stopped part-way: delete it again) or its link expired.");
  });
  const wave = element("canvas", "track-wave");
  wave.setAttribute("aria-hidden", "true");
  lazyWaveform(wave, track.public_url, audio);

  const actions = element("div", "track-actions");
  const vary = button("Vary", "vary", () => runAgain(track, false, vary), "The same prompt and settings, a new seed: starts at once");
  const rerun = button("Re-run", "rerun", () => runAgain(track, true, rerun), "Exactly again, the same seed: starts at once");
  const edit = button("Edit", "edit", () => editTrack(track), "Fill the form with its settings");
  const more = button("Continue", "continue", () => continueTrack(track, more), "Make a longer track that starts with this one");
  more.hidden = !continues();
  const download = element("a", "btn btn-small download", "Download");
  download.href = track.public_url;
  download.download = `tunesmith-${track.id}.${format}`;
  const remove = button("Delete", "delete btn-danger", () => deleteTrack(track, item, remove));
  actions.append(vary, rerun, edit, more, download, remove);

  item.append(prompt, ...lineage(record), meta, wave, audio, parameters(track), note, actions);
  return item;
}

function showNote(item, text) {
  const note = item.querySelector(".track-note");
  note.textContent = text;
  note.hidden = !text;
}

// Every parameter the track ran with, as its record has them.
function parameters(track) {
  const record = track.record || {};
  const request = record.request || {};
  const inputs = record.inputs || {};
  const list = element("dl", "track-params");
  const add = (key, label, value) => {
    if (value === undefined || value === null || value === "") return;
    const row = element("div");
    row.dataset.param = key;
    const dd = element("dd");
    if (value instanceof Node) dd.append(value); else dd.textContent = String(value);
    row.append(element("dt", "", label), dd);
    list.append(row);
  };
  const off = (value) => (Number(value) === 0 ? "0 (off)" : value);
  add("duration", "duration", `${fmt(request.duration ?? record.duration)} s`);
  add("seed", "seed", element("code", "track-seed", String(record.seed ?? request.seed ?? "")));
  add("temperature", "temperature", request.temperature);
  add("top_k", "top-k", off(request.top_k));
  add("top_p", "top-p", off(request.top_p));
  add("guidance_scale", "guidance", request.guidance_scale);
  add("format", "format", record.format || request.format);
  add("normalization", "normalization", request.normalization);
  if (request.normalization === "loudness") add("loudness_lufs", "loudness", `${request.loudness_lufs} LUFS`);
  if (inputs.input_audio) {
    const used = inputs.input_audio;
    add("continuation", "continues", `${fmt(used.start)}–${fmt(used.end)} s of its input audio`);
  }
  if (inputs.melody) add("melody", "melody", `${fmt(inputs.melody.start)}–${fmt(inputs.melody.end)} s of an upload`);
  // the producer's fields, where they were asked for
  const beats = request.beats_per_bar ?? 4;
  if (request.bpm != null) add("bpm", "tempo", `${request.bpm} BPM${beats !== 4 ? `, ${beats} beats a bar` : ""}`);
  if (request.bars != null) add("bars", "bars", request.bars);
  if (request.loop) add("loop", "loop", "yes");
  add("key", "key", request.key);
  if (request.fade_out > 0) add("fade_out", "fade out", `${fmt(request.fade_out)} s`);
  if (Array.isArray(request.sections) && request.sections.length) {
    add("sections", "sections", request.sections.map((s) => `${s.prompt} (${s.bars != null ? `${s.bars} bars` : `${fmt(s.duration)} s`})`).join(" → "));
  }
  add("production", "found", productionText(record.production));
  if (Array.isArray(record.warnings) && record.warnings.length) add("warnings", "warnings", record.warnings.join("; "));
  for (const [key, value] of Object.entries(request)) {
    if (SHOWN.has(key) || value === null || value === undefined) continue;
    add(key, key.replace(/_/g, " "), typeof value === "object" ? JSON.stringify(value) : value);
  }
  // the id it was asked for by, else the checkpoint's name; the checkpoint on hover
  add("model", "model", request.model || (record.model && modelName(record.model)));
  if (record.model) list.lastElementChild.title = record.model;
  const engine = record.engine || {};
  add("engine", "engine", [engine.precision, engine.device, engine.tunesmith && `tunesmith ${engine.tunesmith}`].filter(Boolean).join(" · "));
  const channels = { 1: "mono", 2: "stereo" }[record.channels] || "";
  add("audio", "audio", [record.sample_rate && `${record.sample_rate / 1000} kHz`, channels].filter(Boolean).join(" · "));
  return list;
}

// ---------------------------------------------------------------- lineage
function lineage(record) {
  const request = record.request || {};
  const inputs = record.inputs || {};
  const lines = [];
  if (request.source_track) {
    const line = element("p", "track-lineage", "Continued from ");
    const link = element("a", "lineage-link", `track ${shortId(request.source_track)}`);
    link.href = `#track-${request.source_track}`;
    link.dataset.source = request.source_track;
    link.addEventListener("click", (event) => {
      event.preventDefault();
      const source = sourceItem(request.source_track);
      if (!source) {
        announce(state.historyNext
          ? "That track is further back in the history: load more to reach it."
          : "That track is no longer stored.");
        return;
      }
      source.scrollIntoView({ behavior: "smooth", block: "center" });
      source.classList.remove("flash");
      void source.offsetWidth; // restart the highlight
      source.classList.add("flash");
      source.querySelector("button").focus({ preventScroll: true });
    });
    line.append(link);
    lines.push(line);
  } else if (inputs.input_audio) {
    lines.push(element("p", "track-lineage", "Continues an uploaded clip"));
  }
  if (inputs.melody) lines.push(element("p", "track-lineage", "Follows an uploaded melody"));
  return lines;
}

function sourceItem(id) {
  return id ? document.querySelector(`#history-list .track[data-id="${CSS.escape(id)}"]`) : null;
}

// Name each source by its prompt where the history holds it.
function showLineage() {
  for (const link of document.querySelectorAll("#history-list .lineage-link")) {
    const source = sourceItem(link.dataset.source);
    const prompt = source && (source._track.record?.request?.prompt || "");
    link.textContent = source
      ? `“${prompt.length > 60 ? prompt.slice(0, 59) + "…" : prompt}”`
      : `track ${shortId(link.dataset.source)}`;
    link.title = source ? `track ${link.dataset.source}` : `track ${link.dataset.source} (not in the loaded history)`;
  }
}

// ---------------------------------------------------------------- actions
function busy() {
  if (state.finished) return false;
  announce("A track is being made: wait for it, or cancel it first.");
  return true;
}

// The source audio of a track that continued one in the history, as a file for input_audio.
async function sourceFile(track) {
  const source = sourceItem(track.record.request.source_track);
  if (!source) return null;
  const { public_url: url, id, record } = source._track;
  const response = await fetch(url);
  if (!response.ok) throw new Error(`HTTP ${response.status}`);
  const blob = await response.blob();
  const format = record.format || "wav";
  return new File([blob], `${id}.${format}`, { type: blob.type || `audio/${format}` });
}

// Vary (a new seed) or re-run (the same seed) at once, with the track's uploads where the
// history still has them.
async function runAgain(track, sameSeed, trigger) {
  if (busy()) return;
  const record = track.record || {};
  const request = record.request || {};
  const inputs = record.inputs || {};
  fillForm(request, sameSeed ? (record.seed ?? request.seed) : null);
  if (inputs.input_audio || inputs.melody) {
    trigger.disabled = true;
    let file = null;
    try {
      file = inputs.melody ? null : await sourceFile(track);
    } catch (error) {
      announce(`Could not fetch the track it continued: ${error.message}`);
      return;
    } finally {
      trigger.disabled = false;
    }
    if (!file) {
      announce("That track was made from an uploaded file: attach it again, then press Generate.");
      $(inputs.melody ? "melody-group" : "continuation-group").scrollIntoView({ behavior: "smooth", block: "center" });
      return;
    }
    setUpload("input_audio", file, request.source_track);
  }
  form.requestSubmit();
}

function editTrack(track) {
  const record = track.record || {};
  fillForm(record.request || {}, record.seed ?? (record.request || {}).seed);
  $("advanced").open = true;
  announce(`Form filled from that track (seed ${$("seed").value}): press Generate to make it again.`);
  $("prompt").scrollIntoView({ behavior: "smooth", block: "center" });
  $("prompt").focus({ preventScroll: true });
}

async function continueTrack(track, trigger) {
  const record = track.record || {};
  const request = record.request || {};
  const length = Number(record.duration ?? request.duration) || 0;
  const context = Math.min(length, CONTEXT_SECONDS);
  if (context + 1 > state.maxDuration) {
    announce(`This server makes tracks of at most ${fmt(state.maxDuration)} s: too short to continue it.`);
    return;
  }
  trigger.disabled = true;
  announce("Fetching the track to continue…");
  try {
    const response = await fetch(track.public_url);
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const blob = await response.blob();
    const format = record.format || request.format || "wav";
    const file = new File([blob], `${track.id}.${format}`, { type: blob.type || `audio/${format}` });
    // its length is the duration field's: bars and sections would set it
    fillForm({ ...request, continuation_start: 0, continuation_end: null, bars: null, sections: null }, null);
    setUpload("input_audio", file, track.id);
    $("duration").value = fmt(Math.min(state.maxDuration, context + Math.max(10, Math.min(30, context))));
    announce(`Ready to continue that track: it starts with its ${context < length ? "last " : ""}${fmt(context)} s. Adjust the prompt or duration and press Generate.`);
    $("continuation-group").scrollIntoView({ behavior: "smooth", block: "center" });
    $("duration").focus({ preventScroll: true });
  } catch (error) {
    announce(`Could not fetch the track: ${error.message}`);
  } finally {
    trigger.disabled = false;
  }
}

function confirmDelete(track) {
  const dialog = $("delete-dialog");
  const prompt = (track.record && track.record.request && track.record.request.prompt) || track.id;
  $("delete-what").textContent = `“${prompt}”`;
  dialog.returnValue = "";
  dialog.showModal();
  $("delete-cancel").focus(); // the safe choice first
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "delete"), { once: true });
  });
}

async function deleteTrack(track, item, trigger) {
  if (!(await confirmDelete(track))) return;
  trigger.disabled = true;
  showNote(item, "");
  try {
    const response = await api(`/tracks/${encodeURIComponent(track.id)}`, { method: "DELETE" });
    if (!response.ok && response.status !== 404) {  // 404: already gone, as asked
      throw new ApiError(response.status, await readJson(response), response);
    }
  } catch (error) {
    trigger.disabled = false;
    showNote(item, `Not deleted: ${error.message}. Try again.`);
    return;
  }
  const next = item.nextElementSibling || item.previousElementSibling;
  for (const audio of item.querySelectorAll("audio")) audio.pause();
  item.remove();
  $("history-empty").hidden = $("history-list").children.length > 0;
  $("history-status").textContent = "Track deleted.";
  showLineage();
  (next ? next.querySelector("button") : $("history-refresh")).focus();
}
