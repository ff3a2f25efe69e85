//! `GET /openapi.json`: the OpenAPI 3.1 document of every route, built from the handlers and
//! DTOs themselves (`utoipa`), so it cannot drift from what the server does.
//!
//! - A route module's handlers carry their method and path once, in their actix route attribute,
//!   which `#[utoipa::path]` reads; the module's one `routes!` list makes both its `configure`
//!   (what the server registers) and its `openapi()` (what this document shows).
//! - [`MOUNTS`] says under which scope `startup.rs` mounts each module; `/healthz`, `/readyz` and
//!   `/metrics`, which `startup.rs` registers by itself, are described here.
//! - Request and response bodies are the DTOs (`dto`, `dto_admin`) and the error bodies that
//!   `error` sends; the relay's free-form provider bodies are described by the fields Tollgate
//!   reads ([`wire`]).
//!
//! The tests below read `startup.rs` and the route modules and fail when a route is registered
//! that the document lacks, or the document lists one that is not registered; an end-to-end test
//! (`tests/tests/openapi.rs`) calls every documented operation on a running server.

pub mod wire;

use crate::dto::Usd;
use crate::error::{AnthropicErrorBody, ErrorEnvelope, OpenAiErrorBody};
use crate::routes::{admin, admin_read, console, external, health, relay};
use actix_web::{HttpResponse, get, http::header};
use std::collections::BTreeMap;
use std::sync::OnceLock;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, HeaderBuilder, OpenApi, Ref, RefOr};
use utoipa::{IntoResponses, Modify, OpenApi as _, ToSchema};

crate::routes::routes!(openapi_json);

/// This document (it describes itself too).
#[utoipa::path(
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = Object)),
)]
#[get("/openapi.json")]
async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(json())
}

/// A route module as `startup.rs` mounts it.
#[derive(Debug)]
pub struct Mount {
    /// The module's name as `startup.rs` writes it (`.configure(<module>::configure)`).
    pub module: &'static str,
    /// The scope it is mounted under; `""` for the root.
    pub scope: &'static str,
    /// The tag of its operations.
    pub tag: &'static str,
    /// Its routes' description (paths relative to `scope`).
    pub api: fn() -> OpenApi,
}

/// Every route module and where `startup.rs` mounts it (a test checks the two agree).
pub const MOUNTS: &[Mount] = &[
    Mount {
        module: "external",
        scope: "/api/user/external",
        tag: "external",
        api: external::openapi,
    },
    Mount {
        module: "admin",
        scope: "/api/admin",
        tag: "admin",
        api: admin::openapi,
    },
    Mount {
        module: "admin_read",
        scope: "/api/admin",
        tag: "admin",
        api: admin_read::openapi,
    },
    Mount {
        module: "console",
        scope: "",
        tag: "console",
        api: console::openapi,
    },
    Mount {
        module: "relay",
        scope: "/v1",
        tag: "relay",
        api: relay::openapi,
    },
    Mount {
        module: "openapi",
        scope: "",
        tag: "operations",
        api: openapi,
    },
];

/// Operations whose answers carry OpenAI's `x-ratelimit-*` headers (the billed relay calls).
/// An operation's id is its module and its handler: `relay_messages`, `external_logs`.
pub const RATE_LIMITED: &[&str] = &[
    "relay_chat_completions",
    "relay_completions",
    "relay_embeddings",
    "relay_messages",
];

/// What the document covers besides the mounted modules: the routes `startup.rs` registers
/// itself, the shared schemas and the security schemes.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Tollgate",
        description = "An OpenAI-compatible LLM gateway with per-user quota billing: the \
            external user API (platforms), the admin API, and the relay (OpenAI's and \
            Anthropic's APIs). Every response carries `X-Request-Id`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(health::healthz, health::readyz, crate::metrics::scrape),
    components(schemas(Usd, ErrorEnvelope, OpenAiErrorBody, AnthropicErrorBody)),
    modifiers(&SecuritySchemes),
    tags(
        (name = "external", description = "The external user API: a platform syncs users, \
            tops them up in USD and issues their API keys (`Authorization: Bearer` one of \
            `TOLLGATE_EXTERNAL_API_KEYS`)."),
        (name = "admin", description = "Channels, prices and the read API across users \
            (`Authorization: Bearer` `TOLLGATE_ADMIN_KEY`)."),
        (name = "relay", description = "OpenAI's chat completions, completions, embeddings and \
            models, and Anthropic's Messages API, with the users' API keys. Bodies are the \
            providers' JSON: the fields Tollgate reads are described, everything else passes \
            through."),
        (name = "operations", description = "Health, readiness, metrics and this document."),
        (name = "console", description = "The operator console (HTML, signs in with the admin \
            key)."),
    ),
)]
struct Root;

/// How each API takes its key: platform and admin secrets and API keys as Bearer tokens, API
/// keys also in `x-api-key` on Anthropic's routes (see `auth.rs` and `routes/relay.rs`).
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, api: &mut OpenApi) {
        let bearer = |description: &str| {
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(description))
                    .build(),
            )
        };
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "platform_key",
            bearer("A platform's secret: one of `TOLLGATE_EXTERNAL_API_KEYS`. Users belong to the platform whose secret created them."),
        );
        components.add_security_scheme(
            "admin_key",
            bearer("`TOLLGATE_ADMIN_KEY` (while it is unset, the admin API answers 401)."),
        );
        components.add_security_scheme(
            "api_key",
            bearer(
                "A user's API key (`sk-` and 48 characters) from `POST /api/user/external/token`.",
            ),
        );
        components.add_security_scheme(
            "anthropic_api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "x-api-key",
                "A user's API key, as Anthropic's SDKs send it (`Authorization: Bearer` works too).",
            ))),
        );
    }
}

/// Error answers in one of the three shapes, with the header a 429 carries.
fn errors<S: ToSchema>(list: &[(u16, &str)]) -> BTreeMap<String, RefOr<Response>> {
    list.iter()
        .map(|(status, description)| {
            let mut response = ResponseBuilder::new().description(*description).content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name(S::name())))
                    .build(),
            );
            if *status == 429 {
                response = response.header(
                    "Retry-After",
                    HeaderBuilder::new()
                        .schema(Some(ObjectBuilder::new().schema_type(Type::Integer)))
                        .description(Some("Whole seconds to wait, at least 1."))
                        .build(),
                );
            }
            (status.to_string(), response.build().into())
        })
        .collect()
}

const ENVELOPE: &[(u16, &str)] = &[
    (
        400,
        "`validation_error`: the Go validator's text (`请求参数错误: Key: '…' Error:Field validation for '…' failed on the '…' tag`), or a malformed query",
    ),
    (401, "`unauthorized`: missing or wrong secret"),
    (500, "`internal_error` (no storage detail is ever sent)"),
    (503, "`service_unavailable`: the database cannot be reached"),
];
const BODY: &[(u16, &str)] = &[
    (
        400,
        "`validation_error`: the Go validator's text (`请求参数错误: Key: '…' Error:Field validation for '…' failed on the '…' tag`), a malformed or non-JSON body, a value of the wrong type, or an unknown field",
    ),
    (413, "`payload_too_large`"),
];
const RELAY: &[(u16, &str)] = &[
    (
        400,
        "Malformed JSON, a missing `model` or `messages`, a field of the wrong type (`invalid_request_error`); or the upstream's own 400, passed through with any secret removed",
    ),
    (
        401,
        "`invalid_api_key` (no, unknown or deleted key), `token_expired`, `token_disabled`",
    ),
    (
        403,
        "`insufficient_user_quota`: the balance (or the key's cap) cannot cover the hold; nothing was sent upstream",
    ),
    (
        404,
        "`model_not_found`: no channel lists the model; or the upstream's own 404",
    ),
    (408, "`request_timeout`: the body did not arrive in time"),
    (
        413,
        "`payload_too_large`: the body is over the relay limit (8 MiB by default)",
    ),
    (422, "The upstream's own 422, passed through"),
    (
        429,
        "`rate_limit_exceeded` (the key's rpm, tpm or concurrency; nothing held or sent) or `channel_rate_limited` (every channel of the model is at its limit)",
    ),
    (500, "`internal_error`"),
    (
        502,
        "`upstream_error`: every attempt on the enabled channels failed",
    ),
    (
        503,
        "`no_available_channel` (only disabled channels list the model) or `service_unavailable` (the database cannot be reached)",
    ),
    (504, "`upstream_timeout`"),
];
const KEY_ONLY: &[(u16, &str)] = &[
    (
        401,
        "`invalid_api_key` (no, unknown or deleted key), `token_expired`, `token_disabled`",
    ),
    (500, "`internal_error`"),
    (503, "`service_unavailable`: the database cannot be reached"),
];
const COUNT: &[(u16, &str)] = &[
    (400, "Malformed JSON or a request that cannot be read"),
    (401, "No, unknown, deleted, expired or disabled key"),
    (408, "The body did not arrive in time"),
    (413, "The body is over the relay limit"),
    (500, "Internal error"),
    (503, "The database cannot be reached"),
];

/// Errors of every external or admin call without a body, in the error envelope.
pub struct EnvelopeErrors;

impl IntoResponses for EnvelopeErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        errors::<ErrorEnvelope>(ENVELOPE)
    }
}

/// Errors of every external or admin call with a JSON body, in the error envelope.
pub struct EnvelopeBodyErrors;

impl IntoResponses for EnvelopeBodyErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let mut all = errors::<ErrorEnvelope>(ENVELOPE);
        all.extend(errors::<ErrorEnvelope>(BODY));
        all
    }
}

/// Errors of the billed OpenAI-format relay calls, in OpenAI's shape.
pub struct OpenAiErrors;

impl IntoResponses for OpenAiErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        errors::<OpenAiErrorBody>(RELAY)
    }
}

/// Errors of `GET /v1/models`, in OpenAI's shape.
pub struct OpenAiKeyErrors;

impl IntoResponses for OpenAiKeyErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        errors::<OpenAiErrorBody>(KEY_ONLY)
    }
}

/// Errors of `POST /v1/messages`, in Anthropic's shape (with the statuses of the other relay
/// calls).
pub struct AnthropicErrors;

impl IntoResponses for AnthropicErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        errors::<AnthropicErrorBody>(RELAY)
    }
}

/// Errors of `POST /v1/messages/count_tokens`, in Anthropic's shape.
pub struct AnthropicCountErrors;

impl IntoResponses for AnthropicCountErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        errors::<AnthropicErrorBody>(COUNT)
    }
}

/// The operations of a path, with their methods.
fn operations_mut(item: &mut PathItem) -> impl Iterator<Item = (&'static str, &mut Operation)> {
    [
        ("GET", &mut item.get),
        ("PUT", &mut item.put),
        ("POST", &mut item.post),
        ("DELETE", &mut item.delete),
        ("OPTIONS", &mut item.options),
        ("HEAD", &mut item.head),
        ("PATCH", &mut item.patch),
        ("TRACE", &mut item.trace),
    ]
    .into_iter()
    .filter_map(|(method, op)| op.as_mut().map(|op| (method, op)))
}

/// The methods a path has operations for.
fn methods(item: &PathItem) -> impl Iterator<Item = &'static str> + '_ {
    [
        ("GET", &item.get),
        ("PUT", &item.put),
        ("POST", &item.post),
        ("DELETE", &item.delete),
        ("OPTIONS", &item.options),
        ("HEAD", &item.head),
        ("PATCH", &item.patch),
        ("TRACE", &item.trace),
    ]
    .into_iter()
    .filter_map(|(method, op)| op.as_ref().map(|_| method))
}

/// The document and what is wrong with it: routes two handlers both claim, operation ids used
/// twice (empty unless a module mounts a route another one already serves; a test keeps it
/// empty).
fn build() -> (OpenApi, Vec<String>) {
    let mut api = Root::openapi();
    for item in api.paths.paths.values_mut() {
        for (_, op) in operations_mut(item) {
            op.tags = Some(vec!["operations".to_owned()]);
        }
    }
    let mut problems = Vec::new();
    for mount in MOUNTS {
        let mut part = (mount.api)();
        let paths = std::mem::take(&mut part.paths.paths);
        for (path, mut item) in paths {
            for (_, op) in operations_mut(&mut item) {
                op.tags = Some(vec![mount.tag.to_owned()]);
                // Handler names repeat across modules (`logs`, `models`); ids must not.
                op.operation_id = op
                    .operation_id
                    .take()
                    .map(|id| format!("{}_{id}", mount.module));
            }
            let full = format!("{}{path}", mount.scope);
            match api.paths.paths.get_mut(&full) {
                Some(existing) => {
                    for method in methods(&item) {
                        if methods(existing).any(|m| m == method) {
                            problems.push(format!("{method} {full} is described twice"));
                        }
                    }
                    existing.merge_operations(item);
                }
                None => {
                    api.paths.paths.insert(full, item);
                }
            }
        }
        api.merge(part);
    }
    let mut ids = BTreeMap::new();
    for (path, item) in &mut api.paths.paths {
        for (method, op) in operations_mut(item) {
            let id = op.operation_id.clone().unwrap_or_default();
            if let Some(first) = ids.insert(id.clone(), format!("{method} {path}")) {
                problems.push(format!(
                    "operation id `{id}` of {method} {path} and {first}"
                ));
            }
        }
    }
    decorate(&mut api);
    (api, problems)
}

/// Headers every answer (or every billed relay answer) carries.
fn decorate(api: &mut OpenApi) {
    let request_id = HeaderBuilder::new()
        .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
        .description(Some("The request's id, also in Tollgate's log lines."))
        .build();
    let rate = |what: &str| {
        HeaderBuilder::new()
            .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
            .description(Some(what))
            .build()
    };
    let rate_headers = [
        (
            "x-ratelimit-limit-requests",
            rate("The key's `rpm_limit` (absent when unset)."),
        ),
        (
            "x-ratelimit-remaining-requests",
            rate("Calls the key may still start in the window."),
        ),
        (
            "x-ratelimit-reset-requests",
            rate("Until the window frees a call, e.g. `12s`."),
        ),
        (
            "x-ratelimit-limit-tokens",
            rate("The key's `tpm_limit` (absent when unset)."),
        ),
        (
            "x-ratelimit-remaining-tokens",
            rate("Tokens the key may still use in the window."),
        ),
        (
            "x-ratelimit-reset-tokens",
            rate("Until the window frees tokens, e.g. `12s`."),
        ),
    ];
    for item in api.paths.paths.values_mut() {
        for (_, op) in operations_mut(item) {
            let limited = op
                .operation_id
                .as_deref()
                .is_some_and(|id| RATE_LIMITED.contains(&id));
            for (status, response) in &mut op.responses.responses {
                let RefOr::T(response) = response else {
                    continue;
                };
                // OpenAPI 3.1 requires a description on every response.
                if response.description.is_empty() {
                    response.description = match status.as_str() {
                        "200" => "OK",
                        _ => "Error",
                    }
                    .to_owned();
                }
                response
                    .headers
                    .insert("X-Request-Id".to_owned(), request_id.clone().into());
                if limited && status.starts_with('2') {
                    for (name, h) in &rate_headers {
                        response
                            .headers
                            .insert((*name).to_owned(), h.clone().into());
                    }
                }
            }
        }
    }
}

/// The OpenAPI document of every route.
#[must_use]
pub fn document() -> OpenApi {
    let (api, problems) = build();
    if !problems.is_empty() {
        tracing::warn!(?problems, "the OpenAPI document is inconsistent");
    }
    api
}

/// The document as JSON, built once per process.
#[must_use]
pub fn json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        document().to_json().unwrap_or_else(|e| {
            tracing::error!(error = %e, "the OpenAPI document does not serialize");
            String::from("{}")
        })
    })
}

#[cfg(test)]
mod tests {
    //! The document against the registrations. The route modules cannot differ from their
    //! description (one `routes!` list makes both); what is left to check is `startup.rs`,
    //! which actix-web does not let a test ask for its routes, so these tests read it: every
    //! route it registers itself must be described, every module it mounts must be in
    //! [`MOUNTS`] under the same scope, and nothing may be registered in a way this reader does
    //! not understand (it fails rather than guess).

    use super::*;
    use serde_json::Value;
    use std::collections::BTreeSet;

    /// What a registration in `startup.rs` adds.
    #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
    enum Registration {
        /// `.route("<path>", web::<method>()…)`, with the scopes around it.
        Route { method: String, path: String },
        /// `.configure(<module>::configure)`, with the scopes around it.
        Module { name: String, scope: String },
    }

    /// `src` without comments, each string literal replaced by `"<n>"` (the n-th of the
    /// returned texts), so that parentheses and registration-like text inside them do not
    /// count.
    fn lex(src: &str) -> Result<(String, Vec<String>), String> {
        let chars: Vec<char> = src.chars().collect();
        let (mut out, mut strings, mut i) = (String::new(), Vec::new(), 0);
        while i < chars.len() {
            let c = chars[i];
            let next = chars.get(i + 1).copied();
            if c == '/' && next == Some('/') {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            } else if c == '/' && next == Some('*') {
                i += 2;
                while i + 1 < chars.len() && !(chars[i] == '*' && chars[i + 1] == '/') {
                    i += 1;
                }
                i += 2;
            } else if c == 'r'
                && !i
                    .checked_sub(1)
                    .is_some_and(|p| chars[p].is_alphanumeric() || chars[p] == '_')
                && matches!(next, Some('"' | '#'))
            {
                // A raw string r"…" or r#"…"# (r#ident is a raw identifier).
                let hashes = chars[i + 1..].iter().take_while(|&&h| h == '#').count();
                if chars.get(i + 1 + hashes) != Some(&'"') {
                    out.push(c);
                    i += 1;
                    continue;
                }
                let start = i + 2 + hashes;
                let mut end = start;
                while end < chars.len()
                    && !(chars[end] == '"'
                        && chars[end + 1..]
                            .iter()
                            .take(hashes)
                            .filter(|&&h| h == '#')
                            .count()
                            == hashes)
                {
                    end += 1;
                }
                out.push_str(&format!("\"{}\"", strings.len()));
                strings.push(chars[start..end.min(chars.len())].iter().collect());
                i = end + 1 + hashes;
            } else if c == '"' {
                let mut text = String::new();
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    if chars[i] == '\\' {
                        i += 1;
                    }
                    if let Some(&ch) = chars.get(i) {
                        text.push(ch);
                    }
                    i += 1;
                }
                i += 1;
                out.push_str(&format!("\"{}\"", strings.len()));
                strings.push(text);
            } else if c == '\'' && chars.get(i + 2) == Some(&'\'') {
                // A character literal such as '(' must not count as a parenthesis.
                out.push_str("' '");
                i += 3;
            } else {
                out.push(c);
                i += 1;
            }
        }
        Ok((out, strings))
    }

    /// The string literal that `rest` starts with (after whitespace).
    fn literal<'a>(rest: &str, strings: &'a [String]) -> Option<&'a str> {
        let rest = rest.trim_start().strip_prefix('"')?;
        let n: usize = rest[..rest.find('"')?].parse().ok()?;
        strings.get(n).map(String::as_str)
    }

    /// The registrations of a file that builds an actix `App` (`startup.rs`).
    fn registrations(src: &str) -> Result<Vec<Registration>, String> {
        let (text, strings) = lex(src)?;
        let mut found = Vec::new();
        // Open scopes: their prefix and the parenthesis depth they live at.
        let mut scopes: Vec<(String, usize)> = Vec::new();
        let mut depth = 0usize;
        let prefix =
            |scopes: &[(String, usize)]| scopes.iter().map(|(s, _)| s.as_str()).collect::<String>();
        for (at, c) in text.char_indices() {
            let rest = &text[at..];
            if let Some(after) = rest.strip_prefix("web::scope(") {
                let scope = literal(after, &strings).ok_or("web::scope without a literal")?;
                scopes.push((scope.to_owned(), depth));
            } else if let Some(after) = rest.strip_prefix(".route(") {
                let path = literal(after, &strings).ok_or(".route without a literal path")?;
                let method = after
                    .split_once("web::")
                    .and_then(|(_, m)| m.split_once('('))
                    .map(|(m, _)| m.trim().to_uppercase())
                    .filter(|m| m.chars().all(|c| c.is_ascii_alphabetic()))
                    .ok_or_else(|| format!(".route(\"{path}\", …) without web::<method>()"))?;
                found.push(Registration::Route {
                    method,
                    path: format!("{}{path}", prefix(&scopes)),
                });
            } else if let Some(after) = rest.strip_prefix(".configure(") {
                let call = &after[..after.find(')').ok_or("unclosed .configure(")?];
                let name = call
                    .trim()
                    .strip_suffix("::configure")
                    .and_then(|m| m.rsplit("::").next())
                    .ok_or_else(|| format!(".configure({call}): not <module>::configure"))?;
                found.push(Registration::Module {
                    name: name.to_owned(),
                    scope: prefix(&scopes),
                });
            } else if let Some(after) = rest.strip_prefix(".service(") {
                if !after.trim_start().starts_with("web::scope(") {
                    return Err(format!(
                        "unrecognised registration `.service({}…`: describe it and teach this reader",
                        after.trim_start().chars().take(40).collect::<String>()
                    ));
                }
            } else if rest.starts_with("web::resource(") || rest.starts_with(".external_resource(")
            {
                return Err("web::resource: describe it and teach this reader".into());
            }
            match c {
                '(' => depth += 1,
                ')' => {
                    depth = depth.checked_sub(1).ok_or("unbalanced parentheses")?;
                    while scopes.last().is_some_and(|(_, d)| *d > depth) {
                        scopes.pop();
                    }
                }
                _ => {}
            }
        }
        Ok(found)
    }

    /// `(METHOD, path)` of every operation of `api`.
    fn operations(api: &OpenApi) -> BTreeSet<(String, String)> {
        api.paths
            .paths
            .iter()
            .flat_map(|(path, item)| methods(item).map(|m| (m.to_owned(), path.clone())))
            .collect()
    }

    fn pairs(list: &[(&str, &str)]) -> BTreeSet<(String, String)> {
        list.iter()
            .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
            .collect()
    }

    fn src(path: &str) -> String {
        let full = format!("{}/src/{path}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
    }

    #[test]
    fn startup_registers_exactly_what_the_document_lists() {
        let found = registrations(&src("startup.rs")).unwrap_or_else(|e| panic!("{e}"));
        // Routes startup.rs registers itself: exactly the ones described here.
        let routes: BTreeSet<(String, String)> = found
            .iter()
            .filter_map(|r| match r {
                Registration::Route { method, path } => Some((method.clone(), path.clone())),
                Registration::Module { .. } => None,
            })
            .collect();
        assert_eq!(
            routes,
            operations(&Root::openapi()),
            "routes startup.rs registers by itself vs. those `Root` describes"
        );
        // Modules it mounts: exactly MOUNTS, each under the same scope, once.
        let mut mounted: Vec<(String, String)> = found
            .iter()
            .filter_map(|r| match r {
                Registration::Module { name, scope } => Some((name.clone(), scope.clone())),
                Registration::Route { .. } => None,
            })
            .collect();
        mounted.sort();
        let mut expected: Vec<(String, String)> = MOUNTS
            .iter()
            .map(|m| (m.module.to_owned(), m.scope.to_owned()))
            .collect();
        expected.sort();
        assert_eq!(mounted, expected, "modules startup.rs mounts vs. MOUNTS");
    }

    #[test]
    fn route_modules_register_only_through_their_routes_list() {
        let dir = format!("{}/src/routes", env!("CARGO_MANIFEST_DIR"));
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{dir}: {e}"))
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|f| f.ends_with(".rs") && f != "mod.rs")
            .map(|f| format!("routes/{f}"))
            .collect();
        files.push("openapi.rs".into());
        assert!(files.len() > 5, "{files:?}");
        for file in files {
            let (text, _) = lex(&src(&file)).unwrap_or_else(|e| panic!("{file}: {e}"));
            for forbidden in [
                ".route(",
                ".service(",
                ".configure(",
                ".default_service(",
                "web::resource(",
                "web::scope(",
            ] {
                assert!(
                    !text.contains(forbidden),
                    "{file} registers with `{forbidden}`: list the handler in its routes! instead"
                );
            }
            assert!(
                text.matches("routes!(").count() <= 1,
                "{file}: one routes! list per module"
            );
        }
    }

    #[test]
    fn the_reader_understands_what_it_checks() {
        let found = registrations(
            r#"App::new()
                // .route("/commented", web::get().to(x))
                .route("/a", web::get().to(a)) // a comment (with a paren
                .service(web::scope("/s").configure(m::configure).service(
                    web::scope("/t").route("/b", web::post().to(b)),
                ))
                .configure(crate::n::configure)
                .route("/c", web::delete().to(c))"#,
        );
        let route = |m: &str, p: &str| Registration::Route {
            method: m.into(),
            path: p.into(),
        };
        let module = |n: &str, s: &str| Registration::Module {
            name: n.into(),
            scope: s.into(),
        };
        assert_eq!(
            found,
            Ok(vec![
                route("GET", "/a"),
                module("m", "/s"),
                route("POST", "/s/t/b"),
                module("n", ""),
                route("DELETE", "/c"),
            ])
        );
        assert!(registrations(".service(web::resource(\"/x\").to(x))").is_err());
        assert!(registrations(".route(PATH, web::get().to(x))").is_err());
    }

    #[test]
    fn document_lists_every_route_with_its_method() {
        let expected = pairs(&[
            ("GET", "/healthz"),
            ("GET", "/readyz"),
            ("GET", "/metrics"),
            ("GET", "/openapi.json"),
            ("GET", "/admin"),
            ("GET", "/admin/"),
            ("GET", "/admin/app.js"),
            ("GET", "/admin/app.css"),
            ("POST", "/api/user/external/sync"),
            ("POST", "/api/user/external/topup"),
            ("POST", "/api/user/external/token"),
            ("DELETE", "/api/user/external/token"),
            ("GET", "/api/user/external/models"),
            ("GET", "/api/user/external/{external_user_id}/stats"),
            ("GET", "/api/user/external/{external_user_id}/logs"),
            ("GET", "/api/admin/channels"),
            ("POST", "/api/admin/channels"),
            ("GET", "/api/admin/channels/{id}"),
            ("PUT", "/api/admin/channels/{id}"),
            ("DELETE", "/api/admin/channels/{id}"),
            ("POST", "/api/admin/channels/{id}/enable"),
            ("POST", "/api/admin/channels/{id}/disable"),
            ("POST", "/api/admin/channels/{id}/test"),
            ("GET", "/api/admin/pricing"),
            ("PUT", "/api/admin/pricing/{model}"),
            ("GET", "/api/admin/users"),
            ("GET", "/api/admin/users/{user_id}"),
            ("GET", "/api/admin/logs"),
            ("GET", "/api/admin/usage"),
            ("POST", "/v1/chat/completions"),
            ("POST", "/v1/completions"),
            ("POST", "/v1/embeddings"),
            ("POST", "/v1/messages"),
            ("POST", "/v1/messages/count_tokens"),
            ("GET", "/v1/models"),
        ]);
        let (api, problems) = build();
        assert_eq!(operations(&api), expected);
        assert!(problems.is_empty(), "{problems:?}");
    }

    /// The document as JSON, and the operation at `path`/`method`.
    fn doc() -> Value {
        serde_json::from_str(json()).unwrap_or_else(|e| panic!("document is not JSON: {e}"))
    }

    fn op<'a>(doc: &'a Value, method: &str, path: &str) -> &'a Value {
        let op = &doc["paths"][path][method];
        assert!(op.is_object(), "{method} {path} missing");
        op
    }

    fn error_schema(op: &Value, status: &str) -> String {
        op["responses"][status]["content"]["application/json"]["schema"]["$ref"]
            .as_str()
            .unwrap_or_else(|| panic!("no {status} error schema in {op}"))
            .to_owned()
    }

    #[test]
    fn document_is_openapi_3_1_with_security_and_error_shapes() {
        let doc = doc();
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(doc["info"]["title"], "Tollgate");
        let schemes = &doc["components"]["securitySchemes"];
        assert_eq!(schemes["platform_key"]["scheme"], "bearer");
        assert_eq!(schemes["admin_key"]["scheme"], "bearer");
        assert_eq!(schemes["api_key"]["scheme"], "bearer");
        assert_eq!(schemes["anthropic_api_key"]["in"], "header");
        assert_eq!(schemes["anthropic_api_key"]["name"], "x-api-key");
        for (name, fields) in [
            ("ErrorEnvelope", &["success", "message", "code"][..]),
            ("OpenAiErrorBody", &["error"][..]),
            ("AnthropicErrorBody", &["type", "error"][..]),
        ] {
            let schema = &doc["components"]["schemas"][name];
            for f in fields {
                assert!(schema["properties"][f].is_object(), "{name}.{f}: {schema}");
            }
        }
        let envelope = "#/components/schemas/ErrorEnvelope";
        let openai = "#/components/schemas/OpenAiErrorBody";
        let anthropic = "#/components/schemas/AnthropicErrorBody";
        for (method, path, scheme, shape) in [
            ("post", "/api/user/external/sync", "platform_key", envelope),
            (
                "get",
                "/api/user/external/{external_user_id}/logs",
                "platform_key",
                envelope,
            ),
            ("put", "/api/admin/channels/{id}", "admin_key", envelope),
            ("get", "/api/admin/usage", "admin_key", envelope),
            ("post", "/v1/chat/completions", "api_key", openai),
            ("get", "/v1/models", "api_key", openai),
            ("post", "/v1/messages", "anthropic_api_key", anthropic),
        ] {
            let op = op(&doc, method, path);
            assert!(
                op["security"][0][scheme].is_array(),
                "{method} {path} security {}",
                op["security"]
            );
            assert_eq!(error_schema(op, "401"), shape, "{method} {path}");
            assert!(op["responses"]["200"]["headers"]["X-Request-Id"].is_object());
        }
        // Messages also take the key as a bearer token.
        assert!(op(&doc, "post", "/v1/messages")["security"][1]["api_key"].is_array());
        let topup = op(&doc, "post", "/api/user/external/topup");
        assert_eq!(error_schema(topup, "409"), envelope);
        assert_eq!(error_schema(topup, "413"), envelope);
        let chat = op(&doc, "post", "/v1/chat/completions");
        assert!(chat["responses"]["429"]["headers"]["Retry-After"].is_object());
        for id in RATE_LIMITED {
            let found = doc["paths"]
                .as_object()
                .into_iter()
                .flatten()
                .any(|(_, item)| {
                    item.as_object()
                        .into_iter()
                        .flatten()
                        .any(|(_, op)| op["operationId"] == *id)
                });
            assert!(found, "RATE_LIMITED names {id}, which no operation has");
        }
        assert!(chat["responses"]["200"]["headers"]["x-ratelimit-remaining-requests"].is_object());
        assert!(chat["responses"]["200"]["content"]["text/event-stream"].is_object());
        // Every operation is tagged with a declared tag.
        let declared: BTreeSet<&str> = doc["tags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["name"].as_str())
            .collect();
        for (path, item) in doc["paths"].as_object().into_iter().flatten() {
            for (method, op) in item.as_object().into_iter().flatten() {
                let tag = op["tags"][0].as_str().unwrap_or_default();
                assert!(declared.contains(tag), "{method} {path} tagged {tag:?}");
            }
        }
        // Public routes carry no security requirement.
        for path in ["/healthz", "/readyz", "/metrics", "/openapi.json", "/admin"] {
            assert!(op(&doc, "get", path).get("security").is_none(), "{path}");
        }
    }

    #[test]
    fn bodies_and_parameters_come_from_the_dtos() {
        let doc = doc();
        let body = |method: &str, path: &str| {
            op(&doc, method, path)["requestBody"]["content"]["application/json"]["schema"]["$ref"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        };
        assert_eq!(
            body("post", "/api/user/external/sync"),
            "#/components/schemas/SyncRequest"
        );
        assert_eq!(
            body("post", "/api/admin/channels"),
            "#/components/schemas/ChannelRequest"
        );
        assert_eq!(
            body("post", "/v1/chat/completions"),
            "#/components/schemas/ChatCompletionRequest"
        );
        let sync = &doc["components"]["schemas"]["SyncRequest"];
        assert_eq!(
            sync["required"],
            serde_json::json!(["external_user_id", "username"])
        );
        let logs = op(&doc, "get", "/api/user/external/{external_user_id}/logs");
        let names: BTreeSet<&str> = logs["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["name"].as_str())
            .collect();
        let expected: BTreeSet<&str> = [
            "external_user_id",
            "start_date",
            "end_date",
            "model_name",
            "type",
            "page",
            "page_size",
        ]
        .into();
        assert_eq!(names, expected);
        // Money is the exact-decimal USD schema.
        let topup = &doc["components"]["schemas"]["TopUpData"]["properties"];
        assert_eq!(topup["amount_usd"]["$ref"], "#/components/schemas/Usd");
        assert_eq!(doc["components"]["schemas"]["Usd"]["type"], "number");
    }

    #[test]
    fn relay_bodies_list_the_limits_the_relay_reads_and_allow_other_fields() {
        let doc = doc();
        let chat = &doc["components"]["schemas"]["ChatCompletionRequest"];
        for field in tollgate_relay::wire::LIMIT_FIELDS {
            assert!(
                chat["properties"][field].is_object(),
                "{field} undocumented"
            );
        }
        assert_eq!(chat["required"], serde_json::json!(["model", "messages"]));
        for name in [
            "ChatCompletionRequest",
            "CompletionRequest",
            "EmbeddingRequest",
            "MessagesRequest",
            "CountTokensRequest",
        ] {
            let schema = &doc["components"]["schemas"][name];
            assert!(
                !schema["additionalProperties"].is_null()
                    && schema["additionalProperties"] != Value::Bool(false),
                "{name} must allow other fields: {schema}"
            );
        }
    }

    /// Every `$ref` in `v`.
    fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("$ref", Value::String(r)) => out.push(r),
                        _ => refs(v, out),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn every_reference_resolves() {
        let doc = doc();
        let mut all = Vec::new();
        refs(&doc, &mut all);
        assert!(all.len() > 20);
        for r in all {
            let name = r
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("unexpected reference {r}"));
            assert!(
                doc["components"]["schemas"][name].is_object(),
                "{r} points nowhere"
            );
        }
    }
}
