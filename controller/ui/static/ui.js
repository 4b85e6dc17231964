// Keeps an open page current: every few seconds, fetch the page's live fragment and
// swap in each [data-live] region, except a region the person is using (focus inside,
// text typed, a <details> opened), so a half-typed reason is never lost.
(function () {
  "use strict";
  var PERIOD_MS = 3000;
  var url = document.body.getAttribute("data-live-url");
  var stamp = document.querySelector("[data-freshness]");
  var lastOk = Date.now();
  var state = "ok"; // "ok", "failed", "signed-out"
  var inFlight = false;

  // The ?done=... note belongs to this one view; a reload should not repeat it.
  if (window.history && window.location.search.indexOf("done=") !== -1) {
    window.history.replaceState(null, "", window.location.pathname);
  }

  function isBusy(region) {
    var active = document.activeElement;
    if (active && active !== document.body && region.contains(active)) return true;
    if (region.querySelector("details[open]")) return true;
    var fields = region.querySelectorAll("textarea, input, select");
    for (var i = 0; i < fields.length; i++) {
      var f = fields[i];
      if (f.type === "hidden" || f.type === "submit" || f.type === "button") continue;
      if (f.tagName === "SELECT") {
        var opt = f.options[f.selectedIndex];
        if (opt && !opt.defaultSelected) return true;
      } else if (f.value.trim() !== "") {
        return true;
      }
    }
    return false;
  }

  function showFreshness() {
    if (!stamp) return;
    var seconds = Math.round((Date.now() - lastOk) / 1000);
    if (state === "signed-out") {
      stamp.textContent = "signed out: reload to sign in again";
    } else if (state === "failed") {
      stamp.textContent = "cannot reach the server; data from " + seconds + "s ago";
    } else {
      stamp.textContent = seconds < 2 ? "updated just now" : "updated " + seconds + "s ago";
    }
    stamp.parentNode.classList.toggle("stale", state !== "ok");
  }

  function swap(html) {
    var doc = new DOMParser().parseFromString(html, "text/html");
    var fresh = doc.querySelectorAll("[data-live]");
    for (var i = 0; i < fresh.length; i++) {
      var key = fresh[i].getAttribute("data-live");
      var old = document.querySelector('[data-live="' + key + '"]');
      if (old && !isBusy(old)) old.replaceWith(document.importNode(fresh[i], true));
    }
  }

  function refresh() {
    url = document.body.getAttribute("data-live-url"); // overview.js changes it as you filter
    if (!url || document.hidden || inFlight || state === "signed-out") return;
    inFlight = true;
    fetch(url, { credentials: "same-origin", cache: "no-store", headers: { Accept: "text/html" } })
      .then(function (response) {
        if (response.status === 401) {
          state = "signed-out";
          return null;
        }
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.text();
      })
      .then(function (html) {
        if (html === null) return;
        swap(html);
        lastOk = Date.now();
        state = "ok";
      })
      .catch(function () {
        state = "failed";
      })
      .then(function () {
        inFlight = false;
        showFreshness();
      });
  }

  if (url) {
    window.setInterval(refresh, PERIOD_MS);
    window.setInterval(showFreshness, 1000);
    document.addEventListener("visibilitychange", function () {
      if (!document.hidden) refresh();
    });
  }
})();
