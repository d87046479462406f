// downbeat live page: polls this engine's JSON API and redraws in place.
// Every string from the API goes through textContent or an SVG attribute,
// never through HTML parsing: song and artist names are user data.
"use strict";

(() => {
  const POLL_MS = 2500;
  const TIMEOUT_MS = 2000;
  const TREND_SLOTS = 60;
  // The forecast chart: the last hour, then a quarter hour ahead, wide
  // enough for the 5- and 15-minute forecasts (the list shows them all).
  const FUTURE_SLOTS = 16;
  const SVG_NS = "http://www.w3.org/2000/svg";

  const number = new Intl.NumberFormat();
  const compact = new Intl.NumberFormat(undefined, { notation: "compact", maximumFractionDigits: 1 });
  const decimal = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });
  const percent = new Intl.NumberFormat(undefined, { style: "percent", maximumFractionDigits: 0 });
  const $ = (id) => document.getElementById(id);

  const seen = {
    stats: null, // the previous /api/v1/stats, for events/s
    historyEnd: undefined, // end_ms of the tumbling window the history was fetched for
    history: [], // that history, which the forecast card draws too
    forecastKey: null, // what the forecast card was drawn from, to redraw only on change
    lastOk: null, // Date of the last complete refresh
    failingSince: null, // Date of the first failure in a row
  };

  // ---- small helpers -------------------------------------------------------

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function svg(tag, attributes, text) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function setText(id, text) {
    const node = $(id);
    if (node.textContent !== text) node.textContent = text;
  }

  const isNumber = (v) => typeof v === "number" && Number.isFinite(v);
  const count = (v) => (isNumber(v) ? number.format(v) : "–");
  const str = (v) => (typeof v === "string" ? v : v == null ? "" : String(v));

  function sameDay(a, b) {
    return a.getFullYear() === b.getFullYear() && a.getMonth() === b.getMonth() && a.getDate() === b.getDate();
  }

  function clock(ms, withSeconds) {
    const options = { hour: "2-digit", minute: "2-digit" };
    if (withSeconds) options.second = "2-digit";
    return new Date(ms).toLocaleTimeString([], options);
  }

  // "" today, else "Nov 14, 2023 · ".
  function day(ms) {
    const date = new Date(ms);
    if (sameDay(date, new Date())) return "";
    return date.toLocaleDateString([], { year: "numeric", month: "short", day: "numeric" }) + " · ";
  }

  // "14:02–14:12", after the date when it is not today.
  function range(window) {
    if (!window || !isNumber(window.start_ms) || !isNumber(window.end_ms)) return "";
    return day(window.start_ms) + clock(window.start_ms) + "–" + clock(window.end_ms);
  }

  async function getJson(path) {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), TIMEOUT_MS);
    try {
      const response = await fetch(path, { cache: "no-store", signal: controller.signal, headers: { Accept: "application/json" } });
      if (!response.ok) throw new Error(path + " answered HTTP " + response.status);
      return await response.json();
    } finally {
      clearTimeout(timer);
    }
  }

  // Make `list` hold `n` children built by `make`, reusing the ones it has.
  function resize(list, n, make) {
    while (list.children.length > n) list.lastElementChild.remove();
    while (list.children.length < n) list.append(make());
  }

  // ---- KPI cards -----------------------------------------------------------

  function eventsPerSecond(stats) {
    const before = seen.stats;
    seen.stats = stats;
    if (!before || !isNumber(stats.time_ms) || !isNumber(before.time_ms)) return null;
    const seconds = (stats.time_ms - before.time_ms) / 1000;
    const events = stats.events_total - before.events_total;
    if (!(seconds > 0.5) || !(events >= 0)) return null;
    return events / seconds;
  }

  function renderKpis(latest, stats, rate) {
    const { tumbling, sliding } = latest;
    setText("kpi-streams-10m", sliding ? count(sliding.streams) : "–");
    setText("kpi-streams-10m-sub", sliding ? range(sliding) : "waiting for a window");
    setText("kpi-users-1m", tumbling ? count(tumbling.active_users) : "–");
    setText("kpi-users-1m-sub", tumbling ? range(tumbling) : "waiting for a window");
    setText("kpi-users-10m", sliding ? count(sliding.active_users) : "–");

    const top = sliding && Array.isArray(sliding.top_songs) ? sliding.top_songs[0] : null;
    setText("kpi-top-song", top ? str(top.song) : "–");
    setText("kpi-top-song-sub", top ? str(top.artist) + " · " + count(top.streams) + " streams" : "waiting for a window");
    $("kpi-top-song").title = top ? str(top.song) + " — " + str(top.artist) : "";

    setText("kpi-events-rate", rate === null ? "–" : rate < 100 ? decimal.format(rate) : number.format(Math.round(rate)));
    setText("kpi-events-total", count(stats.events_total) + " read since start");
    setText("kpi-late", count(stats.late_total));
    setText("kpi-rejected", count(stats.rejected_total));
    $("kpi-late").classList.toggle("bad", stats.late_total > 0);
    $("kpi-rejected").classList.toggle("bad", stats.rejected_total > 0);

    const reasons = Object.entries(stats.rejected_by_reason || {})
      .filter(([, n]) => n > 0)
      .sort((a, b) => b[1] - a[1])
      .map(([reason, n]) => reason + " " + number.format(n));
    setText("kpi-rejected-sub", reasons.length ? reasons.join(", ") : "none since start");
  }

  // A length in seconds, as people say it: "45 s", "12.5 min", "1.2 h".
  function duration(seconds) {
    if (seconds < 60) return Math.round(seconds) + " s";
    if (seconds < 3600) return decimal.format(seconds / 60) + " min";
    return decimal.format(seconds / 3600) + " h";
  }

  function renderSessions(doc) {
    const median = doc && isNumber(doc.median_duration_seconds) ? doc.median_duration_seconds : null;
    setText("kpi-session-median", median === null ? "–" : duration(median));
    const rate = doc && isNumber(doc.sessions_per_minute) ? doc.sessions_per_minute : null;
    setText("kpi-sessions-rate", rate === null ? "–" : decimal.format(rate));
    setText("kpi-sessions-open", doc ? count(doc.open) : "–");
  }

  // ---- leaderboard ---------------------------------------------------------

  function leaderboardRow() {
    const row = el("li");
    const who = el("div", "who");
    who.append(el("span", "song"), el("span", "artist"));
    const bar = el("div", "bar");
    bar.append(el("span"));
    row.append(el("span", "rank"), who, el("span", "count"), bar);
    return row;
  }

  function renderLeaderboard(sliding) {
    const songs = sliding && Array.isArray(sliding.top_songs) ? sliding.top_songs : [];
    const list = $("leaderboard");
    resize(list, songs.length, leaderboardRow);
    const most = songs.reduce((m, s) => Math.max(m, isNumber(s.streams) ? s.streams : 0), 0) || 1;
    songs.forEach((s, i) => {
      const row = list.children[i];
      row.querySelector(".rank").textContent = String(i + 1);
      row.querySelector(".song").textContent = str(s.song);
      row.querySelector(".artist").textContent = str(s.artist) || "unknown artist";
      row.querySelector(".count").textContent = count(s.streams);
      row.title = str(s.song) + " — " + str(s.artist);
      row.querySelector(".bar > span").style.width = ((100 * (s.streams || 0)) / most).toFixed(1) + "%";
    });
    $("leaderboard-empty").hidden = songs.length > 0;
    setText("leaderboard-window", sliding ? range(sliding) : "");
    const title = songs.length > 0 ? "Top " + songs.length + " songs, last 10 minutes" : "Top songs, last 10 minutes";
    setText("leaderboard-title", title);
  }

  function renderArtists(sliding) {
    const artists = sliding && Array.isArray(sliding.top_artists) ? sliding.top_artists : [];
    const list = $("artists");
    resize(list, artists.length, leaderboardRow);
    const most = artists.reduce((m, a) => Math.max(m, isNumber(a.streams) ? a.streams : 0), 0) || 1;
    artists.forEach((a, i) => {
      const row = list.children[i];
      row.querySelector(".rank").textContent = String(i + 1);
      row.querySelector(".song").textContent = str(a.artist);
      row.querySelector(".count").textContent = count(a.streams);
      row.title = str(a.artist);
      row.querySelector(".bar > span").style.width = ((100 * (a.streams || 0)) / most).toFixed(1) + "%";
    });
    $("artists-empty").hidden = artists.length > 0;
    const title = artists.length > 0 ? "Top " + artists.length + " artists, last 10 minutes" : "Top artists, last 10 minutes";
    setText("artists-title", title);
  }

  // ---- per-minute trend ----------------------------------------------------

  function renderTrend(history) {
    const chart = $("trend");
    const W = 640, H = 220, left = 46, right = 8, top = 10, bottom = 26;
    const plotW = W - left - right, plotH = H - top - bottom;
    const windows = history.filter((w) => w && isNumber(w.end_ms) && isNumber(w.start_ms));
    const nodes = [];
    if (windows.length === 0) {
      nodes.push(svg("line", { class: "grid", x1: left, x2: W - right, y1: top + plotH, y2: top + plotH }));
      nodes.push(svg("text", { class: "none", x: left + plotW / 2, y: top + plotH / 2, "text-anchor": "middle" }, "No minute has closed yet"));
      chart.replaceChildren(...nodes);
      setText("trend-range", "");
      return;
    }
    const last = windows[windows.length - 1];
    const width = last.end_ms - last.start_ms || 60000;
    const firstEnd = last.end_ms - (TREND_SLOTS - 1) * width;
    const slots = new Array(TREND_SLOTS).fill(null);
    for (const w of windows) {
      const i = Math.round((w.end_ms - firstEnd) / width);
      if (i >= 0 && i < TREND_SLOTS) slots[i] = w;
    }
    const max = Math.max(1, ...slots.map((w) => (w && isNumber(w.streams) ? w.streams : 0)));
    const step = niceStep(max / 4);
    const yMax = Math.ceil(max / step) * step;
    const y = (v) => top + plotH - (plotH * v) / yMax;

    for (let v = 0; v <= yMax + step / 2; v += step) {
      nodes.push(svg("line", { class: "grid", x1: left, x2: W - right, y1: y(v), y2: y(v) }));
      nodes.push(svg("text", { class: "axis", x: left - 6, y: y(v) + 4, "text-anchor": "end" }, compact.format(v)));
    }
    const slotW = plotW / TREND_SLOTS;
    const barW = Math.max(1, slotW - 2);
    slots.forEach((w, i) => {
      if (!w || !(w.streams > 0)) return;
      const x = left + i * slotW + (slotW - barW) / 2;
      const bar = svg("rect", { class: i === TREND_SLOTS - 1 ? "col last" : "col", x: x.toFixed(2), y: y(w.streams).toFixed(2), width: barW.toFixed(2), height: (top + plotH - y(w.streams)).toFixed(2), rx: 1.5 });
      bar.setAttribute("data-streams", String(w.streams));
      bar.append(svg("title", {}, range(w) + ": " + count(w.streams) + " streams, " + count(w.active_users) + " active users"));
      nodes.push(bar);
    });
    // Time labels on slot boundaries: the hour's start, its middle, its end.
    for (const [i, anchor] of [[0, "start"], [TREND_SLOTS / 2, "middle"], [TREND_SLOTS, "end"]]) {
      const at = firstEnd + (i - 1) * width;
      nodes.push(svg("text", { class: "axis", x: left + i * slotW, y: H - 6, "text-anchor": anchor }, clock(at)));
    }
    chart.replaceChildren(...nodes);
    const closed = slots.filter((w) => w !== null).length;
    setText("trend-range", day(last.start_ms) + closed + " of " + TREND_SLOTS + " minutes with streams");
  }

  function niceStep(raw) {
    if (!(raw > 0)) return 1;
    const power = Math.pow(10, Math.floor(Math.log10(raw)));
    for (const m of [1, 2, 2.5, 5, 10]) if (raw <= m * power) return Math.max(1, m * power);
    return 10 * power;
  }

  // ---- streams vs forecast ---------------------------------------------------

  // A forecast with its band: {streams, lower, upper}.
  const isBand = (b) => !!b && isNumber(b.streams) && isNumber(b.lower) && isNumber(b.upper);
  // Forecasts are expected values: whole streams are enough.
  const about = (v) => number.format(Math.round(v));

  // The polygon of a band through consecutive points {x, lower, upper}: along
  // the upper ends, back along the lower ones. A lone point gets some width.
  function bandPath(run, y, halfWidth) {
    const points = run.length > 1 ? run : [{ ...run[0], x: run[0].x - halfWidth }, { ...run[0], x: run[0].x + halfWidth }];
    const up = points.map((p) => p.x.toFixed(1) + "," + y(p.upper).toFixed(1));
    const down = points.slice().reverse().map((p) => p.x.toFixed(1) + "," + y(p.lower).toFixed(1));
    return "M" + up.concat(down).join("L") + "Z";
  }

  function linePath(run, y, key) {
    return "M" + run.map((p) => p.x.toFixed(1) + "," + y(p[key]).toFixed(1)).join("L");
  }

  // Split points into runs of adjacent slots, so a minute without streams
  // (no record) breaks the lines instead of bridging it.
  function runs(points) {
    const out = [];
    for (const p of points) {
      const run = out[out.length - 1];
      if (run && p.slot === run[run.length - 1].slot + 1) run.push(p);
      else out.push([p]);
    }
    return out;
  }

  function renderForecast(history, doc) {
    const windows = history.filter((w) => w && isNumber(w.start_ms) && isNumber(w.end_ms) && isNumber(w.streams));
    const ahead = doc && Array.isArray(doc.ahead) ? doc.ahead.filter((a) => isBand(a) && isNumber(a.start_ms)) : [];
    const latest = doc && doc.latest ? doc.latest : null;
    const hasForecast = ahead.length > 0 || windows.some((w) => isBand(w.forecast)) || (latest !== null && isBand(latest.forecast));
    // "off": minutes close but no forecast is ever published (also for a
    // moment at the first close, until its forecast follows the windows).
    const state = windows.length === 0 && latest === null ? "none" : hasForecast ? "ready" : latest === null ? "off" : "warming";
    $("forecast-card").dataset.forecast = state;
    $("forecast-note").hidden = state !== "warming" && state !== "off";
    setText(
      "forecast-note",
      state === "off"
        ? "No forecast: this engine makes none (off in its config, or its tumbling window does not divide a day)."
        : "Warming up: the forecast scores its own guesses for about an hour of closed minutes before it shows a band."
    );
    const learnt = latest !== null && isNumber(doc.profile_seen);
    setText("forecast-sub", learnt ? "daily profile " + percent.format(doc.profile_seen) + " learnt" : "");
    renderAhead(ahead);

    const chart = $("forecast-chart");
    const W = 640, H = 220, left = 46, right = 8, top = 10, bottom = 26;
    const plotW = W - left - right, plotH = H - top - bottom;
    const nodes = [];
    if (windows.length === 0) {
      nodes.push(svg("line", { class: "grid", x1: left, x2: W - right, y1: top + plotH, y2: top + plotH }));
      nodes.push(svg("text", { class: "none", x: left + plotW / 2, y: top + plotH / 2, "text-anchor": "middle" }, "No minute has closed yet"));
      chart.replaceChildren(...nodes);
      return;
    }
    const last = windows[windows.length - 1];
    const width = last.end_ms - last.start_ms || 60000;
    const firstStart = last.start_ms - (TREND_SLOTS - 1) * width;
    const slots = TREND_SLOTS + FUTURE_SLOTS;
    const slotW = plotW / slots;
    const slotOf = (startMs) => Math.round((startMs - firstStart) / width);
    const xOf = (slot) => left + (slot + 0.5) * slotW;

    const points = [];
    for (const w of windows) {
      const slot = slotOf(w.start_ms);
      if (slot < 0 || slot >= TREND_SLOTS) continue;
      const band = isBand(w.forecast) ? w.forecast : null;
      points.push({ slot, x: xOf(slot), w, band, streams: w.streams });
    }
    const drawn = ahead
      .map((a) => ({ a, slot: slotOf(a.start_ms) }))
      .filter((d) => d.slot >= TREND_SLOTS && d.slot < slots);
    const max = Math.max(1, ...points.map((p) => Math.max(p.streams, p.band ? p.band.upper : 0)), ...drawn.map((d) => d.a.upper));
    const step = niceStep(max / 4);
    const yMax = Math.ceil(max / step) * step;
    const y = (v) => top + plotH - (plotH * Math.min(Math.max(v, 0), yMax)) / yMax;

    for (let v = 0; v <= yMax + step / 2; v += step) {
      nodes.push(svg("line", { class: "grid", x1: left, x2: W - right, y1: y(v), y2: y(v) }));
      nodes.push(svg("text", { class: "axis", x: left - 6, y: y(v) + 4, "text-anchor": "end" }, compact.format(v)));
    }
    // The band and the forecast under the actual line.
    const withBand = points
      .filter((p) => p.band)
      .map((p) => ({ slot: p.slot, x: p.x, lower: p.band.lower, upper: p.band.upper, mean: p.band.streams }));
    for (const run of runs(withBand)) {
      nodes.push(svg("path", { class: "band", d: bandPath(run, y, slotW / 3) }));
      if (run.length > 1) nodes.push(svg("path", { class: "mean", d: linePath(run, y, "mean") }));
    }
    for (const run of runs(points)) {
      if (run.length > 1) nodes.push(svg("path", { class: "actual-line", d: linePath(run, y, "streams") }));
    }
    for (const p of points) {
      const outside = p.band !== null && (p.streams < p.band.lower || p.streams > p.band.upper);
      const dot = svg("circle", { class: outside ? "actual outside" : "actual", cx: p.x.toFixed(1), cy: y(p.streams).toFixed(1), r: outside ? 3.5 : 2 });
      dot.setAttribute("data-streams", String(p.streams));
      const said = p.band
        ? "; forecast " + about(p.band.streams) + ", 95% band " + about(p.band.lower) + "–" + about(p.band.upper)
        : "; no forecast yet";
      dot.append(svg("title", {}, range(p.w) + ": " + count(p.streams) + " streams" + said));
      nodes.push(dot);
    }
    // The latest close, then the forecasts ahead as whiskers.
    const now = left + TREND_SLOTS * slotW;
    nodes.push(svg("line", { class: "now", x1: now, x2: now, y1: top, y2: top + plotH }));
    for (const { a, slot } of drawn) {
      const x = xOf(slot);
      const group = svg("g", { class: "ahead-mark" });
      group.setAttribute("data-horizon", String(a.horizon_minutes));
      group.append(
        svg("line", { class: "whisker", x1: x, x2: x, y1: y(a.upper).toFixed(1), y2: y(a.lower).toFixed(1) }),
        svg("line", { class: "whisker", x1: x - 3, x2: x + 3, y1: y(a.upper).toFixed(1), y2: y(a.upper).toFixed(1) }),
        svg("line", { class: "whisker", x1: x - 3, x2: x + 3, y1: y(a.lower).toFixed(1), y2: y(a.lower).toFixed(1) }),
        svg("circle", { class: "ahead-mean", cx: x, cy: y(a.streams).toFixed(1), r: 3.5 }),
        svg("title", {}, aheadText(a))
      );
      nodes.push(group);
    }
    for (const [at, x, anchor] of [
      [firstStart, left, "start"],
      [last.end_ms, now, "middle"],
      [last.end_ms + FUTURE_SLOTS * width, W - right, "end"],
    ]) {
      nodes.push(svg("text", { class: "axis", x, y: H - 6, "text-anchor": anchor }, clock(at)));
    }
    chart.replaceChildren(...nodes);
  }

  function aheadText(a) {
    const when = isNumber(a.end_ms) ? range(a) : clock(a.start_ms);
    return "In " + a.horizon_minutes + " min (" + when + "): " + about(a.streams) + " streams expected, 95% between " +
      about(a.lower) + " and " + about(a.upper) + (a.method === "recent" ? " (recent average: this time of day not learnt yet)" : "");
  }

  function aheadItem() {
    const item = el("li");
    item.append(el("span", "when"), el("span", "value"), el("span", "band"));
    return item;
  }

  function renderAhead(ahead) {
    const list = $("forecast-ahead");
    resize(list, ahead.length, aheadItem);
    ahead.forEach((a, i) => {
      const item = list.children[i];
      // The numbers as the API gave them, for anyone checking the page.
      item.dataset.horizonMinutes = String(a.horizon_minutes);
      item.dataset.startMs = String(a.start_ms);
      item.dataset.streams = String(a.streams);
      item.dataset.lower = String(a.lower);
      item.dataset.upper = String(a.upper);
      item.querySelector(".when").textContent = "in " + a.horizon_minutes + " min · " + clock(a.start_ms);
      item.querySelector(".value").textContent = about(a.streams);
      item.querySelector(".band").textContent = "95%: " + about(a.lower) + "–" + about(a.upper);
      item.title = aheadText(a);
    });
  }

  function renderPredicted(doc) {
    const songs = doc && Array.isArray(doc.predicted_top_songs) ? doc.predicted_top_songs : [];
    const list = $("predicted");
    resize(list, songs.length, leaderboardRow);
    const most = songs.reduce((m, s) => Math.max(m, isNumber(s.streams) ? s.streams : 0), 0) || 1;
    songs.forEach((s, i) => {
      const row = list.children[i];
      row.querySelector(".rank").textContent = String(isNumber(s.rank) ? s.rank : i + 1);
      row.querySelector(".song").textContent = str(s.song);
      row.querySelector(".artist").textContent = str(s.artist) || "unknown artist";
      row.querySelector(".count").textContent = isNumber(s.streams) ? about(s.streams) : "–";
      row.title = str(s.song) + " — " + str(s.artist) + ": about " + (isNumber(s.streams) ? about(s.streams) : "–") + " streams expected";
      row.querySelector(".bar > span").style.width = ((100 * (isNumber(s.streams) ? Math.max(s.streams, 0) : 0)) / most).toFixed(1) + "%";
    });
    $("predicted-empty").hidden = songs.length > 0;
    setText(
      "predicted-empty",
      !doc || doc.window == null
        ? "No prediction yet."
        : "No prediction yet: it comes once the streams forecast has warmed up (about an hour)."
    );
  }

  // ---- trending ------------------------------------------------------------

  function trendingRow() {
    const row = el("li");
    const who = el("div", "who");
    who.append(el("span", "song"), el("span", "artist"));
    const ratio = el("span", "ratio");
    ratio.append(el("span", "x"), el("small"));
    row.append(el("span", "rank"), who, ratio);
    return row;
  }

  function renderTrending(doc) {
    const songs = doc && Array.isArray(doc.songs) ? doc.songs : [];
    const list = $("trending");
    resize(list, songs.length, trendingRow);
    songs.forEach((s, i) => {
      const row = list.children[i];
      row.querySelector(".rank").textContent = String(isNumber(s.rank) ? s.rank : i + 1);
      row.querySelector(".song").textContent = str(s.song);
      row.querySelector(".artist").textContent = str(s.artist) || "unknown artist";
      row.querySelector(".ratio .x").textContent = isNumber(s.ratio) ? "×" + decimal.format(s.ratio) : "new";
      row.querySelector(".ratio small").textContent =
        count(s.streams) + " vs " + (isNumber(s.baseline_streams) ? decimal.format(s.baseline_streams) : "–") + " usual";
    });
    $("trending-empty").hidden = songs.length > 0;
    setText(
      "trending-empty",
      !doc || !isNumber(doc.window_end_ms)
        ? "Nothing is trending yet."
        : doc.warming_up === true
          ? "Warming up: learning what is usual for each song before calling anything a trend."
          : "Nothing is trending: every song plays about as usual."
    );
    const parts = [];
    if (doc && isNumber(doc.total_ratio)) parts.push("all streams ×" + decimal.format(doc.total_ratio) + " usual");
    if (doc && isNumber(doc.window_end_ms)) parts.push("until " + clock(doc.window_end_ms));
    setText("trending-sub", parts.join(" · "));
  }

  // ---- status and the poll loop ----------------------------------------------

  function setStatus(state, text) {
    $("status").dataset.state = state;
    setText("status", text);
    document.body.classList.toggle("stale", state === "offline");
  }

  async function refresh() {
    const [latest, stats, trending, sessions, forecast] = await Promise.all([
      getJson("/api/v1/windows/latest"),
      getJson("/api/v1/stats"),
      getJson("/api/v1/trending"),
      getJson("/api/v1/sessions"),
      getJson("/api/v1/forecast"),
    ]);
    const tumblingEnd = latest.tumbling ? latest.tumbling.end_ms : null;
    let history = null;
    if (tumblingEnd !== seen.historyEnd) {
      history = await getJson("/api/v1/windows/history");
    }
    renderKpis(latest, stats, eventsPerSecond(stats));
    renderSessions(sessions);
    renderLeaderboard(latest.sliding);
    renderArtists(latest.sliding);
    if (history !== null) {
      seen.history = Array.isArray(history) ? history : [];
      renderTrend(seen.history);
      seen.historyEnd = tumblingEnd;
    }
    // The forecast is published just after the windows of a close, so it
    // may change on a poll where the history does not.
    const forecastKey = String(seen.historyEnd) + " " + JSON.stringify(forecast);
    if (forecastKey !== seen.forecastKey) {
      renderForecast(seen.history, forecast);
      renderPredicted(forecast);
      seen.forecastKey = forecastKey;
    }
    renderTrending(trending);

    seen.lastOk = new Date();
    seen.failingSince = null;
    const updated = $("updated");
    updated.dateTime = seen.lastOk.toISOString();
    setText("updated", clock(seen.lastOk.getTime(), true));
    if (latest.tumbling || latest.sliding) setStatus("live", "Live");
    else setStatus("waiting", "Live · waiting for the first window to close");
  }

  function offline(error) {
    if (!seen.failingSince) seen.failingSince = new Date();
    const since = clock(seen.failingSince.getTime(), true);
    const text = seen.lastOk
      ? "Engine not answering since " + since + " · showing the last data"
      : "Engine not answering (since " + since + ")";
    setStatus("offline", text);
    $("status").title = error && error.message ? error.message : String(error);
  }

  let polls = 0;

  async function poll() {
    try {
      await refresh();
      $("status").title = "";
    } catch (error) {
      offline(error);
    } finally {
      // The second reading comes sooner, for a first events/s.
      setTimeout(poll, ++polls === 1 ? 1000 : POLL_MS);
    }
  }

  poll();
})();
