// jobforge console: live counts and charts on the overview. No dependencies; loaded with
// `defer` from the console's own origin (the pages' CSP allows no inline script).
(function () {
  "use strict";
  var base = document.body && document.body.getAttribute("data-base");
  var throughput = document.getElementById("chart-throughput");
  var depth = document.getElementById("chart-depth");
  if (!base || (!throughput && !depth)) return;

  var MAX_POINTS = 150; // 5 minutes at one sample every 2 s: the memory stays bounded
  var points = [];
  var SVG = "http://www.w3.org/2000/svg";

  function series(svg, lines) {
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    var w = 300, h = 120, pad = 4;
    var max = 1;
    lines.forEach(function (l) { l.values.forEach(function (v) { if (v > max) max = v; }); });
    var label = document.createElementNS(SVG, "text");
    label.setAttribute("x", "4"); label.setAttribute("y", "12");
    label.setAttribute("class", "axis");
    label.textContent = "max " + (Math.round(max * 10) / 10);
    svg.appendChild(label);
    lines.forEach(function (l) {
      if (l.values.length < 2) return;
      // At least a minute wide, so the first samples do not crowd the right edge.
      var span = Math.max(30, l.values.length);
      var step = (w - 2 * pad) / (span - 1);
      var start = span - l.values.length;
      var d = l.values.map(function (v, i) {
        var x = pad + (start + i) * step;
        var y = h - pad - (v / max) * (h - 2 * pad - 14);
        return (i === 0 ? "M" : "L") + x.toFixed(1) + " " + y.toFixed(1);
      }).join(" ");
      var path = document.createElementNS(SVG, "path");
      path.setAttribute("d", d);
      path.setAttribute("class", "line line-" + l.name);
      svg.appendChild(path);
    });
  }

  // Per second between samples, of a count (`retried`: the store's running total of
  // retries; the others: jobs in that state, so a job leaving retention never counts
  // below zero).
  function value(p, key) { return key === "retried" ? (p.retried || 0) : p.counts[key]; }
  function rate(key) {
    var out = [];
    for (var i = 1; i < points.length; i++) {
      var dt = (points[i].at - points[i - 1].at) / 1000;
      var dv = value(points[i], key) - value(points[i - 1], key);
      out.push(dt > 0 && dv > 0 ? dv / dt : 0);
    }
    return out;
  }

  function draw() {
    if (throughput) {
      series(throughput, ["succeeded", "dead", "retried", "cancelled"].map(function (k) {
        return { name: k, values: rate(k) };
      }));
    }
    if (depth) {
      series(depth, ["queued", "running"].map(function (k) {
        return { name: k, values: points.map(function (p) { return p.counts[k]; }) };
      }));
    }
  }

  function update(live) {
    Object.keys(live.counts).forEach(function (k) {
      var cell = document.querySelector('[data-count="' + k + '"]');
      if (cell) cell.textContent = String(live.counts[k]);
    });
    Object.keys(live.per_kind || {}).forEach(function (kind) {
      var row = document.querySelector('tr[data-kind="' + CSS.escape(kind) + '"]');
      if (!row) return;
      var counts = live.per_kind[kind];
      Object.keys(counts).forEach(function (k) {
        var cell = row.querySelector('[data-kind-count="' + k + '"]');
        if (cell) cell.textContent = String(counts[k]);
      });
    });
    ["ready", "delayed", "in_flight"].forEach(function (k) {
      var cell = document.querySelector('[data-queue-count="' + k + '"]');
      if (cell) cell.textContent = String(live[k]);
    });
    points.push(live);
    if (points.length > MAX_POINTS) points.shift();
    draw();
  }

  var failures = 0;
  function poll() {
    fetch(base + "/live", { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) {
        if (r.status === 401 || r.status === 403) { window.location.href = base + "/login"; return null; }
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.json();
      })
      .then(function (live) { if (live) { failures = 0; update(live); } })
      .catch(function () { failures++; })
      .then(function () {
        // Back off while the server does not answer; never more than one request in flight.
        setTimeout(poll, Math.min(2000 * Math.pow(2, failures), 30000));
      });
  }
  poll();
})();
