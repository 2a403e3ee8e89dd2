/**
 * The dashboard in a real browser (Debian's chromium, driven by playwright-core): a 2-device
 * loopback cluster's page lists both devices and the link, draws the placement, and after a chat
 * message sent through the page's chat box shows the streamed reply and per-token bars. Leaves a
 * screenshot in a temp folder. Skips when chromium is not installed, unless HALO_REQUIRE_BROWSER=1
 * (CI installs it and sets that, so there a missing browser fails).
 */
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { chromium, type Page } from "playwright-core";
import { startDashboardServer } from "./dashboardHarness.js";

const CHROMIUM = process.env["HALO_CHROMIUM"] ?? "/usr/bin/chromium";
const requireBrowser = process.env["HALO_REQUIRE_BROWSER"] === "1";
const skip = !existsSync(CHROMIUM) && !requireBrowser ? `no chromium at ${CHROMIUM} (apt-get install chromium, or set HALO_CHROMIUM); HALO_REQUIRE_BROWSER=1 makes this a failure` : false;

// The functions passed to the page run in the browser; the tests compile without the DOM library,
// so these are the little of it they touch.
interface PageElement {
  textContent: string | null;
  getAttribute(name: string): string | null;
  querySelectorAll(selector: string): ArrayLike<PageElement>;
}
declare const document: { querySelector(selector: string): PageElement | null; querySelectorAll(selector: string): ArrayLike<PageElement> };
const cellTexts = (rows: unknown[]): Array<Array<string | null>> => rows.map((r) => Array.from((r as PageElement).querySelectorAll("td"), (td) => td.textContent));

/** Pixels of a canvas that something was drawn on. */
function paintedPixels(page: Page, selector: string): Promise<number> {
  return page.$eval(selector, (canvas) => {
    const c = canvas as unknown as { width: number; height: number; getContext(kind: "2d"): { getImageData(x: number, y: number, w: number, h: number): { data: Uint8ClampedArray } } };
    const { data } = c.getContext("2d").getImageData(0, 0, c.width, c.height);
    let n = 0;
    for (let i = 3; i < data.length; i += 4) if (data[i]! > 0) n++;
    return n;
  });
}

test("the dashboard of a 2-device cluster in chromium: devices, link, placement, a chat reply and its per-token chart", { skip, timeout: 60_000 }, async (t) => {
  assert.ok(existsSync(CHROMIUM), `HALO_REQUIRE_BROWSER=1 but there is no chromium at ${CHROMIUM}`);
  const dash = await startDashboardServer({ nDevices: 2, statusIntervalMs: 250 });
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ["--no-sandbox"] });
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    const problems: string[] = [];
    page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
    page.on("console", (message) => {
      if (message.type() === "error") problems.push(`console: ${message.text()}`);
    });
    page.on("request", (request) => {
      if (!request.url().startsWith(dash.url)) problems.push(`request to another origin: ${request.url()}`);
    });
    page.setDefaultTimeout(15_000);

    await page.goto(`${dash.url}/`);
    await page.waitForFunction(() => document.querySelector("#connection")?.textContent === "live");
    await page.waitForFunction(() => document.querySelectorAll("#devices tbody tr").length === 2);
    const devices = await page.$$eval("#devices tbody tr", cellTexts);
    assert.deepEqual(devices.map((cells) => cells[5]), ["active", "active"]);
    assert.match(devices[1]![1]!, /^worker 127\.0\.0\.1:\d+$/);
    assert.ok(devices.every((cells) => /^\d+\.\d{4}$/.test(cells[2]!) && / MiB$/.test(cells[4]!)), JSON.stringify(devices));
    const links = await page.$$eval("#links tbody tr", cellTexts);
    assert.equal(links.length, 1);
    assert.deepEqual(links[0]!.slice(0, 1).concat(links[0]![2]!), ["1", "active"]);
    assert.ok((await paintedPixels(page, "#placement-attention")) > 0, "the attention placement grid is drawn");
    assert.ok((await paintedPixels(page, "#placement-ffn")) > 0, "the FFN placement grid is drawn");
    assert.equal(await page.getAttribute("#token-chart", "data-samples"), "0");

    await page.fill("#chat-input", "Once upon a time");
    await page.click("#chat-send");
    const reply = await page.waitForSelector("#chat-log p.assistant[data-done='true']");
    const text = (await reply.textContent()) ?? "";
    assert.ok(text.trim().length > 0, "the streamed reply is shown");
    assert.equal(await page.textContent("#chat-log p.user"), "you: Once upon a time");
    await page.waitForFunction(() => Number(document.querySelector("#token-chart")?.getAttribute("data-samples")) > 0);
    await page.waitForFunction(() => /tokens live/.test(document.querySelector("#token-summary")?.textContent ?? ""));
    assert.ok((await paintedPixels(page, "#token-chart")) > 0, "the per-token bars are drawn");
    // The dropped-groups chart fills from status events, one per 250 ms here.
    await page.waitForFunction(() => Number(document.querySelector("#dropped-chart")?.getAttribute("data-samples")) > 1);

    const dir = mkdtempSync(join(tmpdir(), "halo-dashboard-"));
    const screenshot = join(dir, "dashboard.png");
    await page.screenshot({ path: screenshot, fullPage: true });
    const png = readFileSync(screenshot);
    assert.ok(png.length > 1000, `screenshot of ${png.length} bytes`);
    assert.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], "a PNG file");
    t.diagnostic(`screenshot: ${screenshot}`);
    assert.deepEqual(problems, []);
  } finally {
    await browser.close();
    await dash.close();
  }
});
