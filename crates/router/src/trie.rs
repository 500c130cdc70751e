//! Radix trie over prefix paths. Each node holds the candidates (ranks)
//! whose prefix ends exactly there; a walk along the request path visits every
//! node whose prefix is a prefix of the path.

/// A node: the edge label leading to it, children keyed by their label's
/// first byte (sorted), and the ranks of candidates whose prefix ends here
/// (ascending, i.e. best first).
#[derive(Debug, Default)]
struct Node {
    label: Box<[u8]>,
    children: Vec<(u8, u32)>,
    ranks: Vec<u32>,
}

/// Radix trie of prefix paths; node 0 is the root (empty prefix).
#[derive(Debug)]
pub(crate) struct PrefixTrie {
    nodes: Vec<Node>,
}

impl Default for PrefixTrie {
    fn default() -> Self {
        Self {
            nodes: vec![Node::default()],
        }
    }
}

impl PrefixTrie {
    /// Adds candidate `rank` under `prefix`. Ranks must be inserted in
    /// ascending order so every node's list stays sorted.
    pub(crate) fn insert(&mut self, prefix: &[u8], rank: u32) {
        let mut node = 0usize;
        let mut rest = prefix;
        loop {
            let Some(&first) = rest.first() else {
                self.nodes[node].ranks.push(rank);
                return;
            };
            let children = &self.nodes[node].children;
            let slot = children.binary_search_by_key(&first, |&(b, _)| b);
            let (pos, child) = match slot {
                Err(pos) => {
                    let new = self.push(Node {
                        label: rest.into(),
                        children: Vec::new(),
                        ranks: vec![rank],
                    });
                    self.nodes[node].children.insert(pos, (first, new));
                    return;
                }
                Ok(pos) => (pos, children[pos].1 as usize),
            };
            let label = &self.nodes[child].label;
            let common = label.iter().zip(rest).take_while(|(a, b)| a == b).count();
            if common == label.len() {
                node = child;
                rest = &rest[common..];
                continue;
            }
            // Split the edge: parent -> mid (label[..common]) -> child (label[common..]).
            let head: Box<[u8]> = label[..common].into();
            let tail: Box<[u8]> = label[common..].into();
            let tail_first = tail[0];
            self.nodes[child].label = tail;
            let mid = self.push(Node {
                label: head,
                children: vec![(tail_first, child as u32)],
                ranks: Vec::new(),
            });
            self.nodes[node].children[pos].1 = mid;
            node = mid as usize;
            rest = &rest[common..];
        }
    }

    fn push(&mut self, node: Node) -> u32 {
        self.nodes.push(node);
        // The trie never holds more nodes than candidates (bounded by u32) times two.
        (self.nodes.len() - 1) as u32
    }

    /// Calls `visit` with the rank list of every node whose prefix is a prefix
    /// of `path`, shortest prefix first. Does not allocate.
    #[inline]
    pub(crate) fn for_each_prefix_of(&self, path: &[u8], mut visit: impl FnMut(&[u32])) {
        let mut node = &self.nodes[0];
        let mut pos = 0;
        loop {
            if !node.ranks.is_empty() {
                visit(&node.ranks);
            }
            let Some(&b) = path.get(pos) else { return };
            let Ok(i) = node.children.binary_search_by_key(&b, |&(c, _)| c) else {
                return;
            };
            let child = &self.nodes[node.children[i].1 as usize];
            if !path[pos..].starts_with(&child.label) {
                return;
            }
            pos += child.label.len();
            node = child;
        }
    }
}

#[cfg(test)]
mod unit {
    use super::PrefixTrie;

    fn collect(t: &PrefixTrie, path: &str) -> Vec<u32> {
        let mut out = Vec::new();
        t.for_each_prefix_of(path.as_bytes(), |r| out.extend_from_slice(r));
        out.sort_unstable();
        out
    }

    #[test]
    fn splits_and_walks() {
        let mut t = PrefixTrie::default();
        for (rank, p) in ["/foo/bar", "/foo", "/fob", "", "/foo/baz", "/foo"]
            .iter()
            .enumerate()
        {
            t.insert(p.as_bytes(), rank as u32);
        }
        assert_eq!(collect(&t, "/foo/bar/x"), vec![0, 1, 3, 5]);
        assert_eq!(collect(&t, "/foobar"), vec![1, 3, 5]);
        assert_eq!(collect(&t, "/fob"), vec![2, 3]);
        assert_eq!(collect(&t, "/fo"), vec![3]);
        assert_eq!(collect(&t, "/foo/baz"), vec![1, 3, 4, 5]);
        assert_eq!(collect(&t, ""), vec![3]);
    }
}
