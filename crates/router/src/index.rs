//! The compiled index: candidates ranked by priority, a first level keyed by
//! host, and per host bucket a prefix trie, a regex list and a pathless list.

use std::collections::HashMap;

use regex::Regex;

use crate::criteria::Criteria;
use crate::host::HostName;
use crate::priority::{PathSpec, Priority};
use crate::trie::PrefixTrie;
use crate::{Match, RequestInfo, RouteSpec, RouterError};

/// How a candidate's path matches once the index has yielded it.
#[derive(Debug, Clone, Copy)]
enum PathMatcher {
    /// Pathless route: any path.
    Any,
    /// Prefix of this many bytes (already verified by the trie walk).
    Prefix(usize),
    /// Index into `Index::regexes`.
    Regex(usize),
}

/// One (route, path) pair. Its position in `Index::candidates` is its rank:
/// lower rank = higher priority (ties already broken by declaration order).
#[derive(Debug)]
struct Candidate {
    route: usize,
    path: PathMatcher,
}

/// Candidates sharing one host key. All rank lists are ascending (best first).
#[derive(Debug, Default)]
struct Bucket {
    trie: PrefixTrie,
    regex: Vec<u32>,
    pathless: Vec<u32>,
}

/// Rank used as "nothing found yet"; no real candidate has it.
const NONE: u32 = u32::MAX;

/// See the crate docs for the matching semantics.
#[derive(Debug)]
pub(crate) struct Index {
    routes: Vec<Criteria>,
    candidates: Vec<Candidate>,
    regexes: Vec<Regex>,
    buckets: Vec<Bucket>,
    exact: HashMap<Box<str>, u32>,
    /// Keys are `.example.com` for `*.example.com`.
    suffix: HashMap<Box<str>, u32>,
    /// Keys are `example.` for `example.*`.
    prefix: HashMap<Box<str>, u32>,
    /// Bucket of routes without hosts.
    any_host: Option<u32>,
}

impl Index {
    pub(crate) fn build(specs: &[RouteSpec]) -> Result<Self, RouterError> {
        let routes = specs
            .iter()
            .enumerate()
            .map(|(id, spec)| Criteria::compile(id, spec))
            .collect::<Result<Vec<_>, _>>()?;

        // Split routes per path, compiling (deduplicated) regexes.
        let mut regexes = Vec::new();
        let mut regex_ids: HashMap<&str, usize> = HashMap::new();
        let mut raw: Vec<(Priority, Candidate, &str)> = Vec::new();
        for (id, spec) in specs.iter().enumerate() {
            if spec.paths.is_empty() {
                let cand = Candidate { route: id, path: PathMatcher::Any };
                raw.push((Priority::new(spec, None), cand, ""));
            }
            for path in &spec.paths {
                let parsed = PathSpec::parse(path);
                let matcher = match parsed {
                    PathSpec::Prefix(p) => PathMatcher::Prefix(p.len()),
                    PathSpec::Regex(re) => match regex_ids.get(re) {
                        Some(&i) => PathMatcher::Regex(i),
                        None => {
                            regexes.push(compile_path_regex(id, path, re)?);
                            regex_ids.insert(re, regexes.len() - 1);
                            PathMatcher::Regex(regexes.len() - 1)
                        }
                    },
                };
                let cand = Candidate { route: id, path: matcher };
                raw.push((Priority::new(spec, Some(parsed)), cand, path.as_str()));
            }
        }
        if raw.len() >= NONE as usize {
            return Err(RouterError::TooManyCandidates {
                count: raw.len(),
                max: NONE as usize - 1,
            });
        }
        // Stable sort: equal priorities keep declaration (route, then path) order.
        raw.sort_by(|a, b| b.0.cmp(&a.0));

        let mut index = Self {
            routes,
            candidates: Vec::with_capacity(raw.len()),
            regexes,
            buckets: Vec::new(),
            exact: HashMap::new(),
            suffix: HashMap::new(),
            prefix: HashMap::new(),
            any_host: None,
        };
        let route_buckets: Vec<Vec<u32>> = (0..index.routes.len())
            .map(|id| index.buckets_for_route(id))
            .collect();
        for (rank, (_, cand, path)) in raw.into_iter().enumerate() {
            let rank = rank as u32; // bounded by the check above
            for &b in &route_buckets[cand.route] {
                let bucket = &mut index.buckets[b as usize];
                match cand.path {
                    PathMatcher::Any => bucket.pathless.push(rank),
                    PathMatcher::Regex(_) => bucket.regex.push(rank),
                    PathMatcher::Prefix(_) => bucket.trie.insert(path.as_bytes(), rank),
                }
            }
            index.candidates.push(cand);
        }
        Ok(index)
    }

    /// The buckets route `id` is filed under (created on demand), deduplicated.
    fn buckets_for_route(&mut self, id: usize) -> Vec<u32> {
        let mut keys: Vec<HostName> = self.routes[id].hosts.iter().map(|h| h.name.clone()).collect();
        keys.sort_unstable();
        keys.dedup();
        if keys.is_empty() {
            let any = match self.any_host {
                Some(b) => b,
                None => self.new_bucket(),
            };
            self.any_host = Some(any);
            return vec![any];
        }
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let (map, name) = match key {
                HostName::Exact(n) => (&mut self.exact, n),
                HostName::Suffix(n) => (&mut self.suffix, n),
                HostName::Prefix(n) => (&mut self.prefix, n),
            };
            let next = self.buckets.len() as u32;
            let b = *map.entry(name).or_insert(next);
            if b == next {
                self.buckets.push(Bucket::default());
            }
            out.push(b);
        }
        out
    }

    fn new_bucket(&mut self) -> u32 {
        self.buckets.push(Bucket::default());
        (self.buckets.len() - 1) as u32
    }

    pub(crate) fn len(&self) -> usize {
        self.routes.len()
    }

    /// Finds the best candidate; allocates only for the returned `Match`.
    pub(crate) fn find(&self, req: &RequestInfo<'_>) -> Option<Match> {
        let mut best = NONE;
        let host = req.host;
        if !self.exact.is_empty() {
            if let Some(&b) = self.exact.get(host) {
                self.scan(b, req, &mut best);
            }
        }
        if !self.suffix.is_empty() || !self.prefix.is_empty() {
            for (i, _) in host.bytes().enumerate().filter(|&(_, c)| c == b'.') {
                if let Some(&b) = self.suffix.get(&host[i..]) {
                    self.scan(b, req, &mut best);
                }
                if let Some(&b) = self.prefix.get(&host[..=i]) {
                    self.scan(b, req, &mut best);
                }
            }
        }
        if let Some(b) = self.any_host {
            self.scan(b, req, &mut best);
        }
        (best != NONE).then(|| self.make_match(best, req.path))
    }

    /// Lowers `best` to the best matching candidate in bucket `b`, if better.
    fn scan(&self, b: u32, req: &RequestInfo<'_>, best: &mut u32) {
        let bucket = &self.buckets[b as usize];
        if let Some(r) = self.first_match(&bucket.pathless, *best, req) {
            *best = r;
        }
        if let Some(r) = self.first_match(&bucket.regex, *best, req) {
            *best = r;
        }
        bucket.trie.for_each_prefix_of(req.path.as_bytes(), |ranks| {
            if let Some(r) = self.first_match(ranks, *best, req) {
                *best = r;
            }
        });
    }

    /// First (= best) rank in the ascending list `ranks` that beats `best` and matches.
    #[inline]
    fn first_match(&self, ranks: &[u32], best: u32, req: &RequestInfo<'_>) -> Option<u32> {
        ranks.iter().take_while(|&&r| r < best).copied().find(|&r| {
            let cand = &self.candidates[r as usize];
            self.routes[cand.route].matches(req)
                && match cand.path {
                    PathMatcher::Regex(i) => self.regexes[i].is_match(req.path),
                    PathMatcher::Any | PathMatcher::Prefix(_) => true,
                }
        })
    }

    fn make_match(&self, rank: u32, path: &str) -> Match {
        let cand = &self.candidates[rank as usize];
        let mut m = Match {
            route: cand.route,
            matched_path: None,
            captures: Vec::new(),
        };
        match cand.path {
            PathMatcher::Any => {}
            PathMatcher::Prefix(len) => m.matched_path = Some(0..len),
            PathMatcher::Regex(i) => {
                let re = &self.regexes[i];
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
