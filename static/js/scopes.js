// The permission grid: ticking an action ticks the actions it implies (Write ticks Read),
// and an implied box stays ticked while a box that implies it is. Presets set the grid to
// their scopes. The server applies the same rules, so this is only a convenience.

function boxes(grid) {
  return Array.from(grid.querySelectorAll("input[type=checkbox][name=scope]"));
}

function impliedBy(box) {
  return (box.dataset.implies || "")
    .split(" ")
    .filter(Boolean)
    .map((id) => document.getElementById(id))
    .filter(Boolean);
}

function sync(grid) {
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
}

for (const grid of document.querySelectorAll("[data-scope-grid]")) {
  sync(grid);
  for (const box of boxes(grid)) {
    box.addEventListener("change", () => sync(grid));
    // Unticking a box that a ticked box implies is undone: keep the grid consistent.
    box.addEventListener("click", (event) => {
      if (!box.checked && box.getAttribute("aria-disabled") === "true") {
        event.preventDefault();
      }
    });
  }
  const form = grid.closest("form") || document;
  for (const button of form.querySelectorAll("[data-preset-scopes]")) {
    button.addEventListener("click", () => {
      const wanted = new Set(button.dataset.presetScopes.split(" ").filter(Boolean));
      for (const box of boxes(grid)) box.checked = wanted.has(box.value);
      sync(grid);
      for (const other of form.querySelectorAll("[data-preset-scopes]")) {
        other.setAttribute("aria-pressed", String(other === button));
      }
    });
  }
}
