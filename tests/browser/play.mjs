// Plays an HLS player page (the relay's play.html) in headless Chromium and prints what the player saw as one JSON line.
//
//   node play.mjs --url URL --secs N [--screenshot PATH] [--chromium /usr/bin/chromium] [--start-within SECS]
//                 [--trace PATH]
//
// The page must keep window.lbStats up to date (relay/src/egress/hls_player.html). Output on success, exit 0:
//   {"started_after_ms":..,"played_secs":..,"stalls":..,"max_stall_ms":..,"errors":[],"latency_s":..,"glass_to_glass_ms":..}
// Any failure (page not served, no start before the deadline, a fatal player error) exits 1 with the reason on stderr.
// --trace writes one line per request (start and end in ms since the page opened, status, URL) and per stats sample,
// to tell afterwards what a player waited for during a stall.
import { chromium } from "playwright-core";
import { appendFileSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const USAGE =
  "usage: node play.mjs --url URL --secs N [--screenshot PATH] [--chromium PATH] [--start-within SECS] [--trace PATH]";

function parseArgs(argv) {
  const opts = { chromium: "/usr/bin/chromium", startWithin: 20, screenshot: null, trace: null };
  for (let i = 0; i < argv.length; i += 2) {
    const [flag, value] = [argv[i], argv[i + 1]];
    if (value === undefined) throw new Error(`${flag} needs a value\n${USAGE}`);
    if (flag === "--url") opts.url = value;
    else if (flag === "--secs") opts.secs = Number(value);
    else if (flag === "--screenshot") opts.screenshot = value;
    else if (flag === "--chromium") opts.chromium = value;
    else if (flag === "--start-within") opts.startWithin = Number(value);
    else if (flag === "--trace") opts.trace = value;
    else throw new Error(`unknown option ${flag}\n${USAGE}`);
  }
  if (!opts.url) throw new Error(`--url is required\n${USAGE}`);
  if (!(opts.secs > 0 && opts.secs <= 3600)) throw new Error(`--secs must be 1..3600 seconds\n${USAGE}`);
  if (!(opts.startWithin > 0 && opts.startWithin <= 600)) throw new Error(`--start-within must be 1..600 seconds`);
  return opts;
}

const median = (xs) => {
  if (!xs.length) return null;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

let context = null;
let profile = null;
let cleaning = null;

/** Closes the browser, then removes its profile; every caller (the end, a signal) waits for the same one run. */
function cleanup() {
  cleaning ??= (async () => {
    if (context) await context.close().catch(() => {});
    // Retries: a Chromium that is still going down may write into its profile for a moment.
    if (profile) {
      try {
        rmSync(profile, { recursive: true, force: true, maxRetries: 10, retryDelay: 100 });
      } catch (e) {
        process.stderr.write(`play.mjs: could not remove the browser profile ${profile}: ${e.message}\n`);
      }
    }
  })();
  return cleaning;
}

function die(message) {
  // Playwright's messages carry colour codes and a call log: one plain line is what a test log needs.
  message = String(message).replace(/\x1b\[[0-9;]*m/g, "").split("\nCall log:")[0].trim();
  process.stderr.write(`play.mjs: ${message}\n`);
  process.exitCode = 1;
}

for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"]) {
  process.on(sig, async () => {
    process.stderr.write(`play.mjs: stopped by ${sig}\n`);
    await cleanup();
    process.exit(1);
  });
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  // Whatever hangs (a browser that never starts), the run ends: start deadline + play time + a minute.
  const watchdog = setTimeout(async () => {
    die("gave up: the browser did not finish in time");
    await cleanup();
    process.exit(1);
  }, (opts.startWithin + opts.secs + 60) * 1000);
  watchdog.unref();

  profile = mkdtempSync(join(tmpdir(), "lb-play-"));
  context = await chromium.launchPersistentContext(profile, {
    executablePath: opts.chromium,
    headless: true,
    viewport: { width: 1280, height: 900 },
    // Our own handlers close the browser first, then remove the profile.
    handleSIGINT: false,
    handleSIGTERM: false,
    handleSIGHUP: false,
    // The machine's network is closed: no background connections, no first-run work, no QUIC.
    args: [
      "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
      "--autoplay-policy=no-user-gesture-required",
    ],
  });
  const page = context.pages()[0] ?? (await context.newPage());
  // Kept for the failure message: what the page could not load and what it complained about.
  const failed = [];
  page.on("response", (r) => { if (r.status() >= 400) failed.push(`HTTP ${r.status()} ${r.url()}`); });
  page.on("requestfailed", (r) => failed.push(`${r.failure()?.errorText ?? "failed"} ${r.url()}`));
  page.on("pageerror", (e) => failed.push(`page error: ${e.message}`));
  const stats = () => page.evaluate(() => window.lbStats ?? null);
  const shot = async () => { if (opts.screenshot) await page.screenshot({ path: opts.screenshot }); };
  const seen = () => (failed.length ? `; failed requests: ${failed.slice(0, 5).join(", ")}` : "");

  const opened = Date.now();
  const trace = (line) => { if (opts.trace) appendFileSync(opts.trace, `${Date.now() - opened} ${line}\n`); };
  if (opts.trace) {
    writeFileSync(opts.trace, `# ${new Date(opened).toISOString()} ${opts.url}\n`);
    const started = new Map();
    page.on("request", (r) => started.set(r, Date.now() - opened));
    page.on("requestfinished", async (r) => {
      const resp = await r.response().catch(() => null);
      trace(`req ${started.get(r) ?? "?"} ${resp ? resp.status() : "-"} ${r.url()}`);
    });
    page.on("requestfailed", (r) => trace(`req ${started.get(r) ?? "?"} failed(${r.failure()?.errorText}) ${r.url()}`));
    page.on("console", (m) => trace(`console ${m.text().replace(/\s+/g, " ").slice(0, 400)}`));
  }
  const response = await page.goto(opts.url, { waitUntil: "load", timeout: opts.startWithin * 1000 });
  if (!response || !response.ok()) {
    throw new Error(`${opts.url} answered ${response ? "HTTP " + response.status() : "nothing"}: no player page`);
  }
  if (!(await stats())) throw new Error(`${opts.url} is not the player page (no window.lbStats)${seen()}`);

  // Started: the video element fired 'playing' and its clock moves.
  let s;
  for (;;) {
    s = await stats();
    if (s.errors.length) { await shot(); throw new Error(`the player failed before playing: ${s.errors.join("; ")}${seen()}`); }
    if (s.state === "playing" && s.currentTime > 0) break;
    if (Date.now() - opened > opts.startWithin * 1000) {
      await shot();
      throw new Error(`playback did not start within ${opts.startWithin} s (state ${s.state}, ` +
        `${s.levelsLoaded} playlist loads)${seen()}`);
    }
    await sleep(100);
  }
  const startedAfter = Date.now() - opened;

  const first = s.currentTime;
  const latencies = [];
  const g2g = [];
  const end = Date.now() + opts.secs * 1000;
  while (Date.now() < end) {
    await sleep(Math.min(250, Math.max(0, end - Date.now())));
    s = await stats();
    trace(`stats t=${s.currentTime.toFixed(3)} state=${s.state} stallMs=${Math.round(s.stallMs)} ` +
      `latency=${s.latency === null ? "-" : s.latency.toFixed(2)} g2g=${s.glassToGlassMs ?? "-"} ` +
      `buffered=${s.bufferedEnd == null ? "-" : s.bufferedEnd.toFixed(3)}`);
    if (s.latency !== null) latencies.push(s.latency);
    if (s.glassToGlassMs !== null) g2g.push(s.glassToGlassMs);
    if (s.errors.length) break;
  }
  await shot();
  const result = {
    started_after_ms: startedAfter,
    played_secs: Math.round((s.currentTime - first) * 1000) / 1000,
    stalls: s.stalls,
    max_stall_ms: Math.round(Math.max(s.maxStallMs, s.stallMs)),
    errors: s.errors,
    latency_s: median(latencies),
    glass_to_glass_ms: g2g.length ? Math.round(median(g2g)) : null,
  };
  process.stdout.write(JSON.stringify(result) + "\n");
  if (s.errors.length) throw new Error(`the player failed while playing: ${s.errors.join("; ")}${seen()}`);
}

try {
  await main();
} catch (e) {
  die(e && e.message ? e.message : String(e));
} finally {
  await cleanup();
}
