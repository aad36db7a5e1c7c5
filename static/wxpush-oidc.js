// wxpush hosted login page of /oidc/authorize (SPEC §14): mounts the widget on the page's
// OIDC request. The page gives its settings as JSON in <script id="wxpush-oidc">:
// {server, request, door, lang}; once the person is logged in the widget goes on to the client.

import { mount } from "./wxpush.js";

const config = JSON.parse(document.getElementById("wxpush-oidc").textContent);
mount(document.querySelector('[data-wxpush="oidc-login"]'), {
  server: config.server,
  door: config.door,
  lang: config.lang,
  oidc: config.request,
});
