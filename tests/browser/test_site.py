"""The built website, opened in a real browser with no internet.

Serves `_build/html` on 127.0.0.1 and opens every page of the table of
contents in Debian's headless Chromium (driven by Playwright, with the system
browser: no browser download). Every request that leaves 127.0.0.1 is
aborted and counted: a page that tries to reach the internet fails. For each
page: MathJax finishes typesetting, no raw TeX delimiters remain in the text,
every math element was rendered (and a page whose source has math has
some), the console shows no errors, every image loaded, every figure of the
source is shown with its caption at a readable width, every internal link
points at a file and anchor that exist, and no code cell's input is wider
than its column. Screenshots go to `_build/browser/` (not committed). Then
the dark theme is checked once and the search page must find "RoPE".

Run it alone, after building the HTML:
    .venv/bin/python -m pytest tests/browser/test_site.py
It skips, saying why, only when Chromium or Playwright is missing
(`bash .ci/install --browser` installs Chromium).
"""

import functools
import http.server
import json
import os
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlsplit

import pytest
import yaml
from book_figures import figures

ROOT = Path(__file__).resolve().parents[2]
SITE = ROOT / "_build" / "html"
SHOTS = ROOT / "_build" / "browser"
CHROMIUM = os.environ.get("LLMBOOK_CHROMIUM", "/usr/bin/chromium")
VIEWPORT = {"width": 1280, "height": 800}
# Root: fresh profile (given by the fixture), nothing that phones home.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    # A second wall behind the request filter below: no name resolves.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]
TIMEOUT_MS = 120_000  # per wait; a busy 2-core machine is slow
RAW_TEX = re.compile(r"\\\(|\\\)|\\\[|\\\]|\$\$|\\begin\{|\\end\{")


def toc_pages():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += [chapter["file"] for chapter in part["chapters"]]
    return files


PAGES = toc_pages()
RESULTS = {}  # page -> what was measured, written to _build/browser


def source_of(page):
    """The page's source file, relative to the repository."""
    nb = f"{page}.ipynb"
    return nb if (ROOT / nb).exists() else f"{page}.md"


def source_has_math(page):
    """Whether the page's source (markdown cells or .md) contains math."""
    nb = ROOT / f"{page}.ipynb"
    if nb.exists():
        cells = json.loads(nb.read_text(encoding="utf-8"))["cells"]
        text = "\n".join(
            "".join(c["source"]) for c in cells if c["cell_type"] == "markdown"
        )
    else:
        text = (ROOT / f"{page}.md").read_text(encoding="utf-8")
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # code blocks
    text = re.sub(r"`[^`\n]*`", "", text)  # inline code
    return bool(
        re.search(r"\$[^$\s][^$]*\$|\$\$|\\begin\{(equation|align)", text)
    )


@functools.cache
def ids_in(path):
    """Every id (and old-style name anchor) that an HTML file defines."""
    html = path.read_text(encoding="utf-8", errors="replace")
    return set(re.findall(r"""\b(?:id|name)=["']([^"']+)["']""", html))


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def site():
    """http://127.0.0.1:PORT/ serving _build/html, for this module."""
    if not (SITE / "index.html").exists():
        pytest.fail(
            f"{SITE.relative_to(ROOT)} is not built: run "
            "`.venv/bin/jupyter-book build .` first",
            pytrace=False,
        )
    handler = functools.partial(_QuietHandler, directory=str(SITE))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser(site):
    """A Chromium context whose requests outside the local site abort."""
    if not Path(CHROMIUM).exists():
        pytest.skip(
            f"no Chromium at {CHROMIUM}: `bash .ci/install --browser` "
            "installs Debian's chromium (set LLMBOOK_CHROMIUM for another)"
        )
    sync_api = pytest.importorskip(
        "playwright.sync_api",
        reason="Playwright is not installed: bash .ci/install",
    )
    if SHOTS.exists():
        shutil.rmtree(SHOTS)
    SHOTS.mkdir(parents=True)
    blocked = []

    def block(route):
        blocked.append(route.request.url)
        route.abort("internetdisconnected")

    with tempfile.TemporaryDirectory(prefix="llmbook-chromium-") as profile:
        with sync_api.sync_playwright() as p:
            context = p.chromium.launch_persistent_context(
                profile,  # a fresh --user-data-dir
                executable_path=CHROMIUM,
                headless=True,
                args=FLAGS,
                viewport=VIEWPORT,
                service_workers="block",
            )
            context.set_default_timeout(TIMEOUT_MS)
            # Only requests that leave the local site are intercepted (the
            # pattern is matched inside the browser): cheap on a busy machine.
            context.route(re.compile("^(?!" + re.escape(site) + ")"), block)
            context.blocked = blocked
            context.site = site
            yield context
            context.close()
    (SHOTS / "report.json").write_text(json.dumps(RESULTS, indent=1))


def open_page(browser, url):
    """Load url; return (page, console errors, blocked requests) lists."""
    page = browser.new_page()
    errors = []
    page.on(
        "console",
        lambda m: (
            errors.append(f"console {m.type}: {m.text}")
            if m.type == "error"
            else None
        ),
    )
    page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    page.on(
        "requestfailed",
        lambda r: (
            errors.append(f"request failed: {r.url} ({r.failure})")
            if r.url.startswith(browser.site)
            else None
        ),
    )
    first_blocked = len(browser.blocked)
    response = page.goto(url, wait_until="load")
    status = response.status if response is not None else "no response"
    assert response is not None and response.ok, (
        f"{url}: HTTP {status} (is the built site older than _toc.yml?)"
    )
    return page, errors, browser.blocked, first_blocked


TYPESET = """async () => {
  if (!window.MathJax) return 'no MathJax';
  for (let i = 0; i < 600 && !(MathJax.startup && MathJax.startup.promise);
       i++) await new Promise(r => setTimeout(r, 100));
  if (!(MathJax.startup && MathJax.startup.promise))
    return 'MathJax never started';
  await MathJax.startup.promise;
  return 'done';
}"""

# Text a reader sees, leaving out code, where TeX-like text is legitimate.
PROSE_TEXT = """() => {
  const main = document.querySelector('main') || document.body;
  const copy = main.cloneNode(true);
  copy.querySelectorAll('pre, code, script, style, mjx-container, '
      + 'mjx-assistive-mml, .highlight, textarea').forEach(e => e.remove());
  return copy.textContent;
}"""

MATH = r"""() => {
  const math = [...document.querySelectorAll('.math')];
  return {
    elements: math.length,
    unrendered: math.filter(m => !m.querySelector('mjx-container'))
                    .map(m => m.textContent.slice(0, 80)),
    containers: document.querySelectorAll('mjx-container').length,
    // TeX shown as text inside typeset math, e.g. \_ in \text{...}
    rawInText: window.MathJax && MathJax.startup.document
      ? [...MathJax.startup.document.math]
          .map(m => MathJax.startup.toMML(m.root))
          .flatMap(mml => mml.match(/<mtext[^>]*>[^<]*\\[^<]*</g) || [])
      : [],
    merror: [...document.querySelectorAll('mjx-merror, [data-mjx-error]')]
                .map(e => e.getAttribute('data-mjx-error') || e.textContent)
  };
}"""

IMAGES = """async () => {
  const imgs = [...document.images];
  imgs.forEach(i => { i.loading = 'eager'; });
  await Promise.all(imgs.map(i => i.complete ? null : new Promise(r => {
    i.addEventListener('load', r); i.addEventListener('error', r);
    setTimeout(r, 20000);
  })));
  return imgs.map(i => ({src: i.currentSrc || i.src,
                         ok: i.complete && i.naturalWidth > 0}));
}"""

# Each figure of the page: its id, and whether its image loaded and is
# shown at a readable width.
FIGURES = """() => [...document.querySelectorAll('figure')].map(f => {
  const img = f.querySelector('img');
  return {id: f.id, ok: !!img && img.complete && img.naturalWidth > 0,
          width: img ? img.getBoundingClientRect().width : 0,
          caption: !!f.querySelector('figcaption')};
})"""

LINKS = """() => [...document.querySelectorAll('a[href]')]
  .map(a => a.href)"""

# Code cells whose input is wider than the column scroll sideways.
WIDE_CODE = """() => [...document.querySelectorAll('.cell_input pre')]
  .filter(p => p.scrollWidth > p.clientWidth + 1)
  .map(p => p.textContent.split('\\n')
             .reduce((a, b) => b.length > a.length ? b : a, ''))"""


def missing_link_targets(site, hrefs):
    """Internal hrefs whose file or #anchor does not exist in the site."""
    missing = []
    for href in sorted(set(hrefs)):
        if not href.startswith(site):
            continue  # another site, mailto:, javascript:; not ours
        path, fragment = urldefrag(href)
        rel = unquote(urlsplit(path).path).lstrip("/")
        target = SITE / rel
        if rel == "" or target.is_dir():
            target = target / "index.html"
        if not target.is_file():
            missing.append(f"{href} (no file {rel or 'index.html'})")
        elif fragment and target.suffix == ".html":
            if unquote(fragment) not in ids_in(target):
                missing.append(f"{href} (no id {fragment!r} in {rel})")
    return missing


@pytest.mark.parametrize("page_name", PAGES)
def test_page(browser, page_name):
    start = time.perf_counter()
    url = browser.site + page_name + ".html"
    page, errors, blocked, first_blocked = open_page(browser, url)
    typeset = page.evaluate(TYPESET)
    math = page.evaluate(MATH)
    images = page.evaluate(IMAGES)
    shown = page.evaluate(FIGURES)
    # Wait for the fonts, then let the page settle before checking it.
    page.evaluate("() => document.fonts.ready.then(() => true)")
    prose = page.evaluate(PROSE_TEXT)
    links = page.evaluate(LINKS)
    wide = page.evaluate(WIDE_CODE)
    stem = page_name.replace("/", "_")
    page.screenshot(path=SHOTS / f"{stem}.png", full_page=True)
    first_display = page.query_selector("div.math mjx-container")
    if first_display is not None:
        first_display.screenshot(path=SHOTS / f"{stem}-equation.png")
    page.close()

    raw = sorted({m.group(0) for m in RAW_TEX.finditer(prose)})
    raw_context = [
        prose[max(0, m.start() - 40) : m.end() + 40].replace("\n", " ")
        for m in list(RAW_TEX.finditer(prose))[:3]
    ]
    broken_images = [i["src"] for i in images if not i["ok"]]
    wanted = [f["name"] for f in figures(ROOT / source_of(page_name))]
    shown_ok = {
        f["id"]
        for f in shown
        if f["ok"] and f["caption"] and f["width"] >= 200
    }
    missing_figures = [n for n in wanted if n not in shown_ok]
    missing = missing_link_targets(browser.site, links)
    new_blocked = blocked[first_blocked:]
    has_math = source_has_math(page_name)
    RESULTS[page_name] = {
        "seconds": round(time.perf_counter() - start, 2),
        "typeset": typeset,
        "math_elements": math["elements"],
        "mjx_containers": math["containers"],
        "images": len(images),
        "figures": len(shown),
        "links": len(set(links)),
        "blocked_requests": new_blocked,
        "console_errors": errors,
    }

    problems = []
    if new_blocked:
        problems.append(
            f"{len(new_blocked)} request(s) to the internet: {new_blocked}"
        )
    if has_math and typeset != "done":
        problems.append(f"MathJax: {typeset}")
    if has_math and math["containers"] == 0:
        problems.append("the source has math but nothing was typeset")
    if math["unrendered"]:
        problems.append(
            f"{len(math['unrendered'])} math element(s) not typeset, "
            f"first: {math['unrendered'][:3]}"
        )
    if math["rawInText"]:
        problems.append(f"TeX as text in equations: {math['rawInText']}")
    if math["merror"]:
        problems.append(f"MathJax errors: {math['merror'][:5]}")
    if raw:
        problems.append(f"raw TeX in the text {raw}: {raw_context}")
    if errors:
        problems.append(f"console errors: {errors}")
    if broken_images:
        problems.append(f"images that did not load: {broken_images}")
    if missing_figures:
        problems.append(
            "figures not shown (no loaded image 200 px wide with a "
            f"caption): {missing_figures}"
        )
    if missing:
        problems.append(f"internal links to nothing: {missing}")
    if wide:
        problems.append(
            f"{len(wide)} code cell(s) wider than the column (at "
            f"{VIEWPORT['width']} px), longest lines: {wide}"
        )
    if problems:
        pytest.fail(
            f"{page_name}.html:\n  " + "\n  ".join(problems), pytrace=False
        )


def test_front_page_redirects_to_the_introduction(browser):
    page, errors, blocked, first_blocked = open_page(
        browser, browser.site + "index.html"
    )
    page.wait_for_url(re.compile(re.escape(PAGES[0]) + r"\.html"))
    page.close()
    assert not errors
    assert not blocked[first_blocked:]


def test_the_internet_is_blocked(browser):
    """The wall itself: a request to another host fails and is counted."""
    page, errors, blocked, first_blocked = open_page(
        browser, browser.site + PAGES[0] + ".html"
    )
    outcome = page.evaluate(
        """() => fetch('https://example.org/x.js', {mode: 'no-cors'})
                   .then(() => 'reached', () => 'blocked')"""
    )
    page.close()
    assert outcome == "blocked"
    assert blocked[first_blocked:] == ["https://example.org/x.js"]


def test_dark_theme(browser):
    page_name = next(p for p in PAGES if source_has_math(p))
    page, errors, blocked, first_blocked = open_page(
        browser, browser.site + page_name + ".html"
    )
    page.evaluate(TYPESET)
    # What the theme's switch button does, then persist it as the theme does.
    page.evaluate(
        """() => { document.documentElement.dataset.mode = 'dark';
                   document.documentElement.dataset.theme = 'dark';
                   localStorage.setItem('mode', 'dark');
                   localStorage.setItem('theme', 'dark'); }"""
    )
    page.reload(wait_until="load")
    page.evaluate(TYPESET)
    colors = page.evaluate(
        """() => {
      const lum = c => {
        const [r, g, b] = c.match(/[\\d.]+/g).map(Number);
        return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255;
      };
      const body = getComputedStyle(document.body);
      const math = document.querySelector('mjx-container');
      return {theme: document.documentElement.dataset.theme,
              background: lum(body.backgroundColor),
              text: lum(body.color),
              math: math ? lum(getComputedStyle(math).color) : null};
    }"""
    )
    page.screenshot(path=SHOTS / "dark-theme.png")
    page.evaluate("() => localStorage.clear()")
    page.close()
    assert colors["theme"] == "dark"
    assert colors["background"] < 0.3, f"background is not dark: {colors}"
    assert colors["text"] > 0.6, f"text is not light: {colors}"
    assert colors["math"] is not None and colors["math"] > 0.6, (
        f"equations are not light on the dark background: {colors}"
    )
    assert not errors, errors
    assert not blocked[first_blocked:]


def test_search_finds_rope(browser):
    page, errors, blocked, first_blocked = open_page(
        browser, browser.site + "search.html"
    )
    box = page.locator("input[name='q']:visible").first
    box.fill("RoPE")
    box.press("Enter")
    page.wait_for_url(re.compile(r"search\.html\?q=RoPE"))
    page.wait_for_function(
        "() => /Search finished|did not match/.test("
        "(document.querySelector('#search-results') || {}).textContent)"
    )
    hits = page.evaluate(
        """() => [...document.querySelectorAll('#search-results li a')]
                 .map(a => a.getAttribute('href'))"""
    )
    page.screenshot(path=SHOTS / "search-RoPE.png")
    page.close()
    assert any("06_gpt_model" in h for h in hits), (
        f"searching 'RoPE' did not find the GPT model chapter: {hits}"
    )
    assert not errors, errors
    assert not blocked[first_blocked:]
