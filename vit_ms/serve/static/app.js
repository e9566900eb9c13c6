// The page: send each dropped, pasted or chosen image to POST /v1/predict (with its attention rollout when the
// model can give one), show the top-k as bars; show the run's curves, plan and per-class table from GET /v1/run.
"use strict";

const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem("vit_ms_token") || "";
let model = null;

function headers() {
  return token ? { Authorization: "Bearer " + token } : {};
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...headers(), ...(options.headers || {}) } });
  if (response.status === 401) {
    $("token-box").hidden = false;
  }
  const body = (response.headers.get("Content-Type") || "").includes("json") ? await response.json() : {};
  if (!response.ok) {
    throw new Error(body.error || `${response.status} ${response.statusText}`);
  }
  return body;
}

function cell(row, text, numeric) {
  const td = document.createElement("td");
  td.textContent = text;
  if (numeric) td.className = "num";
  row.appendChild(td);
}

async function loadModel() {
  try {
    model = await api("/v1/model");
  } catch (err) {
    $("model-line").textContent = "cannot describe the model: " + err.message;
    return;
  }
  const a = model.architecture;
  const weights = model.weights ? `, ${model.weights} weights` : "";
  $("model-line").textContent = `${a.name}, ${a.image_size} px, ${model.num_classes} classes, from ` +
    `${model.source.spec} (${model.source.kind}${weights})`;
  const s = model.server;
  $("limits").textContent = `up to ${s.max_images} images a request, ${(s.max_body_bytes / 1048576).toFixed(0)} ` +
    `MiB in all; batches of up to ${s.batch_sizes[s.batch_sizes.length - 1]} within ${s.max_wait_ms} ms`;
  if (s.run_story) loadStory();
}

async function loadStory() {
  let story;
  try {
    story = await api("/v1/run");
  } catch (err) {
    return;
  }
  $("story").hidden = false;
  const last = story.epochs[story.epochs.length - 1];
  const parts = [`run ${story.run_dir}, checkpoint ${story.checkpoint}`];
  if (last) parts.push(`${story.epochs.length} epochs, last val top-1 ` +
    (last.val_top1 !== undefined ? (100 * last.val_top1).toFixed(1) + "%" : "n/a"));
  if (story.missing.length) parts.push("not there yet: " + story.missing.join("; "));
  $("story-note").textContent = parts.join(". ");
  if (story.pictures.includes("curves")) {
    await showPicture($("curves"), "/v1/run/curves.png");
    $("curves-fig").hidden = false;
  }
  const plan = $("plan");
  if (story.plan) {
    const a = story.plan.arch;
    const rows = [["model", `${a.name}: patch ${a.patch_size}, width ${a.embed_dim}, depth ${a.depth}, ` +
                   `${a.num_heads} heads`],
      ["device", `${story.plan.device_target} x${story.plan.world_size}, ${story.plan.mode} mode`],
      ["precision", `amp ${story.plan.amp_level}, loss scale ${story.plan.loss_scale}`],
      ["batch", `${story.plan.batch_size} per device, ${story.plan.global_batch_size} global`]];
    for (const note of story.plan.notes || []) rows.push(["auto", note]);
    for (const [key, value] of rows) {
      const row = plan.insertRow();
      cell(row, key);
      cell(row, value);
    }
  }
  const table = $("per-class");
  if (story.per_class) {
    const head = table.createTHead().insertRow();
    for (const name of ["class", "images", "top-1", "most confused with"]) {
      const th = document.createElement("th");
      th.textContent = name;
      head.appendChild(th);
    }
    for (const r of story.per_class) {
      const row = table.insertRow();
      cell(row, r.class);
      cell(row, r.images, true);
      cell(row, r.top1 === null ? "" : (100 * r.top1).toFixed(1) + "%", true);
      cell(row, r.most_confused_with);
    }
  }
}

async function showPicture(img, path) {
  // pictures behind the token are fetched with it, then shown from memory
  const response = await fetch(path, { headers: headers() });
  if (response.ok) img.src = URL.createObjectURL(await response.blob());
}

function showTopk(list, topk) {
  list.replaceChildren();
  for (const t of topk) {
    const li = document.createElement("li");
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = t.class;
    const bar = document.createElement("span");
    bar.className = "bar";
    const fill = document.createElement("span");
    fill.className = "fill";
    fill.style.display = "block";
    fill.style.width = (100 * t.prob).toFixed(1) + "%";
    bar.appendChild(fill);
    const prob = document.createElement("span");
    prob.className = "prob";
    prob.textContent = (100 * t.prob).toFixed(1) + "%";
    li.append(label, bar, prob);
    list.appendChild(li);
  }
}

async function predictOne(file) {
  const node = $("result-template").content.firstElementChild.cloneNode(true);
  node.querySelector(".input").src = URL.createObjectURL(file);
  node.querySelector(".name").textContent = file.name || "pasted image";
  node.querySelector(".timing").textContent = "waiting for the model…";
  $("results").prepend(node);
  const form = new FormData();
  form.append("image", file, file.name || "pasted.png");
  const started = performance.now();
  try {
    const wantMaps = model && model.attention;
    const body = await api(`/v1/predict?topk=5&attention=${wantMaps ? 1 : 0}`, { method: "POST", body: form });
    const r = body.results[0];
    showTopk(node.querySelector(".topk"), r.topk);
    const roundTrip = performance.now() - started;
    node.querySelector(".timing").textContent = `${roundTrip.toFixed(0)} ms for this image (server: decode ` +
      `${r.time_ms.decode.toFixed(1)} ms, model ${r.time_ms.model.toFixed(1)} ms in a batch of ` +
      `${r.batch.images}, whole request ${r.time_ms.request.toFixed(1)} ms)`;
    if (r.attention) {
      node.querySelector(".overlay").src = r.attention;
    } else {
      node.querySelector(".attention-fig").hidden = true;
      node.querySelector(".attention-note").textContent = "No attention map: " +
        (body.attention_note || (model && model.attention_note) || "this source cannot give one");
    }
    node.classList.add("done");
  } catch (err) {
    node.querySelector(".timing").textContent = "";
    node.querySelector(".attention-fig").hidden = true;
    node.querySelector(".error").textContent = err.message;
    node.classList.add("failed");
  }
}

function predictAll(files) {
  const images = Array.from(files);
  if (!images.length) return;
  $("status").textContent = `${images.length} image(s) sent`;
  return Promise.all(images.map(predictOne)).then(() => {
    $("status").textContent = "";
  });
}

const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  predictAll(e.dataTransfer.files);
});
document.addEventListener("paste", (e) => {
  const files = Array.from(e.clipboardData.items).filter((i) => i.kind === "file").map((i) => i.getAsFile());
  predictAll(files);
});
$("files").addEventListener("change", (e) => { predictAll(e.target.files); e.target.value = ""; });
$("token-save").addEventListener("click", () => {
  token = $("token").value.trim();
  sessionStorage.setItem("vit_ms_token", token);
  $("token-box").hidden = true;
  loadModel();
});
loadModel();
