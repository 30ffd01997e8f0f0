"use strict";
(function () {
  const KEY = "logferry-token";
  const fromHash = new URLSearchParams(location.hash.slice(1)).get("token");
  if (fromHash) {
    sessionStorage.setItem(KEY, fromHash);
    history.replaceState(null, "", location.pathname);
  }
  const $ = (id) => document.getElementById(id);
  const el = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  };
  const secs = (v) => (v === null || v === undefined) ? "–" : (v < 120 ? v.toFixed(1) + " s" : v < 7200 ? (v / 60).toFixed(1) + " min" : (v / 3600).toFixed(1) + " h");
  const when = (ms) => (ms === null || ms === undefined) ? "–" : new Date(ms).toISOString().replace("T", " ").slice(0, 19) + " UTC";

  function chart(series) {
    const NS = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(NS, "svg");
    svg.setAttribute("class", "chart");
    svg.setAttribute("viewBox", "0 0 300 100");
    svg.setAttribute("preserveAspectRatio", "none");
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", "RPO exposure and lag over the last hours");
    if (!series || series.t.length === 0) {
      const t = document.createElementNS(NS, "text");
      t.setAttribute("x", "8"); t.setAttribute("y", "55"); t.setAttribute("font-size", "10"); t.setAttribute("fill", "#5b6570");
      t.textContent = "no samples yet (one every 15 s)";
      svg.appendChild(t);
      return svg;
    }
    const t0 = series.t[0], t1 = Math.max(series.t[series.t.length - 1], t0 + 1);
    const all = series.exposure.concat(series.lag).filter((v) => v !== null);
    const top = Math.max(1, ...all) * 1.1;
    for (const [name, color] of [["exposure", "#1565c0"], ["lag", "#ef6c00"]]) {
      const pts = [];
      series[name].forEach((v, i) => {
        if (v === null) return;
        const x = ((series.t[i] - t0) / (t1 - t0)) * 296 + 2;
        const y = 98 - (v / top) * 94;
        pts.push(x.toFixed(1) + "," + y.toFixed(1));
      });
      if (pts.length === 1) pts.push(pts[0]);
      const line = document.createElementNS(NS, "polyline");
      line.setAttribute("points", pts.join(" "));
      line.setAttribute("fill", "none");
      line.setAttribute("stroke", color);
      line.setAttribute("stroke-width", "1.5");
      line.setAttribute("vector-effect", "non-scaling-stroke");
      line.setAttribute("data-series", name);
      svg.appendChild(line);
    }
    const label = document.createElementNS(NS, "text");
    label.setAttribute("x", "4"); label.setAttribute("y", "10"); label.setAttribute("font-size", "8"); label.setAttribute("fill", "#5b6570");
    label.textContent = "top " + secs(top) + " · from " + when(t0).slice(11, 16);
    svg.appendChild(label);
    return svg;
  }

  function card(s, series) {
    const c = el("section", "card " + s.health);
    c.setAttribute("data-stream", s.stream);
    const h = el("h2");
    h.appendChild(el("span", "", s.stream + (s.kind ? " · " + s.kind : "")));
    h.appendChild(el("span", "badge " + s.health, s.health));
    c.appendChild(h);
    const dl = el("dl");
    const row = (k, v) => { dl.appendChild(el("dt", "", k)); dl.appendChild(el("dd", "", v)); };
    row("RPO exposure", secs(s.rpo_exposure_seconds));
    row("Source lag", secs(s.source_lag_seconds) + (s.source_lag_bytes ? " (" + s.source_lag_bytes + " bytes)" : ""));
    row("Agent", s.agent ? s.agent + ", seen " + secs(s.agent_silent_seconds) + " ago" : "never heard");
    row("Spool", s.spool_bytes === null || s.spool_bytes === undefined ? "–" : s.spool_bytes + " bytes");
    row("Restorable", s.restorable_from_ms ? when(s.restorable_from_ms) + " → " + when(s.restorable_to_ms) : "–");
    row("Last snapshot", when(s.last_snapshot_ms) + " (" + s.snapshots + " stored)");
    row("Last drill", s.last_drill ? when(s.last_drill.finished_ms) + (s.last_drill.passed ? " passed" : " FAILED") : "none");
    row("Chain breaks", String(s.chain_breaks));
    row("Forks", s.forks ? s.forks + ", newest " + when(s.last_fork_ms) : "none");
    row("Alerts firing", s.firing.length ? s.firing.join(", ") : "none");
    c.appendChild(dl);
    if (s.problems.length) {
      const ul = el("ul", "problems");
      s.problems.forEach((p) => ul.appendChild(el("li", "", p)));
      c.appendChild(ul);
    }
    c.appendChild(chart(series));
    const legend = el("div", "legend");
    const key = (color, text) => { const s = el("span"); const i = el("i"); i.style.background = color; s.appendChild(i); s.appendChild(document.createTextNode(text)); legend.appendChild(s); };
    key("#1565c0", "RPO exposure"); key("#ef6c00", "lag");
    legend.appendChild(el("span", "", "last 6 h"));
    c.appendChild(legend);
    return c;
  }

  async function get(path, token) {
    const r = await fetch(path, { headers: { Authorization: "Bearer " + token }, cache: "no-store" });
    if (r.status === 401 || r.status === 403) { const e = new Error("refused"); e.refused = true; throw e; }
    if (!r.ok) throw new Error(path + " answered " + r.status);
    return r.json();
  }

  // Set once a token was refused, so the form keeps saying why until another is given.
  let refused = false;

  async function refresh() {
    const token = sessionStorage.getItem(KEY);
    if (!token) {
      $("login").hidden = false;
      if (!refused) $("summary").textContent = "a token is needed";
      return;
    }
    try {
      const [status, history] = await Promise.all([get("/v1/status", token), get("/v1/history", token)]);
      $("error").hidden = true;
      $("login").hidden = true;
      const main = $("streams");
      main.replaceChildren(...status.streams.map((s) => card(s, history.streams[s.stream])));
      if (status.streams.length === 0) main.appendChild(el("p", "empty", "No stream stored or reported yet."));
      const red = status.streams.filter((s) => s.health === "red").length;
      const amber = status.streams.filter((s) => s.health === "amber").length;
      $("summary").textContent = status.streams.length + " stream(s): " + red + " red, " + amber + " amber";
      $("updated").textContent = "updated " + when(Date.now()) + " · shipper " + status.version;
      document.title = (red ? "● " : "") + "logferry status";
    } catch (e) {
      if (e.refused) {
        refused = true;
        sessionStorage.removeItem(KEY);
        $("login").hidden = false;
        $("summary").textContent = "the token was refused; enter another";
        return;
      }
      $("error").hidden = false;
      $("error").textContent = "The shipper did not answer: " + e.message;
    }
  }

  $("login").addEventListener("submit", (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(KEY, $("token").value.trim());
    refused = false;
    refresh();
  });
  refresh();
  setInterval(refresh, 10000);
})();
