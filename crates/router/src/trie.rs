//! Radix tries over prefix paths. A [`TrieBuilder`] is filled per host bucket
//! and then frozen into the shared, cache-friendly [`TrieArena`]; a walk along
//! the request path visits every node whose prefix is a prefix of the path.

/// Mutable radix trie; node 0 is the root (empty prefix) once anything is inserted.
#[derive(Debug, Default)]
pub(crate) struct TrieBuilder {
    nodes: Vec<BuildNode>,
}

/// Edge label leading to the node, children keyed by their label's first
/// byte (sorted), and the entries whose prefix ends exactly here.
#[derive(Debug, Default)]
struct BuildNode {
    label: Vec<u8>,
    children: Vec<(u8, usize)>,
    entries: Vec<u32>,
}

impl TrieBuilder {
    /// Adds `entry` under `prefix`. Entries must be inserted in rank order so
    /// every node's list stays sorted best first.
    pub(crate) fn insert(&mut self, prefix: &[u8], entry: u32) {
        if self.nodes.is_empty() {
            self.nodes.push(BuildNode::default());
        }
        let mut node = 0usize;
        let mut rest = prefix;
        loop {
            let Some(&first) = rest.first() else {
                self.nodes[node].entries.push(entry);
                return;
            };
            let children = &self.nodes[node].children;
            let (pos, child) = match children.binary_search_by_key(&first, |&(b, _)| b) {
                Ok(pos) => (pos, children[pos].1),
                Err(pos) => {
                    let new = self.push(rest.to_vec(), Vec::new(), vec![entry]);
                    self.nodes[node].children.insert(pos, (first, new));
                    return;
                }
            };
            let label = &self.nodes[child].label;
            let common = label.iter().zip(rest).take_while(|(a, b)| a == b).count();
            if common < label.len() {
                // Split the edge: node -> mid (label[..common]) -> child (label[common..]).
                let tail = label[common..].to_vec();
                let head = label[..common].to_vec();
                let tail_first = tail[0];
                self.nodes[child].label = tail;
                let mid = self.push(head, vec![(tail_first, child)], Vec::new());
                self.nodes[node].children[pos].1 = mid;
                node = mid;
            } else {
                node = child;
            }
            rest = &rest[common..];
        }
    }

    fn push(&mut self, label: Vec<u8>, children: Vec<(u8, usize)>, entries: Vec<u32>) -> usize {
        self.nodes.push(BuildNode {
            label,
            children,
            entries,
        });
        self.nodes.len() - 1
    }
}

/// Frozen node. `bytes` indexes `TrieArena::bytes`, where the label is
/// followed by the children's first bytes; children are the consecutive
/// nodes `first_child..first_child + child_count`. A single entry is stored
/// inline in `entries`, otherwise `entries` indexes `TrieArena::entries`.
#[derive(Debug, Clone, Copy)]
struct Node {
    bytes: u32,
    label_len: u32,
    child_count: u32,
    first_child: u32,
    entries: u32,
    entry_count: u32,
}

/// All frozen tries, laid out breadth-first so siblings share cache lines.
/// Callers keep total nodes, bytes and entries below `u32::MAX`.
#[derive(Debug, Default)]
pub(crate) struct TrieArena {
    nodes: Vec<Node>,
    bytes: Vec<u8>,
    entries: Vec<u32>,
}

impl TrieArena {
    /// Freezes `trie` into the arena; returns its root id, or None if empty.
    pub(crate) fn add(&mut self, trie: TrieBuilder) -> Option<u32> {
        if trie.nodes.is_empty() {
            return None;
        }
        let mut order = vec![0usize];
        let mut i = 0;
        while let Some(&n) = order.get(i) {
            order.extend(trie.nodes[n].children.iter().map(|&(_, c)| c));
            i += 1;
        }
        let base = self.nodes.len();
        let mut next_child = base + 1;
        for &n in &order {
            let b = &trie.nodes[n];
            let bytes = self.bytes.len() as u32;
            self.bytes.extend_from_slice(&b.label);
            self.bytes.extend(b.children.iter().map(|&(c, _)| c));
            let entries = match b.entries.as_slice() {
                [one] => *one,
                many => {
                    self.entries.extend_from_slice(many);
                    (self.entries.len() - many.len()) as u32
                }
            };
            self.nodes.push(Node {
                bytes,
                label_len: b.label.len() as u32,
                child_count: b.children.len() as u32,
                first_child: next_child as u32,
                entries,
                entry_count: b.entries.len() as u32,
            });
            next_child += b.children.len();
        }
        Some(base as u32)
    }

    /// Calls `visit` with the entry list of every node under `root` whose
    /// prefix is a prefix of `path`, shortest prefix first. Does not allocate.
    #[inline]
    pub(crate) fn for_each_prefix_of(&self, root: u32, path: &[u8], mut visit: impl FnMut(&[u32])) {
        let mut node = &self.nodes[root as usize];
        let mut pos = 0usize;
        loop {
            match node.entry_count {
                0 => {}
                1 => visit(std::slice::from_ref(&node.entries)),
                n => visit(&self.entries[node.entries as usize..][..n as usize]),
            }
            let Some(&b) = path.get(pos) else { return };
            let kids_at = (node.bytes + node.label_len) as usize;
            let kids = &self.bytes[kids_at..kids_at + node.child_count as usize];
            let Ok(i) = kids.binary_search(&b) else {
                return;
            };
            let child = &self.nodes[node.first_child as usize + i];
            let label = &self.bytes[child.bytes as usize..][..child.label_len as usize];
            if !path[pos..].starts_with(label) {
                return;
            }
            pos += label.len();
            node = child;
        }
    }
}

#[cfg(test)]
mod unit {
    use super::{TrieArena, TrieBuilder};

    fn collect(t: &TrieArena, root: u32, path: &str) -> Vec<u32> {
        let mut out = Vec::new();
        t.for_each_prefix_of(root, path.as_bytes(), |r| out.extend_from_slice(r));
        out.sort_unstable();
        out
    }

    #[test]
    fn splits_and_walks() {
        let mut arena = TrieArena::default();
        let mut other = TrieBuilder::default();
        other.insert(b"/zz", 9);
        let other_root = arena.add(other).unwrap();
        assert_eq!(arena.add(TrieBuilder::default()), None);
        let mut t = TrieBuilder::default();
        for (rank, p) in ["/foo/bar", "/foo", "/fob", "", "/foo/baz", "/foo"]
            .iter()
            .enumerate()
        {
            t.insert(p.as_bytes(), rank as u32);
        }
        let root = arena.add(t).unwrap();
        assert_eq!(collect(&arena, root, "/foo/bar/x"), vec![0, 1, 3, 5]);
        assert_eq!(collect(&arena, root, "/foobar"), vec![1, 3, 5]);
        assert_eq!(collect(&arena, root, "/fob"), vec![2, 3]);
        assert_eq!(collect(&arena, root, "/fo"), vec![3]);
        assert_eq!(collect(&arena, root, "/foo/baz"), vec![1, 3, 4, 5]);
        assert_eq!(collect(&arena, root, ""), vec![3]);
        assert_eq!(collect(&arena, other_root, "/zzz"), vec![9]);
        assert_eq!(collect(&arena, other_root, "/foo"), Vec::<u32>::new());
    }
}
