// tally console: times in the viewer's zone, the live events list, live
// health figures. No inline scripts (the CSP forbids them), no libraries.
"use strict";

const numberFormat = new Intl.NumberFormat();
const timeFormat = new Intl.DateTimeFormat(undefined, {
  year: "numeric", month: "short", day: "2-digit",
  hour: "2-digit", minute: "2-digit", second: "2-digit",
});

function localTime(el) {
  const iso = el.getAttribute("datetime");
  if (!iso || el.dataset.local) return;
  const when = new Date(iso);
  if (isNaN(when)) return;
  el.textContent = timeFormat.format(when);
  el.title = iso.slice(0, 19).replace("T", " ") + " UTC";
  el.dataset.local = "1";
}

function localTimes(root) {
  root.querySelectorAll("time[datetime]").forEach(localTime);
}

function el(tag, attrs, children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const child of children || []) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function eventRow(r, fresh) {
  const time = el("time", { datetime: r.captured_at }, [r.captured_at]);
  const status = [el("span", { class: "badge status-" + r.status }, [r.status])];
  if (r.error) status.push(" ", el("span", { class: "err", title: r.error }, [r.error.slice(0, 60)]));
  const link = (kind, id, name) => (id ? [el("a", { href: "/console/" + kind + "/" + encodeURIComponent(id) }, [name])] : []);
  const row = el("tr", fresh ? { "data-id": r.id, class: "fresh" } : { "data-id": r.id }, [
    el("td", {}, [el("a", { href: "/console/events/" + encodeURIComponent(r.id) }, [time])]),
    el("td", {}, [r.type]),
    el("td", {}, [r.subtype]),
    el("td", {}, status),
    el("td", {}, link("companies", r.company_id, r.company)),
    el("td", {}, link("users", r.user_id, r.user)),
    el("td", { class: "num" }, [r.quantity]),
  ]);
  localTime(time);
  return row;
}

// The live list draws at most LIVE_ROWS (server side) new rows per poll and
// keeps MAX_ROWS in the page: at thousands of events a second it shows the
// arrival rate and the newest rows as a sample, never every row.
const MAX_ROWS = 100;
const POLL_MS = 1000;
const RATE_WINDOW_MS = 5000;

function liveEvents(table) {
  const body = table.tBodies[0];
  const state = document.getElementById("live-state");
  const text = document.getElementById("live-text");
  const rate = document.getElementById("live-rate");
  const sampling = document.getElementById("sampling");
  let newest = table.dataset.newest || "";
  let polls = 0;
  let last = performance.now();
  const arrivals = []; // [time, new events] of the polls in the rate window

  function setState(kind, message) {
    state.className = "live " + kind;
    text.textContent = message;
  }

  async function poll() {
    if (document.hidden) { setState("paused", "Paused while this tab is hidden"); return schedule(); }
    polls += 1;
    const url = table.dataset.live + (table.dataset.live.includes("?") ? "&" : "?") +
      "newer_than=" + encodeURIComponent(newest) + (polls % 5 === 1 ? "&counts=1" : "");
    try {
      const answer = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
      if (answer.status === 401) { window.location.assign("/console/sign-in"); return; }
      if (!answer.ok) throw new Error("HTTP " + answer.status);
      const data = await answer.json();
      show(data);
      setState("", "Live");
    } catch (err) {
      setState("error", "Cannot reach tally; retrying…");
    }
    schedule();
  }

  function showRate(data) {
    const now = performance.now();
    arrivals.push([now, data.new, now - last]);
    last = now;
    while (arrivals.length > 1 && now - arrivals[0][0] > RATE_WINDOW_MS) arrivals.shift();
    const events = arrivals.reduce((sum, a) => sum + a[1], 0);
    const seconds = arrivals.reduce((sum, a) => sum + a[2], 0) / 1000;
    const perSecond = seconds > 0 ? Math.round(events / seconds) : 0;
    rate.dataset.rate = String(perSecond);
    rate.textContent = "· " + numberFormat.format(perSecond) + " events/s";
    rate.title = numberFormat.format(events) + " events matching these filters arrived in the last " +
      seconds.toFixed(1) + " s";
    rate.hidden = false;
  }

  function show(data) {
    showRate(data);
    if (data.rows.length) {
      document.getElementById("empty")?.setAttribute("hidden", "");
      document.getElementById("events-wrap")?.removeAttribute("hidden");
      document.getElementById("no-match")?.setAttribute("hidden", "");
      const fragment = document.createDocumentFragment();
      // rows are highlighted as they come, unless they come too fast to read
      const fresh = data.new <= data.rows.length;
      data.rows.forEach((r) => fragment.append(eventRow(r, fresh)));
      body.prepend(fragment);
      while (body.rows.length > MAX_ROWS) body.deleteRow(body.rows.length - 1);
      newest = data.newest;
    }
    if (data.new > data.rows.length) {
      sampling.hidden = false;
      sampling.textContent = "Showing a sample: " + numberFormat.format(data.new) +
        " events arrived since the last update and the newest " + data.rows.length +
        " are drawn (the list keeps the newest " + MAX_ROWS + " rows; filter to see fewer).";
    } else if (data.rows.length) {
      sampling.hidden = true;
    }
    if (data.counts) {
      for (const [status, count] of Object.entries(data.counts)) {
        const target = document.getElementById("count-" + status);
        if (target) target.textContent = numberFormat.format(count);
      }
      document.getElementById("count-total").textContent = numberFormat.format(data.total);
    }
  }

  function schedule() { window.setTimeout(poll, POLL_MS); }
  schedule();
}

function liveFigures(root) {
  const url = root.dataset.refresh;
  async function refresh() {
    try {
      const answer = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
      if (answer.status === 401) { window.location.assign("/console/sign-in"); return; }
      if (!answer.ok) throw new Error("HTTP " + answer.status);
      const data = await answer.json();
      for (const [field, value] of Object.entries(data)) {
        const target = root.querySelector('[data-field="' + field + '"]');
        if (target) target.textContent = value;
      }
      root.querySelector("[data-refresh-state]")?.replaceChildren("Refreshing every 2 s");
    } catch (err) {
      root.querySelector("[data-refresh-state]")?.replaceChildren("Cannot reach tally; retrying…");
    }
    window.setTimeout(refresh, 2000);
  }
  window.setTimeout(refresh, 2000);
}

// sparklines of the event types page: the same points as format.sparkline
function sparkPoints(values, width, height) {
  const top = Math.max(...values) || 1;
  const step = width / Math.max(values.length - 1, 1);
  return values.map((v, i) => (i * step).toFixed(1) + "," + (height - 1 - (v / top) * (height - 2)).toFixed(1)).join(" ");
}

async function sparklines(table) {
  try {
    const answer = await fetch(table.dataset.days, { headers: { Accept: "application/json" }, credentials: "same-origin" });
    if (!answer.ok) throw new Error("HTTP " + answer.status);
    const data = await answer.json();
    for (const row of table.tBodies[0].rows) {
      const values = data.series[row.dataset.subtype] || new Array(30).fill(0);
      const svg = row.querySelector("svg.spark");
      svg.querySelector("polyline").setAttribute("points", sparkPoints(values, 120, 24));
      svg.classList.remove("loading");
      const total = values.reduce((a, b) => a + b, 0);
      row.querySelector("[data-in-days]").textContent = numberFormat.format(total);
    }
  } catch (err) {
    table.querySelectorAll("[data-in-days]").forEach((cell) => { cell.textContent = "unavailable"; });
  }
}

document.addEventListener("DOMContentLoaded", () => {
  localTimes(document);
  const table = document.querySelector("table[data-live]");
  if (table) liveEvents(table);
  document.querySelectorAll("[data-refresh]").forEach(liveFigures);
  document.querySelectorAll("table[data-days]").forEach(sparklines);
  // a form being sent shows it (and cannot be sent twice)
  document.querySelectorAll("form[data-busy]").forEach((form) => {
    form.addEventListener("submit", () => {
      const button = form.querySelector("button[type=submit]");
      if (button) { button.disabled = true; button.textContent = form.dataset.busy; }
    });
  });
});
