//! Message ids: ObjectIds that grow within one process, or follow the
//! cluster's bus.

use crate::ids::IdGenerator;
use crate::model::ObjectId;
use crate::store::Place;

/// Makes message ids that are strictly increasing for the life of the
/// generator, and timestamps that never go back, whatever the clock does.
#[derive(Debug, Clone)]
pub struct MessageIds {
    process: [u8; 5],
    counter: u32,
    last: Option<(u32, u32)>,
    last_ms: i64,
}

impl MessageIds {
    /// A generator whose per-process bytes and first counter come from `ids`.
    pub fn new(ids: &mut dyn IdGenerator) -> Self {
        let mut process = [0u8; 5];
        ids.fill(&mut process);
        let mut c = [0u8; 4];
        ids.fill(&mut c);
        MessageIds {
            process,
            counter: u32::from_be_bytes(c) & 0x00ff_ffff,
            last: None,
            last_ms: i64::MIN,
        }
    }

    /// The next (id, timestamp) for a message created at `now_ms`.
    pub fn next(&mut self, now_ms: i64) -> (ObjectId, i64) {
        let ms = now_ms.max(self.last_ms);
        self.last_ms = ms;
        let secs = ms.div_euclid(1000).clamp(0, i64::from(u32::MAX)) as u32;
        self.counter = (self.counter + 1) & 0x00ff_ffff;
        let (secs, counter) = match self.last {
            // Same second (or the clock went back): the counter must still
            // grow; on wrap-around, borrow the next second.
            Some((ls, lc)) if secs <= ls => {
                if lc == 0x00ff_ffff {
                    (ls + 1, 0)
                } else {
                    (ls, lc + 1)
                }
            }
            _ => (secs, self.counter),
        };
        self.last = Some((secs, counter));
        (ObjectId::from_parts(secs, self.process, counter), ms)
    }
}

/// The (id, timestamp) of a message whose place in its chat's order the
/// cluster's bus gave ([`Place`]): the timestamp is the place's time, and the
/// id orders messages of one millisecond by their number there (its
/// seconds, the millisecond within them, the number, then random bytes), so
/// that history's order, by (timestamp, id), is the bus's.
pub fn placed(place: Place, ids: &mut dyn IdGenerator) -> (ObjectId, i64) {
    let ms = i64::try_from(place.ms).unwrap_or(i64::MAX);
    let secs = u32::try_from(place.ms / 1000).unwrap_or(u32::MAX);
    let within = u16::try_from(place.ms % 1000).expect("below 1000");
    // A millisecond holds far fewer than 2^24 entries of one stream.
    let n = u32::try_from(place.n.min(0x00ff_ffff)).expect("clamped");
    let mut b = [0u8; 12];
    b[..4].copy_from_slice(&secs.to_be_bytes());
    b[4..6].copy_from_slice(&within.to_be_bytes());
    b[6..9].copy_from_slice(&n.to_be_bytes()[1..]);
    ids.fill(&mut b[9..]);
    (ObjectId(b), ms)
}

/// The place a [`placed`] message was given, from its id and timestamp.
pub fn place_of(id: ObjectId, timestamp: i64) -> Place {
    let b = id.0;
    Place {
        ms: u64::try_from(timestamp).unwrap_or(0),
        n: u64::from(u32::from_be_bytes([0, b[6], b[7], b[8]])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::CounterIds;

    #[test]
    fn ids_grow_even_when_the_clock_goes_back() {
        let mut g = MessageIds::new(&mut CounterIds::default());
        let mut last = None;
        for ms in [5_000, 5_000, 4_000, 9_999, 10_000, 1_000] {
            let (id, ts) = g.next(ms);
            if let Some((lid, lts)) = last {
                assert!(id > lid, "{id} after {lid}");
                assert!(ts >= lts);
            }
            last = Some((id, ts));
        }
    }

    #[test]
    fn placed_ids_sort_as_their_places() {
        let mut ids = CounterIds::default();
        let places = [
            (1_700_000_000_999, 0),
            (1_700_000_000_999, 7),
            (1_700_000_001_000, 0),
            (1_700_000_001_000, 300),
            (1_700_000_001_001, 0),
        ];
        let mut last = None;
        for (ms, n) in places {
            let (id, ts) = placed(Place { ms, n }, &mut ids);
            assert_eq!(ts, ms as i64);
            assert_eq!(place_of(id, ts), Place { ms, n });
            assert_eq!(u64::from(id.seconds()), ms / 1000);
            if let Some((lts, lid)) = last {
                assert!((ts, id) > (lts, lid), "{ms}-{n}");
            }
            last = Some((ts, id));
        }
    }

    #[test]
    fn counter_wrap_borrows_a_second() {
        let mut g = MessageIds::new(&mut CounterIds::default());
        g.last = Some((7, 0x00ff_fffe));
        let (a, _) = g.next(7_000);
        let (b, _) = g.next(7_000);
        assert!(b > a);
        assert_eq!(b.seconds(), 8);
    }
}
