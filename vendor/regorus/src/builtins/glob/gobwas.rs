// A Rust port of github.com/gobwas/glob v0.2.3 by svidgate, under gobwas/glob's license:
//
// The MIT License (MIT)
//
// Copyright (c) 2016 Sergey Kamardin
//
// Permission is hereby granted, free of charge, to any person obtaining a copy
// of this software and associated documentation files (the "Software"), to deal
// in the Software without restriction, including without limitation the rights
// to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
// copies of the Software, and to permit persons to whom the Software is
// furnished to do so, subject to the following conditions:
//
// The above copyright notice and this permission notice shall be included in all
// copies or substantial portions of the Software.
//
// THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
// IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
// FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
// AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
// LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
// OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
// SOFTWARE.

//! `glob.match` as Go OPA decides it: a port of the glob library OPA v1.20.2 compiles patterns
//! with, github.com/gobwas/glob v0.2.3, kept close to the Go source so that it can be checked
//! against it function by function. Its lexer, parser, compiler (with its optimisations) and
//! matchers are reproduced as they behave, quirks included, because OPA's answer is theirs:
//!
//! - strings are bytes and runes are decoded as Go decodes them (an invalid byte is U+FFFD,
//!   one byte wide); some matchers cut strings at byte offsets computed from rune counts;
//! - the compiler glues runs of `*`, `?` and `[!..]` into length and "does not contain the
//!   separators" checks, where the separators are one string (`??` with delimiters `.` and `/`
//!   rejects only strings that contain `./`);
//! - where Go would panic (a slice out of range), [`GoPanic`] is returned: the caller stops the
//!   evaluation, as the panic stops OPA's.
//!
//! svidgate patch (vendor/regorus/PATCHES.md).

#![allow(clippy::pattern_type_mismatch)]

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

/// A Go rune (the lexer's end of input is rune 0, as in Go).
pub type Rune = u32;

const RUNE_ERROR: Rune = 0xFFFD;
const RUNE_SELF: Rune = 0x80;
const EOF: Rune = 0;

/// Go's "no static length" (`lenNo`).
const LEN_NO: i64 = -1;

/// Where gobwas/glob would panic at match time (a slice bound out of range).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GoPanic;

/// Why a pattern does not compile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompileError {
    /// gobwas refuses it (OPA: a builtin error), with gobwas's message.
    Invalid(String),
    /// Past [`MAX_NESTING`] or [`MAX_SEQUENCE`]: gobwas would compile it, this port does not (its
    /// recursion is bounded to stay well within a WebAssembly module's stack).
    TooComplex(&'static str),
}

/// The deepest nesting of `{` alternatives compiled; Go's growable stacks have no such bound.
pub const MAX_NESTING: usize = 32;
/// The most elements (text runs, wildcards, classes, alternatives) in one sequence.
pub const MAX_SEQUENCE: usize = 256;

type Res<T> = core::result::Result<T, GoPanic>;

/// A compiled pattern.
#[derive(Clone, Debug)]
pub struct Glob {
    matcher: Matcher,
}

impl Glob {
    /// `glob.Compile(pattern, separators...)`: `Err` with gobwas's message on an invalid pattern.
    pub fn compile(pattern: &str, separators: &[Rune]) -> core::result::Result<Self, CompileError> {
        let tree = parse(pattern)?;
        let matcher = compile(&tree, separators).map_err(CompileError::Invalid)?;
        Ok(Self { matcher })
    }

    /// `Glob.Match(s)`.
    pub fn matches(&self, s: &str) -> Res<bool> {
        self.matcher.matches(s.as_bytes())
    }
}

/// `glob.QuoteMeta`: a `\` before each of `*?\[]{}`.
pub fn quote_meta(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if SPECIALS.contains(&c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

const SPECIALS: [char; 7] = ['*', '?', '\\', '[', ']', '{', '}'];

// ---------------------------------------------------------------------------------------------
// Go string and UTF-8 helpers (on bytes, as Go strings are)
// ---------------------------------------------------------------------------------------------

/// `utf8.DecodeRune`: `(RuneError, 0)` on empty input, `(RuneError, 1)` on an invalid byte.
fn decode_rune(s: &[u8]) -> (Rune, usize) {
    let Some(&first) = s.first() else {
        return (RUNE_ERROR, 0);
    };
    if Rune::from(first) < RUNE_SELF {
        return (Rune::from(first), 1);
    }
    let width = match first {
        0xC2..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF4 => 4,
        _ => return (RUNE_ERROR, 1),
    };
    match s.get(..width).map(core::str::from_utf8) {
        Some(Ok(text)) => text.chars().next().map_or((RUNE_ERROR, 1), |c| (Rune::from(c), width)),
        _ => (RUNE_ERROR, 1),
    }
}

/// `utf8.RuneLen` of a decoded rune (1 to 4; U+FFFD is 3 even where it stands for one bad byte).
const fn rune_len(r: Rune) -> usize {
    if r < 0x80 {
        1
    } else if r < 0x800 {
        2
    } else if r < 0x10000 {
        3
    } else {
        4
    }
}

/// `for i, r := range s`.
struct Runes<'a> {
    s: &'a [u8],
    pos: usize,
}

impl Iterator for Runes<'_> {
    type Item = (usize, Rune);

    fn next(&mut self) -> Option<(usize, Rune)> {
        let rest = self.s.get(self.pos..)?;
        if rest.is_empty() {
            return None;
        }
        let (r, width) = decode_rune(rest);
        let at = self.pos;
        self.pos = self.pos.saturating_add(width.max(1));
        Some((at, r))
    }
}

const fn runes(s: &[u8]) -> Runes<'_> {
    Runes { s, pos: 0 }
}

fn rune_count(s: &[u8]) -> i64 {
    runes(s).fold(0, |n, _| n.saturating_add(1))
}

/// `s[from:to]`; out of range is a Go panic.
fn slice(s: &[u8], from: usize, to: usize) -> Res<&[u8]> {
    s.get(from..to).ok_or(GoPanic)
}

fn slice_from(s: &[u8], from: usize) -> Res<&[u8]> {
    s.get(from..).ok_or(GoPanic)
}

/// A Go int known to be a valid index.
fn to_index(n: i64) -> Res<usize> {
    usize::try_from(n).map_err(|_| GoPanic)
}

fn to_int(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// `strings.Index`.
fn index(s: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    s.windows(needle.len()).position(|w| w == needle)
}

/// `strings.LastIndex`.
fn last_index(s: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(s.len());
    }
    s.windows(needle.len()).rposition(|w| w == needle)
}

fn encode_rune(r: Rune) -> Option<Vec<u8>> {
    let c = char::from_u32(r)?;
    let mut buf = [0_u8; 4];
    Some(c.encode_utf8(&mut buf).as_bytes().to_vec())
}

/// `strings.IndexRune`.
fn index_rune(s: &[u8], r: Rune) -> Option<usize> {
    if r < RUNE_SELF {
        let byte = u8::try_from(r).ok()?;
        return s.iter().position(|&b| b == byte);
    }
    if r == RUNE_ERROR {
        return runes(s).find(|&(_, c)| c == RUNE_ERROR).map(|(i, _)| i);
    }
    index(s, &encode_rune(r)?)
}

/// gobwas `strings.IndexAnyRunes`: the first separator, in the separators' order, that occurs.
fn index_any_runes(s: &[u8], rs: &[Rune]) -> Option<usize> {
    rs.iter().find_map(|&r| index_rune(s, r))
}

/// gobwas `strings.LastIndexAnyRunes`, with its loop for non-ASCII separators (which searches
/// the whole string each time and panics when the rest is shorter than the step).
fn last_index_any_runes(s: &[u8], rs: &[Rune]) -> Res<Option<usize>> {
    for &r in rs {
        let found = if r < RUNE_SELF {
            let byte = u8::try_from(r).map_err(|_| GoPanic)?;
            s.iter().rposition(|&b| b == byte)
        } else {
            let mut found = None;
            let mut sub = s;
            while !sub.is_empty() {
                let Some(j) = index_rune(s, r) else { break };
                found = Some(j);
                sub = slice_from(sub, j.saturating_add(1))?;
            }
            found
        };
        if found.is_some() {
            return Ok(found);
        }
    }
    Ok(None)
}

// ---------------------------------------------------------------------------------------------
// Lexer (syntax/lexer)
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Eof,
    Error(String),
    Text(String),
    Any,
    Super,
    Single,
    Not,
    Separator,
    RangeOpen,
    RangeClose,
    RangeLo(Rune),
    RangeHi(Rune),
    RangeBetween,
    TermsOpen,
    TermsClose,
}

const IN_TEXT_BREAKERS: [u8; 4] = [b'?', b'*', b'[', b'{'];
const IN_TERMS_BREAKERS: [u8; 6] = [b'?', b'*', b'[', b'{', b'}', b','];

struct Lexer<'a> {
    data: &'a [u8],
    pos: usize,
    err: Option<String>,
    tokens: VecDeque<Token>,
    terms_level: i64,
    last_rune: Rune,
    last_rune_size: usize,
    has_rune: bool,
}

impl<'a> Lexer<'a> {
    const fn new(source: &'a str) -> Self {
        Self {
            data: source.as_bytes(),
            pos: 0,
            err: None,
            tokens: VecDeque::new(),
            terms_level: 0,
            last_rune: EOF,
            last_rune_size: 0,
            has_rune: false,
        }
    }

    fn next_token(&mut self) -> Token {
        loop {
            if let Some(err) = &self.err {
                return Token::Error(err.clone());
            }
            if let Some(token) = self.tokens.pop_front() {
                return token;
            }
            self.fetch_item();
        }
    }

    fn peek(&mut self) -> (Rune, usize) {
        let rest = self.data.get(self.pos..).unwrap_or_default();
        if rest.is_empty() {
            return (EOF, 0);
        }
        let (r, width) = decode_rune(rest);
        if r == RUNE_ERROR {
            self.errorf("could not read rune");
            return (EOF, 0);
        }
        (r, width)
    }

    fn read(&mut self) -> Rune {
        if self.has_rune {
            self.has_rune = false;
            self.pos = self.pos.saturating_add(self.last_rune_size);
            return self.last_rune;
        }
        let (r, size) = self.peek();
        self.pos = self.pos.saturating_add(size);
        self.last_rune = r;
        self.last_rune_size = size;
        r
    }

    fn unread(&mut self) {
        if self.has_rune {
            self.errorf("could not unread rune");
            return;
        }
        self.pos = self.pos.saturating_sub(self.last_rune_size);
        self.has_rune = true;
    }

    fn errorf(&mut self, message: &str) {
        self.err = Some(String::from(message));
    }

    const fn in_terms(&self) -> bool {
        self.terms_level > 0
    }

    fn fetch_item(&mut self) {
        let r = self.read();
        if r == EOF {
            self.tokens.push_back(Token::Eof);
        } else if r == Rune::from(b'{') {
            self.terms_level = self.terms_level.saturating_add(1);
            self.tokens.push_back(Token::TermsOpen);
        } else if r == Rune::from(b',') && self.in_terms() {
            self.tokens.push_back(Token::Separator);
        } else if r == Rune::from(b'}') && self.in_terms() {
            self.tokens.push_back(Token::TermsClose);
            self.terms_level = self.terms_level.saturating_sub(1);
        } else if r == Rune::from(b'[') {
            self.tokens.push_back(Token::RangeOpen);
            self.fetch_range();
        } else if r == Rune::from(b'?') {
            self.tokens.push_back(Token::Single);
        } else if r == Rune::from(b'*') {
            if self.read() == Rune::from(b'*') {
                self.tokens.push_back(Token::Super);
            } else {
                self.unread();
                self.tokens.push_back(Token::Any);
            }
        } else {
            self.unread();
            if self.in_terms() {
                self.fetch_text(&IN_TERMS_BREAKERS);
            } else {
                self.fetch_text(&IN_TEXT_BREAKERS);
            }
        }
    }

    fn fetch_range(&mut self) {
        let mut want_hi = false;
        let mut want_close = false;
        let mut seen_not = false;
        loop {
            let r = self.read();
            if r == EOF {
                self.errorf("unexpected end of input");
                return;
            }
            if want_close {
                if r == Rune::from(b']') {
                    self.tokens.push_back(Token::RangeClose);
                } else {
                    self.errorf("expected close range character");
                }
                return;
            }
            if want_hi {
                self.tokens.push_back(Token::RangeHi(r));
                want_close = true;
                continue;
            }
            if !seen_not && r == Rune::from(b'!') {
                self.tokens.push_back(Token::Not);
                seen_not = true;
                continue;
            }
            let (n, width) = self.peek();
            if n == Rune::from(b'-') {
                self.pos = self.pos.saturating_add(width);
                self.tokens.push_back(Token::RangeLo(r));
                self.tokens.push_back(Token::RangeBetween);
                want_hi = true;
                continue;
            }
            self.unread();
            self.fetch_text(b"]");
            want_close = true;
        }
    }

    fn fetch_text(&mut self, breakers: &[u8]) {
        let mut data = String::new();
        let mut escaped = false;
        loop {
            let r = self.read();
            if r == EOF {
                break;
            }
            if !escaped {
                if r == Rune::from(b'\\') {
                    escaped = true;
                    continue;
                }
                if u8::try_from(r).is_ok_and(|b| breakers.contains(&b)) {
                    self.unread();
                    break;
                }
            }
            escaped = false;
            if let Some(c) = char::from_u32(r) {
                data.push(c);
            }
        }
        if !data.is_empty() {
            self.tokens.push_back(Token::Text(data));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// AST and parser (syntax/ast)
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
enum Node {
    Nothing,
    Pattern(Vec<Node>),
    List { chars: Vec<Rune>, not: bool },
    Range { lo: Rune, hi: Rune, not: bool },
    Text(String),
    Any,
    Super,
    Single,
    AnyOf(Vec<Node>),
}

/// The parser's tree while it is built: nodes by index, with their parents (Go's pointers).
struct Arena {
    nodes: Vec<(Node, Vec<usize>, Option<usize>)>,
}

impl Arena {
    fn insert(&mut self, parent: usize, node: Node) -> usize {
        let at = self.nodes.len();
        self.nodes.push((node, Vec::new(), Some(parent)));
        if let Some((_, children, _)) = self.nodes.get_mut(parent) {
            children.push(at);
        }
        at
    }

    fn children(&self, at: usize) -> usize {
        self.nodes.get(at).map_or(0, |(_, children, _)| children.len())
    }

    fn parent(&self, at: usize) -> Option<usize> {
        self.nodes.get(at).and_then(|(_, _, parent)| *parent)
    }

    /// The owned tree under `at` (a leaf's node as is; Pattern and AnyOf with their children).
    fn build(&self, at: usize) -> Node {
        let Some((node, children, _)) = self.nodes.get(at) else {
            return Node::Nothing;
        };
        let built = || children.iter().map(|&child| self.build(child)).collect();
        match node {
            Node::Pattern(_) => Node::Pattern(built()),
            Node::AnyOf(_) => Node::AnyOf(built()),
            leaf => leaf.clone(),
        }
    }
}

fn parse(pattern: &str) -> core::result::Result<Node, CompileError> {
    let mut lexer = Lexer::new(pattern);
    let mut arena = Arena { nodes: vec![(Node::Pattern(Vec::new()), Vec::new(), None)] };
    let root = 0;
    let mut tree = root;
    let mut depth: usize = 0;
    let invalid = |message: &str| CompileError::Invalid(String::from(message));
    loop {
        if arena.children(tree) > MAX_SEQUENCE {
            return Err(CompileError::TooComplex("more than 256 elements in one sequence"));
        }
        match lexer.next_token() {
            Token::Eof => break,
            Token::Error(message) => return Err(CompileError::Invalid(message)),
            Token::Text(text) => {
                arena.insert(tree, Node::Text(text));
            }
            Token::Any => {
                arena.insert(tree, Node::Any);
            }
            Token::Super => {
                arena.insert(tree, Node::Super);
            }
            Token::Single => {
                arena.insert(tree, Node::Single);
            }
            Token::RangeOpen => parse_range(&mut lexer, &mut arena, tree).map_err(CompileError::Invalid)?,
            Token::TermsOpen => {
                depth = depth.saturating_add(1);
                if depth > MAX_NESTING {
                    return Err(CompileError::TooComplex("`{` alternatives nested more than 32 deep"));
                }
                let any_of = arena.insert(tree, Node::AnyOf(Vec::new()));
                tree = arena.insert(any_of, Node::Pattern(Vec::new()));
            }
            Token::Separator => {
                let any_of = arena.parent(tree).ok_or_else(|| invalid("unexpected separator"))?;
                tree = arena.insert(any_of, Node::Pattern(Vec::new()));
            }
            Token::TermsClose => {
                depth = depth.saturating_sub(1);
                tree = arena
                    .parent(tree)
                    .and_then(|any_of| arena.parent(any_of))
                    .ok_or_else(|| invalid("unexpected terms close"))?;
            }
            _ => return Err(invalid("unexpected token")),
        }
    }
    Ok(arena.build(root))
}

fn parse_range(lexer: &mut Lexer<'_>, arena: &mut Arena, tree: usize) -> core::result::Result<(), String> {
    let mut not = false;
    let mut lo: Rune = 0;
    let mut hi: Rune = 0;
    let mut chars = String::new();
    loop {
        match lexer.next_token() {
            Token::Eof => return Err(String::from("unexpected end")),
            Token::Error(message) => return Err(message),
            Token::Not => not = true,
            Token::RangeLo(r) => lo = r,
            Token::RangeHi(r) => {
                hi = r;
                if hi < lo {
                    return Err(String::from("hi character should be greater than lo"));
                }
            }
            Token::Text(text) => chars = text,
            Token::RangeClose => {
                let is_range = lo != 0 && hi != 0;
                let is_chars = !chars.is_empty();
                if is_chars == is_range {
                    return Err(String::from("could not parse range"));
                }
                if is_range {
                    arena.insert(tree, Node::Range { lo, hi, not });
                } else {
                    arena.insert(tree, Node::List { chars: chars.chars().map(Rune::from).collect(), not });
                }
                return Ok(());
            }
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Matchers (match)
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Matcher {
    Any(Vec<Rune>),
    AnyOf(Vec<Matcher>),
    BTree(Box<BTree>),
    Contains { needle: Vec<u8>, not: bool },
    EveryOf(Vec<Matcher>),
    List { list: Vec<Rune>, not: bool },
    Max(i64),
    Min(i64),
    Nothing,
    Prefix(Vec<u8>),
    PrefixAny { prefix: Vec<u8>, separators: Vec<Rune> },
    PrefixSuffix { prefix: Vec<u8>, suffix: Vec<u8> },
    Range { lo: Rune, hi: Rune, not: bool },
    Row { matchers: Vec<Matcher>, runes_length: i64 },
    Single(Vec<Rune>),
    Suffix(Vec<u8>),
    SuffixAny { suffix: Vec<u8>, separators: Vec<Rune> },
    Super,
    Text { text: Vec<u8>, runes_length: i64 },
}

#[derive(Clone, Debug)]
struct BTree {
    value: Matcher,
    left: Option<Matcher>,
    right: Option<Matcher>,
    left_length: i64,
    right_length: i64,
    length: i64,
}

/// `(index, segments)` of `Index`; `None` is Go's `-1, nil`.
type Found = Option<(usize, Vec<usize>)>;

fn text(text: &str) -> Matcher {
    Matcher::Text { text: text.as_bytes().to_vec(), runes_length: rune_count(text.as_bytes()) }
}

fn new_btree(value: Matcher, left: Option<Matcher>, right: Option<Matcher>) -> Matcher {
    let value_length = value.len();
    let mut len_ok = value_length != LEN_NO;
    let left_length = left.as_ref().map_or(0, Matcher::len);
    let right_length = right.as_ref().map_or(0, Matcher::len);
    if left_length == LEN_NO || right_length == LEN_NO {
        len_ok = false;
    }
    let length = if len_ok {
        left_length.saturating_add(value_length).saturating_add(right_length)
    } else {
        LEN_NO
    };
    Matcher::BTree(Box::new(BTree { value, left, right, left_length, right_length, length }))
}

/// `appendMerge`: the union of two sorted segment lists.
fn append_merge(target: &[usize], sub: &[usize]) -> Vec<usize> {
    let mut out = Vec::with_capacity(target.len().saturating_add(sub.len()));
    let (mut x, mut y) = (target.iter().peekable(), sub.iter().peekable());
    loop {
        match (x.peek(), y.peek()) {
            (None, None) => break,
            (None, Some(_)) => {
                out.extend(y.by_ref());
                break;
            }
            (Some(_), None) => {
                out.extend(x.by_ref());
                break;
            }
            (Some(&&a), Some(&&b)) => {
                if a == b {
                    out.push(a);
                    x.next();
                    y.next();
                } else if a < b {
                    out.push(a);
                    x.next();
                } else {
                    out.push(b);
                    y.next();
                }
            }
        }
    }
    out
}

/// The rune starts of `s` and its length, each plus `offset`.
fn every_rune_start(s: &[u8], offset: usize) -> Vec<usize> {
    let mut segments: Vec<usize> = runes(s).map(|(i, _)| offset.saturating_add(i)).collect();
    segments.push(offset.saturating_add(s.len()));
    segments
}

impl Matcher {
    fn len(&self) -> i64 {
        match self {
            Self::Any(_)
            | Self::Contains { .. }
            | Self::Max(_)
            | Self::Min(_)
            | Self::Prefix(_)
            | Self::PrefixAny { .. }
            | Self::PrefixSuffix { .. }
            | Self::Suffix(_)
            | Self::SuffixAny { .. }
            | Self::Super => LEN_NO,
            // gobwas's AnyOf.Len: a first alternative without static length is forgotten when
            // the next one has one.
            Self::AnyOf(matchers) => {
                let mut l = LEN_NO;
                for m in matchers {
                    let ml = m.len();
                    if l == LEN_NO {
                        l = ml;
                    } else if ml == LEN_NO || l != ml {
                        return LEN_NO;
                    }
                }
                l
            }
            Self::BTree(tree) => tree.length,
            // gobwas's EveryOf.Len: -1 as soon as there is a matcher (its sum starts at 0).
            Self::EveryOf(matchers) => {
                if matchers.is_empty() {
                    0
                } else {
                    LEN_NO
                }
            }
            Self::List { .. } | Self::Range { .. } | Self::Single(_) => 1,
            Self::Nothing => 0,
            Self::Row { runes_length, .. } | Self::Text { runes_length, .. } => *runes_length,
        }
    }

    fn matches(&self, s: &[u8]) -> Res<bool> {
        Ok(match self {
            Self::Any(separators) => index_any_runes(s, separators).is_none(),
            Self::AnyOf(matchers) => {
                for m in matchers {
                    if m.matches(s)? {
                        return Ok(true);
                    }
                }
                false
            }
            Self::BTree(tree) => return tree.matches(s),
            Self::Contains { needle, not } => index(s, needle).is_some() != *not,
            Self::EveryOf(matchers) => {
                for m in matchers {
                    if !m.matches(s)? {
                        return Ok(false);
                    }
                }
                true
            }
            Self::List { list, not } => {
                let (r, width) = decode_rune(s);
                if s.len() > width {
                    return Ok(false);
                }
                list.contains(&r) != *not
            }
            Self::Max(limit) => rune_count(s) <= *limit,
            Self::Min(limit) => {
                let mut l: i64 = 0;
                for _ in runes(s) {
                    l = l.saturating_add(1);
                    if l >= *limit {
                        return Ok(true);
                    }
                }
                false
            }
            Self::Nothing => s.is_empty(),
            Self::Prefix(prefix) => s.starts_with(prefix),
            Self::PrefixAny { prefix, separators } => {
                s.starts_with(prefix) && index_any_runes(slice_from(s, prefix.len())?, separators).is_none()
            }
            Self::PrefixSuffix { prefix, suffix } => s.starts_with(prefix) && s.ends_with(suffix),
            Self::Range { lo, hi, not } => {
                let (r, width) = decode_rune(s);
                if s.len() > width {
                    return Ok(false);
                }
                (*lo <= r && r <= *hi) != *not
            }
            Self::Row { matchers, runes_length } => {
                rune_count(s) == *runes_length && row_match_all(matchers, s)?
            }
            Self::Single(separators) => {
                let (r, width) = decode_rune(s);
                if s.len() > width {
                    return Ok(false);
                }
                !separators.contains(&r)
            }
            Self::Suffix(suffix) => s.ends_with(suffix),
            Self::SuffixAny { suffix, separators } => {
                if !s.ends_with(suffix) {
                    return Ok(false);
                }
                let head = slice(s, 0, s.len().saturating_sub(suffix.len()))?;
                index_any_runes(head, separators).is_none()
            }
            Self::Super => true,
            Self::Text { text, .. } => s == text.as_slice(),
        })
    }

    fn index(&self, s: &[u8]) -> Res<Found> {
        Ok(match self {
            Self::Any(separators) => {
                let s = match index_any_runes(s, separators) {
                    None => s,
                    Some(0) => return Ok(Some((0, vec![0]))),
                    Some(found) => slice(s, 0, found)?,
                };
                Some((0, every_rune_start(s, 0)))
            }
            Self::AnyOf(matchers) => {
                let mut found: Option<usize> = None;
                let mut segments: Vec<usize> = Vec::new();
                for m in matchers {
                    let Some((idx, seg)) = m.index(s)? else { continue };
                    match found {
                        Some(index) if idx > index => {}
                        Some(index) if idx == index => segments = append_merge(&segments, &seg),
                        _ => {
                            found = Some(idx);
                            segments = seg;
                        }
                    }
                }
                found.map(|index| (index, segments))
            }
            Self::BTree(_) => None,
            Self::Contains { needle, not } => {
                let idx = index(s, needle);
                let mut offset = 0;
                let mut rest = s;
                if !*not {
                    let Some(idx) = idx else { return Ok(None) };
                    offset = idx.saturating_add(needle.len());
                    if s.len() <= offset {
                        return Ok(Some((0, vec![offset])));
                    }
                    rest = slice_from(s, offset)?;
                } else if let Some(idx) = idx {
                    rest = slice(s, 0, idx)?;
                }
                Some((0, every_rune_start(rest, offset)))
            }
            Self::EveryOf(matchers) => every_of_index(matchers, s)?,
            Self::List { list, not } => runes(s)
                .find(|(_, r)| list.contains(r) != *not)
                .map(|(i, r)| (i, vec![rune_len(r)])),
            Self::Max(limit) => {
                let mut segments = vec![0];
                let mut count: i64 = 0;
                for (i, r) in runes(s) {
                    count = count.saturating_add(1);
                    if count > *limit {
                        break;
                    }
                    segments.push(i.saturating_add(rune_len(r)));
                }
                Some((0, segments))
            }
            Self::Min(limit) => {
                if to_int(s.len()).saturating_sub(*limit).saturating_add(1) <= 0 {
                    return Ok(None);
                }
                let mut segments = Vec::new();
                let mut count: i64 = 0;
                for (i, r) in runes(s) {
                    count = count.saturating_add(1);
                    if count >= *limit {
                        segments.push(i.saturating_add(rune_len(r)));
                    }
                }
                if segments.is_empty() {
                    return Ok(None);
                }
                Some((0, segments))
            }
            Self::Nothing => Some((0, vec![0])),
            Self::Prefix(prefix) => {
                let Some(idx) = index(s, prefix) else { return Ok(None) };
                let length = prefix.len();
                let end = idx.saturating_add(length);
                let sub = if s.len() > end { slice_from(s, end)? } else { &[] };
                let mut segments = vec![length];
                segments.extend(runes(sub).map(|(i, r)| length.saturating_add(i).saturating_add(rune_len(r))));
                Some((idx, segments))
            }
            Self::PrefixAny { prefix, separators } => {
                let Some(idx) = index(s, prefix) else { return Ok(None) };
                let n = prefix.len();
                let mut sub = slice_from(s, idx.saturating_add(n))?;
                if let Some(i) = index_any_runes(sub, separators) {
                    sub = slice(sub, 0, i)?;
                }
                let mut segments = vec![n];
                segments.extend(runes(sub).map(|(i, r)| n.saturating_add(i).saturating_add(rune_len(r))));
                Some((idx, segments))
            }
            Self::PrefixSuffix { prefix, suffix } => {
                let Some(prefix_idx) = index(s, prefix) else { return Ok(None) };
                if suffix.is_empty() {
                    return Ok(Some((prefix_idx, vec![s.len().saturating_sub(prefix_idx)])));
                }
                if s.len() <= prefix_idx {
                    return Ok(None);
                }
                let mut segments = Vec::new();
                let mut sub = slice_from(s, prefix_idx)?;
                while let Some(suffix_idx) = last_index(sub, suffix) {
                    segments.push(suffix_idx.saturating_add(suffix.len()));
                    sub = slice(sub, 0, suffix_idx)?;
                }
                if segments.is_empty() {
                    return Ok(None);
                }
                segments.reverse();
                Some((prefix_idx, segments))
            }
            Self::Range { lo, hi, not } => runes(s)
                .find(|&(_, r)| (*lo <= r && r <= *hi) != *not)
                .map(|(i, r)| (i, vec![rune_len(r)])),
            Self::Row { matchers, runes_length } => {
                for (i, _) in runes(s) {
                    let rest = slice_from(s, i)?;
                    if to_int(rest.len()) < *runes_length {
                        break;
                    }
                    if row_match_all(matchers, rest)? {
                        return Ok(Some((i, vec![to_index(*runes_length)?])));
                    }
                }
                None
            }
            Self::Single(separators) => runes(s)
                .find(|(_, r)| !separators.contains(r))
                .map(|(i, r)| (i, vec![rune_len(r)])),
            Self::Suffix(suffix) => index(s, suffix).map(|idx| (0, vec![idx.saturating_add(suffix.len())])),
            Self::SuffixAny { suffix, separators } => {
                let Some(idx) = index(s, suffix) else { return Ok(None) };
                let i = last_index_any_runes(slice(s, 0, idx)?, separators)?
                    .map_or(0, |last| last.saturating_add(1));
                Some((i, vec![idx.saturating_add(suffix.len()).saturating_sub(i)]))
            }
            Self::Super => Some((0, every_rune_start(s, 0))),
            Self::Text { text, .. } => index(s, text).map(|idx| (idx, vec![text.len()])),
        })
    }
}

/// `Row.matchAll`: each matcher on the next `Len()` runes, cut as gobwas cuts them (at the
/// first byte of the last rune, plus one).
fn row_match_all(matchers: &[Matcher], s: &[u8]) -> Res<bool> {
    let mut idx: usize = 0;
    for m in matchers {
        let length = m.len();
        let mut next: usize = 0;
        let mut i: i64 = 0;
        for (at, _) in runes(slice_from(s, idx)?) {
            next = at;
            i = i.saturating_add(1);
            if i == length {
                break;
            }
        }
        if i < length {
            return Ok(false);
        }
        let end = idx.saturating_add(next).saturating_add(1);
        if !m.matches(slice(s, idx, end)?)? {
            return Ok(false);
        }
        idx = end;
    }
    Ok(true)
}

fn every_of_index(matchers: &[Matcher], s: &[u8]) -> Res<Found> {
    let mut index: usize = 0;
    let mut offset: usize = 0;
    let mut current: Vec<usize> = Vec::new();
    let mut sub = s;
    for (i, m) in matchers.iter().enumerate() {
        let Some((idx, seg)) = m.index(sub)? else { return Ok(None) };
        if i == 0 {
            current.extend_from_slice(&seg);
        } else {
            // delta := index - (idx + offset)
            let delta = to_int(index).saturating_sub(to_int(idx.saturating_add(offset)));
            let mut next = Vec::new();
            for &ex in &current {
                for &n in &seg {
                    if to_int(ex).saturating_add(delta) == to_int(n) {
                        next.push(n);
                    }
                }
            }
            if next.is_empty() {
                return Ok(None);
            }
            current = next;
        }
        index = idx.saturating_add(offset);
        sub = slice_from(s, index)?;
        offset = offset.saturating_add(idx);
    }
    Ok(Some((index, current)))
}

impl BTree {
    fn matches(&self, s: &[u8]) -> Res<bool> {
        let input_len = to_int(s.len());
        if self.length != LEN_NO && self.length > input_len {
            return Ok(false);
        }
        let mut offset: i64 = if self.left_length >= 0 { self.left_length } else { 0 };
        let limit: i64 = if self.right_length >= 0 {
            input_len.saturating_sub(self.right_length)
        } else {
            input_len
        };
        while offset < limit {
            let window = slice(s, to_index(offset)?, to_index(limit)?)?;
            let Some((index, segments)) = self.value.index(window)? else {
                return Ok(false);
            };
            let start = to_index(offset)?.saturating_add(index);
            let l = slice(s, 0, start)?;
            let left = match &self.left {
                Some(m) => m.matches(l)?,
                None => l.is_empty(),
            };
            if left {
                for &length in segments.iter().rev() {
                    let end = start.saturating_add(length);
                    let r = if s.len() <= end { &[][..] } else { slice_from(s, end)? };
                    let right = match &self.right {
                        Some(m) => m.matches(r)?,
                        None => r.is_empty(),
                    };
                    if right {
                        return Ok(true);
                    }
                }
            }
            let (_, step) = decode_rune(slice_from(s, start)?);
            if step == 0 {
                return Ok(false);
            }
            offset = to_int(start.saturating_add(step));
        }
        Ok(false)
    }
}

// ---------------------------------------------------------------------------------------------
// Compiler (compiler)
// ---------------------------------------------------------------------------------------------

fn optimize_matcher(matcher: Matcher) -> Matcher {
    match matcher {
        Matcher::Any(separators) if separators.is_empty() => Matcher::Super,
        Matcher::AnyOf(mut matchers) if matchers.len() == 1 => matchers.pop().unwrap_or(Matcher::Nothing),
        Matcher::List { list, not: false } if list.len() == 1 => {
            let s: String = list.iter().filter_map(|&r| char::from_u32(r)).collect();
            text(&s)
        }
        Matcher::BTree(tree) => optimize_btree(*tree),
        other => other,
    }
}

fn optimize_btree(mut tree: BTree) -> Matcher {
    tree.left = tree.left.map(optimize_matcher);
    tree.right = tree.right.map(optimize_matcher);
    let Matcher::Text { text: value, .. } = &tree.value else {
        return Matcher::BTree(Box::new(tree));
    };
    let value = value.clone();
    let (left, right) = (&tree.left, &tree.right);
    let (left_nil, right_nil) = (left.is_none(), right.is_none());
    if left_nil && right_nil {
        let runes_length = rune_count(&value);
        return Matcher::Text { text: value, runes_length };
    }
    let left_super = matches!(left, Some(Matcher::Super));
    let right_super = matches!(right, Some(Matcher::Super));
    match (left, right) {
        _ if left_super && right_super => Matcher::Contains { needle: value, not: false },
        _ if left_super && right_nil => Matcher::Suffix(value),
        _ if right_super && left_nil => Matcher::Prefix(value),
        (None, Some(Matcher::Suffix(suffix))) => Matcher::PrefixSuffix { prefix: value, suffix: suffix.clone() },
        (Some(Matcher::Prefix(prefix)), None) => Matcher::PrefixSuffix { prefix: prefix.clone(), suffix: value },
        (Some(Matcher::Any(separators)), None) => Matcher::SuffixAny { suffix: value, separators: separators.clone() },
        (None, Some(Matcher::Any(separators))) => Matcher::PrefixAny { prefix: value, separators: separators.clone() },
        _ => Matcher::BTree(Box::new(tree)),
    }
}

fn compile_matchers(mut matchers: Vec<Matcher>) -> core::result::Result<Matcher, String> {
    if matchers.is_empty() {
        return Err(String::from("compile error: need at least one matcher"));
    }
    if matchers.len() == 1 {
        return Ok(matchers.pop().unwrap_or(Matcher::Nothing));
    }
    if let Some(m) = glue_matchers(&matchers) {
        return Ok(m);
    }
    let mut idx = None;
    let mut max_len = LEN_NO;
    for (i, matcher) in matchers.iter().enumerate() {
        let l = matcher.len();
        if l != LEN_NO && l >= max_len {
            max_len = l;
            idx = Some(i);
        }
    }
    let Some(idx) = idx else {
        // No matcher with a static length.
        let rest = matchers.split_off(1);
        let r = compile_matchers(rest)?;
        let first = matchers.pop().unwrap_or(Matcher::Nothing);
        return Ok(new_btree(first, None, Some(r)));
    };
    let mut right = matchers.split_off(idx);
    let left = matchers;
    let right_rest = right.split_off(1);
    let value = right.pop().unwrap_or(Matcher::Nothing);
    let l = if left.is_empty() { None } else { Some(compile_matchers(left)?) };
    let r = if right_rest.is_empty() { None } else { Some(compile_matchers(right_rest)?) };
    Ok(new_btree(value, l, r))
}

fn glue_matchers(matchers: &[Matcher]) -> Option<Matcher> {
    glue_matchers_as_every(matchers).or_else(|| glue_matchers_as_row(matchers))
}

fn glue_matchers_as_row(matchers: &[Matcher]) -> Option<Matcher> {
    if matchers.len() <= 1 {
        return None;
    }
    let mut l: i64 = 0;
    for matcher in matchers {
        let ml = matcher.len();
        if ml == LEN_NO {
            return None;
        }
        l = l.saturating_add(ml);
    }
    Some(Matcher::Row { matchers: matchers.to_vec(), runes_length: l })
}

fn glue_matchers_as_every(matchers: &[Matcher]) -> Option<Matcher> {
    if matchers.len() <= 1 {
        return None;
    }
    let (mut has_any, mut has_super, mut has_single) = (false, false, false);
    let mut min: i64 = 0;
    let mut separator: &[Rune] = &[];
    for (i, matcher) in matchers.iter().enumerate() {
        let sep: &[Rune] = match matcher {
            Matcher::Super => {
                has_super = true;
                &[]
            }
            Matcher::Any(separators) => {
                has_any = true;
                separators
            }
            Matcher::Single(separators) => {
                has_single = true;
                min = min.saturating_add(1);
                separators
            }
            Matcher::List { list, not } => {
                if !*not {
                    return None;
                }
                has_single = true;
                min = min.saturating_add(1);
                list
            }
            _ => return None,
        };
        if i == 0 {
            separator = sep;
        }
        if sep != separator {
            return None;
        }
    }
    if has_super && !has_any && !has_single {
        return Some(Matcher::Super);
    }
    if has_any && !has_super && !has_single {
        return Some(Matcher::Any(separator.to_vec()));
    }
    if (has_any || has_super) && min > 0 && separator.is_empty() {
        return Some(Matcher::Min(min));
    }
    let mut every = Vec::new();
    if min > 0 {
        every.push(Matcher::Min(min));
        if !has_any && !has_super {
            every.push(Matcher::Max(min));
        }
    }
    if !separator.is_empty() {
        let needle: String = separator.iter().filter_map(|&r| char::from_u32(r)).collect();
        every.push(Matcher::Contains { needle: needle.into_bytes(), not: true });
    }
    Some(Matcher::EveryOf(every))
}

/// `minimizeMatchers`: the widest run that glues into one matcher, replaced by it, again and
/// again (gobwas recurses; this loops).
fn minimize_matchers(mut matchers: Vec<Matcher>) -> Vec<Matcher> {
    loop {
        match minimize_matchers_once(&matchers) {
            Some(next) => matchers = next,
            None => return matchers,
        }
    }
}

/// One step of `minimizeMatchers`; `None` when nothing glues.
fn minimize_matchers_once(matchers: &[Matcher]) -> Option<Vec<Matcher>> {
    let mut done: Option<Matcher> = None;
    let (mut left, mut right, mut count) = (0, 0, 0);
    let n = matchers.len();
    for l in 0..n {
        for r in (l.saturating_add(1)..=n).rev() {
            let Some(glued) = matchers.get(l..r).and_then(glue_matchers) else { continue };
            let width = r.saturating_sub(l);
            let swap = done.as_ref().is_none_or(|current| {
                let (cl, gl) = (current.len(), glued.len());
                (cl > LEN_NO && gl > LEN_NO && gl > cl) || count < width
            });
            if swap {
                done = Some(glued);
                left = l;
                right = r;
                count = width;
            }
        }
    }
    let done = done?;
    let mut next: Vec<Matcher> = matchers.get(..left).map(<[Matcher]>::to_vec).unwrap_or_default();
    next.push(done);
    if right < n {
        next.extend(matchers.get(right..).map(<[Matcher]>::to_vec).unwrap_or_default());
    }
    // A glued run is at least two matchers wide, so `next` is shorter: gobwas would return it
    // as is only if it were not.
    (next.len() < n).then_some(next)
}

/// `minimizeTreeAnyOf`: alternatives' common leading and trailing nodes taken out of them.
fn minimize_tree_any_of(children: &[Node]) -> Option<Node> {
    let patterns: Vec<&Vec<Node>> = children
        .iter()
        .map(|child| match child {
            Node::Pattern(nodes) => Some(nodes),
            _ => None,
        })
        .collect::<Option<_>>()?;
    let (common_left, common_right) = common_children(&patterns);
    let (left_count, right_count) = (common_left.len(), common_right.len());
    if left_count == 0 && right_count == 0 {
        return None;
    }
    let mut result = Vec::new();
    if left_count > 0 {
        result.push(Node::Pattern(common_left));
    }
    let mut any_of: Vec<Node> = Vec::new();
    for nodes in &patterns {
        let end = nodes.len().saturating_sub(right_count);
        let reuse = nodes.get(left_count..end).unwrap_or_default();
        let node = if reuse.is_empty() { Node::Nothing } else { Node::Pattern(reuse.to_vec()) };
        if !any_of.contains(&node) {
            any_of.push(node);
        }
    }
    match any_of.len() {
        1 => {
            if let Some(only) = any_of.pop() {
                if only != Node::Nothing {
                    result.push(only);
                }
            }
        }
        n if n > 1 => result.push(Node::AnyOf(any_of)),
        _ => {}
    }
    if right_count > 0 {
        result.push(Node::Pattern(common_right));
    }
    Some(Node::Pattern(result))
}

fn common_children(nodes: &[&Vec<Node>]) -> (Vec<Node>, Vec<Node>) {
    let mut common_left = Vec::new();
    if nodes.len() <= 1 {
        return (common_left, Vec::new());
    }
    // The first of the nodes with the fewest children.
    let mut idx = 0;
    let mut min = usize::MAX;
    for (i, n) in nodes.iter().enumerate() {
        if n.len() < min {
            min = n.len();
            idx = i;
        }
    }
    let Some(tree) = nodes.get(idx) else { return (common_left, Vec::new()) };
    let tree_length = tree.len();
    let mut common_right: Vec<Option<Node>> = vec![None; tree_length];
    let mut last_right = tree_length;
    let (mut break_left, mut break_right) = (false, false);
    let mut common_total = 0_usize;
    let mut i = 0_usize;
    let mut j = tree_length;
    // for i, j := 0, treeLength-1; commonTotal < treeLength && j >= 0 && !(breakLeft && breakRight); i, j = i+1, j-1
    while common_total < tree_length && j > 0 && !(break_left && break_right) {
        let jj = j.saturating_sub(1);
        let (Some(tree_left), Some(tree_right)) = (tree.get(i), tree.get(jj)) else { break };
        for (k, other) in nodes.iter().enumerate() {
            if break_left && break_right {
                break;
            }
            if k == idx {
                continue;
            }
            let rest_left = other.get(i);
            let rest_right = other.get(jj.saturating_add(other.len()).saturating_sub(tree_length));
            break_left = break_left || rest_left != Some(tree_left);
            break_right = break_right || (!break_left && jj <= i);
            break_right = break_right || rest_right != Some(tree_right);
        }
        if !break_left {
            common_total = common_total.saturating_add(1);
            common_left.push(tree_left.clone());
        }
        if !break_right {
            common_total = common_total.saturating_add(1);
            last_right = jj;
            if let Some(slot) = common_right.get_mut(jj) {
                *slot = Some(tree_right.clone());
            }
        }
        i = i.saturating_add(1);
        j = jj;
    }
    let common_right = common_right.into_iter().skip(last_right).flatten().collect();
    (common_left, common_right)
}

fn compile_tree_children(children: &[Node], separators: &[Rune]) -> core::result::Result<Vec<Matcher>, String> {
    children.iter().map(|child| compile(child, separators).map(optimize_matcher)).collect()
}

fn compile(tree: &Node, separators: &[Rune]) -> core::result::Result<Matcher, String> {
    let m = match tree {
        Node::AnyOf(children) => {
            if let Some(n) = minimize_tree_any_of(children) {
                return compile(&n, separators);
            }
            return Ok(Matcher::AnyOf(compile_tree_children(children, separators)?));
        }
        Node::Pattern(children) => {
            if children.is_empty() {
                return Ok(Matcher::Nothing);
            }
            let matchers = compile_tree_children(children, separators)?;
            compile_matchers(minimize_matchers(matchers))?
        }
        Node::Any => Matcher::Any(separators.to_vec()),
        Node::Super => Matcher::Super,
        Node::Single => Matcher::Single(separators.to_vec()),
        Node::Nothing => Matcher::Nothing,
        Node::List { chars, not } => Matcher::List { list: chars.clone(), not: *not },
        Node::Range { lo, hi, not } => Matcher::Range { lo: *lo, hi: *hi, not: *not },
        Node::Text(s) => text(s),
    };
    Ok(optimize_matcher(m))
}
