//! Live capture from a network interface with libpcap.
//!
//! [`NetTap::spawn`] moves the capture to a thread of its own that does nothing but
//! drain libpcap into a bounded queue ([`QueueLimits`]): decoding and output run on
//! the caller's thread, so a burst waits in the queue (and, before that, in the
//! kernel buffer, sized by [`TapOptions::buffer_size`]) instead of being dropped
//! by the kernel while earlier packets are decoded. What is lost anyway is counted
//! where it was lost ([`NetDrops`]: the kernel, the interface, the queue).
//!
//! The kernel hands packets over in blocks (TPACKET_V3), a block when it is full
//! or [`READ_TIMEOUT_MS`] after its first packet, so a lone packet waits at most
//! that long; immediate mode ([`TapOptions::immediate`]) would give each packet a
//! 64 KiB slot on loopback and hold few of them. libpcap's read timeout does not
//! return on a silent interface (on Linux it waits in `poll` until a packet
//! comes), so reads block, and [`Waker`] (used by [`Drain::stop`]) ends a blocked
//! read. A BPF filter keeps everything but the ECR ports in the kernel.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ecr_capture::source::Packet;
use ecr_proto::Timestamp;
use pcap::{Active, BreakLoop, Capture, Device};

/// libpcap's read timeout: the longest a packet waits in a kernel block.
pub const READ_TIMEOUT_MS: i32 = 20;
/// Default kernel buffer for packets not yet read (`--buffer-size`). The capture
/// thread moves packets to its queue as they come, so the kernel buffer only bridges
/// its short pauses: 8 MiB held a 320 K packets/s replay on `lo` without a loss. A
/// larger one works as well (512 MiB too) but is memory the process holds from the
/// start (the ring is mapped in whole) and takes longer to set up (about 0.5 s for
/// 512 MiB).
pub const BUFFER_SIZE: usize = 8 << 20;
/// Bytes kept per packet: everything (ECR messages span segments; a cut packet
/// would be a hole in the stream).
pub const SNAPLEN: i32 = 262_144;

/// How the capture is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TapOptions {
    /// Promiscuous mode.
    pub promisc: bool,
    /// Kernel buffer in bytes.
    pub buffer_size: usize,
    /// Each packet handed over as it arrives (one slot of the interface's MTU per
    /// packet in the kernel buffer) instead of in blocks.
    pub immediate: bool,
}

impl Default for TapOptions {
    fn default() -> Self {
        TapOptions {
            promisc: false,
            buffer_size: BUFFER_SIZE,
            immediate: false,
        }
    }
}

/// Bounds of the queue between the capture thread and the analyzer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// Most packets queued.
    pub packets: usize,
    /// Most packet bytes queued.
    pub bytes: usize,
}

impl Default for QueueLimits {
    fn default() -> Self {
        QueueLimits {
            packets: 131_072,
            bytes: 64 << 20,
        }
    }
}

/// Errors of the network tap. Each names the interface and what to do.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// No interface of that name.
    #[error(
        "no network interface named {name:?} (interfaces: {available}; see --list-interfaces)"
    )]
    NoSuchInterface {
        /// The name asked for.
        name: String,
        /// Names that exist.
        available: String,
    },
    /// The system refused to capture.
    #[error(
        "capturing on {name} is not permitted ({detail}): run as root, or give the program \
         the capabilities CAP_NET_RAW and CAP_NET_ADMIN \
         (sudo setcap cap_net_raw,cap_net_admin=eip \"$(command -v ecr-sniff)\")"
    )]
    NotPermitted {
        /// The interface.
        name: String,
        /// libpcap's message.
        detail: String,
    },
    /// The BPF filter does not compile.
    #[error("bad capture filter {filter:?}: {detail}")]
    BadFilter {
        /// The filter text.
        filter: String,
        /// libpcap's message.
        detail: String,
    },
    /// Anything else libpcap reported.
    #[error("capture on {name}: {detail}")]
    Pcap {
        /// The interface ("" when listing).
        name: String,
        /// libpcap's message.
        detail: String,
    },
}

fn classify(name: &str, e: pcap::Error) -> NetError {
    let detail = e.to_string();
    let lower = detail.to_ascii_lowercase();
    if lower.contains("permission")
        || lower.contains("not permitted")
        || lower.contains("eperm")
        || lower.contains("eacces")
    {
        NetError::NotPermitted {
            name: name.to_string(),
            detail,
        }
    } else if lower.contains("no such device") {
        NetError::NoSuchInterface {
            name: name.to_string(),
            available: available_names(),
        }
    } else {
        NetError::Pcap {
            name: name.to_string(),
            detail,
        }
    }
}

fn available_names() -> String {
    match Device::list() {
        Ok(list) if !list.is_empty() => list
            .iter()
            .map(|d| d.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        _ => "none found".into(),
    }
}

/// One interface as `--list-interfaces` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceInfo {
    /// The name to pass to `-i`.
    pub name: String,
    /// A description, when the system has one.
    pub description: Option<String>,
    /// Its addresses.
    pub addresses: Vec<String>,
    /// Up and running.
    pub up: bool,
    /// The loopback interface.
    pub loopback: bool,
}

/// The interfaces libpcap can capture on.
pub fn list_interfaces() -> Result<Vec<InterfaceInfo>, NetError> {
    let list = Device::list().map_err(|e| classify("", e))?;
    Ok(list
        .into_iter()
        .map(|d| InterfaceInfo {
            up: d.flags.is_up() && d.flags.is_running(),
            loopback: d.flags.is_loopback(),
            addresses: d.addresses.iter().map(|a| a.addr.to_string()).collect(),
            description: d.desc,
            name: d.name,
        })
        .collect())
}

/// The default BPF filter: TCP on the given ports (every TCP port with `probe`),
/// plus IPv4 fragments after the first, which carry no ports but may carry ECR
/// bytes the analyzer reassembles.
pub fn default_filter(ports: &[u16], probe: bool) -> String {
    let frags = "(ip and ip[6:2] & 0x1fff != 0)";
    if probe || ports.is_empty() {
        return format!("tcp or {frags}");
    }
    let mut ports: Vec<u16> = ports.to_vec();
    ports.sort_unstable();
    ports.dedup();
    let list = ports
        .iter()
        .map(|p| format!("tcp port {p}"))
        .collect::<Vec<_>>()
        .join(" or ");
    format!("{list} or {frags}")
}

/// An open live capture.
pub struct NetTap {
    cap: Capture<Active>,
    name: String,
    linktype: u32,
    index: u64,
}

impl std::fmt::Debug for NetTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetTap")
            .field("name", &self.name)
            .field("linktype", &self.linktype)
            .finish()
    }
}

/// Ends a blocked [`NetTap::next_packet`] (libpcap's `pcap_breakloop`, which also wakes
/// its `poll`). Safe to use from any thread, also after the capture is closed.
pub struct Waker(BreakLoop);

impl Waker {
    /// Makes the current or next read return `None`.
    pub fn wake(&self) {
        self.0.breakloop();
    }
}

impl std::fmt::Debug for Waker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Waker")
    }
}

/// Counters from the kernel at the end of a capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetStats {
    /// Packets that passed the filter.
    pub received: u32,
    /// Packets the kernel dropped because they were not read fast enough
    /// (`ps_drop`).
    pub dropped: u32,
    /// Packets the interface or its driver dropped (`ps_ifdrop`).
    pub if_dropped: u32,
}

impl NetTap {
    /// Opens `name` with `filter` and the default [`TapOptions`], not promiscuous
    /// unless asked.
    pub fn open(name: &str, filter: &str, promisc: bool) -> Result<NetTap, NetError> {
        NetTap::open_with(
            name,
            filter,
            &TapOptions {
                promisc,
                ..TapOptions::default()
            },
        )
    }

    /// Opens `name` with `filter` and the given options.
    pub fn open_with(name: &str, filter: &str, o: &TapOptions) -> Result<NetTap, NetError> {
        // Check the name first: libpcap's own messages for a missing interface vary
        // between versions and some only speak of permissions.
        let list = Device::list().map_err(|e| classify(name, e))?;
        if !list.iter().any(|d| d.name == name) {
            return Err(NetError::NoSuchInterface {
                name: name.to_string(),
                available: available_names(),
            });
        }
        let cap = Capture::from_device(name)
            .map_err(|e| classify(name, e))?
            .immediate_mode(o.immediate)
            .timeout(READ_TIMEOUT_MS)
            .snaplen(SNAPLEN)
            .buffer_size(i32::try_from(o.buffer_size).unwrap_or(i32::MAX))
            .promisc(o.promisc)
            .open()
            .map_err(|e| classify(name, e))?;
        let mut cap = cap;
        cap.filter(filter, true).map_err(|e| NetError::BadFilter {
            filter: filter.to_string(),
            detail: e.to_string(),
        })?;
        let linktype = u32::try_from(cap.get_datalink().0).unwrap_or(0);
        Ok(NetTap {
            cap,
            name: name.to_string(),
            linktype,
            index: 0,
        })
    }

    /// The interface's LINKTYPE_* value.
    pub fn linktype(&self) -> u32 {
        self.linktype
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A handle that ends a [`NetTap::next_packet`] blocked in another thread.
    pub fn waker(&mut self) -> Waker {
        Waker(self.cap.breakloop_handle())
    }

    /// The next packet; `None` when libpcap's timeout passed without one or a
    /// [`Waker`] interrupted the read.
    pub fn next_packet(&mut self) -> Result<Option<Packet<'_>>, NetError> {
        match self.cap.next_packet() {
            Ok(p) => {
                self.index += 1;
                let ts = Timestamp::from_parts(
                    p.header.ts.tv_sec,
                    u32::try_from(p.header.ts.tv_usec)
                        .unwrap_or(0)
                        .saturating_mul(1000)
                        .min(999_999_999),
                );
                Ok(Some(Packet {
                    index: self.index,
                    ts,
                    linktype: self.linktype,
                    data: p.data,
                    orig_len: p.header.len,
                    interface: 0,
                    direction: None,
                }))
            }
            // -2 from pcap_next_ex: pcap_breakloop was called.
            Err(pcap::Error::TimeoutExpired) | Err(pcap::Error::NoMorePackets) => Ok(None),
            Err(e) => Err(classify(&self.name, e)),
        }
    }

    /// The kernel's counters.
    pub fn stats(&mut self) -> Option<NetStats> {
        self.cap.stats().ok().map(|s| NetStats {
            received: s.received,
            dropped: s.dropped,
            if_dropped: s.if_dropped,
        })
    }
}

/// A captured packet, owned, on its way from the capture thread to the analyzer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedPacket {
    /// Capture time.
    pub ts: Timestamp,
    /// The bytes captured.
    pub data: Vec<u8>,
    /// Length on the wire.
    pub orig_len: u32,
}

impl OwnedPacket {
    /// The packet as the analyzer takes it; `index` is its 1-based number among
    /// the packets analysed (and written with `-w`).
    pub fn as_packet(&self, index: u64, linktype: u32) -> Packet<'_> {
        Packet {
            index,
            ts: self.ts,
            linktype,
            data: &self.data,
            orig_len: self.orig_len,
            interface: 0,
            direction: None,
        }
    }
}

/// Packets lost so far, by where they were lost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetDrops {
    /// Packets that passed the filter (libpcap `ps_recv`; on `lo` each packet is
    /// counted twice, going out and coming in).
    pub received: u64,
    /// Dropped by the kernel: its buffer was full (`ps_drop`).
    pub kernel: u64,
    /// Dropped by the interface or its driver (`ps_ifdrop`).
    pub interface: u64,
    /// Captured, but the queue to the analyzer was full.
    pub queue: u64,
}

impl NetDrops {
    /// All packets lost.
    pub fn total(&self) -> u64 {
        self.kernel
            .saturating_add(self.interface)
            .saturating_add(self.queue)
    }
}

#[derive(Debug, Default)]
struct Counters {
    read: AtomicU64,
    received: AtomicU64,
    kernel: AtomicU64,
    interface: AtomicU64,
    queue: AtomicU64,
}

/// How often the capture thread reads the kernel's counters while packets come.
const STATS_EVERY: Duration = Duration::from_millis(200);

/// [`Drain::stop`] ends the capture thread's read once it has read nothing for
/// this long: far longer than a kernel block waits, and long enough for a thread
/// that waited for a core on a loaded machine to get one.
const STOP_IDLE: Duration = Duration::from_millis(500);
/// Longest [`Drain::stop`] goes on reading what the kernel holds.
const STOP_PATIENCE: Duration = Duration::from_secs(5);

/// The capture thread of [`NetTap::spawn`] and its queue.
pub struct Drain {
    rx: Receiver<OwnedPacket>,
    queued: Arc<AtomicUsize>,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    waker: Waker,
    thread: Option<JoinHandle<Result<(), NetError>>>,
    linktype: u32,
}

impl std::fmt::Debug for Drain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Drain")
            .field("linktype", &self.linktype)
            .field("drops", &self.drops())
            .finish()
    }
}

impl NetTap {
    /// Starts the capture thread: it reads packets and queues them (up to
    /// `limits`; past that they are dropped and counted) and reads the kernel's
    /// counters, nothing else.
    pub fn spawn(mut self, limits: QueueLimits) -> std::io::Result<Drain> {
        let (tx, rx) = mpsc::sync_channel::<OwnedPacket>(limits.packets.max(1));
        let queued = Arc::new(AtomicUsize::new(0));
        let counters = Arc::new(Counters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let waker = self.waker();
        let linktype = self.linktype;
        let thread = {
            let (queued, counters, stop) = (
                Arc::clone(&queued),
                Arc::clone(&counters),
                Arc::clone(&stop),
            );
            std::thread::Builder::new()
                .name("ecr-capture".into())
                .spawn(move || self.drain(&tx, &queued, &counters, &stop, limits.bytes))?
        };
        Ok(Drain {
            rx,
            queued,
            counters,
            stop,
            waker,
            thread: Some(thread),
            linktype,
        })
    }

    fn update(&mut self, c: &Counters) {
        if let Some(s) = self.stats() {
            c.received.store(u64::from(s.received), Ordering::Relaxed);
            c.kernel.store(u64::from(s.dropped), Ordering::Relaxed);
            c.interface
                .store(u64::from(s.if_dropped), Ordering::Relaxed);
        }
    }

    fn drain(
        &mut self,
        tx: &SyncSender<OwnedPacket>,
        queued: &AtomicUsize,
        c: &Counters,
        stop: &AtomicBool,
        max_bytes: usize,
    ) -> Result<(), NetError> {
        let mut stats_at = Instant::now();
        let result = loop {
            let owned = match self.next_packet() {
                Ok(Some(p)) => OwnedPacket {
                    ts: p.ts,
                    data: p.data.to_vec(),
                    orig_len: p.orig_len,
                },
                // A timeout, or the wake-up of Drain::stop once nothing is left.
                Ok(None) if stop.load(Ordering::Relaxed) => break Ok(()),
                Ok(None) => {
                    self.update(c);
                    stats_at = Instant::now();
                    continue;
                }
                Err(e) => break Err(e),
            };
            c.read.fetch_add(1, Ordering::Relaxed);
            let len = owned.data.len();
            let room = queued.load(Ordering::Relaxed).saturating_add(len) <= max_bytes;
            let sent = if room {
                queued.fetch_add(len, Ordering::Relaxed);
                match tx.try_send(owned) {
                    Ok(()) => true,
                    Err(TrySendError::Full(_)) => {
                        queued.fetch_sub(len, Ordering::Relaxed);
                        false
                    }
                    // The analyzer is gone: nothing more to do.
                    Err(TrySendError::Disconnected(_)) => break Ok(()),
                }
            } else {
                false
            };
            if !sent {
                c.queue.fetch_add(1, Ordering::Relaxed);
            }
            if stats_at.elapsed() >= STATS_EVERY {
                self.update(c);
                stats_at = Instant::now();
            }
        };
        self.update(c);
        result
    }
}

impl Drain {
    /// The link type of the packets.
    pub fn linktype(&self) -> u32 {
        self.linktype
    }

    /// The next packet, waiting at most `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<OwnedPacket> {
        let p = self.rx.recv_timeout(timeout).ok()?;
        self.queued.fetch_sub(p.data.len(), Ordering::Relaxed);
        Some(p)
    }

    /// Whether packets are queued.
    pub fn has_queued(&self) -> bool {
        self.queued.load(Ordering::Relaxed) > 0
    }

    /// The next packet if one is queued.
    pub fn try_recv(&self) -> Option<OwnedPacket> {
        let p = self.rx.try_recv().ok()?;
        self.queued.fetch_sub(p.data.len(), Ordering::Relaxed);
        Some(p)
    }

    /// Whether the capture thread has ended (after an error; see [`Drain::stop`]).
    pub fn ended(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// The losses so far (the kernel's counters as last read, at most
    /// 200 ms old while packets come).
    pub fn drops(&self) -> NetDrops {
        let c = &self.counters;
        NetDrops {
            received: c.received.load(Ordering::Relaxed),
            kernel: c.kernel.load(Ordering::Relaxed),
            interface: c.interface.load(Ordering::Relaxed),
            queue: c.queue.load(Ordering::Relaxed),
        }
    }

    /// Stops the capture thread and waits for it; the packets still queued can
    /// then be taken with [`Drain::try_recv`]. Returns the thread's error, if any.
    pub fn stop(&mut self) -> Result<(), NetError> {
        self.stop.store(true, Ordering::Relaxed);
        // What the kernel already holds is read first: the thread is woken (which
        // ends its read even with packets left) only once it has made no progress
        // for STOP_IDLE.
        let started = Instant::now();
        if self.thread.is_some() {
            loop {
                let before = self.counters.read.load(Ordering::Relaxed);
                std::thread::sleep(STOP_IDLE);
                let idle = self.counters.read.load(Ordering::Relaxed) == before;
                if idle || self.ended() || started.elapsed() >= STOP_PATIENCE {
                    break;
                }
            }
        }
        self.waker.wake();
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(NetError::Pcap {
                name: "capture thread".into(),
                detail: "the capture thread panicked".into(),
            }),
            None => Ok(()),
        }
    }
}

impl Drop for Drain {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_names_each_port_once() {
        assert_eq!(
            default_filter(&[9002, 9001, 9001], false),
            "tcp port 9001 or tcp port 9002 or (ip and ip[6:2] & 0x1fff != 0)"
        );
        assert!(default_filter(&[9001], true).starts_with("tcp or "));
    }

    #[test]
    fn missing_interface_is_named() {
        let e = NetTap::open("ecr-no-such-if0", "tcp", false).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("ecr-no-such-if0"), "{msg}");
        assert!(matches!(e, NetError::NoSuchInterface { .. }), "{msg}");
    }

    #[test]
    fn permission_errors_name_the_capabilities() {
        let e = classify(
            "eth0",
            pcap::Error::PcapError("socket: Operation not permitted".into()),
        );
        let msg = e.to_string();
        assert!(
            msg.contains("CAP_NET_RAW") && msg.contains("CAP_NET_ADMIN"),
            "{msg}"
        );
        assert!(msg.contains("eth0"), "{msg}");
    }
}
