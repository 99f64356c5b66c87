// mccscan viewer: upload, follow the scan's Server-Sent Events, draw tiles as they arrive.
// No build step; the server does all scoring, this page only draws and re-colours.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  scan: null,        // meta of the scan shown: id, image, scan_shape, tile_size_px, n_rows, n_cols
  tiles: [],         // row-major, one per grid cell once its row has arrived
  rowsDone: 0,
  finished: false,
  source: null,      // the EventSource of the scan shown
  view: { s: 1, x: 0, y: 0 },
  info: null,
  clusters: [],      // every candidate cluster of the scan shown (score, outline, MCs), best first
};
// Timings (ms since page load) the browser tests and the benchmark read.
window.mccscanTimings = {};

// ---------- drawing ----------
function label(tile, threshold) {
  if (tile.probability === null) return "background";
  return tile.probability >= threshold ? "mcc" : "normal";
}

// The overlay holds solid tiles only, so its canvases have OVERLAY_PX pixels per tile side
// and CSS scales them onto the image: 64× fewer pixels to redraw and composite than full size.
// The tint is the server's (render.py, served as /api/info's `overlay`), so the page and the
// downloaded overlay look the same: normal tiles get the colour at `normal_strength` opacity on
// #overlay; an MCC tint is the colour on #overlay-tint, which CSS multiplies with the image.
const OVERLAY_PX = 16;
const OVERLAY_LAYERS = ["overlay", "overlay-tint"];

function drawTile(tile, opts) {
  const kind = label(tile, opts.threshold);
  const x = tile.col * OVERLAY_PX, y = tile.row * OVERLAY_PX;
  const [normal, tint] = OVERLAY_LAYERS.map((id) => $(id).getContext("2d"));
  normal.clearRect(x, y, OVERLAY_PX, OVERLAY_PX);
  tint.clearRect(x, y, OVERLAY_PX, OVERLAY_PX);
  if (kind === "normal") {
    normal.globalAlpha = opts.normalStrength;
    normal.fillStyle = opts.normalColor;
    normal.fillRect(x, y, OVERLAY_PX, OVERLAY_PX);
    normal.globalAlpha = 1;
  } else if (kind === "mcc" && opts.mccMode === "tint") {
    tint.fillStyle = opts.mccColor;
    tint.fillRect(x, y, OVERLAY_PX, OVERLAY_PX);
  }
}

function drawOptions() {
  return { threshold: parseFloat($("threshold").value), normalColor: $("normal-color").value,
           normalStrength: state.info.overlay.normal_strength,
           mccColor: $("mcc-color").value, mccMode: $("mcc-mode").value };
}

function redrawAll() {
  if (!state.scan) return;
  const opts = drawOptions();
  for (const id of OVERLAY_LAYERS) $(id).getContext("2d").clearRect(0, 0, $(id).width, $(id).height);
  for (const tile of state.tiles) if (tile) drawTile(tile, opts);
  drawClusters();
  updateCounters();
  updateDownloads();
}

// ---------- clusters: outlined, labelled, listed; the threshold acts on their score ----------
const SVG = "http://www.w3.org/2000/svg";

function findings() {
  const threshold = parseFloat($("threshold").value);
  return state.clusters.filter((c) => c.score >= threshold);
}

function svgNode(name, attrs, text) {
  const node = document.createElementNS(SVG, name);
  for (const k in attrs) node.setAttribute(k, attrs[k]);
  if (text) node.textContent = text;
  return node;
}

function clusterLabel(c) {
  return `#${c.id} ${c.score.toFixed(2)}` + (c.n_mcs ? ` · ${c.n_mcs} MCs` : "");
}

function drawClusters() {
  const svg = $("clusters"), list = $("findings");
  svg.replaceChildren();
  list.replaceChildren();
  const shown = findings();
  for (const c of shown) {
    const group = svgNode("g", { "data-id": c.id });
    group.append(svgNode("polygon", { points: c.outline.map((p) => p.join(",")).join(" ") }));
    for (const m of c.mcs) group.append(svgNode("circle", { cx: m.x, cy: m.y, r: 9, class: "mc" }));
    // a ring of at least 1 cm, as on the downloaded overlay, so a 2 mm cluster shows at any zoom
    const r = Math.max(144, ...c.outline.map((p) => Math.hypot(p[0] - c.x, p[1] - c.y) + 24));
    group.append(svgNode("circle", { cx: c.x, cy: c.y, r, class: "ring" }));
    group.append(svgNode("text", { x: c.x - r, y: c.y - r - 16 }, clusterLabel(c)));
    svg.append(group);
    const item = document.createElement("li");
    item.textContent = `${clusterLabel(c)} at (${(c.x * 0.07).toFixed(0)}, ${(c.y * 0.07).toFixed(0)}) mm`;
    item.onclick = () => zoomTo(c);
    list.append(item);
  }
  $("findings-count").textContent = `${shown.length} at score ≥ ${parseFloat($("threshold").value).toFixed(3)}`;
  $("findings-panel").hidden = !state.finished;
}

function zoomTo(c) {
  const xs = c.outline.map((p) => p[0]), ys = c.outline.map((p) => p[1]);
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const box = $("viewer").getBoundingClientRect();
  const s = Math.min(8, 0.5 * Math.min(box.width / Math.max(x1 - x0, 144), box.height / Math.max(y1 - y0, 144)));
  state.view = { s, x: box.width / 2 - (x0 + x1) / 2 * s, y: box.height / 2 - (y0 + y1) / 2 * s };
  applyView();
  for (const p of $("clusters").querySelectorAll("polygon")) p.classList.remove("selected");
  const chosen = $("clusters").querySelector(`g[data-id="${c.id}"] polygon`);
  if (chosen) chosen.classList.add("selected");
}

function updateCounters() {
  const threshold = parseFloat($("threshold").value);
  const counts = { mcc: 0, normal: 0, background: 0 };
  for (const tile of state.tiles) if (tile) counts[label(tile, threshold)] += 1;
  for (const k in counts) $("count-" + k).textContent = counts[k];
  if (state.scan) $("progress").value = state.rowsDone / state.scan.n_rows;
}

// ---------- view: zoom and pan ----------
function applyView() {
  const v = state.view;
  $("stage").style.transform = `translate(${v.x}px, ${v.y}px) scale(${v.s})`;
}

function fit() {
  if (!state.scan) return;
  const [rows, cols] = state.scan.scan_shape;
  const box = $("viewer").getBoundingClientRect();
  const s = Math.min(box.width / cols, box.height / rows);
  state.view = { s, x: (box.width - cols * s) / 2, y: (box.height - rows * s) / 2 };
  applyView();
}

function toImage(event) {
  const box = $("viewer").getBoundingClientRect();
  const v = state.view;
  return [(event.clientX - box.left - v.x) / v.s, (event.clientY - box.top - v.y) / v.s];
}

$("viewer").addEventListener("wheel", (event) => {
  event.preventDefault();
  const box = $("viewer").getBoundingClientRect();
  const v = state.view;
  const factor = Math.exp(-event.deltaY * 0.0015);
  const s = Math.min(8, Math.max(0.02, v.s * factor));
  const px = event.clientX - box.left, py = event.clientY - box.top;
  state.view = { s, x: px - (px - v.x) * s / v.s, y: py - (py - v.y) * s / v.s };
  applyView();
}, { passive: false });

let drag = null;
$("viewer").addEventListener("pointerdown", (event) => {
  drag = { x: event.clientX, y: event.clientY, vx: state.view.x, vy: state.view.y, moved: false };
  $("viewer").setPointerCapture(event.pointerId);
});
$("viewer").addEventListener("pointermove", (event) => {
  if (!drag) return;
  const dx = event.clientX - drag.x, dy = event.clientY - drag.y;
  if (Math.abs(dx) + Math.abs(dy) > 3) { drag.moved = true; $("viewer").classList.add("dragging"); }
  state.view.x = drag.vx + dx; state.view.y = drag.vy + dy;
  applyView();
});
$("viewer").addEventListener("pointerup", (event) => {
  const wasClick = drag && !drag.moved;
  drag = null;
  $("viewer").classList.remove("dragging");
  if (wasClick) selectTileAt(event);
});

// ---------- tile details ----------
function selectTileAt(event) {
  if (!state.scan) return;
  const [x, y] = toImage(event);
  const t = state.scan.tile_size_px;
  const row = Math.floor(y / t), col = Math.floor(x / t);
  if (row < 0 || col < 0 || row >= state.scan.n_rows || col >= state.scan.n_cols) return;
  showTile(state.tiles[row * state.scan.n_cols + col]);
}

function showTile(tile) {
  if (!tile) return;
  const t = state.scan.tile_size_px;
  const sel = $("selected");
  Object.assign(sel.style, { left: tile.x + "px", top: tile.y + "px", width: t + "px", height: t + "px" });
  sel.hidden = false;
  $("tile-panel").hidden = false;
  $("tile-name").textContent = `row ${tile.row}, column ${tile.col}`;
  const threshold = parseFloat($("threshold").value);
  $("tile-prob").textContent = tile.probability === null ? "—" : tile.probability.toFixed(3);
  $("tile-label").textContent = label(tile, threshold);
  const bars = $("f2-bars");
  bars.replaceChildren();
  if (tile.f2) {
    const max = Math.max(1e-6, ...tile.f2);
    tile.f2.forEach((value, i) => {
      const bar = document.createElement("div");
      bar.style.height = (100 * value / max) + "%";
      bar.title = `F2[${i}] = ${value.toFixed(4)}`;
      bars.appendChild(bar);
    });
  }
  const peak = $("peak");
  peak.hidden = !tile.peak;
  if (tile.peak) Object.assign(peak.style, { left: tile.peak[0] + "px", top: tile.peak[1] + "px" });
}

// ---------- a scan's events ----------
function resetView(meta) {
  const [rows, cols] = meta.scan_shape;
  state.scan = meta;
  state.tiles = new Array(meta.n_rows * meta.n_cols).fill(null);
  state.rowsDone = 0;
  state.finished = false;
  for (const id of OVERLAY_LAYERS) {
    const canvas = $(id);
    canvas.width = meta.n_cols * OVERLAY_PX; canvas.height = meta.n_rows * OVERLAY_PX;
    canvas.style.width = meta.n_cols * meta.tile_size_px + "px";
    canvas.style.height = meta.n_rows * meta.tile_size_px + "px";
  }
  $("stage").style.width = cols + "px"; $("stage").style.height = rows + "px";
  Object.assign($("clusters").style, { width: cols + "px", height: rows + "px" });
  $("clusters").setAttribute("viewBox", `0 0 ${cols} ${rows}`);
  state.clusters = [];
  $("clusters").replaceChildren();
  $("findings-panel").hidden = true;
  const timings = window.mccscanTimings;
  $("base").onload = () => { if (timings.image_loaded === undefined) timings.image_loaded = performance.now(); };
  $("base").src = `/api/scans/${meta.id}/image.jpg`;
  $("base").width = cols; $("base").height = rows;
  $("heatmap").hidden = true; $("heatmap").removeAttribute("src");
  $("show-heatmap").checked = false; $("show-heatmap").disabled = true;
  $("selected").hidden = true; $("peak").hidden = true; $("tile-panel").hidden = true;
  $("downloads").hidden = true;
  fit();
}

function openScan(id, timings) {
  if (state.source) state.source.close();
  window.mccscanTimings = timings || {};
  $("error").hidden = true;
  $("status").textContent = "Waiting for the scan to start…";
  for (const k of ["mcc", "normal", "background"]) $("count-" + k).textContent = 0;
  $("progress").value = 0;
  markActive(id);
  const source = new EventSource(`/api/scans/${id}/events`);
  state.source = source;
  source.addEventListener("meta", (e) => {
    const meta = JSON.parse(e.data);
    resetView(meta);
    $("status").textContent = `Scanning ${meta.image}…`;
  });
  source.addEventListener("row", (e) => {
    const { row, tiles } = JSON.parse(e.data);
    const opts = drawOptions();
    for (const tile of tiles) {
      state.tiles[row * state.scan.n_cols + tile.col] = tile;
      drawTile(tile, opts);
    }
    state.rowsDone = row + 1;
    if (timings && timings.first_tile === undefined && tiles.some((t) => t.probability !== null)) {
      timings.first_tile = performance.now();
    }
    updateCounters();
  });
  source.addEventListener("done", (e) => {
    source.close();
    const done = JSON.parse(e.data);
    state.finished = true;
    state.clusters = done.clusters || [];
    drawClusters();
    $("status").textContent = `${state.scan.image}: scanned in ${done.elapsed_s.toFixed(2)} s` +
      (done.warnings.length ? ` — ${done.warnings.join("; ")}` : "");
    $("show-heatmap").disabled = false;
    $("downloads").hidden = false;
    updateCounters();
    updateDownloads();
    updatePacs();
    if (timings) timings.done = performance.now();
    refreshHistory();
  });
  source.addEventListener("failed", (e) => {
    source.close();
    showError(JSON.parse(e.data).message);
    $("status").textContent = "Scan failed.";
    refreshHistory();
  });
  source.onerror = () => {
    if (source.readyState === EventSource.CLOSED) showError("Lost the connection to the server.");
  };
}

function updateDownloads() {
  if (!state.scan || !state.finished) return;
  const id = state.scan.id;
  // the tiles on the page are the paper's style, so the download draws them the same way
  const params = new URLSearchParams({ style: "paper", threshold: $("threshold").value,
                                       normal_color: $("normal-color").value });
  if ($("mcc-mode").value === "tint") params.set("mcc_color", $("mcc-color").value);
  $("dl-overlay").href = `/api/scans/${id}/overlay.png?${params}`;
  $("dl-json").href = `/api/scans/${id}/result.json`;
  $("dl-csv").href = `/api/scans/${id}/result.csv`;
}

// ---------- PACS ----------
// The server sends the scan's DICOM SR and parametric map into the image's study (STOW-RS).
function updatePacs() {
  $("pacs-row").hidden = !(state.info && state.info.pacs && state.scan && state.finished);
  $("pacs-status").textContent = "";
}

async function sendToPacs() {
  const id = state.scan.id;
  $("send-pacs").disabled = true;
  $("pacs-status").textContent = `sending to ${state.info.pacs}…`;
  try {
    const response = await fetch(`/api/scans/${id}/pacs`, { method: "POST" });
    const body = await response.json();
    $("pacs-status").textContent = response.ok
      ? `stored SR and map in study ${body.study_instance_uid}` + (body.image_sent ? " (with the image)" : "")
      : `not sent: ${body.detail}`;
  } catch (err) {
    $("pacs-status").textContent = `not sent: ${err}`;
  } finally {
    $("send-pacs").disabled = false;
  }
}

// ---------- upload ----------
function showError(message) {
  $("error").textContent = message;
  $("error").hidden = false;
}

async function upload(file) {
  const timings = { upload_start: performance.now() };
  window.mccscanTimings = timings;
  $("error").hidden = true;
  $("status").textContent = `Uploading ${file.name}…`;
  const form = new FormData();
  form.append("file", file, file.name);
  if ($("spacing").value) form.append("pixel_spacing_mm", $("spacing").value);
  let response;
  try {
    response = await fetch("/api/scans", { method: "POST", body: form });
  } catch (err) {
    showError(`Upload failed: ${err}`);
    return;
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const detail = Array.isArray(body.detail) ? body.detail.map((d) => d.msg).join("; ") : body.detail;
    showError(detail || `Upload failed (HTTP ${response.status})`);
    $("status").textContent = "Upload refused.";
    return;
  }
  timings.accepted = performance.now();
  refreshHistory();
  openScan(body.id, timings);
}

const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  if (e.dataTransfer.files.length) upload(e.dataTransfer.files[0]);
});
$("file-input").addEventListener("change", (e) => {
  if (e.target.files.length) upload(e.target.files[0]);
  e.target.value = "";
});

// ---------- history ----------
function markActive(id) {
  for (const li of $("history").children) li.classList.toggle("active", li.dataset.id === id);
}

async function refreshHistory() {
  const scans = await (await fetch("/api/scans")).json();
  const list = $("history");
  list.replaceChildren();
  for (const scan of scans) {
    const li = document.createElement("li");
    li.dataset.id = scan.id;
    const open = document.createElement("button");
    open.className = "open";
    const when = new Date(scan.created_at * 1000).toLocaleString();
    const what = scan.status === "done" ? `${scan.counts.mcc} MCC tile(s)` : scan.status;
    open.textContent = `${scan.filename} — ${what}`;
    open.title = when;
    open.onclick = () => openScan(scan.id);
    const del = document.createElement("button");
    del.textContent = "×";
    del.title = "Delete this scan";
    del.onclick = async () => {
      const r = await fetch(`/api/scans/${scan.id}`, { method: "DELETE" });
      if (!r.ok) showError((await r.json()).detail);
      refreshHistory();
    };
    li.append(open, del);
    list.appendChild(li);
  }
  if (state.scan) markActive(state.scan.id);
}

// ---------- controls ----------
$("threshold").addEventListener("input", () => {
  $("threshold-value").textContent = parseFloat($("threshold").value).toFixed(3);
  redrawAll();
});
for (const id of ["normal-color", "mcc-color", "mcc-mode"]) $(id).addEventListener("input", redrawAll);
$("show-original").addEventListener("change", () => {
  for (const id of [...OVERLAY_LAYERS, "clusters"]) {
    $(id).style.visibility = $("show-original").checked ? "hidden" : "visible";
  }
});
$("show-heatmap").addEventListener("change", () => {
  const img = $("heatmap");
  if (!$("show-heatmap").checked || !state.scan) { img.hidden = true; return; }
  const stride = state.info ? state.info.heatmap_stride_px : 16;
  const offset = state.scan.tile_size_px / 2 - stride / 2;
  img.onload = () => {
    Object.assign(img.style, { left: offset + "px", top: offset + "px",
                               width: img.naturalWidth * stride + "px", height: img.naturalHeight * stride + "px" });
    img.hidden = false;
  };
  img.onerror = () => showError("The heatmap could not be computed.");
  img.src = `/api/scans/${state.scan.id}/heatmap.png`;
});
$("fit").addEventListener("click", fit);
$("send-pacs").addEventListener("click", sendToPacs);
window.addEventListener("resize", fit);
document.addEventListener("keydown", (e) => {
  if (e.target.tagName === "INPUT") return;
  if (e.key === "o") $("show-original").click();
  if (e.key === "f") fit();
});

(async () => {
  try {
    state.info = await (await fetch("/api/info")).json();
    $("model-info").textContent = `model: ${state.info.model.name} — trained on ${state.info.model.trained_on}`;
    $("threshold").value = state.info.threshold;
    $("normal-color").value = state.info.overlay.normal_color;
    $("threshold-value").textContent = state.info.threshold.toFixed(3);
  } catch (err) {
    showError("Cannot reach the server.");
  }
  refreshHistory();
})();
