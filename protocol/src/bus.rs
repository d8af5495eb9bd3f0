//! The envelope of every entry on the cluster's bus: one version byte,
//! then the entry's JSON (a [`crate::forward::Forward`] between two nodes,
//! or a Socket.IO layer's [`crate::sio::cluster`] message), whose `t` tag
//! comes first ([`crate::stats::BusKind::of`]). A node reads only entries
//! of its own version: another's (an instance of another release on the
//! same Redis) is counted and passed over, never misread.

use bytes::Bytes;

/// The version of the bus's vocabulary this build speaks.
pub const VERSION: u8 = b'1';

/// An entry for the bus: the version, then `json`.
pub(crate) fn seal(json: &[u8]) -> Bytes {
    let mut entry = Vec::with_capacity(json.len() + 1);
    entry.push(VERSION);
    entry.extend_from_slice(json);
    Bytes::from(entry)
}

/// An entry's JSON, if it is of this version.
pub fn open(entry: &[u8]) -> Option<&[u8]> {
    entry.strip_prefix(&[VERSION])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_opens_only_in_its_own_version() {
        let e = seal(br#"{"t":"l","node":"n"}"#);
        assert_eq!(open(&e), Some(&br#"{"t":"l","node":"n"}"#[..]));
        for other in [&b""[..], b"2{}", br#"{"t":"l"}"#] {
            assert_eq!(open(other), None);
        }
    }
}
