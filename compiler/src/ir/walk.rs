//! Every graph of a module, once: the one walker over nested graphs (the
//! top level, each loop's header and body, each fused group's body). A
//! graph is named by its [`GraphId`] (its place in walk order) and by its
//! path (`main`, `main/18/header`, `main/18/body`, `main/18/body/7/group`),
//! which plans record. Runtimes key per-graph state by id, never by address.

use super::{Graph, Module, NodeId, Op};
use std::collections::HashMap;

/// A graph's place in [`Graphs`] order; the top level is [`Graphs::MAIN`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GraphId(pub u32);

/// What a graph is to its module.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GraphKind {
    Main,
    /// A loop's per-iteration constants.
    LoopHeader,
    LoopBody,
    /// A fused group's body: row-local ops a backend runs as one kernel.
    FusedBody,
}

/// One graph of the walk.
pub struct GraphInfo<'g> {
    pub graph: &'g Graph,
    pub path: String,
    pub kind: GraphKind,
    /// Loops around it (0 for the top level and its fused bodies).
    pub depth: u32,
}

/// The graphs inside a node: a loop's header and body, or a fused body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inner {
    Loop { header: GraphId, body: GraphId },
    Fused { body: GraphId },
}

/// Every graph of a module in walk order: a graph, then for each of its
/// nodes in index order the graphs inside that node, recursively.
pub struct Graphs<'g> {
    list: Vec<GraphInfo<'g>>,
    inner: HashMap<(GraphId, NodeId), Inner>,
}

impl<'g> Graphs<'g> {
    pub const MAIN: GraphId = GraphId(0);

    pub fn of(module: &'g Module) -> Graphs<'g> {
        let mut walk = Graphs {
            list: Vec::new(),
            inner: HashMap::new(),
        };
        walk.visit(&module.graph, "main".into(), GraphKind::Main, 0);
        walk
    }

    fn visit(&mut self, g: &'g Graph, path: String, kind: GraphKind, depth: u32) -> GraphId {
        let id = GraphId(self.list.len() as u32);
        self.list.push(GraphInfo {
            graph: g,
            path: path.clone(),
            kind,
            depth,
        });
        let mut nodes: Vec<NodeId> = g.nodes().collect();
        nodes.sort_by_key(|n| n.index());
        for n in nodes {
            let at = format!("{path}/{}", n.index());
            let inner = match (g.op(n), g.op(n).loop_region()) {
                (_, Some(region)) => Inner::Loop {
                    header: self.visit(
                        &region.header,
                        format!("{at}/header"),
                        GraphKind::LoopHeader,
                        depth + 1,
                    ),
                    body: self.visit(
                        &region.body,
                        format!("{at}/body"),
                        GraphKind::LoopBody,
                        depth + 1,
                    ),
                },
                (Op::Fused(f), None) => Inner::Fused {
                    body: self.visit(&f.body, format!("{at}/group"), GraphKind::FusedBody, depth),
                },
                _ => continue,
            };
            self.inner.insert((id, n), inner);
        }
        id
    }

    pub fn get(&self, id: GraphId) -> &GraphInfo<'g> {
        &self.list[id.0 as usize]
    }

    pub fn graph(&self, id: GraphId) -> &'g Graph {
        self.list[id.0 as usize].graph
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (GraphId, &GraphInfo<'g>)> {
        self.list
            .iter()
            .enumerate()
            .map(|(i, g)| (GraphId(i as u32), g))
    }

    /// The graphs whose nodes a backend plans kernels for: all but fused
    /// bodies (a fused group is one kernel of its parent graph).
    pub fn planned(&self) -> impl Iterator<Item = (GraphId, &GraphInfo<'g>)> {
        self.iter().filter(|(_, g)| g.kind != GraphKind::FusedBody)
    }

    /// The graph at `path`, if the module has it.
    pub fn by_path(&self, path: &str) -> Option<GraphId> {
        self.iter().find(|(_, g)| g.path == path).map(|(id, _)| id)
    }

    /// The node a plan step names by graph path and node index, if this
    /// module has it (a stale plan names one it does not).
    pub fn node_at(&self, path: &str, index: u32) -> Option<(GraphId, NodeId)> {
        let id = self.by_path(path)?;
        let node = self.graph(id).nodes().find(|n| n.index() as u32 == index)?;
        Some((id, node))
    }

    /// A loop node's header and body.
    pub fn loop_graphs(&self, at: GraphId, node: NodeId) -> (GraphId, GraphId) {
        match self.inner.get(&(at, node)) {
            Some(Inner::Loop { header, body }) => (*header, *body),
            _ => unreachable!("node {} of graph {at:?} is a loop", node.index()),
        }
    }

    /// A fused node's body.
    pub fn fused_body(&self, at: GraphId, node: NodeId) -> GraphId {
        match self.inner.get(&(at, node)) {
            Some(Inner::Fused { body }) => *body,
            _ => unreachable!("node {} of graph {at:?} is a fused group", node.index()),
        }
    }
}
