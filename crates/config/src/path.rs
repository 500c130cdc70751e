//! Request path normalisation: one path for routing, plugins and the upstream.
//!
//! Following RFC 3986 and Kong's `normalize`: percent-encoded characters are decoded once,
//! except reserved ones (`!*'();:@&=+$,/?%#[]`), whose escapes are kept with upper-case hex;
//! dot segments are removed. Unlike Kong, escapes of control characters and of `\` stay
//! encoded too (a raw one is refused), and so does an escaped byte sequence that is not UTF-8;
//! the forwarded path encodes again what is not safe raw (so `/caf%C3%A9` routes as `/café`
//! and reaches the upstream as `/caf%C3%A9`). Unlike Kong we
//! also merge repeated slashes, so `//admin` cannot slip past a `/admin` route onto a catch-all
//! route whose upstream would read it as `/admin`. Encoded NUL, malformed escapes and raw
//! control characters are refused.

/// Why a path was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum PathError {
    /// A `%` not followed by two hex digits.
    BadEscape,
    /// `%00` or a raw control character.
    Forbidden,
    /// Not an origin-form path.
    NotAbsolute,
    /// Decoded escapes are not UTF-8 (internal: [`normalise`] then keeps them escaped).
    NotUtf8,
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Is an escaped byte decoded? Unreserved characters and Kong's "others" (not reserved) are,
/// except control characters and `\`; `non_ascii` says whether bytes from 0x80 are.
fn decodes(v: u8, non_ascii: bool) -> bool {
    if v >= 0x80 {
        return non_ascii;
    }
    !(v < 0x20 || v == 0x7f || v == b'\\' || b"!*'();:@&=+$,/?%#[]".contains(&v))
}

/// Returns the normalised path. Fast path: a path with no `%`, no dot segment and no `//` is
/// returned unchanged without allocation by the caller checking [`needs_normalising`].
pub fn normalise(path: &str) -> Result<String, PathError> {
    match normalise_with(path, true) {
        // Escapes of bytes from 0x80 that do not decode to UTF-8 stay escaped.
        Err(PathError::NotUtf8) => normalise_with(path, false),
        r => r,
    }
}

fn normalise_with(path: &str, non_ascii: bool) -> Result<String, PathError> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    // 1. Decode escapes but the reserved ones, upper-case those.
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        // Raw backslashes are separators to IIS and some frameworks: refused, never routed.
        if b < 0x20 || b == 0x7f || b == b'\\' {
            return Err(PathError::Forbidden);
        }
        if b == b'%' {
            let (h, l) = match (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            ) {
                (Some(h), Some(l)) => (h, l),
                _ => return Err(PathError::BadEscape),
            };
            let v = h * 16 + l;
            if v == 0 {
                return Err(PathError::Forbidden);
            }
            if decodes(v, non_ascii) {
                decoded.push(v);
            } else {
                decoded.push(b'%');
                decoded.push(bytes[i + 1].to_ascii_uppercase());
                decoded.push(bytes[i + 2].to_ascii_uppercase());
            }
            i += 3;
            continue;
        }
        decoded.push(b);
        i += 1;
    }
    // 2. Remove dot segments and merge empty segments.
    let mut out: Vec<&[u8]> = Vec::new();
    let trailing_slash =
        decoded.ends_with(b"/") || decoded.ends_with(b"/.") || decoded.ends_with(b"/..");
    for seg in decoded.split(|&c| c == b'/') {
        // `..;x` / `.;x`: Tomcat and Spring strip path parameters and then treat the segment
        // as a dot segment, so `/public/..;/admin` would reach `/admin` behind a `/public`
        // route. Refused.
        if (seg.starts_with(b"..;") || seg.starts_with(b".;")) && seg.len() > 1 {
            return Err(PathError::Forbidden);
        }
        match seg {
            b"" | b"." => {}
            b".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut result = Vec::with_capacity(decoded.len());
    for seg in &out {
        result.push(b'/');
        result.extend_from_slice(seg);
    }
    if result.is_empty() || (trailing_slash && !out.is_empty()) {
        result.push(b'/');
    }
    // Bytes from 0x80 came from the str or from decoded escapes, which may not be UTF-8.
    String::from_utf8(result).map_err(|_| PathError::NotUtf8)
}

/// True when `path` might change under [`normalise`].
pub fn needs_normalising(path: &str) -> bool {
    let b = path.as_bytes();
    if b.first() != Some(&b'/') {
        return true;
    }
    // One pass over the bytes (this runs on every request); the dot-segment checks only for
    // a path that has a dot.
    let mut prev = 0u8;
    let mut dot = false;
    for &c in b {
        match c {
            b'%' | b'\\' | 0..=0x1f | 0x7f => return true,
            b'/' if prev == b'/' => return true,
            b';' if prev == b'.' => return true,
            b'.' => dot = true,
            _ => {}
        }
        prev = c;
    }
    dot && (path.contains("/./")
        || path.contains("/../")
        || path.ends_with("/.")
        || path.ends_with("/.."))
}

/// The rule [`needs_normalising`] implements, written out plainly (tests compare the two).
#[cfg(test)]
fn needs_normalising_plain(path: &str) -> bool {
    let b = path.as_bytes();
    b.first() != Some(&b'/')
        || b.contains(&b'%')
        || path.contains("//")
        || path.contains("/./")
        || path.contains("/../")
        || path.ends_with("/.")
        || path.ends_with("/..")
        || b.iter().any(|&c| c < 0x20 || c == 0x7f || c == b'\\')
        || path.contains(".;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(p: &str) -> String {
        normalise(p).unwrap()
    }

    #[test]
    fn the_one_pass_check_equals_the_plain_rule() {
        // Every path of up to four bytes from an alphabet of the bytes that matter.
        let alphabet = [b'/', b'.', b';', b'%', b'\\', b'a', 0x01, 0x7f];
        let mut paths = vec![Vec::new()];
        for _ in 0..4 {
            let longer: Vec<Vec<u8>> = paths
                .iter()
                .flat_map(|p| {
                    alphabet.iter().map(move |&c| {
                        let mut q = p.clone();
                        q.push(c);
                        q
                    })
                })
                .collect();
            paths.extend(longer);
        }
        for p in paths {
            let p = String::from_utf8(p).expect("ascii");
            assert_eq!(needs_normalising(&p), needs_normalising_plain(&p), "{p:?}");
        }
        for p in [
            "/", "/a/b.c", "/a/./b", "/a/../b", "/a/.", "/a/..", "/.;/x", "/a//b", "/v1.2/x",
        ] {
            assert_eq!(needs_normalising(p), needs_normalising_plain(p), "{p:?}");
        }
    }

    #[test]
    fn kong_cases() {
        assert_eq!(n("/%6B%6f%6e%67"), "/kong");
        assert_eq!(n("/a/%2f/b"), "/a/%2F/b");
        assert_eq!(n("/a/b/c/./../../g"), "/a/g");
        assert_eq!(n("/%2E"), "/");
        assert_eq!(n("/"), "/");
        assert_eq!(n("/a/"), "/a/");
        // Kong's "others" are decoded too: non-ASCII text, space, braces, quotes.
        assert_eq!(n("/caf%C3%A9/x"), "/café/x");
        assert_eq!(n("/café/x"), "/café/x");
        assert_eq!(n("/a%20b/%7B%7d%22"), "/a b/{}\"");
        // Reserved characters stay escaped (upper-cased); so do, unlike Kong, control
        // characters, backslashes and escapes that are not UTF-8.
        assert_eq!(n("/a%3fb%2a%25"), "/a%3Fb%2A%25");
        assert_eq!(n("/a%5cb/%01/%7F"), "/a%5Cb/%01/%7F");
        assert_eq!(n("/%ff/caf%C3%A9"), "/%FF/caf%C3%A9");
        assert_eq!(n("/%C3"), "/%C3");
    }

    /// Kong's router spec it("returns uri_captures normalized, fix #7913"): the path is
    /// normalised before routing, so regex captures see decoded text.
    #[test]
    fn kong_spec_uri_captures_normalized() {
        assert_eq!(n("/users/%6aohn%20doe/profile"), "/users/john doe/profile");
    }

    #[test]
    fn bypass_attempts() {
        assert_eq!(n("/public/../admin"), "/admin");
        assert_eq!(n("/public/%2e%2e/admin"), "/admin");
        assert_eq!(n("/public/.%2e/admin"), "/admin");
        assert_eq!(n("/public%2f..%2fadmin"), "/public%2F..%2Fadmin");
        assert_eq!(n("/%61dmin"), "/admin");
        assert_eq!(n("//admin"), "/admin");
        assert_eq!(n("///internal"), "/internal");
        assert_eq!(n("/./admin"), "/admin");
        assert_eq!(n("/admin/."), "/admin/");
        assert_eq!(n("/%252e%252e/admin"), "/%252e%252e/admin");
        assert_eq!(n("/../../etc"), "/etc");
        assert_eq!(normalise("/admin%00.json"), Err(PathError::Forbidden));
        assert_eq!(normalise("/a%zz"), Err(PathError::BadEscape));
        assert_eq!(normalise("/a%4"), Err(PathError::BadEscape));
        assert_eq!(normalise("/public/..;/admin"), Err(PathError::Forbidden));
        assert_eq!(
            normalise("/public/..;jsessionid=1/admin"),
            Err(PathError::Forbidden)
        );
        assert_eq!(normalise("/public/.;/admin"), Err(PathError::Forbidden));
        assert_eq!(normalise("/public\\..\\admin"), Err(PathError::Forbidden));
        assert!(needs_normalising("/public/..;/admin"));
        assert!(needs_normalising("/a\\b"));
        assert_eq!(n("/a;b/c"), "/a;b/c");
    }

    #[test]
    fn fast_path_detector_is_conservative() {
        for p in ["/a", "/a/b", "/a-b_c~d.e"] {
            assert!(!needs_normalising(p));
            assert_eq!(n(p), p);
        }
        for p in ["/a//b", "/a/./b", "/a/../b", "/%41", "/a/.."] {
            assert!(needs_normalising(p));
        }
    }

    proptest::proptest! {
        #[test]
        fn idempotent_and_never_panics(p in "/[a-z./%0-9A-F]{0,24}") {
            if let Ok(once) = normalise(&p) {
                let twice = normalise(&once).unwrap();
                proptest::prop_assert_eq!(&once, &twice);
                proptest::prop_assert!(!once.contains("//"));
                proptest::prop_assert!(!needs_normalising(&once) || once.contains('%'));
            }
        }
    }
}
