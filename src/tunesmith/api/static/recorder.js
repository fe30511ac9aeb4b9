// Recording a melody or an intro from the microphone into the upload field the model takes.
// MediaRecorder makes WebM or Ogg, which the server does not read: the page decodes the
// recording with Web Audio and hands the server a WAV.

import { UPLOADS, setFieldError, setUpload } from "./form.js";
import { $ } from "./state.js";
import { fmt } from "./words.js";

const MAX_SECONDS = 30; // the most either upload is used for
const RATE = 32000; // MusicGen's own rate: the server resamples anything else
let current = null; // the recording under way: { name, recorder, stream, chunks, done, ... }

export function setUpRecorders() {
  const able = !!(navigator.mediaDevices && navigator.mediaDevices.getUserMedia && window.MediaRecorder);
  for (const name of UPLOADS) {
    const button = $(name + "-record");
    button.hidden = !able;
    button.dataset.label = button.textContent;
    button.addEventListener("click", () => (current && current.name === name ? stop() : start(name)));
  }
}

async function start(name) {
  if (current) await stop();
  setFieldError(name, "");
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (error) {
    setFieldError(name, `The microphone is not available: ${error.message || error.name}`);
    return;
  }
  const recorder = new MediaRecorder(stream);
  const chunks = [];
  recorder.addEventListener("dataavailable", (event) => { if (event.data.size) chunks.push(event.data); });
  const done = new Promise((resolve) => recorder.addEventListener("stop", resolve, { once: true }));
  current = { name, recorder, stream, chunks, done, started: performance.now(), timer: 0 };
  recorder.start();
  const button = $(name + "-record");
  button.classList.add("recording");
  button.setAttribute("aria-pressed", "true");
  current.timer = setInterval(tick, 200);
  tick();
}

function tick() {
  if (!current) return;
  const seconds = (performance.now() - current.started) / 1000;
  $(current.name + "-record").textContent = `Stop recording · ${fmt(Math.floor(seconds))} s`;
  if (seconds >= MAX_SECONDS) stop();
}

async function stop() {
  const recording = current;
  if (!recording) return;
  current = null;
  clearInterval(recording.timer);
  recording.recorder.stop();
  await recording.done;
  for (const track of recording.stream.getTracks()) track.stop();
  const button = $(recording.name + "-record");
  button.classList.remove("recording");
  button.setAttribute("aria-pressed", "false");
  button.textContent = button.dataset.label;
  try {
    const blob = new Blob(recording.chunks, { type: recording.recorder.mimeType });
    const audio = await new OfflineAudioContext(1, 1, RATE).decodeAudioData(await blob.arrayBuffer());
    const stamp = new Date().toISOString().slice(0, 19).replace(/[-:]/g, "").replace("T", "-");
    setUpload(recording.name, new File([wav(audio)], `recording-${stamp}.wav`, { type: "audio/wav" }));
  } catch (error) {
    setFieldError(recording.name, `The recording could not be read: ${error.message || error.name}`);
  }
}

// 16-bit PCM WAV of a decoded AudioBuffer.
function wav(audio) {
  const channels = audio.numberOfChannels;
  const frames = audio.length;
  const bytes = frames * channels * 2;
  const view = new DataView(new ArrayBuffer(44 + bytes));
  const text = (at, s) => { for (let i = 0; i < s.length; i++) view.setUint8(at + i, s.charCodeAt(i)); };
  text(0, "RIFF");
  view.setUint32(4, 36 + bytes, true);
  text(8, "WAVE");
  text(12, "fmt ");
  view.setUint32(16, 16, true);
  view.setUint16(20, 1, true); // PCM
  view.setUint16(22, channels, true);
  view.setUint32(24, audio.sampleRate, true);
  view.setUint32(28, audio.sampleRate * channels * 2, true);
  view.setUint16(32, channels * 2, true);
  view.setUint16(34, 16, true);
  text(36, "data");
  view.setUint32(40, bytes, true);
  const planes = [];
  for (let c = 0; c < channels; c++) planes.push(audio.getChannelData(c));
  let at = 44;
  for (let i = 0; i < frames; i++) {
    for (const plane of planes) {
      const v = Math.max(-1, Math.min(1, plane[i]));
      view.setInt16(at, v < 0 ? v * 0x8000 : v * 0x7fff, true);
      at += 2;
    }
  }
  return view.buffer;
}
