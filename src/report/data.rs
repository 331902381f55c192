//! The report's data: the analyzer's records (the same ones `--format jsonl` prints)
//! collected with bounds, grouped into links, with the broken timing rules worked
//! out. The HTML embeds this as a JSON block, and the golden tests compare it.

use std::collections::{BTreeMap, HashMap};

use ecr_capture::findings::{Code, Severity};
use ecr_capture::ladder::{self, LinkKey, ACK_LIMIT_MS, FRAGMENT_LIMIT_MS};
use ecr_capture::record::{
    FindingRecord, MessageRecord, Record, Role, Sink, SummaryRecord, TransactionRecord, Transport,
};
use serde::Serialize;

/// Messages drawn in the ladders (all links together), each with its text form.
/// Later messages are counted, not drawn.
pub const MAX_ARROWS: usize = 2000;
/// Rows of the transactions table.
pub const MAX_TRANSACTIONS: usize = 5000;
/// Rows of the findings list.
pub const MAX_FINDINGS: usize = 2000;
/// Links (ladders); messages of further links are counted only.
pub const MAX_LINKS: usize = 64;
/// Latency samples kept for the charts (the chart over time draws at most
/// [`MAX_CHART_POINTS`] of them, evenly spread).
pub const MAX_LATENCIES: usize = 1_000_000;
/// Points in the latency-over-time chart.
pub const MAX_CHART_POINTS: usize = 3000;
/// Bytes of one message's text form in the report.
pub const MAX_TEXT_BYTES: usize = 16 * 1024;

/// Everything the report shows.
#[derive(Debug, Serialize)]
pub struct ReportData {
    /// Version of this structure.
    pub format: u32,
    /// The header.
    pub header: Header,
    /// What was left out, if anything.
    pub truncated: Vec<String>,
    /// One ladder per link.
    pub links: Vec<Link>,
    /// The messages drawn, as jsonl prints them.
    pub messages: Vec<MessageRecord>,
    /// The transactions listed, as jsonl prints them.
    pub transactions: Vec<TransactionRecord>,
    /// The findings listed, as jsonl prints them, with where they are drawn.
    pub findings: Vec<FindingRow>,
    /// Latency histogram over all transactions.
    pub histogram: Vec<Bin>,
    /// (capture time, latency ms) of transactions for the chart over time: at most
    /// [`MAX_CHART_POINTS`], evenly spread.
    pub latency: Vec<(f64, f64)>,
    /// The summary record.
    pub summary: SummaryRecord,
}

/// The report header.
#[derive(Debug, Serialize)]
pub struct Header {
    /// Files analysed.
    pub files: Vec<String>,
    /// First and last capture time of any message or finding.
    pub first_ts: Option<f64>,
    /// See `first_ts`.
    pub last_ts: Option<f64>,
    /// Packets read.
    pub packets: u64,
    /// Messages decoded.
    pub messages: u64,
    /// Transactions.
    pub transactions: u64,
    /// Findings by severity.
    pub findings: BTreeMap<&'static str, u64>,
    /// How many keys were given.
    pub keys_given: usize,
    /// Which keys decrypted messages, by number (never the key).
    pub keys_used: Vec<KeyCount>,
}

/// A key that decrypted messages.
#[derive(Debug, Serialize)]
pub struct KeyCount {
    /// 1-based position among the keys given.
    pub index: usize,
    /// How its text was read.
    pub interpretation: &'static str,
    /// Messages it decrypted.
    pub messages: u64,
}

/// One ladder.
#[derive(Debug, Serialize)]
pub struct Link {
    /// Position in `links` (1-based, as in the HTML ids).
    pub id: usize,
    /// Transport.
    pub transport: Transport,
    /// The cash register's end.
    pub ecr: String,
    /// The terminal's end.
    pub pos: String,
    /// Human label.
    pub label: String,
    /// Messages on this link in the capture.
    pub messages: u64,
    /// Those drawn (message numbers).
    pub drawn: Vec<u64>,
    /// Timing rules broken on this link.
    pub rules: Vec<RuleMark>,
}

/// A broken timing rule, drawn as a bracket from `from_ts` to `to_ts`.
#[derive(Debug, Serialize)]
pub struct RuleMark {
    /// "ack-late" (an answer came after 1000 ms), "ack-missing" (none came within
    /// 1000 ms), "fragment-gap" (more than 500 ms between fragments).
    pub kind: &'static str,
    /// The message it concerns, if drawn.
    pub message: Option<u64>,
    /// Start of the measured stretch (capture time).
    pub from_ts: f64,
    /// End of it.
    pub to_ts: f64,
    /// Its length in ms.
    pub ms: f64,
    /// The limit broken.
    pub limit_ms: f64,
}

/// A finding and where it is drawn.
#[derive(Debug, Serialize)]
pub struct FindingRow {
    /// The record, as jsonl prints it.
    #[serde(flatten)]
    pub record: FindingRecord,
    /// The link whose ladder shows it.
    pub link: Option<usize>,
    /// The drawn message it is marked on (its own message, or the message of its
    /// packet on its link).
    pub arrow: Option<u64>,
}

/// A histogram bar.
#[derive(Debug, Serialize)]
pub struct Bin {
    /// From (ms, inclusive).
    pub from_ms: f64,
    /// To (ms, exclusive; inclusive for the last).
    pub to_ms: f64,
    /// Transactions.
    pub count: u64,
}

struct LinkAcc {
    key: LinkKey,
    messages: u64,
    drawn: Vec<u64>,
}

/// Collects the analyzer's records, keeping at most the limits above.
#[derive(Default)]
pub struct Collector {
    messages: Vec<MessageRecord>,
    /// Message number -> link position, for drawn messages.
    msg_link: HashMap<u64, usize>,
    /// Findings that name no message, waiting for the next message record: the
    /// analyzer reports a problem of a packet just before the message it makes
    /// (packet numbers restart in each file, so only the order tells).
    loose: Vec<usize>,
    /// For each finding kept: the drawn message it is marked on.
    arrows: Vec<Option<u64>>,
    links: Vec<LinkAcc>,
    link_ids: HashMap<LinkKey, usize>,
    transactions: Vec<TransactionRecord>,
    findings: Vec<FindingRecord>,
    latencies: Vec<(f64, f64)>,
    keys: BTreeMap<usize, (&'static str, u64)>,
    total_messages: u64,
    undrawn_links: u64,
    total_transactions: u64,
    total_findings: u64,
    first_ts: Option<f64>,
    last_ts: Option<f64>,
    summary: Option<SummaryRecord>,
}

impl Collector {
    fn seen(&mut self, ts: f64) {
        if ts > 0.0 && ts.is_finite() {
            self.first_ts = Some(self.first_ts.map_or(ts, |f| f.min(ts)));
            self.last_ts = Some(self.last_ts.map_or(ts, |l| l.max(ts)));
        }
    }

    fn message(&mut self, m: MessageRecord) {
        self.total_messages += 1;
        self.seen(m.ts);
        if let Some(k) = &m.key {
            let e = self.keys.entry(k.index).or_insert((k.interpretation, 0));
            e.1 += 1;
        }
        let key = LinkKey::of_message(&m);
        let link_key = key.clone();
        let id = match self.link_ids.get(&key) {
            Some(&id) => Some(id),
            None if self.links.len() < MAX_LINKS => {
                self.links.push(LinkAcc {
                    key: key.clone(),
                    messages: 0,
                    drawn: vec![],
                });
                let id = self.links.len() - 1;
                self.link_ids.insert(key, id);
                Some(id)
            }
            None => None,
        };
        let loose = std::mem::take(&mut self.loose);
        let Some(id) = id else {
            self.undrawn_links += 1;
            return;
        };
        let Some(link) = self.links.get_mut(id) else {
            return;
        };
        link.messages += 1;
        if self.messages.len() < MAX_ARROWS {
            link.drawn.push(m.index);
            self.msg_link.insert(m.index, id);
            for i in loose {
                let Some(f) = self.findings.get(i) else {
                    continue;
                };
                let same = f.packet.is_some()
                    && f.packet == m.packet
                    && LinkKey::of_finding(f).is_some_and(|ks| ks.contains(&link_key));
                if same {
                    if let Some(slot) = self.arrows.get_mut(i) {
                        *slot = Some(m.index);
                    }
                }
            }
            self.messages.push(m);
        }
    }

    /// The data, once every record is in.
    pub fn finish(self, keys_given: usize) -> ReportData {
        let summary = self.summary.clone().unwrap_or_default();
        let mut truncated = vec![];
        if self.total_messages > self.messages.len() as u64 {
            truncated.push(format!(
                "The ladders show the first {} of {} messages (limit {MAX_ARROWS}{}); the \
                 counts, findings, transactions and charts cover them all.",
                self.messages.len(),
                self.total_messages,
                if self.undrawn_links > 0 {
                    format!(", and at most {MAX_LINKS} links")
                } else {
                    String::new()
                }
            ));
        }
        if self.total_transactions > self.transactions.len() as u64 {
            truncated.push(format!(
                "The transactions table lists the first {} of {} transactions (limit \
                 {MAX_TRANSACTIONS}).",
                self.transactions.len(),
                self.total_transactions
            ));
        }
        if self.total_findings > self.findings.len() as u64 {
            truncated.push(format!(
                "The findings list shows the first {} of {} findings (limit {MAX_FINDINGS}).",
                self.findings.len(),
                self.total_findings
            ));
        }
        if self.total_transactions > self.latencies.len() as u64 {
            truncated.push(format!(
                "The latency charts use the first {} transactions.",
                self.latencies.len()
            ));
        }

        // Findings: where each is drawn.
        let findings: Vec<FindingRow> = self
            .findings
            .into_iter()
            .zip(self.arrows)
            .map(|(f, next)| {
                let (link, arrow) =
                    place_finding(&f, next, &self.msg_link, &self.links, &self.link_ids);
                FindingRow {
                    record: f,
                    link: link.map(|l| l + 1),
                    arrow,
                }
            })
            .collect();

        // Broken timing rules, per link.
        let mut rules: Vec<Vec<RuleMark>> = self.links.iter().map(|_| vec![]).collect();
        let mut late_acks: HashMap<(usize, u64), ()> = HashMap::new();
        for m in &self.messages {
            let Some(&l) = self.msg_link.get(&m.index) else {
                continue;
            };
            let Some(rs) = rules.get_mut(l) else { continue };
            if let Some(a) = m
                .answer_ms
                .filter(|a| *a > ACK_LIMIT_MS && m.role != Role::Preflight)
            {
                rs.push(RuleMark {
                    kind: "ack-late",
                    message: Some(m.index),
                    from_ts: m.ts - a / 1000.0,
                    to_ts: m.ts,
                    ms: a,
                    limit_ms: ACK_LIMIT_MS,
                });
                if let Some(p) = m.packet {
                    late_acks.insert((l, p), ());
                }
            }
            for part in m.frame.iter().flat_map(|f| f.parts.iter()) {
                if let Some(g) = part.gap_ms.filter(|g| *g > FRAGMENT_LIMIT_MS) {
                    rs.push(RuleMark {
                        kind: "fragment-gap",
                        message: Some(m.index),
                        from_ts: part.ts - g / 1000.0,
                        to_ts: part.ts,
                        ms: g,
                        limit_ms: FRAGMENT_LIMIT_MS,
                    });
                }
            }
        }
        for f in &findings {
            let Some(l) = f.link.map(|l| l - 1) else {
                continue;
            };
            if f.record.code != Code::AckTimeout {
                continue;
            }
            if f.record
                .packet
                .is_some_and(|p| late_acks.contains_key(&(l, p)))
            {
                continue;
            }
            if let Some(rs) = rules.get_mut(l) {
                rs.push(RuleMark {
                    kind: "ack-missing",
                    message: None,
                    from_ts: f.record.ts - ACK_LIMIT_MS / 1000.0,
                    to_ts: f.record.ts,
                    ms: ACK_LIMIT_MS,
                    limit_ms: ACK_LIMIT_MS,
                });
            }
        }

        let links = self
            .links
            .into_iter()
            .zip(rules)
            .enumerate()
            .map(|(i, (l, rules))| Link {
                id: i + 1,
                transport: l.key.transport,
                label: l.key.label(),
                ecr: ladder::escape_controls(&l.key.ecr),
                pos: ladder::escape_controls(&l.key.pos),
                messages: l.messages,
                drawn: l.drawn,
                rules,
            })
            .collect();

        let mut by_sev: BTreeMap<&'static str, u64> =
            [Severity::Error, Severity::Warning, Severity::Info]
                .iter()
                .map(|s| (s.as_str(), 0))
                .collect();
        for (code, n) in &summary.findings {
            *by_sev.entry(code.severity().as_str()).or_insert(0) += n;
        }

        ReportData {
            format: 1,
            header: Header {
                files: summary.files.clone(),
                first_ts: self.first_ts,
                last_ts: self.last_ts,
                packets: summary.packets,
                messages: summary.messages,
                transactions: summary.transactions,
                findings: by_sev,
                keys_given,
                keys_used: self
                    .keys
                    .into_iter()
                    .map(|(index, (interpretation, messages))| KeyCount {
                        index,
                        interpretation,
                        messages,
                    })
                    .collect(),
            },
            truncated,
            links,
            messages: self.messages,
            transactions: self.transactions,
            findings,
            histogram: histogram(&self.latencies),
            latency: spread(&self.latencies, MAX_CHART_POINTS),
            summary,
        }
    }
}

/// The link whose ladder shows a finding, and the drawn message it is marked on:
/// the message it names, or the one its packet made (`next`).
fn place_finding(
    f: &FindingRecord,
    next: Option<u64>,
    msg_link: &HashMap<u64, usize>,
    links: &[LinkAcc],
    link_ids: &HashMap<LinkKey, usize>,
) -> (Option<usize>, Option<u64>) {
    for n in [f.message, next].into_iter().flatten() {
        if let Some(&l) = msg_link.get(&n) {
            return (Some(l), Some(n));
        }
    }
    let link = LinkKey::of_finding(f)
        .and_then(|ks| ks.iter().find_map(|k| link_ids.get(k).copied()))
        .filter(|l| *l < links.len());
    (link, None)
}

/// At most `max` of `all`, evenly spread.
fn spread(all: &[(f64, f64)], max: usize) -> Vec<(f64, f64)> {
    let n = all.len();
    if n <= max {
        return all.to_vec();
    }
    (0..max)
        .filter_map(|i| all.get(i * n / max).copied())
        .collect()
}

/// Twenty equal bins from 0 to the largest latency.
fn histogram(samples: &[(f64, f64)]) -> Vec<Bin> {
    const BINS: usize = 20;
    let max = samples.iter().map(|s| s.1).fold(0.0f64, f64::max);
    if samples.is_empty() {
        return vec![];
    }
    let width = nice_step(max / BINS as f64);
    let bins = ((max / width).floor() as usize + 1).clamp(1, BINS + 1);
    let mut out: Vec<Bin> = (0..bins)
        .map(|i| Bin {
            from_ms: i as f64 * width,
            to_ms: (i + 1) as f64 * width,
            count: 0,
        })
        .collect();
    for (_, ms) in samples {
        let i = ((ms.max(0.0) / width).floor() as usize).min(bins - 1);
        if let Some(b) = out.get_mut(i) {
            b.count += 1;
        }
    }
    out
}

/// A round step (1, 2 or 5 times a power of ten) at least `raw`.
pub fn nice_step(raw: f64) -> f64 {
    if !(raw.is_finite() && raw > 0.0) {
        return 1.0;
    }
    let p = 10f64.powf(raw.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * p >= raw {
            return m * p;
        }
    }
    10.0 * p
}

impl Sink for Collector {
    fn record(&mut self, record: Record) {
        match record {
            Record::Message(m) => self.message(*m),
            Record::Transaction(t) => {
                self.total_transactions += 1;
                self.seen(t.ts);
                if self.latencies.len() < MAX_LATENCIES {
                    self.latencies.push((t.ts, t.latency_ms));
                }
                if self.transactions.len() < MAX_TRANSACTIONS {
                    self.transactions.push(t);
                }
            }
            Record::Finding(f) => {
                self.total_findings += 1;
                self.seen(f.ts);
                if self.findings.len() < MAX_FINDINGS {
                    if f.message.is_none() {
                        self.loose.push(self.findings.len());
                    }
                    self.findings.push(f);
                    self.arrows.push(None);
                }
            }
            Record::Summary(s) => self.summary = Some(s),
        }
    }
}
