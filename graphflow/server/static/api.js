// Talking to the server: the token from session storage as the Bearer header on every call.
const TOKEN_KEY = "graphflow-token";

export function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }
export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value); else sessionStorage.removeItem(TOKEN_KEY);
  imageURLs.clear();
}

function headers(extra = {}) {
  const t = token();
  return t ? { ...extra, Authorization: `Bearer ${t}` } : extra;
}

/** fetch a JSON route: {status, body}; a network failure gives status 0 and an error body. */
export async function api(path, { method = "GET", json, form } = {}) {
  const init = { method, headers: headers(json !== undefined ? { "Content-Type": "application/json" } : {}) };
  if (json !== undefined) init.body = JSON.stringify(json);
  if (form !== undefined) init.body = form;
  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    return { status: 0, body: { error: `the server cannot be reached (${error.message})` } };
  }
  let body;
  try { body = await response.json(); } catch { body = { error: `answer ${response.status} is not JSON` }; }
  return { status: response.status, body };
}

// Images are fetched with the token (an <img src> cannot send it) and shown as blob: URLs, one per output url.
const imageURLs = new Map();
export async function imageURL(url) {
  if (!url.startsWith("/outputs/")) throw new Error(`not an output url: ${url}`);
  if (!imageURLs.has(url)) {
    imageURLs.set(url, fetch(url, { headers: headers() }).then(async (response) => {
      if (!response.ok) { imageURLs.delete(url); throw new Error(`${url}: ${response.status}`); }
      return URL.createObjectURL(await response.blob());
    }));
  }
  return imageURLs.get(url);
}

/** The WebSocket of all job events; the token travels as a subprotocol (browsers cannot set its headers). */
export function openEvents() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const protocols = ["graphflow"];
  const t = token();
  if (t) {
    const bytes = new TextEncoder().encode(t);
    const base64 = btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
    protocols.push(`bearer.${base64}`);
  }
  return new WebSocket(`${scheme}://${location.host}/ws`, protocols);
}
