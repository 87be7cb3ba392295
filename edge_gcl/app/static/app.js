"use strict";
const $ = (selector) => document.querySelector(selector);
const LABELS = {"photo": "photo", "note": "note", "photo+note": "photo + note"};
const POLL_MS = 10000;  // how often the page asks whether the folder was synced (the server watches it)
// the query photo is an upload (photo: File) or an indexed photo (like: {id, name}), never both
const state = {photo: null, photoUrl: null, like: null, attach: null, searched: false, lastSync: null};

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  node.append(...children.filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

async function api(url, options) {
  const response = await fetch(url, options);
  let body = null;
  try { body = await response.json(); } catch (_) { /* not JSON */ }
  if (!response.ok) throw new Error((body && body.error) || `${response.status} ${response.statusText}`);
  return body;
}

function setStatus(node, text, isError, ...extra) {
  node.replaceChildren(text, ...extra);
  node.classList.toggle("error", Boolean(isError));
}

function shownDate(taken) {  // "2023-07-04T18:30:00" -> "2023-07-04 18:30" (local time, as taken)
  return taken ? taken.slice(0, 16).replace("T", " ") : "";
}

function dayAfter(day) {  // the "To" date is inclusive; the API's before= is not
  const next = new Date(day + "T00:00:00Z");
  next.setUTCDate(next.getUTCDate() + 1);
  return next.toISOString().slice(0, 10);
}

async function loadStats() {
  try {
    const s = await api("/api/stats");
    $("#stats").textContent =
      `${s.photos + s.photo_notes} photos · ${s.notes + s.photo_notes} notes · model ${s.model_name}`;
    if (s.default_min_score !== null && s.default_min_score !== undefined) {
      $("#min-score").placeholder = s.default_min_score.toFixed(2);
    }
    $("#sync").hidden = !s.photo_folder;
    return s;
  } catch (error) { $("#stats").textContent = error.message; return null; }
}

function filterParams() {
  const params = new URLSearchParams();
  if ($("#from").value) params.set("after", $("#from").value);
  if ($("#to").value) params.set("before", dayAfter($("#to").value));
  return params;
}

function remember() {  // the page's own URL: reload or share it to see the same view
  const shown = new URLSearchParams();
  const q = $("#q").value.trim();
  if (q) shown.set("q", q);
  if (state.like) shown.set("like", state.like.id);
  if ($("#modality").value !== "all") shown.set("modality", $("#modality").value);
  if ($("#from").value) shown.set("from", $("#from").value);
  if ($("#to").value) shown.set("to", $("#to").value);
  if ($("#sort").value !== "score") shown.set("sort", $("#sort").value);
  if ($("#min-score").value !== "") shown.set("min_score", $("#min-score").value);
  history.replaceState(null, "", shown.toString() ? "?" + shown : location.pathname);
}

async function search(event) {
  if (event) event.preventDefault();
  const q = $("#q").value.trim();
  const modality = $("#modality").value;
  if (!q && !state.photo && !state.like) {
    if ($("#from").value || $("#to").value) { remember(); gallery(); return; }  // browsing by date
    setStatus($("#status"), "Type a few words, add a photo, or both.", true);
    return;
  }
  remember();
  const params = filterParams();
  if (q) params.set("q", q);
  if (state.like) params.set("like", state.like.id);
  params.set("modality", modality);
  if ($("#sort").value !== "score") params.set("sort", $("#sort").value);
  if ($("#min-score").value !== "") params.set("min_score", $("#min-score").value);
  setStatus($("#status"), "Searching…");
  try {
    const data = state.photo
      ? await api("/api/search?" + params, {method: "POST", body: state.photo,
                  headers: {"Content-Type": state.photo.type || "application/octet-stream"}})
      : await api("/api/search?" + params);
    state.searched = true;
    render(data.hits);
    if (state.like && data.query.like_name) { state.like.name = data.query.like_name; showQueryPhoto(); }
    const what = [q && `“${q}”`, state.photo && "your photo", state.like && `photos like ${state.like.name}`]
      .filter(Boolean).join(" + ");
    $("#view-title").textContent = state.like && !q && !state.photo ? `Similar photos: ${state.like.name}` : "";
    const n = data.hits.length;
    const text = `${n} result${n === 1 ? "" : "s"} for ${what} · ${data.took_ms} ms`;
    if (data.hidden) {
      const weaker = `${data.hidden} weaker match${data.hidden === 1 ? "" : "es"} hidden (under ${data.min_score.toFixed(2)})`;
      setStatus($("#status"), `${text} · ${weaker}`, false,
        el("button", {type: "button", className: "link", id: "show-all", textContent: "Show all",
                      onclick: () => { $("#min-score").value = "-1"; search(); }}));
    } else {
      setStatus($("#status"), text);
    }
  } catch (error) {
    render([]);
    setStatus($("#status"), error.message, true);
  }
}

async function gallery() {  // before any search: the most recent photos (filtered by the dates, if any)
  state.searched = false;
  const params = filterParams();
  const modality = $("#modality").value;
  params.set("modality", modality === "all" ? "photo,photo+note" : modality);
  try {
    const data = await api("/api/items?" + params);
    $("#view-title").textContent = params.has("after") || params.has("before") ? "Photos taken then" : "Recent photos";
    render(data.items, "No photos yet: add some to the folder, then Sync.");
    const n = data.items.length;
    setStatus($("#status"), n
      ? `${n} newest, by date taken. Search by words, by a photo, or both. Everything runs on this machine.`
      : "Search by words, by a photo, or both. Everything runs on this machine.");
  } catch (error) { setStatus($("#status"), error.message, true); }
}

function refresh() { return state.searched ? search() : gallery(); }

function render(hits, empty) {
  const grid = $("#results");
  if (!hits.length) {
    grid.replaceChildren(el("p", {className: "empty", textContent: empty || "Nothing found."}));
    return;
  }
  grid.replaceChildren(...hits.map(card));
}

function card(hit) {
  const isPhoto = Boolean(hit.thumb);
  const visual = isPhoto
    ? el("img", {className: "thumb", src: hit.thumb, alt: hit.name, loading: "lazy"})
    : el("div", {className: "thumb note-thumb", textContent: hit.text});
  const badge = {"photo": "badge", "note": "badge note", "photo+note": "badge photo-note"}[hit.modality];
  const hasScore = typeof hit.cosine === "number";
  const ranked = hasScore && hit.score !== hit.cosine ? `; ranked by ${hit.score.toFixed(3)}, the cosine plus the model's cross-modal offset for another kind of item than the query` : "";
  return el("article", {className: "card", "data-id": hit.id, "data-modality": hit.modality},
    visual,
    el("div", {className: "body"},
      el("div", {className: "row"},
        el("span", {className: badge, textContent: LABELS[hit.modality] || hit.modality}),
        hasScore && el("span", {className: "score", title: `cosine similarity${ranked}`, textContent: hit.cosine.toFixed(3)})),
      isPhoto && el("div", {className: "name", title: hit.path, textContent: hit.name}),
      hit.taken && el("div", {className: "date", title: "taken (local time)", textContent: shownDate(hit.taken)}),
      isPhoto && hit.text && el("p", {className: "note-text", textContent: hit.text}),
      isPhoto && hit.ocr && el("p", {className: "ocr-text", title: "the words read in this photo" +
                                     (hit.matched ? " (they hold your search's words)" :
                                      hit.meaning ? " (they mean what you searched for)" : ""),
                                     textContent: hit.ocr}),
      el("div", {className: "actions"},
        isPhoto && el("button", {type: "button", className: "link", textContent: hit.text ? "Edit note" : "Add note",
                                 onclick: () => attachTo(hit)}),
        el("button", {type: "button", className: "link danger remove", textContent: "Remove",
                      title: "Remove from the index (the file is kept)",
                      onclick: (event) => removeItem(hit, event.currentTarget)}),
        isPhoto && el("button", {type: "button", className: "link", textContent: "Similar",
                                 title: "Similar photos", onclick: () => searchLike(hit)}))));
}

async function removeItem(hit, button) {
  if (!button.dataset.armed) {  // a second click confirms (no dialog)
    button.dataset.armed = "1";
    button.textContent = "Click again to remove";
    setTimeout(() => { delete button.dataset.armed; button.textContent = "Remove"; }, 4000);
    return;
  }
  try {
    await api("/api/items/" + encodeURIComponent(hit.id), {method: "DELETE"});
    const node = document.querySelector(`.card[data-id="${hit.id}"]`);
    if (node) node.remove();
    setStatus($("#status"), `Removed ${hit.name || "the note"} from the index (the file is kept).`);
    loadStats();
  } catch (error) { setStatus($("#status"), error.message, true); }
}

async function syncNow() {
  setStatus($("#status"), "Syncing the folder…");
  try {
    const done = await api("/api/sync", {method: "POST"});
    state.lastSync = done.at;
    const r = done.report;
    await refresh();
    setStatus($("#status"), `Synced: ${r.added} added, ${r.updated} updated, ${r.removed} removed, ` +
                            `${r.skipped} skipped.`);
    loadStats();
  } catch (error) { setStatus($("#status"), error.message, true); }
}

async function watch() {  // the server syncs the folder when it changes: show what it found
  const s = await loadStats();
  const at = s && s.last_sync && s.last_sync.at;
  if (at && at !== state.lastSync) {
    const first = state.lastSync === null;
    state.lastSync = at;
    if (!first && !state.searched) gallery();
  }
}

function setQueryPhoto(file, like) {
  if (state.photoUrl) URL.revokeObjectURL(state.photoUrl);
  state.photo = file;
  state.photoUrl = file ? URL.createObjectURL(file) : null;
  state.like = like;
  if (!file) $("#photo").value = "";
  showQueryPhoto();
}

function showQueryPhoto() {
  const src = state.photoUrl || (state.like && "/thumb/" + encodeURIComponent(state.like.id));
  $("#query-photo").hidden = !src;
  if (!src) return;
  $("#query-photo-img").src = src;
  $("#query-photo-name").textContent = state.photo ? (state.photo.name || "your photo") : `like ${state.like.name}`;
}

function searchLike(hit) {
  setQueryPhoto(null, {id: hit.id, name: hit.name});
  $("#q").value = "";
  search();
}

function attachTo(hit) {
  state.attach = hit;
  $("#attach-img").src = hit.thumb;
  $("#attach-name").textContent = hit.name;
  $("#attach").hidden = false;
  $("#attach-hint").textContent = "Saving replaces this photo’s note.";
  $("#note-text").value = hit.text || "";
  $("#note-panel").scrollIntoView({block: "nearest"});
  $("#note-text").focus();
}

function detach() {
  state.attach = null;
  $("#attach").hidden = true;
  $("#attach-hint").textContent = "A note on its own, or use “Add note” on a photo to attach it.";
}

async function saveNote(event) {
  event.preventDefault();
  const body = {text: $("#note-text").value};
  if (state.attach) body.photo = state.attach.id;
  try {
    const saved = await api("/api/note", {method: "POST", headers: {"Content-Type": "application/json"},
                                          body: JSON.stringify(body)});
    $("#note-text").value = "";
    detach();
    setStatus($("#note-status"), `Saved (${LABELS[saved.modality]}).`);
    loadStats();
    if (state.searched) search();
  } catch (error) { setStatus($("#note-status"), error.message, true); }
}

$("#search").addEventListener("submit", search);
$("#search").addEventListener("dragover", (event) => event.preventDefault());
$("#search").addEventListener("drop", (event) => {
  event.preventDefault();
  const file = event.dataTransfer.files[0];
  if (file) { setQueryPhoto(file, null); search(); }
});
$("#photo").addEventListener("change", () => {
  const file = $("#photo").files[0];
  if (file) { setQueryPhoto(file, null); search(); }
});
$("#query-photo-clear").addEventListener("click", () => setQueryPhoto(null, null));
$("#attach-clear").addEventListener("click", detach);
$("#note-form").addEventListener("submit", saveNote);
$("#sync").addEventListener("click", syncNow);
for (const id of ["#from", "#to", "#sort"]) $(id).addEventListener("change", () => search());

const initial = new URLSearchParams(location.search);
$("#q").value = initial.get("q") || "";
for (const [name, id] of [["modality", "#modality"], ["sort", "#sort"]]) {
  const wanted = initial.get(name);
  if (wanted && [...$(id).options].some((o) => o.value === wanted)) $(id).value = wanted;
}
for (const [name, id] of [["from", "#from"], ["to", "#to"], ["min_score", "#min-score"]]) {
  if (initial.get(name)) $(id).value = initial.get(name);
}
if (initial.get("like")) setQueryPhoto(null, {id: initial.get("like"), name: "this photo"});
watch();
setInterval(watch, POLL_MS);
if ($("#q").value.trim() || state.like) search();
else gallery();
