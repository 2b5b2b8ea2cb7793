// Descriptions on the pack's template cards. ComfyUI's frontend (1.27 to 1.58 at least) lists a custom node
// pack's `example_workflows/*.json` with the file name as both title and description and no other source for
// either; each of the pack's templates carries its description in `extra.fusedream.description`, and this
// fills it into the card's description line (and its tooltip) when the Templates dialog shows the card.
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

async function fill(card) {
  if (card.dataset.fusedreamDescribed) return;
  card.dataset.fusedreamDescribed = "1";
  const name = card.getAttribute("data-testid").slice(PREFIX.length);
  if (!(await namesOfPack()).has(name)) return;
  const text = await descriptionOf(name);
  const line = card.querySelector("p");
  if (!text || !line) return;
  line.textContent = text;
  line.title = text;
}

const SELECTOR = `[data-testid^="${PREFIX}"]`;

function scan(node) {
  if (!node?.querySelectorAll) return;
  const card = node.closest?.(SELECTOR);
  if (card) fill(card);
  for (const inner of node.querySelectorAll(SELECTOR)) fill(inner);
}

if (MODULE && typeof MutationObserver === "function" && typeof document !== "undefined") {
  new MutationObserver((records) => {
    for (const record of records) for (const node of record.addedNodes) scan(node);
  }).observe(document.body, { childList: true, subtree: true });
}
