// The live dashboard: one websocket (/ws/dashboard/), one snapshot a second, rendered in place.
// The socket reconnects by itself with exponential backoff and full jitter ("Exponential Backoff
// And Jitter", AWS Architecture Blog, 2015): delay = random(0, min(CAP, BASE * 2^attempt)).
(function () {
  "use strict";

  const BASE_MS = 500;
  const CAP_MS = 15000;
  // No frame for this long while "open" means the path is dead even if no close arrived.
  const SILENCE_MS = 5000;

  const root = document.getElementById("dashboard");
  const status = document.getElementById("connection");
  const updated = document.getElementById("updated");
  let attempt = 0;
  let socket = null;
  let watchdog = null;
  let charts = null;

  let lastUpdate = null;

  function setStatus(kind, text) {
    status.className = "pill " + kind;
    status.textContent = text;
    root.classList.toggle("stale", kind !== "live");
    const banner = document.getElementById("banner");
    banner.hidden = kind !== "reconnecting";
    if (lastUpdate) document.getElementById("banner-since").textContent = lastUpdate;
  }

  function socketUrl() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    return scheme + location.host + root.dataset.socket;
  }

  function connect() {
    socket = new WebSocket(socketUrl());
    socket.onopen = function () {
      attempt = 0;
      setStatus("live", "Live");
      armWatchdog();
    };
    socket.onmessage = function (event) {
      armWatchdog();
      render(JSON.parse(event.data));
    };
    socket.onclose = function (event) {
      clearTimeout(watchdog);
      if (event.code === 4401 || event.code === 4403) {
        setStatus("down", "Signed out: reload to sign in");
        return;
      }
      reconnectLater();
    };
  }

  function armWatchdog() {
    clearTimeout(watchdog);
    watchdog = setTimeout(function () {
      if (socket) socket.close();
    }, SILENCE_MS);
  }

  function reconnectLater() {
    const delay = Math.round(Math.random() * Math.min(CAP_MS, BASE_MS * Math.pow(2, attempt)));
    attempt += 1;
    setStatus("reconnecting", "Reconnecting… (try " + attempt + ")");
    document.getElementById("banner-next").textContent = (delay / 1000).toFixed(1) + " s";
    setTimeout(connect, delay);
  }

  // --- rendering ---------------------------------------------------------------------------

  const fmt = new Intl.NumberFormat("en");

  function text(id, value) {
    document.getElementById(id).textContent = value;
  }

  function ms(value) {
    if (value === null || value === undefined) return "–";
    return value < 10 ? value.toFixed(1) : fmt.format(Math.round(value));
  }

  function render(snapshot) {
    const t = snapshot.traffic;
    text("kpi-rpm", fmt.format(t.requests_per_minute));
    text("kpi-rps", fmt.format(t.requests_per_second) + " req/s now");
    text("kpi-p50", ms(t.latency_ms.p50));
    text("kpi-p95", ms(t.latency_ms.p95));
    text("kpi-p99", ms(t.latency_ms.p99));
    text("kpi-errors", (t.error_rate * 100).toFixed(t.error_rate < 0.1 ? 2 : 1) + " %");
    text("kpi-5xx", fmt.format(t.status["5xx"]) + " 5xx · " + fmt.format(t.status["4xx"]) + " 4xx");
    text("kpi-429", fmt.format(t.s429));
    text("kpi-503", fmt.format(t.s503));
    text("kpi-pressure", snapshot.fleet.pressure.toFixed(0));
    text("kpi-fleet", snapshot.fleet.processes + " proc · " + snapshot.fleet.in_flight + " in flight");
    document.getElementById("kpi-fleet").title = snapshot.fleet.processes + " web processes reporting";
    mark("kpi-errors", t.error_rate >= 0.05 ? "critical" : t.error_rate >= 0.01 ? "warning" : "");
    mark("kpi-pressure", snapshot.fleet.pressure >= 90 ? "critical" : snapshot.fleet.pressure >= 70 ? "warning" : "");
    lastUpdate = new Date(snapshot.at * 1000).toLocaleTimeString([], { hour12: false });  // 24-hour, as the admin's times
    updated.textContent = "updated " + lastUpdate;
    renderTop("top-tenants", snapshot.top_tenants, "tenant");
    renderTop("top-routes", snapshot.top_routes, "route");
    renderCharts(snapshot.series);
    renderTiles(snapshot.tiles);
  }

  function mark(id, level) {
    document.getElementById(id).parentElement.dataset.level = level;
  }

  function renderTop(id, rows, key) {
    const body = document.querySelector("#" + id + " tbody");
    body.replaceChildren();
    const max = rows.length ? rows[0].requests : 0;
    if (!rows.length) {
      body.append(row([cell("No traffic in the last minute.", "muted")]));
      return;
    }
    for (const item of rows) {
      const bar = document.createElement("span");
      bar.className = "bar";
      bar.style.width = (max ? (100 * item.requests) / max : 0) + "%";
      const name = cell(item[key], "name");
      name.prepend(bar);
      body.append(row([name, cell(fmt.format(item.requests), "num")]));
    }
  }

  function row(cells) {
    const tr = document.createElement("tr");
    tr.append(...cells);
    return tr;
  }

  function cell(content, className) {
    const td = document.createElement("td");
    td.className = className || "";
    td.append(document.createTextNode(String(content)));
    return td;
  }

  function renderTiles(tiles) {
    const box = document.getElementById("tiles");
    box.replaceChildren(...tiles.map(tile));
  }

  function tile(data) {
    const card = document.createElement("article");
    card.className = "card tile " + (data.error ? "critical" : data.status);
    card.dataset.tile = data.key;
    const head = document.createElement("h2");
    head.textContent = data.title;
    card.append(head);
    if (data.error) {
      card.append(paragraph("This panel failed to load; see the web process's log.", "error"));
      return card;
    }
    const figures = document.createElement("div");
    figures.className = "figures";
    for (const f of data.figures) {
      const fig = document.createElement("span");
      fig.innerHTML = "<b></b> ";
      fig.firstChild.textContent = typeof f.value === "number" ? fmt.format(f.value) : f.value;
      fig.append(document.createTextNode(f.label));
      figures.append(fig);
    }
    card.append(figures);
    if (!data.rows.length) {
      card.append(paragraph(data.empty, "muted"));
      return card;
    }
    const list = document.createElement("ul");
    for (const r of data.rows) {
      const li = document.createElement("li");
      li.className = r.status;
      const label = document.createElement("span");
      label.className = "label";
      label.textContent = r.label;
      label.title = r.label;
      const value = document.createElement("span");
      value.className = "value";
      value.textContent = r.value;
      value.title = String(r.value);
      li.append(label, value);
      list.append(li);
    }
    card.append(list);
    return card;
  }

  function paragraph(content, className) {
    const p = document.createElement("p");
    p.className = className;
    p.textContent = content;
    return p;
  }

  // --- charts (uPlot, from npm through package.json) ----------------------------------------

  function renderCharts(series) {
    if (typeof uPlot === "undefined") {
      document.getElementById("no-charts").hidden = false;
      return;
    }
    if (!charts) charts = makeCharts();
    charts.requests.setData([series.t, series.requests, series.errors, series.s429, series.s503]);
    charts.latency.setData([series.t, series.p50, series.p95, series.p99]);
  }

  function makeCharts() {
    const requests = chart("chart-requests", [
      { label: "requests", stroke: "#2563eb", fill: "rgba(37,99,235,.12)", width: 2 },
      { label: "5xx", stroke: "#dc2626", width: 1.5 },
      { label: "429", stroke: "#d97706", width: 1.5 },
      { label: "503", stroke: "#7c3aed", width: 1.5 },
    ]);
    // A second without requests has no latency (null): the line breaks there rather than drawing
    // a slope across idle time, and points keep a lone busy second visible between gaps.
    const dots = { show: true, size: 4 };
    const latency = chart("chart-latency", [
      { label: "p50", stroke: "#059669", width: 2, spanGaps: false, points: dots },
      { label: "p95", stroke: "#d97706", width: 1.5, spanGaps: false, points: dots },
      { label: "p99", stroke: "#dc2626", width: 1.5, spanGaps: false, points: dots },
    ]);
    window.addEventListener("resize", function () {
      for (const c of [requests, latency]) c.setSize(size(c.root.parentElement));
    });
    return { requests: requests, latency: latency };
  }

  function size(box) {
    return { width: Math.max(280, box.clientWidth), height: 220 };
  }

  function chart(id, series) {
    const box = document.getElementById(id);
    const options = Object.assign(size(box), {
      series: [{}].concat(series),
      axes: [{}, { size: 50 }],
      scales: { y: { range: function (u, min, max) { return [0, Math.max(1, max * 1.1)]; } } },
      legend: { live: false },
      cursor: { drag: { x: false, y: false } },
    });
    return new uPlot(options, [[], ...series.map(function () { return []; })], box);
  }

  connect();
})();
