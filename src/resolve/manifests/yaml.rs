//! YAML from anywhere, read within bounds. granit-parser turns the stream into events; this reader builds
//! from them only the parts a caller's [`Paths`] asks for, plus anchored nodes (an alias may bring one into
//! a wanted path), and hands each complete unit (a document, or an item of a `List`) over on its own. It
//! bounds what hostile input could otherwise grow without limit: a unit's size, a single value's size,
//! nesting, what aliases expand to, and what is kept. Aliases share their anchor's node, so a "billion
//! laughs" document costs what it is written in, and is refused by what it would expand to.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io::{self, Read};
use std::rc::Rc;

use granit_parser::{BufferedInput, ErrorKind, Event, Options, Parser, ScalarStyle};

/// The bounds one reader enforces.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Characters of one unit (a document, or a List's item), its own units left out.
    pub object: u64,
    /// Characters read without an event: one scalar, comment or run of blanks.
    pub value: u64,
    /// Nested collections.
    pub depth: usize,
    /// Nodes that one document's aliases stand for, altogether.
    pub expansion: u64,
    /// Bytes kept for one document's anchored nodes.
    pub anchored: u64,
    /// Bytes kept for one unit's wanted paths.
    pub kept: u64,
}

impl Limits {
    /// Kubernetes stores no object over 1.5 MiB, so an object written in 16 MiB, a value of 4 MiB or an
    /// object keeping 16 MiB of containers is not one. A List is not bounded: its items are, one by one.
    pub const MANIFESTS: Limits = Limits {
        object: 16 << 20,
        value: 4 << 20,
        depth: 128,
        expansion: 1_000_000,
        anchored: 16 << 20,
        kept: 16 << 20,
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
    #[error("an object is longer than {0} characters (Kubernetes stores none over 1.5 MiB)")]
    ObjectTooLarge(u64),
    #[error("one value (or comment) is longer than {0} characters")]
    ValueTooLarge(u64),
    #[error("it nests deeper than {0} levels")]
    TooDeep(usize),
    #[error("its aliases expand to more than {0} nodes (anchors that expand without bound)")]
    Expansion(u64),
    #[error("its anchored nodes hold more than {0} bytes")]
    Anchored(u64),
    #[error("one object's containers and names hold more than {0} bytes")]
    Kept(u64),
    #[error("an alias refers to no anchor before it")]
    UnknownAlias,
    #[error("it is not UTF-8 text")]
    NotUtf8,
    #[error("cannot read it: {0}")]
    Io(io::Error),
}

/// What the input iterator and the reader share: how far the input has been read, in characters (as the
/// parser's positions count), and why it stopped early, if it did (the parser only sees an end).
#[derive(Default)]
struct Meter {
    consumed: Cell<u64>,
    /// Where the current unit's own characters are counted from.
    unit_start: Cell<u64>,
    last_event: Cell<u64>,
    stop: RefCell<Option<YamlErrorKind>>,
}

/// The characters of a UTF-8 byte stream, decoded and measured a chunk at a time.
struct Chars {
    reader: Box<dyn Read>,
    bytes: Box<[u8]>,
    /// Bytes of a character cut by the chunk's end, at the start of `bytes`.
    carried: usize,
    chars: Vec<char>,
    next: usize,
    started: bool,
    ended: bool,
    meter: Rc<Meter>,
    limits: Limits,
}

impl Chars {
    /// Reads and decodes the next chunk; false at the end of the input, or once a bound stopped it: then
    /// nothing more is read.
    fn refill(&mut self) -> bool {
        if self.ended {
            return false;
        }
        match self.decode_chunk() {
            Ok(more) => {
                self.ended = !more;
                more
            }
            Err(why) => {
                self.meter.stop.borrow_mut().get_or_insert(why);
                self.ended = true;
                false
            }
        }
    }

    fn decode_chunk(&mut self) -> Result<bool, YamlErrorKind> {
        let read = loop {
            match self.reader.read(&mut self.bytes[self.carried..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(YamlErrorKind::Io(e)),
            }
        };
        let filled = self.carried + read;
        if read == 0 {
            return match self.carried {
                0 => Ok(false),
                _ => Err(YamlErrorKind::NotUtf8),
            };
        }
        let valid = match std::str::from_utf8(&self.bytes[..filled]) {
            Ok(text) => text.len(),
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(_) => return Err(YamlErrorKind::NotUtf8),
        };
        let text = std::str::from_utf8(&self.bytes[..valid]).expect("checked above");
        // A byte order mark opens some files written on Windows.
        let text = match self.started {
            false => text.strip_prefix('\u{feff}').unwrap_or(text),
            true => text,
        };
        self.started = true;
        self.chars.clear();
        self.chars.extend(text.chars());
        self.next = 0;
        self.bytes.copy_within(valid..filled, 0);
        self.carried = filled - valid;
        let meter = &self.meter;
        let consumed = meter.consumed.get() + self.chars.len() as u64;
        meter.consumed.set(consumed);
        if consumed - meter.unit_start.get() > self.limits.object {
            return Err(YamlErrorKind::ObjectTooLarge(self.limits.object));
        }
        if consumed - meter.last_event.get() > self.limits.value {
            return Err(YamlErrorKind::ValueTooLarge(self.limits.value));
        }
        Ok(true)
    }
}

impl Iterator for Chars {
    type Item = char;

    fn next(&mut self) -> Option<char> {
        while self.next == self.chars.len() {
            if !self.refill() {
                return None;
            }
        }
        self.next += 1;
        Some(self.chars[self.next - 1])
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
    /// Where the node starts, in characters.
    start: u64,
    /// For a unit: the enclosing unit's kept bytes, where its count started, and its line.
    outer: (u64, u64, usize),
}

/// Bytes read and decoded at a time, at most; the bounds are checked once a chunk, so a chunk is a small
/// part of the smallest.
const CHUNK: usize = 64 << 10;

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
    /// Where the current unit starts, and the last event read.
    unit_line: usize,
    last_line: usize,
    expanded: u64,
    anchored_bytes: u64,
    unit_bytes: u64,
    done: bool,
}

impl<S: Paths> Reader<S> {
    /// A reader of `input`, whose documents are at `root`.
    pub fn new(input: impl Read + 'static, root: S, limits: Limits) -> Reader<S> {
        let meter = Rc::new(Meter::default());
        let chunk = usize::try_from(limits.object.min(limits.value) / 16)
            .unwrap_or(CHUNK)
            .clamp(16, CHUNK);
        let chars = Chars {
            reader: Box::new(input),
            bytes: vec![0; chunk].into_boxed_slice(),
            carried: 0,
            chars: Vec::with_capacity(chunk),
            next: 0,
            started: false,
            ended: false,
            meter: meter.clone(),
            limits,
        };
        let mut options = Options::default();
        options.flow_nesting_limit = limits.depth;
        options.block_nesting_limit = limits.depth;
        Reader {
            parser: Parser::new_from_iter_with_options(chars, options),
            meter,
            limits,
            root,
            frames: Vec::new(),
            anchors: HashMap::new(),
            document: 0,
            unit_line: 1,
            last_line: 1,
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
                // An object too long is named by where it starts; anything else by the last event read.
                let line = match why {
                    YamlErrorKind::ObjectTooLarge(_) => self.unit_line,
                    _ => self.last_line,
                };
                return Err(self.fail(line, why));
            }
            let (event, span) = match next {
                None => return Ok(None),
                Some(Ok(next)) => next,
                Some(Err(error)) => {
                    let marker = error.marker();
                    let why = match error.kind() {
                        ErrorKind::RecursionLimitExceeded => {
                            YamlErrorKind::TooDeep(self.limits.depth)
                        }
                        kind => {
                            YamlErrorKind::Syntax(format!("{kind} (column {})", marker.col() + 1))
                        }
                    };
                    return Err(self.fail(marker.line(), why));
                }
            };
            self.meter.last_event.set(self.meter.consumed.get());
            let line = span.start.line();
            self.last_line = line;
            let unit = match event {
                Event::StreamEnd => {
                    self.done = true;
                    None
                }
                Event::DocumentStart(..) => {
                    self.document += 1;
                    self.meter.unit_start.set(span.start.index() as u64);
                    self.unit_line = line;
                    self.anchors.clear();
                    self.expanded = 0;
                    self.anchored_bytes = 0;
                    self.unit_bytes = 0;
                    None
                }
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
                Event::SequenceStart(_, anchor, _) | Event::MappingStart(_, anchor, _) => {
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
                    // A unit's size is counted from where the parser says it starts: the scanner may
                    // have read well past that to tell a key from a value.
                    let outer = (self.unit_bytes, self.meter.unit_start.get(), self.unit_line);
                    if slot.unit.is_some() {
                        self.unit_bytes = 0;
                        self.meter.unit_start.set(span.start.index() as u64);
                        self.unit_line = line;
                    }
                    self.frames.push(Frame {
                        collection,
                        slot,
                        anchor,
                        line,
                        start: span.start.index() as u64,
                        outer,
                    });
                    None
                }
                Event::SequenceEnd | Event::MappingEnd => {
                    let frame = self.frames.pop().expect("the parser balances collections");
                    let node = self.build(frame.collection, frame.slot.keep, frame.line, line)?;
                    if frame.slot.unit.is_some() {
                        // The enclosing unit goes on counting, less this one's length.
                        let (kept, outer_start, outer_line) = frame.outer;
                        let length = (span.end.index() as u64).saturating_sub(frame.start);
                        self.unit_bytes = kept;
                        self.meter.unit_start.set(outer_start + length);
                        self.unit_line = outer_line;
                    }
                    self.complete(node, frame.slot, frame.anchor, line)?
                }
                // Anchors, unresolved aliases and comments come as events only when asked for.
                _ => None,
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
        if self.unit_bytes > self.limits.kept {
            return Err(self.fail(line, YamlErrorKind::Kept(self.limits.kept)));
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
