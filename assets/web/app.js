// Janus playground: a small page over janus serve's public API (no framework, no network
// besides this server). Generate streams /v1/images/generations; Describe streams
// /v1/chat/completions with the whole conversation and the image each turn; Edit sends the image
// and a painted mask to /v1/images/edits as a multipart form.
'use strict';

const KEY_STORAGE = 'janus.apiKey';
const PARTIALS = 3; // previews per image (the API's maximum)
const $ = (id) => document.getElementById(id);

/** An API failure, already in plain words. */
class ApiError extends Error {
  constructor(message, { status = 0, param = null } = {}) {
    super(message);
    this.status = status;
    this.param = param;
  }
}

// ------------------------------------------------------------------ API key

function apiKey() {
  try { return localStorage.getItem(KEY_STORAGE) || ''; } catch { return ''; }
}

function setApiKey(key) {
  try {
    if (key) localStorage.setItem(KEY_STORAGE, key);
    else localStorage.removeItem(KEY_STORAGE);
  } catch { /* storage disabled: the key lasts for this page only */ }
  updateKeyButton();
}

function updateKeyButton() {
  $('key-button').textContent = apiKey() ? 'API key ✓' : 'API key';
}

let keyPrompt = null; // one dialog at a time, shared by concurrent requests

/** Shows the key dialog; resolves to true when a key was saved, false when cancelled. */
function askForKey(reason) {
  if (keyPrompt) return keyPrompt;
  const dialog = $('key-dialog');
  $('key-reason').textContent = reason || '';
  $('key-input').value = apiKey();
  const opener = document.activeElement;
  keyPrompt = new Promise((resolve) => {
    dialog.addEventListener('close', () => {
      keyPrompt = null;
      const saved = dialog.returnValue === 'save';
      if (saved) setApiKey($('key-input').value.trim());
      if (opener && opener.focus) opener.focus();
      resolve(saved);
    }, { once: true });
  });
  dialog.returnValue = '';
  dialog.showModal();
  $('key-input').focus();
  return keyPrompt;
}

// ------------------------------------------------------------------ requests

/** The envelope's message (`{"error": {"message"}}`), or a plain description of the status. */
async function errorFrom(resp) {
  let message = '';
  let param = null;
  try {
    const body = await resp.json();
    if (body && body.error) {
      message = typeof body.error === 'string' ? body.error : body.error.message || '';
      param = body.error.param || null;
    }
  } catch { /* not JSON */ }
  if (!message) message = `The server answered ${resp.status} ${resp.statusText}`.trim() + '.';
  if (resp.status === 429) {
    const after = resp.headers.get('retry-after');
    if (after) message += ` Try again in ${after} s.`;
  }
  return new ApiError(message, { status: resp.status, param });
}

/**
 * POSTs `body` with the key: JSON, or a FormData as multipart/form-data (the browser sets its
 * boundary). On 401 asks for the key and tries again. Returns an ok Response.
 */
async function post(path, body, signal) {
  const form = body instanceof FormData;
  const payload = form ? body : JSON.stringify(body);
  for (;;) {
    const headers = form ? { accept: 'application/json' } : { 'content-type': 'application/json', accept: 'text/event-stream, application/json' };
    const key = apiKey();
    if (key) headers.authorization = `Bearer ${key}`;
    let resp;
    try {
      resp = await fetch(path, { method: 'POST', headers, body: payload, signal });
    } catch (e) {
      if (e.name === 'AbortError') throw e;
      throw new ApiError('Could not reach the server. Is janus serve still running?');
    }
    if (resp.status === 401) {
      const err = await errorFrom(resp);
      const reason = key ? `The server refused the key: ${err.message}` : 'This server needs an API key.';
      if (await askForKey(reason)) continue;
      throw new ApiError(`${reason} Set it with the “API key” button.`, { status: 401 });
    }
    if (!resp.ok) throw await errorFrom(resp);
    return resp;
  }
}

/** Server-sent events from a fetch Response: yields {event, data} (data joined, unparsed). */
async function* sse(resp) {
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  const parse = (block) => {
    let event = 'message';
    const data = [];
    for (const line of block.split(/\r?\n|\r/)) {
      if (line.startsWith(':')) continue;
      const i = line.indexOf(':');
      const field = i < 0 ? line : line.slice(0, i);
      let value = i < 0 ? '' : line.slice(i + 1);
      if (value.startsWith(' ')) value = value.slice(1);
      if (field === 'event') event = value;
      else if (field === 'data') data.push(value);
    }
    return data.length ? { event, data: data.join('\n') } : null;
  };
  try {
    for (;;) {
      const { value, done } = await reader.read();
      buf += decoder.decode(value || new Uint8Array(), { stream: !done });
      const blocks = buf.split(/\r?\n\r?\n|\r\r/);
      buf = done ? '' : blocks.pop();
      for (const block of blocks) {
        const ev = parse(block);
        if (ev) yield ev;
      }
      if (done) return;
    }
  } finally {
    reader.releaseLock();
  }
}

function json(data) {
  try { return JSON.parse(data); } catch { throw new ApiError('The server sent something that is not JSON.'); }
}

/** The message of an error event's envelope. */
function streamError(payload) {
  const e = payload && payload.error;
  return new ApiError((e && (e.message || e)) || 'The server reported an error.', { param: e && e.param });
}

// ------------------------------------------------------------------ small UI helpers

function showError(box, message) {
  box.textContent = message;
  box.hidden = !message;
}

/** Field names in the API → the labels on this page. */
const LABELS = {
  prompt: 'Prompt', n: 'Images', seed: 'Seed', guidance_scale: 'Guidance', temperature: 'Temperature',
  max_tokens: 'Max tokens', max_completion_tokens: 'Max tokens', image: 'Image', mask: 'Mask',
};
const FIELD_IDS = { prompt: 'prompt', n: 'n', seed: 'seed', guidance_scale: 'guidance', temperature: 'temperature', max_tokens: 'max-tokens' };

/** "`n`: must be ..." → "Images: must be ...". */
function plainMessage(err) {
  let msg = err.message || String(err);
  if (err.param && LABELS[err.param]) {
    const prefix = '`' + err.param + '`: ';
    if (msg.startsWith(prefix)) msg = `${LABELS[err.param]}: ${msg.slice(prefix.length)}`;
  }
  return msg.charAt(0).toUpperCase() + msg.slice(1);
}

function markInvalid(form, id) {
  for (const el of form.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
  if (id && $(id)) {
    $(id).setAttribute('aria-invalid', 'true');
    $(id).focus();
  }
}

/** Enter submits the textarea's form; Shift+Enter (or IME composition) inserts a line. */
function enterSubmits(textarea) {
  textarea.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing && !e.altKey) {
      e.preventDefault();
      textarea.form.requestSubmit();
    }
  });
}

function b64ToBlob(b64, type = 'image/png') {
  const bin = atob(b64);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return new Blob([bytes], { type });
}

/** Small images (the tiny test model's 32×32) are scaled up with hard pixels. */
function pixelateIfSmall(img) {
  const apply = () => img.classList.toggle('pixelated', img.naturalWidth > 0 && img.naturalWidth < 256);
  if (img.complete) apply(); else img.addEventListener('load', apply, { once: true });
}

function seconds(ms) {
  return ms < 10000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms / 1000)} s`;
}

// ------------------------------------------------------------------ tabs

const TABS = ['generate', 'describe', 'edit'];

function selectTab(name, { focus = false, push = true } = {}) {
  if (!TABS.includes(name)) name = 'generate';
  for (const t of TABS) {
    const tab = $(`tab-${t}`);
    const on = t === name;
    tab.setAttribute('aria-selected', String(on));
    tab.tabIndex = on ? 0 : -1;
    $(`view-${t}`).hidden = !on;
    if (on && focus) tab.focus();
  }
  if (push && location.hash !== `#${name}`) history.replaceState(null, '', `#${name}`);
}

function setupTabs() {
  for (const t of TABS) {
    $(`tab-${t}`).addEventListener('click', () => selectTab(t));
    $(`tab-${t}`).addEventListener('keydown', (e) => {
      const i = TABS.indexOf(t);
      let next = null;
      if (e.key === 'ArrowRight') next = TABS[(i + 1) % TABS.length];
      else if (e.key === 'ArrowLeft') next = TABS[(i + TABS.length - 1) % TABS.length];
      else if (e.key === 'Home') next = TABS[0];
      else if (e.key === 'End') next = TABS[TABS.length - 1];
      if (next) {
        e.preventDefault();
        selectTab(next, { focus: true });
      }
    });
  }
  window.addEventListener('hashchange', () => selectTab(location.hash.slice(1), { push: false }));
  selectTab(location.hash.slice(1) || 'generate', { push: false });
}

// ------------------------------------------------------------------ model status

async function pollReady() {
  const dot = $('model-status');
  try {
    const resp = await fetch('ready', { cache: 'no-store' });
    const body = await resp.json().catch(() => ({}));
    if (resp.ok) {
      dot.dataset.state = 'ready';
      $('model-text').textContent = body.model || 'ready';
      $('model-status').title = 'The model is loaded';
      return;
    }
    dot.dataset.state = 'loading';
    $('model-text').textContent = (body.error && body.error.message) || 'Loading the model…';
  } catch {
    dot.dataset.state = 'down';
    $('model-text').textContent = 'Server unreachable';
  }
  setTimeout(pollReady, 2000);
}

// ------------------------------------------------------------------ Generate

const gen = { controller: null, urls: [] };

/** The seed field `id`: {seed} (undefined when empty: a random one), or {error, field}. */
function readSeed(id) {
  const text = $(id).value.trim();
  if (!text) return { seed: undefined };
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(Number(text))) {
    return { error: 'Seed: use a whole number (0 to 9007199254740991), or leave it empty for a random one.', field: id };
  }
  return { seed: Number(text) };
}

/** A "Random" button fills its seed field. */
function randomSeedButton(button, field) {
  button.addEventListener('click', () => {
    const a = new Uint32Array(1);
    crypto.getRandomValues(a);
    field.value = String(a[0]);
  });
}

function readGenerate() {
  const prompt = $('prompt').value;
  if (!prompt.trim()) return { error: 'Write a prompt first: describe the picture you want.', field: 'prompt' };
  const nText = $('n').value.trim();
  const n = Number(nText);
  if (!Number.isInteger(n) || n < 1 || n > 16) return { error: 'Images: choose a whole number from 1 to 16.', field: 'n' };
  const body = { prompt, n, stream: true, partial_images: PARTIALS };
  const seed = readSeed('seed');
  if (seed.error) return seed;
  if (seed.seed !== undefined) body.seed = seed.seed;
  const g = $('guidance').value.trim();
  if (g) {
    const v = Number(g);
    if (!Number.isFinite(v)) return { error: 'Guidance: use a number such as 5.', field: 'guidance' };
    body.guidance_scale = v;
  }
  const t = $('temperature').value.trim();
  if (t) {
    const v = Number(t);
    if (!Number.isFinite(v)) return { error: 'Temperature: use a number such as 1.', field: 'temperature' };
    body.temperature = v;
  }
  return { body };
}

function makeCards(n) {
  for (const u of gen.urls) URL.revokeObjectURL(u);
  gen.urls = [];
  const grid = $('grid');
  grid.replaceChildren();
  grid.dataset.count = String(n);
  grid.dataset.previews = '0'; // previews shown in this run (the tests read it)
  const cards = [];
  for (let i = 0; i < n; i++) {
    const fig = document.createElement('figure');
    fig.className = 'card pending';
    const frame = document.createElement('div');
    frame.className = 'frame';
    const img = document.createElement('img');
    img.alt = '';
    img.hidden = true;
    frame.append(img);
    const cap = document.createElement('figcaption');
    cap.textContent = `Image ${i + 1} · waiting`;
    fig.append(frame, cap);
    grid.append(fig);
    cards.push({ fig, frame, img, cap, steps: 0 });
  }
  $('gen-empty').hidden = true;
  return cards;
}

function setProgress(done, total, text) {
  $('gen-progress-line').hidden = false;
  $('gen-progress').max = total;
  $('gen-progress').value = done;
  $('gen-progress-text').textContent = text;
}

// Busy buttons are aria-disabled rather than disabled, so that keyboard focus stays on them.
function busyGenerate(on) {
  $('gen-submit').setAttribute('aria-disabled', String(on));
  $('gen-submit').textContent = on ? 'Generating…' : 'Generate';
  $('gen-stop').hidden = !on;
  $('grid').setAttribute('aria-busy', String(on));
}

async function generate() {
  const form = $('gen-form');
  const box = $('gen-error');
  const read = readGenerate();
  if (read.error) {
    showError(box, read.error);
    markInvalid(form, read.field);
    return;
  }
  if (gen.controller) return; // one run at a time; Stop ends it
  showError(box, '');
  markInvalid(form, null);
  const controller = new AbortController();
  gen.controller = controller;
  const { body } = read;
  const n = body.n;
  const total = n * (PARTIALS + 1);
  let steps = 0;
  let finished = 0;
  let seed = body.seed;
  const started = performance.now();
  let cards = null; // made once the server accepts the request: a refusal keeps the last results
  busyGenerate(true);
  const show = (i, b64, final) => {
    const card = cards[i];
    if (!card) throw new ApiError(`The server sent image ${i + 1}, but only ${n} were asked for.`);
    const blob = b64ToBlob(b64);
    const url = URL.createObjectURL(blob);
    gen.urls.push(url);
    card.img.src = url;
    card.img.hidden = false;
    pixelateIfSmall(card.img);
    if (!final) {
      $('grid').dataset.previews = String(Number($('grid').dataset.previews) + 1);
      card.steps = Math.min(card.steps + 1, PARTIALS);
      card.cap.textContent = `Image ${i + 1} · preview ${card.steps} of ${PARTIALS}`;
      return;
    }
    card.fig.classList.remove('pending');
    card.fig.classList.add('done');
    const link = document.createElement('a');
    link.href = url;
    link.download = `janus-${seed ?? 'image'}-${i + 1}.png`;
    link.className = 'download';
    link.title = 'Download PNG';
    card.img.alt = `Image ${i + 1} for “${body.prompt.trim().slice(0, 80)}”`;
    card.img.classList.add('final');
    link.append(card.img);
    card.frame.replaceChildren(link);
    link.setAttribute('aria-label', `Download image ${i + 1} as PNG`);
    card.cap.textContent = `Image ${i + 1} · save PNG`;
  };
  try {
    const resp = await post('v1/images/generations', body, controller.signal);
    const headerSeed = resp.headers.get('x-seed');
    if (seed === undefined && headerSeed) seed = headerSeed;
    cards = makeCards(n);
    setProgress(0, total, `Drawing ${n} image${n > 1 ? 's' : ''}…`);
    for await (const ev of sse(resp)) {
      if (ev.event === 'error') throw streamError(json(ev.data));
      const msg = json(ev.data);
      if (msg.error) throw streamError(msg);
      const i = msg.index ?? 0;
      if (ev.event === 'image_generation.partial_image' || msg.type === 'image_generation.partial_image') {
        show(i, msg.b64_json, false);
        steps++;
        setProgress(steps, total, `Drawing… ${Math.round((100 * steps) / total)}%`);
      } else if (ev.event === 'image_generation.completed' || msg.type === 'image_generation.completed') {
        if (msg.seed !== undefined) seed = msg.seed;
        show(i, msg.b64_json, true);
        steps += PARTIALS + 1 - cards[i].steps;
        cards[i].steps = PARTIALS + 1;
        finished++;
        setProgress(steps, total, `Finished ${finished} of ${n}`);
      }
    }
    if (finished < n) throw new ApiError(`The stream ended after ${finished} of ${n} images.`);
    const took = seconds(performance.now() - started);
    setProgress(total, total, `${n} image${n > 1 ? 's' : ''} in ${took} · seed ${seed}`);
    $('gen-progress-text').dataset.seed = String(seed);
  } catch (e) {
    if (e.name !== 'AbortError') {
      const err = e instanceof ApiError ? e : new ApiError(e.message || String(e));
      showError(box, plainMessage(err));
      markInvalid(form, FIELD_IDS[err.param]);
    }
    if (!cards) {
      // Refused before anything started: the last results stay.
    } else if (steps === 0) {
      // Nothing was drawn: back to the empty grid, the message says why.
      $('grid').replaceChildren();
      $('gen-empty').hidden = false;
      $('gen-progress-line').hidden = true;
    } else {
      setProgress(steps, total, e.name === 'AbortError' ? 'Stopped.' : 'Failed.');
      for (const [i, c] of cards.entries()) {
        if (c.fig.classList.contains('done')) continue;
        c.fig.classList.remove('pending');
        c.fig.classList.add('failed');
        c.cap.textContent = `Image ${i + 1} · not finished`;
      }
    }
  } finally {
    if (gen.controller === controller) {
      gen.controller = null;
      busyGenerate(false);
    }
  }
}

function setupGenerate() {
  enterSubmits($('prompt'));
  $('gen-form').addEventListener('submit', (e) => {
    e.preventDefault();
    generate();
  });
  $('gen-stop').addEventListener('click', () => {
    if (gen.controller) gen.controller.abort();
    $('gen-submit').focus();
  });
  randomSeedButton($('seed-random'), $('seed'));
}

// ------------------------------------------------------------------ Describe

const chat = { image: null, name: '', messages: [], controller: null };

function setImage(file) {
  const box = $('ask-error');
  if (!file) return;
  if (file.type && !file.type.startsWith('image/')) {
    showError(box, `“${file.name}” is not an image. Choose a PNG, JPEG, WebP or GIF file.`);
    return;
  }
  const reader = new FileReader();
  reader.onerror = () => showError(box, `Could not read “${file.name}”.`);
  reader.onload = () => {
    let url = String(reader.result);
    // Some browsers label unknown types application/octet-stream; the server sniffs the bytes.
    if (!url.startsWith('data:image/')) url = url.replace(/^data:[^;,]*/, 'data:image/png');
    chat.image = url;
    chat.name = file.name || 'pasted image';
    const preview = $('preview');
    preview.src = url;
    preview.alt = `The image: ${chat.name}`;
    preview.hidden = false;
    pixelateIfSmall(preview);
    $('drop').classList.add('has-image');
    $('drop-text').innerHTML = '';
    $('drop-text').append('Drop or click to use another image');
    const kb = Math.max(1, Math.round(file.size / 1024));
    $('file-name').textContent = `${chat.name} · ${kb} KB`;
    showError(box, '');
    resetConversation();
    $('question').focus();
  };
  reader.readAsDataURL(file);
}

function resetConversation() {
  if (chat.controller) chat.controller.abort();
  chat.messages = [];
  const log = $('log');
  log.replaceChildren($('log-empty'));
  $('log-empty').hidden = false;
  $('log-empty').textContent = chat.image
    ? 'Ask about the image. Follow-up questions keep the conversation.'
    : 'Pick an image, then ask about it. Follow-up questions keep the conversation.';
}

function bubble(role, text) {
  const div = document.createElement('div');
  div.className = `msg ${role}`;
  const who = document.createElement('span');
  who.className = 'who';
  who.textContent = role === 'user' ? 'You' : 'Janus';
  const body = document.createElement('div');
  body.className = 'text';
  body.textContent = text;
  div.append(who, body);
  $('log-empty').hidden = true;
  $('log').append(div);
  return { div, body };
}

function busyAsk(on) {
  $('ask-submit').setAttribute('aria-disabled', String(on));
  $('ask-submit').textContent = on ? 'Answering…' : 'Ask';
  $('ask-stop').hidden = !on;
  $('log').setAttribute('aria-busy', String(on));
}

async function ask() {
  const form = $('ask-form');
  const box = $('ask-error');
  if (chat.controller) return;
  if (!chat.image) {
    showError(box, 'Choose an image first: drop one on the box, click it, or paste one.');
    $('file').focus();
    return;
  }
  const question = $('question').value;
  if (!question.trim()) {
    showError(box, 'Write a question first.');
    markInvalid(form, 'question');
    return;
  }
  const maxText = $('max-tokens').value.trim();
  let maxTokens;
  if (maxText) {
    maxTokens = Number(maxText);
    if (!Number.isInteger(maxTokens) || maxTokens < 1) {
      showError(box, 'Max tokens: use a whole number of at least 1, or leave it empty.');
      markInvalid(form, 'max-tokens');
      return;
    }
  }
  showError(box, '');
  markInvalid(form, null);
  const first = chat.messages.length === 0;
  const userMsg = first
    ? { role: 'user', content: [{ type: 'image_url', image_url: { url: chat.image } }, { type: 'text', text: question }] }
    : { role: 'user', content: question };
  const messages = [...chat.messages, userMsg];
  const body = { messages, stream: true };
  if (maxTokens) body.max_tokens = maxTokens;
  // Structured output: every token is masked to keep the answer a JSON object.
  if ($('json-answer').checked) body.response_format = { type: 'json_object' };
  const you = bubble('user', question);
  const answer = bubble('assistant', '');
  answer.div.classList.add('streaming');
  $('question').value = '';
  const controller = new AbortController();
  chat.controller = controller;
  busyAsk(true);
  let text = '';
  let finish = null;
  const log = $('log');
  try {
    const resp = await post('v1/chat/completions', body, controller.signal);
    for await (const ev of sse(resp)) {
      if (ev.data === '[DONE]') break;
      const msg = json(ev.data);
      if (msg.error || ev.event === 'error') throw streamError(msg);
      for (const choice of msg.choices || []) {
        const piece = choice.delta && choice.delta.content;
        if (piece) {
          text += piece;
          answer.body.textContent = text;
          log.scrollTop = log.scrollHeight;
        }
        if (choice.finish_reason) finish = choice.finish_reason;
      }
    }
    if (!finish) throw new ApiError('The answer stopped before it was finished.');
    answer.div.classList.remove('streaming');
    if (!text) answer.body.textContent = '(an empty answer)';
    if (finish === 'length') {
      const note = document.createElement('span');
      note.className = 'note';
      note.textContent = 'Stopped at the token limit.';
      answer.div.append(note);
    }
    chat.messages = [...messages, { role: 'assistant', content: text }];
  } catch (e) {
    // The turn did not happen: take it back so that asking again works.
    you.div.remove();
    answer.div.remove();
    if (!$('log').querySelector('.msg')) $('log-empty').hidden = false;
    if (!$('question').value) $('question').value = question;
    if (e.name !== 'AbortError') {
      const err = e instanceof ApiError ? e : new ApiError(e.message || String(e));
      let msg = plainMessage(err);
      if (/context/i.test(msg) && chat.messages.length) msg += ' Start a new conversation, or lower Max tokens.';
      showError(box, msg);
      markInvalid(form, FIELD_IDS[err.param]);
    }
  } finally {
    chat.controller = null;
    busyAsk(false);
  }
}

/**
 * An image picker: the file input, drops on the box, and images pasted while `view` shows each
 * call `onFile` with the file.
 */
function imagePicker(input, drop, view, onFile) {
  input.addEventListener('change', (e) => {
    onFile(e.target.files[0]);
    e.target.value = '';
  });
  for (const type of ['dragenter', 'dragover']) {
    drop.addEventListener(type, (e) => {
      e.preventDefault();
      drop.classList.add('over');
    });
  }
  for (const type of ['dragleave', 'dragend']) drop.addEventListener(type, () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => {
    e.preventDefault();
    drop.classList.remove('over');
    const file = [...(e.dataTransfer && e.dataTransfer.files || [])][0];
    if (file) onFile(file);
  });
  document.addEventListener('paste', (e) => {
    if (view.hidden) return;
    const item = [...(e.clipboardData ? e.clipboardData.items : [])].find((it) => it.type.startsWith('image/'));
    if (item) {
      e.preventDefault();
      onFile(item.getAsFile());
    }
  });
}

function setupDescribe() {
  enterSubmits($('question'));
  imagePicker($('file'), $('drop'), $('view-describe'), setImage);
  // A file dropped anywhere else on the page should not navigate away from it.
  window.addEventListener('dragover', (e) => e.preventDefault());
  window.addEventListener('drop', (e) => e.preventDefault());
  $('ask-form').addEventListener('submit', (e) => {
    e.preventDefault();
    ask();
  });
  $('ask-stop').addEventListener('click', () => {
    if (chat.controller) chat.controller.abort();
    $('question').focus();
  });
  $('ask-reset').addEventListener('click', () => {
    resetConversation();
    showError($('ask-error'), '');
    $('question').value = 'Describe this image in detail.';
    $('question').focus();
  });
}

// ------------------------------------------------------------------ Edit

// The mask is painted on a canvas of the image's own pixel size, scaled over the image. Each
// pixel is painted or not (strokes are made crisp when they end), and what is painted is what
// changes: the mask sent has alpha 0 there and 255 elsewhere (OpenAI's convention).
const edit = {
  file: null, // what is sent as `image`
  name: '',
  beforeUrl: null,
  resultUrl: null,
  resultBlob: null,
  resultSeed: null,
  painted: 0, // painted pixels
  erase: false,
  stroke: null, // {id, x, y} while a pointer paints
  controller: null,
};
const EDIT_FIELD_IDS = { prompt: 'edit-prompt', seed: 'edit-seed', image: 'edit-file' };
const PAINT_ALPHA = 128; // a pixel at least this opaque on the canvas counts as painted

/** The EXIF orientation (1 to 8) of JPEG bytes; 1 when there is none. */
function jpegOrientation(buf) {
  const v = new DataView(buf);
  if (v.byteLength < 4 || v.getUint16(0) !== 0xffd8) return 1;
  let at = 2;
  while (at + 4 <= v.byteLength) {
    const marker = v.getUint16(at);
    const len = v.getUint16(at + 2);
    if ((marker & 0xff00) !== 0xff00 || marker === 0xffda) return 1; // not a marker, or image data
    if (marker === 0xffe1 && at + 10 <= v.byteLength && v.getUint32(at + 4) === 0x45786966) { // "Exif"
      const tiff = at + 10;
      if (tiff + 8 > v.byteLength) return 1;
      const little = v.getUint16(tiff) === 0x4949;
      const u16 = (o) => v.getUint16(o, little);
      const ifd = tiff + v.getUint32(tiff + 4, little);
      if (ifd + 2 > v.byteLength) return 1;
      const count = u16(ifd);
      for (let i = 0; i < count; i++) {
        const entry = ifd + 2 + i * 12;
        if (entry + 12 > v.byteLength) return 1;
        if (u16(entry) === 0x0112) {
          const o = u16(entry + 8);
          return o >= 1 && o <= 8 ? o : 1;
        }
      }
      return 1;
    }
    at += 2 + len;
  }
  return 1;
}

function loadImage(url) {
  const img = new Image();
  img.src = url;
  return img.decode().then(() => img);
}

function canvasBlob(canvas) {
  return new Promise((resolve, reject) => {
    canvas.toBlob((b) => (b ? resolve(b) : reject(new ApiError('Could not make a PNG in this browser.'))), 'image/png');
  });
}

async function setEditImage(file) {
  const box = $('edit-error');
  if (!file) return;
  if (file.type && !file.type.startsWith('image/')) {
    showError(box, `“${file.name}” is not an image. Choose a PNG, JPEG, WebP or GIF file.`);
    return;
  }
  const name = file.name || 'pasted image';
  const url = URL.createObjectURL(file);
  let img;
  try {
    img = await loadImage(url);
  } catch {
    URL.revokeObjectURL(url);
    showError(box, `Could not read “${name}” as an image. Choose a PNG, JPEG, WebP or GIF file.`);
    return;
  }
  if (edit.controller) edit.controller.abort();
  const w = img.naturalWidth;
  const h = img.naturalHeight;
  let send = file;
  let note = '';
  // The browser shows a JPEG turned by its EXIF orientation and the server reads the pixels as
  // stored: send what is shown (as PNG), so that the mask lies where it was painted.
  if (/jpe?g$/i.test(file.type || name) && jpegOrientation(await file.slice(0, 1 << 16).arrayBuffer()) !== 1) {
    const c = document.createElement('canvas');
    c.width = w;
    c.height = h;
    c.getContext('2d').drawImage(img, 0, 0);
    send = new File([await canvasBlob(c)], name.replace(/\.[^.]*$/, '') + '.png', { type: 'image/png' });
    note = ' · sent upright as PNG';
  }
  if (edit.beforeUrl) URL.revokeObjectURL(edit.beforeUrl);
  edit.beforeUrl = url;
  edit.file = send;
  edit.name = send.name || 'image.png';
  const before = $('edit-before');
  before.src = url;
  before.alt = `The image to edit: ${name}`;
  pixelateIfSmall(before);
  const canvas = $('edit-canvas');
  canvas.width = w;
  canvas.height = h;
  canvas.classList.toggle('pixelated', w < 256);
  // Both frames take the image's shape, within limits; the painting area is the image's box.
  const ratio = w / h;
  const frameRatio = Math.min(Math.max(ratio, 3 / 4), 16 / 9);
  $('edit-pair').style.setProperty('--box', String(frameRatio));
  $('edit-paint').style.width = `${Math.min(1, ratio / frameRatio) * 100}%`;
  $('edit-paint').style.aspectRatio = `${w} / ${h}`;
  $('edit-pair').hidden = false;
  $('edit-empty').hidden = true;
  $('edit-drop').classList.add('has-image');
  $('edit-drop-text').replaceChildren('Drop or click to use another image');
  const kb = Math.max(1, Math.round(file.size / 1024));
  $('edit-file-name').textContent = `${name} · ${w}×${h} · ${kb} KB${note}`;
  showError(box, '');
  clearResult();
  clearMask();
}

function clearResult() {
  if (edit.resultUrl) URL.revokeObjectURL(edit.resultUrl);
  edit.resultUrl = null;
  edit.resultBlob = null;
  const p = document.createElement('p');
  p.className = 'placeholder';
  p.textContent = 'The edited image appears here.';
  $('edit-after-frame').replaceChildren(p);
  $('edit-after').classList.remove('pending', 'done', 'failed');
  $('edit-after-cap').textContent = 'After';
  $('edit-revised').hidden = true;
  $('edit-more').hidden = true;
}

function maskHint() {
  const canvas = $('edit-canvas');
  const hint = $('edit-mask-hint');
  if (!edit.file) return;
  if (!edit.painted) {
    hint.textContent = 'Nothing painted: the whole image will be redrawn from a description of it and your prompt.';
  } else {
    const share = (100 * edit.painted) / (canvas.width * canvas.height);
    const pct = share < 1 ? '< 1' : String(Math.round(share));
    hint.textContent = `${pct}% of the image is painted and will change; the rest stays exactly as it is.`;
  }
  hint.dataset.painted = String(edit.painted);
}

/** The mask canvas's context (read after every stroke). */
function maskCtx() {
  return $('edit-canvas').getContext('2d', { willReadFrequently: true });
}

function clearMask() {
  const canvas = $('edit-canvas');
  maskCtx().clearRect(0, 0, canvas.width, canvas.height);
  edit.painted = 0;
  maskHint();
}

/** Makes every canvas pixel painted or not (strokes are antialiased) and counts the painted ones. */
function settleMask() {
  const canvas = $('edit-canvas');
  const ctx = maskCtx();
  const img = ctx.getImageData(0, 0, canvas.width, canvas.height);
  const d = img.data;
  const [r, g, b] = paintColor();
  let painted = 0;
  for (let i = 0; i < d.length; i += 4) {
    const on = d[i + 3] >= PAINT_ALPHA;
    d[i] = on ? r : 0;
    d[i + 1] = on ? g : 0;
    d[i + 2] = on ? b : 0;
    d[i + 3] = on ? 255 : 0;
    painted += on;
  }
  ctx.putImageData(img, 0, 0);
  edit.painted = painted;
  maskHint();
}

let paintRgb = null;
function paintColor() {
  if (!paintRgb) {
    const c = document.createElement('canvas').getContext('2d');
    c.fillStyle = getComputedStyle(document.documentElement).getPropertyValue('--accent').trim() || '#4f46e5';
    const hex = c.fillStyle; // normalized to #rrggbb
    paintRgb = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
  }
  return paintRgb;
}

/** The mask PNG (alpha 0 where painted, 255 elsewhere), or null when nothing is painted. */
async function maskBlob() {
  if (!edit.painted) return null;
  const canvas = $('edit-canvas');
  const { width: w, height: h } = canvas;
  const src = maskCtx().getImageData(0, 0, w, h).data;
  const out = new ImageData(w, h);
  for (let i = 3; i < src.length; i += 4) out.data[i] = src[i] >= PAINT_ALPHA ? 0 : 255;
  const c = document.createElement('canvas');
  c.width = w;
  c.height = h;
  c.getContext('2d').putImageData(out, 0, 0);
  return canvasBlob(c);
}

/** The brush's radius in image pixels: the slider gives its diameter on screen. */
function brushRadius() {
  const canvas = $('edit-canvas');
  const shown = canvas.getBoundingClientRect().width || canvas.width;
  return Math.max(0.75, (Number($('edit-brush').value) / 2) * (canvas.width / shown));
}

function canvasPoint(e) {
  const canvas = $('edit-canvas');
  const r = canvas.getBoundingClientRect();
  return { x: ((e.clientX - r.left) / r.width) * canvas.width, y: ((e.clientY - r.top) / r.height) * canvas.height };
}

function paintTo(p, from) {
  const ctx = maskCtx();
  const radius = brushRadius();
  const [r, g, b] = paintColor();
  ctx.globalCompositeOperation = edit.erase ? 'destination-out' : 'source-over';
  ctx.fillStyle = ctx.strokeStyle = `rgb(${r}, ${g}, ${b})`;
  ctx.lineCap = 'round';
  ctx.lineJoin = 'round';
  ctx.lineWidth = radius * 2;
  ctx.beginPath();
  if (from) {
    ctx.moveTo(from.x, from.y);
    ctx.lineTo(p.x, p.y);
    ctx.stroke();
  } else {
    ctx.arc(p.x, p.y, radius, 0, Math.PI * 2);
    ctx.fill();
  }
  ctx.globalCompositeOperation = 'source-over';
}

function moveRing(e) {
  const ring = $('edit-ring');
  if (e.pointerType === 'touch') {
    ring.hidden = true;
    return;
  }
  const r = $('edit-paint').getBoundingClientRect();
  const size = Number($('edit-brush').value);
  ring.style.width = ring.style.height = `${size}px`;
  ring.style.transform = `translate(${e.clientX - r.left - size / 2}px, ${e.clientY - r.top - size / 2}px)`;
  ring.classList.toggle('erase', edit.erase);
  ring.hidden = false;
}

function setupPainting() {
  const canvas = $('edit-canvas');
  canvas.addEventListener('pointerdown', (e) => {
    if (e.button !== 0 || edit.stroke || !edit.file) return;
    e.preventDefault();
    canvas.setPointerCapture(e.pointerId);
    const p = canvasPoint(e);
    paintTo(p, null);
    edit.stroke = { id: e.pointerId, last: p };
  });
  canvas.addEventListener('pointermove', (e) => {
    moveRing(e);
    const s = edit.stroke;
    if (!s || s.id !== e.pointerId) return;
    const events = e.getCoalescedEvents ? e.getCoalescedEvents() : [];
    for (const ev of events.length ? events : [e]) {
      const p = canvasPoint(ev);
      paintTo(p, s.last);
      s.last = p;
    }
  });
  const end = (e) => {
    if (!edit.stroke || edit.stroke.id !== e.pointerId) return;
    edit.stroke = null;
    settleMask();
  };
  canvas.addEventListener('pointerup', end);
  canvas.addEventListener('pointercancel', end);
  canvas.addEventListener('pointerleave', () => { $('edit-ring').hidden = true; });
  const brush = $('edit-brush');
  brush.addEventListener('input', () => { $('edit-brush-value').textContent = `${brush.value} px`; });
  $('edit-erase').addEventListener('click', () => {
    edit.erase = !edit.erase;
    $('edit-erase').setAttribute('aria-pressed', String(edit.erase));
  });
  $('edit-clear').addEventListener('click', clearMask);
}

function busyEdit(on) {
  $('edit-submit').setAttribute('aria-disabled', String(on));
  $('edit-submit').textContent = on ? 'Generating…' : 'Generate';
  $('edit-stop').hidden = !on;
  $('edit-after').setAttribute('aria-busy', String(on));
}

async function editImage() {
  const form = $('edit-form');
  const box = $('edit-error');
  if (edit.controller) return;
  if (!edit.file) {
    showError(box, 'Choose an image first: drop one on the box, click it, or paste one.');
    $('edit-file').focus();
    return;
  }
  const prompt = $('edit-prompt').value;
  if (!prompt.trim()) {
    showError(box, edit.painted
      ? 'Write a prompt first: describe what the painted part should show.'
      : 'Write a prompt first: describe the change you want.');
    markInvalid(form, 'edit-prompt');
    return;
  }
  const seed = readSeed('edit-seed');
  if (seed.error) {
    showError(box, seed.error);
    markInvalid(form, seed.field);
    return;
  }
  showError(box, '');
  markInvalid(form, null);
  const controller = new AbortController();
  edit.controller = controller;
  busyEdit(true);
  const after = $('edit-after');
  const frame = $('edit-after-frame');
  const kept = [...frame.childNodes];
  const keptCap = $('edit-after-cap').textContent;
  const keptClass = after.className;
  const redraw = !edit.painted;
  after.classList.remove('done', 'failed');
  after.classList.add('pending');
  $('edit-after-cap').textContent = redraw ? 'After · describing and redrawing…' : 'After · drawing…';
  const started = performance.now();
  try {
    const data = new FormData();
    data.append('image', edit.file, edit.name);
    const mask = await maskBlob();
    if (mask) data.append('mask', mask, 'mask.png');
    data.append('prompt', prompt);
    if (seed.seed !== undefined) data.append('seed', String(seed.seed));
    data.append('n', '1');
    data.append('response_format', 'b64_json');
    const resp = await post('v1/images/edits', data, controller.signal);
    const body = await resp.json().catch(() => { throw new ApiError('The server sent something that is not JSON.'); });
    const item = body && body.data && body.data[0];
    if (!item || !item.b64_json) throw new ApiError('The server answered without an image.');
    const used = body.seed ?? resp.headers.get('x-seed') ?? seed.seed;
    const blob = b64ToBlob(item.b64_json);
    if (edit.resultUrl) URL.revokeObjectURL(edit.resultUrl);
    edit.resultUrl = URL.createObjectURL(blob);
    edit.resultBlob = blob;
    edit.resultSeed = used;
    const img = document.createElement('img');
    img.src = edit.resultUrl;
    img.className = 'final';
    img.alt = `The edited image for “${prompt.trim().slice(0, 80)}”`;
    pixelateIfSmall(img);
    const link = document.createElement('a');
    link.href = edit.resultUrl;
    link.download = `janus-edit-${used ?? 'image'}.png`;
    link.className = 'download';
    link.title = 'Download PNG';
    link.setAttribute('aria-label', 'Download the edited image as PNG');
    link.append(img);
    frame.replaceChildren(link);
    after.classList.remove('pending');
    after.classList.add('done');
    const took = seconds(performance.now() - started);
    $('edit-after-cap').textContent = `After · seed ${used} · ${took} · click to save PNG`;
    $('edit-after-cap').dataset.seed = String(used);
    const revised = $('edit-revised');
    if (item.revised_prompt) {
      revised.replaceChildren();
      const strong = document.createElement('strong');
      strong.textContent = 'Redrawn from: ';
      revised.append(strong, item.revised_prompt);
      revised.title = 'Nothing was painted, so the server described the image and drew it again from this prompt';
      revised.hidden = false;
    } else {
      revised.hidden = true;
    }
    $('edit-more').hidden = false;
  } catch (e) {
    frame.replaceChildren(...kept);
    after.className = keptClass;
    $('edit-after-cap').textContent = keptCap;
    if (e.name !== 'AbortError') {
      const err = e instanceof ApiError ? e : new ApiError(e.message || String(e));
      showError(box, plainMessage(err));
      markInvalid(form, EDIT_FIELD_IDS[err.param]);
    }
  } finally {
    if (edit.controller === controller) {
      edit.controller = null;
      busyEdit(false);
    }
  }
}

function setupEdit() {
  imagePicker($('edit-file'), $('edit-drop'), $('view-edit'), setEditImage);
  setupPainting();
  enterSubmits($('edit-prompt'));
  randomSeedButton($('edit-seed-random'), $('edit-seed'));
  $('edit-form').addEventListener('submit', (e) => {
    e.preventDefault();
    editImage();
  });
  $('edit-stop').addEventListener('click', () => {
    if (edit.controller) edit.controller.abort();
    $('edit-submit').focus();
  });
  $('edit-reuse').addEventListener('click', () => {
    if (!edit.resultBlob) return;
    const file = new File([edit.resultBlob], `janus-edit-${edit.resultSeed ?? 'image'}.png`, { type: 'image/png' });
    setEditImage(file).then(() => $('edit-prompt').focus());
  });
}

// ------------------------------------------------------------------ start

function setup() {
  setupTabs();
  setupGenerate();
  setupDescribe();
  setupEdit();
  updateKeyButton();
  $('key-button').addEventListener('click', () => askForKey(apiKey() ? 'Change or forget the key kept in this browser.' : 'Needed only when the server runs with --api-key.'));
  pollReady();
}

setup();
