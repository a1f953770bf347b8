// Drives the "My desktops" portal in headless Chromium (Debian's, through playwright-core),
// as two users in two tabs: A claims a desktop of POOL, connects to it (the VNC view),
// meanwhile B's list is read, then A releases it. Prints one JSON line with what it saw.
//
//   node portal.mjs URL TOKEN_A TOKEN_B NAMESPACE POOL
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const [url, tokenA, tokenB, ns, pool] = process.argv.slice(2);
const profile = mkdtempSync(join(tmpdir(), 'ironvisor-chromium-'));
const flags = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const WAIT = { timeout: 20000 };
const result = { steps: [] };

// Logs in, waits for the first listing (all namespaces), then lists `ns`.
async function open(context, token, who) {
  const page = await context.newPage();
  page.on('console', (m) => result.steps.push(`${who} console: ${m.text()}`));
  page.on('pageerror', (e) => result.steps.push(`${who} page error: ${e}`));
  await page.goto(url);
  await page.fill('#token', token);
  await page.click('#login-form button');
  await page.waitForSelector('#desktops[data-loaded]', WAIT);
  const first = await page.textContent('#desk-error');
  const before = await page.getAttribute('#desktops', 'data-loaded');
  await page.fill('#desk-namespaces', ns);
  await page.click('#desk-ns-form button');
  await page.waitForFunction((b) => document.querySelector('#desktops').dataset.loaded !== b,
    before, WAIT);
  await page.waitForSelector(`#pools tr[data-pool="${pool}"]`, WAIT);
  return { page, first };
}

const claimsOf = (page) => page.$$eval('#my-desktops tbody tr',
  (rows) => rows.map((r) => ({ claim: r.dataset.claim, phase: r.dataset.phase,
    desktop: r.children[2].textContent })));

let context;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: flags,
    // The console server's certificate comes from the test's own CA.
    ignoreHTTPSErrors: true,
  });
  const { page: a, first } = await open(context, tokenA, 'A');
  result.allNamespaces = first;
  result.claimsBefore = await claimsOf(a);
  const poolRow = a.locator(`#pools tr[data-pool="${pool}"]`);
  result.poolText = await poolRow.textContent();
  result.images = await a.$$eval('#desktops img', (i) => i.length);

  await poolRow.locator('button.get-desktop').click();
  const connect = a.locator('#my-desktops tr[data-phase="Bound"] button.connect-desktop');
  await connect.waitFor(WAIT);
  result.mine = await claimsOf(a);
  result.steps.push('claimed');

  // B, in another tab (its own sessionStorage, so its own token), while A holds the desktop.
  const { page: b } = await open(context, tokenB, 'B');
  result.bClaims = await claimsOf(b);
  await b.close();

  await connect.click();
  await a.waitForSelector('#status[data-state="connected"]', WAIT);
  result.connectedTo = await a.textContent('#title');
  result.canvas = await a.$$eval('#screen canvas', (c) => c.length);
  await a.click('#back');
  const release = a.locator('#my-desktops tr button.release-desktop');
  await release.waitFor(WAIT);
  const released = result.mine[0].claim;
  await release.click();
  await a.waitForFunction((n) => !document.querySelector(`#my-desktops tr[data-claim="${n}"]`),
    released, WAIT);
  result.released = released;
  result.claimsAfter = await claimsOf(a);
  result.scriptRan = await a.evaluate(() => window.pwned !== undefined);
} catch (e) {
  result.error = String(e);
} finally {
  if (context) await context.close();
  rmSync(profile, { recursive: true, force: true });
}
console.log(JSON.stringify(result));
