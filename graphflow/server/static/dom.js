// The two DOM helpers every module uses: text goes in as textContent, values as attributes.
export const $ = (id) => document.getElementById(id);

/** A new element with these attributes (null/undefined ones left out) and this text. */
export function el(tag, attributes = {}, text) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) if (value !== undefined && value !== null) node.setAttribute(key, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}
