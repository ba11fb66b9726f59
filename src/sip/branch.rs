//! Our branch parameter (RFC 3261 §16.6 step 8, §16.11) and the other values we hand out
//! and must recognise later without state: the Record-Route proof of a screened dialog and
//! the keys of maps filled from network data. All are keyed with the `[state]` secret, at
//! the strength each needs: what must not be forged (the branch and Record-Route MACs) with
//! SipHash-2-4, a MAC made for short inputs; map keys with SipHash-1-3 (as std's HashMap),
//! so nobody can choose colliding keys; the rest (transaction and loop parts, our To tag),
//! which only have to be stable and spread, with xxh3 seeded from the key.
//!
//! Branch: `z9hG4bK-sg` + transaction part (16 hex) + loop part (8 hex) + MAC (16 hex).
//! The MAC covers both parts and the address a response must go back to (transport, IP,
//! port), so a response is relayed only to where the request really came from.

use super::addr::Transport;
use super::splice::push_hex;
use siphasher::sip::{SipHasher13, SipHasher24};
use std::hash::Hasher;
use std::net::{IpAddr, SocketAddr};
use xxhash_rust::xxh3::xxh3_64_with_seed;

pub const MAGIC: &[u8] = b"z9hG4bK";
/// Our branches start with this.
pub const OUR_BRANCH_PREFIX: &str = "z9hG4bK-sg";
/// Hex digits after the prefix: transaction 16, loop 8, MAC 16.
pub const OUR_BRANCH_DIGITS: usize = 40;

/// The key all of the above are derived with. Cheap to copy.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Key {
    sip: [u8; 16],
    /// For the xxh3 hashes.
    seed: u64,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

/// Domain labels, so a value made for one purpose never verifies as another.
#[derive(Clone, Copy)]
#[repr(u8)]
pub enum Purpose {
    Transaction = 1,
    Loop = 2,
    BranchMac = 3,
    RouteMac = 4,
    Call = 5,
    Facts = 6,
    ToTag = 7,
}

/// Length-prefixed parts written into a hasher, so ("ab","c") != ("a","bc").
fn write_parts(h: &mut impl Hasher, purpose: Purpose, parts: &[&[u8]]) {
    h.write_u8(purpose as u8);
    for p in parts {
        h.write_u32(p.len() as u32);
        h.write(p);
    }
}

impl Key {
    /// Derive the key from secret material (the `[state]` secret file or `[server] secret`).
    pub fn derive(secret: &[u8]) -> Key {
        use siphasher::sip128::Hasher128;
        // A fixed key: this only condenses secret material that is itself random.
        let mut h = siphasher::sip128::SipHasher24::new_with_keys(0x7369_7067_7561_7264, 0x6b65_7920_6465_7269);
        h.write(secret);
        let sip = h.finish128().as_bytes();
        let seed = SipHasher24::new_with_key(&sip).hash(b"xxh3 seed");
        Key { sip, seed }
    }

    /// A MAC of `parts` (SipHash-2-4): for what we hand out and must not be forged.
    pub fn mac(&self, purpose: Purpose, parts: &[&[u8]]) -> u64 {
        let mut h = SipHasher24::new_with_key(&self.sip);
        write_parts(&mut h, purpose, parts);
        h.finish()
    }

    /// A map key (SipHash-1-3): unpredictable, so no one can make keys collide.
    pub fn map_key(&self, purpose: Purpose, parts: &[&[u8]]) -> u64 {
        let mut h = SipHasher13::new_with_key(&self.sip);
        write_parts(&mut h, purpose, parts);
        h.finish()
    }

    /// A stable, well-spread hash (xxh3, seeded from the key), each part seeded by the
    /// hash so far: field boundaries count and nothing is copied.
    pub fn fast(&self, purpose: Purpose, parts: &[&[u8]]) -> u64 {
        parts.iter().fold(self.seed ^ purpose as u64, |h, p| xxh3_64_with_seed(p, h))
    }
}

/// The fields of a request its branch is derived from: those an INVITE, its
/// retransmissions, its CANCEL and the ACK for a non-2xx reply share (§9.1, §16.11). Not
/// Proxy-Authorization or Proxy-Require, which a CANCEL does not carry (RFC 3261 table 3),
/// nor the To tag, which the ACK for a non-2xx gains.
pub struct TxFields<'a> {
    pub top_via: &'a [u8],
    pub top_branch: Option<&'a [u8]>,
    /// host:port as written.
    pub sent_by: &'a [u8],
    pub magic: bool,
    pub request_uri: &'a [u8],
    pub call_id: &'a [u8],
    pub from_tag: &'a [u8],
    pub cseq_number: u64,
}

/// Transaction part: with an RFC 3261 client the incoming branch and sent-by identify the
/// transaction; without the magic cookie, the §16.6 field list is used.
pub fn transaction_hash(key: &Key, f: &TxFields<'_>) -> u64 {
    if f.magic {
        return key.fast(Purpose::Transaction, &[b"3261", f.top_branch.unwrap_or_default(), f.sent_by]);
    }
    let n = f.cseq_number.to_le_bytes();
    key.fast(Purpose::Transaction, &[b"2543", f.top_via, f.request_uri, f.call_id, f.from_tag, &n])
}

/// Loop part: fields a looping request keeps unchanged, excluding the top Via that each
/// hop replaces (§16.3 step 4). A spiral changes the Request-URI and passes.
pub fn loop_hash(key: &Key, f: &TxFields<'_>) -> u32 {
    let n = f.cseq_number.to_le_bytes();
    key.fast(Purpose::Loop, &[f.request_uri, f.call_id, f.from_tag, &n]) as u32
}

fn ip_bytes(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

fn target_mac(key: &Key, tx: u64, lp: u32, transport: Transport, target: SocketAddr) -> u64 {
    // Fixed-size fields in one buffer: one pass of SipHash over 31 bytes.
    let mut buf = [0u8; 31];
    buf[0] = Purpose::BranchMac as u8;
    buf[1..9].copy_from_slice(&tx.to_le_bytes());
    buf[9..13].copy_from_slice(&lp.to_le_bytes());
    buf[13..29].copy_from_slice(&ip_bytes(target.ip()));
    buf[29] = (target.port() >> 8) as u8;
    buf[30] = target.port() as u8;
    let mut h = SipHasher24::new_with_key(&key.sip);
    h.write(&buf);
    h.write_u8(transport as u8);
    h.finish()
}

/// Append our branch for a request whose response must go to `target` over `transport`.
pub fn write(out: &mut Vec<u8>, key: &Key, tx: u64, lp: u32, transport: Transport, target: SocketAddr) {
    out.extend_from_slice(OUR_BRANCH_PREFIX.as_bytes());
    push_hex(out, tx, 16);
    push_hex(out, u64::from(lp), 8);
    push_hex(out, target_mac(key, tx, lp, transport, target), 16);
}

/// One of our branches, read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ours {
    pub tx: u64,
    pub lp: u32,
    mac: u64,
}

/// Read `branch` as one of ours (no MAC check yet); None when it is not in our form.
pub fn parse(branch: &[u8]) -> Option<Ours> {
    let rest = branch.strip_prefix(OUR_BRANCH_PREFIX.as_bytes())?;
    if rest.len() != OUR_BRANCH_DIGITS {
        return None;
    }
    Some(Ours { tx: hex(&rest[..16])?, lp: hex(&rest[16..24])? as u32, mac: hex(&rest[24..])? })
}

impl Ours {
    /// Did we issue this branch for a request whose response goes to `target`?
    pub fn verifies(&self, key: &Key, transport: Transport, target: SocketAddr) -> bool {
        target_mac(key, self.tx, self.lp, transport, target) == self.mac
    }
}

/// The proof, in our Record-Route URI, that a dialog's first INVITE was screened here: a
/// MAC over the Call-ID, the caller's From tag and the callee (the user part of the To URI,
/// `addr::party_of`). An in-dialog request from either end carries all three: from the
/// caller as From tag and To URI, from the callee as To tag and From URI.
pub fn route_mac(key: &Key, call_id: &[u8], caller_tag: &[u8], callee: &[u8]) -> u64 {
    key.mac(Purpose::RouteMac, &[call_id, caller_tag, callee])
}

/// Parse 1-16 lower- or upper-case hex digits.
pub fn hex(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 16 {
        return None;
    }
    s.iter().try_fold(0u64, |acc, &c| match HEX_VALUE[c as usize] {
        0xff => None,
        d => Some(acc << 4 | u64::from(d)),
    })
}

/// The value of each hex digit; 0xff for any other byte.
static HEX_VALUE: [u8; 256] = {
    let mut t = [0xff; 256];
    let mut i = 0;
    while i < 256 {
        let c = i as u8;
        t[i] = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => 0xff,
        };
        i += 1;
    }
    t
};

#[cfg(test)]
mod tests {
    use super::*;

    fn fields<'a>(branch: &'a [u8], uri: &'a [u8]) -> TxFields<'a> {
        TxFields {
            top_via: b"SIP/2.0/UDP a",
            top_branch: Some(branch),
            sent_by: b"a:5060",
            magic: branch.len() > 7 && branch.starts_with(MAGIC),
            request_uri: uri,
            call_id: b"c",
            from_tag: b"f",
            cseq_number: 1,
        }
    }

    #[test]
    fn branch_round_trip_and_mac() {
        let key = Key::derive(b"test secret");
        let f = fields(b"z9hG4bK1", b"sip:x");
        let (tx, lp) = (transaction_hash(&key, &f), loop_hash(&key, &f));
        let target: SocketAddr = "10.0.0.1:5062".parse().unwrap();
        let mut b = Vec::new();
        write(&mut b, &key, tx, lp, Transport::Udp, target);
        assert_eq!(b.len(), OUR_BRANCH_PREFIX.len() + OUR_BRANCH_DIGITS);
        let ours = parse(&b).unwrap();
        assert_eq!((ours.tx, ours.lp), (tx, lp));
        assert!(ours.verifies(&key, Transport::Udp, target));
        assert!(!ours.verifies(&key, Transport::Tcp, target), "transport is covered");
        assert!(!ours.verifies(&key, Transport::Udp, "10.0.0.1:5063".parse().unwrap()), "port is covered");
        assert!(!ours.verifies(&key, Transport::Udp, "10.0.0.2:5062".parse().unwrap()), "IP is covered");
        assert!(!ours.verifies(&Key::derive(b"other"), Transport::Udp, target), "key is covered");
        // Flip one digit of the transaction part: the MAC no longer fits.
        let mut forged = b.clone();
        let i = OUR_BRANCH_PREFIX.len();
        forged[i] = if forged[i] == b'0' { b'1' } else { b'0' };
        assert!(!parse(&forged).unwrap().verifies(&key, Transport::Udp, target));
        assert!(parse(b"z9hG4bK-sgforged").is_none());
        assert!(parse(b"z9hG4bK-sg0123456789abcdef01234567zzzzzzzzzzzzzzzz").is_none());
    }

    #[test]
    fn stable_and_field_sensitive() {
        let key = Key::derive(b"k");
        let a = transaction_hash(&key, &fields(b"z9hG4bK1", b"sip:x"));
        assert_eq!(a, transaction_hash(&key, &fields(b"z9hG4bK1", b"sip:x")));
        assert_ne!(a, transaction_hash(&key, &fields(b"z9hG4bK2", b"sip:x")));
        assert_ne!(
            transaction_hash(&key, &fields(b"abc", b"sip:x")),
            transaction_hash(&key, &fields(b"abc", b"sip:y")),
            "without the cookie the message fields decide"
        );
        for h in [Key::mac, Key::map_key, Key::fast] {
            assert_ne!(h(&key, Purpose::Call, &[b"ab", b"c"]), h(&key, Purpose::Call, &[b"a", b"bc"]));
            assert_ne!(h(&key, Purpose::Call, &[b"a"]), h(&key, Purpose::Facts, &[b"a"]));
            assert_ne!(h(&key, Purpose::Call, &[b"a"]), h(&Key::derive(b"k2"), Purpose::Call, &[b"a"]));
        }
    }

    #[test]
    fn hex_digits() {
        assert_eq!(hex(b"00ff"), Some(255));
        assert_eq!(hex(b"FF"), Some(255));
        assert_eq!(hex(b""), None);
        assert_eq!(hex(b"0g"), None);
        assert_eq!(hex(b"00000000000000001"), None);
    }
}
