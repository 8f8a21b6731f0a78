// The permission grid: ticking an action ticks the actions it implies (Write ticks Read),
// and an implied box stays ticked while a box that implies it is. Presets set the grid to
// their scopes; "All <action>" ticks (or, when all are ticked, unticks) a whole column.
// The server applies the same rules, so this is only a convenience.

function boxes(grid) {
  return Array.from(grid.querySelectorAll("input[type=checkbox][name=scope]"));
}

function columnBoxes(grid, action) {
  return boxes(grid).filter((box) => box.closest("td")?.dataset.action === action);
}

function impliedBy(box) {
  return (box.dataset.implies || "")
    .split(" ")
    .filter(Boolean)
    .map((id) => document.getElementById(id))
    .filter(Boolean);
}

function sync(grid, tools) {
  const held = new Map();
  for (const box of boxes(grid)) {
    if (!box.checked) continue;
    for (const implied of impliedBy(box)) held.set(implied, box);
  }
  for (const box of boxes(grid)) {
    const holder = held.get(box);
    if (holder) {
      box.checked = true;
      box.setAttribute("aria-disabled", "true");
      box.title = `Included in ${holder.getAttribute("aria-label") || "another permission"}`;
    } else {
      box.removeAttribute("aria-disabled");
      box.removeAttribute("title");
    }
  }
  if (!tools) return;
  const ticked = new Set(boxes(grid).filter((box) => box.checked).map((box) => box.value));
  for (const button of tools.querySelectorAll("[data-select-column]")) {
    const column = columnBoxes(grid, button.dataset.selectColumn);
    button.setAttribute("aria-pressed", String(column.length > 0 && column.every((b) => b.checked)));
  }
  for (const button of tools.querySelectorAll("[data-preset-scopes]")) {
    const wanted = button.dataset.presetScopes.split(" ").filter(Boolean);
    const same = wanted.length === ticked.size && wanted.every((scope) => ticked.has(scope));
    button.setAttribute("aria-pressed", String(same));
  }
}

for (const grid of document.querySelectorAll("[data-scope-grid]")) {
  const form = grid.closest("form") || document;
  const tools = form.querySelector("[data-scope-tools]");
  if (tools) tools.hidden = false; // the tools need this script: shown only with it
  sync(grid, tools);
  for (const box of boxes(grid)) {
    box.addEventListener("change", () => sync(grid, tools));
    // Unticking a box that a ticked box implies is undone: keep the grid consistent.
    box.addEventListener("click", (event) => {
      if (!box.checked && box.getAttribute("aria-disabled") === "true") {
        event.preventDefault();
      }
    });
  }
  if (!tools) continue;
  for (const button of tools.querySelectorAll("[data-preset-scopes]")) {
    button.addEventListener("click", () => {
      const wanted = new Set(button.dataset.presetScopes.split(" ").filter(Boolean));
      for (const box of boxes(grid)) box.checked = wanted.has(box.value);
      sync(grid, tools);
    });
  }
  for (const button of tools.querySelectorAll("[data-select-column]")) {
    button.addEventListener("click", () => {
      const column = columnBoxes(grid, button.dataset.selectColumn);
      const all = column.every((box) => box.checked);
      if (all) {
        // Untick the column, except boxes another ticked box still implies.
        for (const box of column) box.checked = false;
      } else {
        for (const box of column) box.checked = true;
      }
      sync(grid, tools);
    });
  }
}
