//! `channel::route` pinned draw by draw (SPEC §4, Routing): which channels are candidates, the
//! priority groups from the highest down, and the weighted pick within a group — each test
//! gives the random source's answers and checks the exact order and what was asked of it.
#![expect(clippy::expect_used, reason = "a test fails by panicking")]

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::time::Duration;
use tollgate_domain::channel::{
    Api, Channel, ChannelKey, ChannelKind, ChannelSpec, ChannelStatus, Route, route,
};
use tollgate_domain::ids::ChannelId;
use tollgate_domain::pricing::ModelName;
use tollgate_domain::ratelimit::RateLimits;
use tollgate_domain::time::UnixTime;

fn channel(id: i64, priority: i64, weight: u32) -> Channel {
    Channel {
        id: ChannelId::new(id),
        spec: ChannelSpec {
            name: format!("c{id}"),
            kind: ChannelKind::OpenAiCompatible,
            base_url: "http://127.0.0.1:1/v1".into(),
            key: ChannelKey::new("k".into()),
            models: vec![ModelName::parse("m").expect("model")],
            model_mapping: BTreeMap::new(),
            priority,
            weight,
            limits: RateLimits::default(),
        },
        status: ChannelStatus::Enabled,
        disabled_reason: String::new(),
        created_at: UnixTime::from_secs(0),
        updated_at: UnixTime::from_secs(0),
    }
}

/// Routes `model` over `channels` for chat with a random source answering `draws` in turn;
/// returns the order and the bound `n` of each draw. Runs on its own thread and fails after
/// 5 s, so a routing loop that never ends fails the test instead of hanging it.
fn routed(channels: Vec<Channel>, model: &str, api: Api, draws: Vec<u64>) -> (Route, Vec<u64>) {
    let model = model.to_owned();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut asked = Vec::new();
        let mut next = draws.into_iter();
        let r = route(&channels, &model, api, |n| {
            asked.push(n);
            next.next().expect("a draw was asked for")
        });
        let _ = tx.send((r, asked));
    });
    rx.recv_timeout(Duration::from_secs(5))
        .expect("route answers at once")
}

fn order(r: &Route) -> Vec<i64> {
    match r {
        Route::Channels(ids) => ids.iter().map(|id| id.get()).collect(),
        other => panic!("no channels: {other:?}"),
    }
}

#[test]
fn priority_groups_are_tried_from_the_highest_down() {
    // Three groups (5, 1, -2), given out of order; ties keep id order when every draw is 0.
    let cs = vec![
        channel(1, 5, 1),
        channel(2, 1, 1),
        channel(3, 5, 1),
        channel(4, -2, 1),
        channel(5, 1, 1),
    ];
    let (r, asked) = routed(cs, "m", Api::Chat, vec![0; 5]);
    assert_eq!(order(&r), [1, 3, 2, 5, 4]);
    // Each pick draws over the group's total weight left.
    assert_eq!(asked, [2, 1, 2, 1, 1]);
}

#[test]
fn each_pick_is_proportional_to_weight() {
    // Weights 1, 1, 1: draw 1 of 3 is the second channel, then draw 1 of 2 the third.
    let even = vec![channel(1, 0, 1), channel(2, 0, 1), channel(3, 0, 1)];
    let (r, asked) = routed(even, "m", Api::Chat, vec![1, 1, 0]);
    assert_eq!((order(&r), asked), (vec![2, 3, 1], vec![3, 2, 1]));
    // Weights 3 and 1: draws 0..=2 of 4 pick the first, draw 3 the second.
    let split = || vec![channel(1, 0, 3), channel(2, 0, 1)];
    let (r, asked) = routed(split(), "m", Api::Chat, vec![2, 0]);
    assert_eq!((order(&r), asked), (vec![1, 2], vec![4, 1]));
    let (r, asked) = routed(split(), "m", Api::Chat, vec![3, 0]);
    assert_eq!((order(&r), asked), (vec![2, 1], vec![4, 3]));
}

#[test]
fn weight_zero_channels_come_after_the_weighted_ones() {
    // Weights 0, 2, 0: the first draw (of 2) can only pick the weighted channel; the two
    // unweighted ones then get a uniform draw (of 2, then of 1).
    let cs = vec![channel(1, 0, 0), channel(2, 0, 2), channel(3, 0, 0)];
    let (r, asked) = routed(cs, "m", Api::Chat, vec![1, 1, 0]);
    assert_eq!((order(&r), asked), (vec![2, 3, 1], vec![2, 2, 1]));
    let zeros = vec![channel(1, 0, 0), channel(2, 0, 0)];
    let (r, asked) = routed(zeros, "m", Api::Chat, vec![0, 0]);
    assert_eq!((order(&r), asked), (vec![1, 2], vec![2, 1]));
}

#[test]
fn a_random_source_out_of_its_range_still_gives_each_channel_once() {
    // `random(n)` should answer below n; if it does not, the last candidate is taken.
    let weighted = vec![channel(1, 0, 1), channel(2, 0, 1), channel(3, 0, 1)];
    let (r, _) = routed(weighted, "m", Api::Chat, vec![u64::MAX; 3]);
    assert_eq!(order(&r), [3, 2, 1]);
    let unweighted = vec![channel(1, 0, 0), channel(2, 0, 0), channel(3, 0, 0)];
    let (r, _) = routed(unweighted, "m", Api::Chat, vec![u64::MAX; 3]);
    assert_eq!(order(&r), [3, 2, 1]);
}

#[test]
fn candidates_serve_both_the_model_and_the_api() {
    let mut other = channel(1, 9, 1);
    other.spec.models = vec![ModelName::parse("other").expect("model")];
    let mut claude = channel(2, 9, 1);
    claude.spec.kind = ChannelKind::Anthropic;
    let plain = channel(3, 0, 1);
    let cs = vec![other, claude, plain];
    // Chat: the Anthropic channel converts, the channel of another model is no candidate.
    let (r, _) = routed(cs.clone(), "m", Api::Chat, vec![0; 2]);
    assert_eq!(order(&r), [2, 3]);
    // Embeddings exist only on OpenAI's wire.
    let (r, asked) = routed(cs.clone(), "m", Api::Embeddings, vec![0]);
    assert_eq!((order(&r), asked), (vec![3], vec![1]));
    let (r, asked) = routed(cs.clone(), "nobody", Api::Chat, vec![]);
    assert_eq!((r, asked), (Route::UnknownModel, vec![]));
    let claude_only = vec![cs[1].clone()];
    let (r, _) = routed(claude_only, "m", Api::Completions, vec![]);
    assert_eq!(r, Route::UnknownModel);
}

#[test]
fn only_enabled_channels_are_tried() {
    let mut off = channel(1, 9, 1);
    off.status = ChannelStatus::Disabled;
    let mut auto = channel(2, 9, 1);
    auto.status = ChannelStatus::AutoDisabled;
    let (r, _) = routed(vec![off.clone(), auto.clone()], "m", Api::Chat, vec![]);
    assert_eq!(r, Route::NoEnabledChannel);
    let (r, asked) = routed(vec![off, auto, channel(3, 0, 5)], "m", Api::Chat, vec![4]);
    assert_eq!((order(&r), asked), (vec![3], vec![5]));
}
