//! hooks
/// Parses http url.
///
/// # Errors
/// text
pub fn parse_http_url(u: &str) -> Result<(String, u16, String), String> {
    if u.starts_with("http://") {
        Ok((String::new(), 80, String::new()))
    } else {
        Err("only http:// URLs are supported".into())
    }
}
