// wxpush login widget (SPEC §11, §13): an ES module with no build step; also sets window.WxPush.
//   WxPush.mount(element, {server, account, lang, door, oidc, link, onLogin(tokens), onLinked(state),
//                          onError(error)})
// Shows the door's way in (the service account's QR code, WeChat's website-login QR code, or
// inside WeChat a "Log in with WeChat" button) with a countdown, listens over WebSocket, falls
// back to long-poll and then to plain polling, renews the scene on EXPIRED and renders the
// phone-binding form. door: "auto" (default: "oauth" inside WeChat, else "follow"), "follow",
// "website" or "oauth". The in-WeChat door leaves the page for WeChat and comes back to it;
// the widget mounted there resumes the scene it kept in sessionStorage (see wxpush-doors.js).
// oidc: the id of an OIDC authorization request (the hosted page of /oidc/authorize, SPEC §14):
// its scenes log in for that request, and the login goes on to the client's redirect URI.
// link: the access token of a person already logged in (or a function giving it, SPEC §15):
// the WeChat that completes the scene is linked to them (onLinked(state)), nobody logs in.

import { forget, keep, loadScript, pickDoor, recall, returnTo, serverBase } from "./wxpush-doors.js";

const TEXT = {
  en: {
    title: "Log in with WeChat",
    loading: "Getting a QR code…",
    scan: "Scan the QR code with WeChat and follow the account.",
    left: (s) => `The code is valid for ${s} s`,
    expired: "The QR code expired; here is a new one.",
    refresh: "New QR code",
    reconnecting: "Connection lost; reconnecting…",
    longpoll: "Live updates unavailable; checking with long requests.",
    polling: "Checking every few seconds.",
    notReg: "Scanned. Enter your phone number to finish logging in.",
    phone: "Phone number",
    sendCode: "Send code",
    resend: (s) => `Resend in ${s} s`,
    code: "Code from the text message",
    submit: "Log in",
    codeSent: "A code was sent by text message.",
    loggedIn: "Logged in.",
    linked: "WeChat linked to your account.",
    claimed: "This login was completed in another tab or window.",
    failed: "Could not reach the login server; retrying…",
    needPhone: "Enter your phone number.",
    needCode: "Enter the code from the text message.",
    error: "Something went wrong.",
    // the website and in-WeChat doors
    scanWebsite: "Scan with WeChat and confirm on your phone.",
    tap: "Tap the button to log in with WeChat.",
    wechatLogin: "Log in with WeChat",
    preparing: "Getting the WeChat login ready…",
    leaving: "Opening WeChat…",
    resuming: "Back from WeChat; finishing the login…",
    expiredTap: "The login timed out; tap the button to try again.",
    notRegTap: "Almost done: enter your phone number to finish logging in.",
    scriptFailed: "WeChat's login QR code could not be loaded; try a new one.",
    badDoor: "This page asks for a way of logging in that the widget does not know.",
    retry: "Try again",
    errors: {
      kind_unavailable: "This way of logging in with WeChat is not set up on this server.",
      bad_kind: "This server does not offer this way of logging in with WeChat.",
      bad_return_to: "WeChat cannot send you back here: the login server does not allow this page.",
      oidc_request_expired: "This login has expired. Go back to the site and log in again.",
      identity_taken: "This WeChat already belongs to another account; nothing was changed.",
      invalid_token: "Your session has ended; log in again to link a WeChat.",
    },
  },
  zh: {
    title: "微信扫码登录",
    loading: "正在获取二维码…",
    scan: "请用微信扫描二维码并关注公众号。",
    left: (s) => `二维码 ${s} 秒后过期`,
    expired: "二维码已过期，已为你换了一个新的。",
    refresh: "换一个二维码",
    reconnecting: "连接中断，正在重连…",
    longpoll: "实时连接不可用，改用长轮询。",
    polling: "改为每隔几秒查询一次。",
    notReg: "已扫码。请输入手机号完成登录。",
    phone: "手机号",
    sendCode: "发送验证码",
    resend: (s) => `${s} 秒后可重发`,
    code: "短信验证码",
    submit: "登录",
    codeSent: "验证码已通过短信发送。",
    loggedIn: "已登录。",
    linked: "已将微信关联到你的账号。",
    claimed: "此次登录已在另一个标签页或窗口中完成。",
    failed: "无法连接登录服务器，正在重试…",
    needPhone: "请输入手机号。",
    needCode: "请输入短信验证码。",
    error: "出错了。",
    scanWebsite: "请用微信扫码，并在手机上确认登录。",
    tap: "请点击按钮，用微信登录。",
    wechatLogin: "微信登录",
    preparing: "正在准备微信登录…",
    leaving: "正在打开微信…",
    resuming: "已从微信返回，正在完成登录…",
    expiredTap: "登录已超时，请重新点击按钮。",
    notRegTap: "还差一步：请输入手机号完成登录。",
    scriptFailed: "无法加载微信登录二维码，请换一个试试。",
    badDoor: "此页面要求的登录方式本组件不认识。",
    retry: "重试",
    errors: {
      kind_unavailable: "此服务器没有开通这种微信登录方式。",
      oidc_request_expired: "此次登录已过期。请返回网站重新登录。",
      identity_taken: "此微信已属于另一个账号，未做任何更改。",
      invalid_token: "登录状态已失效，请重新登录后再关联微信。",
      bad_kind: "此服务器不支持这种微信登录方式。",
      bad_return_to: "微信无法带你回到此页面：登录服务器不允许此页面的地址。",
    },
  },
};

function pickLang(lang) {
  const l = (lang || (typeof navigator !== "undefined" && navigator.language) || "en").toLowerCase();
  return l.startsWith("zh") ? "zh" : "en";
}

function h(tag, attrs = {}, children = []) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === false || v == null) continue;
    if (k === "text") node.textContent = v;
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const child of children) node.append(child);
  return node;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

class Widget {
  constructor(el, opts = {}) {
    this.el = el;
    this.opts = opts;
    this.server = (opts.server || "").replace(/\/$/, "");
    this.base = serverBase(this.server);
    this.door = pickDoor(opts.door);
    this.lang = pickLang(opts.lang);
    this.t = TEXT[this.lang];
    this.gen = 0;
    this.ws = null;
    this.timers = new Set();
    this.transport = "ws";
    this.render();
    // Back from WeChat through the browser's back/forward cache: the page did not load again.
    this.onPageShow = (ev) => { if (ev.persisted && !this.done) this.begin(); };
    window.addEventListener("pageshow", this.onPageShow);
    this.begin();
  }

  render() {
    const t = this.t;
    this.el.classList.add("wxpush");
    this.el.setAttribute("lang", this.lang === "zh" ? "zh-CN" : "en");
    this.el.dataset.wxpushDoor = this.door || "";
    this.qr = h("img", { "data-wxpush": "qr", alt: t.title, width: 200, height: 200 });
    this.link = h("a", { "data-wxpush": "qr-link", target: "_blank", rel: "noopener" }, [this.qr]);
    this.wxlogin = h("div", { "data-wxpush": "wxlogin", id: this.uid("wxlogin"), class: "wxpush-wxlogin" });
    this.loginBtn = h("button", { type: "button", "data-wxpush": "wechat-login", class: "wxpush-wechat-login",
      text: t.wechatLogin, disabled: true });
    this.loginBtn.addEventListener("click", () => this.leaveForWeChat());
    this.countdown = h("p", { "data-wxpush": "countdown", class: "wxpush-countdown" });
    this.refreshBtn = h("button", { type: "button", "data-wxpush": "refresh",
      text: this.door === "oauth" ? t.retry : t.refresh });
    this.refreshBtn.addEventListener("click", () => this.start());
    const way = { follow: this.link, website: this.wxlogin, oauth: this.loginBtn }[this.door];
    this.qrBox = h("div", { class: "wxpush-qr" }, way ? [way, this.countdown, this.refreshBtn] : []);

    this.phone = h("input", { type: "tel", "data-wxpush": "phone", id: this.uid("phone"),
      autocomplete: "tel", required: true });
    this.sendBtn = h("button", { type: "submit", "data-wxpush": "send-code", text: t.sendCode });
    this.phoneForm = h("form", { class: "wxpush-row", novalidate: true }, [
      h("label", { for: this.phone.id, text: t.phone }), this.phone, this.sendBtn]);
    this.code = h("input", { type: "text", "data-wxpush": "code", id: this.uid("code"),
      autocomplete: "one-time-code", inputmode: "numeric", maxlength: 6, required: true });
    this.submitBtn = h("button", { type: "submit", "data-wxpush": "submit", text: t.submit });
    this.codeForm = h("form", { class: "wxpush-row", novalidate: true }, [
      h("label", { for: this.code.id, text: t.code }), this.code, this.submitBtn]);
    this.phoneForm.addEventListener("submit", (e) => { e.preventDefault(); this.sendCode(); });
    this.codeForm.addEventListener("submit", (e) => { e.preventDefault(); this.bind(); });
    this.bindBox = h("div", { class: "wxpush-bind", hidden: true }, [this.phoneForm, this.codeForm]);

    this.status = h("p", { "data-wxpush": "status", "aria-live": "polite", class: "wxpush-status" });
    this.error = h("p", { "data-wxpush": "error", role: "alert", class: "wxpush-error" });
    const title = this.door === "oauth" ? t.wechatLogin : t.title;
    this.el.replaceChildren(h("h2", { class: "wxpush-title", text: title }), this.qrBox,
      this.bindBox, this.status, this.error);
  }

  uid(name) {
    Widget.count = (Widget.count || 0) + 1;
    return `wxpush-${name}-${Widget.count}`;
  }

  say(text) { this.status.textContent = text; }
  fail(text) { this.error.textContent = text || ""; }

  later(ms, fn) {
    const id = setTimeout(() => { this.timers.delete(id); fn(); }, ms);
    this.timers.add(id);
  }

  stop() {
    this.gen += 1;
    for (const id of this.timers) clearTimeout(id);
    this.timers.clear();
    clearInterval(this.tick);
    clearInterval(this.resendTick);
    if (this.ws) { this.ws.onclose = this.ws.onmessage = this.ws.onerror = null; this.ws.close(); }
    this.ws = null;
  }

  destroy() {
    this.stop();
    window.removeEventListener("pageshow", this.onPageShow);
    this.el.replaceChildren();
    this.el.classList.remove("wxpush");
  }

  url(path) { return path.startsWith("/") ? this.server + path : path; }

  async api(path, options = {}) {
    const { token, ...rest } = options;
    const headers = {};
    if (rest.body) headers["Content-Type"] = "application/json";
    if (token) headers.Authorization = `Bearer ${token}`;
    const res = await fetch(this.url(path), { ...rest, headers });
    let data = {};
    try { data = await res.json(); } catch { /* 204 or not JSON */ }
    return { res, data };
  }

  // A scene kept across the in-WeChat door's round trip is picked up again; else a new one.
  begin() {
    if (!this.door) {
      this.fail(this.t.badDoor);
      this.report({ error: "bad_door", message: this.t.badDoor });
      return;
    }
    const kept = recall(this.base);
    if (kept) this.resume(kept);
    else this.start();
  }

  // The person is back from WeChat: the scene's first frame says how it went.
  resume(kept) {
    this.stop();
    const gen = this.gen;
    this.scene = kept;
    this.resuming = true;
    this.done = false;
    this.qrBox.hidden = true;
    this.bindBox.hidden = true;
    this.fail("");
    this.say(this.t.resuming);
    this.deadline = Date.parse(kept.expires_at);
    this.tick = setInterval(() => this.showCountdown(gen), 1000);
    this.listen(gen);
  }

  sceneRequest() {
    const body = this.opts.account ? { account: this.opts.account } : {};
    if (this.door !== "follow") body.kind = this.door; // a follow scene is what any server makes
    if (this.door === "oauth") body.return_to = returnTo();
    if (this.opts.oidc) body.oidc = this.opts.oidc;
    return body;
  }

  async start(attempt = 0) {
    this.stop();
    const gen = this.gen;
    forget(this.base);
    this.scene = null;
    this.resuming = false;
    this.done = false;
    this.bindBox.hidden = true;
    this.qrBox.hidden = false;
    this.refreshBtn.disabled = true;
    this.refreshBtn.hidden = this.door === "oauth"; // the button always opens a fresh login
    this.loginBtn.disabled = true;
    this.countdown.textContent = "";
    this.fail("");
    this.say(this.door === "oauth" ? this.t.preparing : this.t.loading);
    let answer;
    try {
      const body = JSON.stringify(this.sceneRequest());
      const link = this.opts.link;
      if (link) { // a link scene, opened with the person's access token
        const token = typeof link === "function" ? await link() : link;
        answer = await this.api("/api/v1/me/identities", { method: "POST", body, token });
      } else {
        answer = await this.api("/api/v1/scenes", { method: "POST", body });
      }
    } catch (err) {
      answer = { res: null, data: { message: this.t.failed } };
    }
    if (gen !== this.gen) return;
    this.refreshBtn.disabled = false;
    const { res, data } = answer;
    if (!res || res.status !== 201) { this.refused(res, data, attempt); return; }
    this.scene = data;
    this.show(gen, data);
    this.deadline = Date.now() + data.expires_in * 1000;
    this.tick = setInterval(() => this.showCountdown(gen), 1000);
    this.showCountdown(gen);
    this.say(this.waiting());
    this.listen(gen);
  }

  // The server said no: a door it has not set up is said once; anything else is retried.
  refused(res, data, attempt) {
    this.fail(this.t.errors[data.error] || data.message || this.t.error);
    this.report(data);
    this.say("");
    if (res && [400, 401, 410].includes(res.status)) { this.refreshBtn.hidden = false; return; }
    this.later(Math.min(30000, 1000 * 2 ** attempt), () => this.start(attempt + 1));
  }

  // Puts the new scene's way in on the screen.
  show(gen, data) {
    if (this.door === "follow") {
      this.qr.src = this.url(data.qr_image);
      this.link.href = data.qr_url;
    } else if (this.door === "oauth") {
      this.loginBtn.disabled = false;
    } else {
      this.wxlogin.replaceChildren();
      loadScript(this.url(data.wxlogin_script)).then(() => {
        if (gen !== this.gen) return;
        new window.WxLogin({ ...data.wxlogin, id: this.wxlogin.id });
      }).catch((err) => {
        if (gen !== this.gen) return;
        this.fail(this.t.scriptFailed);
        this.report({ error: "wxlogin_unavailable", message: String(err && err.message) });
      });
    }
  }

  // What the person is asked to do while the scene waits.
  waiting() {
    const kind = (this.scene && this.scene.kind) || this.door;
    if (!this.bindBox.hidden) return kind === "oauth" ? this.t.notRegTap : this.t.notReg;
    return { follow: this.t.scan, website: this.t.scanWebsite, oauth: this.t.tap }[kind] || this.t.scan;
  }

  // The in-WeChat door: keep the scene for the page WeChat sends the person back to, then go.
  leaveForWeChat() {
    if (!this.scene || !this.scene.authorize_url || this.done) return;
    keep(this.base, this.scene);
    const target = this.scene.authorize_url;
    this.stop();
    this.loginBtn.disabled = true;
    this.say(this.t.leaving);
    window.location.assign(target);
  }

  listen(gen) {
    this.failures = 0;
    if (this.wsWorked) this.transport = "ws"; // a new scene tries the WebSocket again
    this.el.dataset.wxpushTransport = this.transport;
    if (this.transport === "ws" && typeof WebSocket !== "undefined") this.listenWs(gen);
    else if (this.transport === "wait") this.longPoll(gen);
    else this.poll(gen);
  }

  showCountdown(gen) {
    if (gen !== this.gen || this.done) return;
    const left = Math.ceil((this.deadline - Date.now()) / 1000);
    const shown = this.bindBox.hidden && !this.qrBox.hidden && this.door !== "oauth";
    this.countdown.textContent = shown ? this.t.left(Math.max(0, left)) : "";
    // The server says EXPIRED itself; this is only a safety net when that news is late.
    if (left < -3 && this.bindBox.hidden) { this.say(this.expiredText()); this.start(); }
  }

  expiredText() { return this.door === "oauth" ? this.t.expiredTap : this.t.expired; }

  report(data) {
    if (this.opts.onError) {
      try { this.opts.onError(data); } catch (err) { console.error(err); }
    }
  }

  // Handles one state from any channel; true when the scene is over for this channel.
  handle(gen, state) {
    if (gen !== this.gen || this.done) return true;
    switch (state.status) {
      case "LOOP":
        // Back from WeChat with nothing done there (declined, or the back button): start over.
        if (this.resuming) { this.start(); return true; }
        if (typeof state.expires_in === "number") this.deadline = Date.now() + state.expires_in * 1000;
        return false;
      case "NOT_REG":
        this.resuming = false;
        if (this.bindBox.hidden) {
          this.bindBox.hidden = false;
          this.qrBox.hidden = true;
          this.say(this.waiting());
          this.phone.focus();
        }
        return false;
      case "EXPIRED": {
        const text = this.expiredText();
        this.say(text);
        this.start().then(() => { if (this.scene) this.say(text); });
        return true;
      }
      case "CONFLICT": // a link scene: this WeChat is another person's, nothing moved
        this.finish();
        this.fail(this.t.errors[state.error] || this.t.error);
        this.report({ error: state.error, message: this.t.errors[state.error] || this.t.error });
        return true;
      case "REG":
        if (state.linked) this.linked(state);
        else if (state.access_token || state.redirect) this.login(state);
        else if (this.binding) return true; // our own bind answer carries the tokens
        else { this.finish(); this.say(this.t.claimed); }
        return true;
      default:
        if (state.message) this.fail(state.message);
        return false;
    }
  }

  // The scene is over: nothing more to show or to keep.
  finish() {
    this.stop();
    this.done = true;
    this.resuming = false;
    forget(this.base);
    this.qrBox.hidden = true;
    this.bindBox.hidden = true;
  }

  linked(state) {
    this.finish();
    this.fail("");
    this.say(this.t.linked);
    if (this.opts.onLinked) {
      try { this.opts.onLinked(state); } catch (err) { console.error(err); this.report(err); }
    }
  }

  login(tokens) {
    this.finish();
    this.fail("");
    this.say(this.t.loggedIn);
    if (tokens.redirect) { location.assign(tokens.redirect); return; } // on to the OIDC client
    if (this.opts.onLogin) {
      try { this.opts.onLogin(tokens); } catch (err) { console.error(err); this.report(err); }
    }
  }

  listenWs(gen) {
    let frames = 0;
    let ws;
    try { ws = new WebSocket(this.scene.ws_url); } catch { this.fallback(gen, "wait"); return; }
    this.ws = ws;
    ws.onmessage = (ev) => {
      frames += 1;
      this.failures = 0;
      this.wsWorked = true;
      let state;
      try { state = JSON.parse(ev.data); } catch { return; }
      if (this.handle(gen, state)) { ws.onclose = null; }
    };
    ws.onerror = () => {};
    ws.onclose = () => {
      if (gen !== this.gen || this.done) return;
      this.ws = null;
      this.failures += 1;
      // Never worked here (blocked, refused by a proxy) or down for a while: fall back.
      if ((frames === 0 && !this.wsWorked) || this.failures >= 5) { this.fallback(gen, "wait"); return; }
      // 1012 (server restart), 1006 after frames, etc.: reconnect with backoff.
      this.say(this.t.reconnecting);
      const delay = Math.min(10000, 500 * 2 ** (this.failures - 1)) * (0.75 + Math.random() / 2);
      this.later(delay, () => { if (gen === this.gen) { this.say(this.waitingNow()); this.listenWs(gen); } });
    };
  }

  waitingNow() { return this.resuming ? this.t.resuming : this.waiting(); }

  fallback(gen, transport) {
    if (gen !== this.gen) return;
    this.transport = transport;
    this.failures = 0;
    this.el.dataset.wxpushTransport = transport;
    const also = this.waitingNow();
    if (transport === "wait") { this.say(`${also} ${this.t.longpoll}`); this.longPoll(gen); }
    else { this.say(`${also} ${this.t.polling}`); this.poll(gen); }
  }

  async longPoll(gen) {
    // Back from WeChat the state is settled already: a short wait tells LOOP (nothing done).
    let timeout = this.resuming ? 2 : 25;
    while (gen === this.gen && !this.done) {
      let state = null;
      try {
        const res = await fetch(`${this.scene.wait_url}?timeout=${timeout}`);
        if (res.ok) state = await res.json();
      } catch { /* network error */ }
      if (gen !== this.gen) return;
      if (!state) {
        this.failures += 1;
        if (this.failures >= 2) { this.fallback(gen, "poll"); return; }
        await sleep(1000);
        continue;
      }
      this.failures = 0;
      timeout = 25;
      if (this.handle(gen, state)) return;
      if (state.status === "NOT_REG") await sleep(1500); // answers at once while NOT_REG
    }
  }

  async poll(gen) {
    let delay = 1500;
    while (gen === this.gen && !this.done) {
      let state = null;
      try {
        const { res, data } = await this.api(`/api/v1/scenes/${this.scene.scene}`);
        if (res.ok || res.status === 404 || res.status === 410) state = res.ok ? data : { status: "EXPIRED" };
      } catch { /* network error */ }
      if (gen !== this.gen) return;
      if (state) { delay = 1500; if (this.handle(gen, state)) return; }
      else { delay = Math.min(15000, delay * 2); this.say(this.t.failed); }
      await sleep(delay);
    }
  }

  async sendCode() {
    const phone = this.phone.value.trim();
    if (!phone) { this.fail(this.t.needPhone); this.phone.focus(); return; }
    this.fail("");
    this.sendBtn.disabled = true;
    let answer;
    try {
      answer = await this.api(`/api/v1/scenes/${this.scene.scene}/sms`, {
        method: "POST", body: JSON.stringify({ phone }) });
    } catch { answer = { res: null, data: { message: this.t.failed } }; }
    const { res, data } = answer;
    let wait = 0;
    if (res && res.status === 202) {
      this.say(this.t.codeSent);
      wait = data.resend_in || 60;
      this.code.focus();
    } else {
      this.fail(data.message || this.t.error);
      this.report(data);
      if (res && res.status === 410) { this.start(); return; }
      wait = Number(res && res.headers.get("Retry-After")) || 0;
    }
    this.resendCountdown(wait);
  }

  resendCountdown(seconds) {
    clearInterval(this.resendTick);
    const until = Date.now() + seconds * 1000;
    const show = () => {
      const left = Math.ceil((until - Date.now()) / 1000);
      if (left <= 0) {
        clearInterval(this.resendTick);
        this.sendBtn.disabled = false;
        this.sendBtn.textContent = this.t.sendCode;
      } else {
        this.sendBtn.disabled = true;
        this.sendBtn.textContent = this.t.resend(left);
      }
    };
    show();
    if (seconds > 0) this.resendTick = setInterval(show, 1000);
  }

  async bind() {
    const phone = this.phone.value.trim();
    const code = this.code.value.trim();
    if (!phone) { this.fail(this.t.needPhone); this.phone.focus(); return; }
    if (!code) { this.fail(this.t.needCode); this.code.focus(); return; }
    this.fail("");
    this.submitBtn.disabled = true;
    this.binding = true;
    let answer;
    try {
      answer = await this.api(`/api/v1/scenes/${this.scene.scene}/bind`, {
        method: "POST", body: JSON.stringify({ phone, code }) });
    } catch { answer = { res: null, data: { message: this.t.failed } }; }
    this.submitBtn.disabled = false;
    this.binding = false;
    const { res, data } = answer;
    if (res && res.ok && (data.access_token || data.redirect)) { this.login(data); return; }
    this.fail(data.message || this.t.error);
    this.report(data);
    this.code.select();
    if (res && res.status === 410) this.later(3000, () => this.start());
  }
}

export function mount(element, options = {}) {
  const widget = new Widget(element, options);
  return { refresh: () => widget.start(), destroy: () => widget.destroy() };
}

export const WxPush = { mount };
if (typeof window !== "undefined") window.WxPush = WxPush;
export default WxPush;
