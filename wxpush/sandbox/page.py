"""The phone page's HTML: a simplified WeChat screen (no build step, inline CSS and JS).

Hooks for tests and scripts: ``data-sandbox="person"`` (the test person select),
``"new-person"``, ``"follow"``, ``"scan"`` (buttons), ``"reply"`` (the account's reply),
``"phone"`` (input), ``"sms-lookup"`` (button) and ``"sms-code"`` (the latest console code).
The other sandbox screens (:mod:`wxpush.sandbox.connectpage`) are built from the same
:func:`document`, :data:`PERSON_PICKER` and :data:`NEW_PERSON_SCRIPT`.
"""

from __future__ import annotations

from html import escape

from wxpush.sandbox.persons import PERSONS

STYLE = """
  body { margin: 0; font: 16px/1.4 -apple-system, "PingFang SC", "Helvetica Neue", sans-serif;
         background: #ededed; color: #111; }
  header { background: #2e2e2e; color: #fff; padding: 12px 16px; text-align: center; }
  header small { display: block; color: #aaa; font-size: 12px; }
  main { max-width: 420px; margin: 0 auto; padding: 16px; }
  .card { background: #fff; border-radius: 8px; padding: 16px; margin-bottom: 12px; }
  .account { display: flex; align-items: center; gap: 12px; }
  .logo { width: 48px; height: 48px; border-radius: 6px; background: #07c160; color: #fff;
          display: grid; place-items: center; font-weight: bold; }
  label { display: block; font-size: 14px; color: #555; margin: 8px 0 4px; }
  select, input { width: 100%; box-sizing: border-box; padding: 8px; font-size: 16px; }
  input[type=checkbox] { width: auto; }
  button { border: 0; border-radius: 6px; padding: 10px 14px; font-size: 16px; cursor: pointer; }
  .primary { background: #07c160; color: #fff; width: 100%; margin-top: 10px; }
  .secondary { background: #f2f2f2; color: #111; width: 100%; margin-top: 10px; }
  .link { background: none; color: #576b95; padding: 4px 0; }
  .bubble { background: #fff; border-radius: 6px; padding: 10px 12px; min-height: 1.4em;
            white-space: pre-wrap; }
  .code { font: bold 28px/1.2 monospace; letter-spacing: 4px; }
"""

PERSON_PICKER = f"""<select id="person" name="person" data-sandbox="person">
      {"".join(f'<option value="{escape(i)}">{escape(n)}</option>' for i, n in PERSONS)}
    </select>
    <button type="button" class="link" id="new-person" data-sandbox="new-person">
      + make a new person</button>"""

NEW_PERSON_SCRIPT = """
  document.getElementById("new-person").onclick = () => {
    const n = document.querySelectorAll("#person option").length + 1;
    const bytes = crypto.getRandomValues(new Uint8Array(10));
    const id = "oSandbox" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
    document.getElementById("person").add(new Option("Person " + n + " (new)", id, true, true));
  };
"""


def document(title: str, subtitle: str, main: str, script: str = "") -> str:
    """A sandbox screen: WeChat's bar (``title``, ``subtitle``, already HTML) over ``main``."""
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} (sandbox)</title>
<style>{STYLE}</style>
</head>
<body>
<header>{title}<small>{subtitle}</small></header>
<main>
{main}
</main>
<script>{script}</script>
</body>
</html>
"""


PHONE_PAGE = document(
    "WeChat",
    "wxpush sandbox: a simulated phone, no real WeChat involved",
    f"""  <div class="card account">
    <div class="logo">wx</div>
    <div><strong>Service account</strong><br><small>Scanned a login QR code</small></div>
  </div>
  <div class="card">
    <label for="person">Who is scanning?</label>
    {PERSON_PICKER}
    <button type="button" class="primary" id="follow" data-sandbox="follow">Follow</button>
    <button type="button" class="secondary" id="scan" data-sandbox="scan">
      Scan (already following)</button>
  </div>
  <div class="card">
    <label>The account replies</label>
    <div class="bubble" id="reply" data-sandbox="reply" aria-live="polite">&nbsp;</div>
  </div>
  <div class="card">
    <label for="phone">Text messages for phone</label>
    <input id="phone" data-sandbox="phone" type="tel" placeholder="13800138000">
    <button type="button" class="secondary" id="sms-lookup" data-sandbox="sms-lookup">
      Show latest code</button>
    <p class="code" id="sms-code" data-sandbox="sms-code" aria-live="polite"></p>
  </div>""",
    NEW_PERSON_SCRIPT
    + """
  const ticket = new URLSearchParams(location.search).get("ticket") || "";
  const $ = (id) => document.getElementById(id);
  async function send(follow) {
    $("reply").textContent = "…";
    const res = await fetch("./phone/scan", {method: "POST",
      headers: {"Content-Type": "application/json"},
      body: JSON.stringify({ticket, openid: $("person").value, follow})});
    const data = await res.json();
    $("reply").textContent = res.ok ? (data.reply || "(no reply: success)")
                                    : "Error: " + data.message;
  }
  $("follow").onclick = () => send(true);
  $("scan").onclick = () => send(false);
  $("sms-lookup").onclick = async () => {
    const res = await fetch("./phone/sms?phone=" + encodeURIComponent($("phone").value));
    const data = await res.json();
    $("sms-code").textContent = res.ok ? (data.code || "no code yet") : data.message;
  };
""",
)
