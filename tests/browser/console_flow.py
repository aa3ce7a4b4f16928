"""The web console in a real browser (Debian's chromium and chromedriver, driven by selenium):
the whole flow an operator walks, asserting on what each page shows, with a screenshot per
step. Prints one JSON object: {"ok": true, "steps": [...]} or {"ok": false, "error": ...}.

    python console_flow.py CONFIG.json

CONFIG: url, token, honeypot, sdn, cli, data_dir, shots (a directory), findings (a file).
"""
import json
import os
import subprocess
import sys
import time
import traceback
from urllib.parse import urlparse

from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

CFG = json.load(open(sys.argv[1]))
URL = CFG["url"].rstrip("/")
STEPS = []


def driver():
    opts = Options()
    opts.binary_location = os.environ.get("BRCTI_TEST_CHROMIUM", "/usr/bin/chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,800", "--lang=zh-CN", "--no-first-run",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-default-apps", "--disable-extensions"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    service = Service(os.environ.get("BRCTI_TEST_CHROMEDRIVER", "/usr/bin/chromedriver"))
    d = webdriver.Chrome(service=service, options=opts)
    d.set_page_load_timeout(60)
    return d


D = driver()
console_errors = []
foreign_requests = []


def drain_logs():
    for e in D.get_log("browser"):
        if e["level"] == "SEVERE":
            console_errors.append(e["message"])
    for e in D.get_log("performance"):
        msg = json.loads(e["message"])["message"]
        if msg.get("method") == "Network.requestWillBeSent":
            u = msg["params"]["request"]["url"]
            if u.startswith(("data:", "blob:")):
                continue
            if urlparse(u).netloc != urlparse(URL).netloc:
                foreign_requests.append(u)


def shot(name):
    drain_logs()
    path = os.path.join(CFG["shots"], f"{len(STEPS) + 1:02d}-{name}.png")
    D.save_screenshot(path)
    STEPS.append(name)


def wait(cond, timeout=60, what="a condition"):
    try:
        # A page that re-renders between finding an element and reading it answers a stale
        # reference: that is "not yet", like an element not found.
        return WebDriverWait(
            D,
            timeout,
            poll_frequency=0.25,
            ignored_exceptions=(NoSuchElementException, StaleElementReferenceException),
        ).until(lambda d: cond())
    except Exception:
        raise AssertionError(f"timed out after {timeout} s waiting for {what} on {D.current_url}")


def text(css):
    return D.find_element(By.CSS_SELECTOR, css).text


def expect(cond, message):
    if not cond:
        raise AssertionError(f"{message} (page {D.current_url})")


def h1():
    return text("main h1")


def no_overflow(name):
    width = D.execute_script("return document.documentElement.scrollWidth")
    inner = D.execute_script("return window.innerWidth")
    expect(width <= inner + 1, f"{name}: the page is {width}px wide in a {inner}px window")


def convert(kind_value):
    Select(D.find_element(By.NAME, "stix_type")).select_by_value(kind_value)
    D.find_element(By.ID, "convert-button").click()
    wait(lambda: "ok=" in D.current_url or "err=" in D.current_url, what="the conversion to start")
    expect("err=" not in D.current_url, "the conversion did not start: " + D.current_url)
    wait(lambda: D.find_elements(By.CSS_SELECTOR, '#progress .job[data-kind="stix"][data-status="succeeded"]'),
         timeout=120, what="the conversion to succeed")
    wait(lambda: D.find_elements(By.CSS_SELECTOR, "#stix-records tbody tr"), what="the STIX files")
    expect("100 %" in text("#progress"), "the progress does not show 100 %")


def upload(path):
    D.get(URL + "/console/datasets")
    D.find_element(By.ID, "file").send_keys(path)
    D.find_element(By.ID, "upload-button").click()
    wait(lambda: "/console/datasets/" in D.current_url and len(D.current_url.rsplit("/", 1)[-1].split("?")[0]) == 64,
         what="the upload to finish and open the dataset")


def drop(path):
    """Drops a file on the upload zone as a browser does (a DragEvent carrying it)."""
    D.get(URL + "/console/datasets")
    content = open(path, encoding="utf-8").read()
    D.execute_script(
        """
        const [content, name] = arguments;
        const file = new File([content], name, {type: "text/csv"});
        const data = new DataTransfer();
        data.items.add(file);
        const zone = document.getElementById("dropzone");
        zone.dispatchEvent(new DragEvent("dragover", {dataTransfer: data, bubbles: true, cancelable: true}));
        zone.dispatchEvent(new DragEvent("drop", {dataTransfer: data, bubbles: true, cancelable: true}));
        """,
        content,
        os.path.basename(path),
    )
    wait(lambda: "/console/datasets/" in D.current_url and len(D.current_url.rsplit("/", 1)[-1].split("?")[0]) == 64,
         what="the dropped file to upload and open the dataset")


def run():
    # Sign in (Chinese first), with a wrong token, then the right one.
    D.get(URL + "/")
    wait(lambda: "/console/sign-in" in D.current_url, what="the sign-in page")
    expect(D.find_element(By.TAG_NAME, "html").get_attribute("lang") == "zh-CN", "Chinese is not the default")
    D.find_element(By.ID, "token").send_keys("not-the-token")
    D.find_element(By.CSS_SELECTOR, "form button").click()
    wait(lambda: D.find_elements(By.CSS_SELECTOR, "p.error"), what="the wrong-token message")
    expect("令牌错误" in text("p.error"), "no wrong-token message")
    D.find_element(By.ID, "token").send_keys(CFG["token"])
    D.find_element(By.CSS_SELECTOR, "form button").click()
    wait(lambda: h1() == "概览", what="the overview")
    expect("就绪" in text("#readiness"), "the node is not ready")
    shot("overview-zh")

    # English.
    D.find_element(By.ID, "lang-switch").click()
    wait(lambda: h1() == "Overview", what="the English overview")
    expect(text("#files-count") == "0", "datasets before any upload")
    shot("overview-en")

    # The honeypot sample: upload, its facts, a conversion to 100 %.
    upload(CFG["honeypot"])
    honeypot_page = D.current_url.split("?")[0]
    expect("JSON Lines" in text("#format"), "the format: " + text("#format"))
    for col in ("src", "dst", "attack"):
        expect(col in text("#columns"), f"column {col} not listed: " + text("#columns"))
    shot("honeypot-uploaded")
    convert("2")
    shot("honeypot-converted")

    # A generated SDN CSV, dropped on the upload zone.
    drop(CFG["sdn"])
    expect(D.find_element(By.TAG_NAME, "h1").text == os.path.basename(CFG["sdn"]), "the dropped file's name")
    expect("CSV" in text("#format") and "delimiter ','" in text("#format"), "the CSV format: " + text("#format"))
    expect("label" in text("#columns"), "the SDN columns: " + text("#columns"))
    sdn_page = D.current_url.split("?")[0].split("#")[0]
    convert("1")
    rows = D.find_elements(By.CSS_SELECTOR, "#stix-records tbody tr")
    expect(len(rows) >= 2, f"{len(rows)} STIX files for the SDN dataset")
    shot("sdn-converted")

    # A STIX file: counts by type, objects, references that lead somewhere.
    D.find_element(By.CSS_SELECTOR, "#stix-records a.view").click()
    wait(lambda: D.find_elements(By.ID, "by-type"), what="the STIX file viewer")
    types = text("#by-type")
    for t in ("observed-data", "identity", "marking-definition"):
        expect(t in types, f"{t} not counted: {types}")
    expect(len(D.find_elements(By.CSS_SELECTOR, "article.object")) > 0, "no objects shown")
    ref = D.find_element(By.CSS_SELECTOR, "pre.json a.ref")
    target = ref.text.strip('"')
    ref.click()
    wait(lambda: D.find_elements(By.ID, target), what=f"the referenced object {target}")
    expect(D.find_element(By.ID, "bundle-download").get_attribute("href").endswith("/download"), "no bundle link")
    shot("stix-file")

    # The bundle download answers a bundle.
    cookies = {c["name"]: c["value"] for c in D.get_cookies()}
    expect("brcti_session" in cookies, "no session cookie")

    # CTI of the honeypot sample: build, then the map and charts.
    D.get(honeypot_page)
    D.find_element(By.ID, "cti-button").click()
    wait(lambda: D.find_elements(By.CSS_SELECTOR, '#progress .job[data-kind="cti"][data-status="succeeded"]'),
         timeout=120, what="the CTI build to succeed")
    wait(lambda: D.find_elements(By.CSS_SELECTOR, "#cti-records a.view"), what="the CTI records")
    shot("cti-built")
    D.find_element(By.CSS_SELECTOR, "#cti-records a.view").click()
    wait(lambda: D.find_elements(By.ID, "world-map"), what="the CTI statistics")
    expect(len(D.find_elements(By.CSS_SELECTOR, "#world-map circle.point")) >= 1, "no located address on the map")
    bars = D.find_elements(By.CSS_SELECTOR, "#country-chart g.bar")
    labels = [b.get_attribute("data-label") for b in bars]
    expect("China" in labels, f"the country chart: {labels}")
    expect(len(D.find_elements(By.CSS_SELECTOR, "#top-addresses tbody tr")) >= 1, "no top addresses")
    expect("China,Guangdong,Guangzhou" in text("#top-locations"), "the top locations: " + text("#top-locations"))
    expect("cti_hash" in text("#chain-payload"), "no chain payload")
    shot("cti-statistics")

    # A user, its token shown once; a signed report sent with the CLI.
    D.get(URL + "/console/users")
    D.find_element(By.CSS_SELECTOR, "#add-user input[name=name]").send_keys("platA")
    D.find_element(By.CSS_SELECTOR, "#add-user button").click()
    wait(lambda: D.find_elements(By.ID, "token-value"), what="the new token")
    token = text("#token-value").strip()
    expect(len(token) == 64, "a token of 64 hex digits: " + token)
    shot("user-added")
    env = dict(os.environ, BRCTI_REPORT_TOKEN=token)
    out = subprocess.run([CFG["cli"], "report", "--to", URL, "--user", "platA", CFG["findings"]],
                         env=env, capture_output=True, text=True, timeout=60)
    expect(out.returncode == 0, f"br-cti report failed: {out.stdout} {out.stderr}")

    # The hidden dangers: listed, filtered, charted, one opened.
    D.get(URL + "/console/hidden-dangers")
    wait(lambda: D.find_elements(By.CSS_SELECTOR, "#hidden-dangers tbody tr"), what="the reported hidden dangers")
    expect("Log4j2" in text("#hidden-dangers"), "the report is not listed")
    expect(D.find_elements(By.CSS_SELECTOR, '#level-chart g.platform[data-platform="platA"]'), "no chart bar for platA")
    Select(D.find_element(By.NAME, "issue_level")).select_by_value("4")
    D.find_element(By.CSS_SELECTOR, "#hd-filter button").click()
    wait(lambda: "issue_level=4" in D.current_url, what="the filter")
    expect(len(D.find_elements(By.CSS_SELECTOR, "#hidden-dangers tbody tr")) == 2, "two critical findings")
    Select(D.find_element(By.NAME, "issue_level")).select_by_value("1")
    D.find_element(By.CSS_SELECTOR, "#hd-filter button").click()
    wait(lambda: "issue_level=1" in D.current_url, what="the second filter")
    expect(not D.find_elements(By.CSS_SELECTOR, "#hidden-dangers tbody tr"), "a low-level finding listed")
    D.find_element(By.NAME, "since").send_keys("yesterday")
    D.find_element(By.CSS_SELECTOR, "#hd-filter button").click()
    wait(lambda: D.find_elements(By.CSS_SELECTOR, "p.error"), what="the error of a bad filter")
    expect("since" in text("p.error"), "the filter error does not name the field: " + text("p.error"))
    D.get(URL + "/console/hidden-dangers?ip=10.20.30.40")
    shot("hidden-dangers")
    D.find_element(By.CSS_SELECTOR, "#hidden-dangers tbody a").click()
    wait(lambda: D.find_elements(By.ID, "raw-event"), what="the hidden danger")
    expect("log4shell" in text("#raw-event"), "the raw event is not shown")
    shot("hidden-danger")

    # Grant the user the writable collection.
    D.get(URL + "/console/users")
    row = D.find_element(By.CSS_SELECTOR, 'tr[data-user="platA"]')
    inbox = Select(row.find_element(By.CSS_SELECTOR, "td.grants select")).options[0].get_attribute("value")
    row.find_element(By.CSS_SELECTOR, "button.grant").click()
    wait(lambda: "ok=" in D.current_url, what="the grant")
    expect(inbox in text('tr[data-user="platA"] td.grants'), "the grant is not shown")
    shot("user-granted")

    # TAXII: the collections fill as the publisher catches up; readers and their grants.
    deadline = time.time() + 60
    while True:
        D.get(URL + "/console/taxii")
        cells = [r.find_elements(By.CSS_SELECTOR, "td")[1].text for r in D.find_elements(By.CSS_SELECTOR, "#collections tbody tr")]
        counts = [int(c.replace(",", "")) for c in cells]
        if len(counts) == 3 and counts[0] > 0 and counts[1] > 0:
            break
        expect(time.time() < deadline, f"the TAXII collections did not fill: {cells}")
        time.sleep(1)
    expect("platA" in text("#taxii-users") and inbox in text("#taxii-users"), "the reader and its grant")
    expect("taxii2client" in text("pre.snippet"), "no client snippet")
    shot("taxii")

    # The overview counts what happened.
    D.get(URL + "/")
    expect(text("#files-count") == "2", "datasets counted: " + text("#files-count"))
    expect(int(text("#rows-24h").replace(",", "")) > 1000, "rows converted: " + text("#rows-24h"))
    expect(text("#reports-24h") == "2", "reports received: " + text("#reports-24h"))
    shot("overview-after")

    # Back to Chinese: a dataset page from its top.
    D.find_element(By.ID, "lang-switch").click()
    wait(lambda: h1() == "概览", what="the Chinese overview")
    D.get(sdn_page)
    expect("转换为 STIX 2.1" in text("#convert h2"), "the Chinese dataset page")
    expect("成功" in text("#progress"), "the job state in Chinese")
    steps = [c.text for c in D.find_elements(By.CSS_SELECTOR, "#steps th")]
    states = [c.text for c in D.find_elements(By.CSS_SELECTOR, "#steps tbody td span")]
    expect(steps[1:] == ["上传", "STIX", "CTI", "上链"], f"the task steps: {steps}")
    expect(states == ["已完成", "已完成", "等待中", "等待中"], f"the steps' states: {states}")
    shot("dataset-zh")

    # A phone: every page fits its width.
    D.set_window_size(390, 844)
    for path in ("/", "/console/datasets", honeypot_page.replace(URL, ""), "/console/hidden-dangers",
                 "/console/taxii", "/console/users"):
        D.get(URL + path)
        no_overflow(path)
    shot("phone-dataset")
    D.set_window_size(1280, 800)

    # Sign out: the pages ask for the token again.
    D.get(URL + "/console/users")
    D.find_element(By.CSS_SELECTOR, "header form button").click()
    wait(lambda: "/console/sign-in" in D.current_url, what="the sign-in page after signing out")
    D.get(URL + "/console/users")
    wait(lambda: "/console/sign-in" in D.current_url, what="a signed-out visit to be sent to sign in")
    shot("signed-out")

    drain_logs()
    expect(not console_errors, f"console errors: {console_errors}")
    expect(not foreign_requests, f"requests to other hosts: {foreign_requests}")


try:
    run()
    print(json.dumps({"ok": True, "steps": STEPS}))
except Exception as e:
    try:
        D.save_screenshot(os.path.join(CFG["shots"], "failure.png"))
    except Exception:
        pass
    print(json.dumps({"ok": False, "steps": STEPS, "error": str(e), "trace": traceback.format_exc()}))
finally:
    D.quit()
