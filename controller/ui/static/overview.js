// Filters the overview as you type: the same GET the form submits (so the URL stays the
// one to share, and the live poller in ui.js asks for the same rows), fetched as the
// live fragment and swapped in. Without JavaScript the form's Filter button does it.
(function () {
  "use strict";
  var form = document.querySelector("form[data-overview-filter]");
  if (!form || !window.fetch || !window.URLSearchParams) return;
  var DELAY_MS = 300;
  var timer = null;
  var asked = 0;

  function query() {
    var params = new URLSearchParams();
    var fields = form.querySelectorAll("input[name], select[name]");
    for (var i = 0; i < fields.length; i++) {
      var value = fields[i].value.trim();
      if (value) params.append(fields[i].name, value);
    }
    return params.toString(); // no page: a new filter starts at the first page
  }

  function apply() {
    var qs = query();
    var live = "/ui/live/overview" + (qs ? "?" + qs : "");
    document.body.setAttribute("data-live-url", live);
    if (window.history) window.history.replaceState(null, "", "/" + (qs ? "?" + qs : ""));
    var mine = ++asked;
    fetch(live, { credentials: "same-origin", cache: "no-store", headers: { Accept: "text/html" } })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) {
        if (html === null || mine !== asked) return; // a later keystroke asked again
        var fresh = new DOMParser().parseFromString(html, "text/html").querySelector('[data-live="rollouts"]');
        var old = document.querySelector('[data-live="rollouts"]');
        if (fresh && old) old.replaceWith(document.importNode(fresh, true));
      })
      .catch(function () { /* ui.js says when the server cannot be reached */ });
  }

  function soon() {
    window.clearTimeout(timer);
    timer = window.setTimeout(apply, DELAY_MS);
  }

  form.addEventListener("input", soon);
  form.addEventListener("change", soon);
})();
