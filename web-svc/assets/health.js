// The dashboard's status area: polls /api/status every 2 s and shows each service's health
// in words and colour, the camera line and the banner; every <time> is shown in the viewer's
// time zone. Without JavaScript the server-rendered text (in UTC) stays.
(function () {
  function hhmm(ms) {
    return new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }
  function localise(root) {
    root.querySelectorAll("time[datetime]").forEach(function (t) {
      t.textContent = hhmm(Date.parse(t.getAttribute("datetime")));
    });
  }
  function el(tag, text) {
    var e = document.createElement(tag);
    e.textContent = text;
    return e;
  }
  function item(h) {
    var li = el("li", "");
    li.className = "h-" + h.level;
    li.dataset.service = h.service;
    li.appendChild(el("b", h.label));
    li.appendChild(document.createTextNode(": " + h.words));
    if (h.since_unix_ms) {
      var up = h.level === "ok" || h.level === "warn";
      li.appendChild(document.createTextNode(up ? ", up since " : " since "));
      var t = el("time", "");
      t.setAttribute("datetime", new Date(h.since_unix_ms).toISOString());
      li.appendChild(t);
    }
    return li;
  }
  function set(id, text) {
    var e = document.getElementById(id);
    if (e) e.textContent = text;
  }
  function banner(text) {
    var b = document.getElementById("banner");
    if (!text) {
      if (b) b.remove();
      return;
    }
    if (!b) {
      b = el("p", "");
      b.id = "banner";
      b.className = "banner";
      b.setAttribute("role", "alert");
      var h = document.querySelector("header");
      h.parentNode.insertBefore(b, h.nextSibling);
    }
    b.textContent = text;
  }
  async function poll() {
    try {
      var r = await fetch("/api/status");
      if (!r.ok) return;
      var j = await r.json();
      var list = document.getElementById("health");
      list.replaceChildren.apply(list, j.services.map(item));
      set("cam", j.camera.state);
      set("fps", j.fps.toFixed(1));
      set("motion", j.motion.active ? "MOTION NOW" : "none");
      set("viewers", j.viewers);
      var d = document.getElementById("disk");
      d.hidden = !j.disk.problem;
      d.firstChild.textContent = j.disk.problem || "";
      banner(j.banner);
      localise(document);
    } catch (e) {
      set("cam", "web server unreachable");
    }
  }
  // Leaving the page (or the browser keeping it in its back/forward cache) ends the live
  // stream at once: otherwise the frozen page holds its connection until the server drops it
  // as stalled, and the next page counts two viewers for one tab.
  var live = document.getElementById("live");
  var src = live && live.getAttribute("src");
  window.addEventListener("pagehide", function () {
    if (live) live.src = "data:,";
  });
  window.addEventListener("pageshow", function (e) {
    if (live && e.persisted) live.src = src;
  });
  localise(document);
  poll();
  setInterval(poll, 2000);
})();
