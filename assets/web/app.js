// Janus playground: a small page over janus serve's public API (no framework, no network
// besides this server). Generate streams /v1/images/generations; Describe streams
// /v1/chat/completions with the whole conversation and the image each turn.
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

/** POSTs JSON with the key; on 401 asks for the key and tries again. Returns an ok Response. */
async function post(path, body, signal) {
  const payload = JSON.stringify(body);
  for (;;) {
    const headers = { 'content-type': 'application/json', accept: 'text/event-stream, application/json' };
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
  max_tokens: 'Max tokens', max_completion_tokens: 'Max tokens',
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

const TABS = ['generate', 'describe'];

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

function readGenerate() {
  const prompt = $('prompt').value;
  if (!prompt.trim()) return { error: 'Write a prompt first: describe the picture you want.', field: 'prompt' };
  const nText = $('n').value.trim();
  const n = Number(nText);
  if (!Number.isInteger(n) || n < 1 || n > 16) return { error: 'Images: choose a whole number from 1 to 16.', field: 'n' };
  const body = { prompt, n, stream: true, partial_images: PARTIALS };
  const seedText = $('seed').value.trim();
  if (seedText) {
    if (!/^\d+$/.test(seedText) || !Number.isSafeInteger(Number(seedText))) {
      return { error: 'Seed: use a whole number (0 to 9007199254740991), or leave it empty for a random one.', field: 'seed' };
    }
    body.seed = Number(seedText);
  }
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
  $('seed-random').addEventListener('click', () => {
    const a = new Uint32Array(1);
    crypto.getRandomValues(a);
    $('seed').value = String(a[0]);
  });
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

function setupDescribe() {
  const drop = $('drop');
  enterSubmits($('question'));
  $('file').addEventListener('change', (e) => {
    setImage(e.target.files[0]);
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
    if (file) setImage(file);
  });
  // A file dropped anywhere else on the page should not navigate away from it.
  window.addEventListener('dragover', (e) => e.preventDefault());
  window.addEventListener('drop', (e) => e.preventDefault());
  document.addEventListener('paste', (e) => {
    if ($('view-describe').hidden) return;
    const item = [...(e.clipboardData ? e.clipboardData.items : [])].find((it) => it.type.startsWith('image/'));
    if (item) {
      e.preventDefault();
      setImage(item.getAsFile());
    }
  });
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

// ------------------------------------------------------------------ start

function setup() {
  setupTabs();
  setupGenerate();
  setupDescribe();
  updateKeyButton();
  $('key-button').addEventListener('click', () => askForKey(apiKey() ? 'Change or forget the key kept in this browser.' : 'Needed only when the server runs with --api-key.'));
  pollReady();
}

setup();
