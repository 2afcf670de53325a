//! BGP-4 messages as values, and their wire form: OPEN with capabilities
//! (multiprotocol, route refresh, 4-octet AS, graceful restart), UPDATE
//! (withdrawn routes, path attributes, IPv4 NLRI), NOTIFICATION, KEEPALIVE
//! and ROUTE-REFRESH. Decoding never panics: every malformed body becomes a
//! [`DecodeError`] carrying the NOTIFICATION RFC 4271 section 6 names for it.

use bytes::{Buf, BufMut, BytesMut};
use ipnet::Ipv4Net;
use std::fmt;
use std::net::Ipv4Addr;

/// Every message starts with 16 bytes of ones.
pub const MARKER: [u8; 16] = [0xff; 16];
/// Marker, length and type.
pub const HEADER_LEN: usize = 19;
/// The largest message RFC 4271 allows.
pub const MAX_LEN: usize = 4096;
/// The 2-octet stand-in for an AS number above 65535 (RFC 6793).
pub const AS_TRANS: u16 = 23456;
/// AFI IPv4 and SAFI unicast.
pub const AFI_IPV4: u16 = 1;
pub const SAFI_UNICAST: u8 = 1;

pub const TYPE_OPEN: u8 = 1;
pub const TYPE_UPDATE: u8 = 2;
pub const TYPE_NOTIFICATION: u8 = 3;
pub const TYPE_KEEPALIVE: u8 = 4;
pub const TYPE_ROUTE_REFRESH: u8 = 5;

const ATTR_ORIGIN: u8 = 1;
const ATTR_AS_PATH: u8 = 2;
const ATTR_NEXT_HOP: u8 = 3;
const ATTR_LOCAL_PREF: u8 = 5;
const ATTR_AS4_PATH: u8 = 17;
const FLAG_OPTIONAL: u8 = 0x80;
const FLAG_TRANSITIVE: u8 = 0x40;
const FLAG_EXTENDED: u8 = 0x10;

/// One BGP message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Open(Open),
    Update(Update),
    Notification(Notification),
    Keepalive,
    RouteRefresh { afi: u16, safi: u8 },
}

/// An OPEN message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Open {
    pub version: u8,
    /// The 2-octet "My Autonomous System" field (AS_TRANS for a larger AS).
    pub my_as: u16,
    pub hold_time: u16,
    pub bgp_id: Ipv4Addr,
    pub capabilities: Vec<Capability>,
}

/// A capability in an OPEN's optional parameters (RFC 5492).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Capability {
    MultiProtocol { afi: u16, safi: u8 },
    RouteRefresh,
    FourOctetAs(u32),
    GracefulRestart(GracefulRestart),
    Unknown { code: u8, data: Vec<u8> },
}

/// The graceful restart capability (RFC 4724 section 3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GracefulRestart {
    /// R-bit: the sender has restarted.
    pub restarted: bool,
    /// Seconds the receiver should keep the sender's routes (12 bits).
    pub restart_time: u16,
    /// (AFI, SAFI, forwarding state preserved).
    pub families: Vec<(u16, u8, bool)>,
}

/// An UPDATE message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Update {
    pub withdrawn: Vec<Ipv4Net>,
    pub attributes: Vec<PathAttribute>,
    pub nlri: Vec<Ipv4Net>,
}

/// A path attribute; the ones this speaker reads or writes by name, the
/// rest kept as bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathAttribute {
    /// 0 IGP, 1 EGP, 2 INCOMPLETE.
    Origin(u8),
    AsPath(Vec<AsSegment>),
    NextHop(Ipv4Addr),
    LocalPref(u32),
    Other {
        flags: u8,
        code: u8,
        value: Vec<u8>,
    },
}

/// One AS_PATH segment: `AS_SET` (1) or `AS_SEQUENCE` (2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AsSegment {
    pub kind: u8,
    pub asns: Vec<u32>,
}

pub const AS_SEQUENCE: u8 = 2;

/// A NOTIFICATION: error code, subcode and data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    pub code: u8,
    pub subcode: u8,
    pub data: Vec<u8>,
}

/// A body that cannot be decoded, with the NOTIFICATION to answer it with.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{what} ({notification})")]
pub struct DecodeError {
    pub notification: Notification,
    pub what: String,
}

fn err(code: u8, subcode: u8, what: impl Into<String>) -> DecodeError {
    DecodeError {
        notification: Notification::new(code, subcode),
        what: what.into(),
    }
}

impl Notification {
    pub const HEADER: u8 = 1;
    pub const OPEN: u8 = 2;
    pub const UPDATE: u8 = 3;
    pub const HOLD_TIMER_EXPIRED: u8 = 4;
    pub const FSM: u8 = 5;
    pub const CEASE: u8 = 6;

    pub fn new(code: u8, subcode: u8) -> Self {
        Self {
            code,
            subcode,
            data: Vec::new(),
        }
    }

    /// The RFC's name of the error code and subcode.
    pub fn name(&self) -> String {
        let code = match self.code {
            1 => "Message Header Error",
            2 => "OPEN Message Error",
            3 => "UPDATE Message Error",
            4 => "Hold Timer Expired",
            5 => "Finite State Machine Error",
            6 => "Cease",
            7 => "ROUTE-REFRESH Message Error",
            _ => "unknown error code",
        };
        let sub = match (self.code, self.subcode) {
            (1, 1) => "Connection Not Synchronized",
            (1, 2) => "Bad Message Length",
            (1, 3) => "Bad Message Type",
            (2, 1) => "Unsupported Version Number",
            (2, 2) => "Bad Peer AS",
            (2, 3) => "Bad BGP Identifier",
            (2, 4) => "Unsupported Optional Parameter",
            (2, 6) => "Unacceptable Hold Time",
            (2, 7) => "Unsupported Capability",
            (3, 1) => "Malformed Attribute List",
            (3, 2) => "Unrecognized Well-known Attribute",
            (3, 3) => "Missing Well-known Attribute",
            (3, 4) => "Attribute Flags Error",
            (3, 5) => "Attribute Length Error",
            (3, 6) => "Invalid ORIGIN Attribute",
            (3, 8) => "Invalid NEXT_HOP Attribute",
            (3, 9) => "Optional Attribute Error",
            (3, 10) => "Invalid Network Field",
            (3, 11) => "Malformed AS_PATH",
            (6, 1) => "Maximum Number of Prefixes Reached",
            (6, 2) => "Administrative Shutdown",
            (6, 3) => "Peer De-configured",
            (6, 4) => "Administrative Reset",
            (6, 5) => "Connection Rejected",
            (6, 6) => "Other Configuration Change",
            (6, 7) => "Connection Collision Resolution",
            (6, 8) => "Out of Resources",
            (6, 9) => "Hard Reset",
            (_, 0) => "",
            _ => "unknown subcode",
        };
        if sub.is_empty() {
            code.to_owned()
        } else {
            format!("{code} / {sub}")
        }
    }
}

impl fmt::Display for Notification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}/{})", self.name(), self.code, self.subcode)
    }
}

impl Open {
    /// An OPEN for `asn`: the 2-octet field carries AS_TRANS when `asn` does
    /// not fit, and the 4-octet AS capability always carries the real one.
    pub fn new(
        asn: u32,
        hold_time: u16,
        bgp_id: Ipv4Addr,
        mut capabilities: Vec<Capability>,
    ) -> Self {
        capabilities.retain(|c| !matches!(c, Capability::FourOctetAs(_)));
        capabilities.push(Capability::FourOctetAs(asn));
        Self {
            version: 4,
            my_as: u16::try_from(asn).unwrap_or(AS_TRANS),
            hold_time,
            bgp_id,
            capabilities,
        }
    }

    /// The sender's AS: from the 4-octet AS capability when present.
    pub fn asn(&self) -> u32 {
        self.four_octet_as().unwrap_or(u32::from(self.my_as))
    }

    pub fn four_octet_as(&self) -> Option<u32> {
        self.capabilities.iter().find_map(|c| match c {
            Capability::FourOctetAs(a) => Some(*a),
            _ => None,
        })
    }

    pub fn graceful_restart(&self) -> Option<&GracefulRestart> {
        self.capabilities.iter().find_map(|c| match c {
            Capability::GracefulRestart(g) => Some(g),
            _ => None,
        })
    }

    pub fn route_refresh(&self) -> bool {
        self.capabilities
            .iter()
            .any(|c| matches!(c, Capability::RouteRefresh))
    }
}

impl Update {
    /// An UPDATE with nothing in it: the End-of-RIB marker for IPv4 unicast
    /// (RFC 4724 section 2).
    pub fn is_end_of_rib(&self) -> bool {
        self.withdrawn.is_empty() && self.attributes.is_empty() && self.nlri.is_empty()
    }
}

impl Message {
    /// The whole message, header included. `four_octet_as`: whether both
    /// sides announced the 4-octet AS capability (how AS_PATH is written).
    pub fn encode(&self, four_octet_as: bool, out: &mut BytesMut) {
        let start = out.len();
        out.put_slice(&MARKER);
        out.put_u16(0); // length, filled in below
        match self {
            Message::Open(o) => {
                out.put_u8(TYPE_OPEN);
                encode_open(o, out);
            }
            Message::Update(u) => {
                out.put_u8(TYPE_UPDATE);
                encode_update(u, four_octet_as, out);
            }
            Message::Notification(n) => {
                out.put_u8(TYPE_NOTIFICATION);
                out.put_u8(n.code);
                out.put_u8(n.subcode);
                out.put_slice(&n.data);
            }
            Message::Keepalive => out.put_u8(TYPE_KEEPALIVE),
            Message::RouteRefresh { afi, safi } => {
                out.put_u8(TYPE_ROUTE_REFRESH);
                out.put_u16(*afi);
                out.put_u8(0);
                out.put_u8(*safi);
            }
        }
        let len = u16::try_from(out.len() - start).unwrap_or(u16::MAX);
        out[start + 16..start + 18].copy_from_slice(&len.to_be_bytes());
    }

    /// Decode a body of message type `kind` (the header already checked).
    pub fn decode(kind: u8, body: &[u8], four_octet_as: bool) -> Result<Message, DecodeError> {
        match kind {
            TYPE_OPEN => decode_open(body).map(Message::Open),
            TYPE_UPDATE => decode_update(body, four_octet_as).map(Message::Update),
            TYPE_NOTIFICATION => {
                if body.len() < 2 {
                    return Err(err(1, 2, "NOTIFICATION shorter than 21 bytes"));
                }
                Ok(Message::Notification(Notification {
                    code: body[0],
                    subcode: body[1],
                    data: body[2..].to_vec(),
                }))
            }
            TYPE_KEEPALIVE => {
                if body.is_empty() {
                    Ok(Message::Keepalive)
                } else {
                    Err(err(1, 2, "KEEPALIVE longer than 19 bytes"))
                }
            }
            TYPE_ROUTE_REFRESH => {
                if body.len() != 4 {
                    return Err(err(1, 2, "ROUTE-REFRESH is not 23 bytes"));
                }
                Ok(Message::RouteRefresh {
                    afi: u16::from_be_bytes([body[0], body[1]]),
                    safi: body[3],
                })
            }
            other => Err(DecodeError {
                notification: Notification {
                    code: 1,
                    subcode: 3,
                    data: vec![other],
                },
                what: format!("unknown message type {other}"),
            }),
        }
    }
}

fn encode_open(o: &Open, out: &mut BytesMut) {
    out.put_u8(o.version);
    out.put_u16(o.my_as);
    out.put_u16(o.hold_time);
    out.put_slice(&o.bgp_id.octets());
    let mut params = BytesMut::new();
    for cap in &o.capabilities {
        let mut value = BytesMut::new();
        let code = match cap {
            Capability::MultiProtocol { afi, safi } => {
                value.put_u16(*afi);
                value.put_u8(0);
                value.put_u8(*safi);
                1
            }
            Capability::RouteRefresh => 2,
            Capability::GracefulRestart(g) => {
                let flags: u16 = if g.restarted { 0x8000 } else { 0 };
                value.put_u16(flags | (g.restart_time & 0x0fff));
                for (afi, safi, fwd) in &g.families {
                    value.put_u16(*afi);
                    value.put_u8(*safi);
                    value.put_u8(if *fwd { 0x80 } else { 0 });
                }
                64
            }
            Capability::FourOctetAs(asn) => {
                value.put_u32(*asn);
                65
            }
            Capability::Unknown { code, data } => {
                value.put_slice(data);
                *code
            }
        };
        // One capability per optional parameter of type 2.
        params.put_u8(2);
        params.put_u8(u8::try_from(value.len() + 2).unwrap_or(u8::MAX));
        params.put_u8(code);
        params.put_u8(u8::try_from(value.len()).unwrap_or(u8::MAX));
        params.put_slice(&value);
    }
    out.put_u8(u8::try_from(params.len()).unwrap_or(u8::MAX));
    out.put_slice(&params);
}

fn decode_open(mut b: &[u8]) -> Result<Open, DecodeError> {
    if b.len() < 10 {
        return Err(err(1, 2, "OPEN shorter than 29 bytes"));
    }
    let version = b.get_u8();
    let my_as = b.get_u16();
    let hold_time = b.get_u16();
    let bgp_id = Ipv4Addr::from(b.get_u32());
    let params_len = usize::from(b.get_u8());
    if params_len != b.len() {
        return Err(err(2, 0, "OPEN optional parameters length does not match"));
    }
    let mut capabilities = Vec::new();
    while b.has_remaining() {
        if b.len() < 2 {
            return Err(err(2, 0, "truncated optional parameter"));
        }
        let ptype = b.get_u8();
        let plen = usize::from(b.get_u8());
        if b.len() < plen {
            return Err(err(2, 0, "truncated optional parameter"));
        }
        let (mut p, rest) = b.split_at(plen);
        b = rest;
        if ptype != 2 {
            return Err(err(2, 4, format!("optional parameter type {ptype}")));
        }
        while p.has_remaining() {
            if p.len() < 2 {
                return Err(err(2, 0, "truncated capability"));
            }
            let code = p.get_u8();
            let clen = usize::from(p.get_u8());
            if p.len() < clen {
                return Err(err(
                    2,
                    0,
                    format!("capability {code} longer than its parameter"),
                ));
            }
            let (mut v, rest) = p.split_at(clen);
            p = rest;
            capabilities.push(match (code, clen) {
                (1, 4) => {
                    let afi = v.get_u16();
                    v.advance(1);
                    Capability::MultiProtocol {
                        afi,
                        safi: v.get_u8(),
                    }
                }
                (2, 0) => Capability::RouteRefresh,
                (65, 4) => Capability::FourOctetAs(v.get_u32()),
                (64, n) if n >= 2 && (n - 2) % 4 == 0 => {
                    let flags = v.get_u16();
                    let mut families = Vec::new();
                    while v.remaining() >= 4 {
                        let afi = v.get_u16();
                        let safi = v.get_u8();
                        let f = v.get_u8();
                        families.push((afi, safi, f & 0x80 != 0));
                    }
                    Capability::GracefulRestart(GracefulRestart {
                        restarted: flags & 0x8000 != 0,
                        restart_time: flags & 0x0fff,
                        families,
                    })
                }
                (1 | 2 | 64 | 65, _) => {
                    return Err(err(2, 0, format!("capability {code} has length {clen}")));
                }
                _ => Capability::Unknown {
                    code,
                    data: v.to_vec(),
                },
            });
        }
    }
    Ok(Open {
        version,
        my_as,
        hold_time,
        bgp_id,
        capabilities,
    })
}

fn put_prefix(p: &Ipv4Net, out: &mut BytesMut) {
    out.put_u8(p.prefix_len());
    let bytes = usize::from(p.prefix_len()).div_ceil(8);
    out.put_slice(&p.network().octets()[..bytes]);
}

fn decode_prefixes(mut b: &[u8], what: &str) -> Result<Vec<Ipv4Net>, DecodeError> {
    let mut out = Vec::new();
    while b.has_remaining() {
        let len = b.get_u8();
        if len > 32 {
            return Err(err(3, 10, format!("{what}: prefix length {len}")));
        }
        let n = usize::from(len).div_ceil(8);
        if b.len() < n {
            return Err(err(3, 10, format!("{what}: truncated prefix")));
        }
        let mut octets = [0u8; 4];
        octets[..n].copy_from_slice(&b[..n]);
        b.advance(n);
        let net = Ipv4Net::new(Ipv4Addr::from(octets), len)
            .map_err(|_| err(3, 10, format!("{what}: prefix length {len}")))?;
        out.push(net.trunc());
    }
    Ok(out)
}

fn encode_as_path(segments: &[AsSegment], four: bool, out: &mut BytesMut) {
    for s in segments {
        out.put_u8(s.kind);
        out.put_u8(u8::try_from(s.asns.len()).unwrap_or(u8::MAX));
        for a in &s.asns {
            if four {
                out.put_u32(*a);
            } else {
                out.put_u16(u16::try_from(*a).unwrap_or(AS_TRANS));
            }
        }
    }
}

fn put_attribute(flags: u8, code: u8, value: &[u8], out: &mut BytesMut) {
    if value.len() > 255 {
        out.put_u8(flags | FLAG_EXTENDED);
        out.put_u8(code);
        out.put_u16(u16::try_from(value.len()).unwrap_or(u16::MAX));
    } else {
        out.put_u8(flags & !FLAG_EXTENDED);
        out.put_u8(code);
        out.put_u8(u8::try_from(value.len()).unwrap_or(u8::MAX));
    }
    out.put_slice(value);
}

fn encode_update(u: &Update, four: bool, out: &mut BytesMut) {
    let mut withdrawn = BytesMut::new();
    for p in &u.withdrawn {
        put_prefix(p, &mut withdrawn);
    }
    out.put_u16(u16::try_from(withdrawn.len()).unwrap_or(u16::MAX));
    out.put_slice(&withdrawn);
    let mut attrs = BytesMut::new();
    for a in &u.attributes {
        let mut v = BytesMut::new();
        match a {
            PathAttribute::Origin(o) => {
                v.put_u8(*o);
                put_attribute(FLAG_TRANSITIVE, ATTR_ORIGIN, &v, &mut attrs);
            }
            PathAttribute::AsPath(segs) => {
                encode_as_path(segs, four, &mut v);
                put_attribute(FLAG_TRANSITIVE, ATTR_AS_PATH, &v, &mut attrs);
                let needs_as4 = !four && segs.iter().any(|s| s.asns.iter().any(|a| *a > 0xffff));
                if needs_as4 {
                    // RFC 6793 section 4.2.2: the real path for a 2-octet peer.
                    let mut v4 = BytesMut::new();
                    encode_as_path(segs, true, &mut v4);
                    put_attribute(
                        FLAG_OPTIONAL | FLAG_TRANSITIVE,
                        ATTR_AS4_PATH,
                        &v4,
                        &mut attrs,
                    );
                }
            }
            PathAttribute::NextHop(ip) => {
                v.put_slice(&ip.octets());
                put_attribute(FLAG_TRANSITIVE, ATTR_NEXT_HOP, &v, &mut attrs);
            }
            PathAttribute::LocalPref(p) => {
                v.put_u32(*p);
                put_attribute(FLAG_TRANSITIVE, ATTR_LOCAL_PREF, &v, &mut attrs);
            }
            PathAttribute::Other { flags, code, value } => {
                put_attribute(*flags, *code, value, &mut attrs);
            }
        }
    }
    out.put_u16(u16::try_from(attrs.len()).unwrap_or(u16::MAX));
    out.put_slice(&attrs);
    for p in &u.nlri {
        put_prefix(p, out);
    }
}

fn decode_update(mut b: &[u8], four: bool) -> Result<Update, DecodeError> {
    if b.len() < 2 {
        return Err(err(3, 1, "UPDATE shorter than 23 bytes"));
    }
    let wlen = usize::from(b.get_u16());
    if b.len() < wlen + 2 {
        return Err(err(3, 1, "withdrawn routes length runs past the message"));
    }
    let withdrawn = decode_prefixes(&b[..wlen], "withdrawn routes")?;
    b.advance(wlen);
    let alen = usize::from(b.get_u16());
    if b.len() < alen {
        return Err(err(3, 1, "path attribute length runs past the message"));
    }
    let (mut a, nlri) = b.split_at(alen);
    let nlri = decode_prefixes(nlri, "NLRI")?;
    let mut attributes = Vec::new();
    while a.has_remaining() {
        if a.len() < 3 {
            return Err(err(3, 1, "truncated path attribute"));
        }
        let flags = a.get_u8();
        let code = a.get_u8();
        let len = if flags & FLAG_EXTENDED != 0 {
            if a.len() < 2 {
                return Err(err(3, 1, "truncated path attribute"));
            }
            usize::from(a.get_u16())
        } else {
            usize::from(a.get_u8())
        };
        if a.len() < len {
            return Err(err(
                3,
                5,
                format!("attribute {code} runs past the attributes"),
            ));
        }
        let (mut v, rest) = a.split_at(len);
        a = rest;
        attributes.push(match code {
            ATTR_ORIGIN => {
                if len != 1 {
                    return Err(err(3, 5, "ORIGIN is not 1 byte"));
                }
                let o = v.get_u8();
                if o > 2 {
                    return Err(err(3, 6, format!("ORIGIN {o}")));
                }
                PathAttribute::Origin(o)
            }
            ATTR_AS_PATH => {
                let width = if four { 4 } else { 2 };
                let mut segs = Vec::new();
                while v.has_remaining() {
                    if v.len() < 2 {
                        return Err(err(3, 11, "truncated AS_PATH segment"));
                    }
                    let kind = v.get_u8();
                    let n = usize::from(v.get_u8());
                    if !(1..=4).contains(&kind) || v.len() < n * width {
                        return Err(err(3, 11, "bad AS_PATH segment"));
                    }
                    let asns = (0..n)
                        .map(|_| {
                            if four {
                                v.get_u32()
                            } else {
                                u32::from(v.get_u16())
                            }
                        })
                        .collect();
                    segs.push(AsSegment { kind, asns });
                }
                PathAttribute::AsPath(segs)
            }
            ATTR_NEXT_HOP => {
                if len != 4 {
                    return Err(err(3, 5, "NEXT_HOP is not 4 bytes"));
                }
                PathAttribute::NextHop(Ipv4Addr::from(v.get_u32()))
            }
            ATTR_LOCAL_PREF => {
                if len != 4 {
                    return Err(err(3, 5, "LOCAL_PREF is not 4 bytes"));
                }
                PathAttribute::LocalPref(v.get_u32())
            }
            _ => PathAttribute::Other {
                flags,
                code,
                value: v.to_vec(),
            },
        });
    }
    Ok(Update {
        withdrawn,
        attributes,
        nlri,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn roundtrip(m: &Message, four: bool) -> Message {
        let mut b = BytesMut::new();
        m.encode(four, &mut b);
        assert_eq!(&b[..16], &MARKER);
        let len = usize::from(u16::from_be_bytes([b[16], b[17]]));
        assert_eq!(len, b.len());
        Message::decode(b[18], &b[19..], four).unwrap()
    }

    #[test]
    fn open_with_capabilities_roundtrips() {
        let open = Open::new(
            4_200_000_001,
            90,
            Ipv4Addr::new(192, 0, 2, 10),
            vec![
                Capability::MultiProtocol { afi: 1, safi: 1 },
                Capability::RouteRefresh,
                Capability::GracefulRestart(GracefulRestart {
                    restarted: true,
                    restart_time: 120,
                    families: vec![(1, 1, true)],
                }),
            ],
        );
        assert_eq!(open.my_as, AS_TRANS);
        let back = roundtrip(&Message::Open(open.clone()), true);
        assert_eq!(back, Message::Open(open.clone()));
        let Message::Open(o) = back else {
            unreachable!()
        };
        assert_eq!(o.asn(), 4_200_000_001);
        assert!(o.route_refresh());
        assert_eq!(
            o.graceful_restart().map(|g| (g.restarted, g.restart_time)),
            Some((true, 120))
        );
    }

    #[test]
    fn small_as_fits_the_two_octet_field() {
        let open = Open::new(64512, 3, Ipv4Addr::new(1, 2, 3, 4), vec![]);
        assert_eq!(open.my_as, 64512);
        assert_eq!(open.asn(), 64512);
    }

    #[test]
    fn update_roundtrips_with_both_as_widths() {
        let u = Update {
            withdrawn: vec!["10.244.7.0/24".parse().unwrap()],
            attributes: vec![
                PathAttribute::Origin(0),
                PathAttribute::AsPath(vec![AsSegment {
                    kind: AS_SEQUENCE,
                    asns: vec![65001],
                }]),
                PathAttribute::NextHop(Ipv4Addr::new(10, 0, 0, 5)),
                PathAttribute::LocalPref(100),
            ],
            nlri: vec![
                "10.244.1.0/24".parse().unwrap(),
                "10.0.0.0/8".parse().unwrap(),
                "0.0.0.0/0".parse().unwrap(),
            ],
        };
        for four in [true, false] {
            assert_eq!(
                roundtrip(&Message::Update(u.clone()), four),
                Message::Update(u.clone())
            );
        }
    }

    #[test]
    fn large_as_to_a_two_octet_peer_carries_as4_path() {
        let u = Update {
            attributes: vec![PathAttribute::AsPath(vec![AsSegment {
                kind: AS_SEQUENCE,
                asns: vec![4_200_000_001],
            }])],
            ..Update::default()
        };
        let Message::Update(back) = roundtrip(&Message::Update(u), false) else {
            unreachable!()
        };
        assert_eq!(
            back.attributes[0],
            PathAttribute::AsPath(vec![AsSegment {
                kind: AS_SEQUENCE,
                asns: vec![u32::from(AS_TRANS)]
            }])
        );
        assert!(matches!(
            &back.attributes[1],
            PathAttribute::Other { code: 17, .. }
        ));
    }

    #[test]
    fn end_of_rib_is_an_empty_update() {
        let mut b = BytesMut::new();
        Message::Update(Update::default()).encode(true, &mut b);
        assert_eq!(b.len(), 23);
        let Message::Update(u) = Message::decode(b[18], &b[19..], true).unwrap() else {
            unreachable!()
        };
        assert!(u.is_end_of_rib());
    }

    #[test]
    fn notification_and_refresh_roundtrip() {
        let n = Message::Notification(Notification {
            code: 6,
            subcode: 2,
            data: b"bye".to_vec(),
        });
        assert_eq!(roundtrip(&n, true), n);
        let r = Message::RouteRefresh { afi: 1, safi: 1 };
        assert_eq!(roundtrip(&r, true), r);
        assert_eq!(roundtrip(&Message::Keepalive, true), Message::Keepalive);
    }

    #[test]
    fn malformed_bodies_name_their_notification() {
        let code = |kind: u8, body: &[u8]| {
            let e = Message::decode(kind, body, true).unwrap_err();
            (e.notification.code, e.notification.subcode)
        };
        assert_eq!(code(9, &[]), (1, 3));
        assert_eq!(code(TYPE_KEEPALIVE, &[0]), (1, 2));
        assert_eq!(code(TYPE_OPEN, &[4, 0]), (1, 2));
        // Optional parameter of type 1 (authentication, deprecated).
        assert_eq!(
            code(TYPE_OPEN, &[4, 0, 1, 0, 90, 1, 2, 3, 4, 2, 1, 0]),
            (2, 4)
        );
        // Prefix length 33.
        assert_eq!(code(TYPE_UPDATE, &[0, 0, 0, 0, 33, 1, 2, 3, 4, 5]), (3, 10));
        // ORIGIN 7.
        assert_eq!(code(TYPE_UPDATE, &[0, 0, 0, 4, 0x40, 1, 1, 7]), (3, 6));
    }

    proptest! {
        /// Whatever arrives, decoding returns a value or an error: no panic.
        #[test]
        fn decoding_garbage_never_panics(kind in 0u8..8, body in proptest::collection::vec(any::<u8>(), 0..200), four: bool) {
            let _ = Message::decode(kind, &body, four);
        }

        #[test]
        fn prefixes_roundtrip(addr: u32, len in 0u8..=32) {
            let net = Ipv4Net::new(Ipv4Addr::from(addr), len).unwrap().trunc();
            let u = Update { nlri: vec![net], withdrawn: vec![net], ..Update::default() };
            prop_assert_eq!(roundtrip(&Message::Update(u.clone()), true), Message::Update(u));
        }
    }
}
