//! Header-map helpers shared by the plugins and the proxy.

use http::{HeaderMap, HeaderName, HeaderValue};

/// Maps with at most this many names are searched by a scan of their entries.
const SCAN_LEN: usize = 8;

/// The first value of `name`, as `HeaderMap::get`: by comparing the names of a small map
/// (most requests carry a handful of headers) rather than hashing `name` and probing.
pub fn first<'a>(h: &'a HeaderMap, name: &HeaderName) -> Option<&'a HeaderValue> {
    if h.keys_len() <= SCAN_LEN {
        h.iter().find(|(k, _)| *k == name).map(|(_, v)| v)
    } else {
        h.get(name)
    }
}

/// Every value of `name` in order, as `HeaderMap::get_all`, scanning a small map (see
/// [`first`]).
pub fn all<'a>(h: &'a HeaderMap, name: &'a HeaderName) -> impl Iterator<Item = &'a HeaderValue> {
    let scan = h.keys_len() <= SCAN_LEN;
    let (scanned, hashed) = if scan {
        (
            Some(h.iter().filter(move |(k, _)| *k == name).map(|(_, v)| v)),
            None,
        )
    } else {
        (None, Some(h.get_all(name).iter()))
    };
    scanned
        .into_iter()
        .flatten()
        .chain(hashed.into_iter().flatten())
}

/// Removes every header whose (lower-case) name `listed` accepts. The map is scanned once and
/// nothing is hashed or allocated when no listed header is present, which is the usual case
/// (hop-by-hop, forged identity and fingerprint headers are rare), instead of one hash lookup
/// per listed name.
pub fn remove_where(h: &mut HeaderMap, listed: impl Fn(&str) -> bool) {
    if !h.keys().any(|k| listed(k.as_str())) {
        return;
    }
    let found: Vec<HeaderName> = h.keys().filter(|k| listed(k.as_str())).cloned().collect();
    for name in found {
        h.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_find_what_the_hash_lookups_find() {
        // Both sides of the scan threshold, names present once, twice and not at all.
        for extra in [0, SCAN_LEN + 4] {
            let mut h = HeaderMap::new();
            h.append("x-a", "1".parse().unwrap());
            h.append(http::header::HOST, "h".parse().unwrap());
            for i in 0..extra {
                h.append(
                    HeaderName::from_bytes(format!("x-pad-{i}").as_bytes()).unwrap(),
                    "p".parse().unwrap(),
                );
            }
            h.append("x-a", "2".parse().unwrap());
            for name in [
                HeaderName::from_static("x-a"),
                http::header::HOST,
                http::header::CONNECTION,
                HeaderName::from_static("x-absent"),
            ] {
                assert_eq!(first(&h, &name), h.get(&name), "{name} with {extra}");
                let scanned: Vec<_> = all(&h, &name).collect();
                let hashed: Vec<_> = h.get_all(&name).iter().collect();
                assert_eq!(scanned, hashed, "{name} with {extra}");
            }
        }
    }

    #[test]
    fn removes_every_value_of_listed_names_only() {
        let mut h = HeaderMap::new();
        h.append("te", "trailers".parse().unwrap());
        h.append("x-a", "1".parse().unwrap());
        h.append("x-a", "2".parse().unwrap());
        h.append("keep-alive", "timeout=5".parse().unwrap());
        h.append("host", "x".parse().unwrap());
        remove_where(&mut h, |n| matches!(n, "x-a" | "keep-alive" | "absent"));
        assert_eq!(h.len(), 2);
        assert!(h.contains_key("te") && h.contains_key("host"));
        remove_where(&mut h, |_| false);
        assert_eq!(h.len(), 2);
    }
}
