//! The operator API beside `/metrics` on the telemetry listener:
//!
//! - `GET /v1/baselines/{sensor}/{device}`: the device's stored baseline
//!   versions, newest first, and the one in force.
//! - `POST /v1/baselines/{sensor}/{device}/rollback` with
//!   `{"version": N}`: roll the baseline back to stored version N; the
//!   answer gives the new version (a rollback is a version of its own).
//! - `GET /v1/incidents/{sensor}` (`?state=open|acknowledged|closed`): the
//!   sensor's incidents, newest first.
//! - `POST /v1/incidents/{sensor}/{incident}/acknowledge` and `.../close`
//!   with `{"by": "who", "note": "why"}` (note optional): a person's
//!   verdict. A closed incident collects no more alerts: the device's next
//!   one opens a new incident. Either change is published on the alerts
//!   subject within a second.
//!
//! The listener carries no authentication: keep it on the host or cluster
//! network, as the metrics are (docs/operations.md).

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use crate::{Action, IncidentError, RollbackError, Service};

type Slot = Arc<OnceLock<Arc<Service>>>;

pub(crate) fn router(slot: Slot) -> Router {
    Router::new()
        .route("/v1/baselines/{sensor}/{device}", get(list))
        .route("/v1/baselines/{sensor}/{device}/rollback", post(rollback))
        .route("/v1/incidents/{sensor}", get(incidents))
        .route("/v1/incidents/{sensor}/{incident}/{action}", post(act))
        .with_state(slot)
}

fn problem(code: StatusCode, message: String) -> Response {
    (code, axum::Json(json!({ "error": message }))).into_response()
}

fn service(slot: &Slot) -> Result<Arc<Service>, Box<Response>> {
    slot.get().cloned().ok_or_else(|| {
        Box::new(problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "the service is still loading its state; try again shortly".into(),
        ))
    })
}

async fn list(
    State(slot): State<Slot>,
    Path((sensor, device)): Path<(String, String)>,
) -> Response {
    let svc = match service(&slot) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    match crate::versions(&svc.pool, &sensor, &device).await {
        Ok(v) if v.is_empty() => problem(
            StatusCode::NOT_FOUND,
            format!("no stored baseline for device {device} on sensor {sensor}"),
        ),
        Ok(v) => {
            let current: Option<i64> = sqlx::query_scalar(
                "SELECT version FROM profiles WHERE sensor_id = $1 AND device_key = $2",
            )
            .bind(&sensor)
            .bind(&device)
            .fetch_optional(&svc.pool)
            .await
            .ok()
            .flatten();
            axum::Json(
                json!({ "sensor": sensor, "device": device, "current": current, "versions": v }),
            )
            .into_response()
        }
        Err(e) => problem(StatusCode::INTERNAL_SERVER_ERROR, format!("database: {e}")),
    }
}

#[derive(Deserialize)]
struct RollbackBody {
    version: u64,
}

async fn rollback(
    State(slot): State<Slot>,
    Path((sensor, device)): Path<(String, String)>,
    body: Result<axum::Json<RollbackBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let svc = match service(&slot) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let Ok(axum::Json(body)) = body else {
        return problem(
            StatusCode::BAD_REQUEST,
            "send a JSON body like {\"version\": 12}".into(),
        );
    };
    match svc.rollback(&sensor, &device, body.version).await {
        Ok(v) => axum::Json(
            json!({ "device": device, "rolled_back_to": body.version, "new_version": v }),
        )
        .into_response(),
        Err(e @ (RollbackError::NoDevice { .. } | RollbackError::NoVersion { .. })) => {
            problem(StatusCode::NOT_FOUND, e.to_string())
        }
        Err(e) => problem(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[derive(Deserialize)]
struct StateQuery {
    state: Option<String>,
}

async fn incidents(
    State(slot): State<Slot>,
    Path(sensor): Path<String>,
    axum::extract::Query(q): axum::extract::Query<StateQuery>,
) -> Response {
    let svc = match service(&slot) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let state = q.state.as_deref();
    if let Some(s) = state
        && !["open", "acknowledged", "closed"].contains(&s)
    {
        return problem(
            StatusCode::BAD_REQUEST,
            "state is one of open, acknowledged, closed".into(),
        );
    }
    match crate::incidents(&svc.pool, &sensor, state).await {
        Ok(list) => axum::Json(json!({ "sensor": sensor, "incidents": list })).into_response(),
        Err(e) => problem(StatusCode::INTERNAL_SERVER_ERROR, format!("database: {e}")),
    }
}

#[derive(Deserialize)]
struct Verdict {
    by: String,
    #[serde(default)]
    note: String,
}

async fn act(
    State(slot): State<Slot>,
    Path((sensor, incident, action)): Path<(String, String, String)>,
    body: Result<axum::Json<Verdict>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let svc = match service(&slot) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let Some(action) = Action::from_verb(&action) else {
        return problem(
            StatusCode::NOT_FOUND,
            format!("no action {action}: use acknowledge or close"),
        );
    };
    let Ok(axum::Json(body)) = body else {
        return problem(
            StatusCode::BAD_REQUEST,
            "send a JSON body like {\"by\": \"alice\", \"note\": \"the printer's update\"}".into(),
        );
    };
    match crate::act(&svc.pool, &sensor, &incident, action, &body.by, &body.note).await {
        Ok(i) => {
            // Applied now rather than at the next tick.
            if action == Action::Close
                && let Err(e) = svc.detach_closed().await
            {
                tracing::warn!(error = %e, "applying the close failed; the next tick retries");
            }
            svc.outbox.notify_one();
            axum::Json(json!({ "incident": i })).into_response()
        }
        Err(e @ IncidentError::NotFound { .. }) => problem(StatusCode::NOT_FOUND, e.to_string()),
        Err(e @ IncidentError::Closed { .. }) => problem(StatusCode::CONFLICT, e.to_string()),
        Err(e @ IncidentError::NoOne) => problem(StatusCode::BAD_REQUEST, e.to_string()),
        Err(e) => problem(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
