"""explorer.bench.dashboard_load without a browser or Voila: percentiles against numpy, loopback-only URLs,
visitor-count bounds, every subcommand's parsing, the metadata's keys, the Voila command line, the serve-only mode's
page verdict and streaming fetch (against a stdlib server on 127.0.0.1) and its CPU accounting."""

import time

import numpy as np
import pytest

from explorer.bench import dashboard_load as dl


def test_summary_matches_numpy_linear_percentiles():
    samples = [3.0, 1.0, 4.0, 1.5, 9.0, 2.6, 5.0]
    stats = dl.summarize(samples)
    assert stats["p50"] == stats["median"] == pytest.approx(np.percentile(samples, 50, method="linear"))
    assert stats["p95"] == pytest.approx(np.percentile(samples, 95, method="linear"))
    assert stats["p95"] == pytest.approx(7.8)  # rank 0.95 * 6 = 5.7 between 5.0 and 9.0
    assert (stats["min"], stats["max"], stats["count"], stats["missing"]) == (1.0, 9.0, 7, 0)
    assert "linear" in stats["method"]


def test_summary_leaves_out_and_counts_missing():
    stats = dl.summarize([2.0, None, 4.0])
    assert (stats["count"], stats["missing"], stats["median"]) == (2, 1, 3.0)
    empty = dl.summarize([None])
    assert empty["count"] == 0 and empty["p95"] is None
    with pytest.raises(TypeError, match="samples"):
        dl.summarize(3.0)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8866/", "http://localhost:8866", "http://[::1]:9000/x.ipynb"])
def test_loopback_urls_are_accepted(url):
    assert dl.check_url(url).startswith(url.rstrip("/"))


@pytest.mark.parametrize("url", ["http://example.com:8866/", "http://10.0.0.2:8866/", "http://0.0.0.0:8866/",
                                 "ftp://127.0.0.1/", "http://127.0.0.1.nip.io:8866/"])
def test_other_hosts_are_refused_naming_url(url):
    with pytest.raises(ValueError, match="--url"):
        dl.check_url(url)
    with pytest.raises(ValueError, match="--url"):
        dl.parse_args(["latency", "--url", url])


@pytest.mark.parametrize("n", [0, 33, -1])
def test_visitor_count_bounds(n):
    with pytest.raises(ValueError, match="--n"):
        dl.check_counts([1, n], "--n", 1)
    with pytest.raises(ValueError, match="--n"):
        dl.parse_args(["visitors", "--n", "1", str(n)])


def test_counts_keep_order_drop_repeats_and_check_types():
    assert dl.check_counts([4, 1, 4, 32], "--n", 1) == [4, 1, 32]
    with pytest.raises(TypeError, match="--n"):
        dl.check_counts([1.5], "--n", 1)
    with pytest.raises(ValueError, match="--preheat"):
        dl.parse_args(["visitors", "--preheat", "0", "33"])


def test_parse_visitors():
    args = dl.parse_args(["visitors", "--n", "1", "4", "--preheat", "0", "4", "--cull-timeout", "30",
                          "--timeout", "300", "--out", "/tmp/x.json"])
    assert (args.command, args.n, args.preheat, args.cull_timeout, args.cull_interval) == \
        ("visitors", [1, 4], [0, 4], 30, 10)
    assert (args.timeout, args.out, args.url, args.close, args.repeats) == (300.0, "/tmp/x.json", None, "tab", 3)
    defaults = dl.parse_args(["visitors"])
    assert defaults.n == [1, 4, 8, 16] and defaults.preheat == [0] and defaults.cull_timeout == 60
    assert defaults.out.endswith("assets/benchmarks/dashboard_load_cpu.json")
    with pytest.raises(ValueError, match="--preheat"):
        dl.parse_args(["visitors", "--url", "http://127.0.0.1:8866/", "--preheat", "2"])
    with pytest.raises(ValueError, match="--timeout"):
        dl.parse_args(["visitors", "--timeout", "1"])


def test_parse_latency():
    args = dl.parse_args(["latency", "--repeats", "4", "--url", "http://127.0.0.1:8866/"])
    assert (args.command, args.repeats, args.url, args.timeout) == ("latency", 4, "http://127.0.0.1:8866/", 600.0)
    assert dl.parse_args(["latency"]).out.endswith("assets/benchmarks/dashboard_latency_cpu.json")
    with pytest.raises(ValueError, match="--repeats"):
        dl.parse_args(["latency", "--repeats", "0"])
    with pytest.raises(SystemExit):
        dl.parse_args(["nothing"])


def test_parse_latency_only():
    assert dl.parse_args(["latency"]).only is None  # every scenario
    args = dl.parse_args(["latency", "--only", "intervene_toggle", "round_trip_cost_calc", "intervene_toggle"])
    assert args.only == ["intervene_toggle", "round_trip_cost_calc"]
    assert set(dl.LATENCY_NAMES) == {*dl.SCENARIOS, "round_trip_cost_calc"}
    with pytest.raises(ValueError, match="--only"):
        dl.parse_args(["latency", "--only", "attention"])


def test_metadata_keys():
    meta = dl.machine_metadata(["visitors", "--n", "1"], chromium="1.0", cull={"cull_idle_timeout_s": 60})
    for key in ("cpu_model", "cpu_count", "cpu_affinity", "ram_total_gb", "python", "torch", "voila", "chromium",
                "git_commit", "date", "command", "percentiles", "cull"):
        assert key in meta, key
    assert meta["command"].endswith("explorer.bench.dashboard_load visitors --n 1")
    assert meta["date"].endswith("+00:00")  # UTC
    assert meta["cpu_affinity"] <= meta["cpu_count"]


def test_voila_command_loopback_cull_and_preheat_flags():
    plain = dl.voila_command("dashboard.ipynb", 9999, 30, 10, 0)
    assert "--Voila.ip=127.0.0.1" in plain and "--no-browser" in plain and "--port=9999" in plain
    assert "--MappingKernelManager.cull_idle_timeout=30" in plain
    assert "--MappingKernelManager.cull_interval=10" in plain
    assert not any("preheat" in part for part in plain)
    heated = dl.voila_command("dashboard.ipynb", 9999, 30, 10, 4)
    assert "--VoilaConfiguration.preheat_kernel=True" in heated
    assert "--VoilaConfiguration.default_pool_size=4" in heated


def test_run_summary_pools_rounds():
    def visitor(t, saw=True):
        return {"first_plot_s": t if saw else None, "saw_plot": saw, "errors": [], "error_outputs": 0,
                "kernel_rss_mb": 100.0}

    rounds = [{"visitors": [visitor(1.0)], "peak_total_rss_mb": 500.0, "cull": {"cull_s": 2.0,
                                                                               "shut_down_on_close": 1,
                                                                               "culled_by_server": 0}},
              {"visitors": [visitor(3.0), visitor(0, saw=False)], "peak_total_rss_mb": 700.0,
               "cull": {"cull_s": 5.0, "shut_down_on_close": 0, "culled_by_server": 2}}]
    run = dl.summarize_run(1, 0, rounds)
    assert run["p50_first_plot_s"] == 2.0 and run["all_saw_plot"] is False and run["saw_plot_count"] == 2
    assert (run["peak_total_rss_mb"], run["cull_s"]) == (700.0, 5.0)
    assert run["cull_mechanism"].startswith("mixed")
    assert all("visitors" not in r for r in run["rounds"])


def test_selectors_in_one_place():
    for scenario in [*dl.SCENARIOS.values(), dl.ROUND_TRIP]:
        assert scenario.control in dl.SELECTORS.values() and scenario.container in dl.SELECTORS.values()
        assert all(control in dl.SELECTORS.values() for control in scenario.controls)
        assert scenario.tab in dl.TAB_TITLES.values()


@pytest.mark.parametrize("url, blocked", [("http://127.0.0.1:8866/voila/static/x.js", False),
                                          ("ws://localhost:8866/api/kernels/x/channels", False),
                                          ("https://cdn.jsdelivr.net/npm/x.css", True),
                                          ("http://127.0.0.1.example.com/", True), ("data:text/plain,1", False)])
def test_browser_requests_to_other_hosts_are_aborted(url, blocked):
    assert bool(dl.NOT_LOOPBACK.match(url)) is blocked


def test_parse_serve_only():
    args = dl.parse_args(["serve-only"])
    assert (args.command, args.n, args.preheat, args.pool_manager) == ("serve-only", [1, 4, 8, 16, 32], [0], "fixed")
    assert (args.cull_timeout, args.cull_interval, args.round_timeout) == (300, 60, 300.0)
    assert args.out.endswith("assets/benchmarks/dashboard_load_serve_only_cpu.json")
    args = dl.parse_args(["serve-only", "--n", "4", "1", "--preheat", "0", "4", "--pool-manager", "voila"])
    assert (args.n, args.preheat, args.pool_manager) == ([4, 1], [0, 4], "voila")
    with pytest.raises(ValueError, match="--n"):
        dl.parse_args(["serve-only", "--n", "33"])
    with pytest.raises(ValueError, match="--round-timeout"):
        dl.parse_args(["serve-only", "--round-timeout", "601"])
    with pytest.raises(SystemExit):  # no --url: it measures its own server's processes
        dl.parse_args(["serve-only", "--url", "http://127.0.0.1:8866/"])


def test_page_report_needs_the_widget_view_and_no_error_text():
    view = '<script type="application/vnd.jupyter.widget-view+json">{"model_id": "m"}</script>'
    config = '"kernelId": "0123abcd-0000-4000-8000-0123456789ab"'
    good = dl.page_report(200, f"<html>{config}{view}</html>")
    assert good == {"served": True, "problems": [], "kernel_id": "0123abcd-0000-4000-8000-0123456789ab"}
    assert dl.page_report(200, "<html>no widget</html>")["problems"] == ["no widget view in the page"]
    traceback = dl.page_report(200, view + "There was an error when executing cell [1].")
    assert not traceback["served"] and traceback["problems"][0].startswith("error text")
    stderr = dl.page_report(200, view + '<div data-mime-type="application/vnd.jupyter.stderr">x</div>')
    assert not stderr["served"]
    assert dl.page_report(500, view)["problems"] == ["HTTP 500"]


def test_fetch_page_streams_to_the_end_on_loopback():
    import http.server
    import threading

    view = b'<script type="application/vnd.jupyter.widget-view+json">{}</script>'

    class Slow(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the stdlib's name
            self.send_response(200 if self.path == "/" else 404)
            self.end_headers()
            for part in (b"<html>", b"x" * 100_000, view, b"</html>"):
                self.wfile.write(part)
                self.wfile.flush()
                time.sleep(0.05)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        page = dl.fetch_page(url, timeout=10)
        assert page["served"] and page["bytes"] > 100_000 and page["status"] == 200
        assert 0.15 < page["page_s"] < 10 and page["first_byte_s"] <= page["page_s"]
        missing = dl.fetch_page(url + "missing", timeout=10)
        assert not missing["served"] and missing["page_s"] is None and "HTTP 404" in missing["problems"]
        results, wall = dl.fetch_together(url, 4, timeout=10)
        assert [r["served"] for r in results] == [True] * 4 and wall < 10
        assert max(r["start_offset_s"] for r in results) < 0.5
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(ValueError, match="--url"):
        dl.fetch_page("http://example.com:80/", timeout=1)


def test_tree_cpu_counts_exited_children():
    import subprocess
    import sys

    import psutil

    before = dl.tree_cpu_s(psutil.Process())
    subprocess.run([sys.executable, "-c", "import time\nt = time.process_time()\n"
                    "while time.process_time() - t < 0.3: pass"], check=True, timeout=60)
    assert dl.tree_cpu_s(psutil.Process()) - before >= 0.25


def test_voila_command_through_the_pool_launcher():
    fixed = dl.voila_command("dashboard.ipynb", 9999, 30, 10, 4, pool_fix=True, extra=["--x=1"])
    assert fixed[1].endswith("explorer/deploy/voila_pool.py") and fixed[2] == "dashboard.ipynb"
    assert "--VoilaConfiguration.default_pool_size=4" in fixed and fixed[-1] == "--x=1"
    assert dl.voila_command("dashboard.ipynb", 9999, 30, 10, 4)[0].endswith("voila")


def test_latency_table_gives_each_scenario_as_a_ratio_to_the_one_slider_page():
    from explorer.bench.dashboard_load.latency import ONE_SLIDER, ONE_SLIDER_NAME, latency_table

    assert ONE_SLIDER.tab == "" and ONE_SLIDER.keys == ("ArrowRight", "ArrowLeft")
    result = {"page_load": {"first_plot_s": 1.0, "errors": []},
              "one_slider_page": {"samples_s": [0.03, 0.04], "median_s": 0.035, "p95_s": 0.04},
              "scenarios": {"receptive_field_layers": {"samples_s": [0.07], "median_s": 0.07, "p95_s": 0.07,
                                                       "ratio_to_one_slider": 0.07 / 0.035, "page_median_s": 0.09},
                            "cost_scaling_run": {"samples_s": [0.5], "median_s": 0.5, "p95_s": 0.5,
                                                 "ratio_to_one_slider": 0.5 / 0.035, "work_median_s": 0.45,
                                                 "beyond_work_median_s": 0.05,
                                                 "beyond_work_ratio_to_one_slider": 0.05 / 0.035},
                            "speech_example": {"error": "TimeoutError: x"}}}
    lines = latency_table(result).splitlines()
    rows = {line.split()[0]: line.split() for line in lines[2:] if not line.startswith(" ")}
    assert float(rows[ONE_SLIDER_NAME][-2]) == 1.0
    assert float(rows["receptive_field_layers"][-2]) == pytest.approx(2.0, abs=0.01)  # 0.070 / 0.035
    assert float(rows["receptive_field_layers"][-1]) == 0.09  # the whole tab settled
    assert rows["speech_example"][1] == "error:"
    # the cost sweep's own timing is given apart: what is left is the control's cost
    work = next(line for line in lines if "its own work" in line)
    assert "0.450" in work and "0.050" in work and "1.43 x one-slider" in work
