// Shows every <time datetime="...Z" data-utc> in the viewer's own time zone, in the same
// shape the server writes UTC ("2026-12-05 12:58:23 GMT+5:30"); the element's title keeps
// the UTC time for hovering, and without JavaScript the UTC text simply stays.
// Regions the live poller swaps in are converted as they arrive.
(function () {
  "use strict";
  if (!window.Intl || !Intl.DateTimeFormat) return;
  var format;
  try {
    format = new Intl.DateTimeFormat("en-US", {
      year: "numeric", month: "2-digit", day: "2-digit",
      hour: "2-digit", minute: "2-digit", second: "2-digit",
      hourCycle: "h23", timeZoneName: "short",
    });
  } catch (e) {
    return;
  }

  function local(date) {
    var parts = {};
    var list = format.formatToParts(date);
    for (var i = 0; i < list.length; i++) parts[list[i].type] = list[i].value;
    return parts.year + "-" + parts.month + "-" + parts.day + " " +
      parts.hour + ":" + parts.minute + ":" + parts.second + " " + parts.timeZoneName;
  }

  function convert(root) {
    var times = root.querySelectorAll("time[data-utc]:not([data-local])");
    for (var i = 0; i < times.length; i++) {
      var el = times[i];
      var date = new Date(el.getAttribute("datetime"));
      if (isNaN(date.getTime())) continue;
      el.setAttribute("data-local", "");
      el.textContent = local(date);
    }
  }

  function start() {
    convert(document);
    new MutationObserver(function (changes) {
      for (var i = 0; i < changes.length; i++) {
        var added = changes[i].addedNodes;
        for (var j = 0; j < added.length; j++) {
          if (added[j].nodeType === 1) convert(added[j].parentNode || added[j]);
        }
      }
    }).observe(document.body, { childList: true, subtree: true });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
