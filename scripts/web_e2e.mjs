// Browser end-to-end tests of the janus serve playground, in headless Debian chromium driven by
// playwright-core. Run by scripts/web-e2e.sh, which starts the server on the tiny model with
// --api-key and --max-batch-images and passes them here:
//   WEB_E2E_URL, WEB_E2E_KEY, WEB_E2E_MAX_BATCH, WEB_E2E_IMAGE, WEB_E2E_SHOTS, CHROMIUM
// Prints one line per test and a closing 'N passed, N failed' line; exits non-zero on failure.
import { createRequire } from 'node:module';
import { mkdirSync, readFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const require = createRequire(new URL('./web-e2e/package.json', import.meta.url));
const { chromium } = require('playwright-core');

const BASE = process.env.WEB_E2E_URL;
const KEY = process.env.WEB_E2E_KEY;
const MAX_BATCH = Number(process.env.WEB_E2E_MAX_BATCH || 4);
const IMAGE = process.env.WEB_E2E_IMAGE || 'assets/tiny/images/wide.png';
const SHOTS = process.env.WEB_E2E_SHOTS || 'target/web-e2e';
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
if (!BASE || !KEY) {
  console.error('run me through scripts/web-e2e.sh (WEB_E2E_URL and WEB_E2E_KEY are unset)');
  process.exit(2);
}
const PNG_MAGIC = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
const WAIT = 30_000;

function assert(cond, message) {
  if (!cond) throw new Error(message);
}

// ------------------------------------------------------------------ browser

const userData = mkdtempSync(join(tmpdir(), 'janus-web-e2e-'));
mkdirSync(SHOTS, { recursive: true });
// Flags for this machine's closed network: nothing in the background may try to go out.
const browser = await chromium.launchPersistentContext(userData, {
  executablePath: CHROMIUM,
  headless: true,
  args: [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage',
  ],
  viewport: { width: 1280, height: 820 },
  acceptDownloads: true,
  colorScheme: 'light',
  reducedMotion: 'reduce',
});
browser.setDefaultTimeout(WAIT);

const foreign = []; // requests to anything but the server (the page must work offline)
const pageErrors = [];
const apiBodies = []; // [path, body] of every API request the page made
function watch(page) {
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  page.on('request', (r) => {
    const url = r.url();
    if (url.startsWith('data:') || url.startsWith('blob:')) return;
    if (!url.startsWith(BASE)) foreign.push(url);
    if (url.includes('/v1/')) apiBodies.push([new URL(url).pathname, r.postDataJSON()]);
  });
}
const page = browser.pages()[0] || (await browser.newPage());
watch(page);

/** Waits until the grid holds `n` final images that loaded as PNGs; returns their sizes. */
async function finalImages(p, n) {
  await p.waitForFunction((n) => {
    const imgs = [...document.querySelectorAll('#grid .card.done img.final')];
    return imgs.length === n && imgs.every((i) => i.complete && i.naturalWidth > 0);
  }, n, { timeout: WAIT });
  return p.$$eval('#grid img.final', (imgs) => imgs.map((i) => [i.naturalWidth, i.naturalHeight, i.src]));
}

/** Waits for the answer in flight to finish; returns the texts of all answers. */
async function answers(p, count) {
  await p.waitForFunction((count) => {
    const done = document.querySelectorAll('#log .msg.assistant:not(.streaming)');
    return done.length === count && document.querySelector('#ask-submit').getAttribute('aria-disabled') !== 'true';
  }, count, { timeout: WAIT });
  return p.$$eval('#log .msg.assistant .text', (els) => els.map((e) => e.textContent));
}

async function errorText(p, id) {
  await p.waitForSelector(`#${id}:not([hidden])`, { timeout: WAIT });
  return (await p.textContent(`#${id}`)).trim();
}

async function generateViaForm(p, { prompt, n, seed = '' }) {
  await p.fill('#prompt', prompt);
  await p.fill('#n', String(n));
  await p.fill('#seed', String(seed));
  await p.focus('#prompt');
  await p.keyboard.press('Enter');
}

// ------------------------------------------------------------------ tests

const tests = [];
const test = (name, fn) => tests.push({ name, fn });

test('the page and its assets come from janus serve alone, with their content types', async () => {
  const types = {};
  page.on('response', (r) => { types[new URL(r.url()).pathname] = r.headers()['content-type']; });
  await page.goto(BASE);
  assert((await page.title()) === 'Janus playground', `title is ${await page.title()}`);
  await page.waitForSelector('#model-status[data-state="ready"]');
  assert(types['/'].startsWith('text/html'), `/ is ${types['/']}`);
  assert(types['/app.js'].startsWith('text/javascript'), `/app.js is ${types['/app.js']}`);
  assert(types['/style.css'].startsWith('text/css'), `/style.css is ${types['/style.css']}`);
  assert((await page.textContent('#model-text')).includes('janus-pro-tiny'), 'the model name is shown');
  assert(foreign.length === 0, `requests elsewhere: ${foreign.join(', ')}`);
});

test('asks for the API key on 401, retries, and keeps it in localStorage', async () => {
  await generateViaForm(page, { prompt: 'a red fox in the snow', n: 1 });
  await page.waitForSelector('#key-dialog[open]');
  assert((await page.textContent('#key-reason')).includes('needs an API key'), 'the dialog says why');
  await page.fill('#key-input', 'not-the-key');
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => document.querySelector('#key-reason').textContent.includes('incorrect API key'));
  assert(await page.$eval('#key-dialog', (d) => d.open), 'asked again after a wrong key');
  await page.fill('#key-input', KEY);
  await page.keyboard.press('Enter');
  const imgs = await finalImages(page, 1);
  assert(imgs[0][0] === 32, `the tiny model draws 32×32; got ${imgs[0][0]}`);
  assert((await page.evaluate(() => localStorage.getItem('janus.apiKey'))) === KEY, 'key kept');
  await page.reload();
  await page.waitForSelector('#model-status[data-state="ready"]');
  assert((await page.textContent('#key-button')).includes('✓'), 'the key survives a reload');
});

test('generates two images: previews stream in, both PNGs appear, a click downloads one', async () => {
  const before = apiBodies.length;
  await generateViaForm(page, { prompt: 'two cats on a sofa', n: 2, seed: 7 });
  const imgs = await finalImages(page, 2);
  assert(imgs.every(([w, h, src]) => w === 32 && h === 32 && src.startsWith('blob:')), JSON.stringify(imgs));
  const [, body] = apiBodies.slice(before).find(([p]) => p === '/v1/images/generations');
  assert(body.n === 2 && body.seed === 7 && body.stream === true && body.partial_images === 3, JSON.stringify(body));
  const previews = await page.getAttribute('#grid', 'data-previews');
  assert(previews === '6', `3 previews per image should have been shown; got ${previews}`);
  assert((await page.textContent('#gen-progress-text')).includes('2 images in'), 'progress says done');
  assert(await page.$eval('#gen-progress', (p) => p.value === p.max), 'progress is full');
  const [download] = await Promise.all([page.waitForEvent('download'), page.click('#grid .card:nth-child(2) a')]);
  assert(/^janus-7-2\.png$/.test(download.suggestedFilename()), `file name ${download.suggestedFilename()}`);
  const bytes = readFileSync(await download.path());
  assert(bytes.subarray(0, 8).equals(PNG_MAGIC), 'the download is a PNG');
});

test('an empty prompt gets a readable error and sends nothing', async () => {
  const before = apiBodies.length;
  await page.fill('#prompt', '   ');
  await page.focus('#prompt');
  await page.keyboard.press('Enter');
  const msg = await errorText(page, 'gen-error');
  assert(msg.startsWith('Write a prompt first'), `error: ${msg}`);
  assert((await page.getAttribute('#prompt', 'aria-invalid')) === 'true', 'the prompt is marked invalid');
  assert(await page.evaluate(() => document.activeElement.id === 'prompt'), 'focus goes to the prompt');
  assert(apiBodies.length === before, 'no request was sent');
});

test(`an API error is shown in plain words (n above --max-batch-images ${MAX_BATCH})`, async () => {
  await generateViaForm(page, { prompt: 'a lighthouse at dusk', n: MAX_BATCH + 1 });
  await page.waitForFunction(() => document.querySelector('#gen-submit').getAttribute('aria-disabled') !== 'true'
    && !document.querySelector('#gen-error').hidden);
  const msg = await errorText(page, 'gen-error');
  const want = `Images: must be between 1 and ${MAX_BATCH} (this server's --max-batch-images); got ${MAX_BATCH + 1}`;
  assert(msg === want, `error: ${msg}`);
  assert((await page.getAttribute('#n', 'aria-invalid')) === 'true', 'the field is marked invalid');
  // The error clears on the next good run.
  await generateViaForm(page, { prompt: 'a lighthouse at dusk', n: 1, seed: 3 });
  await finalImages(page, 1);
  assert(await page.$eval('#gen-error', (e) => e.hidden), 'the error is gone');
});

test('describe: pick an image, ask, and the answer streams in', async () => {
  await page.click('#tab-describe');
  assert(await page.isVisible('#view-describe'), 'the Describe view shows');
  await page.setInputFiles('#file', IMAGE);
  await page.waitForSelector('#preview:not([hidden])');
  await page.waitForFunction(() => document.activeElement.id === 'question');
  await page.fill('#max-tokens', '6'); // the tiny model's context is 256 tokens
  await page.fill('#question', 'What is in this picture?');
  const before = apiBodies.length;
  const [resp] = await Promise.all([
    page.waitForResponse((r) => r.url().endsWith('/v1/chat/completions')),
    page.keyboard.press('Enter'),
  ]);
  assert(resp.headers()['content-type'].startsWith('text/event-stream'), 'the answer is streamed');
  const texts = await answers(page, 1);
  assert(texts[0].length > 0, 'an answer appeared');
  const [, body] = apiBodies.slice(before).find(([p]) => p === '/v1/chat/completions');
  assert(body.stream === true && body.max_tokens === 6 && body.messages.length === 1, JSON.stringify(body).slice(0, 200));
  const parts = body.messages[0].content;
  assert(parts[0].type === 'image_url' && parts[0].image_url.url.startsWith('data:image/png;base64,'), 'image sent');
  assert(parts[1].type === 'text' && parts[1].text === 'What is in this picture?', 'question sent');
});

test('describe: a follow-up question sends the whole conversation with the image', async () => {
  const first = (await answers(page, 1))[0];
  const before = apiBodies.length;
  await page.fill('#question', 'And what colour is it?');
  await page.click('#ask-submit');
  const texts = await answers(page, 2);
  assert(texts[1].length > 0, 'a second answer appeared');
  const [, body] = apiBodies.slice(before).find(([p]) => p === '/v1/chat/completions');
  const roles = body.messages.map((m) => m.role).join(',');
  assert(roles === 'user,assistant,user', `roles ${roles}`);
  assert(body.messages[0].content[0].image_url.url.startsWith('data:image/png;base64,'), 'the image goes along');
  assert(body.messages[1].content === first, 'the first answer goes back as the assistant turn');
  assert(body.messages[2].content === 'And what colour is it?', 'the follow-up is last');
  assert((await page.$$('#log .msg.user')).length === 2, 'both questions are shown');
  await page.screenshot({ path: join(SHOTS, 'playground-describe.png') });
});

test('describe: the JSON toggle asks for a JSON object, and the answer is one', async () => {
  await page.click('#ask-reset'); // a new conversation about the same image: room for the answer
  const before = apiBodies.length;
  await page.check('#json-answer');
  await page.fill('#max-tokens', '24');
  await page.fill('#question', 'Answer in JSON.');
  await page.click('#ask-submit');
  const texts = await answers(page, 1);
  const [, body] = apiBodies.slice(before).find(([p]) => p === '/v1/chat/completions');
  assert(body.response_format && body.response_format.type === 'json_object', JSON.stringify(body.response_format));
  assert(texts[0].startsWith('{'), `a JSON answer: ${texts[0].slice(0, 80)}`);
  await page.uncheck('#json-answer');
  await page.fill('#max-tokens', '6');
});

test('describe: an image dropped on the box starts a new conversation', async () => {
  const b64 = readFileSync('assets/tiny/images/square.png').toString('base64');
  await page.evaluate((b64) => {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const dt = new DataTransfer();
    dt.items.add(new File([bytes], 'square.png', { type: 'image/png' }));
    const drop = document.querySelector('#drop');
    for (const type of ['dragenter', 'dragover', 'drop']) {
      drop.dispatchEvent(new DragEvent(type, { dataTransfer: dt, bubbles: true, cancelable: true }));
    }
  }, b64);
  await page.waitForFunction(() => document.querySelector('#file-name').textContent.startsWith('square.png'));
  assert((await page.$$('#log .msg')).length === 0, 'the conversation starts over');
  await page.fill('#question', 'Describe it.');
  await page.keyboard.press('Enter');
  await answers(page, 1);
});

test('keyboard: arrow keys switch tabs, Tab reaches the form, focus is visible', async () => {
  await page.focus('#tab-describe');
  await page.keyboard.press('ArrowLeft');
  assert(await page.isVisible('#view-generate'), 'ArrowLeft selects Generate');
  assert(await page.evaluate(() => document.activeElement.id === 'tab-generate'), 'focus follows the tab');
  await page.keyboard.press('Tab');
  const [id, outline] = await page.evaluate(() => [document.activeElement.id, getComputedStyle(document.activeElement).outlineStyle]);
  assert(id === 'prompt', `Tab went to ${id}`);
  assert(outline !== 'none', 'the focused field has a visible outline');
  for (const id of ['prompt', 'n', 'seed', 'guidance', 'temperature', 'question', 'max-tokens', 'json-answer', 'file', 'key-input']) {
    const labelled = await page.evaluate((id) => document.getElementById(id).labels.length > 0, id);
    assert(labelled, `#${id} has a label`);
  }
});

test('screenshots: Generate at desktop width, and on a phone-sized screen without sideways scrolling', async () => {
  await generateViaForm(page, { prompt: 'a lighthouse on a cliff at dusk, oil painting', n: 4, seed: 42 });
  await finalImages(page, 4);
  await page.focus('#gen-submit');
  await page.screenshot({ path: join(SHOTS, 'playground-generate.png') });

  const phone = await browser.newPage();
  watch(phone);
  await phone.setViewportSize({ width: 390, height: 844 });
  await phone.goto(`${BASE}#generate`);
  await phone.waitForSelector('#model-status[data-state="ready"]');
  await generateViaForm(phone, { prompt: 'a red bicycle against a brick wall', n: 4, seed: 5 });
  await finalImages(phone, 4);
  const [scrollW, clientW] = await phone.evaluate(() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]);
  assert(scrollW <= clientW, `the page scrolls sideways on a phone (${scrollW} > ${clientW})`);
  const cols = await phone.$eval('#grid', (g) => getComputedStyle(g).gridTemplateColumns.split(' ').length);
  assert(cols === 2, `phone grid has ${cols} columns`);
  await phone.screenshot({ path: join(SHOTS, 'playground-phone.png'), fullPage: true });
  await phone.close();
});

// ------------------------------------------------------------------ run

let passed = 0;
let failed = 0;
for (const [i, t] of tests.entries()) {
  const start = Date.now();
  const errorsBefore = pageErrors.length;
  try {
    await t.fn();
    assert(pageErrors.length === errorsBefore, `script errors on the page: ${pageErrors.slice(errorsBefore).join('; ')}`);
    passed++;
    console.log(`ok   ${i + 1} ${t.name} (${((Date.now() - start) / 1000).toFixed(1)} s)`);
  } catch (e) {
    failed++;
    console.log(`FAIL ${i + 1} ${t.name}\n     ${String(e.message || e).split('\n').join('\n     ')}`);
    await page.screenshot({ path: join(SHOTS, `failure-${i + 1}.png`) }).catch(() => {});
  }
}
if (foreign.length) {
  failed++;
  console.log(`FAIL the page made requests beyond the server: ${foreign.join(', ')}`);
}
await browser.close();
rmSync(userData, { recursive: true, force: true });
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
