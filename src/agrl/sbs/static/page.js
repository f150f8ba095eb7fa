// The page: a rater's view (one item at a time) or the lead's (results, export, adjudication), chosen by
// the token of the link the person opened. Every value from the server is set with textContent (never
// innerHTML), so a title or a judge's reasoning that holds markup shows as characters.
"use strict";
const $ = (id) => document.getElementById(id);
const KEYS = { a: "left", b: "right", g: "both_good", x: "both_bad" };
const CHOICE_NAMES = { left: "A is better", right: "B is better", both_good: "Both good", both_bad: "Both bad" };
let study = null;
let item = null;
let label = null;
let busy = false;
let shownAt = 0;

async function call(method, url, body) {
  const response = await fetch(url, {
    method, headers: body ? { "Content-Type": "application/json" } : {}, body: body && JSON.stringify(body),
    credentials: "same-origin",
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const detail = typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail);
    throw new Error(`${response.status}: ${detail}`);
  }
  return data;
}

function text(el, value) { el.textContent = value == null ? "" : String(value); }

function el(tag, value, cls) {
  const node = document.createElement(tag);
  if (value != null) text(node, value);
  if (cls) node.className = cls;
  return node;
}

function show(view) {
  for (const id of ["login", "rate", "done", "lead"]) $(id).hidden = id !== view;
  $("who").hidden = view === "login";
}

function renderProgress(progress) {
  $("bar").max = Math.max(progress.total, 1);
  $("bar").value = progress.done;
  text($("count"), `${progress.done} / ${progress.total} done`);
}

function renderProduct(list, product) {
  list.replaceChildren();
  const add = (name, value) => {
    list.append(el("dt", name), el("dd", typeof value === "object" && value !== null ? JSON.stringify(value) : value));
  };
  const { title, attributes, ...rest } = product;
  if (title !== undefined) add("title", title);
  for (const [key, value] of Object.entries(rest)) add(key, value);
  for (const [key, value] of Object.entries(attributes || {})) add(key, value);
}

function scoreText(output) {
  // the scale said with the number: an expected label between the scheme's lowest and highest code
  return output.score == null ? "" : `(score ${output.score.toFixed(2)} on ${study.score_range})`;
}

function renderJudge(node, output) {
  text(node.querySelector(".label"), output.label_name);
  text(node.querySelector(".score"), scoreText(output));
  node.querySelector(".score").title = study.score;
  text(node.querySelector(".reasoning"), output.reasoning || "(no reasoning: this judge gives a label only)");
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
  renderProduct($("product"), item.product);
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
  shownAt = performance.now();
}

async function next() {
  try { render(await call("GET", "/api/next")); }
  catch (err) { text($("message"), err.message); }
}

async function answer(choice) {
  if (!item || busy) return;
  busy = true;
  const comment = $("comment").value.trim();
  const latency_ms = Math.round(performance.now() - shownAt);
  try {
    await call("POST", "/api/answer", { item_id: item.id, choice, label, comment: comment || null, latency_ms });
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
  try { render(await call("POST", "/api/undo", {})); }
  catch (err) { text($("message"), err.message); }
  finally { busy = false; }
}

function labelButtons() {
  const labels = $("labels");
  labels.querySelectorAll("button").forEach((b) => b.remove());
  for (const [code, name] of study.labels) {
    const button = document.createElement("button");
    button.dataset.code = code;
    button.replaceChildren(el("kbd", code), ` ${name}`);
    button.addEventListener("click", () => setLabel(code));
    labels.append(button);
  }
}

// ---- the lead: the items raters answered differently, each settled with one click

function renderCase(entry) {
  const box = el("article", null, "case");
  box.dataset.item = entry.id;
  const query = el("div", null, "query-line");
  query.append("Query: ", el("span", entry.query, "query"));
  const product = el("dl");
  renderProduct(product, entry.product);
  const judges = el("div", null, "judges");
  for (const [name, output] of [["A", entry.left], ["B", entry.right]]) {
    const judge = el("div", null, "judge");
    judge.append(el("h2", name), el("p", `${output.label_name} ${scoreText(output)}`, "verdict"),
                 el("pre", output.reasoning || "(no reasoning)", "reasoning"));
    judges.append(judge);
  }
  const table = el("table");
  const head = el("tr");
  for (const h of ["rater", "answer", "label", "comment"]) head.append(el("th", h));
  table.append(head);
  for (const a of entry.answers) {
    const row = el("tr");
    for (const v of [a.rater, CHOICE_NAMES[a.choice], a.label, a.comment]) row.append(el("td", v));
    table.append(row);
  }
  const status = el("p", entry.adjudication ? `Settled: ${CHOICE_NAMES[entry.adjudication.choice]}` +
    (entry.adjudication.label != null ? `, label ${entry.adjudication.label}` : "") : "Not settled yet.",
    entry.adjudication ? "settled" : "");
  const pick = el("select");
  pick.append(el("option", "label (optional)"));
  pick.firstChild.value = "";
  for (const [code, name] of study.labels) {
    const option = el("option", `${code} ${name}`);
    option.value = code;
    pick.append(option);
  }
  const note = el("input");
  note.placeholder = "note (optional)";
  note.maxLength = 2000;
  const buttons = el("div", null, "choices");
  for (const [choice, name] of Object.entries(CHOICE_NAMES)) {
    const button = el("button", name);
    button.dataset.settle = choice;
    button.addEventListener("click", async () => {
      try {
        await call("POST", "/api/adjudicate", { item_id: entry.id, choice,
          label: pick.value === "" ? null : Number(pick.value), comment: note.value.trim() || null });
        await lead();
      } catch (err) { text(status, err.message); }
    });
    buttons.append(button);
  }
  box.append(query, product, judges, table, status, pick, " ", note, buttons);
  return box;
}

async function lead() {
  show("lead");
  const cases = await call("GET", "/api/disagreements");
  text($("disagree-count"), cases.length);
  $("adjudicate").replaceChildren(...cases.map(renderCase));
}

async function start() {
  const hash = new URLSearchParams(location.hash.slice(1));
  if (hash.get("token")) {  // the personal link: the token becomes an HttpOnly cookie, then leaves the URL
    history.replaceState(null, "", location.pathname);
    try { await call("POST", "/api/login", { token: hash.get("token") }); }
    catch (err) { show("login"); text($("login-message"), err.message); return; }
  }
  let me;
  try { me = await call("GET", "/api/me"); } catch (err) { show("login"); return; }
  text($("rater-name"), me.name);
  study = await call("GET", "/api/study");
  if (me.role === "lead") { text(document.querySelector("h1"), "Side-by-side study: the lead's view"); await lead(); return; }
  labelButtons();
  await next();
}

document.addEventListener("DOMContentLoaded", () => {
  $("switch").addEventListener("click", async (event) => {
    event.preventDefault();
    await call("POST", "/api/logout", {}).catch(() => {});
    show("login");
  });
  for (const button of document.querySelectorAll("[data-choice]")) {
    button.addEventListener("click", () => answer(button.dataset.choice));
  }
  $("undo").addEventListener("click", undo);
  $("undo-done").addEventListener("click", undo);
  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (["TEXTAREA", "INPUT", "SELECT"].includes(event.target.tagName)) {
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
  start();
});
