// The contact-server console: each page polls its part of the JSON API
// (docs/console-api.md) once a second and redraws. Everything the server
// sends is put in the page as text (textContent), never as markup.
"use strict";

const state = {
  session: null,          // /api/session
  selected: new Set(),    // dead letters ticked for requeue
  deadQueue: "",          // the dead-letter filter
  timer: null,
};

// --- building the page ---

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "checked") node.checked = true;
    else node.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function table(headers, rows, empty) {
  if (rows.length === 0) return el("p", { class: "muted" }, empty);
  return el("table", {},
    el("thead", {}, el("tr", {}, headers.map(([label, cls]) => el("th", { class: cls }, label)))),
    el("tbody", {}, rows));
}

// Times that move every second are drawn in cells of class "ago", which a
// redraw updates in place (see refresh).
function ago(unixMs) {
  if (!unixMs) return "—";
  const s = Math.max(0, (Date.now() - unixMs) / 1000);
  if (s < 60) return `${s.toFixed(0)} s ago`;
  if (s < 3600) return `${(s / 60).toFixed(0)} min ago`;
  return `${(s / 3600).toFixed(1)} h ago`;
}

function inTime(unixMs) {
  const s = (unixMs - Date.now()) / 1000;
  return s >= 0 ? `in ${s.toFixed(0)} s` : `${(-s).toFixed(0)} s ago`;
}

function age(ms) {
  if (ms === null || ms === undefined) return "—";
  return ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(1)} s`;
}

function taskLink(id) {
  return el("a", { href: `#/task/${encodeURIComponent(id)}`, class: "text" }, id);
}

function notice(text, isError) {
  const box = document.getElementById("notice");
  box.textContent = text;
  box.className = isError ? "error" : "";
  box.hidden = !text;
}

// --- talking to the server ---

async function api(path, options) {
  const response = await fetch(path, {
    credentials: "same-origin",
    ...options,
    headers: { "x-contact-console": "1", ...(options && options.body ? { "content-type": "application/json" } : {}) },
  });
  let body = null;
  try { body = await response.json(); } catch (_) { body = null; }
  if (!response.ok) {
    const error = new Error((body && body.error) || `${response.status} ${response.statusText}`);
    error.status = response.status;
    throw error;
  }
  return body;
}

async function act(question, path, body) {
  if (!window.confirm(question)) return;
  try {
    const answer = await api(path, { method: "POST", body: JSON.stringify(body || {}) });
    notice(describe(answer), false);
  } catch (error) {
    notice(`Refused: ${error.message}`, true);
  }
  refresh();
}

function describe(answer) {
  if (!answer) return "done";
  if (answer.message) return answer.message;
  if (answer.requeued) {
    const refused = answer.refused.map((r) => `${r.task_id}: ${r.error}`).join("; ");
    return `requeued ${answer.requeued.length}` + (refused ? `; refused ${refused}` : "");
  }
  if (answer.purged !== undefined) return `purged ${answer.purged}`;
  if (answer.state) return `task ${answer.task_id} is ${answer.state}`;
  return "done";
}

// --- pages ---

function chart(rates) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "chart");
  svg.setAttribute("viewBox", "0 0 300 100");
  svg.setAttribute("preserveAspectRatio", "none");
  const top = Math.max(1, ...rates.flatMap((r) => [r.submitted, r.done, r.failed]));
  for (const key of ["submitted", "done", "failed"]) {
    const line = document.createElementNS(ns, "polyline");
    // The samples kept (up to five minutes) span the whole width.
    const step = rates.length > 1 ? 300 / (rates.length - 1) : 0;
    line.setAttribute("points", rates.map((r, i) => `${i * step},${100 - (r[key] / top) * 95}`).join(" "));
    line.setAttribute("class", key);
    line.setAttribute("data-series", key);
    svg.append(line);
  }
  return svg;
}

function rate(perSecond) {
  return perSecond < 10 ? perSecond.toFixed(1) : perSecond.toFixed(0);
}

function card(label, value, id) {
  return el("div", { class: "card", id }, el("div", { class: "value" }, value), el("div", { class: "label" }, label));
}

const pages = {
  async overview() {
    const o = await api("/api/overview");
    const last = o.rates.length ? o.rates[o.rates.length - 1] : { submitted: 0, done: 0, failed: 0 };
    return [
      el("h1", {}, "Overview"),
      el("div", { class: "cards" },
        card("submitted / s", rate(last.submitted), "rate-submitted"),
        card("done / s", rate(last.done), "rate-done"),
        card("failed / s", rate(last.failed), "rate-failed"),
        card("queued (ready)", `${o.pending} (${o.ready})`, "depth"),
        card("oldest ready", age(o.oldest_ready_age_ms), "oldest"),
        card("workers", o.workers, "workers"),
        card("in flight / credit", `${o.in_flight} / ${o.credit}`, "in-flight"),
        card("dead letters in queues", o.dead_letters, "dead-letters")),
      el("h2", {}, `Per second, last ${o.rates.length >= 299 ? "five minutes" : `${o.rates.length} s`} (peak ${Math.max(0, ...o.rates.map((r) => r.submitted)).toFixed(0)}/s)`),
      chart(o.rates),
      el("div", { class: "legend" },
        ["submitted", "done", "failed"].map((k) => el("span", {}, el("span", { class: `sw ${k}` }), k))),
      o.totals ? el("p", { class: "muted" },
        `Since start: ${o.totals.submitted} submitted, ${o.totals.done} done, ${o.totals.failed} failed attempts, ${o.totals.dead_lettered} dead-lettered.`) : null,
    ];
  },

  async queues() {
    const queues = await api("/api/queues");
    return [
      el("h1", {}, "Queues"),
      table([["queue"], ["pending", "num"], ["ready", "num"], ["delayed", "num"], ["oldest ready", "num"],
             ["workers"], ["waiting", "num"], ["dead letters", "num"]],
        queues.map((q) => el("tr", { "data-queue": q.name },
          el("td", { class: "text" }, q.name),
          el("td", { class: "num pending" }, q.pending),
          el("td", { class: "num ready" }, q.ready),
          el("td", { class: "num delayed" }, q.delayed),
          el("td", { class: "num oldest ago" }, age(q.oldest_ready_age_ms)),
          el("td", { class: "text" }, q.workers.join(", ") || "—"),
          el("td", { class: "num waiting" }, q.waiting_workers),
          el("td", { class: "num dead" },
            q.dead_letters ? el("a", { href: `#/dead-letters?queue=${encodeURIComponent(q.name)}` }, q.dead_letters) : 0))),
        "No queue has tasks, workers or dead letters."),
    ];
  },

  async workers() {
    const workers = await api("/api/workers");
    const mayAct = state.session && state.session.may_act;
    const out = [el("h1", {}, "Workers")];
    out.push(table([["worker"], ["peer"], ["queues"], ["in flight / credit", "num"], ["connected"], ["last heard"], ["status"], [""]],
      workers.map((w) => el("tr", { "data-worker": w.client_id },
        el("td", { class: "text" }, w.client_id, w.detached ? el("span", { class: "muted" }, " (detached)") : null),
        el("td", { class: "text" }, w.peer || "—"),
        el("td", { class: "text" }, w.queues.join(", ")),
        el("td", { class: "num credit" }, `${w.in_flight} / ${w.credit}`),
        el("td", { class: "ago" }, ago(w.connected_unix_ms)),
        el("td", { class: "ago" }, ago(w.last_heard_unix_ms)),
        el("td", { class: "text status" }, w.status),
        el("td", {},
          el("button", { disabled: !mayAct, onclick: () => act(`Drain worker ${w.client_id}? It takes no new tasks and leaves once it has finished what it holds.`, `/api/workers/${encodeURIComponent(w.client_id)}/drain`) }, "Drain"), " ",
          el("button", { class: "danger", disabled: !mayAct, onclick: () => act(`Disconnect worker ${w.client_id} now? What it holds goes to other workers.`, `/api/workers/${encodeURIComponent(w.client_id)}/disconnect`) }, "Disconnect")))),
      "No worker is connected."));
    for (const w of workers.filter((w) => w.held.length)) {
      out.push(el("h2", {}, "Held by ", el("span", { class: "text" }, w.client_id)));
      out.push(table([["task"], ["text"], ["attempt", "num"], ["delivered"], ["lease runs out"]],
        w.held.map((h) => el("tr", { "data-held": h.task_id },
          el("td", {}, taskLink(h.task_id)),
          el("td", { class: "text" }, h.text === null ? "—" : h.text),
          el("td", { class: "num" }, h.attempt),
          el("td", { class: "ago" }, ago(h.delivered_unix_ms)),
          el("td", { class: "ago" }, inTime(h.lease_deadline_unix_ms), h.awaiting_receipt ? " (receipt awaited)" : ""))),
        ""));
    }
    return out;
  },

  async task(id) {
    const form = el("form", { class: "inline", onsubmit: (e) => {
      e.preventDefault();
      form.elements.id.blur();
      location.hash = `#/task/${encodeURIComponent(form.elements.id.value.trim())}`;
    } }, el("input", { name: "id", placeholder: "task id", size: 40, value: id || "" }), el("button", {}, "Find"));
    const out = [el("h1", {}, "Task"), form];
    if (!id) return out;
    let t;
    try {
      t = await api(`/api/tasks/${encodeURIComponent(id)}`);
    } catch (error) {
      out.push(el("p", { id: "task-error" }, error.message));
      return out;
    }
    const mayAct = state.session && state.session.may_act;
    const row = (label, value, key) => [el("dt", {}, label), el("dd", { class: "text", "data-field": key }, value === "" || value === null || value === undefined ? "—" : value)];
    out.push(el("dl", { class: "task", "data-task": t.task_id },
      row("id", t.task_id, "id"),
      row("state", t.state, "state"),
      row("attempts", t.attempts, "attempts"),
      t.queue !== null ? row("queue", t.queue, "queue") : row("sent to worker", t.target_client_id, "target"),
      row("worker", t.worker, "worker"),
      row("text", t.text === null ? null : t.text + (t.text_bytes > t.text.length ? ` … (${t.text_bytes} bytes)` : ""), "text"),
      row("result", t.ret, "ret"),
      row("output", t.output_bytes ? `${t.output_bytes} bytes` : "", "output"),
      row("error", t.error, "error"),
      row("dead-letter reason", t.dead_letter_reason, "reason"),
      row("priority", t.priority, "priority"),
      row("broadcast", t.broadcast_id, "broadcast")));
    if (t.state === "pending" || t.state === "delivered") {
      out.push(el("button", { class: "danger", disabled: !mayAct, onclick: () => act(`Cancel task ${t.task_id}?`, `/api/tasks/${encodeURIComponent(t.task_id)}/cancel`) }, "Cancel task"));
    }
    if (t.state === "dead_lettered") {
      out.push(el("button", { disabled: !mayAct, onclick: () => act(`Requeue task ${t.task_id}?`, "/api/dead-letters/requeue", { task_ids: [t.task_id] }) }, "Requeue"));
    }
    return out;
  },

  async "dead-letters"(query) {
    // A queue named in the link applies when the link is followed, not on
    // every poll (the filter form may have changed it since).
    if (state.deadLink !== location.hash) {
      state.deadLink = location.hash;
      const params = new URLSearchParams(query || "");
      if (params.has("queue")) state.deadQueue = params.get("queue");
    }
    const path = `/api/dead-letters?limit=500${state.deadQueue ? `&queue=${encodeURIComponent(state.deadQueue)}` : ""}`;
    const tasks = await api(path);
    const ids = new Set(tasks.map((t) => t.task_id));
    for (const id of [...state.selected]) if (!ids.has(id)) state.selected.delete(id);
    const mayAct = state.session && state.session.may_act;
    const filter = el("form", { class: "inline", onsubmit: (e) => {
      e.preventDefault();
      state.deadQueue = filter.elements.queue.value.trim();
      filter.elements.queue.blur();
      refresh();
    } }, el("input", { name: "queue", placeholder: "every queue", value: state.deadQueue }), el("button", {}, "Filter"));
    const selected = () => [...state.selected];
    return [
      el("h1", {}, "Dead letters"),
      filter,
      el("p", {},
        el("button", { id: "requeue-selected", disabled: !mayAct, onclick: () => {
          const chosen = selected();
          if (chosen.length) act(`Requeue ${chosen.length} task(s)?`, "/api/dead-letters/requeue", { task_ids: chosen });
        } }, `Requeue selected (${state.selected.size})`), " ",
        el("button", { id: "requeue-all", disabled: !mayAct || !tasks.length, onclick: () => act(`Requeue all ${tasks.length} shown?`, "/api/dead-letters/requeue", { task_ids: tasks.map((t) => t.task_id) }) }, "Requeue all shown"), " ",
        el("button", { id: "purge", class: "danger", disabled: !mayAct, onclick: () => act(`Purge the dead letters of ${state.deadQueue || "every queue"} for good?`, "/api/dead-letters/purge", { queue: state.deadQueue }) }, "Purge")),
      table([[""], ["task"], ["queue"], ["text"], ["attempts", "num"], ["reason"], ["last error"]],
        tasks.map((t) => el("tr", { "data-dead": t.task_id },
          el("td", {}, el("input", { type: "checkbox", checked: state.selected.has(t.task_id), onchange: (e) => {
            if (e.target.checked) state.selected.add(t.task_id); else state.selected.delete(t.task_id);
          } })),
          el("td", {}, taskLink(t.task_id)),
          el("td", { class: "text" }, t.queue || t.target_client_id),
          el("td", { class: "text" }, t.text === null ? "—" : t.text),
          el("td", { class: "num" }, t.attempts),
          el("td", {}, t.dead_letter_reason),
          el("td", { class: "text" }, t.error))),
        "No dead letters."),
    ];
  },

  async broadcasts() {
    const broadcasts = await api("/api/broadcasts");
    const out = [el("h1", {}, "Broadcasts")];
    if (!broadcasts.length) out.push(el("p", { class: "muted" }, "No broadcast kept."));
    for (const b of broadcasts) {
      out.push(el("h2", { "data-broadcast": b.broadcast_id }, "Broadcast ", el("span", { class: "text" }, b.broadcast_id)));
      out.push(table([["worker"], ["copy"], ["state"], ["result"], ["error"]],
        b.copies.map((c) => el("tr", { "data-copy": c.task_id },
          el("td", { class: "text" }, c.target_client_id),
          el("td", {}, taskLink(c.task_id)),
          el("td", { class: "state" }, c.state),
          el("td", { class: "text" }, c.ret),
          el("td", { class: "text" }, c.error))),
        "No copies: no worker of its queue was connected."));
    }
    return out;
  },
};

// --- signing in ---

function signInForm() {
  const form = el("form", { class: "inline", id: "sign-in", onsubmit: async (e) => {
    e.preventDefault();
    try {
      state.session = await api("/api/sign-in", { method: "POST", body: JSON.stringify({ token: form.elements.token.value }) });
      notice("", false);
      refresh();
    } catch (error) {
      notice(`Sign-in refused: ${error.message}`, true);
    }
  } }, el("input", { name: "token", type: "password", placeholder: "token", size: 50, autocomplete: "off" }), el("button", {}, "Sign in"));
  return [el("h1", {}, "Sign in"), el("p", {}, "This server asks for the token of a principal with the admin role."), form];
}

function who() {
  const box = document.getElementById("who");
  const s = state.session;
  const key = JSON.stringify(s);
  if (box.dataset.key === key) return;  // the Sign out button stays the same node
  box.dataset.key = key;
  box.replaceChildren();
  if (!s || !s.auth_required) return;
  if (!s.principal) return box.append("not signed in");
  box.append(`signed in as ${s.principal}${s.may_act ? " (admin)" : ""} `,
    el("button", { onclick: async () => { await api("/api/sign-out", { method: "POST", body: "{}" }); state.session = null; refresh(); } }, "Sign out"));
}

// --- the loop ---

function route() {
  const hash = location.hash.replace(/^#\/?/, "");
  const [path, query] = hash.split("?");
  const [page, ...rest] = path.split("/");
  const name = page || "overview";
  let arg = rest.join("/");
  try { arg = decodeURIComponent(arg); } catch (_) { /* shown as typed */ }
  return { name: pages[name] ? name : "overview", arg: name === "dead-letters" ? query : arg };
}

// The markup of a page with its moving times blanked: equal means only
// times changed.
function withoutTimes(node) {
  const copy = node.cloneNode(true);
  for (const cell of copy.querySelectorAll(".ago")) cell.textContent = "";
  return copy.innerHTML;
}

let drawing = false;
async function refresh() {
  if (drawing) return;
  drawing = true;
  const main = document.getElementById("main");
  try {
    const { name, arg } = route();
    for (const a of document.querySelectorAll("nav a")) a.classList.toggle("current", a.dataset.page === name);
    if (!state.session) state.session = await api("/api/session");
    who();
    if (state.session.auth_required && !state.session.principal) {
      if (!document.getElementById("sign-in")) main.replaceChildren(...signInForm());
    } else {
      // Redrawing under someone typing would throw away what they typed.
      const active = document.activeElement;
      const focused = active && active.tagName === "INPUT" && active.type !== "checkbox" && main.contains(active);
      if (!focused) {
        // Redraw only what changed, so a row being clicked stays the same node.
        const next = el("div", {}, (await pages[name](arg)).filter(Boolean));
        if (main.dataset.drawn === name && withoutTimes(next) === withoutTimes(main)) {
          const now = next.querySelectorAll(".ago");
          main.querySelectorAll(".ago").forEach((cell, i) => { cell.textContent = now[i].textContent; });
        } else {
          main.replaceChildren(...next.childNodes);
          main.dataset.drawn = name;
        }
      }
    }
    document.getElementById("updated").textContent = new Date().toLocaleTimeString();
    document.body.dataset.page = name;
  } catch (error) {
    if (error.status === 401) state.session = null;
    main.replaceChildren(el("p", { id: "load-error" }, `Could not load: ${error.message}`));
  } finally {
    drawing = false;
  }
}

window.addEventListener("hashchange", () => { notice("", false); refresh(); });
refresh();
state.timer = setInterval(refresh, 1000);
