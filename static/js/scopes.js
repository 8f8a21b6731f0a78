// The permission grid: ticking Write ticks Read, and Read stays ticked while Write is.
// The server applies the same rule (write implies read), so this is only a convenience.

function pairs(root) {
  return Array.from(root.querySelectorAll("input[type=checkbox][data-implies]"))
    .map((write) => ({ write, read: document.getElementById(write.dataset.implies) }))
    .filter((pair) => pair.read);
}

function sync({ write, read }) {
  if (write.checked) {
    read.checked = true;
    read.setAttribute("aria-disabled", "true");
    read.title = "Write includes read";
  } else {
    read.removeAttribute("aria-disabled");
    read.removeAttribute("title");
  }
}

for (const pair of pairs(document)) {
  sync(pair);
  pair.write.addEventListener("change", () => sync(pair));
  // Unticking Read while Write is ticked is undone: keep the pair consistent.
  pair.read.addEventListener("click", (event) => {
    if (pair.write.checked && !pair.read.checked) {
      event.preventDefault();
    }
  });
}
