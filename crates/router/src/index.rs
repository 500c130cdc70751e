//! The compiled index: candidates ranked by priority, a first level keyed by
//! host, and per host bucket a prefix trie, a regex list and a pathless list.

use std::collections::HashMap;

use regex::Regex;

use crate::criteria::{Criteria, HOSTS};
use crate::priority::{PathSpec, Priority};
use crate::tables::HostTables;
use crate::trie::{TrieArena, TrieBuilder};
use crate::{Match, RequestInfo, RouteSpec, RouterError};

/// Rank used as "nothing found yet"; no real candidate has it.
const NONE: u32 = u32::MAX;
/// An index entry is a `u32`: the candidate's rank in the low bits and, from
/// bit `NEED_SHIFT` up, the criteria still to check for it in its bucket
/// (`Criteria::checks`, minus `HOSTS` when the bucket key proves the host).
/// Prefix and pathless entries with nothing left to check match without
/// touching the candidate table.
const NEED_SHIFT: u32 = 28;
/// Entry bits holding the candidate's rank.
const RANK: u32 = (1 << NEED_SHIFT) - 1;
/// Bound on arena sizes (trie nodes and bytes, entries), so `u32` offsets never wrap.
const MAX_ARENA: usize = (u32::MAX >> 1) as usize;

/// How a candidate's path matches once the index has yielded it.
#[derive(Debug, Clone, Copy)]
enum PathMatcher {
    /// Pathless route: any path.
    Any,
    /// Prefix of this many bytes (already verified by the trie walk).
    Prefix(u32),
    /// Index into `Index::regexes`.
    Regex(u32),
}

/// One (route, path) pair. Its position in `Index::candidates` is its rank:
/// lower rank = higher priority (ties already broken by declaration order).
#[derive(Debug)]
struct Candidate {
    route: u32,
    path: PathMatcher,
}

/// A range of `Index::lists`.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: u32,
    len: u32,
}

/// Entries filed under one host key, each list in ascending rank order.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bucket {
    trie: Option<u32>,
    regex: Span,
    pathless: Span,
}

#[derive(Debug, Default)]
struct BucketBuilder {
    trie: TrieBuilder,
    regex: Vec<u32>,
    pathless: Vec<u32>,
}

/// See the crate docs for the matching semantics.
#[derive(Debug)]
pub(crate) struct Index {
    routes: Vec<Criteria>,
    candidates: Vec<Candidate>,
    regexes: Vec<Regex>,
    hosts: HostTables<Bucket>,
    lists: Vec<u32>,
    tries: TrieArena,
}

impl Index {
    pub(crate) fn build(specs: &[RouteSpec]) -> Result<Self, RouterError> {
        let routes = specs
            .iter()
            .enumerate()
            .map(|(id, spec)| Criteria::compile(id, spec))
            .collect::<Result<Vec<_>, _>>()?;
        let mut hosts = HostTables::default();
        let route_buckets: Vec<Vec<(u32, bool)>> =
            routes.iter().map(|r| hosts.buckets_for(&r.hosts)).collect();

        // Split routes per path, compiling (deduplicated) regexes.
        let mut regexes = Vec::new();
        let mut regex_ids: HashMap<&str, u32> = HashMap::new();
        let mut raw: Vec<(Priority, usize, PathMatcher, &str)> = Vec::new();
        let mut size = 0usize; // upper bound on arena sizes
        for (id, spec) in specs.iter().enumerate() {
            let copies = route_buckets[id].len();
            if spec.paths.is_empty() {
                raw.push((Priority::new(spec, None), id, PathMatcher::Any, ""));
                size = size.saturating_add(copies);
            }
            for path in &spec.paths {
                let parsed = PathSpec::parse(path);
                let matcher = match parsed {
                    PathSpec::Prefix(p) => PathMatcher::Prefix(p.len().min(MAX_ARENA) as u32),
                    PathSpec::Regex(re) => match regex_ids.get(re) {
                        Some(&i) => PathMatcher::Regex(i),
                        None => {
                            let i = regexes.len().min(MAX_ARENA) as u32;
                            regexes.push(compile_path_regex(id, path, re)?);
                            regex_ids.insert(re, i);
                            PathMatcher::Regex(i)
                        }
                    },
                };
                raw.push((Priority::new(spec, Some(parsed)), id, matcher, path));
                size = size.saturating_add(copies.saturating_mul(path.len().saturating_add(8)));
            }
        }
        if size > MAX_ARENA || raw.len() >= RANK as usize {
            let max = RANK as usize - 1;
            return Err(RouterError::TooLarge {
                size: size.max(raw.len()),
                max,
            });
        }
        // Stable sort: equal priorities keep declaration (route, then path) order.
        raw.sort_by_key(|c| std::cmp::Reverse(c.0));

        let mut builders: Vec<BucketBuilder> = (0..hosts.bucket_count())
            .map(|_| BucketBuilder::default())
            .collect();
        let mut candidates = Vec::with_capacity(raw.len());
        for (rank, (_, route, path, text)) in raw.into_iter().enumerate() {
            let checks = routes[route].checks();
            for &(b, host_proven) in &route_buckets[route] {
                let need = if host_proven { checks & !HOSTS } else { checks };
                let entry = rank as u32 | u32::from(need) << NEED_SHIFT;
                let bucket = &mut builders[b as usize];
                match path {
                    PathMatcher::Any => bucket.pathless.push(entry),
                    PathMatcher::Regex(_) => bucket.regex.push(entry),
                    PathMatcher::Prefix(_) => bucket.trie.insert(text.as_bytes(), entry),
                }
            }
            candidates.push(Candidate {
                route: route as u32,
                path,
            });
        }

        let (mut lists, mut tries) = (Vec::new(), TrieArena::default());
        let mut span = |list: Vec<u32>| {
            let start = lists.len() as u32;
            lists.extend_from_slice(&list);
            Span {
                start,
                len: list.len() as u32,
            }
        };
        let buckets: Vec<Bucket> = builders
            .into_iter()
            .map(|b| Bucket {
                trie: tries.add(b.trie),
                regex: span(b.regex),
                pathless: span(b.pathless),
            })
            .collect();
        let hosts = hosts.map(|b| buckets[b as usize]);
        Ok(Self {
            routes,
            candidates,
            regexes,
            hosts,
            lists,
            tries,
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.routes.len()
    }

    /// Finds the best candidate; allocates only for the returned `Match`.
    pub(crate) fn find(&self, req: &RequestInfo<'_>) -> Option<Match> {
        let mut best = NONE;
        self.hosts
            .for_each_bucket(req.host, |b| self.scan(b, req, &mut best));
        (best != NONE).then(|| self.make_match(best, req.path))
    }

    /// Lowers `best` to the best matching candidate in `bucket`, if better.
    #[inline]
    fn scan(&self, bucket: &Bucket, req: &RequestInfo<'_>, best: &mut u32) {
        for (span, regex) in [(bucket.pathless, false), (bucket.regex, true)] {
            if span.len > 0 {
                let list = &self.lists[span.start as usize..][..span.len as usize];
                if let Some(r) = self.first_match(list, regex, *best, req) {
                    *best = r;
                }
            }
        }
        if let Some(root) = bucket.trie {
            self.tries
                .for_each_prefix_of(root, req.path.as_bytes(), |entries| {
                    if let Some(r) = self.first_match(entries, false, *best, req) {
                        *best = r;
                    }
                });
        }
    }

    /// Rank of the first (= best) entry in `entries` that beats `best` and
    /// matches; `regex` says the entries are regex candidates.
    #[inline]
    fn first_match(
        &self,
        entries: &[u32],
        regex: bool,
        best: u32,
        req: &RequestInfo<'_>,
    ) -> Option<u32> {
        for &entry in entries {
            let rank = entry & RANK;
            if rank >= best {
                break;
            }
            let need = (entry >> NEED_SHIFT) as u8;
            if need == 0 && !regex {
                return Some(rank);
            }
            let cand = &self.candidates[rank as usize];
            if need != 0 && !self.routes[cand.route as usize].matches(req, need) {
                continue;
            }
            if let PathMatcher::Regex(i) = cand.path {
                if !self.regexes[i as usize].is_match(req.path) {
                    continue;
                }
            }
            return Some(rank);
        }
        None
    }

    fn make_match(&self, rank: u32, path: &str) -> Match {
        let cand = &self.candidates[rank as usize];
        let mut m = Match {
            route: cand.route as usize,
            matched_path: None,
            captures: Vec::new(),
        };
        match cand.path {
            PathMatcher::Any => {}
            PathMatcher::Prefix(len) => m.matched_path = Some(0..len as usize),
            PathMatcher::Regex(i) => {
                let re = &self.regexes[i as usize];
                if let Some(caps) = re.captures(path) {
                    m.matched_path = caps.get(0).map(|g| g.range());
                    m.captures = re
                        .capture_names()
                        .enumerate()
                        .skip(1)
                        .filter_map(|(g, name)| {
                            let v = caps.get(g)?;
                            Some((name.map(str::to_owned), v.as_str().to_owned()))
                        })
                        .collect();
                }
            }
        }
        m
    }
}

/// Compiles `~re` as `^(?:re)`, so every alternative is anchored at the start.
fn compile_path_regex(route: usize, path: &str, re: &str) -> Result<Regex, RouterError> {
    let err = |e: regex::Error| RouterError::InvalidRegex {
        route,
        path: path.to_owned(),
        message: e.to_string(),
    };
    // A stray ')' could close our wrapper group and still compile: validate alone first.
    if re.contains(')') {
        Regex::new(re).map_err(err)?;
    }
    Regex::new(&format!("^(?:{re})")).map_err(err)
}
