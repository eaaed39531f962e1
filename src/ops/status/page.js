"use strict";
// Fetches /status.json from this port every few seconds and shows it.
// Every value is written with textContent: nothing from the proxy is ever
// parsed as HTML.
(function () {
  var REFRESH_MS = 3000;
  // A namespace name, never fetched.
  var SVG = "http://www.w3.org/2000/svg";
  var $ = function (id) { return document.getElementById(id); };
  var text = function (id, v) { $(id).textContent = (v === null || v === undefined) ? "–" : String(v); };

  function duration(secs) {
    if (secs === null || secs === undefined) return "–";
    var s = Math.round(secs), d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600),
        m = Math.floor(s % 3600 / 60), r = s % 60;
    if (d) return d + "d " + h + "h";
    if (h) return h + "h " + m + "m";
    if (m) return m + "m " + r + "s";
    return r + "s";
  }

  function seconds(v) {
    if (v === null || v === undefined) return "–";
    return v < 1 ? Math.round(v * 1000) + " ms" : v.toFixed(1) + " s";
  }

  function chart(history) {
    var svg = $("chart"), w = 600, h = 160, top = 10, bottom = 20;
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    var n = 60, sent = history.sent.slice(-n), planned = history.planned.slice(-n);
    var max = 1;
    sent.forEach(function (v) { if (v > max) max = v; });
    planned.forEach(function (v) { if (v !== null && v > max) max = v; });
    var barW = w / n, y = function (v) { return h - bottom - (h - top - bottom) * v / max; };
    var offset = n - sent.length;
    sent.forEach(function (v, i) {
      var r = document.createElementNS(SVG, "rect");
      r.setAttribute("class", "sent");
      r.setAttribute("x", String((offset + i) * barW + 1));
      r.setAttribute("width", String(Math.max(barW - 2, 1)));
      r.setAttribute("y", String(y(v)));
      r.setAttribute("height", String(h - bottom - y(v)));
      svg.appendChild(r);
    });
    var points = [];
    planned.forEach(function (v, i) {
      if (v !== null) points.push(((offset + i) * barW + barW / 2) + "," + y(v));
    });
    if (points.length) {
      var line = document.createElementNS(SVG, "polyline");
      line.setAttribute("class", "planned");
      line.setAttribute("points", points.join(" "));
      svg.appendChild(line);
    }
    var axis = document.createElementNS(SVG, "line");
    axis.setAttribute("class", "axis");
    axis.setAttribute("x1", "0"); axis.setAttribute("x2", String(w));
    axis.setAttribute("y1", String(h - bottom)); axis.setAttribute("y2", String(h - bottom));
    svg.appendChild(axis);
    [["60 min ago", 2, "start"], ["now", w - 2, "end"], ["max " + max + "/min", 2, "start"]].forEach(function (l, i) {
      var t = document.createElementNS(SVG, "text");
      t.setAttribute("x", String(l[1]));
      t.setAttribute("y", String(i === 2 ? top : h - 5));
      t.setAttribute("text-anchor", l[2]);
      t.textContent = l[0];
      svg.appendChild(t);
    });
  }

  function callers(list) {
    var body = $("callers");
    while (body.firstChild) body.removeChild(body.firstChild);
    if (!list.length) {
      var tr = document.createElement("tr"), td = document.createElement("td");
      td.colSpan = 4; td.className = "muted"; td.textContent = "none tracked";
      tr.appendChild(td); body.appendChild(tr);
      return;
    }
    list.forEach(function (c) {
      var tr = document.createElement("tr");
      [c.caller, c.requests, c.quota_share === undefined ? "–" : (c.quota_share * 100).toFixed(1) + " %", c.refused].forEach(function (v) {
        var td = document.createElement("td");
        td.textContent = v === undefined ? "–" : String(v);
        tr.appendChild(td);
      });
      body.appendChild(tr);
    });
  }

  function show(s) {
    var ready = $("ready");
    ready.textContent = s.ready ? "ready" : "not ready";
    ready.className = "badge " + (s.ready ? "ok" : "bad");
    text("reason", s.reason || "");
    text("version", s.version);
    text("uptime", duration(s.uptime_secs));
    text("profile", s.profile);
    text("upstream", s.upstream);

    var q = s.quota;
    text("limit", q.limit);
    text("remaining", q.remaining);
    text("reset", duration(q.reset_secs));
    $("reset").setAttribute("data-secs", String(q.reset_secs));
    text("spent", (q.spent * 100).toFixed(1) + " %");
    $("spent-meter").value = q.spent;
    chart(q.history);

    var t = s.token;
    text("token-held", t.held ? "yes" : "no");
    text("token-generation", t.generation);
    text("token-expires", t.held ? duration(t.expires_in_secs) : "–");
    $("token-expires").setAttribute("data-secs", String(t.expires_in_secs));
    text("token-last", t.last_fetch || "none yet");
    text("token-last-ago", t.last_fetch_ago_secs === null ? "" : duration(t.last_fetch_ago_secs) + " ago");
    text("token-error", t.last_error || "none");

    var l = s.line;
    text("waiting", l.waiting);
    text("wait-p50", seconds(l.wait_p50_secs));
    text("wait-p99", seconds(l.wait_p99_secs));
    text("refused-rate-limited", l.refused_rate_limited);
    text("refused-queue-full", l.refused_queue_full);

    callers(s.callers);
    text("shared-state", s.shared.reason ? s.shared.state + " (" + s.shared.reason + ")" : s.shared.state);
    text("shared-budget", s.shared.budget === null ? "–" : s.shared.budget);
    text("shared-replicas", s.shared.replicas === null ? "–" : s.shared.replicas);
    text("config", s.config);
    text("updated", "updated " + new Date().toLocaleTimeString());
  }

  function refresh() {
    fetch("status.json", { cache: "no-store", credentials: "omit" })
      .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
      .then(show)
      .catch(function (e) { text("updated", "update failed: " + e.message); })
      .then(function () { setTimeout(refresh, REFRESH_MS); });
  }
  refresh();
})();
