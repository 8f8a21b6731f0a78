// The shell's org switcher: go to the chosen org as soon as it is picked. Without
// JavaScript the form's "Go" button does the same.
for (const select of document.querySelectorAll("select[data-org-switcher]")) {
  const form = select.form;
  // Removed rather than hidden: the .btn class sets its own display.
  form.querySelector("[data-org-switcher-submit]")?.remove();
  select.addEventListener("change", () => {
    if (select.value) form.requestSubmit();
  });
}
