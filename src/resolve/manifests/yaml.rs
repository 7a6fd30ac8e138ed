//! YAML from anywhere, read within bounds. saphyr-parser turns the stream into events; this reader builds
//! from them only the parts a caller's [`Paths`] asks for, plus anchored nodes (an alias may bring one into
//! a wanted path), and hands each complete unit (a document, or an item of a `List`) over on its own. It
//! bounds what hostile input could otherwise grow without limit: a document's size, a single value's size,
//! nesting, what aliases expand to, and what is kept. Aliases share their anchor's node, so a "billion
//! laughs" document costs what it is written in, and is refused by what it would expand to.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io::{self, Read};
use std::rc::Rc;

use saphyr_parser::{BufferedInput, Event, Parser, ScalarStyle};

/// The bounds one reader enforces.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bytes of one document.
    pub document: u64,
    /// Bytes read without an event: one scalar, comment or run of blanks.
    pub value: u64,
    /// Nested collections.
    pub depth: usize,
    /// Nodes that one document's aliases stand for, altogether.
    pub expansion: u64,
    /// Bytes kept for one document's anchored nodes.
    pub anchored: u64,
    /// Bytes kept for one unit's wanted paths.
    pub unit: u64,
}

impl Limits {
    /// Kubernetes stores no object over 1.5 MiB, so a value of 4 MiB or a unit keeping 16 MiB is not one;
    /// a document of 64 MiB holds a `kubectl get -o yaml` List of some 10,000 pods.
    pub const MANIFESTS: Limits = Limits {
        document: 64 << 20,
        value: 4 << 20,
        depth: 128,
        expansion: 1_000_000,
        anchored: 16 << 20,
        unit: 16 << 20,
    };
}

/// Where a reader is in a document, as its caller sees it: which keys and items are wanted there.
pub trait Paths: Copy {
    /// What the value under `key` of a mapping here is; `None` when it is not wanted.
    fn key(self, key: &str) -> Option<Self>;
    /// What each item of a sequence here is; `None` when they are not wanted.
    fn item(self) -> Option<Self>;
    /// Whether a node here is handed over on its own when complete, rather than kept in its parent.
    fn is_unit(self) -> bool;
}

/// A node as kept: wanted keys only, unless it was anchored.
#[derive(Debug)]
pub enum Node {
    Scalar {
        text: String,
        plain: bool,
        line: usize,
    },
    Sequence {
        items: Vec<Rc<Node>>,
        line: usize,
        size: u64,
    },
    Mapping {
        entries: Vec<(String, Rc<Node>)>,
        line: usize,
        size: u64,
    },
}

impl Node {
    /// The value under `key` (the last one, if written twice), merge keys already applied.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match self {
            Node::Mapping { entries, .. } => entries
                .iter()
                .rev()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_ref()),
            _ => None,
        }
    }

    /// The value at a path of keys.
    pub fn at(&self, keys: &[&str]) -> Option<&Node> {
        keys.iter().try_fold(self, |node, key| node.get(key))
    }

    /// A sequence's items; none for any other node.
    pub fn items(&self) -> &[Rc<Node>] {
        match self {
            Node::Sequence { items, .. } => items,
            _ => &[],
        }
    }

    /// A scalar's text, unless it is YAML's null (`~`, `null`, or nothing).
    pub fn text(&self) -> Option<&str> {
        match self {
            Node::Scalar { text, plain, .. }
                if !(*plain && matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL")) =>
            {
                Some(text)
            }
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Node::Scalar { .. }) && self.text().is_none()
    }

    /// The line the node starts on, 1-based.
    pub fn line(&self) -> usize {
        match self {
            Node::Scalar { line, .. }
            | Node::Sequence { line, .. }
            | Node::Mapping { line, .. } => *line,
        }
    }

    /// How many nodes this one stands for with every alias in it expanded.
    fn size(&self) -> u64 {
        match self {
            Node::Scalar { .. } => 1,
            Node::Sequence { size, .. } | Node::Mapping { size, .. } => *size,
        }
    }
}

/// A complete unit: the node, what it is, and which document (1-based) it is in.
pub struct Unit<S> {
    pub at: S,
    pub node: Rc<Node>,
    pub document: usize,
}

#[derive(Debug, thiserror::Error)]
#[error("document {document}, line {line}: {kind}")]
pub struct YamlError {
    pub document: usize,
    pub line: usize,
    #[source]
    pub kind: YamlErrorKind,
}

#[derive(Debug, thiserror::Error)]
pub enum YamlErrorKind {
    #[error("not valid YAML: {0}")]
    Syntax(String),
    #[error("the document is larger than {0} bytes")]
    DocumentTooLarge(u64),
    #[error("one value (or comment) is larger than {0} bytes")]
    ValueTooLarge(u64),
    #[error("it nests deeper than {0} levels")]
    TooDeep(usize),
    #[error("its aliases expand to more than {0} nodes (anchors that expand without bound)")]
    Expansion(u64),
    #[error("its anchored nodes hold more than {0} bytes")]
    Anchored(u64),
    #[error("one object's containers and names hold more than {0} bytes")]
    Unit(u64),
    #[error("an alias refers to no anchor before it")]
    UnknownAlias,
    #[error("it is not UTF-8 text")]
    NotUtf8,
    #[error("cannot read it: {0}")]
    Io(io::Error),
}

/// What the input iterator and the reader share: how far the input has been read, and why it stopped
/// early, if it did (the parser only sees the end of its input).
#[derive(Default)]
struct Meter {
    consumed: Cell<u64>,
    line: Cell<usize>,
    document_start: Cell<u64>,
    last_event: Cell<u64>,
    stop: RefCell<Option<YamlErrorKind>>,
}

/// The characters of a UTF-8 byte stream, measured as they go.
struct Chars {
    reader: Box<dyn Read>,
    buffer: Box<[u8]>,
    start: usize,
    end: usize,
    eof: bool,
    meter: Rc<Meter>,
    limits: Limits,
}

impl Chars {
    /// Makes at least 4 bytes (one whole character) available unless the input ends first.
    fn fill(&mut self) -> io::Result<()> {
        if self.end - self.start >= 4 || self.eof {
            return Ok(());
        }
        self.buffer.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        while self.end < 4 && !self.eof {
            match self.reader.read(&mut self.buffer[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn stop(&mut self, why: YamlErrorKind) -> Option<char> {
        self.meter.stop.borrow_mut().get_or_insert(why);
        self.eof = true;
        self.start = self.end;
        None
    }

    fn decode(&mut self) -> Result<Option<char>, YamlErrorKind> {
        self.fill().map_err(YamlErrorKind::Io)?;
        let Some(&first) = self.buffer[self.start..self.end].first() else {
            return Ok(None);
        };
        let width = match first {
            0x00..=0x7f => 1,
            0xc2..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf4 => 4,
            _ => return Err(YamlErrorKind::NotUtf8),
        };
        let bytes = self
            .buffer
            .get(self.start..self.start + width)
            .filter(|_| self.start + width <= self.end)
            .ok_or(YamlErrorKind::NotUtf8)?;
        let c = std::str::from_utf8(bytes)
            .ok()
            .and_then(|s| s.chars().next())
            .ok_or(YamlErrorKind::NotUtf8)?;
        self.start += width;
        let meter = &self.meter;
        let consumed = meter.consumed.get() + width as u64;
        meter.consumed.set(consumed);
        if c == '\n' {
            meter.line.set(meter.line.get() + 1);
        }
        if consumed - meter.document_start.get() > self.limits.document {
            return Err(YamlErrorKind::DocumentTooLarge(self.limits.document));
        }
        if consumed - meter.last_event.get() > self.limits.value {
            return Err(YamlErrorKind::ValueTooLarge(self.limits.value));
        }
        Ok(Some(c))
    }
}

impl Iterator for Chars {
    type Item = char;

    fn next(&mut self) -> Option<char> {
        if self.eof && self.start == self.end {
            return None;
        }
        match self.decode() {
            Ok(Some('\u{feff}')) if self.meter.consumed.get() == 3 => self.next(),
            Ok(c) => c,
            Err(why) => self.stop(why),
        }
    }
}

/// What is built of a node in some place.
#[derive(Debug, Clone, Copy)]
enum Keep<S> {
    /// Nothing: only nesting is followed.
    Skip,
    /// Everything: the node is anchored, or inside one that is.
    Full,
    /// The wanted keys and items.
    Path(S),
    /// The value of a merge key (`<<`): a mapping whose keys join the parent's, or a list of them.
    Merge(S),
}

impl<S: Paths> Keep<S> {
    /// What is built of a child: the value under `key`, or (None) an item.
    fn child(self, key: Option<&str>) -> Keep<S> {
        match (self, key) {
            (Keep::Skip, _) => Keep::Skip,
            (Keep::Full, _) => Keep::Full,
            (Keep::Path(s) | Keep::Merge(s), Some("<<")) => Keep::Merge(s),
            (Keep::Path(s) | Keep::Merge(s), Some(key)) => {
                s.key(key).map_or(Keep::Skip, Keep::Path)
            }
            (Keep::Path(s), None) => s.item().map_or(Keep::Skip, Keep::Path),
            (Keep::Merge(s), None) => Keep::Merge(s),
        }
    }
}

/// Where a new node goes.
#[derive(Clone, Copy)]
struct Slot<S> {
    keep: Keep<S>,
    /// The parent keeps it (or it is a key, which the parent reads).
    attach: bool,
    unit: Option<S>,
}

enum Pending {
    /// The next node is a key.
    Key,
    /// The next node is the value of this key.
    Value(String),
    /// The next node is the value of a key that is not a string.
    Ignored,
}

enum Collection {
    Mapping {
        entries: Vec<(String, Rc<Node>)>,
        pending: Pending,
    },
    Sequence {
        items: Vec<Rc<Node>>,
    },
}

struct Frame<S> {
    collection: Collection,
    slot: Slot<S>,
    anchor: usize,
    line: usize,
    /// The unit's kept bytes before this frame began its own count (units only).
    outer_unit_bytes: u64,
}

/// The cost of keeping one node or entry, besides its text.
const NODE_COST: u64 = (std::mem::size_of::<Node>() + 16) as u64;
const ENTRY_COST: u64 = std::mem::size_of::<(String, Rc<Node>)>() as u64;

/// Reads YAML documents from a stream, unit by unit.
pub struct Reader<S: Paths> {
    parser: Parser<'static, BufferedInput<Chars>>,
    meter: Rc<Meter>,
    limits: Limits,
    root: S,
    frames: Vec<Frame<S>>,
    anchors: HashMap<usize, Rc<Node>>,
    document: usize,
    expanded: u64,
    anchored_bytes: u64,
    unit_bytes: u64,
    done: bool,
}

impl<S: Paths> Reader<S> {
    /// A reader of `input`, whose documents are at `root`.
    pub fn new(input: impl Read + 'static, root: S, limits: Limits) -> Reader<S> {
        let meter = Rc::new(Meter {
            line: Cell::new(1),
            ..Meter::default()
        });
        let chars = Chars {
            reader: Box::new(input),
            buffer: vec![0; 64 << 10].into_boxed_slice(),
            start: 0,
            end: 0,
            eof: false,
            meter: meter.clone(),
            limits,
        };
        Reader {
            parser: Parser::new_from_iter(chars),
            meter,
            limits,
            root,
            frames: Vec::new(),
            anchors: HashMap::new(),
            document: 0,
            expanded: 0,
            anchored_bytes: 0,
            unit_bytes: 0,
            done: false,
        }
    }

    /// The next complete unit; `None` at the end of the stream. After an error, nothing more is read.
    pub fn next_unit(&mut self) -> Result<Option<Unit<S>>, YamlError> {
        while !self.done {
            let next = self.parser.next_event();
            // Input cut short by a bound ends like a file: the bound is the error, whatever was parsed.
            let stopped = self.meter.stop.borrow_mut().take();
            if let Some(why) = stopped {
                return Err(self.fail(self.meter.line.get(), why));
            }
            let (event, span) = match next {
                None => return Ok(None),
                Some(Ok(next)) => next,
                Some(Err(error)) => {
                    let marker = error.marker();
                    let why = if error.info() == "recursion limit exceeded" {
                        YamlErrorKind::TooDeep(self.limits.depth)
                    } else {
                        YamlErrorKind::Syntax(format!(
                            "{} (column {})",
                            error.info(),
                            marker.col() + 1
                        ))
                    };
                    return Err(self.fail(marker.line(), why));
                }
            };
            self.meter.last_event.set(self.meter.consumed.get());
            let line = span.start.line();
            let unit = match event {
                Event::StreamEnd => {
                    self.done = true;
                    None
                }
                Event::DocumentStart(_) => {
                    self.document += 1;
                    self.meter.document_start.set(self.meter.consumed.get());
                    self.anchors.clear();
                    self.expanded = 0;
                    self.anchored_bytes = 0;
                    self.unit_bytes = 0;
                    None
                }
                Event::Nothing | Event::StreamStart | Event::DocumentEnd => None,
                Event::Alias(id) => {
                    let Some(target) = self.anchors.get(&id).cloned() else {
                        return Err(self.fail(line, YamlErrorKind::UnknownAlias));
                    };
                    self.expanded = self.expanded.saturating_add(target.size());
                    if self.expanded > self.limits.expansion {
                        return Err(
                            self.fail(line, YamlErrorKind::Expansion(self.limits.expansion))
                        );
                    }
                    let slot = self.slot(0);
                    self.complete(Some(target), slot, 0, line)?
                }
                Event::Scalar(text, style, anchor, _) => {
                    let slot = self.slot(anchor);
                    // A key is read even where nothing is kept; it costs nothing until an entry keeps it.
                    let kept = !matches!(slot.keep, Keep::Skip);
                    let node = if kept || self.expects_key() {
                        if kept {
                            self.charge(NODE_COST + text.len() as u64, slot.keep, line)?;
                        }
                        Some(Rc::new(Node::Scalar {
                            text: text.into_owned(),
                            plain: style == ScalarStyle::Plain,
                            line,
                        }))
                    } else {
                        None
                    };
                    self.complete(node, slot, anchor, line)?
                }
                Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                    if self.frames.len() >= self.limits.depth {
                        return Err(self.fail(line, YamlErrorKind::TooDeep(self.limits.depth)));
                    }
                    let slot = self.slot(anchor);
                    let collection = if matches!(event, Event::MappingStart(..)) {
                        Collection::Mapping {
                            entries: Vec::new(),
                            pending: Pending::Key,
                        }
                    } else {
                        Collection::Sequence { items: Vec::new() }
                    };
                    let outer_unit_bytes = self.unit_bytes;
                    if slot.unit.is_some() {
                        self.unit_bytes = 0;
                    }
                    self.frames.push(Frame {
                        collection,
                        slot,
                        anchor,
                        line,
                        outer_unit_bytes,
                    });
                    None
                }
                Event::SequenceEnd | Event::MappingEnd => {
                    let frame = self.frames.pop().expect("the parser balances collections");
                    let node = self.build(frame.collection, frame.slot.keep, frame.line, line)?;
                    if frame.slot.unit.is_some() {
                        self.unit_bytes = frame.outer_unit_bytes;
                    }
                    self.complete(node, frame.slot, frame.anchor, line)?
                }
            };
            if unit.is_some() {
                return Ok(unit);
            }
        }
        Ok(None)
    }

    fn fail(&mut self, line: usize, kind: YamlErrorKind) -> YamlError {
        self.done = true;
        YamlError {
            document: self.document.max(1),
            line,
            kind,
        }
    }

    fn expects_key(&self) -> bool {
        matches!(
            self.frames.last(),
            Some(Frame {
                collection: Collection::Mapping {
                    pending: Pending::Key,
                    ..
                },
                ..
            })
        )
    }

    /// Where the next node goes, given its anchor (0 for none).
    fn slot(&self, anchor: usize) -> Slot<S> {
        let (keep, attach) = match self.frames.last() {
            None => (Keep::Path(self.root), true),
            Some(frame) => match &frame.collection {
                Collection::Mapping { pending, .. } => match pending {
                    Pending::Key => (Keep::Skip, true),
                    Pending::Value(key) => {
                        let keep = frame.slot.keep.child(Some(key));
                        (keep, !matches!(keep, Keep::Skip))
                    }
                    Pending::Ignored => (Keep::Skip, false),
                },
                Collection::Sequence { .. } => {
                    let keep = frame.slot.keep.child(None);
                    (keep, !matches!(keep, Keep::Skip))
                }
            },
        };
        let unit = match keep {
            Keep::Path(at) if at.is_unit() => Some(at),
            _ => None,
        };
        Slot {
            keep: if anchor != 0 { Keep::Full } else { keep },
            attach,
            unit,
        }
    }

    /// Counts what keeping a node costs against the unit's bound, and an anchored one's against the
    /// document's.
    fn charge(&mut self, bytes: u64, keep: Keep<S>, line: usize) -> Result<(), YamlError> {
        self.unit_bytes += bytes;
        if self.unit_bytes > self.limits.unit {
            return Err(self.fail(line, YamlErrorKind::Unit(self.limits.unit)));
        }
        if matches!(keep, Keep::Full) {
            self.anchored_bytes += bytes;
            if self.anchored_bytes > self.limits.anchored {
                return Err(self.fail(line, YamlErrorKind::Anchored(self.limits.anchored)));
            }
        }
        Ok(())
    }

    /// The node a finished collection makes, if it is kept; a mapping's merge keys are applied here, so
    /// that lookups never follow chains of them.
    fn build(
        &mut self,
        collection: Collection,
        keep: Keep<S>,
        line: usize,
        end_line: usize,
    ) -> Result<Option<Rc<Node>>, YamlError> {
        if matches!(keep, Keep::Skip) {
            return Ok(None);
        }
        let node = match collection {
            Collection::Sequence { items } => {
                let size = items.iter().fold(1u64, |n, i| n.saturating_add(i.size()));
                Node::Sequence { items, line, size }
            }
            Collection::Mapping { entries, .. } => {
                let entries = self.merged(entries, keep, end_line)?;
                let size = entries
                    .iter()
                    .fold(1u64, |n, (_, v)| n.saturating_add(v.size()));
                Node::Mapping {
                    entries,
                    line,
                    size,
                }
            }
        };
        self.charge(NODE_COST, keep, line)?;
        Ok(Some(Rc::new(node)))
    }

    /// A mapping's own entries, then those of its merge keys' mappings that it does not set itself (an
    /// earlier merged mapping wins over a later one).
    fn merged(
        &mut self,
        entries: Vec<(String, Rc<Node>)>,
        keep: Keep<S>,
        line: usize,
    ) -> Result<Vec<(String, Rc<Node>)>, YamlError> {
        if !entries.iter().any(|(key, _)| key == "<<") {
            return Ok(entries);
        }
        let (merges, mut own): (Vec<_>, Vec<_>) =
            entries.into_iter().partition(|(key, _)| key == "<<");
        for (_, merge) in merges {
            let sources: Vec<&Node> = match merge.as_ref() {
                Node::Sequence { items, .. } => items.iter().map(|i| i.as_ref()).collect(),
                node => vec![node],
            };
            for source in sources {
                let Node::Mapping { entries, .. } = source else {
                    continue;
                };
                for (key, value) in entries {
                    if !own.iter().any(|(k, _)| k == key) {
                        self.charge(ENTRY_COST + key.len() as u64, keep, line)?;
                        own.push((key.clone(), value.clone()));
                    }
                }
            }
        }
        Ok(own)
    }

    /// Files a complete node: records its anchor, hands it over if it is a unit, or gives it to its
    /// parent as a key, a value or an item.
    fn complete(
        &mut self,
        node: Option<Rc<Node>>,
        slot: Slot<S>,
        anchor: usize,
        line: usize,
    ) -> Result<Option<Unit<S>>, YamlError> {
        if let (true, Some(node)) = (anchor != 0, &node) {
            self.anchors.insert(anchor, node.clone());
        }
        let unit = match (slot.unit, &node) {
            (Some(at), Some(node)) => Some(Unit {
                at,
                node: node.clone(),
                document: self.document,
            }),
            _ => None,
        };
        let mut charge = 0;
        if let Some(frame) = self.frames.last_mut() {
            match &mut frame.collection {
                Collection::Mapping { entries, pending } => {
                    match std::mem::replace(pending, Pending::Key) {
                        Pending::Key => {
                            *pending = match node.as_deref() {
                                Some(Node::Scalar { text, .. }) => Pending::Value(text.clone()),
                                _ => Pending::Ignored,
                            };
                        }
                        Pending::Value(key) => {
                            if let (Some(node), true, None) = (node, slot.attach, &unit) {
                                charge = ENTRY_COST + key.len() as u64;
                                entries.push((key, node));
                            }
                        }
                        Pending::Ignored => {}
                    }
                }
                Collection::Sequence { items } => {
                    if let (Some(node), true, None) = (node, slot.attach, &unit) {
                        items.push(node);
                    }
                }
            }
        }
        if charge > 0 {
            let keep = self.frames.last().map_or(Keep::Skip, |f| f.slot.keep);
            self.charge(charge, keep, line)?;
        }
        Ok(unit)
    }
}
