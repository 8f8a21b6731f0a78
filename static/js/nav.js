// The shell's phone menu. Loaded as a classic script in <head> so the page is marked as
// scripted before its first paint: CSS then starts the phone menu closed. Without
// JavaScript the navigation simply stays open under the header.
document.documentElement.classList.add("js");

document.addEventListener("DOMContentLoaded", () => {
  const button = document.querySelector("[data-menu-button]");
  const header = document.querySelector("[data-topbar]");
  if (!button || !header) return;
  const panel = document.getElementById(button.getAttribute("aria-controls"));

  function setOpen(open) {
    button.setAttribute("aria-expanded", String(open));
    header.classList.toggle("nav-open", open);
  }

  button.addEventListener("click", () => {
    setOpen(button.getAttribute("aria-expanded") !== "true");
    if (button.getAttribute("aria-expanded") === "true") {
      panel?.querySelector("a, select, button")?.focus();
    }
  });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && button.getAttribute("aria-expanded") === "true") {
      setOpen(false);
      button.focus();
    }
  });
  // Clicking outside the open menu closes it.
  document.addEventListener("click", (event) => {
    if (button.getAttribute("aria-expanded") === "true" && !header.contains(event.target)) {
      setOpen(false);
    }
  });
});
