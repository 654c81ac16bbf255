// Small helpers shared by the dashboard's modules: fetching JSON, and formatting without floats
// (amounts arrive as exact decimal strings and are shortened as strings, never rounded through a double).

/** GET a JSON document from the API; rejects with the API's `detail` on an error status. */
export async function api(path) {
  const response = await fetch(path, { headers: { Accept: "application/json" } });
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    const error = new Error(body.detail || `${path}: HTTP ${response.status}`);
    error.status = response.status;
    throw error;
  }
  return response.json();
}

/** An exact decimal string cut (not rounded) to 6 significant fraction digits: "0.000123456789" -> "0.000123456". */
export function shortAmount(text) {
  const value = String(text);
  const [whole, fraction] = value.split(".");
  if (fraction === undefined) return value;
  const leadingZeros = /^0+/.exec(whole.replace("-", "") === "0" ? fraction : "")?.[0].length ?? 0;
  const keep = whole.replace("-", "") === "0" ? leadingZeros + 6 : Math.max(0, 6 - whole.replace("-", "").length);
  const cut = fraction.slice(0, keep).replace(/0+$/, "");
  return cut ? `${whole}.${cut}` : whole;
}

export function shortHash(hash) {
  return hash && hash.length > 14 ? `${hash.slice(0, 8)}…${hash.slice(-4)}` : hash;
}

/** Unix seconds -> "HH:MM:SS" (UTC), or the date too when it is not today. */
export function utcTime(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const iso = new Date(Number(seconds) * 1000).toISOString();
  const today = new Date().toISOString().slice(0, 10);
  return iso.slice(0, 10) === today ? iso.slice(11, 19) : `${iso.slice(0, 10)} ${iso.slice(11, 19)}`;
}

export function setText(element, text) {
  const value = String(text);
  if (element && element.textContent !== value) element.textContent = value;
}

/** The exact product of two decimal strings, as a decimal string ("1.5" × "2.25" = "3.375"). */
export function multiply(a, b) {
  const parse = (text) => {
    const [whole, fraction = ""] = String(text).split(".");
    return [BigInt(whole + fraction), fraction.length];
  };
  const [x, xs] = parse(a);
  const [y, ys] = parse(b);
  const scale = xs + ys;
  const product = x * y;
  const negative = product < 0n;
  const digits = (negative ? -product : product).toString().padStart(scale + 1, "0");
  const whole = digits.slice(0, digits.length - scale);
  const fraction = digits.slice(digits.length - scale).replace(/0+$/, "");
  return `${negative ? "-" : ""}${whole}${fraction ? `.${fraction}` : ""}`;
}
