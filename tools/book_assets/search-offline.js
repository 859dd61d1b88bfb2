// Sphinx's search page shows a snippet of each hit by fetch()ing that page; a browser refuses fetch() for
// file:// URLs (CORS), so a book opened from disk lists hits without snippets and logs errors. Opened from
// disk, this answers those fetches from the page texts embedded at build time (search-pages.js, written by
// tools/offline_search.py); over http(s) it does nothing.
(function () {
  if (window.location.protocol !== "file:" || !window.BOOK_PAGES) return;
  var realFetch = window.fetch;
  window.fetch = function (resource, init) {
    var url = new URL(typeof resource === "string" ? resource : resource.url, document.baseURI);
    var name = decodeURIComponent(url.pathname.split("/").pop());
    if (url.protocol === "file:" && Object.prototype.hasOwnProperty.call(window.BOOK_PAGES, name)) {
      return Promise.resolve(new Response(window.BOOK_PAGES[name], {headers: {"Content-Type": "text/html"}}));
    }
    return realFetch.apply(this, arguments);
  };
})();
