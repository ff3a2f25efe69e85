// Tollgate console: one dependency-free script, served from the binary with the page.
//
// Rules this file keeps:
// - Every value from the server is shown through text nodes, `textContent` or `setAttribute`
//   on a fixed attribute; no HTML is ever parsed from data (ids and names are user data).
// - Nothing inline: the page's Content-Security-Policy forbids inline script and style, so the
//   charts use SVG presentation attributes and classes, never `style`.
// - The admin key lives in sessionStorage (this tab's session) and goes only to /api/admin as
//   `Authorization: Bearer`.
// - Money arrives as exact JSON numbers computed from integer quota; it is displayed, never
//   computed with. Prices are sent back as the typed decimal text, never through a float.
(function () {
  'use strict';

  var KEY = 'tollgate.adminKey';
  var SVG_NS = document.getElementById('svg-ns').namespaceURI;
  var view = document.getElementById('view');
  var CHANNEL_TYPES = ['openai', 'dashscope', 'deepseek', 'openai_compatible', 'anthropic', 'gemini', 'echo'];
  var TOKEN_STATUS = { 1: 'enabled', 2: 'disabled', 3: 'expired', 4: 'exhausted' };
  // Bumped on every navigation, so a slow answer for a page left behind draws nothing.
  var generation = 0;

  // ---- DOM helpers ------------------------------------------------------------------------

  function append(node, children) {
    children.forEach(function (c) {
      if (Array.isArray(c)) { append(node, c); return; }
      if (c === null || c === undefined || c === false) { return; }
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    });
    return node;
  }

  // el('td', {class: 'num'}, 'text', childNode): attributes are set one by one, `on…` keys
  // become listeners, strings become text nodes.
  function el(tag, attrs) {
    var node = document.createElement(tag);
    setAttrs(node, attrs);
    return append(node, Array.prototype.slice.call(arguments, 2));
  }

  function svg(tag, attrs) {
    var node = document.createElementNS(SVG_NS, tag);
    setAttrs(node, attrs);
    return append(node, Array.prototype.slice.call(arguments, 2));
  }

  function setAttrs(node, attrs) {
    Object.keys(attrs || {}).forEach(function (k) {
      var v = attrs[k];
      if (v === null || v === undefined || v === false) { return; }
      if (k.slice(0, 2) === 'on') { node.addEventListener(k.slice(2), v); }
      else if (k === 'value') { node.value = v; }
      else { node.setAttribute(k, v === true ? '' : String(v)); }
    });
  }

  function show(children) {
    view.replaceChildren();
    append(view, children);
  }

  function count(n) {
    return typeof n === 'number' ? n.toLocaleString('en-US') : '—';
  }

  // `1 call`, `2 calls`.
  function counted(n, noun) {
    return count(n) + ' ' + noun + (n === 1 ? '' : 's');
  }

  function usd(v) {
    return v === null || v === undefined ? '—' : '$' + String(v);
  }

  function utc(secs) {
    if (typeof secs !== 'number') { return '—'; }
    return new Date(secs * 1000).toISOString().slice(0, 19).replace('T', ' ');
  }

  function hash(path, params) {
    var qs = new URLSearchParams();
    Object.keys(params || {}).forEach(function (k) {
      if (params[k] !== '' && params[k] !== null && params[k] !== undefined) { qs.set(k, params[k]); }
    });
    var s = qs.toString();
    return '#' + path + (s ? '?' + s : '');
  }

  // A table; on narrow screens the stylesheet stacks each row, labelling its cells from
  // `data-label` (set here from the headers).
  function table(headers, rows, empty) {
    var names = headers.map(function (h) { return typeof h === 'string' ? h : h.text; });
    var head = el('tr', null, headers.map(function (h) {
      return typeof h === 'string' ? el('th', null, h) : el('th', { class: h.cls }, h.text);
    }));
    rows.forEach(function (row) {
      Array.prototype.forEach.call(row.children, function (cell, i) {
        if (names[i]) { cell.setAttribute('data-label', names[i]); }
      });
    });
    var body = rows.length ? rows : [el('tr', null, el('td', { class: 'empty', colspan: headers.length }, empty || 'Nothing yet.'))];
    return el('div', { class: 'table-wrap' }, el('table', null, el('thead', null, head), el('tbody', null, body)));
  }

  function stat(label, value) {
    return el('div', { class: 'stat' }, el('div', { class: 'label' }, label), el('div', { class: 'value' }, value));
  }

  function errorBox(err) {
    return el('div', { class: 'card box-error', role: 'alert' }, err && err.message ? err.message : String(err));
  }

  function loading(title) {
    show([el('h1', null, title), el('p', { class: 'muted' }, 'Loading…')]);
  }

  // ---- API --------------------------------------------------------------------------------

  function ApiError(message, status) {
    this.message = message;
    this.status = status;
  }

  // Calls the admin API; resolves to `data` of the envelope. `rawBody` is JSON text (prices
  // build theirs from the typed decimals).
  function api(method, path, body, rawBody) {
    var headers = { Authorization: 'Bearer ' + (sessionStorage.getItem(KEY) || '') };
    var init = { method: method, headers: headers, cache: 'no-store', credentials: 'omit' };
    if (rawBody !== undefined || body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = rawBody !== undefined ? rawBody : JSON.stringify(body);
    }
    return fetch('/api/admin' + path, init).then(function (res) {
      return res.json().catch(function () { return null; }).then(function (json) {
        if (res.status === 401) {
          signOut('The admin key was refused. Sign in again.');
          throw new ApiError('Not signed in.', 401);
        }
        if (!res.ok || !json || json.success !== true) {
          throw new ApiError((json && json.message) || ('HTTP ' + res.status), res.status);
        }
        return json.data;
      });
    });
  }

  // ---- Sign-in ----------------------------------------------------------------------------

  function signOut(message) {
    sessionStorage.removeItem(KEY);
    document.getElementById('sign-in-error').textContent = message || '';
    render();
  }

  document.getElementById('sign-in-form').addEventListener('submit', function (e) {
    e.preventDefault();
    var input = document.getElementById('admin-key');
    var error = document.getElementById('sign-in-error');
    error.textContent = '';
    sessionStorage.setItem(KEY, input.value);
    // A cheap call that needs the key: the smallest usage report.
    api('GET', '/usage?hours=1').then(function () {
      input.value = '';
      render();
    }).catch(function (err) {
      if (err.status !== 401) {
        sessionStorage.removeItem(KEY);
        error.textContent = err.message;
      }
    });
  });

  document.getElementById('sign-out').addEventListener('click', function () { signOut(''); });

  // ---- Router -----------------------------------------------------------------------------

  function render() {
    generation += 1;
    var signedIn = !!sessionStorage.getItem(KEY);
    document.getElementById('sign-in').hidden = signedIn;
    document.getElementById('nav').hidden = !signedIn;
    document.getElementById('sign-out').hidden = !signedIn;
    view.hidden = !signedIn;
    if (!signedIn) {
      view.replaceChildren();
      document.getElementById('admin-key').focus();
      return;
    }
    var h = location.hash.slice(1) || '/overview';
    // Which route the view shows, so a script (the browser test) can tell a stale page from
    // the one the address asks for between a hash change and its event.
    view.setAttribute('data-route', location.hash.slice(1));
    var q = h.indexOf('?');
    var path = q < 0 ? h : h.slice(0, q);
    var params = new URLSearchParams(q < 0 ? '' : h.slice(q + 1));
    var parts = path.split('/').filter(Boolean);
    var page = parts[0] || 'overview';
    document.querySelectorAll('#nav a').forEach(function (a) {
      a.classList.toggle('current', a.getAttribute('data-page') === page);
    });
    var mine = generation;
    var pages = { overview: overview, channels: channels, prices: prices, users: users, logs: logs };
    var run = page === 'users' && parts[1] ? function () { return userPage(parts[1], mine); } : pages[page];
    if (!run) {
      show([el('h1', null, 'Not found'), el('p', null, el('a', { href: '#/overview' }, 'Back to the overview'))]);
      return;
    }
    Promise.resolve(run(params, mine)).catch(function (err) {
      if (mine === generation && err.status !== 401) { show([errorBox(err)]); }
    });
  }

  function current(mine) {
    return mine === generation;
  }

  window.addEventListener('hashchange', render);

  // ---- Overview ---------------------------------------------------------------------------

  // A bar chart of one value per hourly bucket, drawn with SVG elements.
  function barChart(title, buckets, value, label, cls) {
    var W = 480, H = 170, top = 16, bottom = 22, n = buckets.length;
    var values = buckets.map(value);
    var max = values.reduce(function (m, v) { return v > m ? v : m; }, 0);
    var slot = W / Math.max(n, 1);
    var plot = H - top - bottom;
    var chart = svg('svg', { viewBox: '0 0 ' + W + ' ' + H, role: 'img', 'aria-label': title });
    buckets.forEach(function (b, i) {
      var v = values[i];
      var height = max > 0 ? Math.max(v > 0 ? 1 : 0, (v / max) * plot) : 0;
      chart.append(svg('rect', {
        class: 'bar' + (cls ? ' ' + cls : ''),
        x: (i * slot + slot * 0.12).toFixed(1),
        y: (top + plot - height).toFixed(1),
        width: (slot * 0.76).toFixed(1),
        height: height.toFixed(1)
      }, svg('title', null, b.time.slice(0, 16) + ' UTC: ' + label(b))));
    });
    chart.append(svg('line', { class: 'axis', x1: 0, y1: top + plot + 0.5, x2: W, y2: top + plot + 0.5 }));
    var peak = buckets[values.indexOf(max)];
    chart.append(svg('text', { x: 2, y: 11 }, max > 0 ? 'max ' + label(peak) : 'none'));
    if (n > 0) {
      chart.append(svg('text', { x: 2, y: H - 6 }, buckets[0].time.slice(11, 16)));
      chart.append(svg('text', { x: W - 2, y: H - 6, 'text-anchor': 'end' }, buckets[n - 1].time.slice(11, 16) + ' UTC'));
    }
    return el('div', { class: 'card chart' }, el('h3', null, title), chart);
  }

  function overview(params, mine) {
    loading('Overview');
    return Promise.all([api('GET', '/usage?hours=24'), api('GET', '/channels')]).then(function (r) {
      if (!current(mine)) { return; }
      var usage = r[0], list = r[1];
      var t = usage.totals;
      var errorsKnown = usage.errors !== null && usage.errors !== undefined;
      var b = usage.buckets;
      var charts = [
        barChart('Calls per hour', b, function (x) { return x.requests; }, function (x) { return counted(x.requests, 'call'); }),
        barChart('Tokens per hour', b, function (x) { return x.tokens; }, function (x) { return counted(x.tokens, 'token'); }),
        barChart('Spend per hour', b, function (x) { return x.quota; }, function (x) { return usd(x.spend); })
      ];
      charts.push(errorsKnown
        ? barChart('Errors per hour', b, function (x) { return x.errors || 0; }, function (x) { return counted(x.errors || 0, 'error'); }, 'bad')
        : el('div', { class: 'card chart' }, el('h3', null, 'Errors per hour'),
          el('p', { class: 'muted' }, 'Failed calls are not recorded by this version yet.')));
      var byId = {};
      usage.channels.forEach(function (c) { byId[c.channel_id === null ? 'none' : c.channel_id] = c; });
      var rows = list.map(function (c) {
        var u = byId[c.id];
        return el('tr', null,
          el('td', { class: 'num' }, String(c.id)),
          el('td', { class: 'id' }, c.name),
          el('td', null, el('span', { class: 'badge ' + c.status }, c.status.replace('_', ' '))),
          el('td', { class: 'id' }, c.disabled_reason || ''),
          el('td', { class: 'num' }, count(u ? u.requests : 0)),
          el('td', { class: 'num' }, count(u ? u.tokens : 0)),
          el('td', { class: 'num' }, usd(u ? u.spend : 0)));
      });
      if (byId.none) {
        rows.push(el('tr', null, el('td', null, '—'), el('td', { class: 'muted' }, 'calls without a recorded channel'),
          el('td', null), el('td', null), el('td', { class: 'num' }, count(byId.none.requests)),
          el('td', { class: 'num' }, count(byId.none.tokens)), el('td', { class: 'num' }, usd(byId.none.spend))));
      }
      show([
        el('div', { class: 'toolbar' }, el('h1', null, 'Overview'), el('span', { class: 'muted' }, 'last 24 hours, UTC'),
          el('button', { type: 'button', class: 'secondary', onclick: render }, 'Refresh')),
        el('div', { class: 'stats' },
          stat('Calls', count(t.requests)),
          stat('Tokens', count(t.tokens)),
          stat('Spend', usd(t.spend)),
          stat('Errors', errorsKnown ? count(usage.errors) : 'not recorded'),
          stat('Holds in flight', count(usage.holds.count) + ' · ' + usd(usage.holds.amount))),
        el('div', { class: 'charts' }, charts),
        el('h2', null, 'Channel health'),
        table(['ID', 'Name', 'Status', 'Why disabled', { text: 'Calls 24 h', cls: 'num' }, { text: 'Tokens', cls: 'num' }, { text: 'Spend', cls: 'num' }],
          rows, 'No channel yet: add one under Channels.')
      ]);
    });
  }

  // ---- Channels ---------------------------------------------------------------------------

  function channelForm(channel, onDone) {
    var editing = !!channel;
    var c = channel || { name: '', type: 'openai', base_url: '', models: [], model_mapping: {}, priority: 0, weight: 1 };
    var f = {
      name: el('input', { required: true, value: c.name, maxlength: 100 }),
      type: el('select', null, CHANNEL_TYPES.map(function (t) {
        var o = el('option', { value: t }, t);
        o.selected = t === c.type;
        return o;
      })),
      base_url: el('input', { value: c.base_url || '', placeholder: 'default for the type' }),
      key: el('input', { type: 'password', autocomplete: 'off', placeholder: editing ? (c.has_key ? 'unchanged' : 'none') : '' }),
      models: el('input', { required: true, value: (c.models || []).join(', '), placeholder: 'gpt-4o, gpt-4o-mini' }),
      mapping: el('textarea', { placeholder: 'public-name=upstream-name, one per line' }),
      priority: el('input', { type: 'number', step: 1, value: c.priority }),
      weight: el('input', { type: 'number', step: 1, min: 0, value: c.weight }),
      rpm: el('input', { type: 'number', step: 1, min: 1, value: c.rpm_limit || '', placeholder: 'no limit' }),
      tpm: el('input', { type: 'number', step: 1, min: 1, value: c.tpm_limit || '', placeholder: 'no limit' })
    };
    f.mapping.value = Object.keys(c.model_mapping || {}).map(function (k) { return k + '=' + c.model_mapping[k]; }).join('\n');
    var error = el('p', { class: 'error', role: 'alert' });
    var submit = el('button', { type: 'submit' }, editing ? 'Save' : 'Create');
    var form = el('form', { class: 'card' },
      el('h2', null, editing ? 'Edit channel ' + c.id : 'New channel'),
      el('div', { class: 'grid-form' },
        el('label', null, 'Name', f.name),
        el('label', null, 'Type', f.type),
        el('label', { class: 'wide' }, 'Base URL (with the version path, e.g. …/v1)', f.base_url),
        el('label', { class: 'wide' }, 'Upstream key' + (editing ? ' (leave empty to keep it)' : ''), f.key),
        el('label', { class: 'wide' }, 'Models (comma-separated; each needs a price)', f.models),
        el('label', { class: 'wide' }, 'Model mapping', f.mapping),
        el('label', null, 'Priority', f.priority),
        el('label', null, 'Weight', f.weight),
        el('label', null, 'Requests per minute', f.rpm),
        el('label', null, 'Tokens per minute', f.tpm)),
      el('div', { class: 'form-buttons' }, submit,
        el('button', { type: 'button', class: 'secondary', onclick: function () { onDone(false); } }, 'Cancel')),
      error);
    form.addEventListener('submit', function (e) {
      e.preventDefault();
      var mapping = {};
      var bad = null;
      f.mapping.value.split('\n').forEach(function (line) {
        if (!line.trim()) { return; }
        var i = line.indexOf('=');
        if (i < 1) { bad = line; return; }
        mapping[line.slice(0, i).trim()] = line.slice(i + 1).trim();
      });
      if (bad !== null) { error.textContent = 'Mapping lines are public=upstream: ' + bad; return; }
      var body = {
        name: f.name.value,
        type: f.type.value,
        models: f.models.value.split(',').map(function (m) { return m.trim(); }).filter(Boolean),
        model_mapping: mapping,
        priority: Number(f.priority.value || 0),
        weight: Number(f.weight.value || 0)
      };
      if (f.base_url.value.trim()) { body.base_url = f.base_url.value.trim(); }
      if (f.key.value) { body.key = f.key.value; }
      // Sent only when set, so servers without channel limits accept the rest.
      if (f.rpm.value) { body.rpm_limit = Number(f.rpm.value); }
      if (f.tpm.value) { body.tpm_limit = Number(f.tpm.value); }
      submit.disabled = true;
      api(editing ? 'PUT' : 'POST', editing ? '/channels/' + c.id : '/channels', body).then(function () {
        onDone(true);
      }).catch(function (err) {
        submit.disabled = false;
        error.textContent = err.message;
      });
    });
    return form;
  }

  function channels(params, mine) {
    loading('Channels');
    return api('GET', '/channels').then(function (list) {
      if (!current(mine)) { return; }
      var formSlot = el('div');
      var message = el('p', { role: 'status' });
      function openForm(channel) {
        formSlot.replaceChildren(channelForm(channel, function (changed) {
          formSlot.replaceChildren();
          if (changed) { render(); }
        }));
        formSlot.scrollIntoView({ block: 'nearest' });
      }
      function act(button, method, path, done) {
        button.disabled = true;
        api(method, path).then(done).catch(function (err) {
          button.disabled = false;
          message.className = 'error';
          message.textContent = err.message;
        });
      }
      var rows = list.map(function (c) {
        var testResult = el('div', { class: 'muted' });
        var enable = c.status === 'enabled'
          ? el('button', { type: 'button', class: 'secondary' }, 'Disable')
          : el('button', { type: 'button', class: 'secondary' }, 'Enable');
        enable.addEventListener('click', function () {
          act(enable, 'POST', '/channels/' + c.id + (c.status === 'enabled' ? '/disable' : '/enable'), render);
        });
        var test = el('button', { type: 'button', class: 'secondary' }, 'Test');
        test.addEventListener('click', function () {
          testResult.textContent = 'Testing…';
          act(test, 'POST', '/channels/' + c.id + '/test', function (r) {
            test.disabled = false;
            testResult.className = r.ok ? 'muted' : 'error';
            testResult.textContent = (r.ok ? 'OK' : 'Failed') + (r.status ? ' (HTTP ' + r.status + ')' : '') +
              ' in ' + r.latency_ms + ' ms' + (r.message ? ': ' + r.message : '');
          });
        });
        var del = el('button', { type: 'button', class: 'danger' }, 'Delete');
        del.addEventListener('click', function () {
          if (window.confirm('Delete channel ' + c.id + ' (' + c.name + ')?')) {
            act(del, 'DELETE', '/channels/' + c.id, render);
          }
        });
        return el('tr', null,
          el('td', { class: 'num' }, String(c.id)),
          el('td', { class: 'id' }, c.name),
          el('td', null, c.type),
          el('td', null, el('span', { class: 'badge ' + c.status }, c.status.replace('_', ' ')),
            c.disabled_reason ? el('div', { class: 'muted' }, c.disabled_reason) : null),
          el('td', { class: 'id' }, c.models.join(', ')),
          el('td', { class: 'num' }, String(c.priority)),
          el('td', { class: 'num' }, String(c.weight)),
          el('td', { class: 'id' }, c.base_url),
          el('td', null, el('div', { class: 'actions' },
            el('button', { type: 'button', class: 'secondary', onclick: function () { openForm(c); } }, 'Edit'),
            enable, test, del), testResult));
      });
      show([
        el('div', { class: 'toolbar' }, el('h1', null, 'Channels'),
          el('button', { type: 'button', onclick: function () { openForm(null); } }, 'New channel')),
        message,
        formSlot,
        table(['ID', 'Name', 'Type', 'Status', 'Models', { text: 'Priority', cls: 'num' }, { text: 'Weight', cls: 'num' }, 'Base URL', 'Actions'],
          rows, 'No channel yet.')
      ]);
    });
  }

  // ---- Prices -----------------------------------------------------------------------------

  var DECIMAL = /^(0|[1-9][0-9]*)(\.[0-9]+)?$/;

  // The JSON body of a price, built from the typed text so the decimal is sent exactly.
  function priceBody(input, output, cached) {
    var fields = [['input', input], ['output', output], ['cached_input', cached]];
    var parts = [];
    for (var i = 0; i < fields.length; i += 1) {
      var v = fields[i][1].trim();
      if (v === '' && fields[i][0] === 'cached_input') { continue; }
      if (!DECIMAL.test(v)) { throw new ApiError(fields[i][0] + ': a decimal number such as 0.15', 400); }
      parts.push('"' + fields[i][0] + '":' + v);
    }
    return '{' + parts.join(',') + '}';
  }

  function prices(params, mine) {
    loading('Prices');
    return api('GET', '/pricing').then(function (list) {
      if (!current(mine)) { return; }
      var message = el('p', { role: 'status' });
      function save(model, input, output, cached, button) {
        var body;
        try { body = priceBody(input, output, cached); } catch (err) {
          message.className = 'error';
          message.textContent = err.message;
          return;
        }
        button.disabled = true;
        api('PUT', '/pricing/' + encodeURIComponent(model), undefined, body).then(render).catch(function (err) {
          button.disabled = false;
          message.className = 'error';
          message.textContent = err.message;
        });
      }
      var rows = Object.keys(list).sort().map(function (model) {
        var p = list[model];
        var row = el('tr');
        function plain() {
          row.replaceChildren(
            el('td', { class: 'id mono' }, model),
            el('td', { class: 'num' }, usd(p.input)),
            el('td', { class: 'num' }, usd(p.output)),
            el('td', { class: 'num' }, usd(p.cached_input)),
            el('td', null, el('button', { type: 'button', class: 'secondary', onclick: editing }, 'Edit')));
        }
        function editing() {
          var i = el('input', { value: String(p.input), inputmode: 'decimal', size: 8 });
          var o = el('input', { value: String(p.output), inputmode: 'decimal', size: 8 });
          var c = el('input', { value: String(p.cached_input), inputmode: 'decimal', size: 8 });
          var b = el('button', { type: 'button' }, 'Save');
          b.addEventListener('click', function () { save(model, i.value, o.value, c.value, b); });
          row.replaceChildren(el('td', { class: 'id mono' }, model), el('td', null, i), el('td', null, o), el('td', null, c),
            el('td', null, el('div', { class: 'actions' }, b, el('button', { type: 'button', class: 'secondary', onclick: plain }, 'Cancel'))));
        }
        plain();
        return row;
      });
      var nm = el('input', { required: true, placeholder: 'model name' });
      var ni = el('input', { required: true, inputmode: 'decimal', placeholder: '0.15' });
      var no = el('input', { required: true, inputmode: 'decimal', placeholder: '0.6' });
      var nc = el('input', { inputmode: 'decimal', placeholder: 'same as input' });
      var add = el('button', { type: 'submit' }, 'Set price');
      var form = el('form', { class: 'card' }, el('h2', null, 'Set a price'),
        el('div', { class: 'grid-form' }, el('label', null, 'Model', nm), el('label', null, 'Input (USD / 1M tokens)', ni),
          el('label', null, 'Output (USD / 1M tokens)', no), el('label', null, 'Cached input (USD / 1M tokens)', nc)),
        el('div', { class: 'form-buttons' }, add));
      form.addEventListener('submit', function (e) {
        e.preventDefault();
        save(nm.value, ni.value, no.value, nc.value, add);
      });
      show([
        el('div', { class: 'toolbar' }, el('h1', null, 'Prices'), el('span', { class: 'muted' }, 'USD per 1M tokens')),
        message,
        table(['Model', { text: 'Input', cls: 'num' }, { text: 'Output', cls: 'num' }, { text: 'Cached input', cls: 'num' }, ''], rows),
        form
      ]);
    });
  }

  // ---- Users ------------------------------------------------------------------------------

  function pager(path, params, pagination, noun) {
    var p = pagination;
    function to(page) {
      var next = {};
      params.forEach(function (v, k) { next[k] = v; });
      next.page = page;
      return hash(path, next);
    }
    var total = p.total_capped ? 'more than ' + count(p.total) : count(p.total);
    return el('div', { class: 'pager' },
      p.page > 1 ? el('a', { href: to(p.page - 1) }, '← Previous') : null,
      el('span', { class: 'muted' }, 'Page ' + p.page + ' of ' + Math.max(p.total_page, 1) + ' · ' + total + ' ' + noun),
      p.page < p.total_page ? el('a', { href: to(p.page + 1) }, 'Next →') : null,
      p.total_capped ? el('span', { class: 'notice' }, 'Narrow the filter to reach older rows.') : null);
  }

  function users(params, mine) {
    loading('Users');
    var qs = new URLSearchParams();
    ['query', 'page', 'page_size'].forEach(function (k) { if (params.get(k)) { qs.set(k, params.get(k)); } });
    return api('GET', '/users?' + qs.toString()).then(function (data) {
      if (!current(mine)) { return; }
      var search = el('input', { type: 'search', value: params.get('query') || '', placeholder: 'external id or username', 'aria-label': 'Search users' });
      var form = el('form', { class: 'toolbar' }, el('h1', null, 'Users'), search, el('button', { type: 'submit' }, 'Search'));
      form.addEventListener('submit', function (e) {
        e.preventDefault();
        location.hash = hash('/users', { query: search.value });
      });
      var rows = data.users.map(function (u) {
        return el('tr', null,
          el('td', { class: 'num' }, String(u.user_id)),
          el('td', { class: 'id' }, el('a', { href: '#/users/' + encodeURIComponent(String(u.user_id)) }, u.external_user_id)),
          el('td', { class: 'id' }, u.username),
          el('td', { class: 'mono' }, u.platform),
          el('td', { class: 'num' }, usd(u.current_balance)),
          el('td', { class: 'num' }, usd(u.held_balance)),
          el('td', { class: 'num' }, usd(u.used_balance)),
          el('td', { class: 'num' }, count(u.total_requests)),
          el('td', { class: 'nowrap' }, utc(u.created_at)));
      });
      show([
        form,
        table(['ID', 'External id', 'Username', 'Platform', { text: 'Balance', cls: 'num' }, { text: 'Held', cls: 'num' },
          { text: 'Spent', cls: 'num' }, { text: 'Calls', cls: 'num' }, 'Created (UTC)'], rows, 'No user matches.'),
        pager('/users', params, data.pagination, 'users')
      ]);
    });
  }

  function userPage(id, mine) {
    loading('User');
    return api('GET', '/users/' + encodeURIComponent(id)).then(function (d) {
      if (!current(mine)) { return; }
      var u = d.user;
      var facts = [
        ['User id', String(u.user_id)], ['External id', u.external_user_id], ['Username', u.username],
        ['Display name', u.display_name], ['Email', u.email], ['Phone', u.phone], ['Login type', u.login_type],
        ['Platform', u.platform], ['Created (UTC)', utc(u.created_at)]
      ];
      var keys = d.tokens.map(function (t) {
        return el('tr', null,
          el('td', { class: 'num' }, String(t.token_id)),
          el('td', { class: 'id' }, t.token_name),
          el('td', { class: 'mono nowrap' }, t.access_key),
          el('td', null, el('span', { class: 'badge ' + (t.status === 1 ? 'enabled' : 'bad') }, TOKEN_STATUS[t.status] || String(t.status))),
          el('td', { class: 'num' }, count(t.remain_quota)),
          el('td', { class: 'num' }, t.quota_limit === null ? 'none' : count(t.quota_limit)),
          el('td', { class: 'num' }, count(t.used_quota)),
          el('td', { class: 'nowrap' }, utc(t.created_time)),
          el('td', { class: 'nowrap' }, utc(t.expired_time)));
      });
      var usage = Object.keys(d.model_usage).sort().map(function (m) {
        var x = d.model_usage[m];
        return el('tr', null, el('td', { class: 'id mono' }, m), el('td', { class: 'num' }, count(x.requests)),
          el('td', { class: 'num' }, count(x.prompt_tokens)), el('td', { class: 'num' }, count(x.completion_tokens)),
          el('td', { class: 'num' }, count(x.quota)), el('td', { class: 'num' }, usd(x.spend)));
      });
      show([
        el('div', { class: 'toolbar' }, el('h1', null, 'User ', u.external_user_id),
          el('a', { href: hash('/logs', { user_id: u.user_id }) }, 'Logs of this user')),
        el('div', { class: 'stats' },
          stat('Balance', usd(u.current_balance)),
          stat('Held by calls in flight', usd(u.held_balance)),
          stat('Can still spend', usd(u.balance_capacity)),
          stat('Spent', usd(u.used_balance)),
          stat('Calls', count(u.total_requests))),
        el('div', { class: 'card' }, el('dl', { class: 'facts' }, facts.map(function (f) {
          return [el('dt', null, f[0]), el('dd', null, f[1] || '—')];
        }))),
        el('h2', null, 'Keys'),
        table(['ID', 'Name', 'Key', 'Status', { text: 'Can spend (quota)', cls: 'num' }, { text: 'Cap', cls: 'num' },
          { text: 'Used', cls: 'num' }, 'Created', 'Expires'], keys, 'No key.'),
        el('h2', null, 'Usage per model'),
        table(['Model', { text: 'Calls', cls: 'num' }, { text: 'Prompt', cls: 'num' }, { text: 'Completion', cls: 'num' },
          { text: 'Quota', cls: 'num' }, { text: 'Spend', cls: 'num' }], usage, 'No call yet.')
      ]);
    });
  }

  // ---- Logs -------------------------------------------------------------------------------

  var LOG_FILTERS = ['start_date', 'end_date', 'model_name', 'type', 'user_id', 'channel_id', 'page', 'page_size'];

  function logs(params, mine) {
    loading('Logs');
    var qs = new URLSearchParams();
    LOG_FILTERS.forEach(function (k) { if (params.get(k)) { qs.set(k, params.get(k)); } });
    var f = {
      start_date: el('input', { type: 'date', value: params.get('start_date') || '' }),
      end_date: el('input', { type: 'date', value: params.get('end_date') || '' }),
      model_name: el('input', { value: params.get('model_name') || '', placeholder: 'part of the name' }),
      type: el('select', null, [['', 'all'], ['consume', 'calls'], ['topup', 'top-ups']].map(function (o) {
        var opt = el('option', { value: o[0] }, o[1]);
        opt.selected = (params.get('type') || '') === o[0];
        return opt;
      })),
      user_id: el('input', { inputmode: 'numeric', value: params.get('user_id') || '' }),
      channel_id: el('input', { inputmode: 'numeric', value: params.get('channel_id') || '' }),
      page_size: el('select', null, ['20', '50', '100'].map(function (n) {
        var opt = el('option', { value: n }, n + ' a page');
        opt.selected = (params.get('page_size') || '20') === n;
        return opt;
      }))
    };
    var form = el('form', { class: 'card' }, el('div', { class: 'grid-form filters' },
      el('label', null, 'From (UTC)', f.start_date), el('label', null, 'To (UTC, inclusive)', f.end_date),
      el('label', null, 'Model', f.model_name), el('label', null, 'Type', f.type),
      el('label', null, 'User id', f.user_id), el('label', null, 'Channel id', f.channel_id),
      el('label', null, 'Rows', f.page_size)),
    el('div', { class: 'form-buttons' }, el('button', { type: 'submit' }, 'Filter'),
      el('a', { href: '#/logs' }, 'Clear')));
    form.addEventListener('submit', function (e) {
      e.preventDefault();
      var next = {};
      Object.keys(f).forEach(function (k) { next[k] = f[k].value.trim(); });
      if (next.page_size === '20') { next.page_size = ''; }
      location.hash = hash('/logs', next);
    });
    return api('GET', '/logs?' + qs.toString()).then(function (data) {
      if (!current(mine)) { return; }
      var rows = data.logs.map(function (r) {
        var who = r.external_user_id === null
          ? String(r.user_id)
          : el('a', { href: '#/users/' + encodeURIComponent(String(r.user_id)) }, r.external_user_id);
        return el('tr', null,
          el('td', { class: 'nowrap' }, r.time),
          el('td', null, r.type),
          el('td', { class: 'id' }, who),
          el('td', { class: 'id mono' }, r.model),
          el('td', { class: 'num' }, r.channel_id === null ? '—' : String(r.channel_id)),
          el('td', { class: 'num' }, count(r.prompt_tokens) + ' / ' + count(r.completion_tokens)),
          el('td', { class: 'num' }, usd(r.spend)),
          el('td', null, r.type === 'consume' ? (r.is_stream ? 'stream' : 'json') : ''),
          el('td', { class: 'num' }, r.type === 'consume' ? count(r.latency_ms) + ' ms' : ''),
          el('td', { class: 'id mono' }, r.request_id));
      });
      show([
        el('div', { class: 'toolbar' }, el('h1', null, 'Logs'), el('span', { class: 'muted' }, 'newest first, times in UTC')),
        form,
        data.searched_from ? el('p', { class: 'notice' }, 'The model (or channel of a user) filter was checked on rows back to ' +
          data.searched_from + ' UTC only; set an earlier “To” date to search further back.') : null,
        table(['Time', 'Type', 'User', 'Model', { text: 'Channel', cls: 'num' }, { text: 'Prompt / completion', cls: 'num' },
          { text: 'Amount', cls: 'num' }, 'Mode', { text: 'Latency', cls: 'num' }, 'Request / payment id'], rows, 'No row matches.'),
        pager('/logs', params, data.pagination, 'rows')
      ]);
    }).catch(function (err) {
      // A refused filter keeps the form, so it can be corrected.
      if (current(mine) && err.status === 400) { show([el('h1', null, 'Logs'), form, errorBox(err)]); return; }
      throw err;
    });
  }

  render();
}());
