// Opens a servetest HTML report the way a person would — in a real (headless) Chromium — and fails
// when the page logs a console error or throws, when no screenshot can be taken, or when what it shows
// is wrong:
//   - fewer charts than expected;
//   - a chart whose coloured lines do not match its legend one to one;
//   - a line on a `concurrency` chart that does not run left to right (points of different series
//     joined into a zigzag, or two points at one concurrency: a vertical jump);
//   - an expectation not met: CASE=series:N (lines per chart), CASE=points:N (points per chart),
//     CASE=grid:RxC (every bsz × seq table of the case has R rows and C columns of numbers).
// usage: node check-report.mjs REPORT.html SCREENSHOT.png MIN_CHARTS [CASE=KIND:VALUE …]
import { chromium } from "playwright-core";
import path from "node:path";

const [report, shot, minCharts, ...expectations] = process.argv.slice(2);
if (!report || !shot) {
  console.error("usage: node check-report.mjs REPORT.html SCREENSHOT.png [MIN_CHARTS] [CASE=KIND:VALUE …]");
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
  // What each case shows, read from the rendered page: per chart its x quantity, legend entries,
  // coloured lines (x of each point) and points; per grid table its shape and cells.
  const shown = await page.evaluate(() => {
    const out = {};
    for (const section of document.querySelectorAll("section.case")) {
      const figures = [...section.querySelectorAll("figure.chart")].map((f) => ({
        x: f.dataset.x,
        legend: f.querySelectorAll("ul.legend li").length,
        lines: [...f.querySelectorAll("svg polyline")]
          .filter((p) => p.getAttribute("stroke-width") === "2")
          .map((p) => p.getAttribute("points").trim().split(/\s+/).map((xy) => Number(xy.split(",")[0]))),
        points: f.querySelectorAll("svg circle").length,
      }));
      const grids = [...section.querySelectorAll("table.grid")].map((t) => {
        const rows = [...t.querySelectorAll("tr")].slice(1);
        return {
          title: t.querySelector("caption")?.textContent ?? "",
          rows: rows.length,
          cols: rows.length ? rows[0].querySelectorAll("td").length - 1 : 0,
          cells: rows.flatMap((r) => [...r.querySelectorAll("td")].slice(1).map((td) => td.textContent.trim())),
        };
      });
      out[section.id] = { figures, grids };
    }
    return out;
  });
  for (const [name, c] of Object.entries(shown)) {
    c.figures.forEach((f, i) => {
      if (f.lines.length !== f.legend) {
        problems.push(`${name}: chart ${i + 1}: ${f.lines.length} line(s) but ${f.legend} legend entr(ies)`);
      }
      if (f.x === "concurrency") {
        for (const xs of f.lines) {
          if (!xs.every((x, j) => j === 0 || x > xs[j - 1])) {
            problems.push(`${name}: chart ${i + 1}: a line does not run left to right (zigzag or vertical jump): x = ${xs.join(" ")}`);
          }
        }
      }
    });
  }
  for (const e of expectations) {
    const m = e.match(/^(.+)=(series|points|grid):(\S+)$/);
    if (!m) { problems.push(`bad expectation ${e}`); continue; }
    const [, name, kind, want] = m;
    const c = shown[name];
    if (!c) { problems.push(`${name}: not on the page (cases: ${Object.keys(shown).join(", ")})`); continue; }
    if (kind === "grid") {
      const [r, k] = want.split("x").map(Number);
      if (!c.grids.length) problems.push(`${name}: no bsz × seq table`);
      for (const g of c.grids) {
        if (g.rows !== r || g.cols !== k) problems.push(`${name}: "${g.title}" is ${g.rows}x${g.cols}, expected ${want}`);
        // "-" marks a point not measured (decode time lost in noise); anything else must be a
        // number that is not zero (a unit too large for the values shows 0.0000).
        const bad = g.cells.filter((v) => v !== "-" && (!Number.isFinite(Number(v)) || /^-?0(\.0+)?$/.test(v)));
        if (bad.length) problems.push(`${name}: "${g.title}" shows cells that are not numbers or are zero: ${bad.join(", ")}`);
        if (!g.cells.some((v) => v !== "-")) problems.push(`${name}: "${g.title}" shows no number`);
      }
    } else {
      if (!c.figures.length) problems.push(`${name}: no charts`);
      c.figures.forEach((f, i) => {
        const got = kind === "series" ? f.lines.length : f.points;
        if (got !== Number(want)) problems.push(`${name}: chart ${i + 1} shows ${got} ${kind}, expected ${want}`);
      });
    }
  }
  await page.screenshot({ path: shot, fullPage: true });
  console.log(`${report}: ${cases} case(s), ${charts} chart(s), screenshot ${shot}`);
} finally {
  await browser.close();
}
if (problems.length) {
  console.error(problems.join("\n"));
  process.exit(1);
}
