// Loaded after require.js and before the ipywidgets html-manager (book/_config.yml, nb_ipywidgets_js).
// Points require.js at the vendored files next to this one, so that the html-manager resolves the
// "anywidget" widget module locally (offline, file://) and never falls back to a CDN, and so that the
// html-manager's bundled fonts (found relative to its module's URL) load from the vendored copy.
(function () {
  var here = document.currentScript && document.currentScript.src;
  var base = here ? here.slice(0, here.lastIndexOf("/") + 1) : "_vendor/";
  window.requirejs.config({
    paths: {
      anywidget: base + "anywidget/index",
      "@jupyter-widgets/html-manager/dist": base + "html-manager",
    },
  });
})();
