"""The dashboard builds a tab's app when the tab is first opened; a failing tab shows why and can be retried."""

from __future__ import annotations

import subprocess
import sys

import ipywidgets as W

from explorer.apps import CrossModalApp, ReceptiveFieldApp
from explorer.apps.dashboard import TABS, dashboard


def test_only_the_first_tab_is_built_and_imported_at_start():
    # a fresh interpreter: what a visitor's kernel has loaded once the dashboard cell ran
    code = ("import sys\nfrom explorer.apps import dashboard\ntab = dashboard()\n"
            "print(sorted(m for m in sys.modules if m.startswith('explorer.apps.')))\n"
            "print([type(a).__name__ if a else None for a in tab.apps])")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    modules, apps = run.stdout.strip().splitlines()[-2:]
    assert apps == str(['ReceptiveFieldApp'] + [None] * (len(TABS) - 1))
    # (explorer.models still imports its BERT code eagerly: cheap; the weights load only in the attention app)
    for heavy in ("explorer.apps.attention_maps", "explorer.apps.cross_modal", "explorer.apps.cost_scaling",
                  "explorer.apps.head_to_head", "explorer.apps.long_range", "explorer.apps.intervene"):
        assert f"'{heavy}'" not in modules, heavy


def test_selecting_a_tab_builds_its_app_once():
    tab = dashboard()
    assert [tab.get_title(i) for i in range(len(TABS))] == [title for title, _ in TABS]
    assert isinstance(tab.apps[0], ReceptiveFieldApp) and tab.children[0].children == (tab.notice, tab.apps[0].widget)
    assert tab.apps[2] is None and tab.children[2].children == ()
    tab.selected_index = 2
    app = tab.apps[2]
    assert isinstance(app, CrossModalApp) and tab.children[2].children == (app.widget,)
    tab.selected_index = 0
    tab.selected_index = 2
    assert tab.apps[2] is app  # not rebuilt


def test_a_failing_tab_shows_the_error_and_is_retried():
    attempts = []

    def flaky():
        attempts.append(1)
        if len(attempts) == 1:
            raise ValueError("the model file is missing")
        return type("App", (), {"widget": W.HTML("built")})()

    tab = dashboard([("first", lambda: type("App", (), {"widget": W.HTML("one")})()), ("flaky", flaky)])
    tab.selected_index = 1  # must not raise into the kernel
    message = tab.children[1].children[0]
    assert tab.apps[1] is None and "dash-error" in message.value and "the model file is missing" in message.value
    assert "try again" in message.value
    tab.selected_index = 0
    tab.selected_index = 1
    assert tab.apps[1] is not None and tab.children[1].children[0].value == "built" and len(attempts) == 2
