//! `/favicon.ico`, served without a login: browsers ask for it on every page, the login page
//! included, and a `401` there would be noise in their consoles and in the log.

use axum::http::header;
use axum::response::IntoResponse;

/// The site's icon: 16x16, a camera (PNG inside an ICO).
pub const FAVICON: &[u8] = include_bytes!("../../assets/favicon.ico");

/// `GET /favicon.ico`: [`FAVICON`], cached for a day.
pub(super) async fn favicon() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "image/x-icon"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        FAVICON,
    )
}
