// "Copy as curl": the form as the exact command that makes the same request of this server.

import { apiKey } from "./api.js";
import { clearErrors, formValues, jsonBody, uploadsToSend, validate } from "./form.js";
import { $ } from "./state.js";

// One shell word: single quotes, each ' inside closed, escaped and reopened.
function quote(text) {
  return `'${String(text).replace(/'/g, "'\\''")}'`;
}

// POST /generate (it answers with the stored track): JSON, or a form when files go with it.
export function curlCommand() {
  const values = formValues();
  const files = uploadsToSend();
  const lines = [`curl -sS ${quote(`${location.origin}/generate`)}`];
  const key = apiKey();
  if (key) lines.push(`-H ${quote(`Authorization: Bearer ${key}`)}`);
  if (files.length) {
    // --form-string: a value starting with @ or < stays text
    for (const [name, value] of Object.entries(values)) lines.push(`--form-string ${quote(`${name}=${value}`)}`);
    for (const name of files) {
      const file = $(name).files[0].name.replace(/["\\]/g, "\\$&");
      lines.push(`-F ${quote(`${name}=@"${file}"`)}`);
    }
  } else {
    lines.push(`-H ${quote("Content-Type: application/json")}`);
    lines.push(`--data-raw ${quote(jsonBody(values))}`);
  }
  return lines.join(" \\\n  ");
}

export function setUpCurl() {
  $("copy-curl").addEventListener("click", async () => {
    clearErrors();
    if (!validate()) return;
    const command = curlCommand();
    const files = uploadsToSend().length;
    $("curl-command").value = command;
    $("curl-hint").textContent = files
      ? "Run it in the folder that holds the uploaded files."
      : "It answers with the stored track's URLs once the track is made.";
    $("curl-dialog").showModal();
    $("curl-command").select();
    await copy(command);
  });
  $("curl-copy").addEventListener("click", () => copy($("curl-command").value));
}

async function copy(command) {
  try {
    await navigator.clipboard.writeText(command);
    $("curl-status").textContent = "Copied to the clipboard.";
  } catch {
    $("curl-command").select();
    $("curl-status").textContent = "Select it and copy it (Ctrl+C or ⌘C).";
  }
}
