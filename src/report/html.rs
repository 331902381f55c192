//! The report page, built with maud (compile-time templates that escape every
//! string they are given). The ladders and charts are inline SVG; the style sheet
//! and the small script are the files in `templates/`, inlined.

use std::collections::{BTreeMap, HashMap};

use ecr_capture::findings::Severity;
use ecr_capture::ladder::{self, arrow_label, fragment_shown, IDLE_GAP_S};
use ecr_capture::output::{format_time, Clock, RecordWriter, TextWriter};
use ecr_capture::record::{Direction, MessageRecord, Record, Role};
use maud::{html, Markup, PreEscaped, DOCTYPE};
use serde::Serialize;

use super::data::{nice_step, FindingRow, Link, ReportData};

const CSS: &str = include_str!("../../templates/report.css");
const JS: &str = include_str!("../../templates/report.js");

// Ladder geometry (px).
const WIDTH: f64 = 980.0;
const ECR_X: f64 = 170.0;
const POS_X: f64 = 630.0;
const NOTE_X: f64 = 642.0;
const RULE_X: f64 = 790.0;
const TOP: f64 = 64.0;
const PX_PER_S: f64 = 120.0;
const ARROW_GAP: f64 = 26.0;
const IDLE_PX: f64 = 34.0;

/// JSON for a `<script type="application/json">` block: `<`, `>` and `&` are
/// written as \u escapes (the same JSON), so no string can end the script element.
fn script_json<T: Serialize>(v: &T) -> String {
    let text = serde_json::to_string(v).unwrap_or_else(|_| "null".to_string());
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            c => out.push(c),
        }
    }
    out
}

fn sev_class(s: Option<Severity>) -> &'static str {
    match s {
        Some(Severity::Error) => "sev-error",
        Some(Severity::Warning) => "sev-warning",
        Some(Severity::Info) => "sev-info",
        None => "sev-none",
    }
}

/// Time of day to the millisecond, by `clock`.
fn hms(ts: f64, clock: Clock) -> String {
    format_time(ts, clock)
        .get(11..23)
        .unwrap_or("-")
        .to_string()
}

fn px(v: f64) -> String {
    format!("{v:.1}")
}

/// The page.
///
/// Times are shown by `clock` (local time with its offset, or UTC), each full time
/// with its zone, as the text output does.
pub fn page(data: &ReportData, texts: &BTreeMap<u64, String>, title: &str, clock: Clock) -> String {
    let title = ladder::escape_controls(title);
    let mut all_texts: BTreeMap<String, String> = texts
        .iter()
        .map(|(k, v)| (format!("m-{k}"), v.clone()))
        .collect();
    for (i, f) in data.findings.iter().enumerate() {
        if f.arrow.is_none() {
            all_texts.insert(format!("f-{i}"), finding_text(f, clock));
        }
    }
    let by_index: HashMap<u64, &MessageRecord> =
        data.messages.iter().map(|m| (m.index, m)).collect();
    let latency_of: HashMap<u64, f64> = data
        .transactions
        .iter()
        .filter_map(|t| Some((t.response?, t.latency_ms)))
        .collect();
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="generator" content=(concat!("ecr-sniff ", env!("CARGO_PKG_VERSION")));
                title { (title) }
                style { (PreEscaped(CSS)) }
            }
            body {
                main {
                    (header(data, &title, clock))
                    section #ladders {
                        h2 { "Ladders" }
                        @if data.links.is_empty() {
                            p.empty { "No ECR messages in this capture." }
                        }
                        @if !data.links.is_empty() {
                            p.legend {
                                "Time runs down; one arrow per message (dashed: further fragments of a split message). Findings:"
                                span.dot.sev-error {} "error" span.dot.sev-warning {} "warning" span.dot.sev-info {} "info"
                                ". A red bracket marks a broken timing rule (1000 ms answer, 500 ms between fragments). Click an arrow to read the message."
                            }
                        }
                        @for link in &data.links {
                            (ladder_svg(data, link, &by_index, &latency_of, clock))
                        }
                    }
                    (transactions(data, clock))
                    (charts(data, clock))
                    (findings(data, clock))
                    p #js-status.muted { "The script has not run: sorting, filtering and the message view need JavaScript." }
                }
                aside #detail {
                    h2 #detail-title { "Message" }
                    p.muted #detail-hint { "Click an arrow (or a finding marker) to read the message as " code { "ecr-sniff analyze" } " prints it." }
                    pre #detail-text {}
                }
                script type="application/json" #report-data { (PreEscaped(script_json(data))) }
                script type="application/json" #texts { (PreEscaped(script_json(&all_texts))) }
                script { (PreEscaped(JS)) }
            }
        }
    };
    markup.into_string()
}

fn finding_text(f: &FindingRow, clock: Clock) -> String {
    let mut buf = vec![];
    {
        let mut w = TextWriter::new(&mut buf, false).with_clock(clock);
        let _ = w.write(&Record::Finding(f.record.clone()));
    }
    ladder::escape_controls_keep_lines(String::from_utf8_lossy(&buf).trim())
}

fn header(data: &ReportData, title: &str, clock: Clock) -> Markup {
    let h = &data.header;
    let span = match (h.first_ts, h.last_ts) {
        (Some(a), Some(b)) => format!(
            "{} – {} ({})",
            format_time(a, clock),
            format_time(b, clock).get(11..).unwrap_or(""),
            ladder::human_secs(b - a)
        ),
        _ => "-".to_string(),
    };
    let n = |s: &str| h.findings.get(s).copied().unwrap_or(0);
    html! {
        header {
            h1 { (title) }
            dl.facts {
                dt { "Files" } dd { @for f in &h.files { code { (ladder::escape_controls(f)) } " " } }
                dt { "Time span" } dd { (span) }
                dt { "Traffic" } dd #counts {
                    span #n-packets { (h.packets) } " packets, "
                    span #n-messages { (h.messages) } " messages, "
                    span #n-transactions { (h.transactions) } " transactions"
                }
                dt { "Findings" } dd {
                    span.badge.sev-error #n-error { (n("error")) " error" }
                    span.badge.sev-warning #n-warning { (n("warning")) " warning" }
                    span.badge.sev-info #n-info { (n("info")) " info" }
                }
                dt { "Keys" } dd #keys {
                    @if h.keys_given == 0 {
                        "no key given"
                    } @else {
                        (h.keys_given) " given; "
                        @if h.keys_used.is_empty() {
                            "none decrypted a message"
                        } @else {
                            "used: "
                            @for (i, k) in h.keys_used.iter().enumerate() {
                                @if i > 0 { ", " }
                                "key #" (k.index) " (" (k.interpretation) ") for " (k.messages) " messages"
                            }
                        }
                    }
                }
            }
            @for t in &data.truncated {
                p.truncated { "Summarised: " (t) }
            }
            nav {
                a href="#ladders" { "Ladders" } " · "
                a href="#transactions" { "Transactions" } " · "
                a href="#latency" { "Latency" } " · "
                a href="#findings" { "Findings" }
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Ev {
    /// Fragment `k` of message `idx` (0 for an unsplit message).
    Arrow(u64, usize),
    /// A finding drawn as a marker (its position in the list).
    Marker(usize),
    /// A time point of a rule bracket.
    Point,
}

/// Vertical positions: capture time goes down, scaled, with idle stretches cut
/// short and arrows kept apart.
struct Layout {
    points: Vec<(f64, f64)>,
    arrows: HashMap<(u64, usize), f64>,
    markers: HashMap<usize, f64>,
    idles: Vec<(f64, f64)>,
    bottom: f64,
}

impl Layout {
    fn new(mut events: Vec<(f64, Ev)>) -> Layout {
        events.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut l = Layout {
            points: vec![],
            arrows: HashMap::new(),
            markers: HashMap::new(),
            idles: vec![],
            bottom: TOP,
        };
        let mut y = TOP;
        let mut prev: Option<f64> = None;
        let mut last_drawn = f64::NEG_INFINITY;
        for (t, ev) in events {
            if let Some(p) = prev {
                let dt = t - p;
                if dt > IDLE_GAP_S {
                    l.idles.push((y.max(last_drawn) + 8.0, dt));
                    y = y.max(last_drawn) + 8.0 + IDLE_PX + 24.0;
                } else {
                    y += dt.max(0.0) * PX_PER_S;
                }
            }
            match ev {
                Ev::Arrow(m, k) => {
                    y = y.max(last_drawn + ARROW_GAP);
                    last_drawn = y;
                    l.arrows.insert((m, k), y);
                }
                Ev::Marker(i) => {
                    y = y.max(last_drawn + ARROW_GAP);
                    last_drawn = y;
                    l.markers.insert(i, y);
                }
                Ev::Point => {}
            }
            l.points.push((t, y));
            prev = Some(t);
        }
        l.bottom = y.max(last_drawn) + 30.0;
        l
    }

    /// The y of capture time `t` (the first point at that time).
    fn y(&self, t: f64) -> f64 {
        let i = self.points.partition_point(|p| p.0 < t);
        match (
            self.points.get(i),
            i.checked_sub(1).and_then(|j| self.points.get(j)),
        ) {
            (Some(p), _) if p.0 == t => p.1,
            (Some(b), Some(a)) => a.1 + (b.1 - a.1) * ((t - a.0) / (b.0 - a.0).max(1e-9)),
            (Some(b), None) => b.1,
            (None, Some(a)) => a.1,
            (None, None) => TOP,
        }
    }
}

fn ladder_svg(
    data: &ReportData,
    link: &Link,
    by_index: &HashMap<u64, &MessageRecord>,
    latency_of: &HashMap<u64, f64>,
    clock: Clock,
) -> Markup {
    let msgs: Vec<&MessageRecord> = link
        .drawn
        .iter()
        .filter_map(|i| by_index.get(i).copied())
        .collect();
    let mut on_msg: HashMap<u64, Vec<&FindingRow>> = HashMap::new();
    let mut markers: Vec<(usize, &FindingRow)> = vec![];
    for (i, f) in data.findings.iter().enumerate() {
        if f.link != Some(link.id) {
            continue;
        }
        match f.arrow {
            Some(a) => on_msg.entry(a).or_default().push(f),
            None => markers.push((i, f)),
        }
    }
    let mut events: Vec<(f64, Ev)> = vec![];
    for m in &msgs {
        let parts = m.frame.as_ref().map(|f| f.parts.as_slice()).unwrap_or(&[]);
        if parts.is_empty() {
            events.push((m.ts, Ev::Arrow(m.index, 0)));
        }
        let n = parts.len();
        for (k, p) in parts.iter().enumerate() {
            if fragment_shown(k, n) {
                events.push((p.ts, Ev::Arrow(m.index, k)));
            }
        }
    }
    for (i, f) in &markers {
        events.push((f.record.ts, Ev::Marker(*i)));
    }
    for r in &link.rules {
        events.push((r.from_ts, Ev::Point));
        events.push((r.to_ts, Ev::Point));
    }
    let lay = Layout::new(events);
    let height = lay.bottom;
    let shown = link.drawn.len() as u64;
    html! {
        section.link #(format!("link-{}", link.id)) data-link=(link.id) {
            h3 { (link.label) }
            p.muted {
                (link.messages) " messages"
                @if shown < link.messages { ", " strong { "the first " (shown) " drawn" } }
                @if !link.rules.is_empty() { " · " span.sev-error-text { (link.rules.len()) " timing rule(s) broken" } }
            }
            svg.ladder xmlns="http://www.w3.org/2000/svg" width=(px(WIDTH)) height=(px(height)) viewBox=(format!("0 0 {WIDTH} {height:.1}")) role="img" aria-label=(format!("Ladder diagram of {}", link.label)) {
                defs {
                    @for (id, class) in [("ah", "sev-none"), ("ah-response", "response"), ("ah-error", "sev-error"), ("ah-warning", "sev-warning"), ("ah-info", "sev-info")] {
                        marker id=(id) class=(class) viewBox="0 0 10 10" refX="9" refY="5" markerWidth="8" markerHeight="8" orient="auto-start-reverse" {
                            path d="M0,0 L10,5 L0,10 z" {}
                        }
                    }
                }
                // Lanes.
                rect.lane-head x=(px(ECR_X - 70.0)) y="6" width="140" height="34" rx="5" {}
                text.lane-name x=(px(ECR_X)) y="20" text-anchor="middle" { "ECR" }
                text.lane-addr x=(px(ECR_X)) y="34" text-anchor="middle" { (link.ecr) }
                rect.lane-head x=(px(POS_X - 70.0)) y="6" width="140" height="34" rx="5" {}
                text.lane-name x=(px(POS_X)) y="20" text-anchor="middle" { "POS" }
                text.lane-addr x=(px(POS_X)) y="34" text-anchor="middle" { (link.pos) }
                line.lane x1=(px(ECR_X)) y1="40" x2=(px(ECR_X)) y2=(px(height - 6.0)) {}
                line.lane x1=(px(POS_X)) y1="40" x2=(px(POS_X)) y2=(px(height - 6.0)) {}
                text.axis x="8" y="54" { "time (UTC)" }
                text.axis x=(px(NOTE_X)) y="54" { "latency" }
                @for (y, dt) in &lay.idles {
                    g.idle {
                        rect x="0" y=(px(*y)) width=(px(WIDTH)) height=(px(IDLE_PX)) {}
                        text x=(px((ECR_X + POS_X) / 2.0)) y=(px(y + IDLE_PX / 2.0 + 4.0)) text-anchor="middle" {
                            "⋯ " (ladder::human_secs(*dt)) " idle (compressed) ⋯"
                        }
                    }
                }
                @for r in &link.rules {
                    @let (y1, y2) = (lay.y(r.from_ts), lay.y(r.to_ts));
                    @let what = match r.kind { "ack-late" => "answer late (spec 10.6)", "ack-missing" => "no answer (spec 10.6)", _ => "fragment gap (spec 10.7)" };
                    g.rule.sev-error data-kind=(r.kind) {
                        title { (format!("{}: {:.1} ms, limit {:.0} ms", what, r.ms, r.limit_ms)) }
                        path d=(format!("M{:.1},{:.1} h-6 V{:.1} h6", RULE_X, y1, y2)) {}
                        text x=(px(RULE_X + 6.0)) y=(px((y1 + y2) / 2.0)) {
                            (if r.kind == "ack-missing" { format!("> {:.0} ms", r.limit_ms) } else { format!("{:.0} ms > {:.0}", r.ms, r.limit_ms) })
                        }
                        text.small x=(px(RULE_X + 6.0)) y=(px((y1 + y2) / 2.0 + 13.0)) { (what) }
                    }
                }
                @for m in &msgs {
                    (arrow(m, &lay, on_msg.get(&m.index).map(Vec::as_slice).unwrap_or(&[]), latency_of.get(&m.index).copied(), clock))
                }
                @for (i, f) in &markers {
                    @let y = lay.markers.get(i).copied().unwrap_or(TOP);
                    g.marker.(sev_class(Some(f.record.severity))) id=(format!("f-{i}")) tabindex="0" data-finding=(i) {
                        title { (f.record.code.as_str()) ": " (ladder::escape_controls(&f.record.detail)) }
                        line.hit x1=(px(ECR_X)) y1=(px(y)) x2=(px(POS_X)) y2=(px(y)) {}
                        line.mark x1=(px(ECR_X)) y1=(px(y)) x2=(px(POS_X)) y2=(px(y)) {}
                        text.label x=(px((ECR_X + POS_X) / 2.0)) y=(px(y - 5.0)) text-anchor="middle" { "✕ " (f.record.code.as_str()) }
                        text.time x="8" y=(px(y + 4.0)) { (hms(f.record.ts, clock)) }
                    }
                }
            }
        }
    }
}

fn arrow(
    m: &MessageRecord,
    lay: &Layout,
    findings: &[&FindingRow],
    latency: Option<f64>,
    clock: Clock,
) -> Markup {
    let worst = ladder::worst(findings.iter().map(|f| &f.record));
    let sev = sev_class(worst);
    let head = match worst {
        Some(Severity::Error) => "url(#ah-error)",
        Some(Severity::Warning) => "url(#ah-warning)",
        Some(Severity::Info) => "url(#ah-info)",
        None if m.role == Role::Response => "url(#ah-response)",
        None => "url(#ah)",
    };
    let (x1, x2) = match m.direction {
        Direction::EcrToPos => (ECR_X + 1.0, POS_X - 2.0),
        Direction::PosToEcr => (POS_X - 1.0, ECR_X + 2.0),
    };
    let label = format!("#{} {}", m.index, arrow_label(m));
    let parts = m.frame.as_ref().map(|f| f.parts.as_slice()).unwrap_or(&[]);
    let n = parts.len();
    let ys: Vec<(usize, f64, Option<f64>)> = if parts.is_empty() {
        vec![(
            0,
            lay.arrows.get(&(m.index, 0)).copied().unwrap_or(TOP),
            None,
        )]
    } else {
        parts
            .iter()
            .enumerate()
            .filter_map(|(k, p)| Some((k, *lay.arrows.get(&(m.index, k))?, p.gap_ms)))
            .collect()
    };
    let y0 = ys.first().map_or(TOP, |v| v.1);
    let note = match (latency, m.answer_ms) {
        (Some(l), _) => Some(format!("{l:.1} ms")),
        (None, Some(a)) => Some(format!("answer {a:.1} ms")),
        _ => None,
    };
    let late = m.role != Role::Preflight && m.answer_ms.is_some_and(|a| a > ladder::ACK_LIMIT_MS);
    let role = match m.role {
        Role::Request => "request",
        Role::Response => "response",
        Role::Ack => "ack",
        Role::ErrorFrame => "error-frame",
        Role::Preflight => "preflight",
    };
    html! {
        g.arrow.(sev).(role) id=(format!("m-{}", m.index)) data-msg=(m.index) tabindex="0" {
            title { (label) }
            @for (k, y, gap) in &ys {
                line.hit x1=(px(ECR_X)) y1=(px(*y)) x2=(px(POS_X)) y2=(px(*y)) {}
                line.shaft.frag[*k > 0] x1=(px(x1)) y1=(px(*y)) x2=(px(x2)) y2=(px(*y)) marker-end=(head) {}
                text.time x="8" y=(px(y + 4.0)) { (hms(m.frame.as_ref().and_then(|f| f.parts.get(*k)).map_or(m.ts, |p| p.ts), clock)) }
                @if n > 0 {
                    @let over = gap.is_some_and(|g| g > ladder::FRAGMENT_LIMIT_MS);
                    text.small.fragnote.sev-error-text[over] x=(px(NOTE_X)) y=(px(y + 4.0)) {
                        "frag " (k + 1) "/" (n)
                        @if let Some(g) = gap { " +" (format!("{g:.1}")) " ms" }
                    }
                }
            }
            text.label x=(px((ECR_X + POS_X) / 2.0)) y=(px(y0 - 5.0)) text-anchor="middle" { (label) }
            @if let Some(note) = note {
                // A split message's latency runs to its first fragment: beside "frag 1/n".
                text.note.sev-error-text[late] x=(px(if n > 0 { NOTE_X + 64.0 } else { NOTE_X })) y=(px(y0 + 4.0)) { (note) }
            }
            @for (i, f) in findings.iter().enumerate() {
                circle.dot.(sev_class(Some(f.record.severity))) cx=(px(ECR_X - 14.0 - 12.0 * i.min(6) as f64)) cy=(px(y0)) r="5" {
                    title { (f.record.severity.as_str()) " " (f.record.code.as_str()) ": " (ladder::escape_controls(&f.record.detail)) }
                }
            }
        }
    }
}

fn transactions(data: &ReportData, clock: Clock) -> Markup {
    let link_of: HashMap<u64, usize> = data
        .links
        .iter()
        .flat_map(|l| l.drawn.iter().map(move |m| (*m, l.id)))
        .collect();
    html! {
        section #transactions {
            h2 { "Transactions" }
            @if data.transactions.is_empty() {
                p.empty { "No request was answered in this capture." }
            } @else {
                p.tools {
                    input #tx-filter type="search" placeholder="filter: func_type, amount, channel, respcd…" data-filter-for="tx" {}
                    " " span.muted #tx-count {}
                }
                table.sortable #tx {
                    thead { tr {
                        th data-type="num" { "time (UTC)" } th { "func_type" } th data-type="num" { "amount" }
                        th { "channel" } th { "respcd" } th data-type="num" { "latency ms" } th { "messages" } th { "transport" }
                    } }
                    tbody {
                        @for t in &data.transactions {
                            tr {
                                td data-v=(t.ts) { (format_time(t.ts, clock)) }
                                td { (t.func_type.map_or("-".to_string(), |f| f.to_string())) " " span.muted { (t.func_name.unwrap_or("")) } }
                                td { (ladder::escape_controls(t.amt.as_deref().unwrap_or(""))) }
                                td { (ladder::escape_controls(t.channel.as_deref().unwrap_or(""))) }
                                td { (ladder::escape_controls(t.respcd.as_deref().unwrap_or("-"))) }
                                td.num data-v=(t.latency_ms) { (format!("{:.1}", t.latency_ms)) }
                                td {
                                    @for (i, n) in [t.request, t.response].into_iter().flatten().enumerate() {
                                        @if i > 0 { " → " }
                                        @if link_of.contains_key(&n) { a href=(format!("#m-{n}")) { "#" (n) } } @else { "#" (n) }
                                    }
                                }
                                td { (t.transport.as_str()) }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn charts(data: &ReportData, clock: Clock) -> Markup {
    const W: f64 = 940.0;
    const H: f64 = 220.0;
    const L: f64 = 60.0;
    const B: f64 = 30.0;
    let pts = &data.latency;
    let max = pts.iter().map(|p| p.1).fold(0.0f64, f64::max);
    let step = nice_step(max / 4.0);
    let ymax = (step * 4.0).max(step * (max / step).ceil());
    let (t0, t1) = pts
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
            (a.min(p.0), b.max(p.0))
        });
    let span = (t1 - t0).max(1e-3);
    let x = |t: f64| L + (t - t0) / span * (W - L - 10.0);
    let y = |v: f64| H - B - v / ymax.max(1e-9) * (H - B - 10.0);
    let ticks: Vec<f64> = (0..=((ymax / step).round() as usize).min(10))
        .map(|i| i as f64 * step)
        .collect();
    let hist = &data.histogram;
    let hmax = hist.iter().map(|b| b.count).max().unwrap_or(0).max(1) as f64;
    let bw = (W - L - 10.0) / hist.len().max(1) as f64;
    html! {
        section #latency {
            h2 { "Latency" }
            @if pts.is_empty() {
                p.empty { "No transactions, so no latency." }
            } @else {
                h3 { "Over time" }
                svg.chart #latency-time xmlns="http://www.w3.org/2000/svg" width=(W) height=(H) viewBox=(format!("0 0 {W} {H}")) role="img" aria-label="Transaction latency over capture time" {
                    @for v in &ticks {
                        line.grid x1=(L) y1=(px(y(*v))) x2=(W - 10.0) y2=(px(y(*v))) {}
                        text.axis x=(L - 6.0) y=(px(y(*v) + 4.0)) text-anchor="end" { (format!("{v}")) }
                    }
                    text.axis x="4" y="12" { "ms" }
                    text.axis x=(L) y=(H - 8.0) { (format_time(t0, clock)) }
                    text.axis x=(W - 10.0) y=(H - 8.0) text-anchor="end" { (format_time(t1, clock)) }
                    @for (t, v) in pts {
                        circle.pt cx=(px(x(*t))) cy=(px(y(*v))) r="3" { title { (format_time(*t, clock)) ": " (format!("{v:.1}")) " ms" } }
                    }
                }
                h3 { "Histogram" }
                svg.chart #latency-histogram xmlns="http://www.w3.org/2000/svg" width=(W) height=(H) viewBox=(format!("0 0 {W} {H}")) role="img" aria-label="Histogram of transaction latency" {
                    line.grid x1=(L) y1=(H - B) x2=(W - 10.0) y2=(H - B) {}
                    text.axis x="4" y="12" { "transactions" }
                    text.axis x=(L - 6.0) y="20" text-anchor="end" { (hmax) }
                    @for (i, b) in hist.iter().enumerate() {
                        @let h = b.count as f64 / hmax * (H - B - 20.0);
                        rect.bar x=(px(L + i as f64 * bw + 1.0)) y=(px(H - B - h)) width=(px((bw - 2.0).max(1.0))) height=(px(h)) {
                            title { (format!("{:.0}–{:.0} ms: {}", b.from_ms, b.to_ms, b.count)) }
                        }
                        @if i % 2 == 0 || hist.len() <= 10 {
                            text.axis x=(px(L + i as f64 * bw)) y=(H - 12.0) { (format!("{}", b.from_ms)) }
                        }
                    }
                    text.axis x=(W - 10.0) y=(H - 12.0) text-anchor="end" { "ms" }
                }
            }
        }
    }
}

fn findings(data: &ReportData, clock: Clock) -> Markup {
    html! {
        section #findings {
            h2 { "Findings" }
            @if data.findings.is_empty() {
                p.empty { "No findings." }
            } @else {
                p.tools {
                    input #findings-filter type="search" placeholder="filter: code, severity, detail…" data-filter-for="findings-table" {}
                    " " span.muted #findings-table-count {}
                }
                table.sortable #findings-table {
                    thead { tr { th data-type="num" { "time (UTC)" } th { "severity" } th { "code" } th { "what" } th { "where" } } }
                    tbody {
                        @for (i, f) in data.findings.iter().enumerate() {
                            @let r = &f.record;
                            tr.finding.(sev_class(Some(r.severity))) {
                                td data-v=(r.ts) { (format_time(r.ts, clock)) }
                                td { span.badge.(sev_class(Some(r.severity))) { (r.severity.as_str()) } }
                                td { code { (r.code.as_str()) } }
                                td { (ladder::escape_controls(&r.detail)) br; span.muted.small { "rule: " (r.rule) } }
                                td {
                                    @match (f.arrow, f.link) {
                                        (Some(a), _) => { a href=(format!("#m-{a}")) { "message " (a) } }
                                        (None, Some(_)) => { a href=(format!("#f-{i}")) { "marker" } }
                                        _ => {
                                            @if let Some(n) = r.message { "message " (n) " (not drawn)" }
                                            @else if let (Some(a), Some(b)) = (&r.src, &r.dst) {
                                                (ladder::escape_controls(a)) " → " (ladder::escape_controls(b))
                                            }
                                        }
                                    }
                                    @if let Some(p) = r.packet { br; span.muted.small { "packet " (p) } }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_compresses_idle_time_and_keeps_arrows_apart() {
        let t0 = 1_800_000_000.0;
        let lay = Layout::new(vec![
            (t0 + 60.0, Ev::Arrow(4, 0)),
            (t0, Ev::Arrow(1, 0)),
            (t0 + 0.001, Ev::Arrow(2, 0)),
            (t0 + 0.5, Ev::Point),
            (t0 + 1.0, Ev::Arrow(3, 0)),
        ]);
        let y = |m| lay.arrows[&(m, 0)];
        assert!(y(2) - y(1) >= ARROW_GAP, "close arrows kept apart");
        // Half a second at PX_PER_S, measured from the pushed-down arrow 2.
        assert!((lay.y(t0 + 0.5) - (y(2) + 0.499 * PX_PER_S)).abs() < 0.01);
        assert!(y(3) > lay.y(t0 + 0.5));
        // 59 s idle: one compressed band, not 59 * PX_PER_S pixels.
        assert_eq!(lay.idles.len(), 1);
        assert!((lay.idles[0].1 - 59.0).abs() < 1e-6);
        assert!(y(4) - y(3) < 100.0, "{}", y(4) - y(3));
        assert!(lay.bottom > y(4));
        // Times between points are interpolated, outside them clamped.
        assert_eq!(lay.y(t0 - 5.0), y(1));
        assert_eq!(lay.y(t0 + 100.0), y(4));
    }

    #[test]
    fn script_json_cannot_close_the_script_element() {
        let s = script_json(&"</script><!-- & -->");
        assert!(!s.contains('<') && !s.contains('>') && !s.contains('&'));
        let back: String = serde_json::from_str(&s).unwrap();
        assert_eq!(back, "</script><!-- & -->");
    }
}
