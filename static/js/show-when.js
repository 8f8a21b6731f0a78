// Show a block only while a select has a given value:
//   <div data-show-when="id_expiry" data-show-value="custom">...</div>
// Without JavaScript every block stays visible, so the form still works.
for (const block of document.querySelectorAll("[data-show-when]")) {
  const control = document.getElementById(block.dataset.showWhen);
  if (!control) continue;
  const update = () => {
    block.hidden = control.value !== block.dataset.showValue;
  };
  control.addEventListener("change", update);
  update();
}
