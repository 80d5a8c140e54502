// The socialrec inspector: one user's history, friends and recommendations, side by side with
// the social blend off. Calls only the public API (relative URLs, same origin); the admin token,
// when given, is kept for this tab only and sent as a bearer token.
"use strict";

const FRIENDS_WITH_ITEMS = 8; // friends whose recent items are fetched (one request each)
const FRIEND_ITEMS = 4;
const TOKEN_KEY = "socialrec-admin-token";
const SOCIAL_TYPES = new Set(["follow", "unfollow"]);

const $ = (selector) => document.querySelector(selector);

// The last list shown per user, to mark what moved after an event.
const shown = { user: null, items: null };

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function el(tag, className, ...children) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child); // strings become text nodes
  }
  return node;
}

function userLink(id) {
  const link = el("a", "user", id);
  link.href = "?user=" + encodeURIComponent(id);
  return link;
}

function describe(body, status) {
  if (body && Array.isArray(body.detail)) {
    return body.detail.map((d) => `${(d.loc || []).join(".")}: ${d.msg}`).join("; ");
  }
  if (body && body.detail) return String(body.detail);
  return `HTTP ${status}`;
}

async function api(path, options = {}) {
  const headers = { Accept: "application/json", ...(options.headers || {}) };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = "Bearer " + token;
  const response = await fetch(path, { ...options, headers });
  const body = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, describe(body, response.status));
  return body;
}

function showError(message) {
  const box = $("#error");
  box.textContent = message || "";
  box.hidden = !message;
}

async function checkService() {
  const line = $("#service");
  try {
    const ready = await fetch("readyz").then((r) => r.json());
    line.textContent = ready.status === "ready"
      ? `ready · model ${ready.model_version}`
      : `not ready: ${ready.reason || ready.status}`;
    line.dataset.ready = String(ready.status === "ready");
  } catch (err) {
    line.textContent = "service unreachable";
    line.dataset.ready = "false";
  }
}

function reasonChips(reasons) {
  const box = el("div", "reasons");
  for (const reason of reasons || []) {
    if (reason.kind === "friends_engaged") {
      const chip = el("span", "chip friends", "friends engaged: ");
      // Without ids (SOCIALREC_REASON_FRIEND_IDS=false) only their number is given.
      if (!reason.friends) chip.append(String(reason.friend_count));
      (reason.friends || []).forEach((id, n) => {
        if (n) chip.append(", ");
        chip.append(userLink(id));
      });
      box.append(chip);
    } else {
      box.append(el("span", "chip " + reason.kind, reason.kind.replaceAll("_", " ")));
    }
  }
  return box;
}

function renderList(target, rec, other, before) {
  const list = $(target);
  list.replaceChildren();
  const otherIds = new Set(other.items.map((i) => i.item_id));
  rec.items.forEach((item, rank) => {
    const row = el("li", "item");
    row.dataset.item = item.item_id;
    row.title = "click to use this item in a test event";
    const head = el("div", "head",
      el("span", "name", item.title || item.item_id),
      el("span", "score", item.score.toFixed(4)));
    const meta = el("div", "meta", item.item_id, item.category ? " · " + item.category : "");
    if (!otherIds.has(item.item_id)) {
      row.classList.add("only");
      meta.append(el("span", "badge only", "only here"));
    }
    if (before) {
      const was = before.indexOf(item.item_id);
      if (was < 0) meta.append(el("span", "badge new", "new"));
      else if (was > rank) meta.append(el("span", "badge up", `↑${was - rank}`));
      else if (was < rank) meta.append(el("span", "badge down", `↓${rank - was}`));
    }
    row.append(head, meta, reasonChips(item.reasons));
    row.addEventListener("click", (event) => {
      if (event.target.closest("a")) return;
      const type = $("#event-type");
      if (SOCIAL_TYPES.has(type.value)) type.value = "purchase";
      syncEventLabel();
      $("#event-target").value = item.item_id;
    });
    list.append(row);
  });
  if (!rec.items.length) list.append(el("li", "note", "nothing to recommend"));
}

function renderSummary(user, social, own) {
  const box = $("#summary");
  box.replaceChildren(
    el("span", "user-id", user),
    el("span", "pill", `strategy ${social.strategy}`),
    el("span", "pill", `without friends: ${own.strategy}`),
    el("span", "pill", `model ${social.model_version}`),
  );
  if (social.degraded) {
    box.append(el("span", "pill degraded",
      "degraded: the store did not answer or the service was overloaded; lists come from popularity"));
  }
  box.dataset.degraded = String(social.degraded);
}

function renderHistory(view) {
  const body = $("#history tbody");
  body.replaceChildren();
  for (const entry of view.history) {
    const name = el("td", null, entry.title || entry.item_id);
    if (entry.title) name.append(el("span", "id", entry.item_id));
    if (!entry.known_to_model) name.append(el("span", "badge", "unknown to the model"));
    const row = el("tr", null, name, el("td", null, entry.category || ""),
      el("td", "num", String(entry.weight)));
    row.dataset.item = entry.item_id;
    body.append(row);
  }
  $("#history-count").textContent = `${view.history.length} recent`;
}

function renderFriends(view, named) {
  const list = $("#friends");
  list.replaceChildren();
  view.friends.forEach((friend, n) => {
    const row = el("li", named.has(friend.user_id) ? "friend named" : "friend",
      userLink(friend.user_id), el("span", "weight", ` tie ${friend.weight}`));
    row.dataset.user = friend.user_id;
    if (n < FRIENDS_WITH_ITEMS) {
      const items = el("ul", "recent");
      row.append(items);
      api("users/" + encodeURIComponent(friend.user_id)).then((fv) => {
        for (const entry of fv.history.slice(0, FRIEND_ITEMS)) {
          items.append(el("li", null, entry.title || entry.item_id));
        }
        if (!fv.history.length) items.append(el("li", "note", "no history"));
      }).catch((err) => items.append(el("li", "note", err.message)));
    }
    list.append(row);
  });
  const more = view.friends.length > FRIENDS_WITH_ITEMS
    ? ` · recent items of the first ${FRIENDS_WITH_ITEMS}` : "";
  $("#friends-count").textContent = `${view.friends.length}${more}`;
  if (!view.friends.length) list.append(el("li", "note", "no friends known"));
}

function namedFriends(rec) {
  const named = new Set();
  for (const item of rec.items) {
    for (const reason of item.reasons || []) {
      for (const id of reason.friends || []) named.add(id);
    }
  }
  return named;
}

async function openUser(user, { push = true } = {}) {
  const k = Number($("#k").value) || 10;
  document.body.dataset.state = "loading";
  showError("");
  if (push) history.pushState({ user }, "", "?user=" + encodeURIComponent(user));
  const base = `recommend/${encodeURIComponent(user)}?k=${k}&explain=true`;
  try {
    const [social, own] = await Promise.all([api(base), api(base + "&social=false")]);
    const before = shown.user === user ? shown.items : null;
    renderSummary(user, social, own);
    renderList("#recs-social", social, own, before);
    renderList("#recs-own", own, social, null);
    shown.user = user;
    shown.items = social.items.map((i) => i.item_id);
    await api("users/" + encodeURIComponent(user)).then((view) => {
      $("#history-note").hidden = true;
      renderHistory(view);
      renderFriends(view, namedFriends(social));
    }).catch((err) => {
      $("#history tbody").replaceChildren();
      $("#friends").replaceChildren();
      const note = $("#history-note");
      note.hidden = false;
      note.textContent = err.status === 401 || err.status === 403
        ? "history and friends need the admin token" : `history unavailable: ${err.message}`;
    });
    $("#view").hidden = false;
    document.body.dataset.state = "ready";
  } catch (err) {
    showError(err.message);
    document.body.dataset.state = "error";
  }
  checkService();
}

function syncEventLabel() {
  const social = SOCIAL_TYPES.has($("#event-type").value);
  $("#event-target-label").textContent = social ? "friend id" : "item id";
}

async function postEvent(event) {
  event.preventDefault();
  const user = shown.user;
  const type = $("#event-type").value;
  const target = $("#event-target").value.trim();
  const output = $("#event-result");
  const payload = { event_id: `ui-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 10)}`,
    user_id: user, type };
  payload[SOCIAL_TYPES.has(type) ? "friend_id" : "item_id"] = target;
  try {
    const answer = await api("events", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ events: [payload] }),
    });
    output.textContent = `${type} ${target}: accepted ${answer.accepted}`;
    await openUser(user, { push: false });
  } catch (err) {
    output.textContent = `refused: ${err.message}`;
  }
}

function start() {
  const token = $("#token");
  token.value = sessionStorage.getItem(TOKEN_KEY) || "";
  token.addEventListener("change", () => {
    if (token.value) sessionStorage.setItem(TOKEN_KEY, token.value);
    else sessionStorage.removeItem(TOKEN_KEY);
  });
  $("#open-form").addEventListener("submit", (event) => {
    event.preventDefault();
    openUser($("#user").value.trim());
  });
  $("#event-form").addEventListener("submit", postEvent);
  $("#event-type").addEventListener("change", syncEventLabel);
  window.addEventListener("popstate", () => {
    const user = new URLSearchParams(location.search).get("user");
    if (user) {
      $("#user").value = user;
      openUser(user, { push: false });
    }
  });
  const user = new URLSearchParams(location.search).get("user");
  if (user) {
    $("#user").value = user;
    openUser(user, { push: false });
  } else {
    checkService();
  }
}

start();
