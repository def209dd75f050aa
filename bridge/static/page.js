// The status page refreshes its live parts (verdict, needs attention, details) in place,
// so scroll position, keyboard focus and open sections stay as they are. The page works
// without this script: it then reloads itself now and then (a <noscript> meta refresh).
(function () {
  "use strict";
  var every = Number(document.body.dataset.refresh || 30) * 1000;

  function keepOpen(old, fresh) {
    old.querySelectorAll("details[id][open]").forEach(function (open) {
      var twin = fresh.querySelector("#" + CSS.escape(open.id));
      if (twin) twin.open = true;
    });
  }

  function unreachable() {
    var verdict = document.getElementById("verdict");
    if (!verdict) return;
    verdict.className = "verdict state-stopped";
    var headline = document.getElementById("verdict-headline");
    if (headline) headline.textContent = "Not answering · the bridge did not answer the " +
      "page's refresh at " + new Date().toLocaleTimeString() + " (is it running?)";
  }

  function refresh() {
    if (document.hidden) return;
    fetch(location.href, { credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (response.redirected) {  // signed out meanwhile: show the sign-in form
          location.reload();
          return null;
        }
        if (!response.ok) throw new Error(String(response.status));
        return response.text();
      })
      .then(function (html) {
        if (html === null) return;
        var fresh = new DOMParser().parseFromString(html, "text/html");
        document.querySelectorAll("[data-live]").forEach(function (old) {
          var next = fresh.getElementById(old.id);
          if (!next || old.contains(document.activeElement)) return;
          keepOpen(old, next);
          old.replaceWith(document.importNode(next, true));
        });
      })
      .catch(unreachable);
  }

  setInterval(refresh, every);
  document.addEventListener("visibilitychange", function () {
    if (!document.hidden) refresh();
  });
})();
