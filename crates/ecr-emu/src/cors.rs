//! CORS, which a terminal needs for a POS that runs in a browser (Odoo's
//! `pos_qfpay` posts with `fetch` and `Content-Type: application/json`, so the
//! browser asks first with a preflight `OPTIONS` request).
//!
//! - A preflight (`OPTIONS` with `Access-Control-Request-Method`) is answered
//!   `204 No Content` with `Access-Control-Allow-Origin`, `-Methods`, `-Headers`
//!   and `-Max-Age`, and with `Access-Control-Allow-Private-Network: true` when
//!   the browser asks for it (Chrome's Private Network Access: a POS page from the
//!   internet talking to a terminal on the shop's LAN).
//! - Every other answer carries `Access-Control-Allow-Origin` too; without it the
//!   browser hides the answer from the page and the payment looks failed.
//!
//! The origin is echoed (with `Vary: Origin`) when the request names one, `*`
//! otherwise.

use ecr_capture::http::{HttpKind, HttpMessage};

/// Seconds a browser may cache the preflight answer (Chrome caps it at 7200).
pub const MAX_AGE: u32 = 7200;

/// Methods the terminal allows.
pub const ALLOW_METHODS: &str = "POST, OPTIONS";

/// Whether `m` is a CORS preflight request.
pub fn is_preflight(m: &HttpMessage) -> bool {
    matches!(&m.kind, HttpKind::Request { method, .. } if method.eq_ignore_ascii_case("OPTIONS"))
        && m.header("access-control-request-method").is_some()
}

/// A header value that is safe to echo: printable ASCII, bounded.
fn echoable(v: &str) -> bool {
    !v.is_empty() && v.len() <= 512 && v.bytes().all(|b| (0x20..0x7f).contains(&b))
}

/// The `Access-Control-Allow-Origin` header line(s) for any answer to `m`
/// (CRLF-terminated).
pub fn allow_origin(m: &HttpMessage) -> String {
    match m.header("origin").filter(|o| echoable(o)) {
        Some(o) => format!("Access-Control-Allow-Origin: {o}\r\nVary: Origin\r\n"),
        None => "Access-Control-Allow-Origin: *\r\n".to_string(),
    }
}

/// The complete answer to a preflight request.
pub fn preflight_answer(m: &HttpMessage, close: bool) -> Vec<u8> {
    // The headers the page wants to send (Content-Type for JSON), echoed when
    // they are a plain list of header names.
    let headers = m
        .header("access-control-request-headers")
        .filter(|h| {
            echoable(h)
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_, ".contains(&b))
        })
        .unwrap_or("Content-Type");
    let private = m
        .header("access-control-request-private-network")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    format!(
        "HTTP/1.1 204 No Content\r\n{}Access-Control-Allow-Methods: {ALLOW_METHODS}\r\nAccess-Control-Allow-Headers: {headers}\r\nAccess-Control-Max-Age: {MAX_AGE}\r\n{}{}Content-Length: 0\r\n\r\n",
        allow_origin(m),
        if private {
            "Access-Control-Allow-Private-Network: true\r\n"
        } else {
            ""
        },
        if close { "Connection: close\r\n" } else { "" },
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ecr_capture::http::{HttpEvent, HttpParser};
    use ecr_proto::Timestamp;

    fn parse(text: &str) -> HttpMessage {
        let mut p = HttpParser::default();
        let mut ev = vec![];
        p.feed(Timestamp::from_parts(0, 0), text.as_bytes(), &mut ev);
        match ev.into_iter().next() {
            Some(HttpEvent::Message(m)) => m,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn preflight_is_answered_with_what_the_browser_asked() {
        let m = parse(
            "OPTIONS /api/pos/trade HTTP/1.1\r\nHost: t:9001\r\nOrigin: https://shop.odoo.com\r\nAccess-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: content-type\r\nAccess-Control-Request-Private-Network: true\r\n\r\n",
        );
        assert!(is_preflight(&m));
        let a = String::from_utf8(preflight_answer(&m, false)).unwrap();
        assert!(a.starts_with("HTTP/1.1 204 No Content\r\n"), "{a}");
        for h in [
            "Access-Control-Allow-Origin: https://shop.odoo.com\r\n",
            "Vary: Origin\r\n",
            "Access-Control-Allow-Methods: POST, OPTIONS\r\n",
            "Access-Control-Allow-Headers: content-type\r\n",
            "Access-Control-Max-Age: 7200\r\n",
            "Access-Control-Allow-Private-Network: true\r\n",
            "Content-Length: 0\r\n\r\n",
        ] {
            assert!(a.contains(h), "{h:?} missing in {a}");
        }
    }

    #[test]
    fn plain_options_and_posts_are_not_preflights() {
        let m = parse("OPTIONS /api/pos/trade HTTP/1.1\r\nHost: t\r\n\r\n");
        assert!(!is_preflight(&m));
        let p = parse("POST /api/pos/trade HTTP/1.1\r\nAccess-Control-Request-Method: POST\r\nContent-Length: 0\r\n\r\n");
        assert!(!is_preflight(&p));
        assert_eq!(allow_origin(&p), "Access-Control-Allow-Origin: *\r\n");
    }

    #[test]
    fn odd_request_headers_are_not_echoed() {
        let m = parse(
            "OPTIONS / HTTP/1.1\r\nAccess-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: x;y\r\n\r\n",
        );
        let a = String::from_utf8(preflight_answer(&m, true)).unwrap();
        assert!(a.contains("Access-Control-Allow-Headers: Content-Type\r\n"));
        assert!(a.contains("Connection: close\r\n"));
        assert!(a.contains("Access-Control-Allow-Origin: *\r\n"));
        assert!(!a.contains("Private-Network"));
    }
}
