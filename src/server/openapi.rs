//! `GET /admin/v1/openapi.json`: the OpenAPI 3.1 document of both listeners' routes, generated
//! from the code with utoipa.
//!
//! Each handler carries `#[utoipa::path(...)]`: method, path, tag, parameters, request body,
//! every answer with its status, and security. The types it takes and answers with derive
//! `utoipa::ToSchema`: field docs become descriptions, and serde's renames, enum tags, defaults
//! and `deny_unknown_fields` are followed, so the schemas are the types the handlers parse.
//! [`ApiDoc`] lists the handlers and adds what is shared: the `Error` body and the error
//! answers that carry it ([`BadRequest`], [`NotFound`], [`Conflict`]...), the security schemes
//! (`admin_token`, `ingest_token`) and the tags. Where a handler builds its answer as JSON by
//! hand, a named type here ([`WebhookView`], [`SourceView`]...) describes it; the integration
//! tests check real answers against those schemas.
//!
//! # Adding a route
//!
//! 1. Annotate its handler, beside the code:
//!    ```text
//!    #[utoipa::path(
//!        post,
//!        path = "/admin/v1/things/{name}",
//!        tag = "things",
//!        params(("name" = String, Path, description = "The thing's name")),
//!        request_body = NewThing,
//!        responses(
//!            (status = 201, description = "Created", body = Thing),
//!            (status = 401, response = super::openapi::Unauthorized),
//!            (status = 404, response = super::openapi::NotFound),
//!            (status = 422, response = super::openapi::Unprocessable),
//!        ),
//!        security(("admin_token" = [])),
//!    )]
//!    ```
//!    and derive `utoipa::ToSchema` on `NewThing` and `Thing` (`#[schema(value_type = i64)]`
//!    on [`Millis`](crate::model::Millis) fields). Give it an `operation_id` when its function
//!    name (`list`, `one`...) is not unique in the whole API.
//! 2. Add the handler to the `paths(...)` list of [`ApiDoc`]: one line.
//!
//! The unit test `every_served_route_is_documented` reads the routes the real routers serve and
//! fails when one is served but not in the document (a handler not annotated, or not listed in
//! step 2), or documented but not served. `tests/it/openapi.rs` validates the served document
//! against the official OpenAPI 3.1 schema and checks that every `$ref` resolves.

use axum::Json;
use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use super::error::ErrorBody;
use crate::model::{Attempt, Delivery, Millis, WebhookSpec};
use crate::source::{SourceSpec, SourceStatus};
use crate::store::PluginRecord;

/// The document's contents: every handler of both listeners, and the shared components.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "hookyard",
        description = "Webhook gateway. The public listener serves `/v1/*`, `/healthz`, \
            `/readyz` and `/metrics`; the admin listener `/admin/v1/*` (one listener serves both \
            when `server.admin_listen` equals `server.listen`). Ingest takes the ingest token, \
            the admin API the admin token, each as `Authorization: Bearer <token>` when \
            configured. Every error is a JSON `Error` body. Timestamps are Unix milliseconds."
    ),
    paths(
        // Public listener.
        super::ingest::one,
        super::ingest::batch,
        super::inbound::receive,
        super::healthz,
        super::readyz,
        super::metrics,
        // Admin listener.
        super::admin::list_webhooks,
        super::admin::create_webhook,
        super::admin::get_webhook,
        super::admin::put_webhook,
        super::admin::patch_webhook,
        super::admin::delete_webhook,
        super::admin::replay_webhook,
        super::admin::signing_secret,
        super::admin::list_deliveries,
        super::admin::get_delivery,
        super::admin::replay_delivery,
        super::plugins::list,
        super::plugins::one,
        super::plugins::upload,
        super::plugins::activate,
        super::sources::list,
        super::sources::create,
        super::sources::one,
        super::sources::delete,
        super::sources::pause,
        super::sources::resume,
        // Source PUT / PATCH (issue 24).
        super::sources::put,
        super::sources::patch,
        super::connections::list,
        super::connections::create,
        super::connections::one,
        super::connections::put,
        super::connections::patch,
        super::connections::delete,
        super::connections::test,
        super::admin_metrics,
        super::catalog::list,
        super::catalog::create,
        super::catalog::one,
        super::catalog::replace,
        super::catalog::delete,
        super::test_send::test_webhook,
        super::plugin_try::try_version,
        document,
    ),
    components(
        schemas(ErrorBody),
        responses(
            BadRequest,
            Unauthorized,
            NotFound,
            RequestTimeout,
            Conflict,
            PayloadTooLarge,
            Unprocessable,
            TooManyRequests,
            Unavailable,
        )
    ),
    modifiers(&SecuritySchemes),
    tags(
        (name = "ingest", description = "Events in: each committed with one delivery per matching webhook"),
        (name = "inbound", description = "Third parties pushing changes, passed to the sink"),
        (name = "operations", description = "Health, readiness, metrics, this document"),
        (name = "webhooks", description = "Webhooks: where events go and how (secrets are write-only)"),
        (name = "deliveries", description = "The Webhook Log: deliveries and their attempts; replay"),
        (name = "plugins", description = "The WebAssembly plugin registry: versions, activation, rollback"),
        (name = "sources", description = "Message-bus sources (NATS JetStream, RabbitMQ)"),
    )
)]
pub struct ApiDoc;

/// `GET /admin/v1/openapi.json`.
#[utoipa::path(
    get,
    path = "/admin/v1/openapi.json",
    tag = "operations",
    operation_id = "openapi_document",
    summary = "This document (OpenAPI 3.1), generated from the code",
    responses((status = 200, description = "The document", body = Object)),
    security(()),
)]
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// The security schemes the operations name.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        for (name, description) in [
            (
                "admin_token",
                "`server.admin_token` as a bearer token (not required when none is configured, \
                 which only a loopback admin listener allows)",
            ),
            (
                "ingest_token",
                "`server.ingest_token` as a bearer token (not required when none is configured, \
                 which only a loopback listener allows)",
            ),
        ] {
            components.add_security_scheme(
                name,
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .description(Some(description))
                        .build(),
                ),
            );
        }
    }
}

fn error_response(description: &str) -> RefOr<Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Error")))
                .build(),
        )
        .build()
        .into()
}

/// Error answers, each with the `Error` body: `(status = 404, response = NotFound)` in a
/// handler's `responses(...)`.
macro_rules! error_responses {
    ($($(#[$doc:meta])* $name:ident => $description:literal;)*) => {$(
        $(#[$doc])*
        pub struct $name;

        impl<'r> utoipa::ToResponse<'r> for $name {
            fn response() -> (&'r str, RefOr<Response>) {
                (stringify!($name), error_response($description))
            }
        }
    )*};
}

error_responses! {
    /// 400.
    BadRequest => "Malformed JSON, a body that cannot be read, or a bad query string";
    /// 401.
    Unauthorized => "Missing or wrong credentials";
    /// 404.
    NotFound => "No such resource";
    /// 408.
    RequestTimeout => "The body did not arrive within `server.body_timeout_ms`";
    /// 409.
    Conflict => "Conflicts with the current state (a taken name, a replayed message, a resource managed by the config...)";
    /// 413.
    PayloadTooLarge => "The body exceeds the configured limit";
    /// 422.
    Unprocessable => "Well-formed but invalid; `field` names the offending field";
    /// 429.
    TooManyRequests => "Rate limited per client address (`server.inbound_rate_per_sec`); `Retry-After` says when to try again";
    /// 503.
    Unavailable => "The store or a needed part of the gateway is unavailable; nothing was accepted";
}

/// `{"status": "ok"}` (`/healthz`) or `{"status": "ready"}` (`/readyz`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok` or `ready`.
    pub status: String,
}

/// A webhook as the admin API shows it: its [`WebhookSpec`] with secrets masked (the create
/// answer shows the signing secret once), its id and timestamps, and where a third party
/// pushes when it has an inbound side.
///
/// Its schema is the spec's own with these properties added and without the spec's refusal of
/// unknown properties (which is for requests).
#[derive(Serialize)]
pub struct WebhookView;

impl utoipa::PartialSchema for WebhookView {
    fn schema() -> RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{KnownFormat, Object, Schema, SchemaFormat, Type};
        let mut schema = match <WebhookSpec as utoipa::PartialSchema>::schema() {
            RefOr::T(Schema::Object(object)) => object,
            // The derive makes an object of a struct; anything else would be a bug there.
            _ => Object::new(),
        };
        schema.additional_properties = None;
        schema.description = Some(
            "A webhook as the admin API shows it: its definition with secrets masked (the \
             create answer shows the signing secret once), its id and timestamps."
                .into(),
        );
        let property = |schema_type: Type, format: Option<KnownFormat>, description: &str| {
            let object = Object::builder()
                .schema_type(schema_type)
                .format(format.map(SchemaFormat::KnownFormat))
                .description(Some(description))
                .build();
            RefOr::T(Schema::Object(object))
        };
        for (name, schema_type, format, description) in [
            ("id", Type::String, None, "Stable id, `wh_...`"),
            (
                "created_at",
                Type::Integer,
                Some(KnownFormat::Int64),
                "Creation time (Unix ms)",
            ),
            (
                "updated_at",
                Type::Integer,
                Some(KnownFormat::Int64),
                "Last change (Unix ms), by an admin or by the gateway (a 410 disables a webhook)",
            ),
            (
                "inbound_url",
                Type::String,
                None,
                "Where the third party pushes, when the webhook has an inbound side",
            ),
        ] {
            schema
                .properties
                .insert(name.into(), property(schema_type, format, description));
        }
        schema
            .required
            .extend(["id".into(), "created_at".into(), "updated_at".into()]);
        RefOr::T(Schema::Object(schema))
    }
}

impl utoipa::ToSchema for WebhookView {
    fn schemas(schemas: &mut Vec<(String, RefOr<utoipa::openapi::schema::Schema>)>) {
        <WebhookSpec as utoipa::ToSchema>::schemas(schemas);
    }
}

/// `GET /admin/v1/webhooks`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct WebhookList {
    /// Every webhook.
    pub items: Vec<WebhookView>,
}

/// `GET /admin/v1/webhooks/{id}/secret`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct SigningSecret {
    /// Whether deliveries are signed.
    pub enabled: bool,
    /// `whsec_<base64>`.
    pub secret: Option<String>,
}

/// `POST /admin/v1/webhooks/{id}/replay`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Replayed {
    /// How many dead deliveries are pending again.
    pub replayed: u64,
}

/// `GET /admin/v1/deliveries/{id}`: a delivery with its attempts. Its schema is the
/// [`Delivery`]'s with `attempts` the list of attempts itself (oldest first, across replays)
/// rather than their count, which is the list's length.
#[derive(Serialize)]
pub struct DeliveryWithAttempts;

impl utoipa::PartialSchema for DeliveryWithAttempts {
    fn schema() -> RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ArrayBuilder, Object, Schema};
        let mut schema = match <Delivery as utoipa::PartialSchema>::schema() {
            RefOr::T(Schema::Object(object)) => object,
            // The derive makes an object of a struct; anything else would be a bug there.
            _ => Object::new(),
        };
        schema.description = Some(
            "A delivery with every attempt, oldest first, across replays: `attempts` is the \
             list here (its length is the count the Webhook Log shows)."
                .into(),
        );
        let attempts = ArrayBuilder::new()
            .items(RefOr::Ref(Ref::from_schema_name("Attempt")))
            .description(Some("Every attempt, oldest first, across replays"))
            .build();
        schema
            .properties
            .insert("attempts".into(), RefOr::T(Schema::Array(attempts)));
        RefOr::T(Schema::Object(schema))
    }
}

impl utoipa::ToSchema for DeliveryWithAttempts {
    fn schemas(schemas: &mut Vec<(String, RefOr<utoipa::openapi::schema::Schema>)>) {
        schemas.push((
            "Attempt".into(),
            <Attempt as utoipa::PartialSchema>::schema(),
        ));
        <Attempt as utoipa::ToSchema>::schemas(schemas);
        <Delivery as utoipa::ToSchema>::schemas(schemas);
    }
}

/// `GET /admin/v1/plugins`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct PluginList {
    /// Every plugin.
    pub items: Vec<PluginRecord>,
}

/// `POST /admin/v1/plugins/{name}/activate`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Activated {
    /// The plugin.
    pub name: String,
    /// The version now active.
    pub active: u32,
}

/// A source as the admin API shows it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct SourceView {
    /// Its name.
    pub name: String,
    /// Its definition, the URL's password masked.
    pub spec: SourceSpec,
    /// Paused sources are consumed by no process.
    pub paused: bool,
    /// Creation time (Unix ms).
    #[schema(value_type = i64)]
    pub created_at: Millis,
    /// Last change of spec or pause state (Unix ms).
    #[schema(value_type = i64)]
    pub updated_at: Millis,
    /// This process's consumer; none before it started.
    pub status: Option<SourceStatus>,
}

/// `GET /admin/v1/sources`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct SourceList {
    /// Every source.
    pub items: Vec<SourceView>,
}

#[cfg(test)]
mod tests;
