// Drives the browser console in headless Chromium (Debian's, through playwright-core): logs
// in with a token, finds the VM in the list, opens its serial console, types a line and
// waits for it to come back in the terminal. Prints one JSON line with what it saw.
//
//   node browser.mjs URL TOKEN NAMESPACE NAME LINE
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const [url, token, ns, name, line] = process.argv.slice(2);
const profile = mkdtempSync(join(tmpdir(), 'ironvisor-chromium-'));
const flags = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const result = { steps: [] };
let context;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: flags,
    // The console server's certificate comes from the test's own CA.
    ignoreHTTPSErrors: true,
  });
  const page = context.pages()[0] || await context.newPage();
  page.on('console', (m) => result.steps.push('console: ' + m.text()));
  await page.goto(url);
  await page.fill('#token', token);
  await page.click('#login-form button');
  result.steps.push('logged in');
  // alice may list VMs in her namespace only.
  await page.fill('#namespace', ns);
  await page.click('#ns-form button');
  const link = page.locator(`#vms tr:has(td:text-is("${name}")) a.connect-serial`);
  await link.waitFor({ timeout: 15000 });
  result.listed = true;
  await link.click();
  await page.waitForSelector('#status[data-state="connected"]', { timeout: 15000 });
  result.steps.push('connected');
  await page.click('#terminal');
  await page.keyboard.type(line + '\r');
  await page.waitForFunction(
    (l) => (document.querySelector('#terminal .xterm-rows')?.textContent || '').includes(l),
    line, { timeout: 15000 });
  result.echoed = true;
  result.sessionToken = await page.evaluate(() => sessionStorage.getItem('ironvisor.token') !== null);
} catch (e) {
  result.error = String(e);
} finally {
  if (context) await context.close();
  rmSync(profile, { recursive: true, force: true });
}
console.log(JSON.stringify(result));
