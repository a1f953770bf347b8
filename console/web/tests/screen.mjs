// The browser console against a real guest, in headless Chromium (Debian's, through
// playwright-core): logs in with a token, opens the VM's graphical console, waits until
// noVNC has drawn the guest's screen and it stopped changing, saves a screenshot of the
// page's canvas (PNG, for OCR by the caller), then opens the serial console, types a command
// and waits for the guest's answer in the terminal. Prints one JSON line with what it saw.
//
//   node screen.mjs URL TOKEN NAMESPACE NAME PNG COMMAND ANSWER
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const [url, token, ns, name, png, command, answer] = process.argv.slice(2);
const WAIT = 60000;
const profile = mkdtempSync(join(tmpdir(), 'ironvisor-chromium-'));
const flags = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const result = { steps: [] };
let context;

// A digest of the canvas' pixels; null while nothing but black has been drawn.
function canvasDigest() {
  const c = document.querySelector('#screen canvas');
  if (!c || !c.width || !c.height) return null;
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let lit = 0;
  let sum = 0;
  for (let i = 0; i < d.length; i += 4) {
    const v = d[i] + d[i + 1] + d[i + 2];
    if (v) lit += 1;
    sum = (sum * 31 + v) % 1000000007;
  }
  return lit ? `${c.width}x${c.height}:${lit}:${sum}` : null;
}

async function step(what, f) {
  try {
    const v = await f();
    result.steps.push(what);
    return v;
  } catch (e) {
    throw new Error(`${what}: ${e}`);
  }
}

async function openFromList(page, kind) {
  await page.fill('#namespace', ns);
  await page.click('#ns-form button');
  const link = page.locator(`#vms tr:has(td:text-is("${name}")) a.connect-${kind}`);
  await link.waitFor({ timeout: WAIT });
  await link.click();
  await page.waitForSelector('#status[data-state="connected"]', { timeout: WAIT });
}

try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: flags,
    viewport: { width: 1280, height: 1024 },
    // The console server's certificate comes from the operator's console CA.
    ignoreHTTPSErrors: true,
  });
  const page = context.pages()[0] || await context.newPage();
  page.on('console', (m) => result.steps.push('console: ' + m.text()));
  await step('logged in', async () => {
    await page.goto(url);
    await page.fill('#token', token);
    await page.click('#login-form button');
  });
  await step('graphical console connected', () => openFromList(page, 'vnc'));
  // Settled: two digests a second apart are equal and show something.
  result.screen = await step('screen drawn and settled', async () => {
    let last = null;
    const deadline = Date.now() + WAIT;
    for (;;) {
      const now = await page.evaluate(canvasDigest);
      if (now && now === last) return now;
      if (Date.now() > deadline) throw new Error(`the canvas never settled (last ${now})`);
      last = now;
      await page.waitForTimeout(1000);
    }
  });
  await step('canvas screenshot', () => page.locator('#screen canvas').screenshot({ path: png }));
  result.screenshot = png;

  await step('back to the list', () => page.click('#back'));
  await step('serial console connected', () => openFromList(page, 'serial'));
  await step('guest answered on the serial console', async () => {
    const deadline = Date.now() + WAIT;
    for (;;) {
      await page.click('#terminal');
      await page.keyboard.type(command + '\r');
      try {
        await page.waitForFunction(
          (a) => (document.querySelector('#terminal .xterm-rows')?.textContent || '').includes(a),
          answer, { timeout: 5000 });
        return;
      } catch (e) {
        if (Date.now() > deadline) throw e;
      }
    }
  });
  result.answered = true;
  result.terminal = await page.evaluate(
    () => document.querySelector('#terminal .xterm-rows')?.textContent || '');
} catch (e) {
  result.error = String(e);
} finally {
  if (context) await context.close();
  rmSync(profile, { recursive: true, force: true });
}
console.log(JSON.stringify(result));
