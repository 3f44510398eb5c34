// snnconv demo page: upload or pick a model, read its pre-flight report, run a conversion job,
// watch it, and read the report.  Plain ES module, no build step, no framework, no outside
// requests.  Every user-supplied text goes into the DOM through textContent / createElement
// (never innerHTML), and charts are SVG drawn here.

const SVG_NS = "http://www.w3.org/2000/svg";
const KEY_STORAGE = "snnconv.apiKey";
const POLL_MS = 700;
const FINISHED = new Set(["succeeded", "failed", "cancelled"]);
// Options shown up front; every other JobCreate property goes under "More options".
const MAIN_OPTIONS = ["dataset", "methods", "timesteps", "eval_samples"];
const SKIP_OPTIONS = new Set(["model_id", "cq"]);
// What an empty nullable field means where it is not "the server chooses".
const EMPTY_MEANS = {
  target_accuracy: { help: "Empty: no choice of T.", placeholder: "off" },
  max_gap: { help: "Empty: no choice of T. Give this or a target accuracy, not both.", placeholder: "off" },
};
// Colour-blind-safe palette (Okabe & Ito), readable on light and dark backgrounds.
const PALETTE = ["#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#8a7f00"];
const LAYER_METRICS = [
  { key: "firing_rate", label: "firing rate", cls: "bar-rate" },
  { key: "saturated_fraction", label: "saturated", cls: "bar-saturated" },
  { key: "silent_fraction", label: "silent", cls: "bar-silent" },
];

const state = {
  apiKey: sessionStorage.getItem(KEY_STORAGE) || "",
  schemas: {},
  methods: [],
  datasets: [],
  models: [],
  currentModel: null,
  fields: new Map(), // option path ("timesteps", "cq.levels") -> field descriptor
  jobId: null,
  pollToken: 0,
  shown: null, // the report on screen, redrawn at a new width
};

// ---------------------------------------------------------------- DOM helpers

const $ = (selector, root = document) => root.querySelector(selector);

/** An HTML element; attrs are set as attributes (text: textContent), children appended. */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  setAttrs(node, attrs);
  node.append(...children.filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  setAttrs(node, attrs);
  node.append(...children.filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

function setAttrs(node, attrs) {
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "text") node.textContent = String(value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
}

function svgTitle(text) {
  return svg("title", { text });
}

function show(node, visible = true) {
  node.hidden = !visible;
}

// ---------------------------------------------------------------- formatting

/** Top-1 accuracy (a fraction) as the page prints it: percent with two decimals. */
function formatAccuracy(fraction) {
  return (100 * fraction).toFixed(2);
}

function formatCount(value) {
  return Math.round(value).toLocaleString("en-US");
}

function formatEnergy(microjoules) {
  if (microjoules === 0) return "0";
  if (Math.abs(microjoules) >= 100) return microjoules.toFixed(1);
  return microjoules.toPrecision(3);
}

function formatValue(value) {
  if (Array.isArray(value)) return value.join(", ");
  if (value === null || value === undefined) return "auto";
  return String(value);
}

function formatDate(text) {
  const date = new Date(text);
  return Number.isNaN(date.getTime()) ? String(text) : date.toLocaleString();
}

/** t = 1, 2, 4, …, T (T itself always included), as core.report.checkpoints. */
function checkpoints(steps) {
  const points = [];
  for (let t = 1; t < steps; t *= 2) points.push(t);
  points.push(steps);
  return points;
}

function methodColour(method) {
  const index = state.methods.indexOf(method);
  return PALETTE[(index < 0 ? state.methods.length : index) % PALETTE.length];
}

// ---------------------------------------------------------------- the API

class ApiError extends Error {
  constructor(status, problem) {
    super(`${problem.title}: ${problem.detail}`);
    this.status = status;
    this.problem = problem;
  }
}

function authHeaders() {
  return state.apiKey ? { Authorization: `Bearer ${state.apiKey}` } : {};
}

/** fetch on this origin; JSON in and out; a problem+json answer raises ApiError. */
async function api(path, { method = "GET", json, form } = {}) {
  const headers = { Accept: "application/json, application/problem+json", ...authHeaders() };
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form !== undefined) {
    body = form;
  }
  let response;
  try {
    response = await fetch(path, { method, headers, body, credentials: "same-origin" });
  } catch (error) {
    throw new ApiError(0, { title: "Server unreachable", status: 0,
      detail: `the request could not be sent (${error.message}); is the server running?` });
  }
  if (response.status === 204) return null;
  const type = response.headers.get("content-type") || "";
  let data = null;
  if (type.includes("json")) data = await response.json().catch(() => null);
  else data = await response.text().catch(() => "");
  if (!response.ok) throw new ApiError(response.status, asProblem(response, data));
  return data;
}

function asProblem(response, data) {
  const problem = data && typeof data === "object" && data.title
    ? { ...data }
    : { title: `HTTP ${response.status}`, status: response.status,
        detail: typeof data === "string" && data ? data.slice(0, 300) : response.statusText };
  const retry = response.headers.get("retry-after");
  if (retry) problem.retryAfter = Number(retry) || retry;
  return problem;
}

function problemOf(error) {
  if (error instanceof ApiError) return error.problem;
  return { title: "Unexpected error", detail: String(error && error.message || error) };
}

/** Show a problem document (title, detail, stage, unmapped field errors) in a container. */
function renderProblem(container, problem, extraLines = []) {
  container.replaceChildren();
  container.append(el("strong", { class: "problem-title", text: problem.title || "Error" }));
  if (problem.detail) container.append(el("p", { class: "problem-detail", text: problem.detail }));
  if (problem.stage) container.append(el("p", { class: "muted", text: `stage: ${problem.stage}` }));
  const lines = [...extraLines];
  if (problem.status === 401) {
    lines.push("This server needs an API key: enter it under “API key” at the top.");
    $("#api-key-box").open = true;
  }
  if (problem.retryAfter) lines.push(`Try again in ${problem.retryAfter} s.`);
  if (lines.length) container.append(el("ul", {}, ...lines.map((l) => el("li", { text: l }))));
  if (problem.code) container.append(el("p", { class: "problem-code muted", text: `code: ${problem.code}` }));
  container.dataset.code = problem.code || "";
  show(container);
}

function clearProblem(container) {
  container.replaceChildren();
  delete container.dataset.code;
  show(container, false);
}

function notify(error) {
  renderProblem($("#notice"), problemOf(error));
}

// ---------------------------------------------------------------- API key

function setupApiKey() {
  const input = $("#api-key");
  input.value = state.apiKey;
  $("#api-key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    state.apiKey = input.value.trim();
    if (state.apiKey) sessionStorage.setItem(KEY_STORAGE, state.apiKey);
    else sessionStorage.removeItem(KEY_STORAGE);
    clearProblem($("#notice"));
    refreshLists();
  });
  $("#api-key-clear").addEventListener("click", () => {
    state.apiKey = "";
    input.value = "";
    sessionStorage.removeItem(KEY_STORAGE);
    refreshLists();
  });
}

async function refreshLists() {
  await loadModels();
  await Promise.all([loadJobs(), loadExamples()]);
}

// ---------------------------------------------------------------- models

async function loadModels() {
  try {
    const page = await api("/v1/models?limit=100");
    state.models = page.data;
    clearProblem($("#notice"));
  } catch (error) {
    state.models = [];
    notify(error);
  }
  renderModels();
}

function renderModels() {
  const list = $("#models");
  list.replaceChildren();
  show($("#models-empty"), state.models.length === 0);
  for (const model of state.models) {
    const current = state.currentModel && state.currentModel.id === model.id;
    const verdict = model.preflight.convertible ? "convertible" : "not convertible";
    const use = el("button", { type: "button", text: current ? "Selected" : "Use" });
    use.addEventListener("click", () => selectModel(model));
    const remove = el("button", { type: "button", class: "secondary", text: "Delete" });
    remove.setAttribute("aria-label", `Delete model ${model.name}`);
    remove.addEventListener("click", () => deleteModel(model));
    list.append(el("li", { "data-model-id": model.id, "aria-current": current ? "true" : null },
      el("div", { class: "item-main" },
        el("span", { class: "item-name", text: model.name }),
        el("span", { class: "muted", text:
          `${model.format}${model.arch ? ` (${model.arch})` : ""} · input [${model.input_shape.join(", ")}]` +
          ` · ${verdict} · ${formatDate(model.created_at)}` })),
      el("div", { class: "buttons" }, use, remove)));
  }
}

async function deleteModel(model) {
  try {
    await api(`/v1/models/${encodeURIComponent(model.id)}`, { method: "DELETE" });
    if (state.currentModel && state.currentModel.id === model.id) selectModel(null);
  } catch (error) {
    notify(error);
  }
  await loadModels();
}

function selectModel(model) {
  state.currentModel = model;
  const label = $("#job-model");
  label.replaceChildren();
  if (model) {
    label.append("Model: ", el("strong", { class: "item-name", text: model.name }),
      ` (${model.format}, input [${model.input_shape.join(", ")}])`);
    pickDatasetFor(model);
  } else {
    label.textContent = "No model selected.";
  }
  $("#job-submit").disabled = !model;
  renderPreflight(model);
  renderModels();
}

function renderPreflight(model) {
  const box = $("#preflight");
  if (!model) return show(box, false);
  const report = model.preflight;
  box.dataset.modelId = model.id;
  box.dataset.convertible = String(report.convertible);
  $("#preflight-name").textContent = model.name;
  const summary = $("#preflight-summary");
  summary.replaceChildren(
    el("strong", { class: report.convertible ? "ok" : "bad",
      text: report.convertible ? "Convertible." : "Not convertible." }),
    ` ${report.format}, input [${report.input_shape.join(", ")}]` +
    (report.num_outputs ? `, ${report.num_outputs} outputs` : "") +
    `; ${report.spiking_layers} activation(s) become spiking neurons` +
    (report.cq_layers ? ` (${report.cq_layers} CQ)` : "") + ".");
  const counts = {};
  for (const node of report.nodes) counts[node.status] = (counts[node.status] || 0) + 1;
  $("#preflight-counts").replaceChildren(...["converted", "passed-through", "removed", "unsupported"]
    .filter((status) => counts[status])
    .map((status) => el("li", { class: `chip status-${status}`, "data-status": status,
      text: `${counts[status]} ${status.replace("-", " ")}` })));
  const problems = $("#preflight-problems");
  if (report.problems.length) {
    problems.replaceChildren(el("strong", { text: "Problems" }),
      el("ul", {}, ...report.problems.map((p) => el("li", { text: p }))));
    show(problems);
  } else {
    show(problems, false);
  }
  const body = $("#preflight-nodes tbody");
  body.replaceChildren(...report.nodes.map((node) => el("tr", { class: `status-${node.status}` },
    el("td", { text: node.name }), el("td", { text: node.op }),
    el("td", { text: node.status }), el("td", { text: node.detail }))));
  $("#preflight-nodes-box").open = report.nodes.some((n) => n.status === "unsupported");
  show(box);
}

// ---------------------------------------------------------------- upload

function setupUpload() {
  const form = $("#upload-form");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearFieldErrors(form);
    clearProblem($("#upload-error"));
    const files = [...$("#upload-file").files];
    if (files.length === 0) {
      setFieldError($("#err-upload-file"), $("#upload-file"), "Choose a model file first.");
      return;
    }
    const data = new FormData();
    for (const file of files) data.append("file", file, file.name);
    const arch = $("#upload-arch").value.trim();
    const name = $("#upload-name").value.trim();
    if (arch) data.append("arch", arch);
    if (name) data.append("name", name);
    const button = $("#upload-submit");
    const status = $("#upload-status");
    button.disabled = true;
    status.textContent = `Uploading and checking ${files.map((f) => f.name).join(", ")}…`;
    try {
      const model = await api("/v1/models", { method: "POST", form: data });
      status.textContent = `Stored “${model.name}”.`;
      form.reset();
      await loadModels();
      selectModel(state.models.find((m) => m.id === model.id) || model);
    } catch (error) {
      status.textContent = "";
      const problem = problemOf(error);
      const unmapped = mapFieldErrors(problem.errors || [], (path) => {
        const name = path[path.length - 1];
        const input = $(`#upload-${name}`);
        return input ? { input, error: $(`#err-upload-${name}`) } : null;
      });
      renderProblem($("#upload-error"), problem, unmapped);
    } finally {
      button.disabled = false;
    }
  });
}

// ---------------------------------------------------------------- examples

async function loadExamples() {
  const card = $("#examples-card");
  let page;
  try {
    page = await api("/v1/examples");
  } catch {
    show(card, false); // the server has no examples (404) or cannot list them now
    return;
  }
  const examples = (page && page.data) || [];
  const list = $("#examples");
  list.replaceChildren();
  for (const example of examples) {
    const button = el("button", { type: "button", text: "Use example" });
    button.disabled = !example.available;
    button.setAttribute("aria-label", `Use example ${example.title || example.name}`);
    button.addEventListener("click", () => importExample(example, button));
    list.append(el("li", { "data-example": example.name, "data-available": String(Boolean(example.available)),
      class: example.available ? "" : "unavailable" },
      el("div", { class: "item-main" },
        el("span", { class: "item-name", text: example.title || example.name }),
        el("span", { class: "muted", text: example.description || "" }),
        el("span", { class: "muted", text:
          `${example.format || ""}${example.arch ? ` (${example.arch})` : ""}` +
          (example.available ? "" : " · not built on this server") })),
      el("div", { class: "buttons" }, button)));
  }
  show(card, examples.length > 0);
}

async function importExample(example, button) {
  clearProblem($("#examples-error"));
  button.disabled = true;
  try {
    const model = await api(`/v1/examples/${encodeURIComponent(example.name)}/import`,
      { method: "POST" });
    await loadModels();
    selectModel(state.models.find((m) => m.id === model.id) || model);
  } catch (error) {
    renderProblem($("#examples-error"), problemOf(error));
  } finally {
    button.disabled = !example.available;
  }
}

// ---------------------------------------------------------------- datasets

async function loadDatasets() {
  try {
    const page = await api("/v1/datasets");
    state.datasets = page.data;
  } catch (error) {
    state.datasets = [];
    notify(error);
  }
}

function sameShape(a, b) {
  return Array.isArray(a) && Array.isArray(b) && a.length === b.length && a.every((v, i) => v === b[i]);
}

/** When the chosen dataset does not fit the model's input, choose the first one that does. */
function pickDatasetFor(model) {
  const field = state.fields.get("dataset");
  if (!field) return;
  const chosen = state.datasets.find((d) => d.name === field.input.value);
  if (chosen && (!chosen.input_shape || sameShape(chosen.input_shape, model.input_shape))) return;
  const fitting = state.datasets.find((d) => d.available && sameShape(d.input_shape, model.input_shape));
  if (fitting) field.input.value = fitting.name;
  describeDataset();
}

function describeDataset() {
  const field = state.fields.get("dataset");
  if (!field) return;
  const info = field.extra;
  const dataset = state.datasets.find((d) => d.name === field.input.value);
  info.replaceChildren();
  info.classList.remove("warn");
  if (!dataset) return;
  let text = dataset.description || "";
  if (dataset.input_shape) text += ` Input [${dataset.input_shape.join(", ")}]`;
  if (dataset.num_classes) text += `, ${dataset.num_classes} classes`;
  if (dataset.test_size) text += `, ${dataset.test_size} test images`;
  info.textContent = text.trim() + ".";
  const model = state.currentModel;
  if (model && dataset.input_shape && !sameShape(dataset.input_shape, model.input_shape)) {
    info.textContent += ` The selected model expects [${model.input_shape.join(", ")}].`;
    info.classList.add("warn");
  }
}

// ---------------------------------------------------------------- the job form (from OpenAPI)

async function loadSchema() {
  const openapi = await api("/openapi.json");
  state.schemas = openapi.components.schemas;
}

function resolve(schema) {
  if (schema && schema.$ref) return state.schemas[schema.$ref.split("/").pop()] || {};
  return schema || {};
}

/** A property's type information: its non-null schema and whether null is allowed. */
function describe(prop) {
  const resolved = resolve(prop);
  let base = resolved;
  let nullable = false;
  if (Array.isArray(resolved.anyOf)) {
    const kinds = resolved.anyOf.map(resolve);
    nullable = kinds.some((k) => k.type === "null");
    base = kinds.find((k) => k.type !== "null") || {};
  }
  return { base, nullable, default: prop.default, description: prop.description || resolved.description,
    title: prop.title || resolved.title };
}

function helpText(info, path) {
  const parts = [];
  if (info.description) parts.push(info.description.replace(/\.?$/, "."));
  if (info.default !== undefined && info.default !== null) parts.push(`Default: ${formatValue(info.default)}.`);
  else if (info.nullable) parts.push(EMPTY_MEANS[path] ? EMPTY_MEANS[path].help : "Empty: the server chooses.");
  return parts.join(" ");
}

function fieldIds(path) {
  const slug = path.replace(/\./g, "-");
  return { input: `opt-${slug}`, help: `help-${slug}`, error: `err-${slug}` };
}

function buildJobForm() {
  const job = state.schemas.JobCreate;
  if (!job) return;
  const props = job.properties;
  const mainBox = $("#job-fields");
  const moreBox = $("#job-fields-more");
  mainBox.replaceChildren();
  moreBox.replaceChildren();
  state.fields.clear();
  for (const name of MAIN_OPTIONS) if (props[name]) mainBox.append(buildField(name, props[name]));
  for (const [name, prop] of Object.entries(props)) {
    if (SKIP_OPTIONS.has(name) || MAIN_OPTIONS.includes(name)) continue;
    moreBox.append(buildField(name, prop));
  }
  const cqBox = $("#job-fields-cq");
  cqBox.replaceChildren();
  const cq = props.cq ? resolve(props.cq) : null;
  if (cq && cq.properties) {
    for (const [name, prop] of Object.entries(cq.properties)) cqBox.append(buildField(`cq.${name}`, prop));
  }
  show($("#job-cq"), Boolean(cq && cq.properties));
  describeDataset();
}

function buildField(path, prop) {
  const info = describe(prop);
  const ids = fieldIds(path);
  const error = el("p", { class: "field-error", id: ids.error, hidden: true });
  const help = el("p", { class: "help", id: ids.help, text: helpText(info, path) });
  if (path === "methods") return buildMethods(info, help, error);
  const wrapper = el("div", { class: "field", "data-field": path });
  const label = el("label", { for: ids.input, text: info.title || path });
  const described = `${ids.help} ${ids.error}`;
  let input;
  let kind;
  const base = info.base;
  if (path === "dataset") {
    kind = "string";
    input = el("select", { id: ids.input, name: path, "aria-describedby": `${described} ${ids.input}-info` });
    const names = new Set(state.datasets.map((d) => d.name));
    for (const dataset of state.datasets) {
      input.append(el("option", { value: dataset.name, disabled: !dataset.available,
        text: dataset.available ? dataset.name : `${dataset.name} (unavailable)` }));
    }
    if (!names.size) input.append(el("option", { value: info.default || "", text: info.default || "" }));
    const wanted = state.datasets.find((d) => d.name === info.default && d.available)
      || state.datasets.find((d) => d.available);
    if (wanted) input.value = wanted.name;
    input.addEventListener("change", describeDataset);
  } else if (Array.isArray(base.enum)) {
    kind = "enum";
    input = el("select", { id: ids.input, name: path, "aria-describedby": described });
    if (info.nullable) input.append(el("option", { value: "", text: "auto (server default)" }));
    for (const value of base.enum) input.append(el("option", { value, text: value }));
    input.value = info.default ?? "";
  } else if (base.type === "boolean" && info.nullable) {
    kind = "tristate";
    input = el("select", { id: ids.input, name: path, "aria-describedby": described },
      el("option", { value: "", text: "auto (server default)" }),
      el("option", { value: "true", text: "yes" }), el("option", { value: "false", text: "no" }));
    input.value = info.default === null || info.default === undefined ? "" : String(info.default);
  } else if (base.type === "boolean") {
    kind = "boolean";
    input = el("input", { id: ids.input, name: path, type: "checkbox", "aria-describedby": described });
    input.checked = Boolean(info.default);
  } else if (base.type === "integer" || base.type === "number") {
    kind = base.type;
    const min = base.minimum ?? base.exclusiveMinimum;
    const max = base.maximum ?? base.exclusiveMaximum;
    input = el("input", { id: ids.input, name: path, type: "number", inputmode: base.type === "integer" ? "numeric" : "decimal",
      step: base.type === "integer" ? "1" : "any", min, max,
      placeholder: info.nullable ? (EMPTY_MEANS[path] ? EMPTY_MEANS[path].placeholder : "auto") : null,
      "aria-describedby": described });
    input.value = info.default ?? "";
  } else if (base.type === "array") {
    kind = "list";
    input = el("input", { id: ids.input, name: path, type: "text", inputmode: "decimal",
      placeholder: info.nullable ? "auto, or e.g. 0.5, 0.5, 0.5" : "", "aria-describedby": described });
    input.value = Array.isArray(info.default) ? info.default.join(", ") : "";
  } else {
    kind = "string";
    input = el("input", { id: ids.input, name: path, type: "text", maxlength: base.maxLength,
      "aria-describedby": described });
    input.value = info.default ?? "";
  }
  const field = { path, kind, input, error, info };
  if (kind === "boolean") {
    wrapper.classList.add("check");
    wrapper.append(el("div", { class: "check-row" }, input, label), help, error);
  } else {
    wrapper.append(label, input, help);
    if (path === "dataset") {
      field.extra = el("p", { class: "help", id: `${ids.input}-info` });
      wrapper.append(field.extra);
    }
    wrapper.append(error);
  }
  state.fields.set(path, field);
  return wrapper;
}

function buildMethods(info, help, error) {
  const methods = (info.base.items && info.base.items.enum) || [];
  state.methods = methods;
  const defaults = Array.isArray(info.default) ? info.default : [methods.includes("robust-norm") ? "robust-norm" : methods[0]];
  const groups = [
    { title: "Classic conversion", members: methods.filter((m) => !m.startsWith("cq-")) },
    { title: "The paper's suite (Yan, Zhou & Wong)", members: methods.filter((m) => m.startsWith("cq-")) },
  ].filter((group) => group.members.length);
  const boxes = [];
  const fieldset = el("fieldset", { class: "field methods", "data-field": "methods",
    "aria-describedby": `${help.id} ${error.id}` },
  el("legend", { text: info.title || "Methods" }));
  const columns = el("div", { class: "method-groups" });
  for (const group of groups) {
    const inner = el("fieldset", { class: "method-group" }, el("legend", { text: group.title }));
    for (const method of group.members) {
      const id = `method-${method}`;
      const box = el("input", { type: "checkbox", id, name: "methods", value: method });
      box.checked = defaults.includes(method);
      boxes.push(box);
      inner.append(el("div", { class: "check-row" }, box, el("label", { for: id, text: method })));
    }
    columns.append(inner);
  }
  if (!info.description) help.textContent = "Pick one or more: each is a line in the chart, side by side.";
  fieldset.append(columns, help, error);
  state.fields.set("methods", { path: "methods", kind: "methods", input: boxes[0], boxes, error, info });
  return fieldset;
}

function readField(field) {
  const { kind, input } = field;
  if (kind === "methods") return field.boxes.filter((b) => b.checked).map((b) => b.value);
  if (kind === "boolean") return input.checked;
  const raw = input.value.trim();
  if (raw === "") return undefined;
  if (kind === "tristate") return raw === "true";
  if (kind === "integer" || kind === "number") {
    const number = Number(raw);
    return Number.isFinite(number) ? number : raw; // the server says what is wrong with it
  }
  if (kind === "list") return raw.split(/[\s,;]+/).filter(Boolean).map((v) => (Number.isFinite(Number(v)) ? Number(v) : v));
  return raw;
}

/** The POST /v1/jobs body: what the visitor set, options equal to their default left out. */
function jobBody() {
  const body = { model_id: state.currentModel.id };
  const cq = {};
  for (const [path, field] of state.fields) {
    const value = readField(field);
    if (value === undefined) continue;
    const always = path === "dataset" || path === "methods" || path === "timesteps";
    if (!always && JSON.stringify(value) === JSON.stringify(field.info.default)) continue;
    if (path.startsWith("cq.")) cq[path.slice(3)] = value;
    else body[path] = value;
  }
  if (Object.keys(cq).length) body.cq = cq;
  return body;
}

function setFieldError(errorNode, input, message) {
  errorNode.textContent = errorNode.hidden || !errorNode.textContent ? message : `${errorNode.textContent} ${message}`;
  show(errorNode);
  if (input) input.setAttribute("aria-invalid", "true");
  const details = errorNode.closest("details");
  if (details) details.open = true;
}

function clearFieldErrors(root) {
  for (const node of root.querySelectorAll(".field-error")) {
    node.textContent = "";
    show(node, false);
  }
  for (const node of root.querySelectorAll("[aria-invalid]")) node.removeAttribute("aria-invalid");
}

/** Put each 422 errors[] entry beside its field; returns the messages no field took. */
function mapFieldErrors(errors, find) {
  const unmapped = [];
  for (const entry of errors) {
    const loc = (entry.loc || []).map(String);
    const path = loc[0] === "body" ? loc.slice(1) : loc;
    const target = find(path);
    if (target && target.error) setFieldError(target.error, target.input, entry.msg);
    else unmapped.push(`${path.join(".") || "request"}: ${entry.msg}`);
  }
  return unmapped;
}

/** The job field a loc names: the longest prefix of it that is a field ("methods.0" → methods). */
function jobFieldAt(path) {
  for (let n = path.length; n > 0; n -= 1) {
    const field = state.fields.get(path.slice(0, n).join("."));
    if (field) return field;
  }
  return null;
}

const CODE_FIELDS = { "unknown-dataset": "dataset", "dataset-unavailable": "dataset", "dataset-not-found": "dataset" };

function setupJobForm() {
  const form = $("#job-form");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!state.currentModel) return;
    clearFieldErrors(form);
    clearProblem($("#job-error"));
    const button = $("#job-submit");
    button.disabled = true;
    try {
      const accepted = await api("/v1/jobs", { method: "POST", json: jobBody() });
      watchJob(accepted.id);
      loadJobs();
    } catch (error) {
      const problem = problemOf(error);
      const unmapped = mapFieldErrors(problem.errors || [], jobFieldAt);
      const field = state.fields.get(CODE_FIELDS[problem.code]);
      if (field) setFieldError(field.error, field.input, problem.detail);
      renderProblem($("#job-error"), problem, unmapped);
    } finally {
      button.disabled = !state.currentModel;
    }
  });
}

// ---------------------------------------------------------------- watching a job

function watchJob(jobId) {
  state.jobId = jobId;
  const token = ++state.pollToken;
  show($("#result"), false);
  clearProblem($("#job-failure"));
  $("#live-chart").replaceChildren();
  show($("#live-chart"));
  $("#job-status").textContent = "…";
  $("#job-status").dataset.status = "";
  $("#job-stage").textContent = "";
  $("#job-message").textContent = "";
  $("#job-progress").value = 0;
  $("#job-percent").textContent = "0 %";
  $("#job-cancel").disabled = false;
  $("#job-cancel").textContent = "Cancel job";
  const section = $("#progress");
  section.dataset.jobId = jobId;
  show(section);
  section.scrollIntoView({ block: "nearest" });
  poll(jobId, token, 0);
}

async function poll(jobId, token, failures) {
  if (token !== state.pollToken) return;
  let job;
  try {
    job = await api(`/v1/jobs/${encodeURIComponent(jobId)}`);
  } catch (error) {
    if (token !== state.pollToken) return;
    const problem = problemOf(error);
    if (problem.status === 404 || problem.status === 401) {
      renderProblem($("#job-failure"), problem);
      return;
    }
    renderProblem($("#job-failure"), problem, ["Still trying…"]);
    const wait = (Number(problem.retryAfter) || Math.min(2 ** failures, 10)) * 1000;
    setTimeout(() => poll(jobId, token, failures + 1), wait);
    return;
  }
  if (token !== state.pollToken) return;
  if (failures) clearProblem($("#job-failure"));
  renderProgress(job);
  if (!FINISHED.has(job.status)) {
    setTimeout(() => poll(jobId, token, 0), POLL_MS);
    return;
  }
  loadJobs();
  if (job.status === "succeeded") {
    show($("#live-chart"), false); // the result's chart takes over
    await showReport(job, token);
  }
  else if (job.status === "failed") {
    renderProblem($("#job-failure"), job.error || { title: "Job failed", detail: job.message || "" });
  } else {
    renderProblem($("#job-failure"), { title: "Job cancelled", detail: job.message || "the job was cancelled" });
  }
}

function renderProgress(job) {
  const status = $("#job-status");
  status.textContent = job.status;
  status.dataset.status = job.status;
  $("#job-stage").textContent = job.stage ? `stage: ${job.stage}` : "";
  $("#job-message").textContent = job.message || "";
  const fraction = Math.max(0, Math.min(1, job.progress || 0));
  $("#job-progress").value = fraction;
  $("#job-percent").textContent = `${Math.round(100 * fraction)} %`;
  const cancel = $("#job-cancel");
  cancel.disabled = FINISHED.has(job.status) || job.cancel_requested;
  cancel.textContent = job.cancel_requested && !FINISHED.has(job.status) ? "Cancel requested…" : "Cancel job";
  const partial = job.partial_top1 || {};
  const methods = Object.keys(partial);
  const longest = Math.max(0, ...methods.map((m) => partial[m].length));
  const steps = (job.options && job.options.timesteps) || Math.max(longest, 1);
  const chart = $("#live-chart");
  if (methods.length) {
    lineChart(chart, {
      label: "accuracy so far per time step",
      xMax: Math.max(steps, longest),
      yMax: 100,
      format: (v) => `${v.toFixed(2)} %`,
      yLabel: "top-1 (%)",
      series: methods.map((m) => ({ name: m, colour: methodColour(m), values: partial[m].map((a) => 100 * a) })),
    });
  }
}

function setupCancel() {
  $("#job-cancel").addEventListener("click", async () => {
    const jobId = state.jobId;
    if (!jobId) return;
    const button = $("#job-cancel");
    button.disabled = true;
    try {
      const job = await api(`/v1/jobs/${encodeURIComponent(jobId)}/cancel`, { method: "POST" });
      if (jobId === state.jobId) renderProgress(job);
    } catch (error) {
      renderProblem($("#job-failure"), problemOf(error));
    }
  });
}

// ---------------------------------------------------------------- the report

async function showReport(job, token) {
  let report;
  try {
    report = await api(`/v1/jobs/${encodeURIComponent(job.id)}/report`);
  } catch (error) {
    renderProblem($("#job-failure"), problemOf(error));
    return;
  }
  if (token !== state.pollToken) return;
  renderReport(job.id, report);
}

function renderReport(jobId, report) {
  state.shown = { jobId, report };
  const section = $("#result");
  section.dataset.jobId = jobId;
  show(section); // visible before drawing: the charts take their width from the page
  const ann = report.ann;
  const steps = Math.max(1, ...report.methods.map((m) => m.top1.length));
  $("#result-summary").textContent =
    `${report.dataset.name}: ${report.dataset.eval_samples} test samples, ` +
    `ANN top-1 ${formatAccuracy(ann.top1)} %, T = ${steps}, on ${report.device}` +
    (report.seconds ? `, ${report.seconds.toFixed(1)} s` : "") + ".";
  lineChart($("#result-chart"), {
    label: "top-1 accuracy per time step, one line per method, the ANN dashed",
    xMax: steps,
    yMax: 100,
    yLabel: "top-1 (%)",
    format: (v) => `${v.toFixed(2)} %`,
    series: report.methods.map((m) => ({ name: m.method, colour: methodColour(m.method),
      values: m.top1.map((a) => 100 * a) })),
    reference: { name: "ann", label: "ANN", value: 100 * ann.top1 },
    marks: report.latency_choice ? choiceMarks(report, report.latency_choice) : null,
  });
  renderChoice(report.latency_choice);
  renderAccuracyTable(report, steps);
  renderLatency(report);
  renderEnergy(report, steps);
  renderLayers(report);
  renderDownloads(jobId, report);
  show(section);
}

function cell(text, attrs = {}) {
  return el("td", { ...attrs, text });
}

const reached = (choice) => choice.t !== null && choice.t !== undefined;

/** The choice of T on the accuracy chart: the target's dotted line, a ring per method at its t. */
function choiceMarks(report, choice) {
  const target = 100 * choice.target_top1;
  return {
    target: { value: target, label: `target ${formatAccuracy(choice.target_top1)} %` },
    points: choice.methods.filter(reached).map((c) => {
      const result = report.methods.find((m) => m.method === c.method);
      const top1 = c.top1 ?? (result ? result.top1[c.t - 1] : choice.target_top1);
      return { name: c.method, t: c.t, value: 100 * top1, colour: methodColour(c.method),
        recommended: c.method === choice.recommended,
        label: `${c.method} meets the target at t = ${c.t} (${c.end_to_end_steps} steps end to end): ` +
          `${formatAccuracy(top1)} %${c.method === choice.recommended ? ", recommended" : ""}` };
    }),
  };
}

/** report.latency_choice: the target, each method's smallest t meeting it, the recommendation. */
function renderChoice(choice) {
  const box = $("#choice");
  if (!choice) {
    $("#choice-table").replaceChildren();
    show(box, false);
    return;
  }
  $("#choice-target").textContent =
    `Top-1 ≥ ${formatAccuracy(choice.target_top1)} % (${choice.basis}): the smallest t at which ` +
    "each method reaches it, and the end-to-end steps a reader waits for that readout.";
  $("#choice-table").replaceChildren(
    el("thead", {}, el("tr", {}, ...["method", "t", "end-to-end steps", "top-1 (%)", "SOPs/sample"]
      .map((h) => el("th", { scope: "col", text: h })))),
    el("tbody", {}, ...choice.methods.map((c) => {
      const recommended = c.method === choice.recommended;
      const name = el("th", { scope: "row" }, el("span", { class: "item-name", text: c.method }),
        recommended ? el("span", { class: "badge", text: "recommended" }) : null);
      if (!reached(c)) {
        return el("tr", { "data-method": c.method, "data-reached": "false" }, name,
          cell("not reached", { "data-col": "t", class: "muted" }),
          cell("–", { "data-col": "steps" }), cell("–", { "data-col": "top1" }),
          cell("–", { "data-col": "sops" }));
      }
      return el("tr", { "data-method": c.method, "data-reached": "true",
        "data-recommended": recommended ? "true" : null }, name,
      cell(String(c.t), { "data-col": "t" }),
      cell(String(c.end_to_end_steps ?? "–"), { "data-col": "steps" }),
      cell(c.top1 === null || c.top1 === undefined ? "–" : formatAccuracy(c.top1), { "data-col": "top1" }),
      cell(c.sops === null || c.sops === undefined ? "–" : formatCount(c.sops), { "data-col": "sops" }));
    })));
  $("#choice-reason").textContent = choice.reason.replace(/\.?$/, ".");
  show(box);
}

function renderAccuracyTable(report, steps) {
  const points = checkpoints(steps);
  const table = $("#accuracy-table");
  table.replaceChildren(
    el("caption", { text: `ANN top-1: ${formatAccuracy(report.ann.top1)} %` }),
    el("thead", {}, el("tr", {}, el("th", { scope: "col", text: "method" }),
      ...points.map((t) => el("th", { scope: "col", text: `t=${t}` })))),
    el("tbody", {}, ...report.methods.map((m) => el("tr", { "data-method": m.method },
      el("th", { scope: "row", text: m.method }),
      ...points.map((t) => (t <= m.top1.length
        ? cell(formatAccuracy(m.top1[t - 1]), { "data-t": t })
        : cell("", { "data-t": t })))))));
}

function renderLatency(report) {
  const table = $("#latency-table");
  table.replaceChildren(
    el("thead", {}, el("tr", {}, ...["method", "window T", "end-to-end steps", "readout", "note"]
      .map((h) => el("th", { scope: "col", text: h })))),
    el("tbody", {}, ...report.methods.map((m) => {
      const lat = m.latency;
      let steps = String(lat.end_to_end_steps);
      if (!lat.anytime && lat.window > 0 && lat.end_to_end_steps % lat.window === 0) {
        const depth = lat.end_to_end_steps / lat.window;
        steps = `${lat.end_to_end_steps} = depth ${depth} × T ${lat.window}`;
      }
      return el("tr", { "data-method": m.method },
        el("th", { scope: "row", text: m.method }), cell(String(lat.window)), cell(steps),
        cell(lat.anytime ? "anytime (every t ≤ T)" : "only after depth × T"), cell(lat.note || ""));
    })));
}

function renderEnergy(report, steps) {
  const ann = report.ann;
  const table = $("#energy-table");
  const ratio = (uj) => (ann.energy_uj > 0 ? `${(uj / ann.energy_uj).toFixed(2)}×` : "–");
  const quantised = ann.quantised || null;
  table.replaceChildren(
    el("thead", {}, el("tr", {}, ...["", "operations per sample", "energy per sample (µJ)", "vs ANN"]
      .map((h) => el("th", { scope: "col", text: h })))),
    el("tbody", {},
      el("tr", { "data-method": "ann" }, el("th", { scope: "row", text: "ANN" }),
        cell(`${formatCount(ann.macs)} MACs`), cell(formatEnergy(ann.energy_uj)), cell("1.00×")),
      quantised ? el("tr", { "data-method": "ann-quantised" },
        el("th", { scope: "row", text: `ANN, ${quantised.bits}-bit integer (${quantised.profile})` }),
        cell(`${formatCount(ann.macs)} MACs`), cell(formatEnergy(quantised.energy_uj)),
        cell(ratio(quantised.energy_uj))) : null,
      ...report.methods.map((m) => {
        const last = m.sops.length - 1;
        return el("tr", { "data-method": m.method },
          el("th", { scope: "row", text: `${m.method} (t = ${m.sops.length})` }),
          cell(`${formatCount(m.sops[last] ?? 0)} SOPs`), cell(formatEnergy(m.energy_uj[last] ?? 0)),
          cell(ratio(m.energy_uj[last] ?? 0)));
      })));
  const model = report.energy_model;
  let note = "Cumulative up to each t.";
  if (model) {
    note += ` Energy profile ${model.profile || "horowitz-45nm-fp32"}: ${model.e_mac_pj} pJ per MAC, ` +
      `${model.e_ac_pj} pJ per SOP (${model.source}).`;
  }
  if (quantised) {
    note += ` The ${quantised.bits}-bit integer ANN (the bits a spike count over T steps needs) does ` +
      `the same MACs at ${quantised.e_mac_pj} pJ each (${quantised.profile}).`;
  }
  $("#energy-note").textContent = note;
  let chart = $("#energy-chart");
  if (!chart) {
    chart = el("div", { class: "chart", id: "energy-chart", "data-chart": "energy" });
    $("#energy-note").after(chart);
  }
  const top = Math.max(ann.energy_uj, ...report.methods.flatMap((m) => m.energy_uj));
  lineChart(chart, {
    label: "cumulative energy per sample against t, the ANN dashed",
    xMax: steps,
    yMax: niceCeil(top || 1),
    yLabel: "energy (µJ)",
    format: (v) => `${formatEnergy(v)} µJ`,
    series: report.methods.map((m) => ({ name: m.method, colour: methodColour(m.method), values: m.energy_uj })),
    reference: { name: "ann", label: "ANN", value: ann.energy_uj },
  });
}

function renderLayers(report) {
  const box = $("#layer-charts");
  box.replaceChildren();
  for (const method of report.methods) {
    box.append(el("figure", { class: "layer-chart", "data-layer-chart": method.method },
      el("figcaption", { text: method.method }), layerChart(method)));
  }
  box.append(el("ul", { class: "legend" }, ...LAYER_METRICS.map((metric) => el("li", {},
    svg("svg", { width: 14, height: 10, "aria-hidden": "true" }, svg("rect", { width: 14, height: 10, class: metric.cls })),
    ` ${metric.label}`))));
}

function layerChart(method) {
  const layers = method.layers || [];
  const width = 360;
  const labelWidth = 78;
  const valueWidth = 64;
  const barWidth = width - labelWidth - valueWidth;
  const rowHeight = 58;
  const height = Math.max(1, layers.length) * rowHeight;
  // the firing rate on its own scale (at most one spike per step for IF neurons), fractions 0..1
  const scale = Math.max(1, ...layers.map((l) => l.firing_rate));
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "layer-svg", role: "img",
    "aria-label": `${method.method}: firing rate, saturated and silent fraction per layer` });
  layers.forEach((layer, row) => {
    const top = row * rowHeight;
    const group = svg("g", { "data-layer": layer.name },
      svg("text", { x: 0, y: top + 12, class: "layer-name", text: layer.name },
        svgTitle(`${layer.name}: ${layer.kind} neurons, ${layer.channels} channels`)),
      svg("text", { x: width, y: top + 12, "text-anchor": "end", class: "axis-label", text: layer.kind }));
    LAYER_METRICS.forEach((metric, i) => {
      const value = layer[metric.key] ?? 0;
      const rate = metric.key === "firing_rate";
      const shown = rate ? value.toFixed(3) : `${(100 * value).toFixed(1)} %`;
      const y = top + 18 + i * 12;
      group.append(
        svg("text", { x: labelWidth - 6, y: y + 9, "text-anchor": "end", class: "axis-label", text: metric.label }),
        svg("rect", { x: labelWidth, y, width: barWidth, height: 10, class: "bar-track" }),
        svg("rect", { x: labelWidth, y, width: Math.max(0, (barWidth * value) / (rate ? scale : 1)), height: 10,
          class: metric.cls }, svgTitle(`${layer.name}: ${metric.label} ${shown}`)),
        svg("text", { x: labelWidth + barWidth + 4, y: y + 9, class: "axis-label", text: shown }));
    });
    chart.append(group);
  });
  return chart;
}

function renderDownloads(jobId, report) {
  const base = `/v1/jobs/${encodeURIComponent(jobId)}`;
  const links = [
    { href: `${base}/report`, file: "report.json", text: "report (JSON)" },
    { href: `${base}/report.csv`, file: "report.csv", text: "table (CSV)" },
    { href: `${base}/plot.png`, file: "accuracy.png", text: "plot (PNG)" },
    { href: `${base}/plot.svg`, file: "accuracy.svg", text: "plot (SVG)" },
  ];
  if ((report.methods || []).some((method) => method.early_exit)) {
    links.push({ href: `${base}/early-exit.csv`, file: "early-exit.csv", text: "early exit (CSV)" });
  }
  for (const artifact of report.artifacts || []) {
    const what = artifact.startsWith("cq-model.") ? "fine-tuned CQ model" : artifact.replace(/-model\..*$/, " tuned CQ model");
    links.push({ href: `${base}/${encodeURIComponent(artifact)}`, file: artifact,
      text: `${what} (${artifact.split(".").pop()})` });
  }
  $("#downloads").replaceChildren(...links.map((link) => {
    const anchor = el("a", { href: link.href, download: link.file, "data-download": link.file, text: link.text });
    anchor.addEventListener("click", (event) => downloadWithKey(event, link));
    return el("li", { class: "chip" }, anchor);
  }));
}

/** With an API key a plain link cannot authenticate: fetch the file, then save the blob. */
async function downloadWithKey(event, link) {
  if (!state.apiKey) return;
  event.preventDefault();
  try {
    const response = await fetch(link.href, { headers: authHeaders(), credentials: "same-origin" });
    if (!response.ok) {
      const data = await response.json().catch(() => null);
      throw new ApiError(response.status, asProblem(response, data));
    }
    const url = URL.createObjectURL(await response.blob());
    const anchor = el("a", { href: url, download: link.file });
    document.body.append(anchor);
    anchor.click();
    anchor.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  } catch (error) {
    notify(error);
  }
}

// ---------------------------------------------------------------- SVG line chart

function niceCeil(value) {
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) if (step * power >= value) return step * power;
  return 10 * power;
}

/**
 * A line chart of values per time step t = 1..xMax (log2 axis from 16 steps on).
 * Each series is one <g data-series="name">; the reference (the ANN) is a dashed line.
 */
function lineChart(container, { label, xMax, yMax, yLabel, format, series, reference, marks }) {
  // drawn at the width it is shown at, so its text keeps its size on a phone
  const W = Math.round(Math.max(300, Math.min(760, container.clientWidth || 640)));
  const H = W < 500 ? 240 : 300;
  const m = { left: 62, right: 16, top: 14, bottom: 40 };
  const pw = W - m.left - m.right;
  const ph = H - m.top - m.bottom;
  const log = xMax >= 16;
  const xOf = (t) => {
    if (xMax <= 1) return m.left + pw / 2;
    const f = log ? Math.log2(t) / Math.log2(xMax) : (t - 1) / (xMax - 1);
    return m.left + f * pw;
  };
  const yOf = (v) => m.top + ph - (Math.max(0, Math.min(v, yMax)) / yMax) * ph;
  const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "line-chart", role: "img", "aria-label": label });
  const grid = svg("g", { class: "grid", "aria-hidden": "true" });
  const decimals = Math.max(0, -Math.floor(Math.log10(yMax / 5) + 1e-9));
  for (let i = 0; i <= 5; i += 1) {
    const v = (yMax * i) / 5;
    const y = yOf(v);
    grid.append(svg("line", { x1: m.left, x2: m.left + pw, y1: y, y2: y }),
      svg("text", { x: m.left - 6, y: y + 4, "text-anchor": "end", class: "axis-label",
        text: v.toFixed(decimals) }));
  }
  const ticks = checkpoints(xMax);
  const minGap = 26;
  let lastX = -Infinity;
  for (const t of ticks) {
    const x = xOf(t);
    grid.append(svg("line", { x1: x, x2: x, y1: m.top, y2: m.top + ph, class: "vgrid" }));
    if (x - lastX >= minGap || t === xMax) {
      grid.append(svg("text", { x, y: m.top + ph + 16, "text-anchor": "middle", class: "axis-label", text: String(t) }));
      lastX = x;
    }
  }
  grid.append(
    svg("text", { x: m.left + pw / 2, y: H - 4, "text-anchor": "middle", class: "axis-title",
      text: `time step t${log ? " (log scale)" : ""}` }),
    svg("text", { x: 14, y: m.top + ph / 2, "text-anchor": "middle", class: "axis-title",
      transform: `rotate(-90 14 ${m.top + ph / 2})`, text: yLabel }),
    svg("rect", { x: m.left, y: m.top, width: pw, height: ph, class: "frame" }));
  chart.append(grid);
  if (reference) {
    const y = yOf(reference.value);
    chart.append(svg("g", { "data-series": reference.name, class: "series reference" },
      svgTitle(`${reference.label}: ${format(reference.value)}`),
      svg("line", { x1: m.left, x2: m.left + pw, y1: y, y2: y, stroke: "currentColor",
        "stroke-width": 1.5, "stroke-dasharray": "6 4" }),
      svg("text", { x: m.left + pw - 4, y: y - 5, "text-anchor": "end", class: "axis-label", text: reference.label })));
  }
  const marked = new Set(ticks);
  for (const s of series) {
    const group = svg("g", { "data-series": s.name, class: "series" }, svgTitle(s.name));
    const points = s.values.map((v, i) => `${xOf(i + 1).toFixed(1)},${yOf(v).toFixed(1)}`).join(" ");
    group.append(svg("polyline", { points, fill: "none", stroke: s.colour, "stroke-width": 2,
      "stroke-linejoin": "round" }));
    s.values.forEach((v, i) => {
      const t = i + 1;
      if (!marked.has(t) && t !== s.values.length) return;
      group.append(svg("circle", { cx: xOf(t), cy: yOf(v), r: 3.5, fill: s.colour },
        svgTitle(`${s.name}, t = ${t}: ${format(v)}`)));
    });
    chart.append(group);
  }
  // marks: a target (a dotted line, data-target-line) and points (rings, data-choice); neither
  // is a data-series
  const target = marks && marks.target;
  if (target) {
    const y = yOf(target.value);
    chart.append(svg("g", { "data-target-line": true, class: "target-line" }, svgTitle(target.label),
      svg("line", { x1: m.left, x2: m.left + pw, y1: y, y2: y, stroke: "currentColor",
        "stroke-width": 2, "stroke-dasharray": "0.5 5", "stroke-linecap": "round" }),
      svg("text", { x: m.left + 6, y: y + 15, class: "axis-label", text: target.label })));
  }
  for (const point of (marks && marks.points) || []) {
    chart.append(svg("circle", { "data-choice": point.name, class: "choice-dot", cx: xOf(point.t),
      cy: yOf(point.value), r: point.recommended ? 8 : 6, fill: "none", stroke: point.colour,
      "stroke-width": point.recommended ? 3 : 2 }, svgTitle(point.label)));
  }
  const guide = svg("line", { y1: m.top, y2: m.top + ph, class: "guide", visibility: "hidden" });
  const overlay = svg("rect", { x: m.left, y: m.top, width: pw, height: ph, class: "overlay" });
  chart.append(guide, overlay);
  const tooltip = el("div", { class: "tooltip", role: "status", hidden: true });
  const legend = el("ul", { class: "legend" },
    ...series.map((s) => el("li", { "data-legend": s.name },
      svg("svg", { width: 22, height: 10, "aria-hidden": "true" },
        svg("line", { x1: 0, x2: 22, y1: 5, y2: 5, stroke: s.colour, "stroke-width": 3 })),
      ` ${s.name}`)),
    reference ? el("li", { "data-legend": reference.name },
      svg("svg", { width: 22, height: 10, "aria-hidden": "true" },
        svg("line", { x1: 0, x2: 22, y1: 5, y2: 5, stroke: "currentColor", "stroke-width": 2, "stroke-dasharray": "5 3" })),
      ` ${reference.label} ${format(reference.value)}`) : null,
    target ? el("li", { "data-legend": "target" },
      svg("svg", { width: 22, height: 10, "aria-hidden": "true" },
        svg("line", { x1: 1, x2: 21, y1: 5, y2: 5, stroke: "currentColor", "stroke-width": 2,
          "stroke-dasharray": "0.5 4", "stroke-linecap": "round" })),
      ` ${target.label}`) : null,
    marks && marks.points && marks.points.length ? el("li", { "data-legend": "choice" },
      svg("svg", { width: 14, height: 14, "aria-hidden": "true" },
        svg("circle", { cx: 7, cy: 7, r: 5, fill: "none", stroke: "currentColor", "stroke-width": 2 })),
      " each method's t meeting it") : null);
  overlay.addEventListener("pointermove", (event) => {
    const box = chart.getBoundingClientRect();
    const x = ((event.clientX - box.left) / box.width) * W;
    const f = Math.max(0, Math.min(1, (x - m.left) / pw));
    const t = xMax <= 1 ? 1 : Math.round(log ? 2 ** (f * Math.log2(xMax)) : 1 + f * (xMax - 1));
    guide.setAttribute("x1", xOf(t));
    guide.setAttribute("x2", xOf(t));
    guide.setAttribute("visibility", "visible");
    tooltip.replaceChildren(el("strong", { text: `t = ${t}` }),
      ...series.filter((s) => t <= s.values.length).map((s) => el("div", { text: `${s.name}: ${format(s.values[t - 1])}` })),
      reference ? el("div", { text: `${reference.label}: ${format(reference.value)}` }) : null,
      target ? el("div", { text: target.label }) : null);
    const frame = container.getBoundingClientRect();
    const left = event.clientX - frame.left;
    tooltip.style.left = `${Math.min(left + 12, Math.max(0, frame.width - 180))}px`;
    tooltip.style.top = `${Math.max(0, event.clientY - frame.top - 10)}px`;
    show(tooltip);
  });
  overlay.addEventListener("pointerleave", () => {
    guide.setAttribute("visibility", "hidden");
    show(tooltip, false);
  });
  container.replaceChildren(chart, tooltip, legend);
}

// ---------------------------------------------------------------- past jobs

async function loadJobs() {
  let page;
  try {
    page = await api("/v1/jobs?limit=20");
  } catch (error) {
    if (error.status !== 401) notify(error);
    return;
  }
  const names = new Map(state.models.map((m) => [m.id, m.name]));
  const body = $("#jobs tbody");
  body.replaceChildren(...page.data.map((job) => {
    const open = el("button", { type: "button", class: "secondary", text: "Open" });
    open.setAttribute("aria-label", `Open job ${job.id}`);
    open.addEventListener("click", () => watchJob(job.id));
    return el("tr", { "data-job-id": job.id },
      cell(formatDate(job.created_at)),
      cell(names.get(job.model_id) || (job.model_id ? `${job.model_id.slice(0, 8)}… (deleted)` : "–"), { class: "item-name" }),
      el("td", {}, el("span", { class: "status", "data-status": job.status, text: job.status })),
      cell(job.status === "running" ? `${job.stage || ""} ${Math.round(100 * job.progress)} %` : job.stage || ""),
      el("td", {}, open));
  }));
  show($("#jobs-empty"), page.data.length === 0);
  show($("#jobs"), page.data.length > 0);
}

// ---------------------------------------------------------------- start

async function boot() {
  setupApiKey();
  setupUpload();
  setupJobForm();
  setupCancel();
  $("#jobs-refresh").addEventListener("click", () => loadJobs());
  let resizing = 0;
  window.addEventListener("resize", () => {
    clearTimeout(resizing);
    resizing = setTimeout(() => {
      if (state.shown && !$("#result").hidden) renderReport(state.shown.jobId, state.shown.report);
    }, 250);
  });
  const schema = loadSchema().catch((error) => notify(error));
  const datasets = loadDatasets();
  // The models list first: in the demo mode its answer sets the browser's scope cookie, which
  // the requests after it then share (parallel first requests would each get a new scope).
  await loadModels();
  await Promise.all([schema, datasets]);
  buildJobForm();
  await Promise.all([loadJobs(), loadExamples()]);
  document.body.dataset.ready = "true";
}

boot();
