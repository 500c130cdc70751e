//! Strict HTTP/1 framing rules, shared by the client-facing server ([`crate::h1server`]) and
//! the upstream client ([`crate::h1client`]): request heads ([`head`]), chunked bodies
//! ([`chunked`]), Content-Length values, and the error answers for refused requests.
//!
//! hyper accepts several ambiguous requests (both Content-Length and Transfer-Encoding, a
//! missing or duplicated Host, bare-LF line ends, lower-case methods); these rules refuse
//! them, and the server closes the connection after answering, so nothing ambiguous is ever
//! forwarded.

pub(crate) mod chunked;
pub(crate) mod head;

pub(crate) use head::parse_content_length;
pub use head::Limits;

/// A complete HTTP/1.1 error response with Kong's message for `status`, closing the connection.
pub fn error_reply(status: u16) -> Vec<u8> {
    let (reason, message) = match status {
        408 => ("Request Timeout", "Request timeout"),
        413 => ("Payload Too Large", "Payload too large"),
        414 => ("URI Too Long", "URI too long"),
        431 => (
            "Request Header Fields Too Large",
            "Request header or cookie too large",
        ),
        501 => ("Not Implemented", "Not implemented"),
        _ => ("Bad Request", "Bad request"),
    };
    let body = format!("{{\"message\":\"{message}\"}}");
    format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}
