// Drive JupyterLab in an already running headless Chromium (tests/test_browser.py starts both):
// open a notebook, Run All Cells, check that the sweep sliders and the live plot render (chapter
// 07; --sweep no for another chapter), take screenshots. Prints one JSON object with what it saw
// (with the text of every output); exits 1 if something did not appear.
//
//   node run_notebook.mjs --cdp http://127.0.0.1:9222 --url http://127.0.0.1:8888/lab/tree/x.ipynb?token=t
//                         --artifacts ../../test-artifacts [--timeout-seconds 600] [--sweep no --name chapter03]
//
// playwright-core only *connects* to the browser (CDP): it never downloads or launches one.
import { chromium } from "playwright-core";

function option(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0 && fallback === undefined) throw new Error(`missing --${name}`);
  return i < 0 ? fallback : process.argv[i + 1];
}

const cdp = option("cdp");
const url = option("url");
const artifacts = option("artifacts");
const timeout = Number(option("timeout-seconds", "600")) * 1000;
const sweep = option("sweep", "yes") === "yes";
const name = option("name", "chapter07");  // the screenshots' prefix
const report = { steps: [], sliders: 0, livePlotWidth: 0, livePlotUpdates: 0, errors: [], codeCells: 0, executed: 0,
                 outputs: "" };
const step = (text) => { report.steps.push(`${new Date().toISOString()} ${text}`); };

// JupyterLab sometimes asks which kernel to use although the notebook names one (e.g. when the
// page connects while the kernel is still starting): accept its suggestion, Python 3.
async function acceptKernelDialog(page) {
  const dialog = page.locator(".jp-Dialog", { hasText: "Select Kernel" });
  if (await dialog.count()) {
    await dialog.locator(".jp-Dialog-button.jp-mod-accept").click();
    step("accepted JupyterLab's 'Select Kernel' dialog (Python 3)");
  }
}

// Wait for a condition in the page, answering the kernel dialog meanwhile; on timeout say what
// the notebook looked like.
async function waitUntil(page, condition, ms, what) {
  const deadline = Date.now() + ms;
  while (!(await page.evaluate(condition))) {
    if (Date.now() > deadline) {
      const prompts = await page.locator(".jp-CodeCell .jp-InputPrompt").allTextContents();
      throw new Error(`${what} did not appear within ${ms / 1000} s; prompts: ${prompts.join(" ")}`);
    }
    await acceptKernelDialog(page);
    await page.waitForTimeout(1000);
  }
}

// Poll until every code cell has run or one failed (or the timeout); `look` reads more of the page
// on each poll. Counts go into the report.
async function runToTheEnd(page, look = async () => {}) {
  const deadline = Date.now() + timeout;
  while (Date.now() < deadline) {
    await look();
    const state = await page.evaluate(() => ({
      prompts: [...document.querySelectorAll(".jp-CodeCell .jp-InputPrompt")].map((p) => p.textContent.trim()),
      errors: document.querySelectorAll('[data-mime-type="application/vnd.jupyter.error"]').length,
    }));
    report.codeCells = state.prompts.length;
    report.executed = state.prompts.filter((p) => /^\[\d+\]:?$/.test(p)).length;
    if (state.errors > 0 || (state.prompts.length > 0 && report.executed === state.prompts.length)) return;
    await acceptKernelDialog(page);
    await page.waitForTimeout(1000);
  }
}

const browser = await chromium.connectOverCDP(cdp);
let failed = false;
try {
  const context = browser.contexts()[0] ?? (await browser.newContext());
  const page = await context.newPage();
  await page.setViewportSize({ width: 1400, height: 1100 });
  page.on("pageerror", (err) => report.errors.push(`page error: ${err.message}`));

  await page.goto(url, { waitUntil: "domcontentloaded", timeout: 120_000 });
  await page.waitForSelector(".jp-NotebookPanel .jp-Cell", { timeout: 180_000 });
  step("notebook open");
  // The kernel is ready when the notebook's session says so (JupyterLab started with
  // expose_app_in_browser, as its own Galata tests do): connected, and idle. Before that, cells
  // run from the menu are silently dropped.
  await waitUntil(page, () => {
    const context = window.jupyterapp?.shell?.currentWidget?.sessionContext;
    const kernel = context?.session?.kernel;
    return Boolean(context?.isReady && kernel && kernel.connectionStatus === "connected" && kernel.status === "idle");
  }, 180_000, "a connected, idle kernel");
  step("kernel idle and connected");

  const menu = async (top, item) => {
    await page.locator(".lm-MenuBar-itemLabel", { hasText: new RegExp(`^${top}$`) }).click();
    await page.locator(".lm-Menu-itemLabel", { hasText: new RegExp(`^${item}$`) }).click();
  };
  // Clear the stored outputs first, so that every output checked below comes from this run.
  await menu("Edit", "Clear Outputs of All Cells");
  await menu("Run", "Run All Cells");
  await waitUntil(page, () => {
    const first = document.querySelector(".jp-CodeCell .jp-InputPrompt");
    return first !== null && /\[(\*|\d+)\]/.test(first.textContent);
  }, 120_000, "the first cell's execution");
  step("run all cells: the first cell ran");

  if (sweep) {
    // The control panel: sliders of the sweep widget.
    await waitUntil(page, () => document.querySelectorAll(".sweep-controls .widget-slider").length > 0,
                    300_000, "the sweep sliders");
    report.sliders = await page.locator(".sweep-controls .widget-slider").count();
    await page.locator(".sweep-controls").first().scrollIntoViewIfNeeded();
    await page.locator(".sweep-controls").first().screenshot({ path: `${artifacts}/chapter07-sliders.png` });
    step(`sliders rendered: ${report.sliders}`);

    // The live plot of the sweep run below it: an <img> whose picture is replaced as epochs arrive.
    const livePlot = "img.sweep-live-plot";
    await waitUntil(page, () => document.querySelectorAll("img.sweep-live-plot").length >= 2, 300_000,
                    "the live plot");
    const sources = new Set();
    await runToTheEnd(page, async () => {
      const img = await page.evaluate((selector) => {
        // The last one: the sweep panel above has its own (idle) plot.
        const last = [...document.querySelectorAll(selector)].pop();
        return { src: last ? last.src : "", width: last ? last.naturalWidth : 0 };
      }, livePlot);
      if (img.src && img.width > 0) sources.add(img.src);
      report.livePlotWidth = Math.max(report.livePlotWidth, img.width);
    });
    report.livePlotUpdates = sources.size;
    step(`cells executed: ${report.executed}/${report.codeCells}; live plot pictures seen: ${sources.size}`);
  } else {
    await runToTheEnd(page);  // any other chapter: every cell, or the first error
    step(`cells executed: ${report.executed}/${report.codeCells}`);
  }
  report.outputs = (await page.locator(".jp-OutputArea-output").allTextContents()).join("\n");

  const errors = await page.locator('[data-mime-type="application/vnd.jupyter.error"]').allTextContents();
  report.errors.push(...errors.map((e) => e.slice(0, 2000)));
  if (sweep) {
    const plot = page.locator("img.sweep-live-plot").last();
    await plot.scrollIntoViewIfNeeded();
    await plot.screenshot({ path: `${artifacts}/chapter07-live-plot.png` });
  }
  await page.screenshot({ path: `${artifacts}/${name}-browser.png` });
  step("screenshots saved");
  await page.close();
} catch (err) {
  failed = true;
  report.errors.push(`driver: ${err.message}`);
  try {
    const pages = browser.contexts()[0]?.pages() ?? [];
    if (pages.length) await pages[pages.length - 1].screenshot({ path: `${artifacts}/${name}-failure.png` });
  } catch {}
} finally {
  await browser.close().catch(() => {});
}
console.log(JSON.stringify(report));
process.exit(failed ? 1 : 0);
