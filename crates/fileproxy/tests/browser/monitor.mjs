// Opens FileProxy's /monitor in headless Chromium while traffic runs and checks that
// the charts draw and keep updating from /stats; saves a screenshot.
//
//   node monitor.mjs <monitor url with ?token=> <screenshot.png>
//
// Chromium: $CHROMIUM or /usr/bin/chromium (Debian's `chromium` package).
// Exit 0 when every check passes; otherwise prints what failed and exits 1.

import { chromium } from "playwright-core";

const [url, out] = process.argv.slice(2);
if (!url || !out) {
  console.error("usage: node monitor.mjs <monitor url> <screenshot.png>");
  process.exit(2);
}

const failures = [];
const check = (ok, what) => {
  if (!ok) failures.push(what);
};

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
  ],
});
const summary = {};
try {
  const page = await browser.newPage({ viewport: { width: 1440, height: 1100 } });
  const pageErrors = [];
  const outside = [];
  page.on("pageerror", (e) => pageErrors.push(String(e)));
  page.on("console", (m) => {
    if (m.type() === "error") pageErrors.push(m.text());
  });
  const origin = new URL(url).origin;
  page.on("request", (r) => {
    if (!r.url().startsWith(origin)) outside.push(r.url());
  });

  await page.goto(url, { waitUntil: "load" });
  check(!page.url().includes("token="), "token left in the address bar: " + page.url());

  // Every chart canvas in the page, with its draw count, points and pixels.
  const snapshot = () =>
    page.evaluate(() => ({
      updates: Number(document.body.dataset.updates || 0),
      state: document.getElementById("state").className,
      rps: document.getElementById("t-rps").textContent,
      bps: document.getElementById("t-bps").textContent,
      charts: [...document.querySelectorAll("canvas")].map((c) => {
        const g = c.getContext("2d");
        const px = g.getImageData(0, 0, c.width, c.height).data;
        let inked = 0;
        for (let i = 3; i < px.length; i += 4) if (px[i] > 0) inked++;
        return {
          id: c.id,
          draws: Number(c.dataset.draws || 0),
          points: Number(c.dataset.points || 0),
          inked,
          image: c.toDataURL(),
        };
      }),
    }));

  await page.waitForFunction(
    () => {
      const c = document.getElementById("chart-requests");
      return Number(document.body.dataset.updates || 0) >= 2 && c && Number(c.dataset.points || 0) >= 3;
    },
    null,
    { timeout: 45000 },
  );
  const first = await snapshot();
  await page.waitForFunction(
    (n) => Number(document.body.dataset.updates || 0) >= n + 3,
    first.updates,
    { timeout: 30000 },
  );
  const second = await snapshot();

  const ids = second.charts.map((c) => c.id);
  for (const want of [
    "chart-requests",
    "chart-latency",
    "chart-ttfb",
    "chart-errors",
    "chart-bytes",
    "chart-connections",
    "chart-sessions",
  ]) {
    check(ids.includes(want), "missing chart " + want);
  }
  for (const c of second.charts) {
    const before = first.charts.find((x) => x.id === c.id);
    check(c.draws > (before ? before.draws : 0), c.id + " did not redraw");
    check(c.points >= 3, c.id + " has only " + c.points + " points");
    check(c.inked > 1000, c.id + " drew almost nothing (" + c.inked + " pixels)");
  }
  for (const id of ["chart-requests", "chart-bytes"]) {
    const a = first.charts.find((x) => x.id === id);
    const b = second.charts.find((x) => x.id === id);
    check(a && b && a.image !== b.image, id + " picture did not change while traffic ran");
  }
  check(second.state === "ok", "status indicator is " + second.state);
  check(second.rps !== "–" && Number.parseFloat(second.rps) > 0, "requests/s tile shows " + second.rps);
  check(pageErrors.length === 0, "page errors: " + pageErrors.join("; "));
  check(outside.length === 0, "requests outside FileProxy: " + outside.join(", "));

  // Optionally let the charts fill up before the picture (MONITOR_SETTLE_MS).
  const settle = Number(process.env.MONITOR_SETTLE_MS || 0);
  if (settle > 0) await page.waitForTimeout(settle);
  await page.screenshot({ path: out, fullPage: true });
  Object.assign(summary, {
    updates: second.updates,
    rps: second.rps,
    bytes: second.bps,
    charts: second.charts.map((c) => ({ id: c.id, draws: c.draws, points: c.points, inked: c.inked })),
    screenshot: out,
  });
} finally {
  await browser.close();
}

console.log(JSON.stringify(summary, null, 2));
if (failures.length) {
  console.error("monitor check failed:\n - " + failures.join("\n - "));
  process.exit(1);
}
console.log("monitor check passed");
