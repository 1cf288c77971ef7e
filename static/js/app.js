/* app.js — small progressive behaviours for the chat UI. No dependencies, no
 * build step; load with `defer` after htmx.min.js and sse.js.
 *
 * Hooks it relies on (all optional; missing elements are simply skipped):
 *   <meta name="csrf-token" content="…">   sent as X-CSRF-Token on htmx non-GET requests
 *   textarea[data-enter-submits]           Enter sends the form, Shift+Enter = newline (IME-safe)
 *   textarea[data-autogrow]                grows with its content (so does the one above)
 *   [data-autoscroll]                      scroll container kept pinned to the bottom
 *   [data-sidebar-toggle], #sidebar, .shell   phone drawer: toggles .shell--nav-open
 *   [data-sidebar-close]                   clicking it also closes the drawer
 *   .toast [data-dismiss], .toast[data-autodismiss="ms"]   closing flash messages
 */
(function () {
  'use strict';

  var SUBMIT_TA = 'textarea[data-enter-submits]';
  var GROW_TA = 'textarea[data-autogrow], ' + SUBMIT_TA;
  var NEAR_BOTTOM_PX = 80;

  // Elements matching `sel` in `root`, including `root` itself.
  function within(root, sel) {
    if (!root || !root.querySelectorAll) return [];
    var found = Array.prototype.slice.call(root.querySelectorAll(sel));
    if (root.matches && root.matches(sel)) found.unshift(root);
    return found;
  }
  function isBlank(ta) { return ta.value.trim() === ''; }
  function formOf(elt) {
    if (!elt) return null;
    return elt.tagName === 'FORM' ? elt : (elt.form || (elt.closest && elt.closest('form')));
  }

  // (a) CSRF token on every state-changing htmx request.
  document.addEventListener('htmx:configRequest', function (e) {
    if ((e.detail.verb || 'get').toLowerCase() === 'get') return;
    var meta = document.querySelector('meta[name="csrf-token"]');
    if (meta && meta.content) e.detail.headers['X-CSRF-Token'] = meta.content;
  });

  // (d) Auto-grow. Browsers with CSS `field-sizing: content` do it natively.
  var nativeGrow = !!(window.CSS && CSS.supports && CSS.supports('field-sizing', 'content'));
  function grow(ta) {
    if (nativeGrow) return;
    ta.style.height = 'auto';                       // let it shrink first
    ta.style.height = (ta.scrollHeight + ta.offsetHeight - ta.clientHeight) + 'px';
  }                                                 // CSS max-height caps it
  document.addEventListener('input', function (e) {
    if (e.target.matches && e.target.matches(GROW_TA)) grow(e.target);
  });

  // (b) Enter to send.
  document.addEventListener('keydown', function (e) {
    var ta = e.target;
    if (e.key !== 'Enter' || !ta.matches || !ta.matches(SUBMIT_TA)) return;
    // While an IME (Korean, Japanese, Chinese) is composing, Enter only commits
    // the syllable. Safari fires that keydown with isComposing=false but
    // keyCode 229, so check both.
    if (e.isComposing || e.keyCode === 229) return;
    if (e.shiftKey || e.altKey) return;             // newline as usual
    e.preventDefault();
    var form = ta.form;
    if (!form || isBlank(ta) || form.classList.contains('htmx-request')) return;
    var send = form.querySelector('[type="submit"]');
    if (send && send.disabled) return;              // server disabled sending
    form.requestSubmit();
  });

  // Also refuse whitespace-only messages sent with the button.
  document.addEventListener('htmx:beforeRequest', function (e) {
    var form = formOf(e.detail.elt);
    var ta = form && form.querySelector(SUBMIT_TA);
    if (ta && e.detail.elt === form && isBlank(ta)) e.preventDefault();
  });

  // After the message was accepted: clear, shrink, refocus, follow the reply.
  document.addEventListener('htmx:afterRequest', function (e) {
    if (!e.detail.successful) return;
    var form = formOf(e.detail.elt);
    var ta = form && form.querySelector(SUBMIT_TA);
    if (!ta || e.detail.elt !== form) return;
    ta.value = '';
    grow(ta);
    // If the response replaced the form, focus its fresh textarea instead.
    var live = ta.isConnected ? ta : document.querySelector(SUBMIT_TA);
    if (live) live.focus();
    document.querySelectorAll('[data-autoscroll]').forEach(function (el) { pin(el, true); });
  });

  // (c) Autoscroll: follow new content only if the reader was already at the
  // bottom, so scrolling up to reread is never yanked back down.
  var pinned = new WeakMap();
  function pin(el, force) {
    if (force) pinned.set(el, true);
    if (pinned.get(el)) el.scrollTop = el.scrollHeight;
  }
  function watchScroll(el) {
    if (pinned.has(el)) return;
    pinned.set(el, true);
    el.addEventListener('scroll', function () {
      pinned.set(el, el.scrollHeight - el.scrollTop - el.clientHeight < NEAR_BOTTOM_PX);
    }, { passive: true });
    var follow = function () { pin(el); };
    // characterData: SSE chunks may append bare text nodes to a message.
    new MutationObserver(follow).observe(el, { childList: true, subtree: true, characterData: true });
    // Phone keyboards and window resizes shrink the viewport.
    if (window.ResizeObserver) new ResizeObserver(follow).observe(el);
    pin(el);
  }

  // (e) Phone drawer for the sidebar.
  function setNav(open) {
    var shell = document.querySelector('.shell');
    if (!shell) return;
    shell.classList.toggle('shell--nav-open', open);
    document.querySelectorAll('[data-sidebar-toggle]').forEach(function (b) {
      b.setAttribute('aria-expanded', String(open));
    });
  }
  document.addEventListener('click', function (e) {
    var t = e.target;
    if (!t.closest) return;
    var dismiss = t.closest('[data-dismiss]');
    if (dismiss) {
      var toast = dismiss.closest('.toast');
      if (toast) toast.remove();
      return;
    }
    if (t.closest('[data-sidebar-toggle]')) {
      var shell = document.querySelector('.shell');
      setNav(!(shell && shell.classList.contains('shell--nav-open')));
      return;
    }
    if (!document.querySelector('.shell--nav-open')) return;
    // Close after choosing a chat, or on a tap on the backdrop outside it.
    if (t.closest('#sidebar a, [data-sidebar-close]') || !t.closest('#sidebar')) setNav(false);
  });
  document.addEventListener('keydown', function (e) {
    if (e.key === 'Escape' && document.querySelector('.shell--nav-open')) setNav(false);
  });

  // Live stream resume. The browser's own reconnect sends Last-Event-ID, but when the
  // stream is closed for good (e.g. an error answer), htmx-ext-sse opens a new EventSource
  // on the page's original URL, which would replay from the position the page was
  // rendered at. Open it from the last event this page applied instead.
  var lastIds = {};
  if (window.htmx) {
    htmx.createEventSource = function (url) {
      var resumeAt = lastIds[url];
      var target = resumeAt ? url.replace(/([?&]last_event_id=)[^&]*/, '$1' + resumeAt) : url;
      var source = new EventSource(target, { withCredentials: true });
      ['update', 'signal'].forEach(function (name) {  // the page's stream, its signals
        source.addEventListener(name, function (e) { if (e.lastEventId) lastIds[url] = e.lastEventId; });
      });
      return source;
    };
  }

  // Per-content setup: run on first load and for every htmx-inserted fragment.
  var armedToasts = new WeakSet();
  function init(root) {
    within(root, '[data-autoscroll]').forEach(watchScroll);
    within(root, GROW_TA).forEach(grow);
    within(root, '.toast[data-autodismiss]').forEach(function (t) {
      if (armedToasts.has(t)) return;
      armedToasts.add(t);
      setTimeout(function () { t.remove(); }, parseInt(t.dataset.autodismiss, 10) || 5000);
    });
  }
  document.addEventListener('htmx:load', function (e) { init(e.detail.elt); });
  if (document.readyState === 'loading') {
    document.addEventListener('DOMContentLoaded', function () { init(document.body); });
  } else {
    init(document.body);
  }

  // (f) A search result opens its chat at the message (#msg-<id>), highlighted, and stops
  // the conversation from pinning itself to the bottom over it.
  function showFound() {
    var id = decodeURIComponent(location.hash.slice(1));
    var el = /^msg-/.test(id) && document.getElementById(id);
    document.querySelectorAll('.message--found').forEach(function (m) {
      if (m !== el) m.classList.remove('message--found');
    });
    if (!el) return;
    var box = el.closest('[data-autoscroll]');
    if (box) pinned.set(box, false);
    el.classList.add('message--found');
    el.scrollIntoView({ block: 'center' });
  }
  window.addEventListener('hashchange', showFound);
  if (document.readyState === 'loading') {
    document.addEventListener('DOMContentLoaded', showFound);
  } else {
    showFound();
  }
})();

/* Copy buttons on code blocks (app/rendering/code.py):
 *   <div class="code"> … <button type="button" class="code__copy" data-copy>Copy</button> … <pre><code>…
 * One delegated listener, so blocks that arrive over the live stream work too. The
 * clipboard API needs a secure context (https or localhost); elsewhere a hidden
 * textarea and execCommand('copy') do it. The button says "Copied" for a moment
 * (or its data-copied-label, for a translated page). */
(function () {
  'use strict';

  var DONE_MS = 1500;
  var timers = new WeakMap();

  function copyWithTextarea(text) {
    var active = document.activeElement;
    var ta = document.createElement('textarea');
    ta.value = text;
    ta.setAttribute('readonly', '');
    ta.style.position = 'fixed';      // CSSOM, not a style attribute: allowed under CSP
    ta.style.top = '-1000px';
    ta.style.opacity = '0';
    document.body.appendChild(ta);
    ta.select();
    var ok = false;
    try { ok = document.execCommand('copy'); } catch (err) { ok = false; }
    ta.remove();
    if (active && active.focus) active.focus();
    return ok ? Promise.resolve() : Promise.reject(new Error('copy failed'));
  }

  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text).catch(function () { return copyWithTextarea(text); });
    }
    return copyWithTextarea(text);
  }

  function showCopied(btn) {
    if (!btn.dataset.label) btn.dataset.label = btn.textContent;
    btn.textContent = btn.dataset.copiedLabel || document.body.dataset.copiedLabel || 'Copied';
    btn.classList.add('code__copy--done');
    clearTimeout(timers.get(btn));
    timers.set(btn, setTimeout(function () {
      btn.textContent = btn.dataset.label;
      btn.classList.remove('code__copy--done');
    }, DONE_MS));
  }

  // The rendered HTML says "Copy" (it is cached for every language); the page's own
  // translated label (<body data-copy-label>) replaces it wherever a block appears.
  function label(root) {
    var text = document.body && document.body.dataset.copyLabel;
    if (!text || !root.querySelectorAll) return;
    var buttons = root.matches && root.matches('[data-copy]') ? [root] : root.querySelectorAll('[data-copy]');
    Array.prototype.forEach.call(buttons, function (btn) {
      if (!btn.classList.contains('code__copy--done') && btn.textContent !== text) btn.textContent = text;
    });
  }
  document.addEventListener('DOMContentLoaded', function () {
    label(document);
    new MutationObserver(function (records) {
      records.forEach(function (r) { Array.prototype.forEach.call(r.addedNodes, label); });
    }).observe(document.body, { childList: true, subtree: true });
  });

  document.addEventListener('click', function (e) {
    var btn = e.target.closest && e.target.closest('[data-copy]');
    if (!btn) return;
    var block = btn.closest('.code');
    var code = block && block.querySelector('pre code');
    if (!code) return;
    // The block's source ends with a newline; a pasted snippet should not.
    copyText(code.textContent.replace(/\n$/, '')).then(function () { showCopied(btn); }, function () {});
  });
})();

/* Theme and keyboard (templates/profile/):
 *   [data-theme-choice="light|dark|system"]  sets the `theme` cookie (a year) and
 *       data-theme on <html> at once; the server reads the cookie on the next page.
 *   Esc        stops the reply being written (clicks its Stop button: htmx, CSRF as usual)
 *   Ctrl/⌘+K   focuses the sidebar's search box (#search-q), opening the phone drawer
 *   ?          (outside text fields) toggles the shortcut help popover (#keys-help) */
(function () {
  'use strict';

  var YEAR = 365 * 24 * 3600;

  function setTheme(value) {
    var root = document.documentElement;
    if (value === 'light' || value === 'dark') {
      root.setAttribute('data-theme', value);
      document.cookie = 'theme=' + value + '; path=/; max-age=' + YEAR + '; samesite=lax';
    } else {
      root.removeAttribute('data-theme');
      document.cookie = 'theme=; path=/; max-age=0; samesite=lax';
    }
    document.querySelectorAll('[data-theme-choice]').forEach(function (b) {
      b.setAttribute('aria-pressed', String(b.dataset.themeChoice === (value || 'system')));
    });
  }

  document.addEventListener('click', function (e) {
    var choice = e.target.closest && e.target.closest('[data-theme-choice]');
    if (choice) setTheme(choice.dataset.themeChoice);
  });

  function typing(el) {
    return el && (el.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(el.tagName));
  }

  document.addEventListener('keydown', function (e) {
    if (e.isComposing || e.keyCode === 229) return;   // an IME is composing (Korean)
    if (e.key === 'Escape') {
      // Esc first closes what is open (the drawer, a popover); only then stops a reply.
      if (document.querySelector('.shell--nav-open, :popover-open')) return;
      var stop = document.querySelector(
        'article[data-status="streaming"] [hx-post$="/cancel"],' +
        ' article[data-status="queued"] [hx-post$="/cancel"]');
      if (stop) { e.preventDefault(); stop.click(); }
      return;
    }
    if ((e.ctrlKey || e.metaKey) && !e.altKey && !e.shiftKey && (e.key === 'k' || e.key === 'K')) {
      var box = document.getElementById('search-q');
      if (!box) return;
      e.preventDefault();
      var shell = document.querySelector('.shell');
      var sidebar = document.getElementById('sidebar');
      if (shell && sidebar && sidebar.offsetParent === null) shell.classList.add('shell--nav-open');
      box.focus();
      box.select();
      return;
    }
    if (e.key === '?' && !e.ctrlKey && !e.metaKey && !typing(e.target)) {
      var help = document.getElementById('keys-help');
      if (help && help.togglePopover) { e.preventDefault(); help.togglePopover(); }
    }
  });
})();

/* Connection indicator (templates/signals/_page.html): #connection says when a live
 * stream is lost and while htmx-ext-sse retries it (its backoff: 0.5 s doubling to 64 s),
 * then "Reconnected" for a moment. The stream resumes from the last event applied
 * (Last-Event-ID, or the last_event_id kept above), so no text is lost or repeated. */
(function () {
  'use strict';

  var RESUMED_MS = 2500;
  var failures = 0;
  var hideTimer = null;

  function show(state, text) {
    var box = document.getElementById('connection');
    if (!box) return;
    clearTimeout(hideTimer);
    box.dataset.state = state;
    box.querySelector('.connection__text').textContent = text;
    box.hidden = false;
    if (state === 'open') hideTimer = setTimeout(function () { box.hidden = true; }, RESUMED_MS);
  }

  // The texts come translated from the page (data-lost, data-retrying, data-resumed).
  function says(name, fallback) {
    var box = document.getElementById('connection');
    return (box && box.dataset[name]) || fallback;
  }

  document.addEventListener('htmx:sseError', function () {
    failures += 1;
    show('lost', failures === 1 ? says('lost', 'Connection lost. Reconnecting…')
      : says('retrying', 'Connection lost. Retrying (attempt {n})…').replace('{n}', failures));
  });
  document.addEventListener('htmx:sseOpen', function () {
    if (!failures) return;
    failures = 0;
    show('open', says('resumed', 'Reconnected. Up to date.'));
  });
})();

/* Chat import with progress (app/pages/exports.py):
 *   <form data-import> with a file input and [data-import-status]
 * The file is read here and sent one chat per request (a list of chats from Open WebUI or
 * ChatGPT is split; LocalChat's own document is one chat), so the page can say "3 / 12"
 * and add each new chat to the sidebar as the server answers its item. A chat the server
 * refuses stops the import there, saying which one and why; the chats before it stay.
 * Without fetch the form posts the whole file and the server imports it at once. */
(function () {
  'use strict';

  function csrf() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : '';
  }

  // The texts come translated from the form's data-* attributes ({i}, {n}: numbers).
  function phrase(form, name, fallback, values) {
    var t = form.dataset[name] || fallback;
    Object.keys(values || {}).forEach(function (k) { t = t.split('{' + k + '}').join(values[k]); });
    return t;
  }

  function say(status, text, isError) {
    status.textContent = text;
    status.classList.toggle('import-form__status--error', !!isError);
  }

  function addToSidebar(html) {
    var list = document.getElementById('session-list');
    if (!list) {
      var empty = document.querySelector('.session-list__empty');
      if (!empty) return;
      list = document.createElement('ul');
      list.className = 'session-list__items';
      list.id = 'session-list';
      empty.replaceWith(list);
    }
    var holder = document.createElement('ul');
    holder.innerHTML = html;                          // the server's own rendered items
    Array.prototype.slice.call(holder.children).reverse().forEach(function (item) {
      list.insertBefore(item, list.firstChild);
      if (window.htmx) htmx.process(item);
    });
  }

  function postChat(chat) {
    return fetch('/chats/import', {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': csrf() },
      body: JSON.stringify(chat)
    }).then(function (response) {
      return response.text().then(function (text) {
        if (!response.ok) throw new Error(text || ('HTTP ' + response.status));
        return text;
      });
    });
  }

  document.addEventListener('submit', function (e) {
    var form = e.target;
    if (!form.matches || !form.matches('form[data-import]') || !window.fetch) return;
    var input = form.querySelector('input[type="file"]');
    var status = form.querySelector('[data-import-status]');
    var file = input && input.files && input.files[0];
    if (!file || !status) return;
    e.preventDefault();
    var button = form.querySelector('[type="submit"]');
    if (button) button.disabled = true;
    var done = function () { if (button) button.disabled = false; form.reset(); };
    file.text().then(function (text) {
      var document_;
      try { document_ = JSON.parse(text); } catch (err) {
        say(status, phrase(form, 'notJson', 'This file is not JSON.'), true);
        done();
        return;
      }
      // Each chat of a list goes as a list of one, so the server still sees its format.
      var chats = Array.isArray(document_) && document_.length
        ? document_.map(function (chat) { return [chat]; }) : [document_];
      var total = chats.length;
      var index = 0;
      var next = function () {
        if (index === total) {
          say(status, total === 1 ? phrase(form, 'importedOne', 'Imported {n} chat.', { n: total })
            : phrase(form, 'importedMany', 'Imported {n} chats.', { n: total }), false);
          done();
          return;
        }
        say(status, phrase(form, 'importing', 'Importing… {i} / {n}', { i: index + 1, n: total }), false);
        postChat(chats[index]).then(function (items) {
          addToSidebar(items);
          index += 1;
          next();
        }, function (err) {
          say(status, phrase(form, 'failed', 'Chat {i} of {n} was not imported: {why} ({done} imported)',
                           { i: index + 1, n: total, why: err.message, done: index }), true);
          done();
        });
      };
      next();
    });
  });
})();
