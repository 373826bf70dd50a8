"""Click a token in the attention head view and check, in the page, which lines are drawn afterwards.

Shared by the Voila and JupyterLab suites. The page's bokeh document (the live one BokehJS draws from) is read
through the view element (``el.__bokeh``, set by ``explorer.apps._bokeh``); the expected lines come from the
library's own model run. Two checks: the line source's alpha column (what bokeh draws with) and the canvas pixels
at the middle of strong lines (what the user sees).
"""

from __future__ import annotations

import io

import numpy as np
import torch

from explorer.viz.attention import HEAD_VIEW_NAMES

VIEW = ".attn-head-view.explorer-bokeh, .attn-head-view .explorer-bokeh"
THRESHOLD = 0.02        # lines below this weight are not drawn (explorer.viz.attention.head_view_data)
STRONG = 0.25           # lines at least this heavy are checked in pixels too
WHITE = 235             # a pixel with every channel above this counts as background

_GEOMETRY = """([sel, xs, ys]) => {
    const el = document.querySelector(sel);
    const views = [...el.__bokeh.views];
    const pv = views[0];
    const canvas = pv.canvas_view.el.getBoundingClientRect();
    return {left: canvas.left, top: canvas.top, width: canvas.width, height: canvas.height,
            xs: xs.map(x => canvas.left + pv.frame.x_scale.compute(x)),
            ys: ys.map(y => canvas.top + pv.frame.y_scale.compute(y))};
}"""

_LINES = f"""(sel) => {{
    const doc = document.querySelector(sel).__bokeh.doc;
    const d = doc.get_model_by_name('{HEAD_VIEW_NAMES["lines"]}').data;
    const tokens = doc.get_model_by_name('{HEAD_VIEW_NAMES["tokens"]}');
    return {{alpha: Array.from(d.alpha), w: Array.from(d.w), query: Array.from(d.query), key: Array.from(d.key),
             head: Array.from(d.head), selected: Array.from(tokens.selected.indices)}};
}}"""


def view_ready(page, timeout: float = 60_000) -> None:
    """Wait until the head view has embedded its bokeh document."""
    page.wait_for_function(f"() => {{ const el = document.querySelector('{VIEW}'); "
                           "return !!(el && el.dataset.rendered && el.__bokeh); }", timeout=timeout)


def lines(page) -> dict:
    return page.evaluate(_LINES, VIEW)


def _pixels(page, points: list[tuple[float, float]]) -> list[bool]:
    """For each page point: is anything but background drawn within 1 px of it?"""
    from PIL import Image

    image = np.asarray(Image.open(io.BytesIO(page.screenshot())).convert("RGB"))
    scale = image.shape[1] / page.viewport_size["width"]
    drawn = []
    for x, y in points:
        cx, cy = int(round(x * scale)), int(round(y * scale))
        patch = image[max(cy - 1, 0):cy + 2, max(cx - 1, 0):cx + 2]
        drawn.append(bool((patch < WHITE).any()))
    return drawn


def click_token_and_check(page, tokens: list[str], pattern: torch.Tensor, query: int) -> dict:
    """Click query token ``query`` (left column) and check the lines left visible against ``pattern``.

    Args:
        tokens: the input tokens (all of them inside the head view's window).
        pattern: (head, query, key) probabilities of the layer shown, from the library.
        query: token index to click.

    Returns: what was checked, for the timings/closing note.
    """
    sel = VIEW
    view_ready(page)
    page.locator(sel).first.scroll_into_view_if_needed()
    n = len(tokens)
    # the line midpoints (x = 0.5 in data space) of strong lines that stay and of strong lines that go
    heads, keys = pattern.shape[0], range(n)
    keep = {(h, k) for h in range(heads) for k in keys if pattern[h, query, k] >= THRESHOLD}
    stay = sorted({k for h, k in keep if pattern[h, query, k] >= STRONG})
    stay_y = [-(query + k) / 2 for k in stay]
    kept_y = {-(query + k) / 2 for _h, k in keep}
    go = sorted({(q, k) for h in range(heads) for q in range(n) for k in keys
                 if q != query and pattern[h, q, k] >= STRONG
                 and all(abs(-(q + k) / 2 - y) > 0.6 for y in kept_y)})  # not where any kept line crosses x=0.5
    go_y = [-(q + k) / 2 for q, k in go]
    geometry = page.evaluate(_GEOMETRY, [sel, [0.0, 0.5], [-float(query), *stay_y, *go_y]])
    token_x, mid_x = geometry["xs"]
    token_y, ys = geometry["ys"][0], geometry["ys"][1:]
    # only points on screen, clear of status bars at the bottom of the window (JupyterLab's is 24 px)
    low, high = max(geometry["top"], 0) + 4, min(geometry["top"] + geometry["height"], page.viewport_size["height"] - 40)
    on_screen = [low <= y <= high for y in ys]
    stay = [k for k, ok in zip(stay, on_screen) if ok]
    go = [g for g, ok in zip(go, on_screen[len(stay_y):]) if ok]
    ys = [y for y, ok in zip(ys, on_screen) if ok]
    assert low <= token_y <= high and stay and go, "the clicked token and lines on both sides of the check are on screen"
    before = _pixels(page, [(mid_x, y) for y in ys])
    assert all(before[len(stay):]), "before the click, every strong line is drawn (else the pixel check is blind)"

    page.mouse.click(token_x, token_y)
    page.wait_for_function(f"(q) => {{ const doc = document.querySelector('{sel}').__bokeh.doc;"
                           f"const t = doc.get_model_by_name('{HEAD_VIEW_NAMES['tokens']}');"
                           "return t.selected.indices.length === 1 && t.data.index[t.selected.indices[0]] === q"
                           " && t.data.side[t.selected.indices[0]] === 'query'; }", arg=query, timeout=10_000)
    page.wait_for_timeout(300)  # one frame for the canvas
    data = lines(page)
    visible = {(h, k) for a, h, q, k in zip(data["alpha"], data["head"], data["query"], data["key"]) if a > 0}
    assert visible == keep, f"lines drawn after clicking {tokens[query]!r}: {sorted(visible ^ keep)} differ"
    for a, w, h, q, k in zip(data["alpha"], data["w"], data["head"], data["query"], data["key"]):
        if q == query:
            assert abs(a - float(pattern[h, q, k])) < 1e-6 and a == w  # the weight itself, fp32 through JSON
        else:
            assert a == 0
    after = _pixels(page, [(mid_x, y) for y in ys])
    assert all(after[:len(stay)]), "the clicked token's strong lines are drawn"
    assert not any(after[len(stay):]), "other tokens' strong lines are gone from the canvas"

    page.mouse.click(mid_x, token_y)  # between the columns: no token there
    page.wait_for_function(f"() => document.querySelector('{sel}').__bokeh.doc.get_model_by_name("
                           f"'{HEAD_VIEW_NAMES['tokens']}').selected.indices.length === 0", timeout=10_000)
    restored = lines(page)
    assert restored["alpha"] == restored["w"], "clicking empty space shows every line again"
    return {"token": tokens[query], "lines kept": len(keep), "strong lines checked in pixels": len(ys)}
