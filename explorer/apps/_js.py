"""JavaScript shared by our widgets' ES modules (prepended to each ``_esm``): fetch a library from the kernel once
per page, and wait until a view's element is in the document."""

LIBRARY_LOADER = r"""
// Ask the kernel for a JavaScript library (a custom message {type: request}; the kernel answers
// {type: reply, source}) and run it once per page: every view of the page shares one promise per key.
// Asked again every 10 s until answered: the kernel drops a custom message that follows another to the same widget
// too closely (explorer.apps._comm_guard), e.g. when two pages of one kernel ask at once, and a kernel busy with a
// long cell (lesson 05 trains a model after displaying its app) answers only when that cell ends: given up after
// 30 tries (5 minutes), longer than any cell of the lessons.
function loadLibrary(model, key, request, reply, found) {
  window.__explorerLibraries = window.__explorerLibraries || {};
  if (found()) return Promise.resolve(found());
  if (!window.__explorerLibraries[key]) {
    window.__explorerLibraries[key] = new Promise((resolve, reject) => {
      let answered = false, tries = 0;
      const onMessage = (msg) => {
        if (!msg || msg.type !== reply || answered) return;
        answered = true;
        model.off("msg:custom", onMessage);
        if (!found()) {
          const script = document.createElement("script");
          script.textContent = msg.source;
          document.head.appendChild(script);  // runs now: document.head is always in the document
        }
        if (found()) resolve(found());
        else reject(new Error(`${key} did not load`));
      };
      const ask = () => {
        if (answered) return;
        if (tries++ === 30) { reject(new Error(`the kernel did not send ${key}`)); return; }
        model.send({type: request});
        setTimeout(ask, 10000);
      };
      model.on("msg:custom", onMessage);
      ask();
    });
  }
  return window.__explorerLibraries[key];
}

// Lab may attach a cell's output after the view renders; bokeh embeds and plotly measures only attached elements.
function inDocument(el) {
  return new Promise((resolve) => {
    const check = () => (el.isConnected ? resolve() : setTimeout(check, 50));
    check();
  });
}
"""
