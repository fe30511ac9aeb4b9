// Numbers and times as the page words them.

export function fmt(seconds) {
  const value = Number(seconds) || 0;
  return value >= 100 || Number.isInteger(value) ? value.toFixed(0) : value.toFixed(1);
}

export function ago(iso) {
  const then = new Date(iso);
  if (Number.isNaN(then.getTime())) return "";
  const seconds = (Date.now() - then.getTime()) / 1000;
  const rtf = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });
  if (seconds < 60) return rtf.format(-Math.round(seconds), "second");
  if (seconds < 3600) return rtf.format(-Math.round(seconds / 60), "minute");
  if (seconds < 86400) return rtf.format(-Math.round(seconds / 3600), "hour");
  return then.toLocaleDateString();
}

// `rate` is seconds of audio made per second of waiting; people think in "faster than it plays".
export function speedText(rate) {
  if (!Number.isFinite(rate) || rate <= 0) return "";
  const times = (x) => `${x < 10 ? x.toFixed(1) : x.toFixed(0)}x`;
  if (rate >= 1.05) return `made ${times(rate)} faster than it plays`;
  if (rate <= 1 / 1.05) return `made ${times(1 / rate)} slower than it plays`;
  return "made about as fast as it plays";
}

export function shortId(id) {
  return String(id || "").slice(0, 8);
}

// A checkpoint's short name: its last path part (``facebook/musicgen-small`` -> musicgen-small).
export function modelName(model) {
  return String(model || "").split("/").filter(Boolean).pop() || "model";
}

// What the producer's analysis found, in a line: "found 118.6 BPM, stretched x1.05; key found
// E minor, shifted −7 to A minor". Empty for none (or a server that sends none).
export function productionText(found) {
  if (!found || typeof found !== "object") return "";
  const number = (value) => typeof value === "number" && Number.isFinite(value);
  const parts = [];
  if (number(found.tempo_found)) {
    let tempo = `found ${found.tempo_found.toFixed(1)} BPM`;
    if (number(found.stretch)) {
      tempo += Math.abs(found.stretch - 1) < 0.005 ? ", no stretch needed" : `, stretched x${found.stretch.toFixed(2)}`;
    }
    parts.push(tempo);
  }
  if (found.key_found) {
    let key = `key found ${found.key_found}`;
    if (number(found.key_shift) && found.key_shift !== 0) {
      key += `, shifted ${found.key_shift > 0 ? "+" : "−"}${Math.abs(found.key_shift)}`;
    }
    if (found.key && found.key !== found.key_found) key += ` to ${found.key}`;
    parts.push(key);
  }
  if (number(found.bars)) {
    const from = number(found.downbeat) ? ` from the downbeat at ${found.downbeat.toFixed(2)} s` : "";
    parts.push(`${found.bars} bar${found.bars === 1 ? "" : "s"}${from}`);
  }
  return parts.join("; ");
}
