//! Live capture from a network interface with libpcap.
//!
//! The capture runs in immediate mode (each packet is handed over as it arrives,
//! not when the kernel's buffer block fills). libpcap's read timeout cannot be
//! relied on to return on a silent interface (on Linux with TPACKET_V3 it waits in
//! `poll` until a packet comes, even through SIGINT); so reads block, and a
//! [`Waker`] handed to another thread ends a blocked read when the caller wants to
//! stop. A BPF filter keeps
//! everything but the ECR ports in the kernel.

use ecr_capture::source::Packet;
use ecr_proto::Timestamp;
use pcap::{Active, BreakLoop, Capture, Device};

/// libpcap's read timeout (where the platform honours it).
pub const READ_TIMEOUT_MS: i32 = 100;
/// Kernel buffer for packets not yet read. libpcap's default (2 MiB) holds only
/// about 30 loopback-sized packets in immediate mode (one 64 KiB slot each), and a
/// burst larger than that is dropped while the previous packets are decoded.
pub const BUFFER_SIZE: i32 = 32 << 20;
/// Bytes kept per packet: everything (ECR messages span segments; a cut packet
/// would be a hole in the stream).
pub const SNAPLEN: i32 = 262_144;

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
    /// Packets the kernel dropped because they were not read fast enough.
    pub dropped: u32,
}

impl NetTap {
    /// Opens `name` with `filter`, in immediate mode, not promiscuous unless asked.
    pub fn open(name: &str, filter: &str, promisc: bool) -> Result<NetTap, NetError> {
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
            .immediate_mode(true)
            .timeout(READ_TIMEOUT_MS)
            .snaplen(SNAPLEN)
            .buffer_size(BUFFER_SIZE)
            .promisc(promisc)
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
            dropped: s.dropped.saturating_add(s.if_dropped),
        })
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
