// Drives the web UI in Debian's chromium (headless) the way an Aegir 3 admin would, from an
// empty aegird to a restored site, and saves a screenshot of each page. Run by the e2e test
// web_ui_in_chromium (tests/tests/e2e/browser.rs), which starts aegird and checks the host
// afterwards. Exits non-zero with the reason on the first thing that does not work.
//
// Environment: AEGIR_URL, AEGIR_USER, AEGIR_PASSWORD, SITE_URI, SITE_TITLE, SHOTS_DIR,
// WORDPRESS (the codebase directory).
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";

const env = process.env;
const base = env.AEGIR_URL;
const uri = env.SITE_URI;
const title = env.SITE_TITLE;
const shots = env.SHOTS_DIR;
mkdirSync(shots, { recursive: true });

const FINAL = ["succeeded", "failed", "cancelled", "interrupted"];
let step = "start";

function check(condition, message) {
  if (!condition) throw new Error(message);
}

async function shot(page, name) {
  await page.screenshot({ path: `${shots}/${name}.png`, fullPage: true });
}

/** Waits on an operation's page until it ends; fails with its error and log if it did not succeed. */
async function finished(page, timeout = 300_000) {
  await page.waitForURL(/\/operations\/\d+/);
  await page.waitForFunction(
    (final) => {
      const s = document.getElementById("op-status");
      return s && final.includes(s.textContent.trim());
    },
    FINAL,
    { timeout },
  );
  const status = (await page.textContent("#op-status")).trim();
  if (status !== "succeeded") {
    const error = await page.locator(".error").allTextContents();
    const log = await page.locator("#log li").allTextContents();
    throw new Error(`operation ${page.url()} ${status}: ${error.join(" ")}\n${log.slice(-15).join("\n")}`);
  }
}

async function siteTitle(page) {
  await page.goto(`http://${uri}/`);
  return (await page.title()).trim();
}

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    `--host-resolver-rules=MAP ${uri} 127.0.0.1`,
  ],
});
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  context.setDefaultTimeout(60_000);
  const page = await context.newPage();
  page.on("dialog", (d) => d.accept());

  step = "login";
  await page.goto(`${base}/environments`);
  check(page.url().startsWith(`${base}/login`), `not sent to login: ${page.url()}`);
  await shot(page, "01-login");
  await page.getByLabel("User name").fill(env.AEGIR_USER);
  await page.getByLabel("Password").fill("wrong password!");
  await page.getByRole("button", { name: "Log in" }).click();
  check((await page.textContent("#login-error")).includes("Wrong user name or password"), "bad password not refused");
  await page.getByLabel("User name").fill(env.AEGIR_USER);
  await page.getByLabel("Password").fill(env.AEGIR_PASSWORD);
  await page.getByRole("button", { name: "Log in" }).click();
  await page.waitForURL(`${base}/environments`);

  step = "keyboard";
  await page.goto(`${base}/`);
  await page.keyboard.press("Tab");
  const focused = await page.evaluate(() => document.activeElement.textContent.trim());
  check(focused === "Skip to content", `first Tab lands on ${focused}`);
  const outline = await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
  check(outline !== "none", "focus is not visible");

  step = "add server";
  await page.getByRole("link", { name: "Servers" }).click();
  await page.getByLabel("Name").fill("local");
  await page.getByLabel("on this machine").check();
  await page.getByRole("button", { name: "Add server" }).click();
  await finished(page);
  await page.goto(`${base}/servers`);
  await shot(page, "02-servers");

  step = "project and release";
  await page.getByRole("link", { name: "Releases" }).click();
  await page.locator("#project-name").fill("wordpress");
  await page.locator("#project-path").fill(env.WORDPRESS);
  await page.getByRole("button", { name: "Add project" }).click();
  await page.waitForURL(`${base}/releases`);
  await page.locator("#release-name").fill("wordpress-6");
  await page.locator("#release-project").selectOption("wordpress");
  await page.locator("#release-server").selectOption("local");
  await page.getByRole("button", { name: "Create release" }).click();
  await finished(page);
  await page.goto(`${base}/releases`);
  check((await page.textContent("main")).includes("wordpress"), "release page lacks the application");
  await shot(page, "03-releases");

  step = "create environment, watch it live";
  await page.goto(`${base}/environments/new`);
  await page.getByLabel("Uri (host name)").fill(uri);
  await page.getByLabel("Release").selectOption("wordpress-6");
  await page.getByLabel("Site title (optional)").fill(title);
  await page.getByRole("button", { name: "Create and install" }).click();
  await page.waitForURL(/\/operations\/\d+/);
  // A mark on this document: if the page reloaded, it is gone.
  await page.evaluate(() => { window.__notReloaded = true; });
  const linesAtLoad = await page.locator("#log li").count();
  await page.waitForFunction(
    (n) => document.querySelectorAll("#log li").length > n || document.getElementById("op-state")?.dataset.finished === "true",
    linesAtLoad,
  );
  await shot(page, "04-operation-live");
  await finished(page);
  check(await page.evaluate(() => window.__notReloaded === true), "the operation page reloaded instead of updating live");
  const linesAtEnd = await page.locator("#log li").count();
  const stepsDone = await page.locator("#op-state .steps tbody tr").count();
  check(linesAtEnd > linesAtLoad, `no log line arrived live (${linesAtLoad} at load, ${linesAtEnd} at end)`);
  check(stepsDone > 1, "steps are not shown");
  await shot(page, "05-operation-finished");

  step = "open the site";
  const site = await context.newPage();
  const installed = await siteTitle(site);
  check(installed.includes(title), `site title is ${installed}`);

  step = "environment page and backup";
  await page.goto(`${base}/environments`);
  await page.getByRole("link", { name: uri }).click();
  await page.waitForURL(`${base}/environments/${uri}`);
  await shot(page, "06-environment");
  await page.getByRole("button", { name: "Back up" }).click();
  await finished(page);

  step = "log in to site";
  await page.goto(`${base}/environments/${uri}`);
  const [admin] = await Promise.all([
    context.waitForEvent("page"),
    page.getByRole("button", { name: "Log in to site" }).click(),
  ]);
  await admin.waitForURL(/\/wp-admin\//, { timeout: 120_000 });
  await shot(admin, "07-wp-admin");
  // Change the site's title in WordPress itself, so the restore has something to undo.
  await admin.goto(`http://${uri}/wp-admin/options-general.php`);
  await admin.locator("#blogname").fill("Changed in wp-admin");
  await admin.locator("#submit").click();
  await admin.waitForLoadState();
  const changed = await siteTitle(site);
  check(changed.includes("Changed in wp-admin"), `title not changed: ${changed}`);

  step = "restore";
  await page.goto(`${base}/environments/${uri}`);
  const restore = page.getByRole("button", { name: /^Restore backup / }).last();
  await restore.click();
  await finished(page);
  const restored = await siteTitle(site);
  check(restored.includes(title) && !restored.includes("Changed"), `after restore the title is ${restored}`);

  step = "dashboard and list";
  await page.goto(`${base}/`);
  check((await page.textContent("main")).includes(uri), "dashboard does not list the site's backup age");
  await shot(page, "08-dashboard");
  await page.goto(`${base}/environments?q=${encodeURIComponent(uri.slice(0, 6))}`);
  await shot(page, "09-environments");

  step = "narrow screen";
  const phone = await context.newPage();
  await phone.setViewportSize({ width: 360, height: 800 });
  for (const path of ["/", `/environments/${uri}`, "/environments", "/servers", "/releases"]) {
    await phone.goto(`${base}${path}`);
    const wide = await phone.evaluate(() => document.documentElement.scrollWidth);
    if (wide > 360) {
      // Name the elements that stick out, to say what to fix.
      const culprits = await phone.evaluate(() =>
        [...document.querySelectorAll("body *")]
          .filter((e) => e.getBoundingClientRect().right > 360 && !e.closest("table"))
          .slice(0, 5)
          .map((e) => `${e.tagName.toLowerCase()}${e.id ? "#" + e.id : ""}.${e.className}`),
      );
      check(false, `${path} is ${wide} px wide at 360 px: ${culprits.join(", ")}`);
    }
  }
  await phone.goto(`${base}/environments/${uri}`);
  await shot(phone, "10-environment-360px");

  step = "delete";
  await page.goto(`${base}/environments/${uri}`);
  await page.getByText("Delete this environment").click();
  const del = page.getByRole("button", { name: `Delete ${uri}` });
  check(await del.isDisabled(), "delete is possible before the uri is typed");
  await page.getByLabel(`Type ${uri} to confirm`).fill(uri);
  await page.getByLabel("Skip the pre-delete backup").check();
  await del.click();
  await finished(page);

  step = "logout";
  await page.getByRole("button", { name: "Log out" }).click();
  await page.waitForURL(`${base}/login`);
  await page.goto(`${base}/`);
  check(page.url().startsWith(`${base}/login`), "still logged in after logout");
  console.log(JSON.stringify({ ok: true, shots }));
} catch (e) {
  console.error(`browser test failed at "${step}": ${e.stack || e}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
