// Small conveniences only: the page works without them.
document.addEventListener("DOMContentLoaded", () => {
  const filters = document.querySelector("form.filters");
  if (filters) {
    filters.querySelectorAll("select, input[type=date]").forEach((el) => el.addEventListener("change", () => filters.submit()));
    const search = filters.querySelector("input[type=search]");
    document.addEventListener("keydown", (ev) => {
      if (ev.key === "/" && document.activeElement !== search) { ev.preventDefault(); search.focus(); }
    });
  }
  const expand = document.querySelector("[data-expand]");
  if (expand) {
    expand.addEventListener("click", () => {
      const rows = document.querySelectorAll("details.wf-row");
      const open = [...rows].some((d) => !d.open);
      rows.forEach((d) => (d.open = open));
      expand.textContent = open ? "Collapse all" : "Expand all";
    });
  }
  // Open the first blocked span so the reason is visible at once.
  const blocked = document.querySelector("details.wf-row.has-block");
  if (blocked) blocked.open = true;
});
