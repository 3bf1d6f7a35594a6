"""Benchmark (not a test): the Webhook Log page load with many deliveries in the store.

Fills a fresh SQLite gateway with N deliveries (events posted in batches of 1000 to one webhook
whose receiver answers 200 at once), waits until all are delivered, then measures:
- the API calls the Webhook Log page makes on load (GET /admin/v1/webhooks and the first page
  of GET /admin/v1/deliveries?limit=50, with and without filters), each 30 times;
- the page load in headless Chromium: from navigating to #/log until the deliveries table is
  drawn, 10 times.
Prints the median and p95 of each. The target (issue #21): under 100 ms with 100,000 deliveries.

    target/console-test/venv/bin/python tests/console/bench_log.py \\
        --binary target/release/hookyard --deliveries 100000
"""

import argparse
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

from test_console import ADMIN_TOKEN, CHROMIUM_ARGS, INGEST_TOKEN, Gateway, Receiver, wait_until


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def report(name, ms):
    print(f"{name:<58} median {statistics.median(ms):7.1f} ms   p95 {pct(ms, 95):7.1f} ms   (n={len(ms)})")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--deliveries", type=int, default=2000)
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    args = ap.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="hookyard-console-bench-"))
    receiver = Receiver()
    gw = Gateway(Path(args.binary).resolve(), workdir, receiver)
    try:
        status, hook = gw.admin_api("POST", "/admin/v1/webhooks", {
            "name": "bench", "events": ["user.*"], "url": f"http://127.0.0.1:{receiver.port}/users",
            "signing": {"enabled": False}})
        assert status == 201, hook
        started = time.monotonic()
        posted = 0
        while posted < args.deliveries:
            n = min(1000, args.deliveries - posted)
            batch = [{"type": "user.updated", "data": {"employee_id": posted + i, "email": f"u{posted + i}@example.org"}}
                     for i in range(n)]
            status, body = gw.call("POST", f"http://127.0.0.1:{gw.public}/v1/events/batch", batch, INGEST_TOKEN)
            assert status == 202, (status, body)
            posted += n
        wait_until(f"{args.deliveries} deliveries delivered",
                   lambda: len(receiver.to("/users")) >= args.deliveries, timeout=3600)
        print(f"filled: {args.deliveries} deliveries in {time.monotonic() - started:.1f} s")

        def timed(path):
            req = urllib.request.Request(f"http://127.0.0.1:{gw.admin}{path}",
                                         headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
            t = time.perf_counter()
            with urllib.request.urlopen(req, timeout=30) as r:
                r.read()
            return (time.perf_counter() - t) * 1000

        for path in ["/admin/v1/webhooks", "/admin/v1/deliveries?limit=50",
                     f"/admin/v1/deliveries?limit=50&webhook={hook['id']}",
                     "/admin/v1/deliveries?limit=50&status=succeeded&event_type=user.updated"]:
            timed(path)
            report(f"GET {path[:52]}", [timed(path) for _ in range(30)])

        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(gw.console)
            page.get_by_label("Admin token").fill(ADMIN_TOKEN)
            page.get_by_role("button", name="Sign in").click()
            page.get_by_role("heading", name="Overview").wait_for()
            loads = []
            for i in range(11):
                page.goto(gw.console + "#/overview")
                page.get_by_role("heading", name="Overview").wait_for()
                t = time.perf_counter()
                page.evaluate("location.hash = '#/log'")
                page.locator("table[aria-label=Deliveries] tbody tr").nth(49).wait_for()
                if i:
                    loads.append((time.perf_counter() - t) * 1000)
            report("Webhook Log page: navigate to 50 rows drawn (Chromium)", loads)
            browser.close()
    finally:
        gw.stop()
        receiver.stop()


if __name__ == "__main__":
    main()
