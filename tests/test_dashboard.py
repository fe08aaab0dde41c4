"""
The web dashboard at /ui/: its files over HTTP (in memory and over a real port) without
changing any answer of the seed API, and the page itself in a real headless Chromium
against a daemon with real Redis and libvirt test-driver PMs: it shows the PMs as the API
does, creates and destroys VMs that the API then shows, refreshes by itself, shows why a
create failed, and puts VM names on the page as text. Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import http.client
import re
import time
import urllib.parse
import urllib.request
from html.parser import HTMLParser

from twisted.internet import threads
from twisted.trial.unittest import TestCase

from tests import browser
from tests.clients import InMemoryClient, LoopbackClient
from tests.harness import FLAVORS, get_json, require, start_daemon

# Two PMs; flavor 3 (4 CPUs) fits on neither.
SIZES = [(2, 4096), (3, 4096)]
# The browser's two PMs of 1 CPU take 3 once overcommitted: still not flavor 3.
BROWSER_SIZES = [(1, 4096), (1, 4096)]
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
    Blocking calls of the seed API, for the browser's thread.
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


class BrowserTests(TestCase):
    """
    The page in headless Chromium, against a daemon over its real port.
    """

    timeout = 240

    async def setUp(self):
        require(browser.missing())
        self.daemon = await start_daemon(self, BROWSER_SIZES, allocation={"cpu_ratio": CPU_RATIO})

    async def test_dashboard(self):
        """
        The page shows every PM as pm/query does (overcommit included) and the flavors
        and images; a VM created from the page is in the API with its name as typed, and
        on the page as text; one created through the API shows up by itself; a refused
        create says why; a VM is destroyed from the page only once confirmed (a
        double-click is not), and is then gone from the API. A screenshot is saved.
        """
        await threads.deferToThread(self.scenario, API(self.daemon.url), self.daemon.url)

    def scenario(self, api: API, base: str) -> None:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import Select

        b = browser.Browser()
        try:
            self.steps(b, api, base, By, Select)
        except BaseException:
            b.save("dashboard-failure")
            raise
        finally:
            b.quit()

    def steps(self, b: browser.Browser, api: API, base: str, By, Select) -> None:
        from selenium.webdriver.common.action_chains import ActionChains

        d = b.driver
        d.get(base + "/ui/?refresh=1")
        pmids = api("pm/list")["pmids"]
        self.assertEqual(len(pmids), len(BROWSER_SIZES))

        def shown_as_api(pmid) -> bool:
            # The PM's card shows pm/query's figures, and is up.
            [card] = b.css(f'article.pm[data-pmid="{pmid}"]')
            badge = card.find_element(By.CSS_SELECTOR, ".badge").text.lower()
            return badge == "up" and numbers(card) == pm_as_api(api("pm/query", pmid=pmid))

        # Every PM, in order, each with what pm/query says of it.
        b.wait(
            lambda: [int(c.get_attribute("data-pmid")) for c in b.css("article.pm")] == pmids,
            "a card for each PM",
        )
        for pmid in pmids:
            b.wait(lambda pmid=pmid: shown_as_api(pmid), f"PM {pmid}'s figures and state")
        # CPUs are overcommitted 3 times: the bar runs to that, and says so.
        cpu = b.css(f'article.pm[data-pmid="{pmids[0]}"] .resource[data-resource="cpu"]')[0]
        self.assertEqual(
            float(cpu.find_element(By.CSS_SELECTOR, ".bar").get_attribute("aria-valuemax")),
            BROWSER_SIZES[0][0] * CPU_RATIO,
        )
        self.assertEqual(cpu.find_element(By.CSS_SELECTOR, ".over").text.strip(), "×3")
        self.assertEqual(b.css('.resource[data-resource="ram"] .over'), [])

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

        # A VM made through the API shows up by itself (the page refreshes every second).
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
        time.sleep(1.5)  # a refresh or so: still there, in the page and the API
        self.assertTrue(b.css(button_css + ".armed"), "the armed button went away")
        self.assertEqual(api("vm/query", vmid=vmid)["vmid"], vmid, "destroyed unconfirmed")
        b.wait(lambda: b.css(button_css + ".armed")[0].click() or True, "a confirming click")
        b.wait(lambda: not b.css(row_css), "the VM's row to go")
        self.assertEqual(api("vm/query", vmid=vmid), 0)
        self.assertNotIn(vmid, api("pm/listvms", pmid=vm["pmid"])["vmids"])
        self.assertIn(f"Destroyed VM {vmid}", d.find_element(By.ID, "create-status").text)
        b.wait(lambda: shown_as_api(vm["pmid"]), "the PM's figures to free the VM's room")
        b.save("dashboard-after-destroy")

        self.assertEqual(b.console_errors(), [])
