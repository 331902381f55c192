//! USB captures of a USB-serial adapter (PL2303, CDC-ACM): from URBs to the serial
//! byte stream of each direction.
//!
//! Three capture formats carry URBs:
//! - Linux usbmon, link type 189 (`USB_LINUX`, a 48-byte header) and 220
//!   (`USB_LINUX_MMAPPED`, 64 bytes: the same fields plus interval, start frame,
//!   transfer flags and the number of isochronous descriptors). The header is in the
//!   capturing host's byte order, which is the file's: little-endian in practice; a
//!   header whose little-endian lengths do not fit the packet is read big-endian.
//! - Windows USBPcap, link type 249: a little-endian pseudo-header that states its own
//!   length (27 bytes, 28 for control transfers with their stage byte).
//!
//! The serial bytes are the bulk transfer payloads. Every URB is seen twice, at
//! submission and at completion; host-to-device (OUT) data is present in the
//! submission only, device-to-host (IN) data in the completion only. Taking each from
//! there counts every byte exactly once. Control and interrupt transfers carry no line
//! data and are skipped, except the CDC/PL2303 `SET_LINE_CODING` request
//! (bmRequestType 0x21, bRequest 0x20, seven data bytes: baud rate, stop bits, parity,
//! data bits), which is decoded: a wrong baud rate is a classic reason for a silent
//! link.
//!
//! [`UsbSerial`] then finds the devices that carry ECR frames (a USB capture also
//! holds keyboards, disks and hubs), decides per device which end is the cash register
//! (see [`UsbSerial`]) and hands out the bytes with their direction.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use ecr_proto::frame::FrameType;
use ecr_proto::link::Side;
use ecr_proto::reassembly::{Reassembler, ReassemblyEvent};
use ecr_proto::stream::{StreamDecoder, StreamEvent};
use ecr_proto::Timestamp;

use crate::record::{LineInfo, UsbDeviceInfo};

/// LINKTYPE_USB_LINUX: usbmon with the 48-byte header.
pub const LINKTYPE_USB_LINUX: u32 = 189;
/// LINKTYPE_USB_LINUX_MMAPPED: usbmon with the 64-byte header.
pub const LINKTYPE_USB_LINUX_MMAPPED: u32 = 220;
/// LINKTYPE_USBPCAP: Windows USBPcap.
pub const LINKTYPE_USBPCAP: u32 = 249;

/// Whether a link type is one of the USB formats read here.
pub const fn is_usb_linktype(linktype: u32) -> bool {
    matches!(
        linktype,
        LINKTYPE_USB_LINUX | LINKTYPE_USB_LINUX_MMAPPED | LINKTYPE_USBPCAP
    )
}

/// usbmon header sizes.
const USBMON_LEN: usize = 48;
const USBMON_MMAPPED_LEN: usize = 64;
/// USBPcap's fixed header part, and the largest header length accepted.
const USBPCAP_MIN_LEN: usize = 27;
const USBPCAP_MAX_LEN: usize = 4096;
/// Size of an isochronous descriptor in the mmapped format; at most this many are
/// skipped (the kernel caps them far lower).
const ISO_DESC_LEN: usize = 16;
const MAX_ISO_DESC: usize = 128;

/// A USB device: bus number and device address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId {
    /// Bus number (usbmon bus, USBPcap root hub).
    pub bus: u16,
    /// Device address on the bus.
    pub device: u16,
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.bus, self.device)
    }
}

/// Why a `BUS:DEV` text is not a device.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not BUS:DEV (two numbers such as 1:5, as tshark shows in usb.bus_id and usb.device_address)")]
pub struct DeviceIdError(pub String);

impl FromStr for DeviceId {
    type Err = DeviceIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || DeviceIdError(s.to_string());
        let (b, d) = s.trim().split_once([':', '.']).ok_or_else(err)?;
        Ok(DeviceId {
            bus: b.trim().parse().map_err(|_| err())?,
            device: d.trim().parse().map_err(|_| err())?,
        })
    }
}

/// The transfer type of a URB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransferType {
    /// Isochronous.
    Isochronous,
    /// Interrupt.
    Interrupt,
    /// Control.
    Control,
    /// Bulk: the serial data of a USB-serial adapter.
    Bulk,
    /// Anything else (USBPcap uses 0xff for "unknown").
    Other(u8),
}

impl TransferType {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => TransferType::Isochronous,
            1 => TransferType::Interrupt,
            2 => TransferType::Control,
            3 => TransferType::Bulk,
            o => TransferType::Other(o),
        }
    }
}

/// Whether a record is the URB's submission or its completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UrbEvent {
    /// usbmon 'S'; USBPcap FDO to PDO (host to device).
    Submission,
    /// usbmon 'C'; USBPcap PDO to FDO (device to host).
    Completion,
    /// usbmon 'E': the submission failed.
    Error,
}

/// One URB record, header decoded, data borrowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Urb<'a> {
    /// The URB's id (usbmon) or IRP id (USBPcap): the same in its submission and
    /// its completion.
    pub id: u64,
    /// The device.
    pub device: DeviceId,
    /// Endpoint number with the direction bit (0x80 = IN, device to host).
    pub endpoint: u8,
    /// Transfer type.
    pub transfer: TransferType,
    /// Submission or completion.
    pub event: UrbEvent,
    /// The setup packet of a control submission, when present.
    pub setup: Option<[u8; 8]>,
    /// The captured data (after any setup packet).
    pub data: &'a [u8],
    /// The header announced more data than the packet holds (snap length).
    pub truncated: bool,
    /// USBPcap control stage: 0 setup, 1 data, 2 status, 3 complete.
    pub stage: Option<u8>,
}

impl Urb<'_> {
    /// Whether data flows from the device to the host.
    pub fn is_in(&self) -> bool {
        self.endpoint & 0x80 != 0
    }
}

/// Why a USB record could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UsbError {
    /// Shorter than its header.
    #[error("USB record of {have} bytes is shorter than its {need}-byte header")]
    TooShort {
        /// Bytes needed.
        need: usize,
        /// Bytes present.
        have: usize,
    },
    /// usbmon event type other than 'S', 'C' or 'E'.
    #[error("usbmon event type 0x{0:02x} is not 'S', 'C' or 'E'")]
    BadEvent(u8),
    /// USBPcap header length out of range.
    #[error("USBPcap header length {0} is out of range (27..=4096)")]
    BadHeaderLen(usize),
    /// Not a USB link type.
    #[error("link type {0} is not a USB capture")]
    NotUsb(u32),
}

fn u16_at(d: &[u8], at: usize, be: bool) -> u16 {
    let b = [
        d.get(at).copied().unwrap_or(0),
        d.get(at + 1).copied().unwrap_or(0),
    ];
    if be {
        u16::from_be_bytes(b)
    } else {
        u16::from_le_bytes(b)
    }
}

fn u32_at(d: &[u8], at: usize, be: bool) -> u32 {
    let mut b = [0u8; 4];
    for (i, x) in b.iter_mut().enumerate() {
        *x = d.get(at + i).copied().unwrap_or(0);
    }
    if be {
        u32::from_be_bytes(b)
    } else {
        u32::from_le_bytes(b)
    }
}

/// Reads one URB record of link type `linktype`.
pub fn parse_urb(linktype: u32, data: &[u8]) -> Result<Urb<'_>, UsbError> {
    match linktype {
        LINKTYPE_USB_LINUX => parse_usbmon(data, USBMON_LEN),
        LINKTYPE_USB_LINUX_MMAPPED => parse_usbmon(data, USBMON_MMAPPED_LEN),
        LINKTYPE_USBPCAP => parse_usbpcap(data),
        other => Err(UsbError::NotUsb(other)),
    }
}

fn parse_usbmon(data: &[u8], hdr: usize) -> Result<Urb<'_>, UsbError> {
    if data.len() < hdr {
        return Err(UsbError::TooShort {
            need: hdr,
            have: data.len(),
        });
    }
    let event = match data.get(8).copied().unwrap_or(0) {
        b'S' => UrbEvent::Submission,
        b'C' => UrbEvent::Completion,
        b'E' => UrbEvent::Error,
        o => return Err(UsbError::BadEvent(o)),
    };
    let avail = data.len() - hdr;
    // Byte order: the host's. Little-endian unless only big-endian fits.
    let le_len = u32_at(data, 36, false) as usize;
    let be = le_len > avail && (u32_at(data, 36, true) as usize) <= avail;
    let transfer = TransferType::from_u8(data.get(9).copied().unwrap_or(0xff));
    let endpoint = data.get(10).copied().unwrap_or(0);
    let device = DeviceId {
        bus: u16_at(data, 12, be),
        device: u16::from(data.get(11).copied().unwrap_or(0)),
    };
    let setup = if data.get(14) == Some(&0) {
        data.get(40..48).and_then(|s| <[u8; 8]>::try_from(s).ok())
    } else {
        None
    };
    let declared = u32_at(data, 36, be) as usize;
    let mut start = hdr;
    if hdr == USBMON_MMAPPED_LEN && transfer == TransferType::Isochronous {
        let ndesc = (u32_at(data, 60, be) as usize).min(MAX_ISO_DESC);
        start = start.saturating_add(ndesc * ISO_DESC_LEN).min(data.len());
    }
    let rest = data.get(start..).unwrap_or(&[]);
    let take = declared.min(rest.len());
    let id = data
        .get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map_or(0, |b| {
            if be {
                u64::from_be_bytes(b)
            } else {
                u64::from_le_bytes(b)
            }
        });
    Ok(Urb {
        id,
        device,
        endpoint,
        transfer,
        event,
        setup,
        data: rest.get(..take).unwrap_or(&[]),
        truncated: declared > rest.len(),
        stage: None,
    })
}

fn parse_usbpcap(data: &[u8]) -> Result<Urb<'_>, UsbError> {
    if data.len() < USBPCAP_MIN_LEN {
        return Err(UsbError::TooShort {
            need: USBPCAP_MIN_LEN,
            have: data.len(),
        });
    }
    let hdr = usize::from(u16_at(data, 0, false));
    if !(USBPCAP_MIN_LEN..=USBPCAP_MAX_LEN).contains(&hdr) {
        return Err(UsbError::BadHeaderLen(hdr));
    }
    if data.len() < hdr {
        return Err(UsbError::TooShort {
            need: hdr,
            have: data.len(),
        });
    }
    // u16 headerLen, u64 irpId, u32 status, u16 function, u8 info, u16 bus,
    // u16 device, u8 endpoint, u8 transfer, u32 dataLength [, u8 stage].
    let info = data.get(16).copied().unwrap_or(0);
    let event = if info & 1 != 0 {
        UrbEvent::Completion
    } else {
        UrbEvent::Submission
    };
    let device = DeviceId {
        bus: u16_at(data, 17, false),
        device: u16_at(data, 19, false),
    };
    let endpoint = data.get(21).copied().unwrap_or(0);
    let transfer = TransferType::from_u8(data.get(22).copied().unwrap_or(0xff));
    let declared = u32_at(data, 23, false) as usize;
    let rest = data.get(hdr..).unwrap_or(&[]);
    let truncated = declared > rest.len();
    let mut payload = rest.get(..declared.min(rest.len())).unwrap_or(&[]);
    let mut setup = None;
    let stage = if transfer == TransferType::Control && hdr >= 28 {
        data.get(27).copied()
    } else {
        None
    };
    // The setup stage (stage byte 0) carries the 8-byte setup packet as its data,
    // followed by an OUT request's data.
    if transfer == TransferType::Control && hdr >= 28 && data.get(27) == Some(&0) {
        if let Some(s) = payload.get(..8).and_then(|s| <[u8; 8]>::try_from(s).ok()) {
            setup = Some(s);
            payload = payload.get(8..).unwrap_or(&[]);
        }
    }
    let id = data
        .get(2..10)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map_or(0, u64::from_le_bytes);
    Ok(Urb {
        id,
        device,
        endpoint,
        transfer,
        event,
        setup,
        data: payload,
        truncated,
        stage,
    })
}

/// Serial line settings sent with `SET_LINE_CODING`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LineCoding {
    /// Bits per second.
    pub baud: u32,
    /// bCharFormat: 0 = 1 stop bit, 1 = 1.5, 2 = 2.
    pub stop_bits: u8,
    /// bParityType: 0 none, 1 odd, 2 even, 3 mark, 4 space.
    pub parity: u8,
    /// Data bits (5, 6, 7, 8 or 16).
    pub data_bits: u8,
}

impl LineCoding {
    /// Decodes the seven data bytes of the request.
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        let b: &[u8; 7] = b.get(..7)?.try_into().ok()?;
        Some(LineCoding {
            baud: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            stop_bits: b[4],
            parity: b[5],
            data_bits: b[6],
        })
    }

    /// Stop bits as text.
    pub fn stop_text(&self) -> &'static str {
        match self.stop_bits {
            0 => "1",
            1 => "1.5",
            2 => "2",
            _ => "?",
        }
    }

    /// Parity as a word.
    pub fn parity_name(&self) -> &'static str {
        match self.parity {
            0 => "none",
            1 => "odd",
            2 => "even",
            3 => "mark",
            4 => "space",
            _ => "unknown",
        }
    }

    /// The usual short form, e.g. "9600 8N1".
    pub fn short(&self) -> String {
        let p = match self.parity {
            0 => 'N',
            1 => 'O',
            2 => 'E',
            3 => 'M',
            4 => 'S',
            _ => '?',
        };
        format!("{} {}{p}{}", self.baud, self.data_bits, self.stop_text())
    }

    /// Whether these are the settings of spec 10.9: 9600 baud, 8 data bits, no
    /// parity, 1 stop bit.
    pub fn matches_spec(&self) -> bool {
        self.baud == 9600 && self.data_bits == 8 && self.parity == 0 && self.stop_bits == 0
    }
}

/// What a URB means for the serial view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SerialPart<'a> {
    /// Line bytes; `from_host` = host to device (OUT).
    Data {
        /// The device.
        device: DeviceId,
        /// Host to device.
        from_host: bool,
        /// The bytes.
        bytes: &'a [u8],
    },
    /// A SET_LINE_CODING setup whose data comes in a later data-stage record
    /// (USBPcap).
    LineCodingSetup {
        /// The device.
        device: DeviceId,
    },
    /// A USBPcap control data stage.
    ControlData {
        /// The device.
        device: DeviceId,
        /// The stage's data.
        bytes: &'a [u8],
    },
    /// Line settings set by the host.
    LineCoding {
        /// The device.
        device: DeviceId,
        /// The settings.
        coding: LineCoding,
    },
    /// Nothing for the serial view (other transfers, the other half of a URB).
    Skip,
}

/// The serial meaning of a URB: OUT bulk data from its submission, IN bulk data from
/// its completion, SET_LINE_CODING from its submission.
pub fn serial_part<'a>(urb: &Urb<'a>) -> SerialPart<'a> {
    match (urb.transfer, urb.event) {
        (TransferType::Bulk, UrbEvent::Submission) if !urb.is_in() && !urb.data.is_empty() => {
            SerialPart::Data {
                device: urb.device,
                from_host: true,
                bytes: urb.data,
            }
        }
        (TransferType::Bulk, UrbEvent::Completion) if urb.is_in() && !urb.data.is_empty() => {
            SerialPart::Data {
                device: urb.device,
                from_host: false,
                bytes: urb.data,
            }
        }
        (TransferType::Control, _) if urb.stage == Some(1) => SerialPart::ControlData {
            device: urb.device,
            bytes: urb.data,
        },
        (TransferType::Control, UrbEvent::Submission) => match urb.setup {
            Some([0x21, 0x20, ..]) => match LineCoding::from_bytes(urb.data) {
                Some(coding) => SerialPart::LineCoding {
                    device: urb.device,
                    coding,
                },
                None => SerialPart::LineCodingSetup { device: urb.device },
            },
            _ => SerialPart::Skip,
        },
        _ => SerialPart::Skip,
    }
}

/// How a device's cash-register side was chosen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Orientation {
    /// True when the USB host is the cash register (the usual case: usbmon or
    /// USBPcap running on the cash register's PC with the adapter plugged in).
    pub ecr_is_host: bool,
    /// Why, in words.
    pub reason: String,
}

/// What [`UsbSerial`] hands out.
#[derive(Debug)]
pub enum UsbOutput<'a> {
    /// Line bytes of an ECR device, with the side that sent them.
    Bytes {
        /// The device.
        device: DeviceId,
        /// Who sent them.
        from: Side,
        /// The bytes.
        bytes: &'a [u8],
        /// Capture time of the URB.
        ts: Timestamp,
        /// Packet number.
        packet: u64,
    },
    /// A device was recognised as carrying ECR traffic and oriented.
    Oriented {
        /// The device.
        device: DeviceId,
        /// The decision.
        orientation: Orientation,
    },
}

/// What a complete request-frame message says about its sender: `Some(Side::Ecr)` for
/// a business request (func_type), `Some(Side::Pos)` for a business result (respcd),
/// `None` when it cannot be read (encrypted without a key, not an envelope).
pub type Classifier<'c> = dyn FnMut(&[u8]) -> Option<Side> + 'c;

/// Bytes held per device while it is being recognised.
const PROBE_LIMIT: usize = 64 * 1024;
/// Chunks held per device while it is being recognised.
const PROBE_CHUNKS: usize = 8192;
/// Most devices tracked.
const MAX_DEVICES: usize = 256;

#[derive(Debug)]
struct Held {
    from_host: bool,
    ts: Timestamp,
    packet: u64,
    bytes: Vec<u8>,
}

#[derive(Debug)]
struct Probe {
    held: Vec<Held>,
    held_bytes: usize,
    decoders: [StreamDecoder; 2],
    reassemblers: [Reassembler; 2],
    /// A frame (or a frame-shaped unit) was seen.
    frames: bool,
    /// The direction (from_host) that sent the first request frame, and its ref.
    first_request: Option<(bool, u8)>,
}

#[derive(Debug)]
enum DevState {
    Probing(Box<Probe>),
    Oriented(bool),
    Ignored,
}

/// What is known about one device.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceReport {
    /// How its sides were chosen, once they were.
    pub orientation: Option<Orientation>,
    /// The last line settings sent to it, the packet that sent them, and how many
    /// times they were sent.
    pub line: Option<(LineCoding, u64)>,
    /// SET_LINE_CODING requests seen.
    pub line_changes: u32,
    /// When the last line settings were sent (the capture time of `line`'s packet).
    pub line_ts: Timestamp,
    /// Line bytes host to device and device to host.
    pub bytes: [u64; 2],
}

impl DeviceReport {
    /// The summary's view of a device.
    pub fn info(&self, id: DeviceId) -> UsbDeviceInfo {
        UsbDeviceInfo {
            device: id.to_string(),
            link: link_label(id),
            ecr: self
                .orientation
                .as_ref()
                .map(|o| if o.ecr_is_host { "host" } else { "device" }),
            oriented_by: self.orientation.as_ref().map(|o| o.reason.clone()),
            line: self.line.map(|(c, packet)| LineInfo {
                settings: c.short(),
                baud: c.baud,
                data_bits: c.data_bits,
                parity: c.parity_name(),
                stop_bits: c.stop_text(),
                spec: c.matches_spec(),
                packet,
                ts: self.line_ts,
                requests: self.line_changes,
            }),
            bytes_from_host: self.bytes[0],
            bytes_from_device: self.bytes[1],
        }
    }
}

/// The serial link label of a device in messages and findings: "usb1:5".
pub fn link_label(id: DeviceId) -> String {
    format!("usb{id}")
}

/// The serial link number of a device for [`crate::analyzer::Analyzer::serial_chunk`]
/// (apart from the numbers of D9 interfaces).
pub fn link_id(id: DeviceId) -> u64 {
    (1u64 << 40) | (u64::from(id.bus) << 16) | u64::from(id.device)
}

#[derive(Debug)]
struct Device {
    state: DevState,
    report: DeviceReport,
    /// A SET_LINE_CODING setup was seen; its data stage is next.
    awaiting_line: bool,
}

/// Demultiplexes USB captures into per-device serial streams.
///
/// A device is analysed once its bytes hold an ECR frame (`2f 6e 01` with a known
/// type, or a frame-shaped unit with a bad field); until then its bytes are held (at
/// most 64 KiB), and a device with no frame in that much data is ignored. With a
/// device filter, only that device is analysed, frames or not.
///
/// Which end is the cash register: the sender of the first complete request frame
/// (0x10) is classified by its content, a func_type request being the cash
/// register's and a respcd result the terminal's (D2). When that content cannot be
/// read (encrypted and no key), the sender of the first request frame is taken as the
/// cash register, since it speaks first; with no request at all, the USB host is.
/// Held bytes are then released in their original order with their original
/// timestamps, so timing rules are unaffected.
#[derive(Debug, Default)]
pub struct UsbSerial {
    filter: Option<DeviceId>,
    devices: BTreeMap<DeviceId, Device>,
    /// OUT data waiting for its completion.
    outs: std::collections::VecDeque<HeldOut>,
}

/// An OUT transfer waiting for its completion: (URB id, device, bytes, submission
/// time, packet).
type HeldOut = (u64, DeviceId, Vec<u8>, Timestamp, u64);

/// Most OUT transfers waiting for their completion.
const MAX_OUTS: usize = 256;

/// How long after its bytes have gone out (at the line's baud rate) an OUT's
/// completion may still come before a later event on the device releases it.
const OUT_COMPLETION_SLACK_MS: i64 = 100;

impl UsbSerial {
    /// A demultiplexer; `filter` restricts it to one device.
    pub fn new(filter: Option<DeviceId>) -> Self {
        UsbSerial {
            filter,
            devices: BTreeMap::new(),
            outs: Default::default(),
        }
    }

    /// What is known about each device that carried ECR traffic or was sent line
    /// settings (an adapter configured but silent is worth seeing too).
    pub fn reports(&self) -> impl Iterator<Item = (DeviceId, &DeviceReport)> {
        self.devices
            .iter()
            .filter(|(_, d)| d.report.orientation.is_some() || d.report.line.is_some())
            .map(|(id, d)| (*id, &d.report))
    }

    fn device(&mut self, id: DeviceId) -> Option<&mut Device> {
        if self.filter.is_some_and(|f| f != id) {
            return None;
        }
        if !self.devices.contains_key(&id) && self.devices.len() >= MAX_DEVICES {
            return None;
        }
        Some(self.devices.entry(id).or_insert_with(|| Device {
            state: DevState::Probing(Box::new(Probe {
                held: vec![],
                held_bytes: 0,
                decoders: Default::default(),
                reassemblers: Default::default(),
                frames: false,
                first_request: None,
            })),
            report: DeviceReport::default(),
            awaiting_line: false,
        }))
    }

    /// Takes one URB record seen at `ts` in packet `packet`.
    ///
    /// OUT data is taken from the submission; its first byte is timed by the
    /// submission and the rest by the completion: a host writes a whole frame at
    /// once, and the adapter completes the URB when the bytes have gone out (a 1 KB
    /// write takes a second at 9600 baud). Timing all of it at submission would make
    /// every long request look unanswered for a second too long, and timing all of it
    /// at completion would hide the gap before it. An OUT whose completion is not in
    /// the capture is released, in time order, as soon as the device sends data (it
    /// was on the line before) or a later event on the device makes its completion
    /// overdue; its last byte is then timed at the line rate.
    pub fn urb(
        &mut self,
        urb: &Urb<'_>,
        ts: Timestamp,
        packet: u64,
        classify: &mut Classifier<'_>,
        out: &mut dyn FnMut(UsbOutput<'_>),
    ) {
        let part = serial_part(urb);
        let completes_held = urb.transfer == TransferType::Bulk
            && urb.event != UrbEvent::Submission
            && !urb.is_in()
            && self.outs.iter().any(|o| o.0 == urb.id && o.1 == urb.device);
        if !completes_held {
            // OUTs of this device whose completion is overdue (or that the device
            // has answered) go first, so that everything stays in time order.
            let answer = matches!(
                part,
                SerialPart::Data {
                    from_host: false,
                    ..
                }
            );
            self.release_due(urb.device, ts, answer, classify, out);
        }
        if let SerialPart::Data {
            device,
            from_host: true,
            bytes,
        } = part
        {
            if self.filter.is_some_and(|f| f != device) {
                return;
            }
            if self.outs.len() >= MAX_OUTS {
                if let Some(o) = self.outs.pop_front() {
                    let done = self.sent_by(&o);
                    self.release_held(o, done, classify, out);
                }
            }
            self.outs
                .push_back((urb.id, device, bytes.to_vec(), ts, packet));
            return;
        }
        if completes_held {
            if let Some(i) = self
                .outs
                .iter()
                .position(|o| o.0 == urb.id && o.1 == urb.device)
            {
                // Earlier OUTs still waiting go first, in order.
                let done: Vec<_> = self.outs.drain(..=i).collect();
                for o in done {
                    // The first byte leaves when the host writes it, the last when
                    // the URB completes.
                    self.release_held(o, ts, classify, out);
                }
            }
            return;
        }
        if urb.transfer == TransferType::Bulk && urb.event != UrbEvent::Submission && !urb.is_in() {
            // The completion of an OUT released already (overdue): nothing to add.
            return;
        }
        self.part(part, ts, packet, classify, out);
    }

    /// When the held OUT `o` has gone out at the latest: its submission plus the
    /// time its bytes take on the line (the device's baud rate, or spec 10.9's
    /// 9600; 10 bits a byte).
    fn sent_by(&self, o: &HeldOut) -> Timestamp {
        let baud = self
            .devices
            .get(&o.1)
            .and_then(|d| d.report.line.as_ref())
            .map(|(c, _)| c.baud)
            .filter(|b| *b > 0)
            .unwrap_or(9600);
        let bits = (o.2.len() as i64).saturating_mul(10);
        let nanos = bits.saturating_mul(1_000_000_000) / i64::from(baud);
        Timestamp(o.3 .0.saturating_add(nanos))
    }

    /// Releases the held OUTs of `device` whose completion is overdue at `now`
    /// (sent by then, plus [`OUT_COMPLETION_SLACK_MS`]), in order; with `answer`
    /// (the device sent data), every held OUT of the device submitted by `now`,
    /// since the bytes it answers were on the line before its answer.
    fn release_due(
        &mut self,
        device: DeviceId,
        now: Timestamp,
        answer: bool,
        classify: &mut Classifier<'_>,
        out: &mut dyn FnMut(UsbOutput<'_>),
    ) {
        loop {
            let Some(i) = self.outs.iter().position(|o| o.1 == device) else {
                return;
            };
            let Some(o) = self.outs.get(i) else {
                return;
            };
            let done = self.sent_by(o);
            let due = if answer {
                o.3 <= now
            } else {
                done.add_millis(OUT_COMPLETION_SLACK_MS) < now
            };
            if !due {
                return;
            }
            let Some(o) = self.outs.remove(i) else {
                return;
            };
            self.release_held(o, done.min(now), classify, out);
        }
    }

    /// Releases a held OUT: its first byte at its submission, the rest at `done`.
    fn release_held(
        &mut self,
        (_, device, bytes, submitted, packet): HeldOut,
        done: Timestamp,
        classify: &mut Classifier<'_>,
        out: &mut dyn FnMut(UsbOutput<'_>),
    ) {
        let (first, rest) = bytes.split_at(bytes.len().min(1));
        self.release_out(device, first, submitted, packet, classify, out);
        if !rest.is_empty() {
            self.release_out(device, rest, submitted.max(done), packet, classify, out);
        }
    }

    fn release_out(
        &mut self,
        device: DeviceId,
        bytes: &[u8],
        ts: Timestamp,
        packet: u64,
        classify: &mut Classifier<'_>,
        out: &mut dyn FnMut(UsbOutput<'_>),
    ) {
        self.part(
            SerialPart::Data {
                device,
                from_host: true,
                bytes,
            },
            ts,
            packet,
            classify,
            out,
        );
    }

    /// Takes one URB's serial meaning, seen at `ts` in packet `packet`.
    pub fn part(
        &mut self,
        part: SerialPart<'_>,
        ts: Timestamp,
        packet: u64,
        classify: &mut Classifier<'_>,
        out: &mut dyn FnMut(UsbOutput<'_>),
    ) {
        let filtered = self.filter.is_some();
        match part {
            SerialPart::Skip => {}
            SerialPart::LineCoding { device, coding } => {
                if let Some(d) = self.device(device) {
                    d.report.line = Some((coding, packet));
                    d.report.line_ts = ts;
                    d.report.line_changes = d.report.line_changes.saturating_add(1);
                    d.awaiting_line = false;
                }
            }
            SerialPart::LineCodingSetup { device } => {
                if let Some(d) = self.device(device) {
                    d.awaiting_line = true;
                }
            }
            SerialPart::ControlData { device, bytes } => {
                if let Some(d) = self.device(device) {
                    if std::mem::take(&mut d.awaiting_line) {
                        if let Some(coding) = LineCoding::from_bytes(bytes) {
                            d.report.line = Some((coding, packet));
                            d.report.line_ts = ts;
                            d.report.line_changes = d.report.line_changes.saturating_add(1);
                        }
                    }
                }
            }
            SerialPart::Data {
                device,
                from_host,
                bytes,
            } => {
                let Some(d) = self.device(device) else {
                    return;
                };
                let slot = usize::from(!from_host);
                if let Some(b) = d.report.bytes.get_mut(slot) {
                    *b = b.saturating_add(bytes.len() as u64);
                }
                match &mut d.state {
                    DevState::Ignored => {}
                    DevState::Oriented(ecr_is_host) => out(UsbOutput::Bytes {
                        device,
                        from: side_for(*ecr_is_host, from_host),
                        bytes,
                        ts,
                        packet,
                    }),
                    DevState::Probing(p) => {
                        let decided = p.push(from_host, bytes, ts, packet, classify);
                        if let Some(o) = decided {
                            release(device, d, o, out);
                        } else if p.held_bytes > PROBE_LIMIT || p.held.len() > PROBE_CHUNKS {
                            if p.frames || filtered {
                                let o = p.fallback();
                                release(device, d, o, out);
                            } else {
                                d.state = DevState::Ignored;
                            }
                        }
                    }
                }
            }
        }
    }

    /// The end of the capture: devices still being recognised are oriented by the
    /// fallback rule (if they carried frames, or were chosen) and their bytes
    /// released.
    pub fn finish(&mut self, classify: &mut Classifier<'_>, out: &mut dyn FnMut(UsbOutput<'_>)) {
        let pending: Vec<_> = self.outs.drain(..).collect();
        for o in pending {
            let done = self.sent_by(&o);
            self.release_held(o, done, classify, out);
        }
        let filtered = self.filter.is_some();
        for (id, d) in self.devices.iter_mut() {
            if let DevState::Probing(p) = &mut d.state {
                if p.frames || (filtered && p.held_bytes > 0) {
                    let o = p.fallback();
                    release(*id, d, o, out);
                } else {
                    d.state = DevState::Ignored;
                }
            }
        }
    }
}

fn side_for(ecr_is_host: bool, from_host: bool) -> Side {
    if ecr_is_host == from_host {
        Side::Ecr
    } else {
        Side::Pos
    }
}

fn release(device: DeviceId, d: &mut Device, o: Orientation, out: &mut dyn FnMut(UsbOutput<'_>)) {
    let ecr_is_host = o.ecr_is_host;
    let old = std::mem::replace(&mut d.state, DevState::Oriented(ecr_is_host));
    d.report.orientation = Some(o.clone());
    out(UsbOutput::Oriented {
        device,
        orientation: o,
    });
    if let DevState::Probing(p) = old {
        for h in &p.held {
            out(UsbOutput::Bytes {
                device,
                from: side_for(ecr_is_host, h.from_host),
                bytes: &h.bytes,
                ts: h.ts,
                packet: h.packet,
            });
        }
    }
}

fn side_word(from_host: bool) -> &'static str {
    if from_host {
        "host to device"
    } else {
        "device to host"
    }
}

impl Probe {
    /// Holds a chunk and looks at it; returns the orientation once it is known.
    fn push(
        &mut self,
        from_host: bool,
        bytes: &[u8],
        ts: Timestamp,
        packet: u64,
        classify: &mut Classifier<'_>,
    ) -> Option<Orientation> {
        self.held.push(Held {
            from_host,
            ts,
            packet,
            bytes: bytes.to_vec(),
        });
        self.held_bytes = self.held_bytes.saturating_add(bytes.len());
        let i = usize::from(!from_host);
        let (Some(dec), Some(re)) = (self.decoders.get_mut(i), self.reassemblers.get_mut(i)) else {
            return None;
        };
        let mut frames = false;
        let mut first_request = self.first_request;
        let mut verdict: Option<Orientation> = None;
        dec.feed(bytes, ts, |ev| match ev {
            StreamEvent::Frame(f) => {
                frames = true;
                if f.frame.frame_type() == FrameType::REQUEST && first_request.is_none() {
                    first_request = Some((from_host, f.frame.ref_num()));
                }
                re.push(&f, |m| {
                    let ReassemblyEvent::Message(m) = m else {
                        return;
                    };
                    if verdict.is_some() || m.frame_type != FrameType::REQUEST || m.data.is_empty()
                    {
                        return;
                    }
                    let who = side_word(from_host);
                    verdict = Some(match classify(&m.data) {
                        Some(side) => Orientation {
                            ecr_is_host: (side == Side::Ecr) == from_host,
                            reason: format!(
                                "the first request frame with data (ref {}, {who}) is {}",
                                m.ref_num,
                                if side == Side::Ecr {
                                    "a business request (func_type): its sender is the cash register"
                                } else {
                                    "a business result (respcd): its sender is the terminal"
                                }
                            ),
                        },
                        None => Orientation {
                            ecr_is_host: from_host,
                            reason: format!(
                                "the first request frame with data (ref {}, {who}) could not be read (encrypted without a key?): its sender is taken as the cash register, which speaks first",
                                m.ref_num
                            ),
                        },
                    });
                });
            }
            StreamEvent::Rejected(_) => frames = true,
            StreamEvent::Skipped(_) => {}
        });
        self.frames |= frames;
        self.first_request = first_request;
        verdict
    }

    /// The orientation when no readable request decided it.
    fn fallback(&self) -> Orientation {
        match self.first_request {
            Some((from_host, r)) => Orientation {
                ecr_is_host: from_host,
                reason: format!(
                    "no complete request message; the first request frame (ref {r}) came {}: its sender is taken as the cash register",
                    side_word(from_host)
                ),
            },
            None => Orientation {
                ecr_is_host: true,
                reason: "no request frame seen: the USB host is assumed to be the cash register".into(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ecr_proto::frame::{split_message, FrameRepr};

    /// A usbmon record (48 or 64 bytes of header, little-endian).
    #[allow(clippy::too_many_arguments)]
    fn usbmon(
        mmapped: bool,
        event: u8,
        transfer: u8,
        ep: u8,
        dev: u8,
        bus: u16,
        setup: Option<[u8; 8]>,
        data: &[u8],
    ) -> Vec<u8> {
        let mut h = vec![0u8; if mmapped { 64 } else { 48 }];
        h[8] = event;
        h[9] = transfer;
        h[10] = ep;
        h[11] = dev;
        h[12..14].copy_from_slice(&bus.to_le_bytes());
        h[14] = if setup.is_some() { 0 } else { b'-' };
        h[15] = if data.is_empty() { b'<' } else { 0 };
        h[32..36].copy_from_slice(&(data.len() as u32).to_le_bytes());
        h[36..40].copy_from_slice(&(data.len() as u32).to_le_bytes());
        if let Some(s) = setup {
            h[40..48].copy_from_slice(&s);
        }
        h.extend_from_slice(data);
        h
    }

    #[test]
    fn usbmon_bulk_directions_count_each_byte_once() {
        for mm in [false, true] {
            let lt = if mm { 220 } else { 189 };
            // OUT: data in the submission; the completion repeats only the length.
            let s = usbmon(mm, b'S', 3, 0x02, 5, 1, None, b"abc");
            let mut c = usbmon(mm, b'C', 3, 0x02, 5, 1, None, b"");
            // The completion's urb_len says 3 bytes were sent.
            c[32] = 3;
            let u = parse_urb(lt, &s).unwrap();
            assert_eq!(
                serial_part(&u),
                SerialPart::Data {
                    device: DeviceId { bus: 1, device: 5 },
                    from_host: true,
                    bytes: b"abc"
                }
            );
            assert_eq!(serial_part(&parse_urb(lt, &c).unwrap()), SerialPart::Skip);
            // IN: the submission has no data, the completion has it.
            let s = usbmon(mm, b'S', 3, 0x83, 5, 1, None, b"");
            let c = usbmon(mm, b'C', 3, 0x83, 5, 1, None, b"xy");
            assert_eq!(serial_part(&parse_urb(lt, &s).unwrap()), SerialPart::Skip);
            assert!(matches!(
                serial_part(&parse_urb(lt, &c).unwrap()),
                SerialPart::Data {
                    from_host: false,
                    bytes: b"xy",
                    ..
                }
            ));
        }
    }

    #[test]
    fn line_coding_is_decoded() {
        let data = [0x80, 0x25, 0, 0, 0, 0, 8];
        let setup = [0x21, 0x20, 0, 0, 0, 0, 7, 0];
        let r = usbmon(false, b'S', 2, 0x00, 5, 1, Some(setup), &data);
        match serial_part(&parse_urb(189, &r).unwrap()) {
            SerialPart::LineCoding { coding, .. } => {
                assert_eq!(coding.baud, 9600);
                assert_eq!(coding.short(), "9600 8N1");
                assert!(coding.matches_spec());
            }
            other => panic!("{other:?}"),
        }
        let c = LineCoding::from_bytes(&[0x00, 0xc2, 0x01, 0, 2, 2, 7]).unwrap();
        assert_eq!(c.short(), "115200 7E2");
        assert!(!c.matches_spec());
    }

    #[test]
    fn usbpcap_records() {
        fn rec(info: u8, ep: u8, transfer: u8, stage: Option<u8>, data: &[u8]) -> Vec<u8> {
            let hl: u16 = if stage.is_some() { 28 } else { 27 };
            let mut h = vec![];
            h.extend_from_slice(&hl.to_le_bytes());
            h.extend_from_slice(&7u64.to_le_bytes());
            h.extend_from_slice(&0u32.to_le_bytes());
            h.extend_from_slice(&9u16.to_le_bytes());
            h.push(info);
            h.extend_from_slice(&2u16.to_le_bytes());
            h.extend_from_slice(&4u16.to_le_bytes());
            h.push(ep);
            h.push(transfer);
            h.extend_from_slice(&(data.len() as u32).to_le_bytes());
            if let Some(s) = stage {
                h.push(s);
            }
            h.extend_from_slice(data);
            h
        }
        let out = rec(0, 0x02, 3, None, b"hi");
        assert_eq!(
            serial_part(&parse_urb(249, &out).unwrap()),
            SerialPart::Data {
                device: DeviceId { bus: 2, device: 4 },
                from_host: true,
                bytes: b"hi"
            }
        );
        let inn = rec(1, 0x83, 3, None, b"yo");
        assert!(matches!(
            serial_part(&parse_urb(249, &inn).unwrap()),
            SerialPart::Data {
                from_host: false,
                ..
            }
        ));
        let mut ctl = vec![0x21, 0x20, 0, 0, 0, 0, 7, 0];
        ctl.extend_from_slice(&[0x80, 0x25, 0, 0, 0, 0, 8]);
        assert!(matches!(
            serial_part(&parse_urb(249, &rec(0, 0x00, 2, Some(0), &ctl)).unwrap()),
            SerialPart::LineCoding { .. }
        ));
        // Bounded: a header length beyond the packet, a data length beyond it.
        let mut bad = rec(0, 0x02, 3, None, b"hi");
        bad[0] = 200;
        assert!(parse_urb(249, &bad).is_err());
        let mut long = rec(0, 0x02, 3, None, b"hi");
        long[23..27].copy_from_slice(&u32::MAX.to_le_bytes());
        let u = parse_urb(249, &long).unwrap();
        assert_eq!(u.data, b"hi");
        assert!(u.truncated);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut seed = 1u64;
        for n in 0..2000usize {
            let len = n % 90;
            let v: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                    (seed >> 33) as u8
                })
                .collect();
            for lt in [189, 220, 249] {
                if let Ok(u) = parse_urb(lt, &v) {
                    let _ = serial_part(&u);
                }
            }
        }
    }

    fn collect(
        u: &mut UsbSerial,
        parts: &[(bool, Vec<u8>)],
        classify: &mut Classifier<'_>,
    ) -> Vec<(Side, Vec<u8>)> {
        let mut got = vec![];
        let dev = DeviceId { bus: 1, device: 5 };
        for (i, (h, b)) in parts.iter().enumerate() {
            u.part(
                SerialPart::Data {
                    device: dev,
                    from_host: *h,
                    bytes: b,
                },
                Timestamp::from_millis(i as i64),
                i as u64 + 1,
                classify,
                &mut |o| {
                    if let UsbOutput::Bytes { from, bytes, .. } = o {
                        got.push((from, bytes.to_vec()))
                    }
                },
            );
        }
        u.finish(classify, &mut |o| {
            if let UsbOutput::Bytes { from, bytes, .. } = o {
                got.push((from, bytes.to_vec()))
            }
        });
        got
    }

    #[test]
    fn orientation_by_content_and_release_in_order() {
        // The device speaks first, but with a business result: the device is the
        // terminal and the host the cash register (speaking first would say the
        // opposite).
        let result = FrameRepr::new(FrameType::REQUEST, 1, br#"{"respcd":"6000"}"#)
            .to_bytes()
            .unwrap();
        let ack = FrameRepr::ack(1).to_bytes().unwrap();
        let mut classify = |d: &[u8]| {
            if d.windows(6).any(|w| w == b"respcd") {
                Some(Side::Pos)
            } else {
                Some(Side::Ecr)
            }
        };
        let mut u = UsbSerial::new(None);
        let got = collect(
            &mut u,
            &[
                (false, result[..5].to_vec()),
                (false, result[5..].to_vec()),
                (true, ack.clone()),
            ],
            &mut classify,
        );
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].0, Side::Pos);
        assert_eq!(got[2], (Side::Ecr, ack));
        let (_, rep) = u.reports().next().unwrap();
        let o = rep.orientation.as_ref().unwrap();
        assert!(o.ecr_is_host);
        assert!(o.reason.contains("business result"), "{}", o.reason);
    }

    #[test]
    fn devices_without_frames_are_ignored_unless_chosen() {
        let noise: Vec<(bool, Vec<u8>)> = (0..100).map(|_| (true, vec![0x55; 1000])).collect();
        let mut none = |_: &[u8]| None;
        let mut u = UsbSerial::new(None);
        assert!(collect(&mut u, &noise, &mut none).is_empty());
        assert_eq!(u.reports().count(), 0);
        let mut u = UsbSerial::new(Some(DeviceId { bus: 1, device: 5 }));
        let got = collect(&mut u, &noise, &mut none);
        assert_eq!(got.len(), 100);
        assert!(got.iter().all(|g| g.0 == Side::Ecr));
        // Another device is not let through the filter.
        let mut u = UsbSerial::new(Some(DeviceId { bus: 1, device: 6 }));
        assert!(collect(&mut u, &noise, &mut none).is_empty());
    }

    #[test]
    fn unreadable_first_request_orients_by_sender() {
        let frames = split_message(FrameType::REQUEST, 2, &[b'Q'; 40], 16).unwrap();
        let mut none = |_: &[u8]| None;
        let mut u = UsbSerial::new(None);
        let got = collect(&mut u, &[(false, frames)], &mut none);
        assert_eq!(got[0].0, Side::Ecr);
        let (_, rep) = u.reports().next().unwrap();
        let o = rep.orientation.as_ref().unwrap();
        assert!(!o.ecr_is_host);
        assert!(o.reason.contains("could not be read"), "{}", o.reason);
    }

    #[test]
    fn device_ids_parse() {
        assert_eq!(
            "1:5".parse::<DeviceId>().unwrap(),
            DeviceId { bus: 1, device: 5 }
        );
        assert!("15".parse::<DeviceId>().is_err());
        assert!("1:x".parse::<DeviceId>().is_err());
    }
}
