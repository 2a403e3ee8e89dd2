/**
 * The dashboard's page and style sheet. Kept as string constants rather than asset files so that
 * `tsc` alone produces a working server from a fresh clone (no copy step to forget), and served
 * from this origin only: the page loads nothing from elsewhere (the CSP below enforces it).
 */

/** Everything the page may load comes from the server itself; inline script is refused too. */
export const DASHBOARD_CSP = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

export const DASHBOARD_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>halo dashboard</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/dashboard/app.css">
<script type="module" src="/dashboard/app.js"></script>
</head>
<body>
<header>
  <h1>halo</h1>
  <span id="model">…</span>
  <span id="connection" class="badge">connecting</span>
  <button id="set-key" type="button">API key</button>
</header>
<main>
  <section>
    <h2>Devices</h2>
    <table id="devices"><thead><tr><th>#</th><th>name</th><th>attention ms/group</th><th>FFN ms/group</th><th>memory budget</th><th>status</th></tr></thead><tbody></tbody></table>
    <h2>Links</h2>
    <table id="links"><thead><tr><th>worker</th><th>address</th><th>state</th><th>loss</th><th>late</th><th>RTT ms</th><th>jitter ms</th></tr></thead><tbody></tbody></table>
    <p id="no-links" class="note" hidden>Single device: no links.</p>
  </section>
  <section>
    <h2>Placement <small>(rows: layers, cells: groups, colour: device)</small></h2>
    <div id="legend"></div>
    <h3>attention</h3><canvas id="placement-attention" width="480" height="120"></canvas>
    <h3>FFN</h3><canvas id="placement-ffn" width="480" height="120"></canvas>
  </section>
  <section>
    <h2>Per-token latency <small>(<span class="swatch compute"></span>compute <span class="swatch sync"></span>sync wait)</small></h2>
    <canvas id="token-chart" width="480" height="160" data-samples="0"></canvas>
    <p id="token-summary" class="note">no tokens yet</p>
    <h2>Dropped groups <small>(per second)</small></h2>
    <canvas id="dropped-chart" width="480" height="100" data-samples="0"></canvas>
    <p id="dropped-summary" class="note">0 dropped</p>
  </section>
  <section>
    <h2>Chat</h2>
    <div id="chat-log"></div>
    <form id="chat-form">
      <input id="chat-input" autocomplete="off" placeholder="Say something…">
      <button id="chat-send" type="submit">Send</button>
    </form>
  </section>
</main>
</body>
</html>
`;

export const DASHBOARD_CSS = `
:root { --fg: #1d2330; --muted: #6b7280; --line: #d9dde5; --bg: #f6f7f9; --card: #fff; --compute: #3b82f6; --sync: #f59e0b; --drop: #dc2626; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.4 system-ui, sans-serif; color: var(--fg); background: var(--bg); }
header { display: flex; gap: 12px; align-items: center; padding: 10px 16px; background: var(--card); border-bottom: 1px solid var(--line); }
header h1 { margin: 0; font-size: 18px; }
main { display: grid; grid-template-columns: repeat(auto-fit, minmax(440px, 1fr)); gap: 16px; padding: 16px; }
section { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 12px 16px; min-width: 0; }
h2 { font-size: 15px; margin: 8px 0; } h3 { font-size: 13px; margin: 6px 0 2px; color: var(--muted); }
small, .note { color: var(--muted); font-weight: normal; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th, td { text-align: left; padding: 3px 6px; border-bottom: 1px solid var(--line); }
canvas { width: 100%; border: 1px solid var(--line); border-radius: 4px; }
.badge { padding: 2px 8px; border-radius: 10px; background: var(--line); font-size: 12px; }
.badge.live { background: #d1fae5; } .badge.down { background: #fee2e2; }
.status-active { color: #047857; } .status-lost, .status-ready { color: var(--drop); font-weight: bold; }
.swatch { display: inline-block; width: 10px; height: 10px; margin: 0 3px 0 8px; border-radius: 2px; }
.swatch.compute { background: var(--compute); } .swatch.sync { background: var(--sync); }
#legend span { margin-right: 10px; }
#chat-log { height: 220px; overflow-y: auto; border: 1px solid var(--line); border-radius: 4px; padding: 6px; margin-bottom: 8px; }
#chat-log p { margin: 4px 0; white-space: pre-wrap; }
#chat-log .user { color: var(--muted); } #chat-log .error { color: var(--drop); }
#chat-form { display: flex; gap: 8px; } #chat-input { flex: 1; padding: 6px; }
button { padding: 4px 10px; }
`;
