// Waveforms drawn from the audio itself (decoded with Web Audio): the big one under the player,
// and a small one in each history entry, decoded only once it scrolls into view.

import { $, state } from "./state.js";

// Decoding at a low rate keeps a long track's samples small; the shape survives.
const THUMB_RATE = 8000;

export async function peaksFrom(url, buckets, rate = 44100) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`HTTP ${response.status}`);
  const bytes = await response.arrayBuffer();
  const audio = await new OfflineAudioContext(1, 1, rate).decodeAudioData(bytes);
  return { peaks: peaksOf(audio, buckets), duration: audio.duration };
}

function peaksOf(audio, buckets) {
  const channels = [];
  for (let c = 0; c < audio.numberOfChannels; c++) channels.push(audio.getChannelData(c));
  const length = audio.length;
  const size = Math.max(1, Math.floor(length / buckets));
  const peaks = [];
  for (let b = 0; b * size < length; b++) {
    let low = 0, high = 0;
    const end = Math.min(length, (b + 1) * size);
    for (let i = b * size; i < end; i++) {
      let v = 0;
      for (const data of channels) v += data[i];
      v /= channels.length;
      if (v < low) low = v; else if (v > high) high = v;
    }
    peaks.push([low, high]);
  }
  return peaks;
}

// Bars of [low, high] peaks across the canvas; those before `played` (0-1) in the accent.
export function drawPeaks(canvas, peaks, played, barWidth = 3) {
  const ratio = window.devicePixelRatio || 1;
  const width = Math.max(1, Math.round(canvas.clientWidth * ratio));
  const height = Math.max(1, Math.round(canvas.clientHeight * ratio));
  if (canvas.width !== width || canvas.height !== height) { canvas.width = width; canvas.height = height; }
  const ctx = canvas.getContext("2d");
  const styles = getComputedStyle(document.documentElement);
  const gradient = ctx.createLinearGradient(0, 0, width, 0);
  gradient.addColorStop(0, styles.getPropertyValue("--accent").trim());
  gradient.addColorStop(1, styles.getPropertyValue("--accent-2").trim());
  const rest = styles.getPropertyValue("--wave").trim();
  ctx.clearRect(0, 0, width, height);
  const bar = Math.max(2, Math.round(barWidth * ratio));
  const gap = Math.max(1, Math.round(ratio));
  const columns = Math.floor(width / (bar + gap));
  let top = 0;
  for (const [low, high] of peaks) top = Math.max(top, -low, high);
  const scale = top > 0 ? (height / 2 - 2) / top : 0;
  for (let x = 0; x < columns; x++) {
    const from = Math.floor((x / columns) * peaks.length);
    const to = Math.max(from + 1, Math.floor(((x + 1) / columns) * peaks.length));
    let low = 0, high = 0;
    for (let i = from; i < to && i < peaks.length; i++) {
      low = Math.min(low, peaks[i][0]);
      high = Math.max(high, peaks[i][1]);
    }
    const y0 = height / 2 - Math.max(high * scale, ratio);
    const y1 = height / 2 - Math.min(low * scale, -ratio);
    ctx.fillStyle = x / columns < played ? gradient : rest;
    ctx.fillRect(x * (bar + gap), y0, bar, y1 - y0);
  }
}

// Click or tap on a waveform: seek its player there.
export function seekOnClick(canvas, player) {
  canvas.addEventListener("click", (event) => {
    const rect = canvas.getBoundingClientRect();
    if (Number.isFinite(player.duration) && player.seekable.length) {
      player.currentTime = ((event.clientX - rect.left) / rect.width) * player.duration;
    }
  });
}

// ---------------------------------------------------------------- history thumbnails
// One decode at a time, in the order entries come into view: a long history stays cheap.
const waiting = [];
let decoding = false;
const seen = new IntersectionObserver((entries) => {
  for (const entry of entries) {
    if (!entry.isIntersecting) continue;
    seen.unobserve(entry.target);
    waiting.push(entry.target);
  }
  drain();
}, { rootMargin: "120px" });
const resized = new ResizeObserver((entries) => {
  for (const entry of entries) entry.target._redraw();
});

// Draw `url`'s waveform into `canvas` once it is near the viewport; progress follows `player`.
export function lazyWaveform(canvas, url, player) {
  canvas.dataset.state = "waiting";
  canvas._wave = { url, player, peaks: null };
  const redraw = () => {
    const wave = canvas._wave;
    if (!wave.peaks) return;
    const played = player.duration > 0 ? player.currentTime / player.duration : 0;
    drawPeaks(canvas, wave.peaks, played, 2);
  };
  player.addEventListener("timeupdate", redraw);
  player.addEventListener("seeked", redraw);
  seekOnClick(canvas, player);
  canvas._redraw = redraw;
  seen.observe(canvas);
  resized.observe(canvas);
}

async function drain() {
  if (decoding) return;
  decoding = true;
  while (waiting.length) {
    const canvas = waiting.shift();
    if (!canvas.isConnected) continue;
    canvas.dataset.state = "decoding";
    try {
      const { peaks } = await peaksFrom(canvas._wave.url, 400, THUMB_RATE);
      canvas._wave.peaks = peaks;
      canvas.dataset.state = "drawn";
      canvas._redraw();
    } catch {
      canvas.dataset.state = "failed"; // e.g. a bucket without CORS: the player still works
      canvas.hidden = true;
    }
  }
  decoding = false;
}

// The finished track's waveform under the player.
export async function drawWaveform(url) {
  state.peaks = null;
  state.waveUrl = url;
  $("waveform-wrap").hidden = true;
  try {
    const { peaks, duration } = await peaksFrom(url, 800);
    if (state.waveUrl !== url) return;
    state.peaks = peaks;
    state.peakDuration = duration;
    $("waveform-wrap").hidden = false;
    renderWaveform();
  } catch {
    $("waveform-wrap").hidden = true; // e.g. a bucket without CORS: no waveform, no fuss
  }
}

export function renderWaveform() {
  const player = $("player");
  if (!state.peaks || $("waveform-wrap").hidden) return;
  const duration = player.duration || state.peakDuration || 1;
  const played = Number.isFinite(duration) && duration > 0 ? player.currentTime / duration : 0;
  drawPeaks($("waveform"), state.peaks, played);
}
