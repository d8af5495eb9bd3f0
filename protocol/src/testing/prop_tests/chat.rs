//! The chat service against its promises, over random sequences of
//! operations from several users with the store replying in random orders:
//! the checks live in [`Chaos`], which proptest drives here (and shrinks
//! a failing sequence to a short one).

use proptest::prelude::*;

use crate::testing::{CHATS, Chaos, ChaosStep, MAX_TABS, Release, SendKind, USERS};

fn send_kind() -> impl Strategy<Value = SendKind> {
    prop_oneof![
        6 => Just(SendKind::Valid),
        1 => Just(SendKind::Empty),
        1 => Just(SendKind::NotObject),
        1 => Just(SendKind::BadChat),
        1 => Just(SendKind::BadTempId),
    ]
}

fn step() -> impl Strategy<Value = ChaosStep> {
    let tab = 0..MAX_TABS;
    let chat = 0..CHATS.len();
    prop_oneof![
        3 => (0..USERS).prop_map(|user| ChaosStep::Connect { user }),
        12 => (tab.clone(), send_kind(), chat.clone(), proptest::option::of(0u8..4), any::<bool>())
            .prop_map(|(tab, kind, chat, temp, ack)| ChaosStep::Send { tab, kind, chat, temp, ack }),
        1 => (tab.clone(), 10u8..50).prop_map(|(tab, n)| ChaosStep::Burst { tab, n }),
        2 => (tab.clone(), chat.clone(), any::<bool>())
            .prop_map(|(tab, chat, on)| ChaosStep::Typing { tab, chat, on }),
        2 => (tab.clone(), chat.clone()).prop_map(|(tab, chat)| ChaosStep::Join { tab, chat }),
        2 => (tab.clone(), chat).prop_map(|(tab, chat)| ChaosStep::Leave { tab, chat }),
        2 => (tab.clone(), 0usize..64).prop_map(|(tab, pick)| ChaosStep::Read { tab, pick }),
        6 => Just(ChaosStep::Release(Release::Oldest)),
        4 => (0usize..64).prop_map(|i| ChaosStep::Release(Release::Pick(i))),
        2 => (0usize..64).prop_map(|i| ChaosStep::Release(Release::Fail(i))),
        2 => (0usize..64).prop_map(|i| ChaosStep::Release(Release::Duplicate(i))),
        1 => Just(ChaosStep::Jump),
        2 => (0u16..2000).prop_map(|ms| ChaosStep::Wait { ms }),
        1 => tab.prop_map(|tab| ChaosStep::Drop { tab }),
    ]
}

proptest! {
    // Each case runs a whole node through up to 80 steps; 512 cases keep
    // the debug test run short (`PROPTEST_CASES` changes it).
    #![proptest_config(super::config(512))]

    #[test]
    fn chat_keeps_its_promises_over_random_operations(
        users in proptest::collection::vec(0..USERS, 1..4),
        steps in proptest::collection::vec(step(), 0..80),
    ) {
        let mut chaos = Chaos::new();
        for user in users {
            chaos.step(ChaosStep::Connect { user });
        }
        for s in steps {
            chaos.step(s);
        }
        chaos.finish();
    }
}
