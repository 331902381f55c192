//! From a packet's link type to its network-layer payload.
//!
//! Handles the link types a support engineer's capture is likely to have: Ethernet
//! (with 802.1Q / 802.1ad / QinQ tags), Linux cooked captures from `tcpdump -i any`
//! (SLL and SLL2), BSD loopback (NULL and LOOP) and raw IP. Link types this module
//! does not know (USB, serial, ...) come back as [`Network::OtherLinkType`] so the
//! caller can dispatch them elsewhere.

/// LINKTYPE_NULL: BSD loopback, 4-byte address family in the capturing host's order.
pub const LINKTYPE_NULL: u32 = 0;
/// LINKTYPE_ETHERNET.
pub const LINKTYPE_ETHERNET: u32 = 1;
/// DLT_RAW as written on most platforms.
pub const LINKTYPE_RAW_12: u32 = 12;
/// DLT_RAW as written on OpenBSD.
pub const LINKTYPE_RAW_14: u32 = 14;
/// LINKTYPE_RAW: raw IPv4 or IPv6 (version nibble tells).
pub const LINKTYPE_RAW: u32 = 101;
/// LINKTYPE_LOOP: OpenBSD loopback, address family in network byte order.
pub const LINKTYPE_LOOP: u32 = 108;
/// LINKTYPE_LINUX_SLL: Linux cooked capture v1.
pub const LINKTYPE_LINUX_SLL: u32 = 113;
/// LINKTYPE_IPV4: raw IPv4 only.
pub const LINKTYPE_IPV4: u32 = 228;
/// LINKTYPE_IPV6: raw IPv6 only.
pub const LINKTYPE_IPV6: u32 = 229;
/// LINKTYPE_LINUX_SLL2: Linux cooked capture v2.
pub const LINKTYPE_LINUX_SLL2: u32 = 276;

/// EtherType of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// EtherType of IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
/// 802.1Q VLAN tag.
pub const ETHERTYPE_VLAN: u16 = 0x8100;
/// 802.1ad service tag (QinQ outer tag).
pub const ETHERTYPE_QINQ: u16 = 0x88a8;
/// Pre-standard QinQ outer tag.
pub const ETHERTYPE_QINQ_OLD: u16 = 0x9100;

const ETH_HEADER_LEN: usize = 14;
/// Stacked VLAN tags followed at most (real networks use one or two).
const MAX_VLAN_TAGS: usize = 8;
const SLL_HEADER_LEN: usize = 16;
const SLL_PROTOCOL: usize = 14;
const SLL_HATYPE: usize = 2;
const SLL2_HEADER_LEN: usize = 20;
const SLL2_PROTOCOL: usize = 0;
const SLL2_HATYPE: usize = 8;
/// ARPHRD_NETLINK: the SLL protocol field is then a netlink family, not an EtherType.
const ARPHRD_NETLINK: u16 = 824;

/// What a link-layer frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network<'a> {
    /// An IPv4 packet (starting at the IP header).
    Ipv4(&'a [u8]),
    /// An IPv6 packet (starting at the IP header).
    Ipv6(&'a [u8]),
    /// A known link type carrying something other than IP (ARP, LLC, netlink, ...).
    NotIp {
        /// The EtherType, or the address family for NULL/LOOP, or 0 when the frame
        /// uses an 802.3 length field.
        protocol: u32,
        /// The payload after the link header.
        payload: &'a [u8],
    },
    /// A link type this module does not decode (e.g. USB 189/220/249, USER0 147):
    /// the caller dispatches on `linktype`.
    OtherLinkType {
        /// The LINKTYPE_* value.
        linktype: u32,
        /// The whole frame.
        data: &'a [u8],
    },
}

/// A frame too short for its link header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("link type {linktype}: frame of {len} bytes is too short for its header ({needed} bytes)")]
pub struct LinkError {
    /// The LINKTYPE_* value.
    pub linktype: u32,
    /// Bytes the header needs.
    pub needed: usize,
    /// Bytes the frame has.
    pub len: usize,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn by_version(data: &[u8]) -> Network<'_> {
    match data.first().map(|b| b >> 4) {
        Some(4) => Network::Ipv4(data),
        Some(6) => Network::Ipv6(data),
        _ => Network::NotIp {
            protocol: 0,
            payload: data,
        },
    }
}

/// Dispatches on an EtherType, following VLAN tags.
fn by_ethertype(
    mut ethertype: u16,
    mut payload: &[u8],
    linktype: u32,
) -> Result<Network<'_>, LinkError> {
    let mut tags = 0;
    while matches!(
        ethertype,
        ETHERTYPE_VLAN | ETHERTYPE_QINQ | ETHERTYPE_QINQ_OLD
    ) {
        tags += 1;
        if tags > MAX_VLAN_TAGS {
            return Ok(Network::NotIp {
                protocol: u32::from(ethertype),
                payload,
            });
        }
        let tag =
            etherparse::SingleVlanHeaderSlice::from_slice(payload).map_err(|e| LinkError {
                linktype,
                needed: e.required_len,
                len: e.len,
            })?;
        ethertype = tag.ether_type().0;
        payload = payload.get(tag.slice().len()..).unwrap_or_default();
    }
    Ok(match ethertype {
        ETHERTYPE_IPV4 => Network::Ipv4(payload),
        ETHERTYPE_IPV6 => Network::Ipv6(payload),
        // Values up to 1500 are 802.3 length fields (LLC follows).
        t if t <= 1500 => Network::NotIp {
            protocol: 0,
            payload,
        },
        t => Network::NotIp {
            protocol: u32::from(t),
            payload,
        },
    })
}

/// Strips the link-layer header of `data` captured with link type `linktype`.
///
/// Returns an error only when the frame is shorter than its link header; anything
/// that is simply not IP is [`Network::NotIp`] or [`Network::OtherLinkType`].
pub fn network_layer(linktype: u32, data: &[u8]) -> Result<Network<'_>, LinkError> {
    let short = |needed| LinkError {
        linktype,
        needed,
        len: data.len(),
    };
    match linktype {
        LINKTYPE_ETHERNET => {
            let eth = etherparse::Ethernet2HeaderSlice::from_slice(data)
                .map_err(|e| short(e.required_len))?;
            let payload = data.get(eth.slice().len()..).unwrap_or_default();
            by_ethertype(eth.ether_type().0, payload, linktype)
        }
        LINKTYPE_LINUX_SLL => {
            let (Some(hatype), Some(proto), Some(payload)) = (
                be16(data, SLL_HATYPE),
                be16(data, SLL_PROTOCOL),
                data.get(SLL_HEADER_LEN..),
            ) else {
                return Err(short(SLL_HEADER_LEN));
            };
            if hatype == ARPHRD_NETLINK {
                return Ok(Network::NotIp {
                    protocol: u32::from(proto),
                    payload,
                });
            }
            by_ethertype(proto, payload, linktype)
        }
        LINKTYPE_LINUX_SLL2 => {
            let (Some(hatype), Some(proto), Some(payload)) = (
                be16(data, SLL2_HATYPE),
                be16(data, SLL2_PROTOCOL),
                data.get(SLL2_HEADER_LEN..),
            ) else {
                return Err(short(SLL2_HEADER_LEN));
            };
            if hatype == ARPHRD_NETLINK {
                return Ok(Network::NotIp {
                    protocol: u32::from(proto),
                    payload,
                });
            }
            by_ethertype(proto, payload, linktype)
        }
        LINKTYPE_NULL | LINKTYPE_LOOP => {
            let af = data.get(..4).and_then(|b| <[u8; 4]>::try_from(b).ok());
            let (Some(af), Some(payload)) = (af, data.get(4..)) else {
                return Err(short(4));
            };
            let af = if linktype == LINKTYPE_LOOP {
                u32::from_be_bytes(af)
            } else {
                // Host byte order of the capturing machine: families are small, so
                // a value above 0xffff means the other order.
                let le = u32::from_le_bytes(af);
                if le > 0xffff {
                    u32::from_be_bytes(af)
                } else {
                    le
                }
            };
            Ok(match af {
                2 => Network::Ipv4(payload),
                // AF_INET6 on NetBSD/OpenBSD (24), FreeBSD (28), macOS (30), Linux (10).
                10 | 24 | 28 | 30 => Network::Ipv6(payload),
                _ => Network::NotIp {
                    protocol: af,
                    payload,
                },
            })
        }
        LINKTYPE_RAW | LINKTYPE_RAW_12 | LINKTYPE_RAW_14 => Ok(by_version(data)),
        LINKTYPE_IPV4 => Ok(Network::Ipv4(data)),
        LINKTYPE_IPV6 => Ok(Network::Ipv6(data)),
        _ => Ok(Network::OtherLinkType { linktype, data }),
    }
}

/// The offset of the IP header for link types whose header has a fixed size and no
/// tags, and the EtherType-like position to check: a shortcut for the fast
/// pre-filter. `None` means "use [`network_layer`]".
pub(crate) fn fast_ip_offset(linktype: u32, data: &[u8]) -> Option<usize> {
    match linktype {
        LINKTYPE_ETHERNET => match be16(data, 12)? {
            ETHERTYPE_IPV4 | ETHERTYPE_IPV6 => Some(ETH_HEADER_LEN),
            _ => None,
        },
        LINKTYPE_RAW | LINKTYPE_RAW_12 | LINKTYPE_RAW_14 | LINKTYPE_IPV4 | LINKTYPE_IPV6 => Some(0),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP4: &[u8] = &[
        0x45, 0, 0, 20, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
    ];
    const IP6: &[u8] = &[0x60, 0, 0, 0, 0, 0, 59, 64];

    fn eth(types: &[u16], payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0xaa; 12];
        for (i, t) in types.iter().enumerate() {
            f.extend_from_slice(&t.to_be_bytes());
            if i + 1 < types.len() {
                f.extend_from_slice(&[0x00, 0x05]); // TCI
            }
        }
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn ethernet_plain_and_tagged() {
        assert_eq!(
            network_layer(1, &eth(&[0x0800], IP4)),
            Ok(Network::Ipv4(IP4))
        );
        assert_eq!(
            network_layer(1, &eth(&[0x86dd], IP6)),
            Ok(Network::Ipv6(IP6))
        );
        assert_eq!(
            network_layer(1, &eth(&[0x8100, 0x0800], IP4)),
            Ok(Network::Ipv4(IP4))
        );
        // QinQ: 802.1ad outer, 802.1Q inner
        assert_eq!(
            network_layer(1, &eth(&[0x88a8, 0x8100, 0x86dd], IP6)),
            Ok(Network::Ipv6(IP6))
        );
        assert_eq!(
            network_layer(1, &eth(&[0x9100, 0x8100, 0x0800], IP4)),
            Ok(Network::Ipv4(IP4))
        );
        assert_eq!(
            network_layer(1, &eth(&[0x0806], b"arp")),
            Ok(Network::NotIp {
                protocol: 0x0806,
                payload: b"arp"
            })
        );
        assert_eq!(
            network_layer(1, &eth(&[0x0040], b"llc")),
            Ok(Network::NotIp {
                protocol: 0,
                payload: b"llc"
            })
        );
        // truncated header and truncated tag
        assert!(network_layer(1, &[0; 13]).is_err());
        assert!(network_layer(1, &eth(&[0x8100], &[0, 1])).is_err());
        // endless tags stop
        let many = eth(&[0x8100; 20], b"");
        assert!(network_layer(1, &many).is_ok() || network_layer(1, &many).is_err());
    }

    #[test]
    fn linux_cooked() {
        let mut sll = vec![0, 0, 0, 1, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0, 0x08, 0x00];
        sll.extend_from_slice(IP4);
        assert_eq!(network_layer(113, &sll), Ok(Network::Ipv4(IP4)));
        let mut sll2 = vec![
            0x86, 0xdd, 0, 0, 0, 0, 0, 1, 0, 1, 4, 6, 1, 2, 3, 4, 5, 6, 0, 0,
        ];
        sll2.extend_from_slice(IP6);
        assert_eq!(network_layer(276, &sll2), Ok(Network::Ipv6(IP6)));
        // VLAN inside SLL (tagged frames on a Linux "any" capture)
        let mut sllv = vec![
            0, 0, 0, 1, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0, 0x81, 0x00, 0, 7, 0x08, 0,
        ];
        sllv.extend_from_slice(IP4);
        assert_eq!(network_layer(113, &sllv), Ok(Network::Ipv4(IP4)));
        // netlink
        let nl = [
            0, 0, 0x03, 0x38, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x08, 0x00, 1,
        ];
        assert!(matches!(network_layer(113, &nl), Ok(Network::NotIp { .. })));
        assert!(network_layer(276, &sll2[..19]).is_err());
        assert!(network_layer(113, &sll[..15]).is_err());
    }

    #[test]
    fn linux_cooked_loopback_device() {
        // `tcpdump -i any` writes traffic on `lo` with ARPHRD_LOOPBACK (772), outgoing
        // packet type 4: how `emulate`/`send` traffic on 127.0.0.1 is captured.
        let mut sll = vec![0, 4, 0x03, 0x04, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0x08, 0x00];
        sll.extend_from_slice(IP4);
        assert_eq!(network_layer(113, &sll), Ok(Network::Ipv4(IP4)));
        // This is why SLL is not read with etherparse's slicer (0.21): it rejects
        // hardware types other than Ethernet, netlink, GRE, FRAD and radiotap. If
        // this starts to pass, SLL can move to `LinuxSllHeaderSlice`.
        assert!(etherparse::LinuxSllHeaderSlice::from_slice(&sll).is_err());
    }

    #[test]
    fn loopback_both_orders() {
        let mut le = 2u32.to_le_bytes().to_vec();
        le.extend_from_slice(IP4);
        assert_eq!(network_layer(0, &le), Ok(Network::Ipv4(IP4)));
        let mut be = 2u32.to_be_bytes().to_vec();
        be.extend_from_slice(IP4);
        assert_eq!(network_layer(0, &be), Ok(Network::Ipv4(IP4)));
        for af in [24u32, 28, 30] {
            let mut v = af.to_le_bytes().to_vec();
            v.extend_from_slice(IP6);
            assert_eq!(network_layer(0, &v), Ok(Network::Ipv6(IP6)));
        }
        let mut lp = 24u32.to_be_bytes().to_vec();
        lp.extend_from_slice(IP6);
        assert_eq!(network_layer(108, &lp), Ok(Network::Ipv6(IP6)));
        assert!(matches!(
            network_layer(0, &[7, 0, 0, 0]),
            Ok(Network::NotIp { protocol: 7, .. })
        ));
        assert!(network_layer(0, &[2, 0]).is_err());
    }

    #[test]
    fn raw_ip_variants() {
        for lt in [101, 12, 14] {
            assert_eq!(network_layer(lt, IP4), Ok(Network::Ipv4(IP4)));
            assert_eq!(network_layer(lt, IP6), Ok(Network::Ipv6(IP6)));
            assert!(matches!(network_layer(lt, &[]), Ok(Network::NotIp { .. })));
        }
        assert_eq!(network_layer(228, IP4), Ok(Network::Ipv4(IP4)));
        assert_eq!(network_layer(229, IP6), Ok(Network::Ipv6(IP6)));
    }

    #[test]
    fn other_link_types_are_passed_on() {
        for lt in [147, 189, 220, 249, 9999] {
            assert_eq!(
                network_layer(lt, b"usb"),
                Ok(Network::OtherLinkType {
                    linktype: lt,
                    data: b"usb"
                })
            );
        }
    }
}
