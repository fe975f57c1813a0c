//! The OpenAPI document, generated from the handlers' `#[utoipa::path]` attributes and
//! the request and answer types they use: the router and the document come out of the
//! same [`utoipa_axum::router::OpenApiRouter`], so a route cannot be served without
//! being described. Every operation also documents the problem+json answer it gives on
//! error (its `default` response) and the bearer key it needs.
//!
//! `api/openapi.json` is this document written out (`absa-api openapi`), for readers
//! and client generators without a running API; a test fails when the two differ.

use serde::Serialize;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi as Document, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::error::PROBLEM_JSON;

/// An error answer (RFC 9457, `application/problem+json`), the same shape from every route.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"type": "urn:absa:problem:unprocessable", "title": "Unprocessable Content", "status": 422,
    "detail": "hyperparameters.learning_rate 5: outside (0, 1]", "field": "hyperparameters.learning_rate",
    "request_id": "5f0c3a9e2b7d41c8", "error": "hyperparameters.learning_rate 5: outside (0, 1]"}))]
pub struct Problem {
    /// `urn:absa:problem:<kind>`: bad-request, unauthorized, forbidden, not-found, conflict,
    /// payload-too-large, unprocessable, too-many-requests, internal.
    #[serde(rename = "type")]
    pub problem_type: String,
    /// The HTTP status's reason phrase.
    pub title: String,
    pub status: u16,
    /// What was wrong, in words.
    pub detail: String,
    /// The request field the detail is about (`hyperparameters.learning_rate`, `base_model`, ...).
    pub field: Option<String>,
    /// The id of the request's log lines (also the `X-Request-Id` answer header).
    pub request_id: String,
    /// `detail` again, for clients written before the problem shape.
    pub error: String,
}

/// Raw bytes: a file uploaded or downloaded as it is.
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct Bytes(#[allow(dead_code)] Vec<u8>);

#[derive(OpenApi)]
#[openapi(
    info(
        title = "ABSA service API",
        version = "1",
        description = "Aspect-based sentiment and stance: uploads, training and scoring jobs, model registry, retrains, webhooks, access. \
            Every /v1 route needs `Authorization: Bearer <key>`; roles analyst < mlops < admin; another team's ids answer 404. \
            Errors are `application/problem+json` (the `Problem` schema). Lists that grow without bound page by cursor: \
            `limit`, then the answer's `next_after` passed back as `after` while `has_more` is true.",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    servers((url = "/")),
    components(schemas(Problem)),
    tags(
        (name = "data", description = "Datasets (labelled rows for training) and corpora (documents to score)"),
        (name = "jobs", description = "Training, scoring and sweep jobs: submission, status, events, metrics, row errors, predictions"),
        (name = "models", description = "Registered models, their versions and aliases, promotion and downloads"),
        (name = "schedules", description = "Retrains on a cron schedule or when a dataset gains rows"),
        (name = "webhooks", description = "Job state changes POSTed to a team's URLs"),
        (name = "access", description = "Who is calling; keys, teams and BI logins (admins)")
    )
)]
pub struct ApiDoc;

/// The parts every operation shares: the bearer key, and the problem+json error answer.
struct Conventions;

impl Modify for Conventions {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "apiKey",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).description(Some("an API key (absa_...)")).build()),
        );
        doc.security = Some(vec![utoipa::openapi::security::SecurityRequirement::new("apiKey", Vec::<String>::new())]);
        let problem = ResponseBuilder::new()
            .description("An error: 400 bad request, 401 no or unknown key, 403 role too low, 404 unknown (or another team's) id, 409 conflict, 413 too large, 422 invalid field, 429 quota full")
            .content(PROBLEM_JSON, ContentBuilder::new().schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name("Problem")))).build())
            .build();
        for item in doc.paths.paths.values_mut() {
            for op in [&mut item.get, &mut item.put, &mut item.post, &mut item.delete].into_iter().flatten() {
                add_default(op, &problem);
            }
        }
    }
}

/// The problem answer as the operation's `default`, and a description (which OpenAPI
/// requires) on every answer that has none: the status's reason phrase.
fn add_default(op: &mut Operation, problem: &utoipa::openapi::Response) {
    op.responses.responses.entry("default".into()).or_insert_with(|| RefOr::T(problem.clone()));
    for (status, answer) in op.responses.responses.iter_mut() {
        if let RefOr::T(answer) = answer {
            if answer.description.is_empty() {
                let reason = status.parse::<u16>().ok().and_then(|s| axum::http::StatusCode::from_u16(s).ok()).and_then(|s| s.canonical_reason());
                answer.description = reason.unwrap_or("answer").to_owned();
            }
        }
    }
}

/// The document of every `/v1` route. The conventions apply after the routes are
/// collected (a derive's modifiers run before the router adds its paths).
pub fn document() -> Document {
    let mut doc = crate::app::v1_routes().split_for_parts().1;
    Conventions.modify(&mut doc);
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed `api/openapi.json` is the document the code makes; regenerate it
    /// with `cargo run -p absa-api -- openapi > api/openapi.json` when a route changes.
    #[test]
    fn the_committed_spec_is_the_generated_one() {
        let generated: serde_json::Value = serde_json::to_value(document()).unwrap();
        let committed: serde_json::Value = serde_json::from_str(include_str!("../openapi.json")).unwrap();
        assert!(generated == committed, "api/openapi.json is stale: run `cargo run -p absa-api -- openapi > api/openapi.json`");
    }

    #[test]
    fn every_operation_has_an_id_a_tag_an_answer_schema_and_the_problem_answer() {
        let doc = serde_json::to_value(document()).unwrap();
        let mut ids = std::collections::BTreeSet::new();
        let mut count = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                count += 1;
                let id = op["operationId"].as_str().unwrap_or_else(|| panic!("{method} {path}: no operationId"));
                assert!(ids.insert(id.to_owned()), "operationId {id} twice");
                assert!(op["tags"].as_array().is_some_and(|t| !t.is_empty()), "{method} {path}: no tag");
                assert_eq!(op["responses"]["default"]["content"][PROBLEM_JSON]["schema"]["$ref"], "#/components/schemas/Problem", "{method} {path}");
                let success = op["responses"].as_object().unwrap().iter().find(|(status, _)| status.starts_with('2'));
                let (status, answer) = success.unwrap_or_else(|| panic!("{method} {path}: no success answer"));
                assert!(status == "204" || answer["content"].as_object().is_some_and(|c| !c.is_empty()), "{method} {path}: {status} without a body schema");
            }
        }
        assert_eq!(count, 45, "operations in the document");
    }
}
