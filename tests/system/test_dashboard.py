"""
The web dashboard at /ui/: its files over HTTP (in memory and over a real port) without
changing any answer of the seed API, and the page itself in a real headless Chromium
against a daemon with real Redis and libvirt test-driver PMs: it loads the fleet from
/v1/fleet and shows the PMs as the API does, follows /v1/events (VMs created and destroyed
through the API show and go without a reload), falls back to reloading the fleet when the
events cannot be followed, creates and destroys VMs that the API then shows, shows why a
create failed, puts VM names on the page as text, shows each VM's state as /vm/info has it
and stops, starts, suspends, resumes, reboots, migrates and resizes it (saying why when the
daemon refuses), and stays usable at a few hundred PMs (a filter finds a PM or a VM; a PM
shows its VMs once opened). Screenshots go to test-artifacts/.

The first render of a fleet of 1,000 PMs and 10,000 VMs is measured (printed, not
asserted) when C{VORCHD_DASHBOARD_SCALE} is set (C{1000x10000}, or any C{PMSxVMS}).
"""

from __future__ import annotations

import http.client
import os
import re
import time
import urllib.parse
import urllib.request
from html.parser import HTMLParser

from twisted.internet import defer, reactor, tcp, threads
from twisted.trial.unittest import SkipTest, TestCase

from tests import browser
from tests.clients import InMemoryClient, LoopbackClient
from tests.harness import FLAVORS, get_json, require, start_daemon

# Two PMs; flavor 3 (4 CPUs) fits on neither.
SIZES = [(2, 4096), (3, 4096)]
# The browser's two PMs of 1 CPU take 3 once overcommitted: still not flavor 3.
# With a libvirt network, whose made-up leases give each VM an address at once.
BROWSER_NET = "vorchd-net"
BROWSER_SIZES = [(1, 4096, True, [BROWSER_NET]), (1, 4096, True, [BROWSER_NET])]
CPU_RATIO = 3
# A name that would be markup if the page ever put it in as HTML.
TRICKY_NAME = 'web <b>bold</b> & "quoted" ünï 🚀'


class Links(HTMLParser):
    """
    The files a page loads: its scripts' src and its links' href.
    """

    def __init__(self):
        super().__init__()
        self.scripts: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "script" and "src" in attrs:
            self.scripts.append(attrs["src"])
        if tag == "link" and attrs.get("rel") == "stylesheet":
            self.links.append(attrs["href"])


class DashboardHTTPTestsMixin:
    """
    The dashboard's files and their neighbours, answered by the daemon.
    """

    client_type: type

    async def setUp(self):
        self.daemon = await start_daemon(self, SIZES)
        self.client = self.client_type(self.daemon)
        self.addCleanup(self.client.close)

    async def test_page_and_its_files(self):
        """
        /ui/ is an HTML page whose script and style sheet are served too, all with a
        content security policy that only lets the page run its own files.
        """
        page = await self.client.call("/ui/")
        self.assertEqual(page.status, 200)
        self.assertEqual(page.headers.getRawHeaders("content-type"), ["text/html; charset=utf-8"])
        self.assertIn(b"<title>vorchd</title>", page.raw)
        links = Links()
        links.feed(page.raw.decode("utf-8"))
        self.assertEqual(links.scripts, ["app.js"])
        self.assertEqual(links.links, ["style.css"])
        for name, kind in (("app.js", "text/javascript"), ("style.css", "text/css")):
            answer = await self.client.call("/ui/" + name)
            self.assertEqual(answer.status, 200, name)
            self.assertEqual(
                answer.headers.getRawHeaders("content-type"), [f"{kind}; charset=utf-8"]
            )
            self.assertGreater(len(answer.raw), 1000, name)
        [policy] = page.headers.getRawHeaders("content-security-policy")
        self.assertIn("script-src 'self'", policy)
        self.assertIn("default-src 'none'", policy)
        self.assertEqual(page.headers.getRawHeaders("x-content-type-options"), ["nosniff"])

    async def test_head(self):
        """
        HEAD on a file of the dashboard answers the headers GET does, and no body.
        """
        for path in ("/ui/", "/ui/app.js", "/ui/style.css"):
            get = await self.client.call(path)
            head = await self.client.call(path, method="HEAD")
            self.assertEqual((head.status, head.raw), (200, b""))
            for name in ("content-type", "content-security-policy", "cache-control"):
                self.assertEqual(
                    head.headers.getRawHeaders(name), get.headers.getRawHeaders(name), name
                )

    async def test_seed_answers_unchanged(self):
        """
        / and every other path, under /ui/ or not, still answer the seed API's 0, and so do
        other methods on the dashboard's own paths.
        """
        for path in (
            "/",
            "/ui",
            "/ui/index.html",
            "/ui/x",
            "/ui//",
            "/ui/app.js/",
            "/UI/",
            "/ui%2f",
        ):
            answer = await self.client.call(path)
            self.assertEqual((answer.status, answer.json), (200, 0), path)
            self.assertEqual(answer.headers.getRawHeaders("content-type"), ["application/json"])
        for method in ("POST", "PUT", "DELETE"):
            answer = await self.client.call("/ui/", method=method)
            self.assertEqual((answer.status, answer.json), (200, 0), method)
        types = await self.client.call("/vm/types")
        self.assertEqual(types.json, {"types": FLAVORS})


class InMemoryDashboardHTTPTests(DashboardHTTPTestsMixin, TestCase):
    """
    The dashboard's files through StubTreq over the daemon's resource.
    """

    client_type = InMemoryClient


class LoopbackDashboardHTTPTests(DashboardHTTPTestsMixin, TestCase):
    """
    The dashboard's files over the daemon's real port.
    """

    client_type = LoopbackClient

    async def test_content_length(self):
        """
        GET and HEAD on the page both give its length in Content-Length (which Twisted's
        own client keeps to itself: read here with http.client).
        """
        host, port = self.daemon.url.removeprefix("http://").split(":")

        def lengths():
            out = []
            for method in ("GET", "HEAD"):
                conn = http.client.HTTPConnection(host, int(port), timeout=10)
                try:
                    conn.request(method, "/ui/")
                    response = conn.getresponse()
                    out.append((response.getheader("content-length"), len(response.read())))
                finally:
                    conn.close()
            return out

        (get_length, get_body), (head_length, head_body) = await threads.deferToThread(lengths)
        self.assertEqual(get_length, str(get_body))
        self.assertEqual((head_length, head_body), (get_length, 0))


# -- in a real browser ------------------------------------------------------------------------


class API:
    """
    Blocking calls of the seed API and /v1/fleet, for the browser's thread.
    """

    def __init__(self, base: str):
        self.base = base

    def __call__(self, path: str, **args):
        return get_json(f"{self.base}/{path}?{urllib.parse.urlencode(args)}")


def numbers(card) -> dict[str, tuple[float, float]]:
    """
    The free and capacity figures a PM card shows, by resource.
    """
    from selenium.webdriver.common.by import By

    shown = {}
    for row in card.find_elements(By.CSS_SELECTOR, ".resource"):
        free = float(row.find_element(By.CSS_SELECTOR, ".free").text)
        capacity = float(row.find_element(By.CSS_SELECTOR, ".capacity").text)
        shown[row.get_attribute("data-resource")] = (free, capacity)
    return shown


def pm_as_api(pm: dict) -> dict[str, tuple[float, float]]:
    return {r: (pm["free"][r], pm["capacity"][r]) for r in ("cpu", "ram", "disk")}


# Every PM card the page shows, read in one go (a few hundred cards, one WebDriver call).
READ_CARDS = """
return [...document.querySelectorAll("article.pm")].map((card) => ({
  pmid: Number(card.dataset.pmid),
  state: card.querySelector(".badge").textContent,
  open: card.classList.contains("open"),
  room: Object.fromEntries([...card.querySelectorAll(".resource")].map((r) => [
    r.dataset.resource,
    [".free", ".capacity"].map((css) => Number(r.querySelector(css).textContent)),
  ])),
  vms: card.querySelector(".vmcount").textContent,
  rows: [...card.querySelectorAll("tr.vm")].map((row) => Number(row.dataset.vmid)),
}));
"""


def cards(driver) -> list[dict]:
    return driver.execute_script(READ_CARDS)


def card_of(pm: dict, open_: bool = False, rows=(), found: int | None = None) -> dict:
    """
    The card the page should show for a PM of /v1/fleet: open or not, with these VM
    rows, and how many of its VMs the filter C{found}, if it searched them.
    """
    count = len(pm["vmids"])
    return {
        "pmid": pm["pmid"],
        "state": pm["state"],
        "open": open_,
        "room": {r: [pm["free"][r], pm["capacity"][r]] for r in ("cpu", "ram", "disk")},
        "vms": f"{count} VM{'' if count == 1 else 's'}"
        + (f" · {found} found" if found is not None else ""),
        "rows": list(rows),
    }


def loads(driver) -> int:
    """
    How many times the page has loaded /v1/fleet.
    """
    return int(driver.execute_script("return document.body.dataset.loaded || '0'"))


def first_render_ms(driver) -> float | None:
    """
    Milliseconds from the page's navigation to its first render of the fleet drawn, as
    the page marks it; None before then.
    """
    return driver.execute_script(
        "const m = performance.getEntriesByName('vorchd-first-render');"
        " return m.length ? m[0].startTime : null;"
    )


def search(b: browser.Browser, text: str) -> None:
    """
    Type C{text} into the filter box, in place of what it held.
    """
    from selenium.webdriver.common.by import By

    box = b.driver.find_element(By.ID, "filter")
    box.clear()
    box.send_keys(text)


def run_in_browser(steps, name: str, *args) -> None:
    """
    Run C{steps(b, *args)} with a fresh browser, saving a screenshot named C{name} if it
    fails.
    """
    b = browser.Browser()
    try:
        steps(b, *args)
    except BaseException:
        b.save(f"{name}-failure")
        raise
    finally:
        b.quit()


async def create_vms(daemon, names, at_once: int = 32, instance_type: int = 1) -> list[int]:
    """
    Create a VM of each name through the API, C{at_once} requests in flight; their vmids.
    """
    client = LoopbackClient(daemon)
    limit = defer.DeferredSemaphore(at_once)

    async def one(name: str) -> int:
        query = urllib.parse.urlencode({"name": name, "instance_type": instance_type})
        answer = await client.call(f"/vm/create?{query}&image_id=1")
        return answer.json["vmid"]

    try:
        return await defer.gatherResults(
            [limit.run(lambda n=n: defer.ensureDeferred(one(n))) for n in names],
            consumeErrors=True,
        )
    finally:
        await client.close()


class BrowserTests(TestCase):
    """
    The page in headless Chromium, against a daemon over its real port.
    """

    timeout = 240

    async def setUp(self):
        require(browser.missing())
        self.daemon = await start_daemon(
            self,
            BROWSER_SIZES,
            allocation={"cpu_ratio": CPU_RATIO},
            network={"attach": BROWSER_NET},
        )

    async def test_dashboard(self):
        """
        The page loads the fleet once and follows its events: it shows every PM as
        pm/query does (overcommit included), and the flavors and images; a VM created from
        the page is in the API with its name as typed, and on the page as text; one
        created through the API shows up by itself, with no reload of the fleet; a refused
        create says why; a VM is destroyed from the page only once confirmed (a
        double-click is not), and is then gone from the API. A screenshot is saved.
        """
        await threads.deferToThread(
            run_in_browser, self.steps, "dashboard", API(self.daemon.url), self.daemon.url
        )

    def steps(self, b: browser.Browser, api: API, base: str) -> None:
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import Select

        d = b.driver
        d.get(base + "/ui/")
        pmids = api("pm/list")["pmids"]
        self.assertEqual(len(pmids), len(BROWSER_SIZES))

        def shown_as_api(pmid) -> bool:
            # The PM's card shows pm/query's figures, and is up.
            [card] = b.css(f'article.pm[data-pmid="{pmid}"]')
            badge = card.find_element(By.CSS_SELECTOR, ".badge").text.lower()
            return badge == "up" and numbers(card) == pm_as_api(api("pm/query", pmid=pmid))

        # Every PM, in order, each with what pm/query says of it; the events followed.
        b.wait(
            lambda: [int(c.get_attribute("data-pmid")) for c in b.css("article.pm")] == pmids,
            "a card for each PM",
        )
        for pmid in pmids:
            b.wait(lambda pmid=pmid: shown_as_api(pmid), f"PM {pmid}'s figures and state")
        b.wait(lambda: d.find_element(By.ID, "live").text == "live", "the events followed")
        loaded = loads(d)
        self.assertEqual(loaded, 1)
        # CPUs are overcommitted 3 times: the bar runs to that, and says so.
        cpu = b.css(f'article.pm[data-pmid="{pmids[0]}"] .resource[data-resource="cpu"]')[0]
        self.assertEqual(
            float(cpu.find_element(By.CSS_SELECTOR, ".bar").get_attribute("aria-valuemax")),
            BROWSER_SIZES[0][0] * CPU_RATIO,
        )
        self.assertEqual(cpu.find_element(By.CSS_SELECTOR, ".over").text.strip(), "×3")
        self.assertEqual(b.css('.resource[data-resource="ram"] .over'), [])
        self.assertIn("CPU ×3", d.find_element(By.ID, "settings").text)

        # The catalogue.
        flavors = [
            [int(td.text) for td in row.find_elements(By.TAG_NAME, "td")]
            for row in b.css("#flavors tbody tr")
        ]
        self.assertEqual(flavors, [[f["tid"], f["cpu"], f["ram"], f["disk"]] for f in FLAVORS])
        images = [
            [td.text for td in row.find_elements(By.TAG_NAME, "td")]
            for row in b.css("#images tbody tr")
        ]
        self.assertEqual(images, [[str(i["id"]), i["name"]] for i in api("image/list")["images"]])

        # Create from the page.
        d.find_element(By.ID, "create-name").send_keys(TRICKY_NAME)
        Select(d.find_element(By.ID, "create-type")).select_by_value("2")
        Select(d.find_element(By.ID, "create-image")).select_by_value("1")
        d.find_element(By.ID, "create-button").click()
        status = b.wait(
            lambda: (s := d.find_element(By.ID, "create-status")).get_attribute("data-vmid") and s,
            "the page to report the VM created",
            timeout=60,
        )
        self.assertIn("ok", status.get_attribute("class"))
        vmid = int(status.get_attribute("data-vmid"))
        vm = api("vm/query", vmid=vmid)
        self.assertEqual(vm["name"], TRICKY_NAME)
        self.assertEqual(vm["instance_type"], 2)
        self.assertIn(vmid, api("pm/listvms", pmid=vm["pmid"])["vmids"])
        self.assertIn(f"PM {vm['pmid']}", status.text)

        # On its PM's card, its name as text (had it become HTML, <b> would be an element).
        row_css = f'article.pm[data-pmid="{vm["pmid"]}"] tr.vm[data-vmid="{vmid}"]'

        def name_shown():
            [cell] = b.css(row_css + " td.name")
            return cell.text == TRICKY_NAME and not cell.find_elements(By.TAG_NAME, "b")

        b.wait(name_shown, "the new VM's row, with its name as text")
        b.wait(lambda: shown_as_api(vm["pmid"]), "the PM's figures to count the new VM")
        shot = b.save("dashboard")
        self.assertEqual(shot.read_bytes()[:8], b"\x89PNG\r\n\x1a\n")

        # A VM made through the API shows up by itself, from its events.
        other = api("vm/create", name="from the API", instance_type=1, image_id=1)["vmid"]
        self.assertGreater(other, 0)
        b.wait(
            lambda: "from the API" in b.css(f'tr.vm[data-vmid="{other}"]')[0].text,
            "the API's VM on the page",
        )

        # A create no PM can take says why, and leaves nothing.
        before = {p: api("pm/listvms", pmid=p)["vmids"] for p in pmids}
        d.find_element(By.ID, "create-name").send_keys("too big")
        Select(d.find_element(By.ID, "create-type")).select_by_value("3")
        d.find_element(By.ID, "create-button").click()
        failed = b.wait(
            lambda: (
                "error" in (s := d.find_element(By.ID, "create-status")).get_attribute("class")
                and s.text
            ),
            "the page to report the refusal",
        )
        self.assertRegex(failed, re.compile(r"Not created: no PM could take it", re.I))
        self.assertEqual({p: api("pm/listvms", pmid=p)["vmids"] for p in pmids}, before)

        # Destroy from the page: a click (even a double-click) only asks; a second one
        # destroys.
        button_css = f'tr.vm[data-vmid="{vmid}"] button.destroy'
        b.wait(
            lambda: ActionChains(d).double_click(b.css(button_css)[0]).perform() or True,
            "a double-click on Destroy",
        )
        b.wait(lambda: b.css(button_css + ".armed"), "the destroy button to ask to confirm")
        time.sleep(1.5)  # still there, in the page and the API
        self.assertTrue(b.css(button_css + ".armed"), "the armed button went away")
        self.assertEqual(api("vm/query", vmid=vmid)["vmid"], vmid, "destroyed unconfirmed")
        b.wait(lambda: b.css(button_css + ".armed")[0].click() or True, "a confirming click")
        b.wait(lambda: not b.css(row_css), "the VM's row to go")
        self.assertEqual(api("vm/query", vmid=vmid), 0)
        self.assertNotIn(vmid, api("pm/listvms", pmid=vm["pmid"])["vmids"])
        self.assertIn(f"Destroyed VM {vmid}", d.find_element(By.ID, "create-status").text)
        b.wait(lambda: shown_as_api(vm["pmid"]), "the PM's figures to free the VM's room")
        b.save("dashboard-after-destroy")

        # All of it from the events: the fleet was loaded once.
        self.assertEqual(loads(d), loaded)
        self.assertEqual(b.console_errors(), [])

    async def test_volumes(self):
        """
        The volumes show in their table as volume/query answers them, names as text; one
        created, attached, detached and destroyed through the API changes its row by
        itself (from the events), with no reload of the fleet.
        """
        await threads.deferToThread(
            run_in_browser,
            self.steps_volumes,
            "dashboard-volumes",
            API(self.daemon.url),
            self.daemon.url,
        )

    def steps_volumes(self, b: browser.Browser, api: API, base: str) -> None:
        first = api("volume/create", name="<b>old</b> &amp;", size=2)["volumeid"]
        b.driver.get(base + "/ui/")

        def rows() -> list[list[str]]:
            return [
                [td.text for td in tr.find_elements("css selector", "td")]
                for tr in b.css("#volumes tbody tr")
            ]

        b.wait(
            lambda: rows() == [[str(first), "<b>old</b> &amp;", "2", "available", ""]],
            "the volume",
        )
        before = loads(b.driver)
        vmid = api("vm/create", name="v", instance_type=1, image_id=1)["vmid"]
        second = api("volume/create", name="new", size=1)["volumeid"]
        self.assertEqual(api("volume/attach", vmid=vmid, volumeid=second), {"status": 1})
        expected = [
            [str(first), "<b>old</b> &amp;", "2", "available", ""],
            [str(second), "new", "1", "attached", str(vmid)],
        ]
        b.wait(lambda: rows() == expected, "the attached volume, from the events")
        self.assertEqual(
            [r[3:] for r in rows()],
            [
                [
                    api("volume/query", volumeid=v)["status"],
                    str(api("volume/query", volumeid=v).get("vmid", "")),
                ]
                for v in (first, second)
            ],
        )
        b.save("dashboard-volumes")
        self.assertEqual(api("volume/detach", volumeid=second), {"status": 1})
        self.assertEqual(api("volume/destroy", volumeid=first), {"status": 1})
        b.wait(
            lambda: rows() == [[str(second), "new", "1", "available", ""]],
            "the detach and the destroy, from the events",
        )
        self.assertEqual(loads(b.driver), before)

    async def test_running_vms(self):
        """
        Each VM shows its state and addresses as /vm/info has them (its MAC address as the
        address's title), and the actions that state allows:
        Stop, Start, Suspend, Resume and Reboot from the page change it, as the API then
        says; Migrate moves it (stopped) to the PM chosen, where it then shows, Resize
        gives it the flavor chosen, and a resize the daemon refuses says why.
        """
        await threads.deferToThread(
            run_in_browser,
            self.steps_running,
            "dashboard-running",
            API(self.daemon.url),
            self.daemon.url,
        )

    def steps_running(self, b: browser.Browser, api: API, base: str) -> None:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import Select

        d = b.driver
        vmid = api("vm/create", name="runner", instance_type=1, image_id=1)["vmid"]
        self.assertGreater(vmid, 0)
        home = api("vm/query", vmid=vmid)["pmid"]
        other = next(p for p in api("pm/list")["pmids"] if p != home)
        d.get(base + "/ui/")
        row = f'tr.vm[data-vmid="{vmid}"]'

        def shows(state: str) -> bool:
            # The row shows the state, and it is what the API says.
            [cell] = b.css(row + " td.state .vmstate")
            return cell.get_attribute("data-state") == state and cell.text == state

        def actions() -> list[str]:
            return [e.get_attribute("data-action") for e in b.css(row + " button.act")]

        def click(css: str) -> None:
            b.wait(lambda: b.css(css)[0].click() or True, f"a click on {css}")

        def status() -> str:
            return d.find_element(By.ID, "create-status").text

        b.wait(lambda: shows("running"), "the VM's state, running")
        info = api("vm/info", vmid=vmid)
        self.assertEqual(info["state"], "running")
        self.assertEqual(len(info["ips"]), 1)
        b.wait(
            lambda: b.css(row + " td.address")[0].text == info["ips"][0],
            "the VM's address",
        )
        [address] = b.css(row + " td.address")
        self.assertEqual(address.get_attribute("title"), f"MAC {info['mac']}")
        self.assertEqual(actions(), ["stop", "reboot", "suspend"])
        b.save("dashboard-running")

        for action, state, allowed in (
            ("stop", "shutoff", ["start"]),
            ("start", "running", ["stop", "reboot", "suspend"]),
            ("suspend", "paused", ["stop", "resume"]),
            ("resume", "running", ["stop", "reboot", "suspend"]),
            ("reboot", "running", ["stop", "reboot", "suspend"]),
        ):
            click(f'{row} button.act[data-action="{action}"]')
            done = {"stop": "Stopped", "start": "Started", "suspend": "Suspended"}.get(action)
            done = done or {"resume": "Resumed", "reboot": "Rebooted"}[action]
            b.wait(lambda done=done: status() == f"{done} VM {vmid}.", f"the page to say {done}")
            self.assertEqual(api("vm/info", vmid=vmid)["state"], state, action)
            b.wait(lambda state=state: shows(state), f"the row to show {state}")
            b.wait(lambda allowed=allowed: actions() == allowed, f"the actions {state} allows")

        # Migrate to the other PM (stopped: libvirt's test driver moves a VM cold only):
        # the VM then shows on its card, and starts there.
        click(f'{row} button.act[data-action="stop"]')
        b.wait(lambda: status() == f"Stopped VM {vmid}.", "the page to say it stopped")
        b.wait(lambda: shows("shutoff"), "the row to show shutoff")
        b.wait(
            lambda: (
                Select(b.css(row + " select.migrate-target")[0]).select_by_value(str(other))
                or True
            ),
            "the migrate target chosen",
        )
        click(row + " button.migrate")
        b.wait(lambda: status() == f"Migrated VM {vmid} to PM {other}.", "the page to say so")
        self.assertEqual(api("vm/query", vmid=vmid)["pmid"], other)
        b.wait(
            lambda: b.css(f'article.pm[data-pmid="{other}"] {row}'), "the VM on its new PM's card"
        )
        self.assertEqual(b.css(f'article.pm[data-pmid="{home}"] {row}'), [])
        b.wait(lambda: shows("shutoff"), "the VM's state on its new PM")
        click(f'{row} button.act[data-action="start"]')
        b.wait(lambda: status() == f"Started VM {vmid}.", "the page to say it started")
        b.wait(lambda: shows("running"), "the VM running on its new PM")
        self.assertEqual(api("vm/info", vmid=vmid)["state"], "running")

        # Resize to flavor 3 (4 CPUs: no PM has room) is refused, and the page says why.
        b.wait(
            lambda: Select(b.css(row + " select.resize-type")[0]).select_by_value("3") or True,
            "flavor 3 chosen",
        )
        click(row + " button.resize")
        b.wait(lambda: status().startswith(f"VM {vmid} not resized to flavor 3: "), "refusal")
        self.assertIn("error", d.find_element(By.ID, "create-status").get_attribute("class"))
        self.assertEqual(api("vm/query", vmid=vmid)["instance_type"], 1)
        # Resize to flavor 2 fits.
        b.wait(
            lambda: Select(b.css(row + " select.resize-type")[0]).select_by_value("2") or True,
            "flavor 2 chosen",
        )
        click(row + " button.resize")
        b.wait(lambda: status() == f"Resized VM {vmid} to flavor 2.", "the page to say so")
        self.assertEqual(api("vm/query", vmid=vmid)["instance_type"], 2)
        b.wait(lambda: "2: 2 CPU" in b.css(row)[0].text, "the new flavor in the row")
        b.save("dashboard-running-after")
        self.assertEqual(b.console_errors(), [])

    async def test_reconnects(self):
        """
        When its event stream breaks, the page reconnects and loads the fleet again: a VM
        created while it was cut off shows up.
        """
        await threads.deferToThread(
            run_in_browser,
            self.steps_reconnect,
            "dashboard-reconnect",
            API(self.daemon.url),
            self.daemon.url,
        )

    def cut_connections(self) -> int:
        """
        Drop every connection to the daemon's REST port, the event streams among them (in
        the reactor's thread); how many were dropped.
        """
        port = self.daemon.fleet_service.port.getHost().port
        cut = 0
        for reader in reactor.getReaders():
            if isinstance(reader, tcp.Server) and reader.getHost().port == port:
                reader.abortConnection()
                cut += 1
        return cut

    def steps_reconnect(self, b: browser.Browser, api: API, base: str) -> None:
        from selenium.webdriver.common.by import By

        d = b.driver
        d.get(base + "/ui/")
        b.wait(lambda: d.find_element(By.ID, "live").text == "live", "the events followed")
        loaded = loads(d)
        self.assertGreater(threads.blockingCallFromThread(reactor, self.cut_connections), 0)
        vmid = api("vm/create", name="while cut off", instance_type=1, image_id=1)["vmid"]
        self.assertGreater(vmid, 0)
        b.wait(lambda: b.css(f'tr.vm[data-vmid="{vmid}"]'), "the VM on the page", timeout=30)
        b.wait(lambda: loads(d) > loaded, "the fleet loaded again")
        b.wait(lambda: d.find_element(By.ID, "live").text == "live", "the events followed again")

    async def test_without_events(self):
        """
        Where /v1/events cannot be reached, the page says so and reloads /v1/fleet every
        5 s instead: a VM created through the API shows up, and one destroyed goes.
        """
        await threads.deferToThread(
            run_in_browser,
            self.steps_without_events,
            "dashboard-no-events",
            API(self.daemon.url),
            self.daemon.url,
        )

    def steps_without_events(self, b: browser.Browser, api: API, base: str) -> None:
        from selenium.webdriver.common.by import By

        d = b.driver
        d.execute_cdp_cmd("Network.enable", {})
        d.execute_cdp_cmd("Network.setBlockedURLs", {"urls": ["*/v1/events*"]})
        d.get(base + "/ui/")
        b.wait(lambda: len(b.css("article.pm")) == len(BROWSER_SIZES), "a card for each PM")
        live = b.wait(
            lambda: (
                (text := d.find_element(By.ID, "live").text) != "live" and "…" not in text and text
            ),
            "the page to say it reloads instead",
            timeout=30,
        )
        self.assertIn("reloading every 5 s", live)
        loaded = loads(d)
        vmid = api("vm/create", name="polled", instance_type=1, image_id=1)["vmid"]
        self.assertGreater(vmid, 0)
        b.wait(lambda: b.css(f'tr.vm[data-vmid="{vmid}"]'), "the VM on the page", timeout=15)
        self.assertGreater(loads(d), loaded)
        self.assertEqual(api("vm/destroy", vmid=vmid), {"status": 1})
        b.wait(lambda: not b.css(f'tr.vm[data-vmid="{vmid}"]'), "the VM to go", timeout=15)


# A few hundred PMs, two VMs on some and one on others.
MANY_PMS = 300
MANY_VMS = 450
NEEDLE = "needle ✓ <i>one</i>"


class LargeFleetBrowserTests(TestCase):
    """
    The page at a few hundred PMs: one compact card each, no VM rows until asked for, a
    filter that finds PMs and VMs, and changes shown from the events.
    """

    timeout = 600

    async def setUp(self):
        require(browser.missing())
        started = time.monotonic()
        self.daemon = await start_daemon(
            self, [(2, 4096)] * MANY_PMS, allocation={"policy": "round-robin"}
        )
        names = [f"vm-{i:03d}" for i in range(1, MANY_VMS)] + [NEEDLE]
        self.vmids = await create_vms(self.daemon, names)
        self.assertTrue(all(v > 0 for v in self.vmids), "a create failed")
        print(
            f"\n{MANY_PMS} PMs and {MANY_VMS} VMs made in {time.monotonic() - started:.1f} s",
            flush=True,
        )

    async def test_many_pms(self):
        """
        The first render shows every PM as /v1/fleet does, all closed (no VM rows); a
        search finds a PM by id, and a VM by name or id, and opens its PM to show them; a
        VM created through the API, and then destroyed, shows and goes from the events.
        """
        await threads.deferToThread(
            run_in_browser,
            self.steps,
            "dashboard-many",
            API(self.daemon.url),
            self.daemon.url,
        )

    def steps(self, b: browser.Browser, api: API, base: str) -> None:
        from selenium.webdriver.common.by import By

        d = b.driver
        fleet = api("v1/fleet")
        self.assertEqual(len(fleet["pms"]), MANY_PMS)
        started = time.monotonic()
        d.get(base + "/ui/")
        b.wait(lambda: len(b.css("article.pm")) == MANY_PMS, "a card for each PM", timeout=30)
        seen = time.monotonic() - started
        drawn = b.wait(lambda: first_render_ms(d), "the first render's mark")
        print(
            f"\nfirst render at {MANY_PMS} PMs / {MANY_VMS} VMs: {drawn:.0f} ms from navigation"
            f" (cards seen by the test after {seen:.2f} s)",
            flush=True,
        )
        b.save("dashboard-many")

        # Every PM in order, as /v1/fleet has it; none shows its VMs yet.
        fleet = api("v1/fleet")
        b.wait(lambda: cards(d) == [card_of(pm) for pm in fleet["pms"]], "the fleet's PMs")
        self.assertEqual(b.css("tr.vm"), [])
        for pmid in (1, MANY_PMS // 2, MANY_PMS):
            [card] = b.css(f'article.pm[data-pmid="{pmid}"]')
            self.assertEqual(numbers(card), pm_as_api(api("pm/query", pmid=pmid)))
        self.assertIn(f"({MANY_PMS})", d.find_element(By.ID, "pm-count").text)
        loaded = loads(d)

        # A PM by its id: that card alone, open, with its VMs.
        pm = next(p for p in fleet["pms"][10:] if len(p["vmids"]) == 2)
        search(b, f"pm {pm['pmid']}")
        b.wait(
            lambda: cards(d) == [card_of(pm, True, api("pm/listvms", pmid=pm["pmid"])["vmids"])],
            f"PM {pm['pmid']} alone, with its VMs",
        )
        b.save("dashboard-many-pm")

        # A VM by a part of its name, then by its id: its PM, showing that VM.
        needle = next(vm for vm in fleet["vms"] if vm["name"] == NEEDLE)
        home = next(p for p in fleet["pms"] if p["pmid"] == needle["pmid"])
        for text in ("NEEDLE ✓", f"vm {needle['vmid']}"):
            search(b, text)
            b.wait(
                lambda: cards(d) == [card_of(home, True, [needle["vmid"]], found=1)],
                f"{text!r} to find the VM",
            )
        [cell] = b.css(f'tr.vm[data-vmid="{needle["vmid"]}"] td.name')
        self.assertEqual((cell.text, cell.find_elements(By.TAG_NAME, "i")), (NEEDLE, []))

        # A VM created through the API shows up under a search for it, and goes when it
        # is destroyed: from the events, without loading the fleet again.
        search(b, "fresh one")
        b.wait(lambda: "No PM matches" in d.find_element(By.ID, "pms").text, "no match yet")
        vmid = api("vm/create", name="Fresh one", instance_type=1, image_id=1)["vmid"]
        self.assertGreater(vmid, 0)
        row = b.wait(lambda: b.css(f'tr.vm[data-vmid="{vmid}"]'), "the new VM on the page")
        self.assertIn("Fresh one", row[0].text)
        self.assertEqual(api("vm/destroy", vmid=vmid), {"status": 1})
        b.wait(lambda: "No PM matches" in d.find_element(By.ID, "pms").text, "the VM gone")
        self.assertEqual(loads(d), loaded)

        # Cleared, the filter shows every PM again, closed.
        search(b, "")
        b.wait(lambda: len(cards(d)) == MANY_PMS, "every PM again")
        self.assertEqual(b.css("tr.vm"), [])
        self.assertEqual(b.console_errors(), [])


class ScaleTests(TestCase):
    """
    The first render at the scale the dashboard is made for, measured and printed (not
    asserted): set VORCHD_DASHBOARD_SCALE to PMSxVMS (1000x10000) to run it.
    """

    timeout = 3600

    async def test_first_render_at_scale(self):
        """
        Build a fleet of PMS test-driver PMs and VMS VMs, then time the page's first
        render, a search, and a VM created through the API showing up.
        """
        scale = os.environ.get("VORCHD_DASHBOARD_SCALE")
        if not scale:
            raise SkipTest("set VORCHD_DASHBOARD_SCALE=1000x10000 to measure")
        require(browser.missing())
        pms, vms = (int(n) for n in scale.lower().split("x"))
        started = time.monotonic()
        daemon = await start_daemon(self, [(16, 65536)] * pms)
        made = time.monotonic()
        vmids = await create_vms(daemon, [f"vm-{i}" for i in range(vms)], at_once=64)
        self.assertTrue(all(v > 0 for v in vmids), "a create failed")
        print(
            f"\n{pms} PMs up in {made - started:.1f} s; {vms} VMs created in"
            f" {time.monotonic() - made:.1f} s",
            flush=True,
        )
        await threads.deferToThread(
            run_in_browser,
            self.measure,
            "dashboard-scale",
            API(daemon.url),
            daemon.url,
            pms,
        )

    def measure(self, b: browser.Browser, api: API, base: str, pms: int) -> None:
        d = b.driver
        size = len(urllib.request.urlopen(base + "/v1/fleet", timeout=60).read())
        for attempt in ("cold", "warm"):
            started = time.monotonic()
            d.get(base + "/ui/")
            b.wait(lambda: len(b.css("article.pm")) == pms, "a card for each PM", timeout=120)
            seen = time.monotonic() - started
            drawn = b.wait(lambda: first_render_ms(d), "the first render's mark", timeout=60)
            print(
                f"first render ({attempt}): {drawn:.0f} ms from navigation to drawn;"
                f" cards seen by the test after {seen:.2f} s; /v1/fleet is {size} bytes",
                flush=True,
            )
        b.save("dashboard-scale")
        started = time.monotonic()
        search(b, f"pm {pms // 2}")
        b.wait(lambda: len(b.css("article.pm")) == 1 and b.css("tr.vm"), "the search")
        print(f"search for one PM, its VMs shown: {time.monotonic() - started:.2f} s")
        search(b, "scale probe")
        b.wait(lambda: "No PM matches" in b.driver.find_element("id", "pms").text, "no match")
        started = time.monotonic()
        vmid = api("vm/create", name="scale probe", instance_type=1, image_id=1)["vmid"]
        b.wait(lambda: b.css(f'tr.vm[data-vmid="{vmid}"]'), "the new VM")
        print(f"a VM created through the API shown after {time.monotonic() - started:.2f} s")
