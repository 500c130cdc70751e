//! Header-map helpers shared by the plugins and the proxy.

use http::{HeaderMap, HeaderName};

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
