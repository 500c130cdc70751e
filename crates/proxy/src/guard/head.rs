//! Request heads (RFC 9110 / 9112): parsed once, checked strictly, and turned into the
//! request's method, target, version and header map.

use std::mem::MaybeUninit;
use std::time::Duration;

use bytes::BytesMut;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Uri, Version};

/// Limits and timeouts of the HTTP/1 guard.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Maximum header lines (more: 431). At most 256.
    pub max_header_count: usize,
    /// Maximum head size in bytes (more: 431).
    pub max_header_bytes: usize,
    /// Maximum request-target length (more: 414).
    pub max_uri_length: usize,
    /// Time to receive a whole head (408).
    pub header_timeout: Duration,
    /// Idle time between requests before a quiet close.
    pub keepalive_timeout: Duration,
    /// Time without a byte inside a body (408).
    pub body_timeout: Duration,
    /// Time a client may take no response bytes before the connection is closed (nginx's
    /// `send_timeout`).
    pub send_timeout: Duration,
}

/// How the body after a head is delimited.
#[derive(Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    None,
    /// Content-Length.
    Length(u64),
    /// Transfer-Encoding: chunked.
    Chunked,
    /// A WebSocket upgrade request: what follows depends on the response.
    Upgrade,
}

/// A refused head, with the status to answer.
#[derive(Debug, PartialEq, Eq)]
pub struct HeadError(pub u16);

/// A complete, checked request head.
#[derive(Debug)]
pub struct Head {
    /// How the body is delimited.
    pub framing: Framing,
    /// The request method.
    pub method: Method,
    /// The request target (origin or absolute form).
    pub uri: Uri,
    /// HTTP/1.0 or HTTP/1.1.
    pub version: Version,
    /// Header fields in the order received.
    pub headers: HeaderMap,
    /// `Expect: 100-continue` on an HTTP/1.1 request with a body.
    pub expect_continue: bool,
    /// The client asked to keep the connection open (HTTP/1.1 without `Connection: close`,
    /// HTTP/1.0 with `Connection: keep-alive`).
    pub keep_alive: bool,
}

const MAX_HEADERS: usize = 256;

/// Where one header line's name and value lie in the head.
#[derive(Clone, Copy, Default)]
struct Span {
    name: (u32, u32),
    value: (u32, u32),
}

/// Header spans kept on the stack; a head with more lines spills to the heap.
const INLINE_SPANS: usize = 24;

/// Parses and checks the head at the start of `buf`. `Ok(None)`: incomplete, read more. A
/// complete head is split off `buf` (no copy): the target and header values are slices of it.
pub fn parse(buf: &mut BytesMut, limits: &Limits) -> Result<Option<Head>, HeadError> {
    let mut inline = [Span::default(); INLINE_SPANS];
    let mut spilled = Vec::new();
    let Some(checked) = check(buf, limits, &mut inline, &mut spilled)? else {
        return Ok(None);
    };
    let Checked {
        len,
        framing,
        method,
        target,
        http11,
        count,
        expect_continue,
        keep_alive,
    } = checked;
    let block = buf.split_to(len).freeze();
    let spans = if count <= INLINE_SPANS {
        &inline[..count]
    } else {
        &spilled[..]
    };
    let part = |(start, n): (u32, u32)| block.slice(start as usize..(start + n) as usize);
    let uri = Uri::from_maybe_shared(part(target)).map_err(|_| HeadError(400))?;
    let mut headers = HeaderMap::with_capacity(count + 8);
    for s in spans {
        let (start, n) = s.name;
        let name = HeaderName::from_bytes(&block[start as usize..(start + n) as usize])
            .map_err(|_| HeadError(400))?;
        let value = HeaderValue::from_maybe_shared(part(s.value)).map_err(|_| HeadError(400))?;
        headers.append(name, value);
    }
    Ok(Some(Head {
        framing,
        method,
        uri,
        version: if http11 {
            Version::HTTP_11
        } else {
            Version::HTTP_10
        },
        headers,
        expect_continue,
        keep_alive,
    }))
}

/// What [`check`] found in a complete head.
struct Checked {
    len: usize,
    framing: Framing,
    method: Method,
    target: (u32, u32),
    http11: bool,
    count: usize,
    expect_continue: bool,
    keep_alive: bool,
}

/// Parses and checks a head, recording where its parts lie (`inline`, or `spilled` when it
/// has more than [`INLINE_SPANS`] lines).
fn check(
    buf: &[u8],
    limits: &Limits,
    inline: &mut [Span; INLINE_SPANS],
    spilled: &mut Vec<Span>,
) -> Result<Option<Checked>, HeadError> {
    // Clients may send stray CRLFs between requests (RFC 9112 §2.2); httparse skips them, but
    // a bare LF is not a line end here.
    let first_lf = buf.iter().position(|&b| b == b'\n');
    match first_lf {
        None if buf.len() > limits.max_uri_length + 32 => return Err(HeadError(414)),
        None => {
            if buf.len() > limits.max_header_bytes {
                return Err(HeadError(431));
            }
            // A CR that is not followed by LF can never end the request line (RFC 9112 §2.2:
            // a bare CR is invalid): refused now, as nginx does, rather than waiting for a
            // line end that will not come.
            if memchr::memchr(b'\r', buf).is_some_and(|i| i + 1 < buf.len()) {
                return Err(HeadError(400));
            }
            return Ok(None);
        }
        Some(_) => {}
    }
    // Uninitialised slots: zeroing 256 of them cost more than parsing a typical head.
    let mut slots: [MaybeUninit<httparse::Header<'_>>; MAX_HEADERS] =
        [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let max = limits.max_header_count.min(MAX_HEADERS);
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut slots[..max]) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            if buf.len() > limits.max_header_bytes {
                return Err(HeadError(431));
            }
            if req.path.is_some_and(|p| p.len() > limits.max_uri_length) {
                return Err(HeadError(414));
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError(431)),
        Err(_) => {
            // A request line too long to parse is reported as such.
            let line_len = buf.iter().position(|&b| b == b'\n').unwrap_or(buf.len());
            if line_len > limits.max_uri_length + 16 {
                return Err(HeadError(414));
            }
            return Err(HeadError(400));
        }
    };
    if len > limits.max_header_bytes {
        return Err(HeadError(431));
    }
    let head = &buf[..len];
    // Every LF must end a CRLF.
    if memchr::memchr_iter(b'\n', head).any(|i| i == 0 || head[i - 1] != b'\r') {
        return Err(HeadError(400));
    }
    let method = req.method.unwrap_or("");
    if method.is_empty()
        || !method
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b == b'-' || b == b'_')
    {
        return Err(HeadError(400));
    }
    let target = req.path.unwrap_or("");
    if target.len() > limits.max_uri_length {
        return Err(HeadError(414));
    }
    let origin_form = target.starts_with('/');
    // Bytes, not str slices: a target may hold non-ASCII bytes (refused just below), and a
    // str slice inside a multi-byte character would panic.
    let t = target.as_bytes();
    let absolute_form = t.len() > 8
        && (t[..7].eq_ignore_ascii_case(b"http://") || t[..8].eq_ignore_ascii_case(b"https://"));
    if !t.is_ascii() {
        return Err(HeadError(400));
    }
    if !(origin_form || absolute_form) || target.contains('#') || method == "CONNECT" {
        return Err(HeadError(400));
    }
    let http11 = req.version == Some(1);

    let mut hosts = 0;
    let mut content_length: Option<u64> = None;
    let mut te_count = 0;
    let mut chunked = false;
    let mut upgrade_ws = false;
    let mut connection_upgrade = false;
    let mut connection_close = false;
    let mut connection_keep_alive = false;
    let mut expect_continue = false;
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("host") {
            hosts += 1;
            // An empty Host names nothing to route by (nginx: "client sent invalid host
            // header").
            if h.value.is_empty() || !valid_host_value(h.value) {
                return Err(HeadError(400));
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            let v = parse_content_length(h.value).ok_or(HeadError(400))?;
            // Two Content-Length lines are refused even when equal, as nginx does ("duplicate
            // header line"): one framing, stated once.
            if content_length.is_some() {
                return Err(HeadError(400));
            }
            content_length = Some(v);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            te_count += 1;
            let v = trim(h.value);
            if !v.eq_ignore_ascii_case(b"chunked") {
                return Err(HeadError(400));
            }
            chunked = true;
        } else if name.eq_ignore_ascii_case("upgrade") {
            upgrade_ws = trim(h.value).eq_ignore_ascii_case(b"websocket");
        } else if name.eq_ignore_ascii_case("connection") {
            for t in h.value.split(|&b| b == b',') {
                let t = trim(t);
                connection_upgrade |= t.eq_ignore_ascii_case(b"upgrade");
                connection_close |= t.eq_ignore_ascii_case(b"close");
                connection_keep_alive |= t.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case("expect") {
            expect_continue |= trim(h.value).eq_ignore_ascii_case(b"100-continue");
        }
    }
    if (http11 && hosts != 1) || hosts > 1 {
        return Err(HeadError(400));
    }
    if te_count > 0 && (!http11 || te_count > 1 || content_length.is_some()) {
        return Err(HeadError(400));
    }
    let framing = if chunked {
        Framing::Chunked
    } else if let Some(n) = content_length {
        Framing::Length(n)
    } else if upgrade_ws && connection_upgrade && http11 && method == "GET" {
        Framing::Upgrade
    } else {
        Framing::None
    };
    let method = Method::from_bytes(method.as_bytes()).map_err(|_| HeadError(400))?;
    // Offsets fit: a head is at most `max_header_bytes` long, far below 4 GiB.
    let base = buf.as_ptr() as usize;
    let span = |part: &[u8]| ((part.as_ptr() as usize - base) as u32, part.len() as u32);
    let count = req.headers.len();
    let spans = req.headers.iter().map(|h| Span {
        name: span(h.name.as_bytes()),
        value: span(h.value),
    });
    if count <= INLINE_SPANS {
        for (slot, s) in inline.iter_mut().zip(spans) {
            *slot = s;
        }
    } else {
        spilled.extend(spans);
    }
    let has_body = !matches!(framing, Framing::None | Framing::Length(0));
    Ok(Some(Checked {
        len,
        framing,
        method,
        target: span(t),
        http11,
        count,
        expect_continue: expect_continue && http11 && has_body,
        keep_alive: if http11 {
            !connection_close
        } else {
            connection_keep_alive && !connection_close
        },
    }))
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &v[start..end]
}

/// A Content-Length value: 1 to 18 ASCII digits around optional whitespace, nothing else (no
/// sign, no list, no spaces inside). Client requests, upstream responses and the length the
/// gateway forwards are all read with this one rule.
pub(crate) fn parse_content_length(v: &[u8]) -> Option<u64> {
    let v = trim(v);
    if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    v.iter().try_fold(0u64, |acc, &d| {
        acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// reg-name / IPv4 / [IPv6] with an optional port; no userinfo, path or spaces.
fn valid_host_value(v: &[u8]) -> bool {
    // One table lookup a byte (this runs on every request's Host).
    static ALLOWED: [bool; 256] = {
        let mut t = [false; 256];
        let mut i = 0;
        while i < 256 {
            t[i] = (i as u8).is_ascii_alphanumeric();
            i += 1;
        }
        let extra = b"-._~:[]!$&'()*+,;=%";
        let mut j = 0;
        while j < extra.len() {
            t[extra[j] as usize] = true;
            j += 1;
        }
        t
    };
    v.iter().all(|&b| ALLOWED[usize::from(b)])
}

#[cfg(test)]
mod tests {
    #[test]
    fn host_value_bytes_are_the_uri_host_and_port_characters() {
        for b in 0..=255u8 {
            let expected = b.is_ascii_alphanumeric() || b"-._~:[]!$&'()*+,;=%".contains(&b);
            assert_eq!(super::valid_host_value(&[b]), expected, "byte {b}");
        }
        assert!(super::valid_host_value(b"[::1]:8000"));
        assert!(!super::valid_host_value(b"a b"));
        assert!(!super::valid_host_value(b"a/b"));
    }
}
