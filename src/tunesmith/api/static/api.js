// Talking to the server: JSON with exact seeds, the API key (asked for on a 401), errors.

import { $ } from "./state.js";

export const KEY_STORE = "tunesmith.apiKey";

export class ApiError extends Error {
  constructor(status, body, response) {
    super((body && body.message) || `HTTP ${status}`);
    this.status = status;
    this.code = (body && body.error) || "http_error";
    this.fields = (body && Array.isArray(body.fields)) ? body.fields : [];
    const retry = response && Number(response.headers.get("Retry-After"));
    this.retryAfter = Number.isFinite(retry) && retry > 0 ? retry : null;
  }
}

// Seeds go up to 2^63-1, past what a JS number holds exactly: keep them as strings.
export function parseJson(text) {
  return JSON.parse(text.replace(/"seed":\s*(\d+)/g, '"seed":"$1"'));
}

export async function readJson(response) {
  const text = await response.text();
  try {
    return parseJson(text);
  } catch {
    return { error: `http_${response.status}`, message: text.slice(0, 300) || response.statusText };
  }
}

export function apiKey() {
  return localStorage.getItem(KEY_STORE) || "";
}

export function authHeaders(headers) {
  const h = new Headers(headers || {});
  const key = apiKey();
  if (key) h.set("Authorization", "Bearer " + key);
  return h;
}

// fetch with the key; a 401 asks for the key and tries again (until the user cancels).
export async function api(path, options = {}) {
  for (;;) {
    const response = await fetch(path, { ...options, headers: authHeaders(options.headers) });
    if (response.status !== 401) return response;
    const body = await readJson(response);
    await askKey(body.message || "This server needs an API key.", true);
  }
}

export async function apiJson(path, options) {
  const response = await api(path, options);
  const body = response.status === 204 ? {} : await readJson(response);
  if (!response.ok) throw new ApiError(response.status, body, response);
  return { body, response };
}

// ---------------------------------------------------------------- the key dialog
let keyPrompt = null;

export function askKey(message, wrong) {
  if (keyPrompt) return keyPrompt.promise;
  const dialog = $("key-dialog");
  let resolve, reject;
  const promise = new Promise((res, rej) => { resolve = res; reject = rej; });
  keyPrompt = { promise, resolve, reject };
  $("key-message").textContent = message;
  $("key-error").textContent = wrong && apiKey() ? "The saved key was refused." : "";
  $("api-key").value = apiKey();
  dialog.returnValue = "";
  if (!dialog.open) dialog.showModal();
  $("api-key").focus();
  return promise;
}

export function updateKeyButton() {
  $("key-button").textContent = apiKey() ? "API key ✓" : "API key";
}

export function setUpKeyDialog(onSaved) {
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("api-key").value.trim();
    if (!key) {
      $("key-error").textContent = "Enter the key, or cancel.";
      $("api-key").focus();
      return;
    }
    localStorage.setItem(KEY_STORE, key);
    $("key-dialog").close("saved");
  });
  $("key-cancel").addEventListener("click", () => $("key-dialog").close("canceled"));
  $("key-forget").addEventListener("click", () => {
    localStorage.removeItem(KEY_STORE);
    $("api-key").value = "";
    $("key-error").textContent = "Forgotten.";
    $("api-key").focus();
  });
  $("key-dialog").addEventListener("close", () => {
    const prompt = keyPrompt;
    keyPrompt = null;
    updateKeyButton();
    if (!prompt) return;
    if ($("key-dialog").returnValue === "saved") prompt.resolve();
    else prompt.reject(new ApiError(401, { error: "unauthorized", message: "This server needs an API key." }));
  });
  $("key-button").addEventListener("click", () => {
    askKey("Set the key this server expects (TUNESMITH_API_KEY).", false).then(onSaved, () => {});
  });
}
