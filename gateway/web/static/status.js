// Live refresh of the status page: polls /api/status every refresh_s seconds and redraws.
// Built with DOM nodes and textContent only, so device names and errors can never inject markup.
"use strict";
(function () {
  let refreshMs = 2000;
  let lastOk = 0;
  const SHOWN = 6;
  const openCards = new Set();

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  // Ages are measured on the gateway's clock: `now` is the status's own time (st.generated), as the
  // timestamps are the gateway's. The browser's clock may be days off the gateway's (no RTC, no NTP).
  function age(ts, now) {
    if (!ts) return "never";
    const s = now - ts;
    if (s < 90) return Math.max(0, Math.round(s)) + " s ago";
    if (s < 5400) return Math.round(s / 60) + " min ago";
    return Math.round(s / 3600) + " h ago";
  }
  function duration(s) {
    if (s === null || s === undefined) return "";
    if (s < 120) return Math.round(s) + " s";
    if (s < 7200) return Math.round(s / 60) + " min";
    return (s / 3600).toFixed(1) + " h";
  }
  function fmt(v) {
    if (typeof v === "number") return Number.isInteger(v) ? String(v) : String(Math.round(v * 1000) / 1000);
    if (v === null || v === undefined) return "-";
    return String(v);
  }
  // The uplink's states (LinkState) as a technician says them.
  const LINK_WORDS = { connecting: "connecting", backing_off: "down, retrying", stopped: "stopped" };
  function words(state) { return String(state).replace(/_/g, " "); }
  function stateOf(online) { return online === true ? "online" : online === false ? "offline" : "unknown"; }
  function setTile(id, cls) {
    const t = document.getElementById(id);
    t.classList.remove("ok", "bad", "warn");
    if (cls) t.classList.add(cls);
  }

  function render(st) {
    const g = st.gateway;
    const now = st.generated;
    document.getElementById("gw-id").textContent = g.gateway_id || "CityNerve";
    document.getElementById("gw-name").textContent = g.name || "";
    document.getElementById("gw-version").textContent = "v" + (g.version || "?");
    document.getElementById("gw-uptime").textContent = "up " + duration(g.uptime_s);
    document.title = (g.gateway_id || "CityNerve") + " status";

    document.getElementById("devices-online").textContent = (g.devices_online ?? 0) + " / " + (g.devices_total ?? 0);
    const degraded = st.groups.some(function (grp) { return grp.devices.some(function (d) { return d.state === "degraded"; }); });
    setTile("tile-devices", g.devices_online !== g.devices_total ? "bad" : degraded ? "warn" : "ok");

    const alarms = st.alarms || [];
    document.getElementById("alarm-count").textContent = st.alarms === null ? "-" : String(alarms.length);
    setTile("tile-alarms", alarms.length ? "bad" : "ok");
    const list = document.getElementById("alarms");
    list.replaceChildren(...alarms.map(function (a) {
      const li = el("li");
      li.append(el("strong", null, (a.severity || "").toUpperCase() + " " + (a.kind || "")), " ");
      li.append(el("span", null, (a.device_id || "") + (a.subject ? " " + a.subject : "") + " since " + age(a.raised_at, now)));
      if (a.message) li.append(el("span", "muted", " · " + a.message));
      if (a.value !== undefined && a.value !== null) li.append(el("span", "muted", " (value " + fmt(a.value) + ")"));
      if (a.rule) li.append(el("span", "muted", " · rule " + a.rule));
      if (a.maintenance) li.append(el("span", null, " · in maintenance"));
      if (a.acked_by) li.append(el("span", null, " · acknowledged by " + a.acked_by));
      return li;
    }));
    document.getElementById("alarms-section").hidden = alarms.length === 0;

    const op = st.operator || {};
    const flags = [];
    [["away", "away"], ["maintenance", "maintenance"], ["overrides", "override"]].forEach(function (pair) {
      (op[pair[0]] || []).forEach(function (w) { flags.push([pair[1], w]); });
    });
    document.getElementById("operator").replaceChildren(...flags.map(function (f) {
      const w = f[1];
      const li = el("li");
      li.append(el("strong", null, f[0] + " " + w.target), " ");
      li.append(el("span", null, w.until === null || w.until === undefined ? "open-ended" : "ends in " + duration(w.remaining_s)));
      if (w.reason) li.append(el("span", "muted", " · " + w.reason));
      li.append(el("span", "muted", " · by " + w.by));
      return li;
    }));
    document.getElementById("operator-section").hidden = flags.length === 0;

    const ob = st.outbox;
    const storeState = ob.state || "ok";
    document.getElementById("outbox-depth").textContent = fmt(ob.depth) + " rows" + (storeState === "ok" ? "" : " — store " + words(storeState));
    // What was lost (records dropped unsent, per reason) and what the technician should do.
    const obParts = [ob.oldest_age_s ? "oldest " + duration(ob.oldest_age_s) : "empty"];
    const dropped = Object.entries(ob.dropped_by || {}).filter(([, n]) => n > 0);
    if (dropped.length) obParts.push("dropped unsent: " + dropped.map(([why, n]) => words(why) + " " + n.toLocaleString("en-US")).join(", "));
    if (storeState === "disk_full") obParts.push("free space on the disk holding " + (ob.folder || "the outbox") + " (old telemetry is evicted to keep alarms)");
    else if (storeState === "degraded" && ob.quarantined) obParts.push("a corrupt outbox was moved to " + ob.quarantined);
    document.getElementById("outbox-age").textContent = obParts.join(" · ");
    setTile("tile-outbox", storeState === "disk_full" ? "bad" : storeState === "ok" ? null : "warn");

    const up = st.uplink;
    const upState = document.getElementById("uplink-state");
    const upDetail = document.getElementById("uplink-detail");
    if (!up) { upState.textContent = "off"; upDetail.textContent = "not configured"; setTile("tile-uplink", null); }
    else {
      upState.textContent = up.connected ? "connected" : LINK_WORDS[up.state] || (up.state ? words(up.state) : "down");
      let d = up.broker || "";
      if (!up.connected && up.last_error) d = up.last_error;
      if (st.uplink_publish_rate !== null && st.uplink_publish_rate !== undefined) d += " · " + st.uplink_publish_rate.toFixed(1) + " msg/s";
      // Several destinations (city, district, fire centre): each one's state and backlog.
      const dests = up.destinations ? Object.entries(up.destinations) : [];
      let allUp = up.connected;
      if (dests.length > 1) {
        d += " · " + dests.map(([id, x]) => {
          const backlog = x.backlog ? Object.values(x.backlog).reduce((a, b) => a + b, 0) : 0;
          if (!x.connected) allUp = false;
          return id + " " + (x.connected ? "up" : "DOWN") + (backlog ? " (" + fmt(backlog) + " queued)" : "");
        }).join(", ");
      }
      upDetail.textContent = d;
      setTile("tile-uplink", up.connected ? (allUp ? "ok" : "warn") : "bad");
    }

    const t = st.time;
    if (t) {
      document.getElementById("time-gateway").textContent = (t.gateway_utc || "").replace("T", " ").slice(0, 19);
      // the browser's own clock against the gateway's: a phone on mobile data has NTP
      const browserSkew = Math.round((Date.now() / 1000 - st.generated));
      const parts = ["NTP " + (t.ntp_synchronized === true ? "synchronised" : t.ntp_synchronized === false ? "NOT synchronised" : "unknown")];
      if (t.platform_skew_s !== null && t.platform_skew_s !== undefined) parts.push("platform " + (t.platform_skew_s >= 0 ? "+" : "") + t.platform_skew_s.toFixed(1) + " s");
      if (t.median_meter_skew_s !== null && t.median_meter_skew_s !== undefined) parts.push("meters " + (t.median_meter_skew_s >= 0 ? "+" : "") + Math.round(t.median_meter_skew_s) + " s");
      parts.push("this browser " + (browserSkew >= 0 ? "+" : "") + browserSkew + " s");
      if (t.reason) parts.push(t.reason);
      document.getElementById("time-detail").textContent = parts.join(" · ");
      setTile("tile-time", t.verdict === "ok" && Math.abs(browserSkew) < 300 ? "ok" : "warn");
    }

    const groups = document.getElementById("groups");
    if (!st.groups.length) { groups.replaceChildren(el("p", "muted", "no devices on running buses")); }
    else groups.replaceChildren(...st.groups.map(function (grp) {
      const sec = el("div", "group");
      const where = [grp.building || "unplaced", grp.floor ? "floor " + grp.floor : ""].filter(Boolean).join(" · ");
      sec.append(el("h3", null, where));
      const cards = el("div", "cards");
      grp.devices.forEach(function (d) {
        const state = d.state || stateOf(d.online);
        const card = el("div", "card " + state + (d.alarm ? " alarm" : ""));
        card.dataset.device = d.id;
        const top = el("div", "top");
        top.append(el("span", "id", d.name || d.id), el("span", "badge " + state, state));
        card.append(top);
        const place = [d.room, d.place].filter(Boolean).join(", ");
        card.append(el("div", "meta", [d.id !== (d.name || d.id) ? d.id : "", d.profile, "bus " + d.bus, place].filter(Boolean).join(" · ")));
        card.append(el("div", "meta", "last good read " + age(d.last_success, now)));
        if (d.faulted) card.append(el("div", "err", "faulted: " + d.faulted));
        else if ((state === "degraded" || state === "offline") && d.reason) card.append(el("div", "err", d.reason));
        else if (d.online === false && d.last_error) card.append(el("div", "err", d.last_error));
        if (d.window && d.window.attempts) card.append(el("div", "meta", "failed " + d.window.failures + " of " + d.window.attempts + " in " + Math.round(d.window.window_s) + " s"));
        function readingList(rs) {
          const ul = el("ul", "readings");
          rs.forEach(function (r) {
            const li = el("li", r.quality === "good" ? "" : r.quality);
            li.append(el("span", "p", r.point), el("span", "val", fmt(r.value) + (r.unit ? " " + r.unit : "")));
            ul.append(li);
          });
          return ul;
        }
        card.append(readingList(d.readings.slice(0, SHOWN)));
        if (d.readings.length > SHOWN) {
          // The rest folds away (a three-phase meter has two dozen points); stays open across refreshes.
          const more = el("details", "more");
          more.open = openCards.has(d.id);
          more.addEventListener("toggle", function () { more.open ? openCards.add(d.id) : openCards.delete(d.id); });
          more.append(el("summary", null, (d.readings.length - SHOWN) + " more readings"), readingList(d.readings.slice(SHOWN)));
          card.append(more);
        }
        cards.append(card);
      });
      sec.append(cards);
      return sec;
    }));

    const tbody = document.querySelector("#buses tbody");
    tbody.replaceChildren(...st.buses.map(function (b) {
      const tr = el("tr");
      tr.append(el("td", null, b.id), el("td", null, b.protocol));
      const down = b.adapter_missing ? "waiting for adapter " + b.adapter_missing + " \u2014 plug it in" : "down: " + (b.channel_error || "");
      tr.append(el("td", b.channel === "open" ? "" : "down", b.channel === "open" ? "open" : down));
      // In the order of the headings in index.html; the verdict is the last column.
      tr.append(el("td", null, fmt(b.transactions)), el("td", null, fmt(b.errors)));
      tr.append(el("td", null, b.latency_ms === null || b.latency_ms === undefined ? "-" : fmt(b.latency_ms) + " ms"));
      const v = b.verdict || {};
      tr.append(el("td", v.cause && v.cause !== "ok" ? (v.state === "offline" ? "down" : "warn") : "", v.cause && v.cause !== "ok" ? v.reason : "ok"));
      return tr;
    }));
  }

  async function tick() {
    try {
      const resp = await fetch("/api/status", { cache: "no-store", credentials: "same-origin" });
      if (!resp.ok) throw new Error("HTTP " + resp.status);
      const st = await resp.json();
      refreshMs = Math.max(500, (st.refresh_s || 2) * 1000);
      render(st);
      lastOk = Date.now();
      document.getElementById("error").hidden = true;
      document.body.dataset.loaded = "1";
    } catch (e) {
      const box = document.getElementById("error");
      box.textContent = "cannot reach the gateway: " + e.message + " (retrying)";
      box.hidden = false;
    }
    const live = document.getElementById("live");
    live.classList.toggle("stale", Date.now() - lastOk > 3 * refreshMs);
    document.getElementById("updated").textContent = lastOk ? "updated " + new Date(lastOk).toLocaleTimeString() : "connecting";
    setTimeout(tick, refreshMs);
  }
  tick();
})();
