// Opens a servetest HTML report the way a person would — in a real (headless) Chromium — and fails when
// the page logs a console error or throws, when it shows fewer charts than expected, or when no
// screenshot can be taken.
// usage: node check-report.mjs REPORT.html SCREENSHOT.png MIN_CHARTS
import { chromium } from "playwright-core";
import path from "node:path";

const [report, shot, minCharts] = process.argv.slice(2);
if (!report || !shot) {
  console.error("usage: node check-report.mjs REPORT.html SCREENSHOT.png [MIN_CHARTS]");
  process.exit(2);
}
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  // As root in a sandbox-less container, offline: no sandbox, no background network.
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const problems = [];
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  page.on("console", (m) => { if (m.type() === "error") problems.push(`console error: ${m.text()}`); });
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("requestfailed", (r) => problems.push(`request failed: ${r.url()}`));
  await page.goto("file://" + path.resolve(report), { waitUntil: "load" });
  const charts = await page.locator("svg").count();
  const cases = await page.locator("h2").count();
  if (charts < Number(minCharts || 1)) problems.push(`only ${charts} chart(s), expected at least ${minCharts}`);
  await page.screenshot({ path: shot, fullPage: true });
  console.log(`${report}: ${cases} case(s), ${charts} chart(s), screenshot ${shot}`);
} finally {
  await browser.close();
}
if (problems.length) {
  console.error(problems.join("\n"));
  process.exit(1);
}
