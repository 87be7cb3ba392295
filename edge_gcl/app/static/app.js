"use strict";
const $ = (selector) => document.querySelector(selector);
const LABELS = {"photo": "photo", "note": "note", "photo+note": "photo + note"};
// the query photo is an upload (photo: File) or an indexed photo (like: {id, name}), never both
const state = {photo: null, photoUrl: null, like: null, attach: null, searched: false};

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

function setStatus(node, text, isError) {
  node.textContent = text;
  node.classList.toggle("error", Boolean(isError));
}

async function loadStats() {
  try {
    const s = await api("/api/stats");
    $("#stats").textContent =
      `${s.photos + s.photo_notes} photos · ${s.notes + s.photo_notes} notes · model ${s.model_id}`;
  } catch (error) { $("#stats").textContent = error.message; }
}

async function search(event) {
  if (event) event.preventDefault();
  const q = $("#q").value.trim();
  const modality = $("#modality").value;
  if (!q && !state.photo && !state.like) {
    setStatus($("#status"), "Type a few words, add a photo, or both.", true);
    return;
  }
  const shown = new URLSearchParams();
  if (q) shown.set("q", q);
  if (state.like) shown.set("like", state.like.id);
  if (modality !== "all") shown.set("modality", modality);
  history.replaceState(null, "", shown.toString() ? "?" + shown : location.pathname);
  const params = new URLSearchParams(shown);
  params.set("modality", modality);
  setStatus($("#status"), "Searching…");
  try {
    const data = state.photo
      ? await api("/api/search?" + params, {method: "POST", body: state.photo,
                  headers: {"Content-Type": state.photo.type || "application/octet-stream"}})
      : await api("/api/search?" + params);
    state.searched = true;
    render(data.hits);
    const same = state.like && data.hits.find((hit) => hit.id === state.like.id);
    if (same) { state.like.name = same.name; showQueryPhoto(); }
    const what = [q && `“${q}”`, state.photo && "your photo", state.like && `photos like ${state.like.name}`]
      .filter(Boolean).join(" + ");
    const n = data.hits.length;
    setStatus($("#status"), `${n} result${n === 1 ? "" : "s"} for ${what} · ${data.took_ms} ms`);
  } catch (error) {
    render([]);
    setStatus($("#status"), error.message, true);
  }
}

function render(hits) {
  const grid = $("#results");
  if (!hits.length) { grid.replaceChildren(el("p", {className: "empty", textContent: "Nothing found."})); return; }
  grid.replaceChildren(...hits.map(card));
}

function card(hit) {
  const isPhoto = Boolean(hit.thumb);
  const visual = isPhoto
    ? el("img", {className: "thumb", src: hit.thumb, alt: hit.name, loading: "lazy"})
    : el("div", {className: "thumb note-thumb", textContent: hit.text});
  const badge = {"photo": "badge", "note": "badge note", "photo+note": "badge photo-note"}[hit.modality];
  return el("article", {className: "card", "data-id": hit.id, "data-modality": hit.modality},
    visual,
    el("div", {className: "body"},
      el("div", {className: "row"},
        el("span", {className: badge, textContent: LABELS[hit.modality] || hit.modality}),
        el("span", {className: "score", title: "cosine similarity", textContent: hit.score.toFixed(3)})),
      isPhoto && el("div", {className: "name", title: hit.path, textContent: hit.name}),
      isPhoto && hit.text && el("p", {className: "note-text", textContent: hit.text}),
      isPhoto && el("div", {className: "actions"},
        el("button", {type: "button", className: "link", textContent: hit.text ? "Edit note" : "Add note",
                      onclick: () => attachTo(hit)}),
        el("button", {type: "button", className: "link", textContent: "Similar",
                      onclick: () => searchLike(hit)}))));
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

const initial = new URLSearchParams(location.search);
$("#q").value = initial.get("q") || "";
const wanted = initial.get("modality");
if (wanted && [...$("#modality").options].some((o) => o.value === wanted)) $("#modality").value = wanted;
if (initial.get("like")) setQueryPhoto(null, {id: initial.get("like"), name: "this photo"});
loadStats();
if ($("#q").value.trim() || state.like) search();
else setStatus($("#status"), "Search by words, by a photo, or both. Everything runs on this machine.");
