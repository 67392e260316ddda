//! The settings page and the live preview: showing the values in effect, saving a posted form
//! into the overrides file (each field's problem shown next to it, nothing written), resetting
//! to the administrator's values, and motion-svc's preview as JSON. The posts pass the
//! same-origin rule like every other state change ([`super::origin`]).

use std::collections::HashMap;

use axum::Form;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::WebError;
use crate::settings::page::{self, Notice, fields_of};
use crate::settings::{Current, form};
use crate::state::AppState;

#[derive(Debug, Deserialize)]
pub(super) struct NoticeQuery {
    saved: Option<u8>,
    reset: Option<u8>,
}

/// Runs a blocking file operation of the settings store off the runtime.
async fn blocking<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&crate::settings::SettingsStore) -> T + Send + 'static,
) -> Result<T, WebError> {
    let state = state.clone();
    tokio::task::spawn_blocking(move || f(&state.0.settings))
        .await
        .map_err(|e| WebError::Internal(e.to_string()))
}

pub(super) async fn settings_page(
    State(state): State<AppState>,
    Query(q): Query<NoticeQuery>,
) -> Result<Html<String>, WebError> {
    let Current { tunables, problem } = blocking(&state, |s| s.current()).await?;
    let notice = match (&problem, q.saved, q.reset) {
        (Some(p), _, _) => Notice::Problem(p),
        (None, Some(_), _) => Notice::Saved,
        (None, None, Some(_)) => Notice::Reset,
        _ => Notice::None,
    };
    let admin = state.0.settings.admin();
    Ok(Html(page::settings(
        &fields_of(&tunables),
        &[],
        notice,
        admin,
    )))
}

pub(super) async fn settings_save(
    State(state): State<AppState>,
    Form(posted): Form<HashMap<String, String>>,
) -> Result<Response, WebError> {
    let current = blocking(&state, |s| s.current()).await?;
    let (want, problems) = form::parse(&posted, &current.tunables);
    let again = |problems: &[tuning::KeyError], notice: Notice<'_>| {
        let mut values = fields_of(&current.tunables);
        values.extend(posted.clone());
        page::settings(&values, problems, notice, state.0.settings.admin())
    };
    if !problems.is_empty() {
        let html = again(
            &problems,
            Notice::Problem("Not saved: see the fields marked below."),
        );
        return Ok((StatusCode::BAD_REQUEST, Html(html)).into_response());
    }
    match blocking(&state, move |s| s.save(&want)).await? {
        Ok(o) => {
            tracing::info!(overrides_file = %state.0.settings.path().display(), keys = ?o.changed_keys(&tuning::Overrides::default()), "settings saved");
            Ok(Redirect::to("/settings?saved=1").into_response())
        }
        Err(e) => {
            let msg = format!("Not saved: {e}");
            Ok((
                StatusCode::CONFLICT,
                Html(again(&[], Notice::Problem(&msg))),
            )
                .into_response())
        }
    }
}

pub(super) async fn settings_reset(State(state): State<AppState>) -> Result<Response, WebError> {
    match blocking(&state, |s| s.reset()).await? {
        Ok(()) => {
            tracing::info!(overrides_file = %state.0.settings.path().display(), "settings reset to the administrator's values");
            Ok(Redirect::to("/settings?reset=1").into_response())
        }
        Err(e) => Err(WebError::Internal(e.to_string())),
    }
}

pub(super) async fn api_preview(State(state): State<AppState>) -> Response {
    match state.0.settings.preview.get().await {
        Ok(doc) => (
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            doc,
        )
            .into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({ "error": e })),
        )
            .into_response(),
    }
}
