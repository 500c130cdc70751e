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

/// Bytes of label plus child keys that fit inside a [`Node`].
const INLINE: usize = 10;

/// Frozen node, one aligned 32-byte slot (never straddles a cache line).
/// Its data is the label followed by the children's first bytes, kept in
/// `inline` when it fits, else at `TrieArena::bytes[ext..]`. Children are
/// the consecutive nodes `first_child..first_child + child_count`. A single
/// entry is stored in `entries` itself, otherwise `entries` indexes
/// `TrieArena::entries`.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(32))]
struct Node {
    first_child: u32,
    entries: u32,
    entry_count: u32,
    ext: u32,
    label_len: u32,
    child_count: u16,
    inline: [u8; INLINE],
}

impl Node {
    /// Label followed by the children's first bytes.
    #[inline]
    fn data<'a>(&'a self, arena: &'a [u8]) -> &'a [u8] {
        let len = self.label_len as usize + usize::from(self.child_count);
        if len <= INLINE {
            &self.inline[..len]
        } else {
            &arena[self.ext as usize..][..len]
        }
    }
}

/// All frozen tries, laid out breadth-first so siblings are adjacent.
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
        // A root without entries and with one child only forwards to it:
        // start at the child (whose label is then the whole prefix) instead.
        let root = match (
            trie.nodes[0].entries.as_slice(),
            trie.nodes[0].children.as_slice(),
        ) {
            ([], [(_, only)]) => *only,
            _ => 0,
        };
        let mut order = vec![root];
        let mut i = 0;
        while let Some(&n) = order.get(i) {
            order.extend(trie.nodes[n].children.iter().map(|&(_, c)| c));
            i += 1;
        }
        let base = self.nodes.len();
        let mut next_child = base + 1;
        for &n in &order {
            let b = &trie.nodes[n];
            let data: Vec<u8> = b
                .label
                .iter()
                .copied()
                .chain(b.children.iter().map(|&(c, _)| c))
                .collect();
            let mut inline = [0u8; INLINE];
            let mut ext = 0;
            if data.len() <= INLINE {
                inline[..data.len()].copy_from_slice(&data);
            } else {
                ext = self.bytes.len() as u32;
                self.bytes.extend_from_slice(&data);
            }
            let entries = match b.entries.as_slice() {
                [one] => *one,
                many => {
                    self.entries.extend_from_slice(many);
                    (self.entries.len() - many.len()) as u32
                }
            };
            self.nodes.push(Node {
                first_child: next_child as u32,
                entries,
                entry_count: b.entries.len() as u32,
                ext,
                label_len: b.label.len() as u32,
                // At most 256 children, one per distinct first byte.
                child_count: b.children.len() as u16,
                inline,
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
        // The root's label is empty unless `add` collapsed a forwarding root.
        let root_label = node.data(&self.bytes).get(..node.label_len as usize);
        let Some(mut pos) = root_label.filter(|l| path.starts_with(l)).map(<[u8]>::len) else {
            return;
        };
        loop {
            match node.entry_count {
                0 => {}
                1 => visit(std::slice::from_ref(&node.entries)),
                n => visit(&self.entries[node.entries as usize..][..n as usize]),
            }
            let Some(&b) = path.get(pos) else { return };
            let data = node.data(&self.bytes);
            let kids = data.get(node.label_len as usize..).unwrap_or_default();
            // Few children in practice: a linear scan beats binary search.
            let Some(i) = kids.iter().position(|&k| k == b) else {
                return;
            };
            let child = &self.nodes[node.first_child as usize + i];
            // The label's first byte is `b`, already matched.
            let label = child.data(&self.bytes).get(1..child.label_len as usize);
            let rest = &path[pos + 1..];
            match label {
                Some(label) if rest.len() >= label.len() && eq(label, &rest[..label.len()]) => {
                    pos += 1 + label.len();
                }
                _ => return,
            }
            node = child;
        }
    }
}

/// Slice equality without a `memcmp` call for the usual short labels.
#[inline]
fn eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() > 16 {
        return a == b;
    }
    a.iter().zip(b).all(|(x, y)| x == y)
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
        assert_eq!(collect(&arena, other_root, "/z"), Vec::<u32>::new());
    }
}
