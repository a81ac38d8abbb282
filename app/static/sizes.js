// Bar lengths arrive as data attributes (data-width, data-height: percentages) and are applied here through
// element.style, which the Content-Security-Policy allows; a style="..." attribute in the markup it refuses
// (app/security_headers.py).

export function applySizes(root = document) {
  for (const node of root.querySelectorAll("[data-width]")) node.style.width = `${Number(node.dataset.width)}%`;
  for (const node of root.querySelectorAll("[data-height]")) node.style.height = `${Number(node.dataset.height)}%`;
}
