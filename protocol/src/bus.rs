//! The envelope of every entry on the cluster's bus: one version byte; then,
//! for what a node publishes itself, its name and the entry's number
//! (`<node>/<n> `); then the entry's JSON (a node-to-node forward of a
//! polling request or a relayed frame, or a message of the Socket.IO
//! layer's cluster), whose `t` tag comes first
//! ([`crate::stats::BusKind::of`]).
//!
//! A node reads only entries of its own version: another's (an instance of
//! another release on the same Redis) is counted and passed over, never
//! misread. A node numbers what it publishes in the order it publishes it,
//! so an entry its host put on the bus twice (a write retried after a
//! timeout, when Redis had taken it the first time) is read once: every
//! kind of entry is idempotent. Entries no node numbers (a send's place,
//! which Redis appends with the token's take) are made idempotent where
//! they are appended.

use std::collections::HashMap;

use bytes::Bytes;

/// The version of the bus's vocabulary this build speaks.
pub const VERSION: u8 = b'1';

/// An entry for the bus, numbered by no node: the version, then `json`.
pub(crate) fn seal(json: &[u8]) -> Bytes {
    let mut entry = Vec::with_capacity(json.len() + 1);
    entry.push(VERSION);
    entry.extend_from_slice(json);
    Bytes::from(entry)
}

/// An entry for the bus, numbered `n` by node `node` (whose name holds no
/// space or `/`): the version, the number, then `json`.
pub(crate) fn number(json: &[u8], node: &str, n: u64) -> Bytes {
    let head = format!("{node}/{n} ");
    let mut entry = Vec::with_capacity(1 + head.len() + json.len());
    entry.push(VERSION);
    entry.extend_from_slice(head.as_bytes());
    entry.extend_from_slice(json);
    Bytes::from(entry)
}

/// An entry of this version, opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opened<'e> {
    /// The node that numbered it, and its number.
    pub from: Option<(&'e str, u64)>,
    /// Its JSON.
    pub json: &'e [u8],
}

/// An entry's parts, if it is of this version.
pub fn open(entry: &[u8]) -> Option<Opened<'_>> {
    let rest = entry.strip_prefix(&[VERSION])?;
    if rest.first() == Some(&b'{') {
        return Some(Opened {
            from: None,
            json: rest,
        });
    }
    let space = rest.iter().position(|&b| b == b' ')?;
    let head = std::str::from_utf8(&rest[..space]).ok()?;
    let (node, n) = head.split_once('/')?;
    Some(Opened {
        from: Some((node, n.parse().ok()?)),
        json: &rest[space + 1..],
    })
}

/// The newest number read from each node that numbers its entries: one
/// read again (its host published it twice) is not fresh. One entry per
/// node that ever published (a few per restart of an instance).
#[derive(Debug, Default)]
pub(crate) struct Newest(HashMap<String, u64>);

impl Newest {
    /// Whether entry `n` of `node` is read for the first time.
    pub(crate) fn fresh(&mut self, node: &str, n: u64) -> bool {
        match self.0.get_mut(node) {
            Some(newest) if *newest >= n => false,
            Some(newest) => {
                *newest = n;
                true
            }
            None => {
                self.0.insert(node.to_owned(), n);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_opens_only_in_its_own_version() {
        let json = br#"{"t":"l","node":"n"}"#;
        let e = seal(json);
        assert_eq!(open(&e), Some(Opened { from: None, json }));
        let numbered = number(json, "n1", 42);
        assert_eq!(&numbered[..], br#"1n1/42 {"t":"l","node":"n"}"#);
        assert_eq!(
            open(&numbered),
            Some(Opened {
                from: Some(("n1", 42)),
                json
            })
        );
        for other in [
            &b""[..],
            b"2{}",
            br#"{"t":"l"}"#,
            b"1n1 {}",
            b"1n1/x {}",
            b"1n1/1",
        ] {
            assert_eq!(open(other), None, "{:?}", String::from_utf8_lossy(other));
        }
    }

    #[test]
    fn an_entry_read_twice_is_fresh_once() {
        let mut newest = Newest::default();
        assert!(newest.fresh("a", 1));
        assert!(newest.fresh("b", 1));
        assert!(!newest.fresh("a", 1));
        assert!(newest.fresh("a", 3));
        assert!(!newest.fresh("a", 2));
    }
}
