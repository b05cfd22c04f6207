// The metergate dashboard: plain JavaScript over the /v1 API, no libraries. The token is kept in
// sessionStorage (gone when the tab closes) and sent as a Bearer header; data reaches the page
// only through textContent, never as HTML.
"use strict";

const TOKEN_KEY = "metergate.token";
const $ = (id) => document.getElementById(id);
let chosenMeter = null;

function token() { return sessionStorage.getItem(TOKEN_KEY); }

function say(text) { $("message").textContent = text || ""; }

async function api(path) {
  const response = await fetch(path, { headers: { Authorization: "Bearer " + token() } });
  if (!response.ok) {
    let detail = response.statusText;
    try {
      const body = await response.json();
      detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    } catch (ignored) { /* not JSON: keep the status text */ }
    throw new Error(response.status + ": " + detail);
  }
  return response.json();
}

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "" : String(text);
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

function fill(tableId, rows, render) {
  const body = $(tableId).querySelector("tbody");
  body.replaceChildren();
  for (const item of rows) {
    const tr = document.createElement("tr");
    render(tr, item);
    body.appendChild(tr);
  }
}

function localDate(date) {
  const pad = (n) => String(n).padStart(2, "0");
  return date.getFullYear() + "-" + pad(date.getMonth() + 1) + "-" + pad(date.getDate());
}

// --- token -----------------------------------------------------------------------------------

function showTokenState() {
  const has = Boolean(token());
  $("token-form").hidden = has;
  $("token-state").hidden = !has;
  if (has) loadOverview();
}

$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const value = $("token").value.trim();
  if (!value.startsWith("mg_")) { say("An API token starts with mg_."); return; }
  sessionStorage.setItem(TOKEN_KEY, value);
  $("token").value = "";
  say("");
  showTokenState();
});

$("forget-token").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  showTokenState();
});

// --- search and meter ------------------------------------------------------------------------

$("search-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const text = $("search").value.trim();
  const query = text ? "?limit=50&q=" + encodeURIComponent(text) : "?limit=50";
  try {
    const page = await api("/v1/meters" + query);
    const list = $("results");
    list.replaceChildren();
    if (page.items.length === 0) say("No meter matches " + JSON.stringify(text) + ".");
    for (const meter of page.items) {
      const li = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.dataset.meter = meter.meter_id;
      button.textContent = meter.meter_id;
      const small = document.createElement("small");
      small.textContent = [meter.premise, meter.address].filter(Boolean).join(" · ");
      button.appendChild(small);
      button.addEventListener("click", () => chooseMeter(meter.meter_id));
      li.appendChild(button);
      list.appendChild(li);
    }
  } catch (error) { say(error.message); }
});

async function chooseMeter(meterId) {
  chosenMeter = meterId;
  for (const button of $("results").querySelectorAll("button")) {
    button.classList.toggle("chosen", button.dataset.meter === meterId);
  }
  try {
    const meter = await api("/v1/meters/" + encodeURIComponent(meterId));
    $("meter-title").textContent = meter.meter_id;
    const facts = $("meter-facts");
    facts.replaceChildren();
    const last = meter.last_reading;
    const rows = [
      ["premise", meter.premise], ["address", meter.address], ["customer", meter.customer_ref],
      ["status", meter.status], ["medium", meter.medium],
      ["last reading", last ? last.value + " " + last.unit + " at " +
        new Date(last.measured_at).toLocaleString() : "none"],
      ["verification due", meter.next_verification_due || "unknown"],
      ["open alerts", meter.open_alerts.map((a) => a.kind).join(", ") || "none"],
    ];
    for (const [name, value] of rows) {
      const dt = document.createElement("dt");
      dt.textContent = name;
      const dd = document.createElement("dd");
      dd.textContent = value === null || value === undefined ? "" : String(value);
      facts.append(dt, dd);
    }
    await drawConsumption();
  } catch (error) { say(error.message); }
}

$("chart-form").addEventListener("submit", (event) => {
  event.preventDefault();
  drawConsumption();
});
for (const radio of document.querySelectorAll("input[name=bucket]")) {
  radio.addEventListener("change", () => drawConsumption());
}

async function drawConsumption() {
  if (!chosenMeter) return;
  const bucket = document.querySelector("input[name=bucket]:checked").value;
  let query = "?bucket=" + bucket;
  if ($("chart-from").value) query += "&from=" + $("chart-from").value;
  if ($("chart-to").value) query += "&to=" + $("chart-to").value;
  try {
    const series = await api("/v1/meters/" + encodeURIComponent(chosenMeter) +
                             "/consumption" + query);
    drawChart($("chart"), series);
    const known = series.buckets.filter((b) => b.consumption !== null);
    const total = known.reduce((sum, b) => sum + Number(b.consumption), 0);
    $("chart-note").textContent = series.buckets.length + " " + bucket + " buckets (" +
      series.zone + "), " + known.length + " with data, total " + total.toFixed(3) + " " +
      (series.unit || "");
  } catch (error) { say(error.message); }
}

// --- the chart: bars on a canvas, drawn here -------------------------------------------------

function niceStep(max) {
  const rough = max / 5;
  const power = Math.pow(10, Math.floor(Math.log10(rough)));
  for (const factor of [1, 2, 2.5, 5, 10]) {
    if (factor * power >= rough) return factor * power;
  }
  return 10 * power;
}

function decimals(step) {
  // The fewest decimals that write every multiple of `step` exactly (0.0025 needs 4).
  for (let d = 0; d < 7; d++) {
    const scaled = step * Math.pow(10, d);
    if (Math.abs(Math.round(scaled) - scaled) < 1e-9) return d;
  }
  return 7;
}

function bucketLabel(iso, bucket) {
  // The API's local time with its offset: the wall-clock part is what a person reads.
  if (bucket === "month") return iso.slice(0, 7);
  if (bucket === "day") return iso.slice(5, 10);
  return iso.slice(5, 10) + " " + iso.slice(11, 16);
}

function drawChart(canvas, series) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || 760;
  const height = canvas.clientHeight || 300;
  canvas.width = width * ratio;
  canvas.height = height * ratio;
  const g = canvas.getContext("2d");
  g.scale(ratio, ratio);
  g.clearRect(0, 0, width, height);
  const left = 56, right = 12, top = 14, bottom = 40;
  const plotW = width - left - right, plotH = height - top - bottom;
  const values = series.buckets.map((b) => b.consumption === null ? null : Number(b.consumption));
  const max = Math.max(0, ...values.filter((v) => v !== null));
  const step = max > 0 ? niceStep(max) : 1;
  const ceiling = Math.max(step, Math.ceil(max / step) * step);
  g.font = "11px system-ui, sans-serif";
  g.strokeStyle = "#d5dde6";
  g.fillStyle = "#5b6b7c";
  g.textAlign = "right";
  g.textBaseline = "middle";
  for (let v = 0; v <= ceiling + step / 2; v += step) {
    const y = top + plotH - (v / ceiling) * plotH;
    g.beginPath(); g.moveTo(left, y); g.lineTo(left + plotW, y); g.stroke();
    g.fillText(v.toFixed(decimals(step)), left - 6, y);
  }
  g.save();
  g.translate(12, top + plotH / 2);
  g.rotate(-Math.PI / 2);
  g.textAlign = "center";
  g.fillText(series.unit || "", 0, 0);
  g.restore();
  const n = values.length;
  const slot = plotW / Math.max(n, 1);
  const barW = Math.max(1, slot * 0.75);
  let drawn = 0;
  values.forEach((v, i) => {
    const x = left + i * slot + (slot - barW) / 2;
    if (v === null) {
      g.fillStyle = "#eef1f4";
      g.fillRect(x, top, barW, plotH);
      return;
    }
    const h = (v / ceiling) * plotH;
    g.fillStyle = "#1f6fb2";
    g.fillRect(x, top + plotH - h, barW, h);
    drawn += 1;
  });
  g.fillStyle = "#5b6b7c";
  g.textAlign = "center";
  g.textBaseline = "top";
  const every = Math.max(1, Math.ceil(n / Math.floor(plotW / 70)));
  series.buckets.forEach((b, i) => {
    if (i % every !== 0) return;
    g.fillText(bucketLabel(b.start, series.bucket), left + i * slot + slot / 2, top + plotH + 6);
  });
  canvas.dataset.bars = String(drawn);
  canvas.dataset.buckets = String(n);
}

// --- overview tables -------------------------------------------------------------------------

async function loadOverview() {
  try {
    const alerts = await api("/v1/alerts?open=true&limit=50");
    fill("alerts", alerts.items, (tr, a) => {
      cell(tr, a.meter_id);
      cell(tr, a.kind);
      cell(tr, new Date(a.opened_at).toLocaleString());
    });
    const due = await api("/v1/verification/due?within_days=90&limit=50");
    fill("verification", due.items, (tr, m) => {
      cell(tr, m.meter_id);
      cell(tr, m.premise);
      cell(tr, m.next_verification_due, m.overdue ? "overdue" : "");
      cell(tr, m.days_left, "num");
    });
    if (!$("period").value) {
      const now = new Date();
      const previous = new Date(now.getFullYear(), now.getMonth() - 1, 1);
      $("period").value = localDate(previous).slice(0, 7);
    }
    await loadBilling();
  } catch (error) { say(error.message); }
}

$("billing-form").addEventListener("submit", (event) => {
  event.preventDefault();
  loadBilling();
});

async function loadBilling() {
  const period = $("period").value;
  if (!period) return;
  try {
    const page = await api("/v1/billing/monthly?limit=100&period=" + encodeURIComponent(period));
    fill("billing", page.items, (tr, row) => {
      cell(tr, row.meter_id);
      cell(tr, row.value === null ? "" : row.value + " " + row.unit, "num");
      cell(tr, row.method || "missing");
      cell(tr, row.consumption, "num");
      const flags = cell(tr, "");
      for (const [name, on] of Object.entries(row.flags)) {
        if (!on) continue;
        const span = document.createElement("span");
        span.className = "flag";
        span.textContent = name.replace(/_/g, " ");
        flags.appendChild(span);
      }
    });
    $("billing-note").textContent = page.items.length + " meters, " + page.period +
      (page.frozen ? ", exported" : "") + (page.next_cursor ? " (first 100)" : "");
  } catch (error) { say(error.message); }
}

showTokenState();
