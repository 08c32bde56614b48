// Opens a page in Debian's chromium (headless, driven by playwright-core) and reports what
// a person would see once the page settles: its status, its answer, the run it names, and
// what the browser logged (CORS refusals among it). A screenshot goes to the given path.
// Usage: node browser.cjs <page url> <screenshot path>; prints one JSON line.
const { chromium } = require("playwright-core");

// Without the background-networking flags, chromium keeps calling Google's hosts, which a
// closed network refuses; the sandbox needs a non-root user.
const FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

async function main() {
  const [pageUrl, screenshot] = process.argv.slice(2);
  // A fresh profile every launch (playwright's temporary --user-data-dir).
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: FLAGS,
  });
  try {
    const page = await browser.newPage({ viewport: { width: 900, height: 700 } });
    const logged = [];
    page.on("console", (message) => logged.push(message.text()));
    await page.goto(pageUrl);
    await page.waitForSelector('#status:not([data-state="running"])', { timeout: 60_000 });
    await page.screenshot({ path: screenshot, fullPage: true });
    const text = (selector) => page.locator(selector).innerText();
    const state = await page.locator("#status").getAttribute("data-state");
    console.log(
      JSON.stringify({
        state,
        status: await text("#status"),
        answer: await text("#answer"),
        run: await text("#run"),
        console: logged,
      }),
    );
  } finally {
    await browser.close();
  }
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
