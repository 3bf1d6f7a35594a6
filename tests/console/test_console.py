"""The admin console in a real browser: headless Chromium (Debian's package) driven by Playwright.

Starts the real gateway binary on 127.0.0.1 with a temporary SQLite store and a scripted receiver,
then walks the screens as an admin would: a wrong token refused, sign in, a change without the
CSRF token refused (403), the field-map plugin uploaded with the file picker, an event type added
to the catalog, a webhook created (with a title, its event ticked from the catalog) with two
request rows, a response row and an input row with the identifier ticked (a 422 naming a row is
shown on that row first), a real event delivered and found in the Webhook Log (by event type,
live, and by text search), replayed, "Send test event" showing the mapped body, an OAuth2
connection created and tested, a second plugin version uploaded and rolled back, "Try it" on a
version (its output, time and memory; a refused config), a plugin uploaded by drag and drop,
"Replay all dead" of a webhook whose receiver is down, sign-out.
Screenshots of every page at 1280x800 go to --screenshots.

Run by scripts/console-test.sh, which installs Chromium and Playwright first.
"""

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

ADMIN_TOKEN = "console-test-admin-token"
INGEST_TOKEN = "console-test-ingest-token"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


class Receiver:
    """A third party, the internal system's sink and an OAuth2 token server: records every
    request, answers 200 with {"id": 9001} (what the response mapping reads), or with a token
    on /token."""

    def __init__(self):
        self.requests = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                with outer.lock:
                    outer.requests.append((self.command, self.path, dict(self.headers), body))
                reply = b'{"id": 9001}'
                if self.path == "/token":
                    reply = b'{"access_token": "tok-console-test", "token_type": "Bearer", "expires_in": 3600}'
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            do_PUT = do_POST

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def to(self, path):
        with self.lock:
            return [r for r in self.requests if r[1] == path]

    def stop(self):
        self.server.shutdown()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(what, check, timeout=20.0):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for: {what}")
        time.sleep(0.05)


class Gateway:
    def __init__(self, binary, workdir, receiver):
        self.public = free_port()
        self.admin = free_port()
        config = workdir / "hookyard.toml"
        config.write_text(f"""
[server]
listen = "127.0.0.1:{self.public}"
admin_listen = "127.0.0.1:{self.admin}"
admin_token = "{ADMIN_TOKEN}"
ingest_token = "{INGEST_TOKEN}"

[store]
url = "sqlite://{workdir}/hookyard.db"

[sink]
url = "http://127.0.0.1:{receiver.port}/sink"

[delivery]
allow_networks = ["127.0.0.1/32"]
retry_base_ms = 50
retry_max_ms = 400
poll_interval_ms = 50

[plugins]
cache_dir = "{workdir}/plugin-cache"
compile_nice = 0
# The steps upload field-map themselves (the upload flow is what they test) and count its
# versions; the built-in install is tested in tests/it/builtin.rs.
builtin = []
""")
        self.log = open(workdir / "gateway.log", "wb")
        # HOOKYARD_* variables are config overrides to the gateway: the test's own
        # (HOOKYARD_CONSOLE_SCREENSHOTS...) must not reach it.
        env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKYARD_")}
        self.proc = subprocess.Popen([str(binary), "serve", "--config", str(config)],
                                     stdout=self.log, stderr=subprocess.STDOUT, cwd=workdir, env=env)
        wait_until("the gateway is ready", self.ready, timeout=30)

    def ready(self):
        if self.proc.poll() is not None:
            raise RuntimeError(f"the gateway exited with {self.proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.public}/readyz", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    @property
    def console(self):
        return f"http://127.0.0.1:{self.admin}/console/"

    def call(self, method, url, body=None, token=None, headers=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
        if token:
            req.add_header("authorization", f"Bearer {token}")
        if data is not None:
            req.add_header("content-type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                text = r.read()
                return r.status, json.loads(text) if text else None
        except urllib.error.HTTPError as e:
            text = e.read()
            try:
                return e.code, json.loads(text)
            except ValueError:
                return e.code, text

    def admin_api(self, method, path, body=None):
        return self.call(method, f"http://127.0.0.1:{self.admin}{path}", body, ADMIN_TOKEN)

    def post_event(self, event):
        status, body = self.call("POST", f"http://127.0.0.1:{self.public}/v1/events", event, INGEST_TOKEN)
        assert status == 202, (status, body)
        return body

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


class Run:
    """Steps run in order; the first failure stops the run (later steps need earlier ones)."""

    def __init__(self, page, shots, workdir):
        self.page, self.shots, self.workdir = page, shots, workdir
        self.passed, self.failed = [], []

    def step(self, name, fn):
        if self.failed:
            print(f"SKIP {name}")
            return
        started = time.monotonic()
        try:
            fn()
            self.passed.append(name)
            print(f"ok   {name} ({time.monotonic() - started:.1f}s)", flush=True)
        except Exception:
            self.failed.append(name)
            print(f"FAIL {name}\n{traceback.format_exc()}", flush=True)
            try:
                path = self.workdir / f"failure-{len(self.failed)}.png"
                self.page.screenshot(path=str(path))
                print(f"     screenshot of the failure: {path}")
            except Exception:
                pass

    def shot(self, name):
        if self.shots:
            self.page.screenshot(path=str(self.shots / f"{name}.png"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--plugins", required=True, help="folder of field_map.wasm and version_a.wasm")
    ap.add_argument("--screenshots", default="")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    args = ap.parse_args()
    plugins = Path(args.plugins)
    shots = Path(args.screenshots) if args.screenshots else None
    if shots:
        shots.mkdir(parents=True, exist_ok=True)

    workdir = Path(tempfile.mkdtemp(prefix="hookyard-console-"))
    receiver = Receiver()
    gw = Gateway(Path(args.binary).resolve(), workdir, receiver)
    third_party = f"http://127.0.0.1:{receiver.port}/users"
    state = {}
    run = None
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
            context = browser.new_context(viewport={"width": 1280, "height": 800})
            page = context.new_page()
            page.set_default_timeout(15000)
            expect.set_options(timeout=15000)
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("console", lambda m: m.type == "error" and "Failed to load resource" not in m.text and errors.append(m.text))
            run = Run(page, shots, workdir)

            def wrong_token():
                page.goto(gw.console)
                page.get_by_label("Admin token").fill("not-the-token")
                page.get_by_role("button", name="Sign in").click()
                expect(page.get_by_role("alert")).to_contain_text("Wrong admin token")
                assert not context.cookies(), context.cookies()
                page.get_by_label("Admin token").fill("")
                run.shot("signin")

            def sign_in():
                page.get_by_label("Admin token").fill(ADMIN_TOKEN)
                page.get_by_role("button", name="Sign in").click()
                expect(page.get_by_role("navigation", name="Main").get_by_role("link", name="Webhooks")).to_be_visible()
                expect(page.get_by_role("heading", name="Overview")).to_be_visible()
                [cookie] = context.cookies()
                assert cookie["name"] == "hookyard_console", cookie
                assert cookie["httpOnly"] and cookie["sameSite"] == "Strict", cookie
                state["cookie"] = f"{cookie['name']}={cookie['value']}"
                assert page.evaluate("document.cookie") == "", "the session cookie is HttpOnly"

            def csrf_refused():
                status = page.evaluate("""async () => (await fetch('/admin/v1/webhooks', {
                    method: 'POST', headers: {'Content-Type': 'application/json'},
                    body: JSON.stringify({name: 'sneaky', events: ['*'], url: 'http://127.0.0.1:9/'})})).status""")
                assert status == 403, status
                _, hooks = gw.admin_api("GET", "/admin/v1/webhooks")
                assert not [w for w in hooks["items"] if w["name"] == "sneaky"], hooks
                # The same request with the session's token goes through to the API (422 here).
                status = page.evaluate("""async () => {
                    const s = await (await fetch('/console/session')).json();
                    return (await fetch('/admin/v1/webhooks', {method: 'POST',
                        headers: {'Content-Type': 'application/json', 'X-CSRF-Token': s.csrf_token},
                        body: JSON.stringify({name: 'no url'})})).status; }""")
                assert status == 422, status

            def upload_plugin():
                page.get_by_role("link", name="Plugins").click()
                expect(page.get_by_role("heading", name="Plugins", exact=True)).to_be_visible()
                page.get_by_label("Upload plugin").set_input_files(str(plugins / "field_map.wasm"))
                expect(page.get_by_role("heading", name="Plugin field-map")).to_be_visible(timeout=60000)
                versions = page.get_by_role("table", name="Versions")
                expect(versions.get_by_role("row")).to_have_count(2)
                expect(versions).to_contain_text("active")

            def event_type():
                page.get_by_role("link", name="Event types").click()
                expect(page.get_by_role("heading", name="Event types")).to_be_visible()
                page.get_by_role("button", name="New event type").click()
                expect(page.get_by_role("heading", name="New event type")).to_be_visible()
                page.get_by_label("Name", exact=True).fill("user.created")
                page.get_by_label("Description", exact=True).fill("A user was created in the directory")
                page.get_by_label("Schema of data (JSON Schema)").fill(json.dumps({
                    "type": "object", "properties": {
                        "id": {"type": "string"}, "employee_id": {"type": "integer"},
                        "email": {"type": "string"}}}))
                page.get_by_label("Example", exact=True).fill(json.dumps(
                    {"id": "u-1", "employee_id": 1001, "email": "Jane.Doe@Example.com"}))
                page.get_by_role("button", name="Save").click()
                table = page.get_by_role("table", name="Event types")
                expect(table).to_contain_text("user.created")
                expect(table).to_contain_text("A user was created in the directory")
                _, types = gw.admin_api("GET", "/admin/v1/event-types/user.created")
                assert types["example"]["employee_id"] == 1001, types
                run.shot("event-types")

            def create_webhook():
                page.get_by_role("navigation", name="Main").get_by_role("link", name="Webhooks").click()
                page.get_by_role("link", name="New webhook").click()
                expect(page.get_by_role("heading", name="New webhook")).to_be_visible()
                page.get_by_label("Name", exact=True).fill("hr-users")
                page.get_by_label("Title", exact=True).fill("HR users (Workday)")
                page.get_by_label("URL", exact=True).fill(third_party)
                # The catalog's type is a checkbox.
                page.get_by_role("group", name="Events").get_by_role("checkbox", name="user.created").check()
                # A static header marked secret: write-only from then on.
                headers = page.get_by_role("table", name="Static headers")
                headers.get_by_role("button", name="Add header").click()
                headers.get_by_role("textbox", name="Header name").fill("X-Api-Key")
                headers.get_by_label("Header value").fill("hdr-secret-1")
                headers.get_by_role("checkbox", name="Secret header").check()
                page.get_by_label("Plugin", exact=True).select_option("field-map")

                req = page.get_by_role("table", name="Request parameters")
                for _ in range(3):
                    req.get_by_role("button", name="Add row").click()
                req.get_by_role("textbox", name="API field").nth(0).fill("emp_id")
                req.get_by_role("combobox", name="Internal field").nth(0).fill("employee_id")
                req.get_by_role("textbox", name="API field").nth(1).fill("user.email")
                req.get_by_role("combobox", name="Internal field").nth(1).fill("email")
                req.get_by_role("combobox", name="Conversion").nth(1).select_option("lower")
                # A row the plugin refuses: the 422 must land on that row.
                req.get_by_role("textbox", name="API field").nth(2).fill("oops")
                req.get_by_role("combobox", name="Internal field").nth(2).fill("@nonsense")

                resp = page.get_by_role("table", name="Response parameters")
                resp.get_by_role("button", name="Add row").click()
                resp.get_by_role("textbox", name="API field").fill("id")
                resp.get_by_role("combobox", name="Internal field").fill("hr_id")
                resp.get_by_role("combobox", name="Conversion").select_option("string")

                inp = page.get_by_role("table", name="Input parameters")
                inp.get_by_role("button", name="Add row").click()
                inp.get_by_role("textbox", name="API field").fill("work_email")
                inp.get_by_role("combobox", name="Internal field").fill("email")
                inp.get_by_role("checkbox", name="User identifier").check()

                page.get_by_label("Write back mapped response fields").check()
                page.get_by_label("Accept pushes from the third party").check()
                page.get_by_role("group", name="Inbound authentication").get_by_label("Key").fill("inbound-key")
                page.get_by_role("switch", name="JIT provisioning").check()

                page.get_by_role("button", name="Save").click()
                expect(req.locator("tr.invalid")).to_have_count(1)
                expect(req.locator("tr.invalid").get_by_role("alert")).to_contain_text("request[2]")
                expect(req.locator("tr.invalid").get_by_role("textbox", name="API field")).to_have_value("oops")
                _, hooks = gw.admin_api("GET", "/admin/v1/webhooks")
                assert not [w for w in hooks["items"] if w["name"] == "hr-users"], "nothing saved on a 422"
                req.locator("tr.invalid").get_by_role("button", name="Remove").click()

                page.get_by_role("button", name="Save").click()
                expect(page.get_by_role("heading", name="Webhook hr-users")).to_be_visible()
                _, hooks = gw.admin_api("GET", "/admin/v1/webhooks")
                [hook] = [w for w in hooks["items"] if w["name"] == "hr-users"]
                state["hook"] = hook
                assert hook["title"] == "HR users (Workday)", hook
                assert hook["events"] == ["user.created"], hook
                assert hook["secret_headers"] == ["X-Api-Key"], hook
                assert hook["headers"] == {"X-Api-Key": "********"}, "secret headers are write-only"
                assert hook["plugin"]["config"] == {
                    "request": [{"api_field": "emp_id", "field": "employee_id"},
                                {"api_field": "user.email", "field": "email", "convert": "lower"}],
                    "response": [{"api_field": "id", "field": "hr_id", "convert": "string"}],
                    "input": [{"api_field": "work_email", "field": "email", "identifier": True}],
                }, hook["plugin"]
                assert hook["inbound"]["jit_provisioning"] is True, hook
                assert hook["inbound"]["auth"]["value"] == "********", "secrets are write-only"
                # The form shows what was saved; the inbound URL with its copy button.
                expect(page.get_by_role("table", name="Input parameters").get_by_role("checkbox", name="User identifier")).to_be_checked()
                expect(page.get_by_role("button", name="Copy inbound URL")).to_be_visible()
                expect(page.get_by_text(hook["inbound_url"])).to_be_visible()
                page.get_by_role("button", name="Reveal signing secret").click()
                expect(page.locator("code.secret")).to_contain_text("whsec_")
                page.evaluate("window.scrollTo(0, 0)")
                run.shot("webhook-edit")
                page.get_by_role("table", name="Request parameters").scroll_into_view_if_needed()
                run.shot("webhook-mapping")

            def deliver_and_find_in_log():
                gw.post_event({"type": "user.created", "data": {"id": "u-7", "employee_id": 7, "email": "Ada@X.org"}})
                [(_, _, headers, body)] = wait_until("the mapped delivery", lambda: receiver.to("/users"))
                assert json.loads(body) == {"emp_id": 7, "user": {"email": "ada@x.org"}}, body
                assert {k.lower(): v for k, v in headers.items()}.get("x-api-key") == "hdr-secret-1", headers
                # The response row wrote the third party's id back to the internal system.
                wait_until("the write-back of hr_id to the sink", lambda: any(
                    b'"hr_id":"9001"' in r[3].replace(b" ", b"") for r in receiver.to("/sink")))
                page.get_by_role("link", name="Webhook Log").click()
                expect(page.get_by_role("heading", name="Webhook Log")).to_be_visible()
                page.get_by_label("Event type").fill("user.created")
                page.get_by_role("button", name="Filter").click()
                rows = page.get_by_role("table", name="Deliveries").locator("tbody tr")
                expect(rows).to_have_count(1)
                expect(rows.first).to_contain_text("succeeded")
                # Live: a new delivery shows up without a reload.
                gw.post_event({"type": "user.created", "data": {"id": "u-8", "employee_id": 8, "email": "Bob@X.org"}})
                expect(rows).to_have_count(2, timeout=15000)
                wait_until("both deliveries succeeded", lambda: len(receiver.to("/users")) == 2)
                page.get_by_label("Webhook", exact=True).select_option(label="hr-users")
                page.get_by_role("button", name="Filter").click()
                expect(rows).to_have_count(2)
                # Text search over the event: the second event's address, in another case.
                page.get_by_label("Search", exact=True).fill("bob@x.org")
                page.get_by_role("button", name="Filter").click()
                expect(rows).to_have_count(1)
                rows.first.get_by_role("link").click()
                expect(page.get_by_role("region", name="Attempt 1")).to_contain_text("bob@x.org")
                page.go_back()
                expect(page.get_by_label("Search", exact=True)).to_have_value("bob@x.org")
                expect(rows).to_have_count(1)
                page.get_by_label("Search", exact=True).fill("nobody@nowhere.example")
                page.get_by_role("button", name="Filter").click()
                expect(page.get_by_text("No deliveries match.")).to_be_visible()
                page.get_by_label("Search", exact=True).fill("")
                page.get_by_role("button", name="Filter").click()
                expect(rows).to_have_count(2)
                run.shot("log")
                rows.last.get_by_role("link").click()
                expect(page.get_by_role("heading", name="Attempt 1")).to_be_visible()
                expect(page.get_by_role("region", name="Attempt 1")).to_contain_text("ada@x.org")
                expect(page.get_by_role("region", name="Attempt 1")).to_contain_text("9001")
                run.shot("delivery")

            def replay():
                before = len(receiver.to("/users"))
                page.get_by_role("button", name="Replay").click()
                wait_until("the replayed delivery", lambda: len(receiver.to("/users")) == before + 1)
                body = json.loads(receiver.to("/users")[-1][3])
                assert body == {"emp_id": 7, "user": {"email": "ada@x.org"}}, body
                def attempt_two():
                    page.reload()
                    try:
                        expect(page.get_by_role("heading", name="Attempt 2")).to_be_visible(timeout=1000)
                        return True
                    except AssertionError:
                        return False
                wait_until("attempt 2 in the log", attempt_two)

            def send_test_event():
                page.get_by_role("navigation", name="Main").get_by_role("link", name="Webhooks").click()
                page.get_by_role("table", name="Webhooks").get_by_role("link", name="hr-users", exact=True).click()
                expect(page.get_by_role("heading", name="Webhook hr-users")).to_be_visible()
                before = len(receiver.to("/users"))
                page.get_by_role("button", name="Send test event").click()
                result = page.get_by_role("region", name="Test result")
                # The catalog's example, mapped by the webhook's request rows.
                expect(result).to_contain_text("200 in")
                expect(result).to_contain_text("jane.doe@example.com")
                expect(result).to_contain_text("emp_id")
                expect(result).to_contain_text("9001")
                wait_until("the test request", lambda: len(receiver.to("/users")) == before + 1)
                body = json.loads(receiver.to("/users")[-1][3])
                assert body == {"emp_id": 1001, "user": {"email": "jane.doe@example.com"}}, body
                result.scroll_into_view_if_needed()
                run.shot("send-test")

            def connection():
                page.get_by_role("link", name="Connections").click()
                expect(page.get_by_role("heading", name="Connections")).to_be_visible()
                page.get_by_role("button", name="New connection").click()
                page.get_by_label("Name", exact=True).fill("hr-oauth")
                page.get_by_label("Type", exact=True).select_option("oauth2_client_credentials")
                page.get_by_label("token url").fill(f"http://127.0.0.1:{receiver.port}/token")
                page.get_by_label("client id").fill("hookyard")
                page.get_by_label("client secret").fill("s3cret-console")
                page.get_by_role("button", name="Save").click()
                table = page.get_by_role("table", name="Connections")
                expect(table).to_contain_text("hr-oauth")
                expect(table).to_contain_text("oauth2_client_credentials")
                _, conn = gw.admin_api("GET", "/admin/v1/connections/hr-oauth")
                assert conn["auth"]["client_secret"] == "********", "secrets are write-only"
                table.get_by_role("button", name="hr-oauth").click()
                expect(page.get_by_role("heading", name="Connection hr-oauth")).to_be_visible()
                page.get_by_role("button", name="Test connection").click()
                expect(page.get_by_text("The token fetch worked:")).to_be_visible()
                expect(page.locator("pre").last).to_contain_text("expires_in_secs")
                assert b"tok-console-test" not in page.content().encode(), "the token is never shown"
                tokens = [r for r in receiver.to("/token") if b"client_credentials" in r[3]]
                assert tokens, "the token server was asked"
                run.shot("connections")

            def second_version_and_rollback():
                page.get_by_role("link", name="Plugins").click()
                page.get_by_role("link", name="field-map").click()
                # The plugins list has an "Upload plugin" too (named from the file): wait for the
                # plugin's own page, whose upload adds a version of field-map.
                expect(page.get_by_role("heading", name="Plugin field-map")).to_be_visible()
                page.get_by_label("Upload plugin").set_input_files(str(plugins / "version_a.wasm"))
                versions = page.get_by_role("table", name="Versions")
                expect(versions.get_by_role("row")).to_have_count(3, timeout=60000)
                expect(page.get_by_role("button", name="Activate version 1")).to_be_visible()
                _, p = gw.admin_api("GET", "/admin/v1/plugins/field-map")
                assert p["active"] == 2, p
                page.get_by_role("button", name="Activate version 1").click()
                expect(page.get_by_role("button", name="Activate version 2")).to_be_visible()
                _, p = gw.admin_api("GET", "/admin/v1/plugins/field-map")
                assert p["active"] == 1, p
                expect(versions.get_by_role("row").nth(2)).to_contain_text("hr-users")
                run.shot("plugin")

            def try_it():
                panel = page.get_by_role("region", name="Try it", exact=True)
                panel.get_by_label("Version", exact=True).select_option("1")
                panel.get_by_label("Webhook", exact=True).select_option(label="hr-users")
                # Picking the webhook shows its config, to edit.
                expect(panel.get_by_label("Config", exact=True)).to_have_value(re.compile('"emp_id"'))
                panel.get_by_label("Event", exact=True).fill(json.dumps(
                    {"type": "user.created", "data": {"employee_id": 42, "email": "Try.Me@X.org"}}))
                before = len(receiver.to("/users"))
                panel.get_by_role("button", name="Run").click()
                out = page.get_by_role("region", name="Try it output")
                expect(out).to_contain_text("send 1 request(s)")
                expect(out).to_contain_text("try.me@x.org")
                expect(out).to_contain_text('"emp_id": 42')
                expect(out).to_contain_text(" ms (instantiation included)")
                expect(out).to_contain_text("peak")
                assert len(receiver.to("/users")) == before, "a try sends nothing"
                assert "null" not in out.inner_text().split(), out.inner_text()
                panel.evaluate("e => e.scrollIntoView()")
                run.shot("plugin-try")
                # A config the plugin refuses: the error, from the API's 422.
                panel.get_by_label("Config", exact=True).fill(json.dumps(
                    {"request": [{"api_field": "x", "field": "y", "convert": "uppper"}]}))
                panel.get_by_role("button", name="Run").click()
                expect(out.get_by_role("alert")).to_contain_text("invalid_config")
                expect(out.get_by_role("alert")).to_contain_text("uppper")
                # Not JSON: said before anything is sent.
                panel.get_by_label("Event", exact=True).fill("{not json")
                panel.get_by_role("button", name="Run").click()
                expect(panel.get_by_role("alert")).to_contain_text("Event is not JSON")

            def back_to_plugins():
                page.get_by_role("link", name="Back to Plugins").click()
                expect(page.get_by_role("table", name="Plugins")).to_contain_text("hr-users")
                run.shot("plugins")

            def drop_upload():
                # A file dropped on the drop zone: a new plugin named after the file.
                import base64
                data = base64.b64encode((plugins / "version_b.wasm").read_bytes()).decode()
                transfer = page.evaluate_handle("""(b64) => {
                    const bin = atob(b64);
                    const bytes = new Uint8Array(bin.length);
                    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
                    const dt = new DataTransfer();
                    dt.items.add(new File([bytes], "version_b.wasm", {type: "application/wasm"}));
                    return dt; }""", data)
                page.dispatch_event("div.drop", "drop", {"dataTransfer": transfer})
                expect(page.get_by_role("heading", name="Plugin version-b")).to_be_visible(timeout=60000)
                _, p = gw.admin_api("GET", "/admin/v1/plugins/version-b")
                assert p["active"] == 1 and len(p["versions"]) == 1, p
                page.get_by_role("link", name="Back to Plugins").click()
                expect(page.get_by_role("table", name="Plugins")).to_contain_text("version-b")

            def replay_all_dead():
                # A webhook whose receiver is down, one attempt: its delivery goes dead.
                status, body = gw.admin_api("POST", "/admin/v1/event-types", {"name": "order.placed"})
                assert status == 201, body
                status, dead_hook = gw.admin_api("POST", "/admin/v1/webhooks", {
                    "name": "dead-end", "events": ["order.placed"], "url": f"http://127.0.0.1:{free_port()}/",
                    "retry": {"max_attempts": 1}})
                assert status == 201, dead_hook
                gw.post_event({"type": "order.placed", "data": {"order": "o-1"}})
                page.get_by_role("link", name="Webhook Log").click()
                page.get_by_label("Webhook", exact=True).select_option(label="dead-end")
                page.get_by_label("Status", exact=True).select_option("dead")
                rows = page.get_by_role("table", name="Deliveries").locator("tbody tr")
                def dead_row():
                    page.get_by_role("button", name="Filter").click()
                    try:
                        expect(rows).to_have_count(1, timeout=1000)
                        return True
                    except AssertionError:
                        return False
                wait_until("the dead delivery in the log", dead_row)
                expect(rows.first).to_contain_text("dead")
                page.get_by_role("button", name="Replay all dead of this webhook").click()
                expect(page.get_by_role("status")).to_contain_text("1 dead deliveries queued again")
                def two_attempts():
                    _, d = gw.admin_api("GET", f"/admin/v1/deliveries?webhook={dead_hook['id']}")
                    items = d["items"]
                    return len(items) == 1 and items[0]["attempts"] == 2 and items[0]["status"] == "dead"
                wait_until("the replayed delivery's second attempt", two_attempts)

            def other_pages():
                page.get_by_role("navigation", name="Main").get_by_role("link", name="Webhooks").click()
                table = page.get_by_role("table", name="Webhooks")
                expect(table).to_contain_text("hr-users")
                expect(table).to_contain_text("HR users (Workday)")
                expect(table).to_contain_text("100% of")
                run.shot("webhooks")
                page.get_by_role("link", name="Overview").click()
                expect(page.get_by_role("region", name="Deliveries per minute")).to_be_visible()
                # A second sample draws the lines.
                expect(page.locator("svg.spark path.line").first).to_be_attached(timeout=12000)
                run.shot("overview")

            def sign_out():
                page.get_by_role("button", name="Sign out").click()
                expect(page.get_by_label("Admin token")).to_be_visible()
                status, _ = gw.call("GET", f"http://127.0.0.1:{gw.admin}/admin/v1/webhooks",
                                    headers={"cookie": state["cookie"]})
                assert status == 401, status
                assert not errors, errors

            run.step("a wrong token is refused", wrong_token)
            run.step("sign in", sign_in)
            run.step("a change without the CSRF token is refused", csrf_refused)
            run.step("upload the field-map plugin", upload_plugin)
            run.step("add an event type to the catalog", event_type)
            run.step("create a webhook with mapping tables (a 422 shown on its row)", create_webhook)
            run.step("deliver an event and find it in the Webhook Log (filters, live, text search)", deliver_and_find_in_log)
            run.step("replay it", replay)
            run.step("send a test event and see the mapped body", send_test_event)
            run.step("create an OAuth2 connection and test it", connection)
            run.step("upload a second plugin version and roll back", second_version_and_rollback)
            run.step("try a plugin version (output, time, memory; a refused config)", try_it)
            run.step("back to the plugins list", back_to_plugins)
            run.step("upload a plugin by drag and drop", drop_upload)
            run.step("replay all dead of a webhook", replay_all_dead)
            run.step("webhooks, overview", other_pages)
            run.step("sign out", sign_out)
            browser.close()
    finally:
        gw.stop()
        receiver.stop()
    if run is None:
        print("console: 0 passed, 1 failed")
        return 1
    print(f"console: {len(run.passed)} passed, {len(run.failed)} failed")
    if run.failed:
        print(f"gateway log: {workdir / 'gateway.log'}")
    return 1 if run.failed else 0


if __name__ == "__main__":
    sys.exit(main())
