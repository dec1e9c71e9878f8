"""Look and client-side behaviour of the app: CSS, theme, and the Plotly click bridge.

Gradio's ``gr.Plot`` has no click event, so a few lines of JavaScript listen
to Plotly's own ``plotly_click`` on the correspondence figure and write
"side:token:nonce" into a hidden textbox; its change event then highlights
that patch on the server. Anything that is not a patch marker is ignored.
The dataset explorer's embedding map sends "image index:nonce" the same way.
In Gradio 6 css/theme/js are arguments of ``launch()``; see ``launch_options``.
"""

from __future__ import annotations

import json

import gradio as gr

CORRESPONDENCE_PLOT_ID = "correspondence-plot"
CLICK_BRIDGE_ID = "patch-click-bridge"
EMBEDDING_PLOT_ID = "embedding-map"
EMBEDDING_BRIDGE_ID = "embedding-click-bridge"

# Scroll the verdict into view (only as far as needed) once a pair is verified: after clicking an example or
# opening a pair from another tab, the eye is elsewhere, and on a phone the verdict is below the inputs.
SHOW_VERDICT_JS = (
    "() => { document.querySelector('#pair-context-area')?.scrollIntoView({block: 'nearest'}); "
    "document.querySelector('#verdict-area')?.scrollIntoView({block: 'nearest'}); }"
)

CSS = """
.gradio-container { max-width: 1500px !important; margin: auto; }
@media (max-width: 600px) { .js-plotly-plot .modebar-container { display: none !important; } }  /* it covered the panel labels */
@media (max-width: 600px) { .gradio-container { padding-left: 6px !important; padding-right: 6px !important; } }
.js-plotly-plot, .plot-container { max-width: 100%; }
/* phones: tab labels wrap onto a second line instead of widening the page; wide tables scroll inside */
.tab-wrapper, .tab-container { flex-wrap: wrap !important; height: auto !important; max-width: 100%; }
.tab-container button { flex: 0 1 auto; }
/* Gradio moves tabs that do not fit one line into an unlabelled "..." menu, judged by the widths of a hidden copy of
   the tab bar; shrinking that copy keeps every tab in the bar, where the rule above wraps it onto a second line */
.tab-container.visually-hidden button { font-size: 1px !important; padding: 0 !important; min-width: 0 !important; }
.overflow-menu { display: none !important; }
.table-wrap, .table-container { max-width: 100%; overflow-x: auto; }
/* captions under each thumbnail, not over it: Gradio lays them over the picture, where a file name and a distance
   covered half a signature on a phone */
#refset-gallery .grid-container { padding-top: 2.4em !important; }
@media (max-width: 600px) { #refset-gallery .grid-container { padding-top: 3.6em !important; } }
#refset-gallery .thumbnail-item { aspect-ratio: auto !important; height: auto !important; display: flex; flex-direction: column; }
#refset-gallery .thumbnail-item img { height: 110px !important; width: 100% !important; object-fit: contain; flex: none; }
#refset-gallery .caption-label { position: static !important; max-width: 100% !important; white-space: normal !important;
  overflow: visible !important; text-overflow: clip !important; overflow-wrap: anywhere; text-align: left; }
/* a wide table scrolls, not the page: the page's side padding is 2 x 32 px on a phone (a percentage would not bound
   the column, which takes the width of its widest child) */
@media (max-width: 600px) { .block:has(table) { max-width: calc(100vw - 64px); overflow-x: auto; } }
@media (max-width: 600px) { #refset-gallery .grid-container { grid-template-columns: repeat(2, minmax(0, 1fr)) !important; } }
#dsn-title h1 { margin-bottom: 0.1em; }
#dsn-title p { margin-top: 0.2em; color: var(--body-text-color-subdued); }
.dsn-untrained { background: #fdecea; border: 2px solid #c0392b; color: #8e1b10; border-radius: 8px;
  padding: 10px 14px; font-weight: 600; font-size: 1.05em; }
.dsn-verdict { border-radius: 10px; padding: 12px 16px; display: flex; gap: 24px; align-items: baseline; flex-wrap: wrap; }
.dsn-verdict .word { font-size: 1.8em; font-weight: 700; letter-spacing: 0.02em; }
.dsn-verdict .facts { color: #333; font-size: 1.0em; }
.dsn-pair-context { background: #eef3fb; border: 1px solid #9db4d8; border-radius: 8px; padding: 6px 12px; margin-bottom: 6px; }
.dsn-input-warning { flex-basis: 100%; color: #8a4b00; background: #fff4e5; border-radius: 6px; padding: 6px 10px; }
.dsn-genuine { background: #e8f6ee; border: 1px solid #2e8b57; }
.dsn-genuine .word { color: #1e6b41; }
.dsn-forged { background: #fdf0e6; border: 1px solid #d35400; }
.dsn-forged .word { color: #a04000; }
.dsn-refused { background: #fdecea; border: 1px solid #c0392b; color: #5a1a12; }
.dsn-waiting { background: var(--block-background-fill); border: 1px dashed var(--border-color-primary); color: var(--body-text-color-subdued); }
.dsn-note { font-size: 0.92em; color: var(--body-text-color-subdued); }
"""

# At phone width (<= PHONE_MAX_PX) every Plotly figure is laid out again in the browser after Plotly draws it
# (the server builds one figure for every screen): titles and panel labels wrap instead of being cut, legends go
# below the panels, and the toolbar is hidden (CSS). Turning colour bars horizontal left Plotly drawing the old bar too.
PHONE_MAX_PX = 600
PHONE_LAYOUT_JS = f"""
  const wrapText = (text, width) => text.split('<br>').map((line) => {{
    const lines = []; let current = '';
    for (const word of line.split(' ')) {{
      const plain = (current + ' ' + word).replace(/<[^>]+>/g, '');
      if (current && plain.length > width) {{ lines.push(current); current = word; }} else {{ current = current ? current + ' ' + word : word; }}
    }}
    lines.push(current);
    return lines.join('<br>');
  }}).join('<br>');
  const phoneLayout = (gd) => {{
    if (window.innerWidth > {PHONE_MAX_PX} || !window.Plotly || !gd.layout || (gd.layout.meta || {{}}).dsnPhone) return;
    const L = gd.layout, width = gd.clientWidth || window.innerWidth - 64, u = {{}};
    const chars = Math.max(20, Math.floor(width / 8.5));
    const title = L.title && (typeof L.title === 'string' ? L.title : L.title.text);
    let top = 64;  // below the component's label badge
    if (title) {{
      const text = wrapText(title, chars);
      u['title.text'] = text; u['title.font.size'] = 14; u['title.x'] = 0.02;
      top = 56 + 19 * text.split('<br>').length;
    }}
    const bottom = 50;
    let height = (L.height || gd.clientHeight) + (top - 40) + bottom;
    const panels = Object.keys(L).filter((k) => /^xaxis[0-9]*$/.test(k) && L[k].domain)
      .map((k) => ({{ n: k.slice(5), x: L[k].domain, y: (L['yaxis' + k.slice(5)] || {{}}).domain }}))
      .filter((p) => p.y);
    const annotations = (L.annotations || []).map((a) => Object.assign({{}}, a));
    if (panels.length > 1) {{  // a grid of image panels: one panel per row, as wide as the phone allows
      panels.sort((a, b) => (b.y[1] - a.y[1]) || (a.x[0] - b.x[0]));
      const heading = 24, slot = (width - 16) + heading;  // square panels at full width, each under its label
      height = top + bottom + panels.length * slot;
      const paper = height - top - bottom;
      annotations.forEach((a) => {{  // subplot titles go with their panel (Plotly may have narrowed the old domains)
        if (a.xref !== 'paper' || a.yref !== 'paper' || a.yanchor !== 'bottom') return;
        const gap = (p) => 2 * Math.abs(a.x - (p.x[0] + p.x[1]) / 2) + Math.abs(a.y - p.y[1]);
        a.panel = panels.reduce((best, p) => (gap(p) < gap(best) ? p : best));
      }});
      panels.forEach((p, i) => {{
        const upper = 1 - i * slot / paper, lower = 1 - (i + 1) * slot / paper;
        u['xaxis' + p.n + '.domain'] = [0, 1];
        u['yaxis' + p.n + '.domain'] = [Math.max(0, lower), upper - heading / paper];
        p.top = upper - heading / paper;
      }});
      annotations.forEach((a) => {{
        if (a.panel) {{ a.x = 0.5; a.y = a.panel.top; a.xanchor = 'center'; }}
        delete a.panel;
      }});
      const axis = L.coloraxis;
      if (axis && axis.colorbar) {{  // the colour bar would take a third of the width: it becomes a line under the title
        const scale = String((axis.colorbar.title || {{}}).text || 'value').replace(/<br>/g, ' ');
        const range = axis.cmax !== undefined ? `, ${{+(+axis.cmin || 0).toPrecision(2)}} to ${{+(+axis.cmax).toPrecision(2)}}` : '';
        u['coloraxis.showscale'] = false;
        const text = wrapText((u['title.text'] || title || '') + '<br><i>colour: ' + scale + range + '</i>', chars);
        u['title.text'] = text;
        top = 56 + 19 * text.split('<br>').length;
        height = top + bottom + panels.length * slot;
      }}
    }}
    annotations.forEach((a) => {{ a.text = wrapText(String(a.text || ''), Math.floor(chars / (panels.length > 1 ? 1 : 2))); }});
    if (annotations.length) u.annotations = annotations;
    // an explicit width keeps the height: Plotly's resize drops a height given without one
    Object.assign(u, {{ width: width, height: height, 'margin.t': top, 'margin.b': bottom, 'margin.l': 8, 'margin.r': 8,
      'legend.orientation': 'h', 'legend.x': 0, 'legend.y': -0.02, 'legend.yanchor': 'top' }});
    // one full redraw with the new layout
    const layout = JSON.parse(JSON.stringify(gd.layout));
    for (const [path, value] of Object.entries(u)) {{
      const keys = path.split('.'); let node = layout;
      keys.slice(0, -1).forEach((k) => {{ node = node[k] = (node[k] && typeof node[k] === 'object') ? node[k] : {{}}; }});
      node[keys[keys.length - 1]] = value;
    }}
    layout.meta = Object.assign({{}}, layout.meta, {{ dsnPhone: true }});
    window.Plotly.react(gd, gd.data, layout);
  }};
  const phoneAll = () => document.querySelectorAll('.js-plotly-plot').forEach((gd) => {{
    if (typeof gd.on === 'function' && !gd.__dsnPhoneHook) {{
      gd.__dsnPhoneHook = true;
      gd.on('plotly_afterplot', () => phoneLayout(gd));
    }}
    phoneLayout(gd);
  }});
"""

# Slow actions: the button, and the text its answer writes. The browser measures the wait from the press to the
# answer (queue, computation and transfer), which is what the visitor lived through; the server can only time its part.
TIMED_ACTIONS = {
    "attr-run": "attr-stats",
    "grid-run": "grid-estimate",
    "sanity-run": "sanity-text",
    "faith-run": "faith-text",
    "plan-run": "plan-text",
    "refset-compare": "refset-decision",
    "dataset-evaluate": "dataset-status",
}
WAITED_JS = f"""
  const timedActions = {json.dumps(TIMED_ACTIONS)};
  const pressed = {{}};
  // the answer's own text: the rendered Markdown or HTML inside the block, not the block's status timer
  const answerBox = (id) => ['.prose', '.md', '.html-container'].map((c) => document.querySelector('#' + id + ' ' + c)).find(Boolean);
  const answerText = (id) => ((answerBox(id) || {{innerText: ''}}).innerText || '').replace(/ · you waited .*$/s, '');
  document.addEventListener('click', (event) => {{
    const button = event.target.closest && event.target.closest('button');
    if (button && timedActions[button.id]) pressed[timedActions[button.id]] = [performance.now(), answerText(timedActions[button.id])];
    if (button && button.id === 'verify-button') for (const key of Object.keys(pressed)) delete pressed[key];
  }}, true);
  const showWaits = () => {{
    for (const [id, [start, before]] of Object.entries(pressed)) {{
      const box = answerBox(id);
      if (!box || box.querySelector('.dsn-waited') || answerText(id) === before || !answerText(id).trim()) continue;
      const waited = document.createElement('span');
      waited.className = 'dsn-waited';
      waited.textContent = ` · you waited ${{((performance.now() - start) / 1000).toFixed(1)}} s (from the press: queue, computation and transfer)`;
      box.appendChild(waited);
      delete pressed[id];
    }}
  }};
"""

# Runs once on page load. A MutationObserver re-attaches the listener whenever
# Gradio re-renders the figure into a new element. Plotly reports the nearest
# point, which may be the end of a match line lying exactly on a patch marker,
# so the patch is looked up by position among the "... patches" marker traces.
CLICK_JS = f"""
() => {{
{PHONE_LAYOUT_JS}
{WAITED_JS}
  const patchAt = (gd, x, y) => {{
    for (const trace of (gd._fullData || gd.data || [])) {{
      const name = trace.name || '';
      if (!name.endsWith(' patches') || !trace.customdata) continue;
      for (let i = 0; i < trace.x.length; i++) {{
        if (Math.abs(trace.x[i] - x) < 1e-6 && Math.abs(trace.y[i] - y) < 1e-6) {{
          return [name.split(' ')[0], trace.customdata[i]];
        }}
      }}
    }}
    return null;
  }};
  const attach = () => {{
    document.querySelectorAll('#{CORRESPONDENCE_PLOT_ID} .js-plotly-plot').forEach((gd) => {{
      if (gd.__dsnClick || typeof gd.on !== 'function') return;
      gd.__dsnClick = true;
      gd.on('plotly_click', (event) => {{
        const point = event && event.points && event.points[0];
        if (!point) return;
        const found = patchAt(gd, point.x, point.y);
        const box = document.querySelector('#{CLICK_BRIDGE_ID} textarea, #{CLICK_BRIDGE_ID} input');
        if (!found || !box) return;
        box.value = found[0] + ':' + found[1] + ':' + Date.now();
        box.dispatchEvent(new Event('input', {{ bubbles: true }}));
      }});
    }});
  }};
  // The dataset explorer's embedding map: a point's customdata is its image index.
  const attachMap = () => {{
    document.querySelectorAll('#{EMBEDDING_PLOT_ID} .js-plotly-plot').forEach((gd) => {{
      if (gd.__dsnClick || typeof gd.on !== 'function') return;
      gd.__dsnClick = true;
      gd.on('plotly_click', (event) => {{
        const point = event && event.points && event.points[0];
        const box = document.querySelector('#{EMBEDDING_BRIDGE_ID} textarea, #{EMBEDDING_BRIDGE_ID} input');
        if (!point || point.customdata === undefined || !box) return;
        box.value = point.customdata + ':' + Date.now();
        box.dispatchEvent(new Event('input', {{ bubbles: true }}));
      }});
    }});
  }};
  new MutationObserver(() => {{ attach(); attachMap(); phoneAll(); showWaits(); }}).observe(document.body, {{ childList: true, subtree: true }});
  attach();
  attachMap();
  phoneAll();
}}
"""


def theme() -> gr.themes.Base:
    """Local fonts only: the app must look right offline, with no request to a font CDN."""
    return gr.themes.Soft(
        primary_hue="indigo",
        secondary_hue="slate",
        font=["Inter", "Helvetica Neue", "Arial", "sans-serif"],
        font_mono=["ui-monospace", "Menlo", "Consolas", "monospace"],
    )
