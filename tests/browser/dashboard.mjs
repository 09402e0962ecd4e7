// Drives the edgecore-dmi dashboard in Debian's Chromium with playwright-core
// and prints what the page shows as JSON on stdout; tests/dashboard.rs
// starts the node and checks the result against `edgecore-dmi devices -o json`.
//
//   node dashboard.mjs --url http://127.0.0.1:PORT/ --watch default/line-1/parts \
//        --devices 5 --screenshot out.png
//
// Environment: DASHBOARD_NODE_DIR, the directory whose node_modules holds
// playwright-core (hack/setup-test-env.sh installs it in target/test-env/node);
// CHROMIUM, the browser (default /usr/bin/chromium).

import { createRequire } from "node:module";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

function args() {
  const out = {};
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i += 2) {
    if (!argv[i].startsWith("--")) throw new Error(`unexpected argument ${argv[i]}`);
    out[argv[i].slice(2)] = argv[i + 1];
  }
  for (const k of ["url", "watch", "devices", "screenshot"]) {
    if (!out[k]) throw new Error(`--${k} is required`);
  }
  return out;
}

const opts = args();
const nodeDir = process.env.DASHBOARD_NODE_DIR;
if (!nodeDir) throw new Error("DASHBOARD_NODE_DIR is not set");
const require = createRequire(path.join(path.resolve(nodeDir), "package.json"));
const { chromium } = require("playwright-core");

const [ns, name, property] = opts.watch.split("/");
const watchDevice = `${ns}/${name}`;
const expectedDevices = Number(opts.devices);

// What the page shows, from its data-* attributes and the cells' text.
function snapshot(page) {
  return page.$$eval("[data-device]", (cards) =>
    cards.map((card) => ({
      device: card.dataset.device,
      state: card.dataset.state,
      stateText: card.querySelector(".state").textContent,
      lastSeenMs: card.dataset.lastSeenMs === "" ? null : Number(card.dataset.lastSeenMs),
      problems: [...card.querySelectorAll("[data-problem]")].map((p) => p.dataset.problem),
      problemTexts: [...card.querySelectorAll("[data-problem]")].map((p) => p.textContent),
      properties: [...card.querySelectorAll("tr[data-property]")].map((row) => {
        const chart = row.querySelector("[data-points]");
        return {
          name: row.dataset.property,
          desired: row.dataset.desired,
          desiredStatus: row.dataset.desiredStatus,
          desiredText: row.querySelector("td.desired").textContent,
          reported: row.dataset.reported,
          reportedText: row.querySelector("td.reported").textContent,
          ageMs: row.dataset.ageMs === "" ? null : Number(row.dataset.ageMs),
          points: chart ? Number(chart.dataset.points) : 0,
        };
      }),
    })),
  );
}

function rowSelector() {
  return `[data-device="${watchDevice}"] tr[data-property="${property}"]`;
}

async function watchedValue(page) {
  return page.$eval(rowSelector(), (row) => row.dataset.reported);
}

// Waits until the watched value differs from `from`; how long it took.
async function waitForChange(page, from, timeout) {
  const started = Date.now();
  await page.waitForFunction(
    ([sel, old]) => {
      const row = document.querySelector(sel);
      return row && row.dataset.reported !== "" && row.dataset.reported !== old;
    },
    [rowSelector(), from],
    { timeout, polling: 100 },
  );
  return Date.now() - started;
}

async function main() {
  const profile = mkdtempSync(path.join(tmpdir(), "dashboard-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
    viewport: { width: 1280, height: 900 },
  });
  const result = { consoleErrors: [] };
  try {
    const page = await context.newPage();
    page.on("console", (m) => {
      if (m.type() === "error") result.consoleErrors.push(m.text());
    });
    page.on("pageerror", (e) => result.consoleErrors.push(String(e)));
    await page.goto(opts.url, { waitUntil: "load" });

    // Live: the event stream is open, every device is there, and the
    // watched property has a value and a chart.
    await page.waitForSelector('#conn[data-mode="live"]', { timeout: 20000 });
    await page.waitForFunction(
      ([n, sel]) => {
        const row = document.querySelector(sel);
        const chart = row && row.querySelector("[data-points]");
        return (
          document.querySelectorAll("[data-device]").length === n &&
          row && row.dataset.reported !== "" &&
          chart && Number(chart.dataset.points) >= 2
        );
      },
      [expectedDevices, rowSelector()],
      { timeout: 30000, polling: 100 },
    );
    await page.evaluate(() => {
      window.__notReloaded = true;
    });
    result.before = await snapshot(page);

    // A value changes on screen without a reload.
    const from = await watchedValue(page);
    const ms = await waitForChange(page, from, 20000);
    result.change = { from, to: await watchedValue(page), ms };
    result.notReloaded = await page.evaluate(() => window.__notReloaded === true);
    result.navigations = await page.evaluate(
      () => performance.getEntriesByType("navigation").length,
    );
    result.mode = await page.$eval("#conn", (c) => c.dataset.mode);
    result.after = await snapshot(page);
    await page.screenshot({ path: opts.screenshot, fullPage: true });

    // Without the event stream the page polls, and values still move.
    const fallback = await context.newPage();
    await fallback.route("**/api/v1/events", (route) => route.abort());
    await fallback.goto(opts.url, { waitUntil: "load" });
    await fallback.waitForSelector('#conn[data-mode="polling"]', { timeout: 20000 });
    await fallback.waitForFunction(
      (sel) => {
        const row = document.querySelector(sel);
        return row && row.dataset.reported !== "";
      },
      rowSelector(),
      { timeout: 20000, polling: 100 },
    );
    const polledFrom = await watchedValue(fallback);
    const polledMs = await waitForChange(fallback, polledFrom, 20000);
    result.fallback = {
      mode: await fallback.$eval("#conn", (c) => c.dataset.mode),
      from: polledFrom,
      to: await watchedValue(fallback),
      ms: polledMs,
      devices: (await snapshot(fallback)).length,
    };
  } finally {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
  }
  process.stdout.write(JSON.stringify(result) + "\n");
}

main().catch((e) => {
  process.stderr.write(`dashboard test failed: ${e.stack || e}\n`);
  process.exit(1);
});
