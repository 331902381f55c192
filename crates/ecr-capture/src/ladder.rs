//! The ladder view: who sent what when, one arrow per message between a cash register
//! lane and a terminal lane, per link. This module holds what the HTML report and
//! `analyze --format ladder` share (links, arrow labels, the rules drawn) and the
//! terminal writer itself.
//!
//! Everything is computed from the records of [`crate::record`], the same ones the
//! `jsonl` output prints.

use std::io::{self, Write};
use std::net::SocketAddr;

use ecr_proto::catalogue::RespCode;

use crate::findings::Severity;
use crate::output::{format_time, Clock, Style};
use crate::record::{Direction, FindingRecord, MessageRecord, Record, Role, Transport};

/// Arrows further apart than this (capture time, seconds) have the idle stretch
/// between them compressed and marked.
pub const IDLE_GAP_S: f64 = 2.0;
/// Spec 10.6, D2: a request frame is answered within this many milliseconds.
pub const ACK_LIMIT_MS: f64 = 1000.0;
/// Spec 10.7, D1: the fragments of a message follow each other within this many ms.
pub const FRAGMENT_LIMIT_MS: f64 = 500.0;

/// Replaces control characters (and other invisible format characters) of capture
/// text with visible escapes, so that a capture cannot move the cursor, recolour or
/// clear a terminal, or hide text in a report. Newlines are escaped too.
pub fn escape_controls(s: &str) -> String {
    if !s.chars().any(needs_escape) {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if needs_escape(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Like [`escape_controls`] but keeps newlines: for multi-line text blocks.
pub fn escape_controls_keep_lines(s: &str) -> String {
    s.split('\n')
        .map(escape_controls)
        .collect::<Vec<_>>()
        .join("\n")
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

/// One ladder: the traffic between one cash register and one terminal over one
/// transport (an HTTP or TCP address pair, a USB device, a serial tap).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LinkKey {
    /// Transport.
    pub transport: Transport,
    /// The cash register's end: its IP address (its port changes per connection), or
    /// the serial end's label.
    pub ecr: String,
    /// The terminal's end: address and port, or the serial end's label.
    pub pos: String,
}

impl LinkKey {
    /// The link a message belongs to.
    pub fn of_message(m: &MessageRecord) -> LinkKey {
        let (ecr, pos) = match m.direction {
            Direction::EcrToPos => (&m.src, &m.dst),
            Direction::PosToEcr => (&m.dst, &m.src),
        };
        LinkKey::new(m.transport, ecr, pos)
    }

    /// The link a finding concerns, when it names one. Which end is the cash
    /// register is not recorded in findings, so both orders are offered; callers
    /// take the one they know.
    pub fn of_finding(f: &FindingRecord) -> Option<[LinkKey; 2]> {
        let (t, a, b) = (f.transport?, f.src.as_ref()?, f.dst.as_ref()?);
        Some([LinkKey::new(t, a, b), LinkKey::new(t, b, a)])
    }

    fn new(transport: Transport, ecr: &str, pos: &str) -> LinkKey {
        let ecr = match transport {
            Transport::Serial => ecr.to_string(),
            _ => match ecr.parse::<SocketAddr>() {
                Ok(a) => a.ip().to_string(),
                Err(_) => ecr.to_string(),
            },
        };
        LinkKey {
            transport,
            ecr,
            pos: pos.to_string(),
        }
    }

    /// "HTTP  ECR 10.0.0.5  <->  POS 10.0.0.20:9001", or "SERIAL usb1:5" when the
    /// ends are named after one device; escaped.
    pub fn label(&self) -> String {
        if self.ecr == "ECR" && self.pos == "POS" {
            return self.transport.as_str().to_uppercase();
        }
        if let (Some(a), Some(b)) = (self.ecr.strip_suffix(":ECR"), self.pos.strip_suffix(":POS")) {
            if a == b {
                return escape_controls(&format!(
                    "{}  {a}",
                    self.transport.as_str().to_uppercase()
                ));
            }
        }
        escape_controls(&format!(
            "{}  ECR {}  <->  POS {}",
            self.transport.as_str().to_uppercase(),
            self.ecr,
            self.pos
        ))
    }
}

/// The words on a message's arrow: what it is (func_type and name, amount and
/// channel; respcd and meaning; ack; error frame), control characters escaped.
pub fn arrow_label(m: &MessageRecord) -> String {
    let text = match m.role {
        Role::Request => {
            let mut parts = vec![match (m.func_type, m.func_name) {
                (Some(ft), Some(n)) => format!("{ft} {n}"),
                (Some(ft), None) => format!("func_type {ft}"),
                _ => "request".to_string(),
            }];
            if let Some(c) = &m.content {
                for field in ["amt", "channel"] {
                    if let Some(v) = c.object.get(field) {
                        parts.push(v.to_display_string());
                    }
                }
            }
            parts.join(" ")
        }
        Role::Response => match &m.respcd {
            Some(rc) => {
                let meaning = rc.parse::<u16>().ok().and_then(|c| RespCode(c).meaning());
                match meaning {
                    Some(mn) => format!("respcd {rc} {mn}"),
                    None => format!("respcd {rc}"),
                }
            }
            None => "response".to_string(),
        },
        Role::Ack => format!("ack ref {}", m.ref_num.unwrap_or(0)),
        Role::ErrorFrame => match &m.frame {
            Some(f) => format!(
                "error 0x{:02x} ref {}",
                f.frame_type,
                m.ref_num.unwrap_or(0)
            ),
            None => "error frame".to_string(),
        },
        Role::Preflight => match &m.http {
            Some(h) if h.status.is_some() => format!(
                "CORS preflight answer {}",
                h.status.map(|s| s.to_string()).unwrap_or_default()
            ),
            _ => "CORS preflight".to_string(),
        },
    };
    escape_controls(&text)
}

/// The most severe of some findings.
pub fn worst<'a>(findings: impl IntoIterator<Item = &'a FindingRecord>) -> Option<Severity> {
    findings.into_iter().map(|f| f.severity).max()
}

/// Fragments of one message shown in full; longer sets show their first
/// [`FRAGMENTS_HEAD`] and last [`FRAGMENTS_TAIL`].
pub const FRAGMENTS_HEAD: usize = 16;
/// See [`FRAGMENTS_HEAD`].
pub const FRAGMENTS_TAIL: usize = 4;

/// Which fragments of `n` are drawn: all for short sets, else head and tail.
pub fn fragment_shown(k: usize, n: usize) -> bool {
    n <= FRAGMENTS_HEAD + FRAGMENTS_TAIL + 1 || k < FRAGMENTS_HEAD || k >= n - FRAGMENTS_TAIL
}

// ---------------------------------------------------------------------------
// The terminal ladder (`--format ladder`).

/// Width of the whole line the ladder aims at.
const WIDTH: usize = 100;
/// Width of the lanes, bars included.
const LANES: usize = 46;
/// Column where the lanes start: time (12), delta (9), message number (5), spaces.
const LANES_AT: usize = 12 + 1 + 9 + 1 + 5 + 1;
/// Findings waiting for the message of their packet are bounded.
const LOOSE_MAX: usize = 64;

struct Pending {
    msg: Box<MessageRecord>,
    findings: Vec<FindingRecord>,
    latency_ms: Option<f64>,
}

/// `--format ladder`: one line per arrow, the cash register's lane on the left and
/// the terminal's on the right, times and latencies at the side, findings as
/// markers with one line each under their arrow.
///
/// A message is printed when the record after it arrives (its findings and its
/// transaction follow it), so a live tap shows each arrow one record late.
pub struct LadderWriter<W: Write> {
    out: W,
    style: Style,
    clock: Clock,
    pending: Option<Pending>,
    loose: Vec<FindingRecord>,
    link: Option<LinkKey>,
    day: Option<String>,
    last_ts: Option<f64>,
}

impl<W: Write> LadderWriter<W> {
    /// A ladder writer; `color` turns on ANSI colours.
    pub fn new(out: W, color: bool) -> Self {
        LadderWriter {
            out,
            style: Style { on: color },
            clock: Clock::Utc,
            pending: None,
            loose: vec![],
            link: None,
            day: None,
            last_ts: None,
        }
    }

    /// Shows times by `clock` (UTC unless set); the column head names the zone.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    fn sev_code(s: Severity) -> &'static str {
        match s {
            Severity::Error => "1;31",
            Severity::Warning => "33",
            Severity::Info => "36",
        }
    }

    fn flush_pending(&mut self) -> io::Result<()> {
        if let Some(p) = self.pending.take() {
            self.arrow(&p)?;
        }
        Ok(())
    }

    fn flush_loose(&mut self) -> io::Result<()> {
        for f in std::mem::take(&mut self.loose) {
            self.standalone(&f, None)?;
        }
        Ok(())
    }

    fn header(&mut self, link: &LinkKey, ts: f64) -> io::Result<()> {
        let s = self.style;
        let full = format_time(ts, self.clock);
        let day = full.get(..10).unwrap_or("").to_string();
        // The zone of this link's first time: `UTC` or an offset such as `+08:00`.
        let zone = full.rsplit(' ').next().unwrap_or("UTC").to_string();
        if self.link.as_ref() != Some(link) {
            writeln!(self.out)?;
            let title = format!("== {}  {} ", link.label(), day);
            let fill = WIDTH.saturating_sub(title.chars().count());
            writeln!(
                self.out,
                "{}",
                s.bold(&format!("{title}{}", "=".repeat(fill)))
            )?;
            let lanes = format!("{:<width$}{}", "ECR", "POS", width = LANES - "POS".len());
            writeln!(
                self.out,
                "{}",
                s.dim(&format!(
                    "{:>12} {:>9} {:>5} {lanes} latency, notes",
                    // 12 columns, as the times below: `time (UTC)` or `local +08:00`.
                    if zone == "UTC" {
                        "time (UTC)".to_string()
                    } else {
                        format!("local {zone}")
                    },
                    "+ms",
                    "msg"
                ))
            )?;
            self.link = Some(link.clone());
            self.last_ts = None;
            self.day = Some(day);
        } else if self.day.as_deref() != Some(day.as_str()) {
            writeln!(self.out, "{}", s.dim(&format!("-- {day} --")))?;
            self.day = Some(day);
        }
        Ok(())
    }

    /// The lanes with an arrow carrying `label` in direction `dir`.
    fn lanes(dir: Direction, label: &str, thin: bool) -> String {
        let inner = LANES - 2;
        let line = if thin { '-' } else { '─' };
        let room = inner.saturating_sub(4);
        let label = truncate(label, room);
        let used = label.chars().count() + 4;
        let rest = line.to_string().repeat(inner.saturating_sub(used));
        match dir {
            Direction::EcrToPos => format!("│{line} {label} {rest}▶│"),
            Direction::PosToEcr => format!("│◀{rest} {label} {line}│"),
        }
    }

    fn idle(&mut self, ts: f64) -> io::Result<()> {
        if let Some(last) = self.last_ts {
            let gap = ts - last;
            if gap > IDLE_GAP_S {
                let text = format!("⋮ {} idle", human_secs(gap));
                let lanes = format!("│{:^width$}│", text, width = LANES - 2);
                writeln!(
                    self.out,
                    "{:pad$}{}",
                    "",
                    self.style.dim(&lanes),
                    pad = LANES_AT
                )?;
            }
        }
        Ok(())
    }

    fn line(
        &mut self,
        ts: f64,
        index: Option<u64>,
        lanes: &str,
        lanes_color: Option<&str>,
        notes: &[(Option<&str>, String)],
    ) -> io::Result<()> {
        let s = self.style;
        let time = format_time(ts, self.clock)
            .get(11..23)
            .unwrap_or("-")
            .to_string();
        let delta = match self.last_ts {
            Some(l) => format!("{:+.1}", (ts - l) * 1000.0),
            None => String::new(),
        };
        let num = index.map(|i| format!("#{i}")).unwrap_or_default();
        let lanes = match lanes_color {
            Some(c) => s.paint(c, lanes),
            None => lanes.to_string(),
        };
        let mut side = String::new();
        let mut room = WIDTH.saturating_sub(LANES_AT + LANES + 1);
        for (color, text) in notes {
            let text = truncate(text, room);
            room = room.saturating_sub(text.chars().count() + 1);
            if !side.is_empty() {
                side.push(' ');
            }
            side.push_str(&match color {
                Some(c) => s.paint(c, &text),
                None => text,
            });
            if room == 0 {
                break;
            }
        }
        let sep = if side.is_empty() { "" } else { " " };
        writeln!(
            self.out,
            "{time:>12} {} {num:>5} {lanes}{sep}{side}",
            s.dim(&format!("{delta:>9}"))
        )?;
        self.last_ts = Some(ts);
        Ok(())
    }

    fn finding_line(&mut self, f: &FindingRecord, about: Option<u64>) -> io::Result<()> {
        let s = self.style;
        let head = format!("! {} {}", f.severity, f.code.as_str());
        let about = about.map(|m| format!(" (#{m})")).unwrap_or_default();
        let room = WIDTH.saturating_sub(LANES_AT + head.chars().count() + about.len() + 2);
        let detail = truncate(&escape_controls(&f.detail), room);
        writeln!(
            self.out,
            "{:pad$}{}{about}: {detail}",
            "",
            s.paint(Self::sev_code(f.severity), &head),
            pad = LANES_AT
        )
    }

    fn arrow(&mut self, p: &Pending) -> io::Result<()> {
        let m = &p.msg;
        let link = LinkKey::of_message(m);
        self.header(&link, m.ts)?;
        let label = arrow_label(m);
        let color = worst(&p.findings).map(Self::sev_code);
        let mut notes: Vec<(Option<&str>, String)> = vec![];
        if let Some(l) = p.latency_ms {
            notes.push((None, format!("{l:.1} ms")));
        }
        if let Some(a) = m.answer_ms {
            // The 1000 ms rule is the link's (acks, error frames), not a preflight's.
            if a > ACK_LIMIT_MS && m.role != Role::Preflight {
                notes.push((Some("1;31"), format!("late {a:.0} ms > {ACK_LIMIT_MS:.0}")));
            } else {
                notes.push((None, format!("answer {a:.1} ms")));
            }
        }
        // Timing notes go on the first line (a split message's latency runs to its
        // first fragment), finding markers on the last.
        let timing = notes.len();
        for f in &p.findings {
            notes.push((
                Some(Self::sev_code(f.severity)),
                format!("!{}", f.code.as_str()),
            ));
        }
        let (first_notes, last_notes) = notes.split_at(timing);
        let parts = m.frame.as_ref().map(|f| f.parts.as_slice()).unwrap_or(&[]);
        if parts.is_empty() {
            self.idle(m.ts)?;
            let lanes = Self::lanes(m.direction, &label, false);
            self.line(m.ts, Some(m.index), &lanes, color, &notes)?;
        } else {
            let n = parts.len();
            for (k, part) in parts.iter().enumerate() {
                if !fragment_shown(k, n) {
                    if k == FRAGMENTS_HEAD {
                        let text =
                            format!("... {} more fragments", n - FRAGMENTS_HEAD - FRAGMENTS_TAIL);
                        writeln!(
                            self.out,
                            "{:pad$}{}",
                            "",
                            self.style.dim(&text),
                            pad = LANES_AT
                        )?;
                    }
                    continue;
                }
                self.idle(part.ts)?;
                let frag = format!("frag {}/{n}", k + 1);
                let text = if k == 0 { label.clone() } else { frag.clone() };
                let lanes = Self::lanes(m.direction, &text, k > 0);
                let mut side: Vec<(Option<&str>, String)> = vec![];
                if k == 0 {
                    side.push((None, frag));
                    side.extend(first_notes.iter().cloned());
                }
                match part.gap_ms {
                    Some(g) if g > FRAGMENT_LIMIT_MS => side.push((
                        Some("1;31"),
                        format!("gap {g:.0} ms > {FRAGMENT_LIMIT_MS:.0}"),
                    )),
                    Some(g) => side.push((None, format!("gap {g:.1} ms"))),
                    None => {}
                }
                if k + 1 == n {
                    side.extend(last_notes.iter().cloned());
                }
                self.line(part.ts, (k == 0).then_some(m.index), &lanes, color, &side)?;
            }
        }
        for f in &p.findings {
            self.finding_line(f, None)?;
        }
        Ok(())
    }

    /// A finding that belongs to no message drawn here: a marker across the lanes.
    /// `hint` is the link of the message about to be drawn, which tells which end
    /// of the finding's address pair is the cash register.
    fn standalone(&mut self, f: &FindingRecord, hint: Option<&LinkKey>) -> io::Result<()> {
        let known = self.link.clone();
        let link = LinkKey::of_finding(f).map(|[a, b]| {
            if hint == Some(&b) || (hint != Some(&a) && known.as_ref() == Some(&b)) {
                b
            } else {
                a
            }
        });
        if let Some(link) = &link {
            if known.as_ref() != Some(link) && f.message.is_none() {
                self.header(link, f.ts)?;
            }
        }
        let mark = format!("✕ {}", f.code.as_str());
        let lanes = format!("│{:^width$}│", mark, width = LANES - 2);
        let c = Self::sev_code(f.severity);
        if f.message.is_none() {
            self.idle(f.ts)?;
            self.line(f.ts, None, &lanes, Some(c), &[])?;
        }
        self.finding_line(f, f.message)
    }

    fn summary(&mut self, s: &crate::record::SummaryRecord) -> io::Result<()> {
        let st = self.style;
        writeln!(self.out)?;
        let mut by = [0u64; 3];
        for (code, n) in &s.findings {
            let i = match code.severity() {
                Severity::Error => 0,
                Severity::Warning => 1,
                Severity::Info => 2,
            };
            if let Some(slot) = by.get_mut(i) {
                *slot += n;
            }
        }
        let [e, w, i] = by;
        writeln!(
            self.out,
            "{} {} packets, {} messages, {} transactions; findings: {} error, {} warning, {} info",
            st.bold("Summary:"),
            s.packets,
            s.messages,
            s.transactions,
            st.paint("1;31", &e.to_string()),
            st.paint("33", &w.to_string()),
            st.paint("36", &i.to_string()),
        )?;
        if let Some(l) = &s.latency_ms {
            writeln!(
                self.out,
                "         latency (ms): min {:.1}, median {:.1}, p95 {:.1}, max {:.1}",
                l.min, l.median, l.p95, l.max
            )?;
        }
        Ok(())
    }
}

impl<W: Write> crate::output::RecordWriter for LadderWriter<W> {
    fn write(&mut self, record: &Record) -> io::Result<()> {
        match record {
            Record::Message(m) => {
                self.flush_pending()?;
                let link = LinkKey::of_message(m);
                let mut mine = vec![];
                let mut others = vec![];
                for f in std::mem::take(&mut self.loose) {
                    let same = f.packet.is_some()
                        && f.packet == m.packet
                        && LinkKey::of_finding(&f).is_some_and(|ks| ks.contains(&link));
                    if same {
                        mine.push(f);
                    } else {
                        others.push(f);
                    }
                }
                for f in others {
                    self.standalone(&f, Some(&link))?;
                }
                self.pending = Some(Pending {
                    msg: m.clone(),
                    findings: mine,
                    latency_ms: None,
                });
            }
            Record::Finding(f) => match (&mut self.pending, f.message) {
                (Some(p), Some(n)) if p.msg.index == n => p.findings.push(f.clone()),
                (_, None) => {
                    if self.loose.len() >= LOOSE_MAX {
                        self.flush_pending()?;
                        self.flush_loose()?;
                    }
                    self.loose.push(f.clone());
                }
                _ => {
                    self.flush_pending()?;
                    self.flush_loose()?;
                    self.standalone(f, None)?;
                }
            },
            Record::Transaction(t) => {
                if let Some(p) = &mut self.pending {
                    if t.response == Some(p.msg.index) {
                        p.latency_ms = Some(t.latency_ms);
                    }
                }
            }
            Record::Summary(s) => {
                self.flush_pending()?;
                self.flush_loose()?;
                self.summary(s)?;
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        self.flush_pending()?;
        self.flush_loose()?;
        self.out.flush()
    }
}

/// At most `max` characters of `s`, with an ellipsis when cut.
fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// "12.3 s", "4 min 05 s", "2 h 03 min".
pub fn human_secs(s: f64) -> String {
    if s < 60.0 {
        format!("{s:.1} s")
    } else if s < 3600.0 {
        format!("{} min {:02} s", (s / 60.0) as u64, (s % 60.0) as u64)
    } else {
        format!(
            "{} h {:02} min",
            (s / 3600.0) as u64,
            (s % 3600.0 / 60.0) as u64
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape_controls("a\x1b[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(escape_controls("x\ny\u{202e}"), "x\\ny\\u{202e}");
        assert_eq!(escape_controls_keep_lines("x\ny\r"), "x\ny\\r");
        assert_eq!(escape_controls("plain 中文"), "plain 中文");
    }

    #[test]
    fn truncation_counts_characters() {
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abc", 4), "abc");
    }

    #[test]
    fn lanes_have_fixed_width() {
        for dir in [Direction::EcrToPos, Direction::PosToEcr] {
            for label in ["", "x", &"y".repeat(200)] {
                let l = LadderWriter::<Vec<u8>>::lanes(dir, label, false);
                assert_eq!(l.chars().count(), LANES, "{l}");
            }
        }
    }
}
