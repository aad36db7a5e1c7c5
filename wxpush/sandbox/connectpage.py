"""The HTML (and the stand-in ``WxLogin.js``) of the sandbox's OAuth screens.

Built on the phone page's look (:mod:`wxpush.sandbox.page`); values are escaped here, where
they enter HTML or a script. Hooks: ``data-sandbox="connect-qr"`` (the website QR code),
``"connect-phone-link"`` (the phone URL it encodes), ``"connect-status"`` (what the embed
waits for), ``"person"``, ``"confirm"``, ``"decline"``, ``"result"`` (the phone's confirm
screen), ``"continue"``, ``"snapshot"`` (the in-WeChat consent), ``"wrong-parameters"``.
"""

from __future__ import annotations

import json
from html import escape

from wxpush.sandbox.page import NEW_PERSON_SCRIPT, PERSON_PICKER, document

SUBTITLE = "wxpush sandbox: a simulated WeChat, no real WeChat involved"

# WeChat's WxLogin.js, as it builds the embed: the options go into the query as given (WeChat's
# docs ask for an encodeURIComponent-ed redirect_uri), and the iframe may navigate the top
# window. The connect base is where this script was loaded from.
WXLOGIN_JS = """/* wxpush sandbox: a stand-in for WeChat's WxLogin.js */
(function () {
  var script = document.currentScript;
  var qrconnect = new URL("qrconnect", (script && script.src) || %(fallback)s).href;
  window.WxLogin = function (opts) {
    var selfRedirect = "default";
    if (opts.self_redirect === true) selfRedirect = "true";
    else if (opts.self_redirect === false) selfRedirect = "false";
    var src = qrconnect + "?appid=" + opts.appid + "&scope=" + opts.scope +
      "&redirect_uri=" + opts.redirect_uri + "&state=" + opts.state +
      "&login_type=jssdk&self_redirect=" + selfRedirect +
      "&styletype=" + (opts.styletype || "") + "&sizetype=" + (opts.sizetype || "") +
      "&bgcolor=" + (opts.bgcolor || "") + "&rst=" + (opts.rst || "");
    if (opts.style) src += "&style=" + opts.style;
    if (opts.href) src += "&href=" + opts.href;
    if (opts.lang === "en") src += "&lang=en";
    var frame = document.createElement("iframe");
    frame.src = src;
    frame.frameBorder = "0";
    frame.allowTransparency = "true";
    frame.scrolling = "no";
    frame.width = "300px";
    frame.height = "400px";
    /* WeChat's sandbox flags, and popups: the sandbox's phone link opens in a new tab */
    frame.setAttribute("sandbox", "allow-scripts allow-top-navigation allow-same-origin " +
      "allow-popups allow-popups-to-escape-sandbox");
    var container = document.getElementById(opts.id);
    container.innerHTML = "";
    container.appendChild(frame);
  };
})();
"""

QRCONNECT_STYLE = """<style>
  body { background: #fff; } header { display: none; }
  main { padding: 8px; text-align: center; }
  [data-sandbox="connect-qr"] svg { width: 180px; height: 180px; }
</style>"""

QRCONNECT_SCRIPT = """
  const uuid = %(uuid)s, selfRedirect = %(self_redirect)s;
  const status = document.getElementById("status");
  const words = {waiting: "Scan with WeChat to log in",
    scanned: "Scanned: confirm on your phone", confirmed: "Confirmed: logging in…",
    declined: "Declined on the phone", expired: "This QR code expired: reload the page"};
  async function poll() {
    try {
      const res = await fetch("./poll?uuid=" + encodeURIComponent(uuid), {cache: "no-store"});
      const data = await res.json();
      status.textContent = words[data.status] || data.status;
      if (data.location) {
        (selfRedirect ? window : window.top).location.href = data.location;
        return;
      }
      if (data.status === "expired") return;
    } catch (err) {
      status.textContent = "Waiting for the sandbox…";
    }
    setTimeout(poll, 500);
  }
  poll();
"""

CONFIRM_SCRIPT = """
  const uuid = %(uuid)s;
  const $ = (id) => document.getElementById(id);
  async function answer(confirm) {
    $("result").textContent = "…";
    const res = await fetch("./connect", {method: "POST",
      headers: {"Content-Type": "application/json"},
      body: JSON.stringify({uuid, person: $("person").value, confirm})});
    const data = await res.json();
    $("result").textContent = !res.ok ? "Error: " + data.message
      : confirm ? "Confirmed: return to your computer" : "Declined";
  }
  $("confirm").onclick = () => answer(true);
  $("decline").onclick = () => answer(false);
"""

SCOPE_WORDS = {
    "snsapi_base": "know who you are (on WeChat this asks nothing: snsapi_base)",
    "snsapi_userinfo": "get your nickname and profile photo (snsapi_userinfo)",
}


def script_value(value: object) -> str:
    """``value`` as a JavaScript literal safe inside ``<script>``."""
    return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e")


def wxlogin_js(fallback: str) -> str:
    """The stand-in script; ``fallback`` is its URL when ``document.currentScript`` is not
    known (it is, for a script loaded by a tag or added by code)."""
    return WXLOGIN_JS % {"fallback": script_value(fallback)}


def qrconnect_page(svg: str, phone_url: str, uuid: str, *, self_redirect: bool) -> str:
    """The website QR code as WeChat's embed shows it, waiting for the phone."""
    main = f"""  {QRCONNECT_STYLE}
  <p><strong>WeChat login</strong></p>
  <div data-sandbox="connect-qr" role="img" aria-label="WeChat login QR code">{svg}</div>
  <p id="status" data-sandbox="connect-status" aria-live="polite">Scan with WeChat to log in</p>
  <p><a href="{escape(phone_url)}" target="_blank" rel="noopener"
        data-sandbox="connect-phone-link">Open the sandbox phone</a></p>"""
    values = {"uuid": script_value(uuid), "self_redirect": script_value(self_redirect)}
    return document("WeChat", SUBTITLE, main, QRCONNECT_SCRIPT % values)


def confirm_page(uuid: str, app_name: str) -> str:
    """The phone's screen after scanning a website QR code: confirm the login or not."""
    main = f"""  <div class="card account">
    <div class="logo">wx</div>
    <div><strong>Log in to {escape(app_name)}</strong><br>
      <small>A website asks to log you in with WeChat</small></div>
  </div>
  <div class="card">
    <label for="person">Who is scanning?</label>
    {PERSON_PICKER}
    <button type="button" class="primary" id="confirm" data-sandbox="confirm">Log in</button>
    <button type="button" class="secondary" id="decline" data-sandbox="decline">Cancel</button>
    <p id="result" data-sandbox="result" aria-live="polite"></p>
  </div>"""
    return document("WeChat", SUBTITLE, main, NEW_PERSON_SCRIPT + CONFIRM_SCRIPT % {
        "uuid": script_value(uuid)
    })  # fmt: skip


def consent_page(appid: str, redirect_uri: str, scope: str, state: str, app_name: str) -> str:
    """The page WeChat shows inside its own browser when a site asks who the person is."""
    hidden = "".join(
        f'<input type="hidden" name="{name}" value="{escape(value)}">'
        for name, value in (("appid", appid), ("redirect_uri", redirect_uri),
                            ("response_type", "code"), ("scope", scope), ("state", state))
    )  # fmt: skip
    main = f"""  <div class="card account">
    <div class="logo">wx</div>
    <div><strong>{escape(app_name)}</strong><br>
      <small>asks to {escape(SCOPE_WORDS.get(scope, scope))}</small></div>
  </div>
  <form class="card" method="post" action="./authorize">
    {hidden}
    <label for="person">Who is using WeChat?</label>
    {PERSON_PICKER}
    <label><input type="checkbox" name="snapshot" value="1" data-sandbox="snapshot">
      Act as a snapshot user (WeChat's snapshot page: a virtual openid)</label>
    <button type="submit" class="primary" name="action" value="continue"
            data-sandbox="continue">Continue</button>
    <button type="submit" class="secondary" name="action" value="decline"
            data-sandbox="decline">Decline</button>
  </form>"""
    return document("WeChat", SUBTITLE, main, NEW_PERSON_SCRIPT)


def message_page(hook: str, headline: str, words: str) -> str:
    """A page that only says something: WeChat's "参数错误", an expired QR code."""
    main = f"""  <div class="card" data-sandbox="{escape(hook)}">
    <p><strong>{escape(headline)}</strong></p>
    <p>{escape(words)}</p>
  </div>"""
    return document("WeChat", SUBTITLE, main)
