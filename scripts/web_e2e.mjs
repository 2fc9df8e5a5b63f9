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
const apiBodies = []; // [path, body] of every API request the page made (a form's body: its content type)
function watch(page) {
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  page.on('request', (r) => {
    const url = r.url();
    if (url.startsWith('data:') || url.startsWith('blob:')) return;
    if (!url.startsWith(BASE)) foreign.push(url);
    if (!url.includes('/v1/')) return;
    const type = r.headers()['content-type'] || '';
    apiBodies.push([new URL(url).pathname, type.startsWith('multipart/') ? type : r.postDataJSON()]);
  });
}

// Chromium does not show the tools the files in a multipart body, so the page's fetch is watched
// for FormData bodies: window.__e2eForms holds each one's entries ({name, value} or {name,
// filename, type, b64}), in order.
await browser.addInitScript(() => {
  const forms = (window.__e2eForms = []);
  const b64 = (blob) => new Promise((resolve) => {
    const r = new FileReader();
    r.onload = () => resolve(String(r.result).split(',')[1] || '');
    r.readAsDataURL(blob);
  });
  const fetch = window.fetch;
  window.fetch = function (input, init) {
    if (init && init.body instanceof FormData) {
      forms.push(Promise.all([...init.body.entries()].map(async ([name, v]) => (typeof v === 'string'
        ? { name, value: v }
        : { name, filename: v.name, type: v.type, b64: await b64(v) }))));
    }
    return fetch.apply(this, arguments);
  };
});

/** The last FormData the page sent: name → text, or {filename, type, data: Buffer}; `_names` in order. */
async function lastForm(p) {
  const entries = await p.evaluate(() => window.__e2eForms[window.__e2eForms.length - 1]);
  const fields = { _names: [] };
  for (const e of entries) {
    fields._names.push(e.name);
    fields[e.name] = 'value' in e ? e.value : { filename: e.filename, type: e.type, data: Buffer.from(e.b64, 'base64') };
  }
  return fields;
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

// ------------------------------------------------------------------ Edit

/** Paints a stroke on the mask with the mouse, from (x0, y) to (x1, y) as fractions of the canvas. */
async function paintStroke(p, { x0, x1, y }) {
  await p.locator('#edit-canvas').scrollIntoViewIfNeeded();
  const box = await p.locator('#edit-canvas').boundingBox();
  await p.mouse.move(box.x + box.width * x0, box.y + box.height * y);
  await p.mouse.down();
  await p.mouse.move(box.x + box.width * x1, box.y + box.height * y, { steps: 8 });
  await p.mouse.up();
}

/** Waits until the edited image has loaded and the form is idle; returns the image's size. */
async function editResult(p) {
  await p.waitForFunction(() => {
    const img = document.querySelector('#edit-after.done img.final');
    return img && img.complete && img.naturalWidth > 0
      && document.querySelector('#edit-submit').getAttribute('aria-disabled') !== 'true';
  }, null, { timeout: WAIT });
  return p.$eval('#edit-after img.final', (i) => [i.naturalWidth, i.naturalHeight]);
}

/** Sends the edit form; returns the request's fields and the response's JSON and headers. */
async function submitEdit(p, press = () => p.click('#edit-submit')) {
  const before = apiBodies.length;
  const [resp] = await Promise.all([p.waitForResponse((r) => r.url().endsWith('/v1/images/edits')), press()]);
  const found = apiBodies.slice(before).find(([path]) => path === '/v1/images/edits');
  assert(found && found[1].startsWith('multipart/form-data; boundary='), `the edit is not multipart: ${found && found[1]}`);
  const form = await lastForm(p);
  return { form, status: resp.status(), headers: resp.headers(), body: await resp.json() };
}

/** The painted mask (PNG bytes) against the canvas, and the result against the original, in the page. */
function checkMask(p, maskPng) {
  return p.evaluate(async (b64) => {
    const pixels = async (source) => {
      const bmp = await createImageBitmap(source, { premultiplyAlpha: 'none', colorSpaceConversion: 'none' });
      const c = new OffscreenCanvas(bmp.width, bmp.height);
      const ctx = c.getContext('2d');
      ctx.drawImage(bmp, 0, 0);
      return { w: bmp.width, h: bmp.height, d: ctx.getImageData(0, 0, bmp.width, bmp.height).data };
    };
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const mask = await pixels(new Blob([bytes], { type: 'image/png' }));
    const orig = await pixels(document.querySelector('#edit-before'));
    const result = await pixels(document.querySelector('#edit-after img.final'));
    const canvas = document.querySelector('#edit-canvas');
    const paint = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
    const alpha = (x, y) => mask.d[(y * mask.w + x) * 4 + 3];
    const out = { mask: [mask.w, mask.h], orig: [orig.w, orig.h], result: [result.w, result.h],
      clear: 0, opaque: 0, partial: 0, notAsPainted: 0, keptOutside: 0, changedOutside: 0 };
    for (let i = 0; i < mask.w * mask.h; i++) {
      const a = mask.d[i * 4 + 3];
      if (a === 0) out.clear++; else if (a === 255) out.opaque++; else out.partial++;
      if ((a === 0) !== (paint[i * 4 + 3] >= 128)) out.notAsPainted++;
      if (a !== 0 && result.w === orig.w && result.h === orig.h) {
        if ([0, 1, 2].every((c) => orig.d[i * 4 + c] === result.d[i * 4 + c])) out.keptOutside++;
        else out.changedOutside++;
      }
    }
    const mid = Math.floor(mask.h / 2);
    out.onStroke = alpha(Math.round(mask.w * 0.3), mid);
    out.farFromStroke = [alpha(0, 0), alpha(mask.w - 1, 0), alpha(0, mask.h - 1), alpha(mask.w - 1, mask.h - 1), alpha(mask.w - 3, mid)];
    return out;
  }, maskPng.toString('base64'));
}

/** A JPEG with an EXIF orientation (APP1 after SOI): 6 shows it turned a quarter clockwise. */
function withOrientation(jpeg, orientation) {
  const tiff = Buffer.alloc(26);
  tiff.write('MM', 0, 'latin1');
  tiff.writeUInt16BE(42, 2);
  tiff.writeUInt32BE(8, 4); // IFD0
  tiff.writeUInt16BE(1, 8); // one entry: Orientation, SHORT, 1 value
  tiff.writeUInt16BE(0x0112, 10);
  tiff.writeUInt16BE(3, 12);
  tiff.writeUInt32BE(1, 14);
  tiff.writeUInt16BE(orientation, 18);
  tiff.writeUInt32BE(0, 22); // no next IFD
  const payload = Buffer.concat([Buffer.from('Exif\0\0', 'latin1'), tiff]);
  const head = Buffer.alloc(4);
  head.writeUInt16BE(0xffe1, 0);
  head.writeUInt16BE(payload.length + 2, 2);
  return Buffer.concat([jpeg.subarray(0, 2), head, payload, jpeg.subarray(2)]);
}

test('edit: without an image, or without a prompt, a readable error and nothing sent', async () => {
  await page.click('#tab-edit');
  assert(await page.isVisible('#view-edit'), 'the Edit view shows');
  assert((await page.evaluate(() => location.hash)) === '#edit', 'the hash names the tab');
  const before = apiBodies.length;
  await page.click('#edit-submit');
  const msg = await errorText(page, 'edit-error');
  assert(msg.startsWith('Choose an image first'), `error: ${msg}`);
  await page.setInputFiles('#edit-file', IMAGE);
  await page.waitForSelector('#edit-pair:not([hidden])');
  const name = await page.textContent('#edit-file-name');
  assert(name.startsWith('wide.png · 60×24'), `file line: ${name}`);
  assert(await page.$eval('#edit-error', (e) => e.hidden), 'a good image clears the error');
  const [cw, ch] = await page.$eval('#edit-canvas', (c) => [c.width, c.height]);
  assert(cw === 60 && ch === 24, `the mask canvas has the image's size; got ${cw}×${ch}`);
  // The canvas lies exactly over the image.
  const [a, b] = await page.evaluate(() => ['#edit-canvas', '#edit-before'].map((s) => {
    const r = document.querySelector(s).getBoundingClientRect();
    return [r.x, r.y, r.width, r.height].map(Math.round).join(',');
  }));
  assert(a === b, `canvas at ${a}, image at ${b}`);
  assert((await page.textContent('#edit-mask-hint')).includes('redrawn'), 'the hint says what painting nothing means');
  await page.fill('#edit-prompt', '  ');
  await page.click('#edit-submit');
  await page.waitForFunction(() => document.querySelector('#edit-error').textContent.startsWith('Write a prompt first'));
  assert((await page.getAttribute('#edit-prompt', 'aria-invalid')) === 'true', 'the prompt is marked invalid');
  assert(await page.evaluate(() => document.activeElement.id === 'edit-prompt'), 'focus goes to the prompt');
  assert(apiBodies.length === before, 'no request was sent');
});

test('edit: paint a stroke, generate: image, mask and prompt go as multipart; outside the mask the result is the original', async () => {
  await page.fill('#edit-seed', '11');
  await page.fill('#edit-prompt', 'a small red boat');
  await paintStroke(page, { x0: 0.15, x1: 0.45, y: 0.5 });
  const painted = Number(await page.getAttribute('#edit-mask-hint', 'data-painted'));
  assert(painted > 0, 'the stroke painted pixels');
  assert((await page.textContent('#edit-mask-hint')).includes('% of the image is painted'), 'the hint counts them');
  const { form, status, headers, body } = await submitEdit(page);
  assert(status === 200, `status ${status}: ${JSON.stringify(body).slice(0, 200)}`);
  assert(headers['x-seed'] === '11', `x-seed ${headers['x-seed']}`);
  assert(!body.data[0].revised_prompt, 'a masked edit keeps the prompt');
  const names = form._names.slice().sort().join(',');
  assert(names === 'image,mask,n,prompt,response_format,seed', `fields: ${names}`);
  assert(form.prompt === 'a small red boat' && form.n === '1' && form.response_format === 'b64_json' && form.seed === '11',
    JSON.stringify({ ...form, image: undefined, mask: undefined }));
  assert(form.image.filename === 'wide.png' && form.image.data.equals(readFileSync(IMAGE)), 'the original file is sent as it is');
  assert(form.mask.type === 'image/png' && form.mask.data.subarray(0, 8).equals(PNG_MAGIC), `mask type ${form.mask.type}`);
  assert((await editResult(page)).join('x') === '60x24', 'the result has the image size');
  const m = await checkMask(page, form.mask.data);
  assert(m.mask.join('x') === '60x24', `mask size ${m.mask.join('x')}`);
  assert(m.partial === 0, `${m.partial} mask pixels are neither transparent nor opaque`);
  assert(m.clear === painted && m.clear + m.opaque === 60 * 24, `transparent ${m.clear}, painted ${painted}`);
  assert(m.notAsPainted === 0, `${m.notAsPainted} mask pixels differ from the painted ones`);
  assert(m.onStroke === 0, 'the mask is transparent on the stroke');
  assert(m.farFromStroke.every((a) => a === 255), `the mask is opaque away from it: ${m.farFromStroke}`);
  assert(m.changedOutside === 0 && m.keptOutside === m.opaque, `${m.changedOutside} pixels outside the mask changed`);
  assert((await page.textContent('#edit-after-cap')).includes('seed 11'), 'the caption names the seed');
  assert(await page.$eval('#edit-revised', (e) => e.hidden), 'no revised prompt');
  const [download] = await Promise.all([page.waitForEvent('download'), page.click('#edit-after a')]);
  assert(download.suggestedFilename() === 'janus-edit-11.png', `file name ${download.suggestedFilename()}`);
  assert(readFileSync(await download.path()).subarray(0, 8).equals(PNG_MAGIC), 'the download is a PNG');
  await page.mouse.move(0, 0);
  await page.screenshot({ path: join(SHOTS, 'playground-edit.png') });
});

test('edit: erase and clear the mask; with nothing painted no mask is sent and the revised prompt shows', async () => {
  const painted = Number(await page.getAttribute('#edit-mask-hint', 'data-painted'));
  await page.click('#edit-erase');
  assert((await page.getAttribute('#edit-erase', 'aria-pressed')) === 'true', 'Erase is pressed');
  await paintStroke(page, { x0: 0.3, x1: 0.32, y: 0.5 });
  const left = Number(await page.getAttribute('#edit-mask-hint', 'data-painted'));
  assert(left < painted, `erasing took pixels away (${painted} → ${left})`);
  await page.click('#edit-erase');
  await page.click('#edit-clear');
  assert((await page.getAttribute('#edit-mask-hint', 'data-painted')) === '0', 'Clear mask clears it');
  assert((await page.textContent('#edit-mask-hint')).startsWith('Nothing painted'), 'the hint says so');
  await page.fill('#edit-seed', '');
  await page.fill('#edit-prompt', 'at night');
  await page.focus('#edit-prompt');
  const { form, status, headers, body } = await submitEdit(page, () => page.keyboard.press('Enter'));
  assert(status === 200, `status ${status}`);
  const names = form._names.slice().sort().join(',');
  assert(names === 'image,n,prompt,response_format', `fields: ${names}`);
  const revised = body.data[0].revised_prompt;
  assert(revised && revised.length > 0, 'the server revised the prompt');
  await editResult(page);
  await page.waitForSelector('#edit-revised:not([hidden])');
  assert((await page.textContent('#edit-revised')) === `Redrawn from: ${revised}`, 'the revised prompt is shown');
  assert((await page.textContent('#edit-after-cap')).includes(`seed ${headers['x-seed']}`), 'the caption names the random seed');
});

test('edit: a server error is shown in plain words and the last result stays', async () => {
  await paintStroke(page, { x0: 0.6, x1: 0.8, y: 0.3 });
  await page.fill('#edit-prompt', 'boat '.repeat(400));
  const { status } = await submitEdit(page);
  assert(status === 400, `status ${status}`);
  await page.waitForFunction(() => document.querySelector('#edit-submit').getAttribute('aria-disabled') !== 'true');
  const msg = await errorText(page, 'edit-error');
  assert(/^The prompt is \d+ tokens/.test(msg), `error: ${msg}`);
  assert(await page.isVisible('#edit-after.done img.final'), 'the last result stays');
  assert(await page.isVisible('#edit-revised'), 'with its revised prompt');
});

test('edit: a JPEG turned by its EXIF orientation is sent upright, as shown, with a mask of that size', async () => {
  const jpeg = withOrientation(readFileSync('assets/tiny/images/tall.jpg'), 6); // 24×40, shown 40×24
  await page.setInputFiles('#edit-file', { name: 'turned.jpg', mimeType: 'image/jpeg', buffer: jpeg });
  await page.waitForFunction(() => document.querySelector('#edit-file-name').textContent.startsWith('turned.jpg'));
  const name = await page.textContent('#edit-file-name');
  assert(name.includes('40×24') && name.includes('sent upright'), `file line: ${name}`);
  assert(await page.$eval('#edit-error', (e) => e.hidden), 'the error is gone');
  assert(await page.$eval('#edit-after-frame', (f) => !f.querySelector('img')), 'a new image clears the last result');
  assert((await page.getAttribute('#edit-mask-hint', 'data-painted')) === '0', 'and its mask');
  await page.fill('#edit-prompt', 'a hat');
  await paintStroke(page, { x0: 0.2, x1: 0.5, y: 0.5 });
  const { form, status } = await submitEdit(page);
  assert(status === 200, `status ${status}`);
  assert(form.image.filename === 'turned.png' && form.image.type === 'image/png', `image ${form.image.filename} ${form.image.type}`);
  assert((await editResult(page)).join('x') === '40x24', 'the result is upright');
  const m = await checkMask(page, form.mask.data);
  assert(m.mask.join('x') === '40x24' && m.notAsPainted === 0 && m.changedOutside === 0, JSON.stringify(m));
  // Edit the result further: it becomes the image, with an empty mask.
  await page.click('#edit-reuse');
  await page.waitForFunction(() => document.querySelector('#edit-file-name').textContent.startsWith('janus-edit-'));
  assert(await page.$eval('#edit-after-frame', (f) => !f.querySelector('img')), 'the result moved to the left');
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
  for (const id of ['prompt', 'n', 'seed', 'guidance', 'temperature', 'question', 'max-tokens', 'json-answer', 'file', 'key-input',
    'edit-file', 'edit-brush', 'edit-prompt', 'edit-seed']) {
    const labelled = await page.evaluate((id) => document.getElementById(id).labels.length > 0, id);
    assert(labelled, `#${id} has a label`);
  }
  // Buttons are named by their text; the canvas by its aria-label.
  for (const id of ['edit-erase', 'edit-clear', 'edit-seed-random', 'edit-submit', 'edit-reuse']) {
    const name = await page.evaluate((id) => document.getElementById(id).textContent.trim(), id);
    assert(name.length > 0, `#${id} has a name`);
  }
  assert((await page.getAttribute('#edit-canvas', 'aria-label')).startsWith('Mask'), 'the canvas is named');
  assert((await page.textContent('#edit-brush-value')) === '32 px', 'the brush size is shown');

  // The arrow keys reach Edit (and wrap around); Tab goes on to its picker, then its controls.
  await page.focus('#tab-describe');
  await page.keyboard.press('ArrowRight');
  assert(await page.isVisible('#view-edit'), 'ArrowRight from Describe selects Edit');
  assert(await page.evaluate(() => document.activeElement.id === 'tab-edit'), 'focus follows the tab');
  await page.keyboard.press('ArrowRight');
  assert(await page.isVisible('#view-generate'), 'ArrowRight from Edit wraps to Generate');
  await page.keyboard.press('End');
  assert(await page.isVisible('#view-edit') && (await page.evaluate(() => document.activeElement.id === 'tab-edit')), 'End selects Edit');
  await page.keyboard.press('Tab');
  const [picker, ring] = await page.evaluate(() => [document.activeElement.id, getComputedStyle(document.querySelector('#edit-drop')).outlineStyle]);
  assert(picker === 'edit-file', `Tab went to ${picker}`);
  assert(ring !== 'none', 'the picker shows focus');
  await page.keyboard.press('Tab');
  assert(await page.evaluate(() => document.activeElement.id === 'edit-brush'), 'then the brush size');
  await page.keyboard.press('ArrowRight');
  assert((await page.textContent('#edit-brush-value')) === '34 px', 'arrow keys change the brush size');
  await page.keyboard.press('Tab');
  await page.keyboard.press('Space');
  assert((await page.getAttribute('#edit-erase', 'aria-pressed')) === 'true', 'Space toggles Erase');
  await page.keyboard.press('Space');
  assert((await page.getAttribute('#edit-erase', 'aria-pressed')) === 'false', 'and back');
  await page.keyboard.press('Tab');
  assert(await page.evaluate(() => document.activeElement.id === 'edit-clear'), 'then Clear mask');
});

test('screenshots: Generate at desktop width, and on a phone-sized screen without sideways scrolling', async () => {
  await page.click('#tab-generate');
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

  // Edit on the phone: before and after one above the other, painted with a finger.
  await phone.click('#tab-edit');
  await phone.setInputFiles('#edit-file', IMAGE);
  await phone.waitForSelector('#edit-pair:not([hidden])');
  const cdp = await browser.newCDPSession(phone);
  await cdp.send('Emulation.setTouchEmulationEnabled', { enabled: true, maxTouchPoints: 1 });
  await phone.locator('#edit-canvas').scrollIntoViewIfNeeded();
  const box = await phone.locator('#edit-canvas').boundingBox();
  const at = (fx) => [{ x: box.x + box.width * fx, y: box.y + box.height / 2 }];
  await cdp.send('Input.dispatchTouchEvent', { type: 'touchStart', touchPoints: at(0.2) });
  for (const fx of [0.3, 0.4, 0.5]) await cdp.send('Input.dispatchTouchEvent', { type: 'touchMove', touchPoints: at(fx) });
  await cdp.send('Input.dispatchTouchEvent', { type: 'touchEnd', touchPoints: [] });
  await phone.waitForFunction(() => Number(document.querySelector('#edit-mask-hint').dataset.painted) > 0);
  await phone.fill('#edit-prompt', 'a kite');
  await phone.click('#edit-submit');
  await editResult(phone);
  const [editScrollW, editClientW] = await phone.evaluate(() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]);
  assert(editScrollW <= editClientW, `Edit scrolls sideways on a phone (${editScrollW} > ${editClientW})`);
  const [beforeBox, afterBox] = await phone.$$eval('#edit-pair .frame', (fs) => fs.map((f) => f.getBoundingClientRect().toJSON()));
  assert(afterBox.top >= beforeBox.bottom, 'before and after are stacked on a phone');
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
