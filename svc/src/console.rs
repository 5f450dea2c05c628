//! The operator consoles' building blocks (the stream manager's page and lbd's reduced one): an HTML page shell
//! with its CSS and script inlined (no CDN: consoles run on networks without internet), escaping, tables, state
//! badges and line charts drawn as inline SVG.
//!
//! Why hand-drawn SVG rather than a chart library: a console needs a few line charts with a time axis; drawing
//! polylines and ticks is about a hundred lines, renders on the server (the page works with scripts off and in
//! a headless browser), and adds no asset to embed or dependency to audit.

use std::fmt::Write as _;

/// Escapes text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A coloured badge for a state word (up, down, draining, maintenance, drained, active, raised...).
pub fn badge(state: &str) -> String {
    let class = match state {
        "up" | "active" | "ok" | "ingesting" | "yes" | "cleared" => "ok",
        "down" | "raised" | "critical" | "no" | "failed" => "bad",
        "draining" | "drained" | "maintenance" | "standby" | "starting" | "unknown" | "unresolved" => "warn",
        _ => "",
    };
    format!("<span class=\"b {class}\">{}</span>", esc(state))
}

/// A table: the header cells, then rows of cells that are already HTML (escape text with [`esc`]).
pub fn table(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut s = String::from("<div class=\"tw\"><table><thead><tr>");
    for h in head {
        let _ = write!(s, "<th>{}</th>", esc(h));
    }
    s.push_str("</tr></thead><tbody>");
    if rows.is_empty() {
        let _ = write!(s, "<tr><td colspan=\"{}\" class=\"dim\">none</td></tr>", head.len());
    }
    for r in rows {
        s.push_str("<tr>");
        for c in r {
            let _ = write!(s, "<td>{c}</td>");
        }
        s.push_str("</tr>");
    }
    s.push_str("</tbody></table></div>");
    s
}

/// lbd's services and their reals with health, drain, weight, last check, active flows and traffic, as lbd's
/// console and the stream manager's console (one per LB node) show them; `label` names a real (the manager puts the
/// edge's name there).
pub fn services_table(list: &[api_types::lb::ServiceView], label: impl Fn(std::net::IpAddr) -> String) -> String {
    let mut rows = Vec::new();
    for s in list {
        rows.push(vec![
            format!("<b>{} {}</b>", s.proto, esc(&std::net::SocketAddr::new(s.vip, s.port).to_string())),
            badge(if s.usable_reals > 0 { "up" } else { "down" }),
            format!("{} of {} usable", s.usable_reals, s.reals.len()),
            esc(&s.check),
            s.active_flows.to_string(),
            si(s.counters.packets as f64),
            si(s.counters.bytes as f64) + "B",
        ]);
        for r in &s.reals {
            rows.push(vec![
                format!("&nbsp;&nbsp;{} {}", esc(&r.addr.to_string()), esc(&label(r.addr))),
                badge(if r.drained { "drained" } else { &r.state }),
                format!("weight {}", r.weight),
                esc(r.last_check.as_deref().unwrap_or("")),
                r.active_flows.to_string(),
                si(r.counters.packets as f64),
                si(r.counters.bytes as f64) + "B",
            ]);
        }
    }
    table(&["service / real", "state", "reals / weight", "check", "active flows", "packets", "bytes"], &rows)
}

/// One line of a chart.
pub struct Line<'a> {
    pub label: &'a str,
    /// (unix seconds, value), oldest first.
    pub points: &'a [(u64, f64)],
}

const COLOURS: [&str; 8] = ["#2a7ae2", "#e2542a", "#2ab07a", "#b02ae2", "#e2b02a", "#2ad0e2", "#777777", "#e22a8a"];

/// Human units: 1.2k, 3.4M, 5.6G.
pub fn si(v: f64) -> String {
    let a = v.abs();
    let (d, u) = if a >= 1e9 {
        (1e9, "G")
    } else if a >= 1e6 {
        (1e6, "M")
    } else if a >= 1e3 {
        (1e3, "k")
    } else {
        (1.0, "")
    };
    let x = v / d;
    if x.fract() == 0.0 || x.abs() >= 100.0 {
        format!("{x:.0}{u}")
    } else {
        format!("{x:.1}{u}")
    }
}

/// A line chart over `[from, to]` (unix seconds) as inline SVG, with a y axis from 0, time ticks (UTC) and a
/// legend. Every point is a vertex of a `<polyline data-series=LABEL>`, so a test can count them.
pub fn chart(title: &str, unit: &str, from: u64, to: u64, lines: &[Line<'_>]) -> String {
    let (w, h, left, right, top, bottom) = (640.0, 220.0, 52.0, 8.0, 22.0, 34.0);
    let max = lines.iter().flat_map(|l| l.points.iter().map(|p| p.1)).fold(0.0f64, f64::max);
    let ymax = nice_ceiling(max);
    let span = (to.saturating_sub(from)).max(1) as f64;
    let x = |t: u64| left + (t.saturating_sub(from) as f64 / span) * (w - left - right);
    let y = |v: f64| top + (1.0 - v / ymax) * (h - top - bottom);
    let mut s = format!(
        "<figure class=\"chart\"><svg viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"{t}\" preserveAspectRatio=\"xMidYMid meet\">\
         <text x=\"{left}\" y=\"14\" class=\"ct\">{t} ({u})</text>",
        t = esc(title),
        u = esc(unit)
    );
    for k in 0..=4 {
        let v = ymax * k as f64 / 4.0;
        let yy = y(v);
        let _ = write!(
            s,
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\" class=\"grid\"/><text x=\"{}\" y=\"{:.1}\" class=\"ax\" text-anchor=\"end\">{}</text>",
            w - right,
            left - 4.0,
            yy + 3.0,
            si(v)
        );
    }
    for k in 0..=4 {
        let t = from + (span as u64) * k / 4;
        let xx = x(t);
        let hm = format!("{:02}:{:02}", (t / 3600) % 24, (t / 60) % 60);
        let label = if span > 2.0 * 86_400.0 { format!("{}d {hm}", (to - t) / 86_400) } else { hm };
        let _ = write!(
            s,
            "<text x=\"{xx:.1}\" y=\"{}\" class=\"ax\" text-anchor=\"middle\">{}</text>",
            h - bottom + 14.0,
            esc(&label)
        );
    }
    for (i, l) in lines.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let pts: Vec<String> = l.points.iter().map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v))).collect();
        let _ = write!(
            s,
            "<polyline data-series=\"{}\" data-points=\"{}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\" points=\"{}\"/>",
            esc(l.label),
            l.points.len(),
            pts.join(" ")
        );
        let lx = left + 4.0 + (i as f64 % 4.0) * 140.0;
        let ly = h - 6.0 - (i / 4) as f64 * 0.0;
        let _ = write!(
            s,
            "<rect x=\"{lx:.1}\" y=\"{:.1}\" width=\"10\" height=\"3\" fill=\"{colour}\"/><text x=\"{:.1}\" y=\"{ly:.1}\" class=\"ax\">{}</text>",
            ly - 4.0,
            lx + 13.0,
            esc(l.label)
        );
    }
    if lines.iter().all(|l| l.points.is_empty()) {
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{}\" class=\"ax\" text-anchor=\"middle\">no samples yet</text>",
            w / 2.0,
            h / 2.0
        );
    }
    s.push_str("</svg></figure>");
    s
}

/// The next 1, 2 or 5 x 10^n at or above `v` (at least 1): round axis labels.
fn nice_ceiling(v: f64) -> f64 {
    if v <= 1.0 {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if v <= m * p {
            return m * p;
        }
    }
    10.0 * p
}

/// A whole page: `title`, the body HTML, and the refresh behaviour: the page reloads every `refresh_secs`, and
/// sooner when `seq_url` (answering a number) changes, polled every 2 s; without scripts a meta refresh does it.
pub fn page(title: &str, refresh_secs: u64, seq_url: Option<&str>, body: &str) -> String {
    let seq =
        seq_url.map(|u| format!("const SEQ_URL={};", serde_json::Value::String(u.to_string()))).unwrap_or_default();
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta http-equiv=\"refresh\" content=\"{refresh_secs}\">\
         <title>{t}</title><style>{CSS}</style></head><body><header><h1>{t}</h1>\
         <span id=\"updated\" class=\"dim\"></span><span id=\"auth\"></span></header><main>{body}</main>\
         <script>const REFRESH={refresh_secs};{seq}{JS}</script></body></html>",
        t = esc(title)
    )
}

const CSS: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#222;background:#f6f7f9}\
header{display:flex;flex-wrap:wrap;gap:1em;align-items:baseline;padding:.6em 1em;background:#1d2733;color:#fff}\
header h1{font-size:1.2em;margin:0}main{padding:.5em 1em;max-width:1400px}\
section{background:#fff;border:1px solid #dde;border-radius:6px;margin:.8em 0;padding:.5em .8em}\
h2{font-size:1.05em;margin:.3em 0}.tw{overflow-x:auto}table{border-collapse:collapse;width:100%}\
th,td{text-align:left;padding:.25em .5em;border-bottom:1px solid #eee;white-space:nowrap}\
th{font-weight:600;color:#555}.dim{color:#888}.b{padding:0 .4em;border-radius:3px;background:#eee}\
.b.ok{background:#d6f5e3;color:#0a6b35}.b.bad{background:#fbd9d3;color:#9b1c0b}.b.warn{background:#fdf0c8;color:#7a5a00}\
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(320px,1fr));gap:.6em}\
figure.chart{margin:0}svg{width:100%;height:auto}.ct{font-size:13px;font-weight:600}.ax{font-size:10px;fill:#555}\
.grid{stroke:#eee}button{font:inherit;padding:.1em .6em;margin:0 .2em}.act{display:none}\
body.authed .act{display:inline-block}form.f{display:flex;flex-wrap:wrap;gap:.4em;margin:.3em 0}\
#msg{color:#9b1c0b}@media (max-width:600px){main{padding:.3em}th,td{padding:.2em .3em}}";

/// Reload on a timer and on a new event; keep the token in this tab's session storage; send actions with it.
const JS: &str = r#"
const started=Date.now();let seq=null;
document.getElementById('updated').textContent='updated '+new Date().toISOString().slice(11,19)+' UTC, every '+REFRESH+' s';
async function poll(){if(typeof SEQ_URL==='undefined')return;try{const r=await fetch(SEQ_URL,{cache:'no-store'});const t=(await r.text()).trim();if(seq!==null&&t!==seq){location.reload();}seq=t;}catch(e){}}
setInterval(poll,2000);poll();
const tok=sessionStorage.getItem('token');
function authbox(){const a=document.getElementById('auth');if(tok){document.body.classList.add('authed');a.innerHTML='<button id="out">sign out</button>';document.getElementById('out').onclick=()=>{sessionStorage.removeItem('token');location.reload();};}else{a.innerHTML='<input id="tk" type="password" placeholder="API token for actions" size="22"><button id="in">sign in</button>';document.getElementById('in').onclick=()=>{sessionStorage.setItem('token',document.getElementById('tk').value.trim());location.reload();};}}
authbox();
document.addEventListener('click',async e=>{const b=e.target.closest('button[data-post]');if(!b)return;if(b.dataset.confirm&&!confirm(b.dataset.confirm))return;
const r=await fetch(b.dataset.post,{method:'POST',headers:{'Authorization':'Bearer '+(tok||'')}});const m=document.getElementById('msg');
if(r.ok){location.reload();}else{let t=await r.text();try{t=JSON.parse(t).error}catch(x){}if(m)m.textContent=b.dataset.post+': '+t;}});
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_tables_and_badges() {
        assert_eq!(esc("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
        let t = table(&["name", "state"], &[vec![esc("e<1>"), badge("down")]]);
        assert!(t.contains("<td>e&lt;1&gt;</td><td><span class=\"b bad\">down</span></td>"), "{t}");
        assert!(table(&["a"], &[]).contains("none"));
        assert_eq!(si(1_500_000.0), "1.5M");
        assert_eq!(si(999.0), "999");
        assert_eq!(nice_ceiling(7.3), 10.0);
        assert_eq!(nice_ceiling(120.0), 200.0);
    }

    #[test]
    fn a_chart_has_one_vertex_per_point_inside_its_box() {
        let pts = [(1000, 0.0), (1015, 5.0), (1030, 10.0)];
        let svg = chart(
            "players",
            "viewers",
            1000,
            1030,
            &[Line { label: "e1", points: &pts }, Line { label: "e<2>", points: &[] }],
        );
        assert!(svg.contains("data-series=\"e1\" data-points=\"3\""), "{svg}");
        assert!(svg.contains("data-series=\"e&lt;2&gt;\" data-points=\"0\""));
        let poly = svg.split("points=\"").nth(2).unwrap().split('"').next().unwrap();
        let xy: Vec<(f64, f64)> = poly
            .split(' ')
            .map(|p| {
                let (a, b) = p.split_once(',').unwrap();
                (a.parse().unwrap(), b.parse().unwrap())
            })
            .collect();
        assert_eq!(xy.len(), 3);
        assert!(xy.windows(2).all(|w| w[1].0 > w[0].0 && w[1].1 < w[0].1), "time right, values up: {xy:?}");
        assert!(xy.iter().all(|(x, y)| (0.0..=640.0).contains(x) && (0.0..=220.0).contains(y)));
        assert!(chart("x", "u", 0, 10, &[]).contains("no samples yet"));
        let p = page("t<", 15, Some("/console/seq"), "<p>hi</p>");
        assert!(
            p.contains("<title>t&lt;</title>")
                && p.contains("content=\"15\"")
                && p.contains("SEQ_URL=\"/console/seq\"")
        );
    }
}
