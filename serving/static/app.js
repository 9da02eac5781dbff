// recsys-hybrid web page: plain JavaScript, no build step, no external assets.
// Every value from the API is inserted with textContent / attributes (never innerHTML).
"use strict";

const $ = (sel) => document.querySelector(sel);
const state = { mode: "customer", userId: null, image: null };

// ------------------------------------------------------------------ small DOM helpers

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function fmt(value, digits = 2) {
  return value === null || value === undefined || Number.isNaN(value) ? "–" : Number(value).toFixed(digits);
}

function showError(message) {
  const box = $("#error");
  box.textContent = message;
  box.hidden = !message;
}

async function api(path, options = {}) {
  let response;
  try {
    response = await fetch(path, options);
  } catch (err) {
    throw new Error("The server cannot be reached. Is it running?");
  }
  let body = null;
  try { body = await response.json(); } catch (_) { /* non-JSON answer */ }
  if (!response.ok) {
    const message = body && body.message ? body.message : `${response.status} ${response.statusText}`;
    throw new Error(message);
  }
  return body;
}

function postJSON(path, payload) {
  return api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(payload) });
}

// ------------------------------------------------------------------ readable reasons

const SOURCE_NAMES = {
  history: "bought before", als: "collaborative (ALS)", two_tower: "two-tower", content: "similar content",
  copurchase: "bought together", popularity: "popular now", search: "search",
};

const FEATURE_NAMES = {
  sim_image_centroid: "Looks like their history", sim_image_last: "Looks like last buy", sim_image_max_recent: "Looks like a recent buy",
  sim_text_centroid: "Text like their history", sim_text_last: "Text like last buy", sim_text_max_recent: "Text like a recent buy",
  sim_fused_centroid: "Close to their history", sim_fused_last: "Close to last buy", sim_fused_max_recent: "Close to a recent buy",
  score_als: "ALS score", score_two_tower: "Two-tower score", src_count: "Found by several sources", src_merged_score: "Candidate score",
  hist_item_count: "Bought it before", hist_item_days_since: "Days since bought", item_price: "Price", price_ratio: "Price vs. usual",
  pop_1d: "Sales yesterday", pop_3d: "Sales, 3 days", pop_7d: "Sales, 7 days", pop_trend: "Trending", item_has_image: "Has a photo",
  user_n_purchases: "Customer's purchases", user_n_distinct_items: "Customer's distinct items", user_days_since_last: "Days since last visit",
  user_n_active_days: "Customer's active days",
  src_history_rank: "Among recent buys", src_als_rank: "ALS rank", src_two_tower_rank: "Two-tower rank",
  src_copurchase_rank: "Bought-together rank", src_content_rank: "Content rank", src_popularity_rank: "Popularity rank",
};

const VISITOR_NAMES = {
  hist_item_count: "Top match for your words", hist_item_days_since: "Top match for your words",
  sim_text_max_recent: "Text like your words", sim_text_last: "Text like your words", sim_text_centroid: "Text like your words",
  sim_image_max_recent: "Looks like your photo", sim_image_last: "Looks like your photo", sim_image_centroid: "Looks like your photo",
  sim_fused_max_recent: "Close to your query", sim_fused_last: "Close to your query", sim_fused_centroid: "Close to your query",
};

function featureName(name, visitor = false) {
  // A visitor described by words or a photo has no purchases: the service stands the closest
  // catalogue items in for a history, so history features mean "matches the query".
  if (visitor && VISITOR_NAMES[name]) return VISITOR_NAMES[name];
  if (FEATURE_NAMES[name]) return FEATURE_NAMES[name];
  const pretty = (s) => s.replace(/_(name|no|code)$/, "").replace(/_/g, " ");
  let m;
  if ((m = name.match(/^src_(.+)_rank$/))) return `Rank in ${SOURCE_NAMES[m[1]] || m[1]}`;
  if ((m = name.match(/^affinity_(.+)$/))) return `Likes this ${pretty(m[1])}`;
  if ((m = name.match(/^item_(.+)$/))) return `Item ${pretty(m[1])}`;
  if ((m = name.match(/^user_(.+)$/))) return `Customer ${pretty(m[1])}`;
  return pretty(name);
}

const COLOURS = {
  black: "#1d1d1f", white: "#fafafa", grey: "#9a9a9a", gray: "#9a9a9a", beige: "#d8c7a6", blue: "#2f5fb3", navy: "#1f2c52",
  red: "#c0392b", pink: "#e8a0b4", green: "#3f8f5b", yellow: "#e8c547", orange: "#e08a2c", brown: "#7b5333",
  purple: "#7b4fa6", lilac: "#b9a2d8", turquoise: "#3bb0b0", khaki: "#8a8a5c", gold: "#c9a445", silver: "#c0c0c0",
  transparent: "#f0f0f0", off: "#f3efe6", greenish: "#8fb07e", bronze: "#9c6b3a",
};

function swatch(colour) {
  if (!colour) return null;
  const words = colour.toLowerCase().split(/[\s/-]+/);
  const hit = words.reverse().find((w) => COLOURS[w]);
  return hit ? el("span", { class: "swatch", style: `background:${COLOURS[hit]}` }) : null;
}

// ------------------------------------------------------------------ product rendering

const HANGER_SVG = '<svg viewBox="0 0 48 48" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round"><path d="M24 14a4 4 0 1 1 4-4"/><path d="M24 14v4L6 32a3 3 0 0 0 2 5h32a3 3 0 0 0 2-5L24 18"/></svg>';

function placeholder(item) {
  const box = el("div", { class: "placeholder", "data-placeholder": "" });
  box.innerHTML = HANGER_SVG; // static markup, no data
  box.append(el("span", { text: "No photo" }), el("span", { text: item && item.product_type ? item.product_type : "" }));
  return box;
}

function photo(item, extra = []) {
  const box = el("div", { class: "photo", title: "show similar items", onclick: () => openSimilar(item.item_id) }, extra);
  if (item.image_url) {
    const img = el("img", { class: "card-img", src: item.image_url, alt: item.name, decoding: "async" });
    img.addEventListener("error", () => img.replaceWith(placeholder(item)));
    box.prepend(img);
  } else {
    box.prepend(placeholder(item));
  }
  return box;
}

function facts(item) {
  return el("div", { class: "facts" },
    item.product_type ? el("span", { text: item.product_type }) : null,
    item.colour ? el("span", {}, swatch(item.colour), item.colour) : null,
    item.price !== null && item.price !== undefined ? el("span", { class: "price", text: `price ${fmt(item.price, 3)}` }) : null);
}

function meter(label, value) {
  const width = value === null || value === undefined ? 0 : Math.max(0, Math.min(1, value)) * 100;
  return el("div", { class: "meter" }, el("span", { text: label }),
    el("div", { class: "track" }, el("div", { class: "fill", style: `width:${width}%` })),
    el("span", { class: "val", text: fmt(value) }));
}

function reasonsBlock(reasons, visitor) {
  const sources = Object.entries(reasons.sources).sort((a, b) => a[1] - b[1]);
  const maxAbs = Math.max(0.0001, ...reasons.contributions.map((c) => Math.abs(c.value)));
  return el("div", { class: "why reasons" },
    el("div", { class: "why-title", text: "Why" }),
    el("div", { class: "chips" }, sources.length
      ? sources.map(([s, r]) => el("span", { class: `chip src-${s}`, title: `rank ${r + 1} in the ${s} source`, text: `${SOURCE_NAMES[s] || s} #${r + 1}` }))
      : el("span", { class: "muted", text: "no source recorded" })),
    meter("image sim.", reasons.image_similarity),
    meter("text sim.", reasons.text_similarity),
    reasons.contributions.slice(0, 4).map((c) => el("div", { class: "contrib", title: `${c.feature}: ${c.value >= 0 ? "+" : ""}${c.value.toFixed(3)}` },
      el("span", { class: "fname", text: featureName(c.feature, visitor) }),
      el("div", { class: "bar" }, el("span", { class: c.value >= 0 ? "pos" : "neg", style: `width:${(Math.abs(c.value) / maxAbs) * 50}%` })))));
}

function recCard(entry, index, visitor = false) {
  const item = entry.item || { item_id: entry.item_id, name: entry.item_id };
  return el("article", { class: "card rec-card", "data-item-id": entry.item_id },
    photo(item, [el("span", { class: "rank", text: `#${index + 1}` }), el("span", { class: "score", title: "final reranker score", text: `score ${fmt(entry.score)}` })]),
    el("div", { class: "card-body" },
      el("div", { class: "name", text: item.name }), facts(item),
      entry.reasons ? reasonsBlock(entry.reasons, visitor) : null,
      el("div", { class: "card-actions" }, el("button", { class: "link-btn similar-btn", type: "button", onclick: () => openSimilar(item.item_id), text: "Similar items →" }))));
}

function scoredCard(entry, cls) {
  const item = entry.item || { item_id: entry.item_id, name: entry.item_id };
  return el("article", { class: `card ${cls}`, "data-item-id": entry.item_id },
    photo(item, [el("span", { class: "score", title: "similarity", text: fmt(entry.score, 3) })]),
    el("div", { class: "card-body" }, el("div", { class: "name", text: item.name }), facts(item)));
}

function miniCard(item) {
  return el("div", { class: "mini history-item", "data-item-id": item.item_id, title: item.name },
    photo(item), el("p", { text: item.name }));
}

function skeletons(container, n) {
  container.replaceChildren(...Array.from({ length: n }, () => el("div", { class: "skeleton", "aria-busy": "true" },
    el("div", { class: "photo" }), el("div", { class: "line" }), el("div", { class: "line short" }))));
}

function emptyState(container, message) {
  container.replaceChildren(el("div", { class: "empty", style: "grid-column: 1 / -1" },
    el("div", { class: "empty-icon", text: "∅" }), el("p", { text: message })));
}

// ------------------------------------------------------------------ customer mode

async function loadSamples() {
  const box = $("#sample-users");
  try {
    const data = await api("/v1/users/sample?n=6");
    if (!data.users.length) { box.replaceChildren(el("div", { class: "muted", text: "No sample customers in this bundle: paste an id above." })); return; }
    box.replaceChildren(...data.users.map((u) => el("button", { class: "sample-user", type: "button", "data-user-id": u.user_id, onclick: () => showCustomer(u.user_id) },
      el("div", { class: "sample-thumbs" }, u.recent_items.slice(0, 3).map((i) => i.image_url
        ? el("img", { src: i.image_url, alt: "" }) : el("span", { class: "mini-ph" }))),
      el("div", { class: "sample-meta" }, el("b", { text: `${u.user_id.slice(0, 10)}…` }), el("span", { text: `${u.n_purchases} purchases` })))));
  } catch (err) {
    box.replaceChildren(el("div", { class: "muted", text: `Could not load sample customers: ${err.message}` }));
  }
}

async function showCustomer(userId) {
  userId = userId.trim();
  if (!userId) { showError("Type a customer id or pick a sample customer."); return; }
  showError("");
  state.userId = userId;
  $("#customer-id").value = userId;
  document.querySelectorAll(".sample-user").forEach((b) => b.classList.toggle("active", b.dataset.userId === userId));
  $("#customer-result").hidden = false;
  skeletons($("#history"), 6);
  skeletons($("#recs"), 8);
  $("#customer-caption").textContent = "";
  try {
    const [user, recs] = await Promise.all([
      api(`/v1/users/${encodeURIComponent(userId)}?n_recent=12`),
      postJSON("/v1/recommendations", { user_id: userId, k: 12, n_candidates: 200, exclude_seen: $("#exclude-seen").checked }),
    ]);
    if (state.userId !== userId) return; // a newer choice won
    $("#customer-caption").textContent = `${user.n_purchases} purchases · customer ${userId.slice(0, 16)}…`;
    if (user.recent_items.length) $("#history").replaceChildren(...user.recent_items.map(miniCard));
    else emptyState($("#history"), "No purchases recorded for this customer.");
    if (recs.items.length) $("#recs").replaceChildren(...recs.items.map((e, i) => recCard(e, i)));
    else emptyState($("#recs"), "No recommendations for this customer.");
  } catch (err) {
    $("#history").replaceChildren();
    emptyState($("#recs"), "Nothing to show.");
    showError(err.message.includes("unknown customer") ? `No customer with id “${userId}”. Pick a sample customer instead.` : err.message);
  }
}

// ------------------------------------------------------------------ visitor mode

function weights() {
  const image = Number($("#weight-slider").value) / 100;
  return { text_weight: Number((1 - image).toFixed(2)), image_weight: Number(image.toFixed(2)) };
}

function updateWeightLabel() {
  const w = weights();
  $("#weight-label").textContent = `${Math.round(w.text_weight * 100)}% · ${Math.round(w.image_weight * 100)}%`;
}

function readAsDataURL(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(new Error("Could not read the photo."));
    reader.readAsDataURL(file);
  });
}

async function onImageChosen() {
  const file = $("#pref-image").files[0];
  state.image = null;
  $("#pref-preview").hidden = true;
  $("#pref-clear").hidden = true;
  if (!file) return;
  if (file.size > 5 * 1024 * 1024) { showError("That photo is larger than 5 MiB; please choose a smaller one."); $("#pref-image").value = ""; return; }
  state.image = { file, dataUrl: await readAsDataURL(file) };
  $("#pref-preview").src = state.image.dataUrl;
  $("#pref-preview").hidden = false;
  $("#pref-clear").hidden = false;
}

async function runVisitor(event) {
  event.preventDefault();
  const text = $("#pref-text").value.trim();
  if (!text && !state.image) { showError("Type what you are looking for, or add a photo."); return; }
  showError("");
  const w = weights();
  const button = $("#visitor-go");
  button.disabled = true;
  $("#visitor-hint").hidden = true;
  $("#visitor-result").hidden = false;
  skeletons($("#visitor-recs"), 8);
  skeletons($("#search-results"), 8);
  const form = new FormData();
  if (text) form.append("text", text);
  if (state.image) form.append("image", state.image.file);
  form.append("text_weight", w.text_weight);
  form.append("image_weight", w.image_weight);
  form.append("k", "12");
  const payload = { k: 12, n_candidates: 200, ...w };
  if (text) payload.text = text;
  if (state.image) payload.image_base64 = state.image.dataUrl;
  const [recs, found] = await Promise.allSettled([postJSON("/v1/recommendations", payload), api("/v1/search", { method: "POST", body: form })]);
  button.disabled = false;
  const problems = [];
  if (recs.status === "fulfilled") {
    if (recs.value.items.length) $("#visitor-recs").replaceChildren(...recs.value.items.map((e, i) => recCard(e, i, true)));
    else emptyState($("#visitor-recs"), "No recommendations for this description.");
  } else { emptyState($("#visitor-recs"), "No recommendations."); problems.push(recs.reason.message); }
  if (found.status === "fulfilled") {
    if (found.value.items.length) $("#search-results").replaceChildren(...found.value.items.map((e) => scoredCard(e, "search-card")));
    else emptyState($("#search-results"), "Nothing matched. Try other words.");
  } else { emptyState($("#search-results"), "No search results."); problems.push(found.reason.message); }
  showError([...new Set(problems)].join(" · "));
}

// ------------------------------------------------------------------ similar items drawer

async function openSimilar(itemId) {
  const panel = $("#similar-panel");
  panel.hidden = false;
  panel.setAttribute("aria-hidden", "false");
  $("#similar-focus").replaceChildren(el("div", { class: "skeleton" }, el("div", { class: "photo" })), el("div", {}, el("div", { class: "line" })));
  skeletons($("#similar-items"), 8);
  try {
    const [item, similar] = await Promise.all([api(`/v1/items/${encodeURIComponent(itemId)}`), api(`/v1/items/${encodeURIComponent(itemId)}/similar?k=12`)]);
    const a = item.attributes || {};
    $("#similar-focus").replaceChildren(photo(item), el("div", {},
      el("div", { class: "name", text: item.name }), facts(item),
      el("p", { class: "desc", text: [a.department_name, a.section_name].filter(Boolean).join(" · ") }),
      a.detail_desc ? el("p", { class: "desc", text: a.detail_desc }) : null,
      el("p", { class: "muted", text: `item ${item.item_id}` })));
    if (similar.items.length) $("#similar-items").replaceChildren(...similar.items.map((e) => scoredCard(e, "sim-card")));
    else emptyState($("#similar-items"), "No similar items found.");
  } catch (err) {
    $("#similar-focus").replaceChildren();
    emptyState($("#similar-items"), `Could not load similar items: ${err.message}`);
  }
}

function closeSimilar() {
  const panel = $("#similar-panel");
  panel.hidden = true;
  panel.setAttribute("aria-hidden", "true");
}

// ------------------------------------------------------------------ wiring

function setMode(mode) {
  state.mode = mode;
  document.querySelectorAll(".tab").forEach((t) => { const on = t.dataset.mode === mode; t.classList.toggle("active", on); t.setAttribute("aria-selected", on); });
  $("#customer-mode").hidden = mode !== "customer";
  $("#visitor-mode").hidden = mode !== "visitor";
  showError("");
}

async function loadVersion() {
  try {
    const ready = await api("/ready");
    $("#model-version").textContent = `model ${ready.model_version}`;
  } catch (err) {
    $("#model-version").textContent = "model not loaded";
  }
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll(".tab").forEach((t) => t.addEventListener("click", () => setMode(t.dataset.mode)));
  $("#customer-form").addEventListener("submit", (e) => { e.preventDefault(); showCustomer($("#customer-id").value); });
  $("#visitor-form").addEventListener("submit", runVisitor);
  $("#pref-image").addEventListener("change", () => onImageChosen().catch((err) => showError(err.message)));
  $("#pref-clear").addEventListener("click", () => { $("#pref-image").value = ""; onImageChosen(); });
  $("#weight-slider").addEventListener("input", updateWeightLabel);
  $("#exclude-seen").addEventListener("change", () => { if (state.userId) showCustomer(state.userId); });
  document.querySelectorAll(".example").forEach((b) => b.addEventListener("click", () => { $("#pref-text").value = b.textContent; $("#pref-text").focus(); }));
  document.querySelectorAll("[data-close]").forEach((n) => n.addEventListener("click", closeSimilar));
  document.addEventListener("keydown", (e) => { if (e.key === "Escape") closeSimilar(); });
  updateWeightLabel();
  loadVersion();
  loadSamples();
});
