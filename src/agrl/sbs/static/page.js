// The rater's page: every value from the server is set with textContent (never innerHTML), so a title or
// a judge's reasoning that holds markup shows as characters.
"use strict";
const $ = (id) => document.getElementById(id);
const KEYS = { a: "left", b: "right", g: "both_good", x: "both_bad" };
let rater = localStorage.getItem("agrl-sbs-rater") || "";
let item = null;
let label = null;
let busy = false;

async function call(method, url, body) {
  const response = await fetch(url, {
    method, headers: body ? { "Content-Type": "application/json" } : {}, body: body && JSON.stringify(body),
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const detail = typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail);
    throw new Error(`${response.status}: ${detail}`);
  }
  return data;
}

function text(el, value) { el.textContent = value == null ? "" : String(value); }

function show(view) {
  for (const id of ["login", "rate", "done"]) $(id).hidden = id !== view;
  $("who").hidden = view === "login";
}

function renderProgress(progress) {
  $("bar").max = Math.max(progress.total, 1);
  $("bar").value = progress.done;
  text($("count"), `${progress.done} / ${progress.total} done`);
}

function renderProduct(product) {
  const list = $("product");
  list.replaceChildren();
  const add = (name, value) => {
    const dt = document.createElement("dt"), dd = document.createElement("dd");
    text(dt, name);
    text(dd, typeof value === "object" && value !== null ? JSON.stringify(value) : value);
    list.append(dt, dd);
  };
  const { title, attributes, ...rest } = product;
  add("title", title);
  for (const [key, value] of Object.entries(rest)) add(key, value);
  for (const [key, value] of Object.entries(attributes || {})) add(key, value);
}

function renderJudge(el, output) {
  text(el.querySelector(".label"), output.label_name);
  text(el.querySelector(".score"), output.score == null ? "" : `(score ${output.score.toFixed(2)})`);
  text(el.querySelector(".reasoning"), output.reasoning || "(no reasoning: this judge gives a label only)");
}

function setLabel(code) {
  label = label === code ? null : code;
  for (const button of $("labels").querySelectorAll("button")) {
    button.classList.toggle("on", Number(button.dataset.code) === label);
  }
}

function render(data) {
  renderProgress(data.progress);
  item = data.item;
  if (!item) { show("done"); return; }
  show("rate");
  text($("query"), item.query);
  renderProduct(item.product);
  renderJudge($("left"), item.left);
  renderJudge($("right"), item.right);
  const previous = item.previous;  // after an undo: what this rater chose before
  label = null;
  setLabel(previous && previous.label != null ? previous.label : null);
  $("comment").value = previous && previous.comment ? previous.comment : "";
  for (const button of document.querySelectorAll("[data-choice]")) {
    button.classList.toggle("previous", !!previous && button.dataset.choice === previous.choice);
  }
  text($("message"), "");
}

async function next() {
  try { render(await call("GET", `/api/next?rater=${encodeURIComponent(rater)}`)); }
  catch (err) { text($("message"), err.message); }
}

async function answer(choice) {
  if (!item || busy) return;
  busy = true;
  const comment = $("comment").value.trim();
  try {
    await call("POST", "/api/answer", { rater, item_id: item.id, choice, label, comment: comment || null });
    await next();
  } catch (err) {
    // 409: answered meanwhile (this rater in another tab, or k raters already): move on, and say so
    if (err.message.startsWith("409")) await next();
    text($("message"), err.message);
  } finally { busy = false; }
}

async function undo() {
  if (busy) return;
  busy = true;
  try { render(await call("POST", "/api/undo", { rater })); }
  catch (err) { text($("message"), err.message); }
  finally { busy = false; }
}

async function start() {
  text($("rater-name"), rater);
  const study = await call("GET", "/api/study");
  const labels = $("labels");
  labels.querySelectorAll("button").forEach((b) => b.remove());
  for (const [code, name] of study.labels) {
    const button = document.createElement("button");
    button.dataset.code = code;
    const key = document.createElement("kbd");
    text(key, code);
    button.replaceChildren(key, ` ${name}`);
    button.addEventListener("click", () => setLabel(code));
    labels.append(button);
  }
  await next();
}

document.addEventListener("DOMContentLoaded", () => {
  $("login").addEventListener("submit", (event) => {
    event.preventDefault();
    rater = $("name").value.trim();
    if (!rater) return;
    localStorage.setItem("agrl-sbs-rater", rater);
    start();
  });
  $("switch").addEventListener("click", (event) => {
    event.preventDefault();
    localStorage.removeItem("agrl-sbs-rater");
    rater = "";
    show("login");
  });
  for (const button of document.querySelectorAll("[data-choice]")) {
    button.addEventListener("click", () => answer(button.dataset.choice));
  }
  $("undo").addEventListener("click", undo);
  $("undo-done").addEventListener("click", undo);
  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.target.tagName === "TEXTAREA" || event.target.tagName === "INPUT") {
      if (event.key === "Escape") event.target.blur();
      return;
    }
    if ($("rate").hidden && !(event.key === "u" && !$("done").hidden)) return;
    if (KEYS[event.key]) answer(KEYS[event.key]);
    else if (event.key === "u") undo();
    else if (event.key === "c") { event.preventDefault(); $("comment").focus(); }
    else if (/^[0-9]$/.test(event.key) && $("labels").querySelector(`[data-code="${event.key}"]`)) {
      setLabel(Number(event.key));
    }
  });
  if (rater) start(); else show("login");
});
