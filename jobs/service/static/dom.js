// The pages' one DOM helper (dashboard.js, models.js through it, rate.js): an element with a class, text,
// attributes and children. Text and attributes only: a value from the API never becomes HTML.
"use strict";

window.brightrunEl = function el(tag, options = {}, children = []) {
  const node = document.createElement(tag);
  if (options.className) node.className = options.className;
  if (options.text !== undefined) node.textContent = options.text;
  for (const [name, value] of Object.entries(options.attrs || {})) node.setAttribute(name, value);
  for (const child of children) node.append(child);
  return node;
};
