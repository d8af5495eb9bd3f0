// The API docs pages in a real browser: Debian's Chromium driven by
// playwright-core, the server reached under a host name that is not
// localhost (Swagger UI hides its validator badge on localhost, which would
// hide a call to an outside service), and every request that does not go
// to chatwire itself blocked and recorded. Both pages must render every
// route of /openapi.json; in Swagger UI, "Try it out" registers, logs in,
// authorizes with the token and reads /messages.
//
// Screenshots go to tests/e2e/browser/artifacts/ (ignored by git).
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import path from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { launchChromium } from "./chromium.mjs";
import { chatwireBin, startServer } from "../js/lib/server.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ARTIFACTS = path.join(HERE, "artifacts");
const HOST = "chatwire.test";

let server;
let browser;
let base;
let spec;

before(async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  server = await startServer([], {
    bin: chatwireBin(),
    env: { DATABASE_URL: "memory:", BCRYPT_COST: "4", JWT_SECRET: "browser-test-secret-browser-test-secret" },
  });
  base = `http://${HOST}:${server.port}`;
  spec = await (await fetch(`${server.url}/openapi.json`)).json();
  browser = await launchChromium(HOST);
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

// Every (METHOD, path) of the document, e.g. ["POST", "/register"].
function operations() {
  const ops = [];
  for (const [p, item] of Object.entries(spec.paths)) {
    for (const method of Object.keys(item)) {
      if (["get", "post", "put", "patch", "delete", "head", "options"].includes(method)) {
        ops.push([method.toUpperCase(), p, item[method]]);
      }
    }
  }
  return ops;
}

// A page whose requests outside chatwire are aborted and listed in `outside`.
async function openPage() {
  const context = await browser.newContext({ viewport: { width: 1400, height: 1000 } });
  const outside = [];
  await context.route("**/*", (route) => {
    const url = new URL(route.request().url());
    if (url.protocol === "data:" || url.protocol === "blob:" || url.host === `${HOST}:${server.port}`) {
      return route.continue();
    }
    outside.push(route.request().url());
    return route.abort();
  });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  return { context, page, outside, errors };
}

test("the OpenAPI document lists the REST routes", () => {
  const ops = operations().map(([m, p]) => `${m} ${p}`).sort();
  for (const want of ["GET /", "GET /messages", "GET /ready", "POST /login", "POST /register"]) {
    assert.ok(ops.includes(want), `${want} in ${ops}`);
  }
  assert.equal(spec.servers?.some((s) => /localhost|127\.0\.0\.1/.test(s.url)) ?? false, false);
});

test("Swagger UI renders every route, and Try it out works end to end", async () => {
  const { context, page, outside, errors } = await openPage();
  try {
    await page.goto(`${base}/docs`);
    await page.waitForSelector(".swagger-ui .opblock", { timeout: 30000 });
    for (const [method, p] of operations()) {
      const block = page.locator(`.opblock-${method.toLowerCase()}`, {
        has: page.locator(`.opblock-summary-path[data-path="${p}"]`),
      });
      assert.equal(await block.count(), 1, `Swagger UI shows ${method} ${p}`);
    }
    await page.screenshot({ path: path.join(ARTIFACTS, "docs.png"), fullPage: true });

    const tryIt = async (method, p, body) => {
      const block = page.locator(`.opblock-${method.toLowerCase()}`, {
        has: page.locator(`.opblock-summary-path[data-path="${p}"]`),
      });
      if (!(await block.locator(".opblock-body").count())) {
        await block.locator(".opblock-summary").first().click();
      }
      await block.locator("button.try-out__btn").click();
      if (body !== undefined) {
        await block.locator("textarea.body-param__text").fill(JSON.stringify(body));
      }
      await block.locator("button.execute").click();
      const status = block.locator(".live-responses-table .response .response-col_status").first();
      await status.waitFor({ timeout: 15000 });
      const text = await block.locator(".live-responses-table .response-col_description pre").first().innerText();
      return { status: Number((await status.innerText()).trim()), text };
    };

    const user = { username: "swagger_ana", password: "secret1" };
    const registered = await tryIt("POST", "/register", user);
    assert.equal(registered.status, 201, registered.text);
    const login = await tryIt("POST", "/login", user);
    assert.equal(login.status, 200, login.text);
    const token = JSON.parse(login.text).access_token;
    assert.match(token, /^[\w-]+\.[\w-]+\.[\w-]+$/);

    await page.locator(".auth-wrapper button.authorize").click();
    const modal = page.locator(".modal-ux");
    await modal.locator("input").first().fill(token);
    await modal.locator("button.authorize").first().click();
    await modal.locator("button.btn-done, button.close-modal").first().click();

    const history = await tryIt("GET", "/messages");
    assert.equal(history.status, 200, history.text);
    assert.deepEqual(JSON.parse(history.text), []);
    await page.screenshot({ path: path.join(ARTIFACTS, "docs-try-it-out.png"), fullPage: true });

    assert.deepEqual(outside, [], "no request leaves chatwire");
    assert.deepEqual(errors, [], "no script error");
  } finally {
    await context.close();
  }
});

test("ReDoc renders every route with nothing fetched from outside", async () => {
  const { context, page, outside, errors } = await openPage();
  try {
    await page.goto(`${base}/redoc`);
    await page.waitForSelector(".api-content", { timeout: 30000 });
    // Let it finish: its search worker and any (blocked) logo or font load.
    await page.waitForLoadState("networkidle");
    const squash = (t) => t.replace(/\s+/g, " ").trim();
    const text = squash(await page.locator("body").innerText());
    for (const [method, p, op] of operations()) {
      assert.ok(text.includes(p), `ReDoc shows ${method} ${p}`);
      if (op.summary) assert.ok(text.includes(squash(op.summary)), `ReDoc shows "${op.summary}"`);
    }
    await page.screenshot({ path: path.join(ARTIFACTS, "redoc.png"), fullPage: true });
    assert.deepEqual(outside, [], "no request leaves chatwire");
    assert.deepEqual(errors, [], "no script error");
  } finally {
    await context.close();
  }
});
