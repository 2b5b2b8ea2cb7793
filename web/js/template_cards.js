// Descriptions of the pack's templates in ComfyUI's Templates dialog. The frontend (1.27 to 1.58 at least) gives a
// custom node pack's `example_workflows/*.json` its file name as title and description, and has no other source;
// each of the pack's templates carries its description in `extra.fusedream.description`. This puts it where the
// dialog reads descriptions from, the frontend's template store (so the cards, the List view's Description column
// and the search all have it), and writes it into cards and list rows already shown; a card shows it in full.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

/** The pack's folder name under custom_nodes, as the templates route names it (`/extensions/<folder>/js/…`). */
const MODULE = (() => {
  const parts = new URL(import.meta.url).pathname.split("/");
  const at = parts.indexOf("extensions");
  return at >= 0 && parts[at + 1] ? decodeURIComponent(parts[at + 1]) : null;
})();
const PREFIX = "template-workflow-";
const descriptions = new Map();

async function descriptionOf(name) {
  if (!descriptions.has(name)) {
    descriptions.set(name, (async () => {
      const path = `/workflow_templates/${encodeURIComponent(MODULE)}/${encodeURIComponent(name)}.json`;
      const res = await api.fetchApi(path);
      const workflow = res.ok ? await res.json() : null;
      const text = workflow?.extra?.fusedream?.description;
      return typeof text === "string" ? text : null;
    })().catch(() => null));
  }
  return descriptions.get(name);
}

let ourNames = null;

/** The template names this pack serves (`GET /workflow_templates` → `{<folder>: [names]}`). */
function namesOfPack() {
  ourNames ??= api.fetchApi("/workflow_templates")
    .then((res) => res.json())
    .then((all) => new Set(Array.isArray(all?.[MODULE]) ? all[MODULE] : []))
    .catch(() => new Set());
  return ourNames;
}

/** The frontend's template store (Pinia `workflowTemplates`), or null when this frontend has none. */
function templateStore() {
  const pinia = document.querySelector("#vue-app")?.__vue_app__?.config?.globalProperties?.$pinia;
  return pinia?._s?.get?.("workflowTemplates") ?? null;
}

/** Our templates' entries in the store get their descriptions (once the store has loaded them). */
async function describeInStore() {
  const store = templateStore();
  const modules = (store?.groupedTemplates ?? []).flatMap((group) => group?.modules ?? []);
  const ours = modules.filter((m) => m?.moduleName === MODULE).flatMap((m) => m.templates ?? []);
  for (const template of ours) {
    const text = await descriptionOf(template.name);
    if (text && template.description !== text) template.description = text;
  }
  return ours.length > 0;
}

/** The text the frontend shows for a custom template's description (it turns '-' and '_' into spaces). */
const shownAs = (text) => text.replace(/[-_]/g, " ").trim();

async function fillCard(card) {
  const name = card.getAttribute("data-testid").slice(PREFIX.length);
  if (!(await namesOfPack()).has(name)) return;
  const text = await descriptionOf(name);
  const line = card.querySelector("p");
  if (!text || !line || (line.textContent === text && card.dataset.fusedreamDescribed)) return;
  card.dataset.fusedreamDescribed = "1";
  line.textContent = text;
  line.title = text;
  line.classList.remove("line-clamp-2"); // what a user needs (weights, time) must not be cut after 60 characters
  line.style.whiteSpace = "normal";
}

/** A List-view row of ours: its description cell as written (not the file name, not with '-' made spaces). */
async function fillRow(row) {
  const names = await namesOfPack();
  const title = row.children[0]?.textContent?.trim();
  const cell = row.children[1]?.querySelector("span") ?? row.children[1];
  if (!title || !cell || !names.has(title)) return;
  const text = await descriptionOf(title);
  if (!text || cell.textContent === text) return;
  if (cell.textContent === title || cell.textContent === shownAs(title) || cell.textContent === shownAs(text)) {
    cell.textContent = text;
    cell.title = text;
    cell.style.whiteSpace = "normal";
  }
}

const CARDS = `[data-testid^="${PREFIX}"]`;
const ROWS = ".p-datatable-tbody tr";
let storeDescribed = false;

function scan(node) {
  if (!node?.querySelectorAll) return;
  const inDialog = node.closest?.('[data-testid="template-workflows-content"]') || node.querySelector?.(
    '[data-testid="template-workflows-content"]');
  // not before the canvas exists: changing the store under the first-visit dialog, opened during the app's setup,
  // made the frontend show "getCanvas: canvas is null" errors
  if (inDialog && !storeDescribed && app.canvas) describeInStore().then((done) => (storeDescribed = done)).catch(() => {});
  for (const card of [node.closest?.(CARDS), ...node.querySelectorAll(CARDS)]) if (card) fillCard(card);
  // ROWS matches every PrimeVue table (queue, settings, model library): only the template dialog's List view is ours
  if (inDialog) for (const row of [node.closest?.(ROWS), ...node.querySelectorAll(ROWS)]) if (row) fillRow(row);
}

if (MODULE && typeof MutationObserver === "function" && typeof document !== "undefined") {
  new MutationObserver((records) => {
    for (const record of records) {
      for (const node of record.addedNodes) scan(node.nodeType === 1 ? node : node.parentElement);
      if (record.type === "characterData") scan(record.target.parentElement);
    }
  }).observe(document.body, { childList: true, subtree: true, characterData: true });
}
