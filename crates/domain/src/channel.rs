//! Upstream channels: what a channel is, the validated create/update commands of the admin API,
//! and the routing rule (enabled channels serving the model, highest priority first, weighted
//! random within a priority).

use crate::ids::ChannelId;
use crate::pricing::{ModelName, Price};
use crate::ratelimit::{MAX_RPM, MAX_TPM, RateLimits};
use crate::time::UnixTime;
use crate::validation::ValidationErrors;
use std::collections::{BTreeMap, HashMap};
use std::fmt;

/// The API an upstream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Wire {
    /// OpenAI's chat completions (and embeddings and legacy completions).
    OpenAi,
    /// Anthropic's Messages API.
    Anthropic,
}

/// What a client asked for: one of the relayed APIs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    /// `POST /v1/chat/completions`.
    Chat,
    /// `POST /v1/messages` (Anthropic).
    Messages,
    /// `POST /v1/embeddings`.
    Embeddings,
    /// `POST /v1/completions` (legacy text completions).
    Completions,
}

impl Api {
    /// The upstream path (after the base URL) of this API on an upstream speaking `wire`:
    /// chat and messages convert into each other, the others exist only on OpenAI's wire.
    #[must_use]
    pub fn path(self, wire: Wire) -> &'static str {
        match (self, wire) {
            (Api::Chat | Api::Messages, Wire::OpenAi) => "/chat/completions",
            (Api::Chat | Api::Messages, Wire::Anthropic) => "/messages",
            (Api::Embeddings, _) => "/embeddings",
            (Api::Completions, _) => "/completions",
        }
    }

    /// Whether a channel of `kind` can answer this API (natively or converted).
    #[must_use]
    pub fn served_by(self, kind: ChannelKind) -> bool {
        match self {
            Api::Chat | Api::Messages => true,
            // No conversion exists for these; the local echo channel answers chat only.
            Api::Embeddings | Api::Completions => {
                kind.wire() == Wire::OpenAi && kind != ChannelKind::Echo
            }
        }
    }
}

/// The kind of upstream: its default base URL, its authentication and the API it speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChannelKind {
    /// OpenAI.
    OpenAi,
    /// Alibaba Cloud DashScope (Qwen), OpenAI-compatible mode.
    DashScope,
    /// DeepSeek.
    DeepSeek,
    /// Any OpenAI-compatible endpoint (vLLM, Ollama, …); needs a base URL.
    OpenAiCompatible,
    /// Answers locally, for trying the whole flow without a provider account.
    Echo,
    /// Anthropic's Messages API (`x-api-key`, `anthropic-version`).
    Anthropic,
    /// Google Gemini through its OpenAI-compatible endpoint.
    Gemini,
}

impl ChannelKind {
    /// Every kind.
    pub const ALL: [ChannelKind; 7] = [
        ChannelKind::OpenAi,
        ChannelKind::DashScope,
        ChannelKind::DeepSeek,
        ChannelKind::OpenAiCompatible,
        ChannelKind::Echo,
        ChannelKind::Anthropic,
        ChannelKind::Gemini,
    ];

    /// The API it speaks.
    #[must_use]
    pub fn wire(self) -> Wire {
        match self {
            ChannelKind::Anthropic => Wire::Anthropic,
            _ => Wire::OpenAi,
        }
    }

    /// The name used in the API and the database.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::OpenAi => "openai",
            ChannelKind::DashScope => "dashscope",
            ChannelKind::DeepSeek => "deepseek",
            ChannelKind::OpenAiCompatible => "openai_compatible",
            ChannelKind::Echo => "echo",
            ChannelKind::Anthropic => "anthropic",
            ChannelKind::Gemini => "gemini",
        }
    }

    /// Parses the API name.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        ChannelKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The base URL used when none is given (with the version path; `/chat/completions` is
    /// appended).
    #[must_use]
    pub fn default_base_url(self) -> Option<&'static str> {
        match self {
            ChannelKind::OpenAi => Some("https://api.openai.com/v1"),
            ChannelKind::DashScope => Some("https://dashscope.aliyuncs.com/compatible-mode/v1"),
            ChannelKind::DeepSeek => Some("https://api.deepseek.com/v1"),
            ChannelKind::OpenAiCompatible => None,
            ChannelKind::Echo => Some("local://echo"),
            ChannelKind::Anthropic => Some("https://api.anthropic.com/v1"),
            ChannelKind::Gemini => Some("https://generativelanguage.googleapis.com/v1beta/openai"),
        }
    }

    /// The models a channel of this kind serves when it is created from a provider key alone
    /// (the `TOLLGATE_*_API_KEY` start-up channels).
    #[must_use]
    pub fn default_models(self) -> &'static [&'static str] {
        match self {
            ChannelKind::DashScope => &["qwen-turbo", "qwen-plus", "qwen-max"],
            ChannelKind::DeepSeek => &["deepseek-chat", "deepseek-reasoner"],
            ChannelKind::OpenAi => &["gpt-4o", "gpt-4o-mini"],
            ChannelKind::Anthropic => &["claude-sonnet-4-5", "claude-haiku-4-5"],
            ChannelKind::Gemini => &["gemini-2.5-flash"],
            ChannelKind::OpenAiCompatible | ChannelKind::Echo => &[],
        }
    }

    /// Whether calls need an upstream key.
    #[must_use]
    pub fn needs_key(self) -> bool {
        !matches!(self, ChannelKind::Echo | ChannelKind::OpenAiCompatible)
    }
}

impl fmt::Display for ChannelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a channel takes traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelStatus {
    /// Takes traffic.
    Enabled,
    /// Switched off by an admin.
    Disabled,
    /// Switched off by Tollgate (upstream rejected its key or kept failing); probed to come back.
    AutoDisabled,
}

impl ChannelStatus {
    /// Stored code.
    #[must_use]
    pub fn code(self) -> i16 {
        match self {
            ChannelStatus::Enabled => 1,
            ChannelStatus::Disabled => 2,
            ChannelStatus::AutoDisabled => 3,
        }
    }

    /// From a stored code (unknown codes count as disabled: never route to them).
    #[must_use]
    pub fn from_code(code: i16) -> Self {
        match code {
            1 => ChannelStatus::Enabled,
            3 => ChannelStatus::AutoDisabled,
            _ => ChannelStatus::Disabled,
        }
    }

    /// API name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelStatus::Enabled => "enabled",
            ChannelStatus::Disabled => "disabled",
            ChannelStatus::AutoDisabled => "auto_disabled",
        }
    }
}

/// An upstream key. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct ChannelKey(String);

impl ChannelKey {
    /// Wraps a key.
    #[must_use]
    pub fn new(key: String) -> Self {
        ChannelKey(key)
    }

    /// The key, for the upstream `Authorization` header only.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether no key is set.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for ChannelKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() {
            "ChannelKey(none)"
        } else {
            "ChannelKey(***)"
        })
    }
}

/// The settings of a channel, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelSpec {
    /// Display name.
    pub name: String,
    /// Kind.
    pub kind: ChannelKind,
    /// Base URL including the version path.
    pub base_url: String,
    /// Upstream key.
    pub key: ChannelKey,
    /// Public model names served.
    pub models: Vec<ModelName>,
    /// Public name → upstream name.
    pub model_mapping: BTreeMap<String, String>,
    /// Higher goes first.
    pub priority: i64,
    /// Share of traffic within its priority.
    pub weight: u32,
    /// The upstream account's limits (`rpm` and `tpm`; routing skips the channel at them).
    pub limits: RateLimits,
}

/// A stored channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channel {
    /// Id.
    pub id: ChannelId,
    /// Settings.
    pub spec: ChannelSpec,
    /// Whether it takes traffic.
    pub status: ChannelStatus,
    /// Why Tollgate switched it off, if it did.
    pub disabled_reason: String,
    /// Created.
    pub created_at: UnixTime,
    /// Last changed.
    pub updated_at: UnixTime,
}

impl Channel {
    /// Whether it lists `model`.
    #[must_use]
    pub fn serves(&self, model: &str) -> bool {
        self.spec.models.iter().any(|m| m.as_str() == model)
    }

    /// The name to send upstream for a public model name.
    #[must_use]
    pub fn upstream_model<'a>(&'a self, model: &'a str) -> &'a str {
        self.spec
            .model_mapping
            .get(model)
            .map_or(model, String::as_str)
    }

    /// `base_url` + `path` (e.g. `/chat/completions`).
    #[must_use]
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.spec.base_url.trim_end_matches('/'))
    }
}

/// `POST /channels` and `PUT /channels/{id}` as received. On update, absent fields keep their
/// stored value (the key is never shown, so it must be optional to change anything else).
#[derive(Debug, Clone, Default)]
pub struct ChannelInput {
    /// `name`.
    pub name: Option<String>,
    /// `type`.
    pub kind: Option<String>,
    /// `base_url`.
    pub base_url: Option<String>,
    /// `key`.
    pub key: Option<String>,
    /// `models`.
    pub models: Option<Vec<String>>,
    /// `model_mapping`.
    pub model_mapping: Option<BTreeMap<String, String>>,
    /// `priority`.
    pub priority: Option<i64>,
    /// `weight`.
    pub weight: Option<i64>,
    /// `rpm_limit` (0 removes it).
    pub rpm_limit: Option<i64>,
    /// `tpm_limit` (0 removes it).
    pub tpm_limit: Option<i64>,
}

const S: &str = "ChannelRequest";

fn fail(field: &'static str, tag: &str) -> ValidationErrors {
    ValidationErrors::single(S, field, tag)
}

fn valid_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    rest.is_some_and(|r| {
        let host = r.split('/').next().unwrap_or("");
        !host.is_empty() && !url.chars().any(|c| c.is_whitespace() || c.is_control())
    }) && url.len() <= 500
}

impl ChannelInput {
    /// Validates a new channel. `priced` tells whether a model has a price: a channel may only
    /// list priced models, so every call it serves can be billed.
    pub fn into_spec(self, priced: impl Fn(&str) -> bool) -> Result<ChannelSpec, ValidationErrors> {
        self.merge(None, priced)
    }

    /// Applies an update over `current` and validates the result.
    pub fn merge(
        self,
        current: Option<&ChannelSpec>,
        priced: impl Fn(&str) -> bool,
    ) -> Result<ChannelSpec, ValidationErrors> {
        let name = match (self.name, current) {
            (Some(n), _) => n,
            (None, Some(c)) => c.name.clone(),
            (None, None) => return Err(fail("Name", "required")),
        };
        if name.trim().is_empty() {
            return Err(fail("Name", "required"));
        }
        if name.chars().count() > 100 {
            return Err(fail("Name", "max"));
        }
        let kind = match (self.kind, current) {
            (Some(k), _) => ChannelKind::parse(&k).ok_or_else(|| fail("Type", "oneof"))?,
            (None, Some(c)) => c.kind,
            (None, None) => return Err(fail("Type", "required")),
        };
        let base_url = match (self.base_url.filter(|u| !u.is_empty()), current) {
            (Some(u), _) => u,
            (None, Some(c)) if c.kind == kind => c.base_url.clone(),
            _ => kind
                .default_base_url()
                .ok_or_else(|| fail("BaseURL", "required"))?
                .to_owned(),
        };
        if kind != ChannelKind::Echo && !valid_url(&base_url) {
            return Err(fail("BaseURL", "url"));
        }
        let key = match (self.key, current) {
            (Some(k), _) => ChannelKey::new(k),
            (None, Some(c)) => c.key.clone(),
            (None, None) => ChannelKey::default(),
        };
        if key.is_empty() && kind.needs_key() {
            return Err(fail("Key", "required"));
        }
        if key.expose().len() > 1000 || key.expose().chars().any(char::is_control) {
            return Err(fail("Key", "max"));
        }
        let models = match (self.models, current) {
            (Some(ms), _) => {
                let mut out: Vec<ModelName> = Vec::with_capacity(ms.len());
                for m in ms {
                    let name = ModelName::parse(&m).ok_or_else(|| fail("Models", "dive"))?;
                    if !priced(name.as_str()) {
                        return Err(fail("Models", "priced"));
                    }
                    if !out.contains(&name) {
                        out.push(name);
                    }
                }
                out
            }
            (None, Some(c)) => c.models.clone(),
            (None, None) => Vec::new(),
        };
        if models.is_empty() {
            return Err(fail("Models", "required"));
        }
        let model_mapping = match (self.model_mapping, current) {
            (Some(m), _) => m,
            (None, Some(c)) => c.model_mapping.clone(),
            (None, None) => BTreeMap::new(),
        };
        if model_mapping
            .iter()
            .any(|(k, v)| ModelName::parse(k).is_none() || ModelName::parse(v).is_none())
        {
            return Err(fail("ModelMapping", "dive"));
        }
        let priority = self.priority.or(current.map(|c| c.priority)).unwrap_or(0);
        if !(-1_000_000..=1_000_000).contains(&priority) {
            return Err(fail("Priority", "max"));
        }
        let weight = self
            .weight
            .or(current.map(|c| i64::from(c.weight)))
            .unwrap_or(1);
        let weight = u32::try_from(weight)
            .ok()
            .filter(|w| *w <= 10_000)
            .ok_or_else(|| fail("Weight", if weight < 0 { "min" } else { "max" }))?;
        let limit = |given: Option<i64>, kept: Option<u64>, max: i64, field| match given {
            None => Ok(kept),
            Some(0) => Ok(None),
            Some(n) if n < 0 => Err(fail(field, "min")),
            Some(n) if n > max => Err(fail(field, "max")),
            Some(n) => Ok(u64::try_from(n).ok()),
        };
        let rpm = limit(
            self.rpm_limit,
            current.and_then(|c| c.limits.rpm.map(u64::from)),
            MAX_RPM,
            "RpmLimit",
        )?;
        let tpm = limit(
            self.tpm_limit,
            current.and_then(|c| c.limits.tpm),
            MAX_TPM,
            "TpmLimit",
        )?;
        Ok(ChannelSpec {
            name,
            kind,
            base_url,
            key,
            models,
            model_mapping,
            priority,
            weight,
            limits: RateLimits {
                rpm: rpm.and_then(|n| u32::try_from(n).ok()),
                tpm,
                concurrency: None,
            },
        })
    }
}

/// Where a model can be served from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// No channel lists the model (404 `model_not_found`).
    UnknownModel,
    /// Only disabled channels list it (503 `no_available_channel`).
    NoEnabledChannel,
    /// Enabled channels in the order to try them.
    Channels(Vec<ChannelId>),
}

/// Orders the enabled channels serving `model` through `api`: priority groups from the highest
/// down, and within a group a weighted random permutation (each pick proportional to weight;
/// weight 0 only after the weighted ones). `random(n)` must return a value in `0..n`.
pub fn route(
    channels: &[Channel],
    model: &str,
    api: Api,
    mut random: impl FnMut(u64) -> u64,
) -> Route {
    let serving: Vec<&Channel> = channels
        .iter()
        .filter(|c| c.serves(model) && api.served_by(c.spec.kind))
        .collect();
    if serving.is_empty() {
        return Route::UnknownModel;
    }
    let mut enabled: Vec<&Channel> = serving
        .into_iter()
        .filter(|c| c.status == ChannelStatus::Enabled)
        .collect();
    if enabled.is_empty() {
        return Route::NoEnabledChannel;
    }
    enabled.sort_by(|a, b| b.spec.priority.cmp(&a.spec.priority).then(a.id.cmp(&b.id)));
    let mut order = Vec::with_capacity(enabled.len());
    let mut start = 0;
    while start < enabled.len() {
        let p = enabled[start].spec.priority;
        let end = enabled[start..]
            .iter()
            .position(|c| c.spec.priority != p)
            .map_or(enabled.len(), |i| start + i);
        let mut group: Vec<&Channel> = enabled[start..end].to_vec();
        while !group.is_empty() {
            let total: u64 = group.iter().map(|c| u64::from(c.spec.weight)).sum();
            let pick = if total == 0 {
                usize::try_from(random(group.len() as u64))
                    .unwrap_or(0)
                    .min(group.len() - 1)
            } else {
                let mut r = random(total);
                let mut idx = group.len() - 1;
                for (i, c) in group.iter().enumerate() {
                    let w = u64::from(c.spec.weight);
                    if r < w {
                        idx = i;
                        break;
                    }
                    r -= w;
                }
                idx
            };
            order.push(group.remove(pick).id);
        }
        start = end;
    }
    Route::Channels(order)
}

/// The models that have at least one enabled channel, with their prices.
#[must_use]
pub fn served_models(
    channels: &[Channel],
    prices: &HashMap<String, Price>,
) -> BTreeMap<String, Price> {
    let mut out = BTreeMap::new();
    for c in channels
        .iter()
        .filter(|c| c.status == ChannelStatus::Enabled)
    {
        for m in &c.spec.models {
            if let Some(p) = prices.get(m.as_str()) {
                out.insert(m.as_str().to_owned(), *p);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc::{self, RecvTimeoutError};
    use std::time::Duration;

    /// Set when a call of [`routed`] got no answer: the later ones fail at once.
    static HUNG: AtomicBool = AtomicBool::new(false);

    /// [`route`] on a thread of its own, failing the test when it has not answered within 5 s.
    /// A mutant that makes `route` loop forever (a group's end never moving past its start;
    /// `scripts/mutants.sh`) then fails these tests at once rather than hanging them until
    /// cargo-mutants' timeout. After one call hung the next ones fail without waiting, so the
    /// property test's shrinking neither waits 5 s per case nor leaves a spinning thread each.
    fn routed(
        channels: &[Channel],
        model: &str,
        api: Api,
        random: impl FnMut(u64) -> u64 + Send + 'static,
    ) -> Route {
        assert!(
            !HUNG.load(Ordering::Relaxed),
            "an earlier route call never answered"
        );
        let (channels, model) = (channels.to_vec(), model.to_owned());
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(route(&channels, &model, api, random));
        });
        match rx.recv_timeout(Duration::from_secs(5)) {
            Ok(r) => r,
            Err(RecvTimeoutError::Timeout) => {
                HUNG.store(true, Ordering::Relaxed);
                panic!("route did not answer within 5 s");
            }
            Err(RecvTimeoutError::Disconnected) => panic!("route panicked"),
        }
    }

    fn channel(id: i64, priority: i64, weight: u32, status: ChannelStatus) -> Channel {
        Channel {
            id: ChannelId::new(id),
            spec: ChannelSpec {
                name: format!("c{id}"),
                kind: ChannelKind::OpenAiCompatible,
                base_url: "http://127.0.0.1:1/v1".into(),
                key: ChannelKey::new("k".into()),
                models: vec![ModelName::parse("m").expect("model")],
                model_mapping: BTreeMap::from([("m".to_owned(), "upstream-m".to_owned())]),
                priority,
                weight,
                limits: RateLimits::default(),
            },
            status,
            disabled_reason: String::new(),
            created_at: UnixTime::from_secs(0),
            updated_at: UnixTime::from_secs(0),
        }
    }

    #[test]
    fn unknown_and_disabled_models_are_told_apart() {
        let cs = vec![channel(1, 0, 1, ChannelStatus::Disabled)];
        assert_eq!(routed(&cs, "other", Api::Chat, |_| 0), Route::UnknownModel);
        assert_eq!(
            routed(&cs, "m", Api::Embeddings, |_| 0),
            Route::NoEnabledChannel
        );
        assert_eq!(routed(&cs, "m", Api::Chat, |_| 0), Route::NoEnabledChannel);
        let auto = vec![channel(1, 0, 1, ChannelStatus::AutoDisabled)];
        assert_eq!(
            routed(&auto, "m", Api::Chat, |_| 0),
            Route::NoEnabledChannel
        );
    }

    #[test]
    fn apis_route_only_to_channels_that_can_answer_them() {
        let mut claude = channel(7, 0, 1, ChannelStatus::Enabled);
        claude.spec.kind = ChannelKind::Anthropic;
        let cs = vec![claude];
        for api in [Api::Chat, Api::Messages] {
            assert_eq!(
                routed(&cs, "m", api, |_| 0),
                Route::Channels(vec![ChannelId::new(7)])
            );
        }
        for api in [Api::Embeddings, Api::Completions] {
            assert_eq!(routed(&cs, "m", api, |_| 0), Route::UnknownModel, "{api:?}");
        }
        assert!(Api::Embeddings.served_by(ChannelKind::Gemini));
        assert!(!Api::Completions.served_by(ChannelKind::Echo));
        assert!(Api::Messages.served_by(ChannelKind::Echo));
        assert_eq!(Api::Chat.path(Wire::OpenAi), "/chat/completions");
        assert_eq!(Api::Chat.path(Wire::Anthropic), "/messages");
        assert_eq!(Api::Messages.path(Wire::OpenAi), "/chat/completions");
        assert_eq!(Api::Messages.path(Wire::Anthropic), "/messages");
        assert_eq!(Api::Embeddings.path(Wire::OpenAi), "/embeddings");
        assert_eq!(Api::Completions.path(Wire::OpenAi), "/completions");
        assert_eq!(ChannelKind::Anthropic.wire(), Wire::Anthropic);
        assert_eq!(ChannelKind::Gemini.wire(), Wire::OpenAi);
        assert_eq!(
            ChannelKind::Anthropic.default_base_url(),
            Some("https://api.anthropic.com/v1")
        );
        assert_eq!(
            ChannelKind::Gemini.default_base_url(),
            Some("https://generativelanguage.googleapis.com/v1beta/openai")
        );
        assert_eq!(
            ChannelKind::parse("anthropic"),
            Some(ChannelKind::Anthropic)
        );
        assert_eq!(ChannelKind::parse("gemini"), Some(ChannelKind::Gemini));
    }

    #[test]
    fn higher_priority_goes_first_and_mapping_applies() {
        let cs = vec![
            channel(1, 0, 100, ChannelStatus::Enabled),
            channel(2, 10, 1, ChannelStatus::Enabled),
            channel(3, 5, 1, ChannelStatus::Disabled),
        ];
        assert_eq!(
            routed(&cs, "m", Api::Chat, |_| 0),
            Route::Channels(vec![ChannelId::new(2), ChannelId::new(1)])
        );
        assert_eq!(cs[0].upstream_model("m"), "upstream-m");
        assert_eq!(cs[0].upstream_model("x"), "x");
        assert_eq!(
            cs[0].url("/chat/completions"),
            "http://127.0.0.1:1/v1/chat/completions"
        );
    }

    #[test]
    fn weights_split_traffic() {
        let cs = vec![
            channel(1, 0, 3, ChannelStatus::Enabled),
            channel(2, 0, 1, ChannelStatus::Enabled),
        ];
        let mut firsts = [0u32; 3];
        for r in 0..4 {
            if let Route::Channels(o) = routed(&cs, "m", Api::Chat, move |n| r % n) {
                firsts[usize::try_from(o[0].get()).expect("id")] += 1;
            }
        }
        assert_eq!(firsts[1..], [3, 1]);
    }

    #[test]
    fn channel_input_rules() {
        let priced = |m: &str| m == "m";
        let ok = ChannelInput {
            name: Some("n".into()),
            kind: Some("deepseek".into()),
            key: Some("sk-x".into()),
            models: Some(vec!["m".into(), "m".into()]),
            ..Default::default()
        }
        .into_spec(priced)
        .expect("valid");
        assert_eq!(ok.base_url, "https://api.deepseek.com/v1");
        assert_eq!(ok.models.len(), 1);
        assert_eq!(ok.weight, 1);
        let unpriced = ChannelInput {
            models: Some(vec!["gpt-9".into()]),
            ..Default::default()
        }
        .merge(Some(&ok), priced)
        .expect_err("unpriced model");
        assert!(unpriced.to_string().contains("'Models'"));
        let no_url = ChannelInput {
            name: Some("n".into()),
            kind: Some("openai_compatible".into()),
            models: Some(vec!["m".into()]),
            ..Default::default()
        }
        .into_spec(priced)
        .expect_err("needs base_url");
        assert!(no_url.to_string().contains("BaseURL"));
        let bad_kind = ChannelInput {
            name: Some("n".into()),
            kind: Some("grpc".into()),
            ..Default::default()
        }
        .into_spec(priced)
        .expect_err("bad type");
        assert!(bad_kind.to_string().contains("'oneof'"));
        // An update without a key keeps the stored one.
        let renamed = ChannelInput {
            name: Some("renamed".into()),
            ..Default::default()
        }
        .merge(Some(&ok), priced)
        .expect("rename");
        assert_eq!(renamed.key.expose(), "sk-x");
        assert!(!format!("{renamed:?}").contains("sk-x"));
    }

    proptest! {
        /// The order is a permutation of the enabled serving channels, priorities descending.
        #[test]
        fn route_is_a_priority_ordered_permutation(
            spec in proptest::collection::vec((0i64..3, 0u32..5, any::<bool>()), 1..12),
            seed in any::<u64>(),
        ) {
            let cs: Vec<Channel> = spec.iter().enumerate().map(|(i, (p, w, on))| {
                channel(i as i64, *p, *w, if *on { ChannelStatus::Enabled } else { ChannelStatus::Disabled })
            }).collect();
            let mut s = seed;
            let r = routed(&cs, "m", Api::Chat, move |n| { s = s.wrapping_mul(6364136223846793005).wrapping_add(1); (s >> 33) % n });
            let enabled: Vec<_> = cs.iter().filter(|c| c.status == ChannelStatus::Enabled).collect();
            match r {
                Route::Channels(order) => {
                    prop_assert_eq!(order.len(), enabled.len());
                    let prios: Vec<i64> = order.iter().map(|id| cs[usize::try_from(id.get()).unwrap_or(0)].spec.priority).collect();
                    prop_assert!(prios.windows(2).all(|w| w[0] >= w[1]));
                    let mut sorted = order.clone();
                    sorted.sort();
                    sorted.dedup();
                    prop_assert_eq!(sorted.len(), order.len());
                }
                Route::NoEnabledChannel => prop_assert!(enabled.is_empty()),
                Route::UnknownModel => prop_assert!(false),
            }
        }
    }
}
