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
