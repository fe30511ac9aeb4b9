// What every part of the studio shares: the page's state, and the helpers to reach the page.

export const $ = (id) => document.getElementById(id);

export const FINISHED = new Set(["succeeded", "failed", "canceled"]);
export const CONTEXT_SECONDS = 30; // a continuation keeps at most the last 30 s of its input

export const state = {
  health: null,
  models: [],         // GET /models: the served models, the default first
  maxDuration: 300,
  job: null,          // the latest Job JSON of the job this page follows
  finished: true,
  abort: null,        // AbortController of the event stream
  samples: [],        // [wall seconds, audio seconds] from progress events
  rate: null,         // audio seconds made per wall second
  userPaused: false,
  ourPause: false,
  played: false,      // playback of this job started once: no autoplay after that
  stalled: false,     // paused by us, waiting for enough audio
  progressLine: "",
  phase: "",
  historyNext: null,
  peaks: null,
  waveUrl: null,
  source: null,       // the history track whose audio is in input_audio (the lineage to send)
};

export function announce(text) {
  $("status").textContent = text;
}
