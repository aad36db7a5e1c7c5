// wxpush widget, the doors' helpers (SPEC §12, §13): which door a page uses, the scene kept in
// sessionStorage across the in-WeChat door's round trip, and loading WeChat's WxLogin.js once.

export const DOORS = ["follow", "website", "oauth"];

// The key under which the in-WeChat door keeps its scene while the page is away at WeChat:
// JSON {server, scene, kind, ws_url, wait_url, expires_at}.
export const STORED = "wxpush:scene";

// "auto": a page opened inside WeChat cannot scan its own screen, so it gets the button.
export function pickDoor(door) {
  const wanted = door || "auto";
  if (wanted !== "auto") return DOORS.includes(wanted) ? wanted : null;
  const agent = typeof navigator !== "undefined" ? navigator.userAgent || "" : "";
  return agent.includes("MicroMessenger") ? "oauth" : "follow";
}

// The server's absolute base, so a scene kept by one server is never resumed against another.
export function serverBase(server) {
  return new URL(`${server}/`, location.href).href;
}

// The page's address for WeChat to send the person back to: its fragment stays behind.
export function returnTo() {
  const here = new URL(location.href);
  here.hash = "";
  return here.href;
}

function storage() {
  try { return window.sessionStorage; } catch { return null; } // blocked by the browser
}

export function keep(base, scene) {
  const record = { server: base, scene: scene.scene, kind: scene.kind, ws_url: scene.ws_url,
    wait_url: scene.wait_url, expires_at: scene.expires_at };
  try { storage()?.setItem(STORED, JSON.stringify(record)); } catch { /* full or blocked */ }
}

function read() {
  try { return JSON.parse(storage()?.getItem(STORED) || "null"); } catch { return null; }
}

// The kept scene of this server if it is still alive; an expired one is dropped here.
export function recall(base) {
  const record = read();
  if (!record || record.server !== base) return null;
  const until = Date.parse(record.expires_at);
  if (!record.scene || !record.ws_url || !(until > Date.now())) { forget(base); return null; }
  return record;
}

// Removes the kept scene of this server (another server's is left alone).
export function forget(base) {
  const record = read();
  if (record && record.server !== base) return;
  try { storage()?.removeItem(STORED); } catch { /* blocked */ }
}

const scripts = new Map();

// Loads a classic script once per page, however many widgets or new QR codes ask for it.
export function loadScript(url) {
  if (!scripts.has(url)) {
    scripts.set(url, new Promise((resolve, reject) => {
      const tag = document.createElement("script");
      tag.src = url;
      tag.async = true;
      tag.onload = () => resolve();
      tag.onerror = () => { scripts.delete(url); tag.remove(); reject(new Error(`${url} did not load`)); };
      document.head.append(tag);
    }));
  }
  return scripts.get(url);
}
