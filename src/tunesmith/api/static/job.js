// The job the page follows: submit, progress from server-sent events, cancel, and the player,
// which plays the audio as it is made once enough of it is ahead of the playhead.

import { ApiError, api, apiJson, parseJson, readJson } from "./api.js";
import { clearErrors, form, formValues, requestBody, showError, validate } from "./form.js";
import { loadHistory } from "./history.js";
import { $, FINISHED, announce, state } from "./state.js";
import { drawWaveform, renderWaveform, seekOnClick } from "./waveform.js";
import { showProduction } from "./producer.js";
import { fmt, speedText } from "./words.js";

const JOB_STORE = "tunesmith.job";
const PLAY_MARGIN = 2.0; // seconds of audio beyond the no-stall minimum before playing
const player = $("player");

export function setUpJob() {
  form.addEventListener("submit", submit);
  $("cancel").addEventListener("click", cancel);
  for (const name of ["progress", "canplay", "loadedmetadata"]) player.addEventListener(name, maybePlay);
  player.addEventListener("waiting", () => {
    // Out of audio while the track is made slower than it plays: pause until enough is ready.
    if (!state.finished && state.rate !== null && state.rate < 1 && !readyToPlay()) {
      state.ourPause = true;
      state.stalled = true;
      player.pause();
      state.ourPause = false;
      announce("Buffering: this track is made slower than it plays; playback resumes when enough is ready.");
    }
  });
  player.addEventListener("pause", () => {
    if (!state.ourPause && !player.ended) state.userPaused = true;
  });
  player.addEventListener("play", () => {
    state.userPaused = false;
    state.played = true;
    state.stalled = false;
    setProgressLine(null);
    if (!state.finished && state.phase === "running") announce("Playing while it is made…");
    pauseOthers(player);
  });
  player.addEventListener("timeupdate", renderWaveform);
  seekOnClick($("waveform"), player);
  new ResizeObserver(renderWaveform).observe($("waveform"));
}

export function pauseOthers(playing) {
  for (const other of document.querySelectorAll("audio")) if (other !== playing) other.pause();
}

async function submit(event) {
  event.preventDefault();
  if (!state.finished) return;
  clearErrors();
  if (!validate()) return;
  const { body, headers } = requestBody(formValues());
  setBusy(true);
  resetJobView();
  announce("Sending the request…");
  try {
    const { body: job } = await apiJson("/jobs", { method: "POST", body, headers });
    startFollowing(job, true);
    if ($("job").getBoundingClientRect().top > window.innerHeight - 80) {
      $("job").scrollIntoView({ behavior: "smooth", block: "nearest" });
    }
  } catch (error) {
    setBusy(false);
    $("job").dataset.status = "idle";
    announce(error.status === 401 ? "An API key is needed." : "The request was not accepted.");
    showError(error);
  }
}

function setBusy(busy) {
  const hadFocus = document.activeElement === $("generate");
  $("generate").disabled = busy;
  $("generate").textContent = busy ? "Generating…" : "Generate";
  $("cancel").hidden = !busy;
  $("cancel").disabled = false;
  if (busy && hadFocus) $("cancel").focus();
  if (!busy && document.activeElement === document.body) $("generate").focus();
}

function resetJobView() {
  stopPlayer();
  state.samples = [];
  state.rate = null;
  state.phase = "";
  state.userPaused = false;
  state.played = false;
  state.stalled = false;
  state.progressLine = "";
  state.peaks = null;
  $("progress").value = 0;
  $("progress-text").textContent = "";
  $("progress-wrap").hidden = true;
  $("result").hidden = true;
  $("waveform-wrap").hidden = true;
  $("production").hidden = true;
  $("warnings").hidden = true;
  player.loop = false;
}

function stopPlayer() {
  state.ourPause = true;
  player.pause();
  state.ourPause = false;
  player.removeAttribute("src");
  player.load();
  player.hidden = true;
}

function startFollowing(job, fresh) {
  state.job = job;
  state.finished = false;
  sessionStorage.setItem(JOB_STORE, job.id);
  $("progress-wrap").hidden = false;
  if (fresh && job.audio_url) {
    player.src = job.audio_url;
    player.hidden = false;
  }
  updateJob(job);
  followEvents(job);
}

// The stream's length: with a tempo the server makes more than the track keeps, then cuts it.
function streamSeconds(job) {
  return (job.progress && job.progress.audio_total) || job.request.duration;
}

function producedSeconds(job) {
  const p = job.progress || {};
  if (p.audio_seconds > 0) return p.audio_seconds;
  return p.steps_total ? (p.steps_done / p.steps_total) * streamSeconds(job) : 0;
}

function measureRate(produced) {
  const now = performance.now() / 1000;
  const samples = state.samples;
  if (produced <= 0) return;
  if (samples.length && produced <= samples[samples.length - 1][1]) return;
  samples.push([now, produced]);
  while (samples.length > 2 && now - samples[1][0] > 10) samples.shift(); // the last ~10 s
  const [t0, a0] = samples[0];
  if (samples.length >= 2 && now - t0 >= 0.4) state.rate = (produced - a0) / (now - t0);
}

function updateJob(job) {
  state.job = job;
  $("job").dataset.status = job.status;
  const duration = streamSeconds(job);
  const produced = Math.min(producedSeconds(job), duration);
  if (job.status === "running") measureRate(producedSeconds(job));
  const p = job.progress || {};
  const fraction = p.steps_total ? p.steps_done / p.steps_total : produced / duration;
  $("progress").value = Math.max(0, Math.min(1, fraction || 0));
  if (job.status === "queued") {
    setPhase("queued", "Queued: waiting for the engine…");
    setProgressLine(`${fmt(duration)} s of audio requested`);
  } else if (job.status === "running") {
    setPhase("running", "Generating… it plays as it is made.");
    const parts = [`${fmt(produced)} of ${fmt(duration)} s`];
    if (state.rate) {
      parts.push(speedText(state.rate));
      const left = (duration - produced) / state.rate;
      if (left > 1) parts.push(`about ${Math.ceil(left)} s left`);
    }
    setProgressLine(parts.join(" · "));
  }
  maybePlay();
}

function setProgressLine(text, note) {
  if (text !== null) state.progressLine = text;
  $("progress-text").textContent = state.progressLine + (note ? ` · ${note}` : "");
}

function setPhase(phase, text) {
  if (state.phase === phase) return;
  state.phase = phase;
  announce(text);
}

async function followEvents(job) {
  const controller = new AbortController();
  state.abort = controller;
  const url = job.events_url || `/jobs/${encodeURIComponent(job.id)}/events`;
  try {
    const response = await api(url, { headers: { Accept: "text/event-stream" }, signal: controller.signal });
    if (!response.ok) throw new ApiError(response.status, await readJson(response), response);
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer = (buffer + value).replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        if (handleEvent(block)) {
          controller.abort();
          return;
        }
      }
    }
  } catch (error) {
    if (controller.signal.aborted) return;
    if (error.status === 401) {
      finishJob({ ...state.job, status: "failed", error: { message: error.message } });
      return;
    }
  }
  if (!controller.signal.aborted && !state.finished) await poll(job.id, controller.signal);
}

// One server-sent event; true once the job is over.
function handleEvent(block) {
  let name = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") name = value;
    else if (field === "data") data.push(value);
  }
  if (!data.length || state.finished) return state.finished;
  let job;
  try { job = parseJson(data.join("\n")); } catch { return false; }
  if (!job || !job.status) return false;
  if (name === "done" || name === "error" || FINISHED.has(job.status)) {
    finishJob(job);
    return true;
  }
  updateJob(job);
  return false;
}

// Where the event stream broke off: ask for the job until it is over.
async function poll(id, signal) {
  while (!state.finished && !signal.aborted) {
    await new Promise((resolve) => setTimeout(resolve, 1000));
    if (state.finished || signal.aborted || !state.job || state.job.id !== id) return;
    try {
      const { body } = await apiJson(`/jobs/${encodeURIComponent(id)}`, { signal });
      if (FINISHED.has(body.status)) finishJob(body);
      else updateJob(body);
    } catch (error) {
      if (error.status === 404) {
        finishJob({ ...state.job, status: "failed", error: { message: "The job is gone from the server." } });
      }
    }
  }
}

function finishJob(job) {
  if (state.finished && state.job && state.job.id === job.id) return;
  state.finished = true;
  state.job = job;
  sessionStorage.removeItem(JOB_STORE);
  if (state.abort) state.abort.abort();
  $("job").dataset.status = job.status;
  setBusy(false);
  if (job.status === "succeeded") {
    const result = job.result || {};
    const url = result.public_url || job.public_url;
    const length = result.duration ?? job.request.duration;
    $("progress").value = 1;
    const channels = { 1: "mono", 2: "stereo" }[result.channels] || "";
    const rate = result.sample_rate ? `${result.sample_rate / 1000} kHz` : "";
    setProgressLine([`${fmt(length)} s`, rate, channels].filter(Boolean).join(" · "));
    announce(`Done: ${fmt(length)} s of audio, seed ${result.seed ?? job.request.seed}.`);
    if (state.rate) $("generate-hint").textContent = `The last track was ${speedText(state.rate)}.`;
    showResult(job, url);
    maybePlay();
    loadHistory(false);
  } else if (job.status === "canceled") {
    stopPlayer();
    $("progress-wrap").hidden = true;
    announce("Canceled: nothing was stored.");
  } else {
    stopPlayer();
    $("progress-wrap").hidden = true;
    const message = (job.error && job.error.message) || "The job failed.";
    announce(`Failed: ${message}`);
  }
}

function showResult(job, url) {
  const result = job.result || {};
  const format = result.format || job.request.format || "wav";
  $("download").href = url;
  $("download").download = `tunesmith-${job.id}.${format}`;
  $("download").textContent = `Download ${format.toUpperCase()}`;
  $("metadata").href = result.metadata_url || job.metadata_url;
  // a loop plays on from the stored file (the stream, a one-off, ends first)
  const loop = !!job.request.loop;
  $("result-meta").textContent = `seed ${result.seed ?? job.request.seed}${loop ? " · loops" : ""}`;
  $("result").hidden = false;
  showProduction({ production: result.production ?? job.production, warnings: result.warnings ?? job.warnings });
  if (!player.getAttribute("src")) {
    player.src = url;
    player.hidden = false;
    player.loop = loop;
  } else if (player.paused || player.ended) {
    const replay = loop && player.ended;
    switchToFile(url);
    player.loop = loop;
    if (replay) player.play().catch(() => {});
  } else {
    player.addEventListener("ended", () => {
      switchToFile(url);
      player.loop = loop;
      if (loop) player.play().catch(() => {});
    }, { once: true });
  }
  drawWaveform(url);
}

// The finished file replaces the stream once it is not playing: it can be seeked, and it is
// the normalized audio that was stored.
function switchToFile(url) {
  if (!state.job || player.getAttribute("src") === url) return;
  const at = player.ended ? 0 : player.currentTime;
  player.src = url;
  if (at > 0) player.addEventListener("loadedmetadata", () => { player.currentTime = at; }, { once: true });
}

async function cancel() {
  const job = state.job;
  if (!job || state.finished) return;
  $("cancel").disabled = true;
  announce("Canceling…");
  try {
    const { body } = await apiJson(`/jobs/${encodeURIComponent(job.id)}`, { method: "DELETE" });
    if (FINISHED.has(body.status)) finishJob(body);
  } catch (error) {
    $("cancel").disabled = false;
    if (error.status === 409) announce("Too late to cancel: the job had already finished.");
    else showError(error);
  }
}

// ---------------------------------------------------------------- playback while it streams
// Audio ready ahead of the playhead: what the element holds, or what the server has made
// (a paused element stops reading after a few seconds; the rest waits on the connection).
function bufferedAhead() {
  const t = player.currentTime;
  const ranges = player.buffered;
  let ahead = 0;
  for (let i = 0; i < ranges.length; i++) {
    if (ranges.start(i) <= t + 0.1 && ranges.end(i) >= t) ahead = ranges.end(i) - t;
  }
  const streaming = state.job && player.getAttribute("src") === state.job.audio_url;
  if (streaming) ahead = Math.max(ahead, producedSeconds(state.job) - t);
  return Math.max(0, ahead);
}

// Playing from t with b seconds buffered and the engine making r seconds per second never
// runs dry when b >= (D - t) * (1 - r): start only then (plus a margin), or at once if r >= 1.
function readyToPlay() {
  const job = state.job;
  const remaining = Math.max(0, streamSeconds(job) - player.currentTime);
  const ahead = bufferedAhead();
  if (state.finished || ahead >= remaining - 0.05) return true;
  if (state.rate === null) return false;
  if (state.rate >= 1) return true;
  return ahead >= remaining * (1 - state.rate) + PLAY_MARGIN;
}

function maybePlay() {
  if (!state.job || !player.getAttribute("src") || state.userPaused) return;
  if (!player.paused || player.ended || (state.played && !state.stalled)) return;
  if (state.finished && state.job.status !== "succeeded") return;
  if (!readyToPlay()) {
    if (state.job.status === "running" && state.rate !== null && state.rate < 1) {
      const need = (streamSeconds(state.job) - player.currentTime) * (1 - state.rate) + PLAY_MARGIN;
      setProgressLine(null, `buffering ${fmt(bufferedAhead())} of ${fmt(need)} s before playing`);
    }
    return;
  }
  player.play().catch(() => {
    if (!state.finished) announce("Generating… press play to listen as it is made.");
  });
}

// ---------------------------------------------------------------- a job from before a reload
export async function resume() {
  const id = sessionStorage.getItem(JOB_STORE);
  if (!id) return;
  try {
    const { body } = await apiJson(`/jobs/${encodeURIComponent(id)}`);
    if (FINISHED.has(body.status)) { sessionStorage.removeItem(JOB_STORE); return; }
    setBusy(true);
    startFollowing(body, false); // its audio plays from the stored file once it is done
  } catch {
    sessionStorage.removeItem(JOB_STORE);
  }
}
