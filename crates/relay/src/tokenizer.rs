//! Token counting with tiktoken's `cl100k_base` (embedded in the binary; no network). Used to
//! size holds from the prompt and, when an upstream ends without `usage`, to bill what it
//! delivered. Provider tokenizers differ a little; holds are estimates and settlements prefer
//! the upstream's own count whenever there is one.
//!
//! Tokenizing costs CPU in proportion to the text, so the work per request is bounded: the
//! first [`TOKENIZE_BUDGET_BYTES`] bytes of a request's texts are counted exactly, the rest is
//! estimated from its byte length. Callers run large counts on the blocking pool.
//!
//! The vocabulary is read once from `tiktoken-rs` and kept in a compact form of our own
//! ([`Bpe`]): every token's bytes in one buffer and a table of ranks hashed by those bytes,
//! about 2 MB where tiktoken-rs's encoder, decoder and sorted copies of the same 100,256
//! tokens hold over 10 MB for the life of the process. Only counts are needed, never token
//! ids, so the merge below counts the parts it would emit; a test checks it against
//! tiktoken-rs on varied text. ASCII text is split into pieces by a scanner ([`AsciiPieces`])
//! that follows the pattern's alternatives; other text by the pattern's regex.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hash::{BuildHasher, BuildHasherDefault};
use std::sync::LazyLock;

use fancy_regex::Regex;
use hashbrown::HashTable;
use rustc_hash::FxHasher;
use serde_json::Value;

/// cl100k_base's pre-tokenizer: text is split into pieces by this pattern (tiktoken's own),
/// then each piece is merged byte pair by byte pair.
const CL100K_PATTERN: &str = r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s";

/// The number of ordinary (not special) tokens of cl100k_base: ranks `0..CL100K_TOKENS`.
const CL100K_TOKENS: u32 = 100_256;

/// No pair to merge.
const NO_RANK: u32 = u32::MAX;

/// A byte-pair vocabulary that can count tokens and nothing else.
struct Bpe {
    pieces: Regex,
    /// Every token's bytes, in rank order.
    bytes: Box<[u8]>,
    /// `ends[r]`: where token `r`'s bytes end in `bytes` (they start where `r - 1`'s end).
    ends: Box<[u32]>,
    /// Ranks, found by hashing the token's bytes.
    ranks: HashTable<u32>,
}

/// Token `rank`'s bytes in `bytes`, as laid out by `ends` (see [`Bpe`]).
fn token_bytes<'a>(bytes: &'a [u8], ends: &[u32], rank: u32) -> &'a [u8] {
    let r = rank as usize;
    let start = if r == 0 { 0 } else { ends[r - 1] as usize };
    &bytes[start..ends[r] as usize]
}

fn hash(bytes: &[u8]) -> u64 {
    BuildHasherDefault::<FxHasher>::default().hash_one(bytes)
}

impl Bpe {
    /// cl100k_base, read from tiktoken-rs's tables, which are dropped again.
    fn cl100k() -> Self {
        #[allow(clippy::expect_used)] // The embedded vocabulary is part of the binary.
        let source = tiktoken_rs::cl100k_base().expect("tiktoken-rs's embedded cl100k_base");
        #[allow(clippy::expect_used)] // A constant pattern, checked by every test below.
        let pieces = Regex::new(CL100K_PATTERN).expect("the cl100k_base pattern");
        let mut bytes = Vec::with_capacity(CL100K_TOKENS as usize * 7);
        let mut ends = Vec::with_capacity(CL100K_TOKENS as usize);
        for rank in 0..CL100K_TOKENS {
            // A missing rank would stay an empty token no piece can match.
            if let Ok(token) = source.decode_bytes(&[rank]) {
                bytes.extend_from_slice(&token);
            }
            ends.push(u32::try_from(bytes.len()).unwrap_or(u32::MAX));
        }
        drop(source);
        let mut ranks = HashTable::with_capacity(CL100K_TOKENS as usize);
        for rank in 0..CL100K_TOKENS {
            let token = token_bytes(&bytes, &ends, rank);
            if !token.is_empty() {
                ranks.insert_unique(hash(token), rank, |&r| hash(token_bytes(&bytes, &ends, r)));
            }
        }
        Bpe {
            pieces,
            bytes: bytes.into_boxed_slice(),
            ends: ends.into_boxed_slice(),
            ranks,
        }
    }

    fn token(&self, rank: u32) -> &[u8] {
        token_bytes(&self.bytes, &self.ends, rank)
    }

    fn rank(&self, bytes: &[u8]) -> u32 {
        self.ranks
            .find(hash(bytes), |&r| self.token(r) == bytes)
            .copied()
            .unwrap_or(NO_RANK)
    }

    /// Tokens of `text`, as tiktoken's `encode_ordinary(text).len()`.
    fn count(&self, text: &str) -> u64 {
        if text.is_ascii() {
            return AsciiPieces::new(text)
                .fold(0u64, |n, piece| n.saturating_add(self.piece_tokens(piece)));
        }
        let mut tokens = 0u64;
        for piece in self.pieces.find_iter(text) {
            match piece {
                Ok(piece) => tokens = tokens.saturating_add(self.piece_tokens(piece.as_str())),
                // The pattern ran out of backtracking: no exact count, a generous one.
                Err(_) => return estimate(text.len()),
            }
        }
        tokens
    }

    /// Tokens of one piece: byte pairs merged lowest rank first (leftmost among equals), as
    /// tiktoken does, until no adjacent pair is a token; the parts left are the tokens.
    fn piece_tokens(&self, piece: &str) -> u64 {
        let piece = piece.as_bytes();
        let n = piece.len();
        if n <= 1 || self.rank(piece) != NO_RANK {
            return n.min(1) as u64;
        }
        // Parts as a linked list of start offsets; `pair[i]`: the rank of the part starting at
        // `i` joined with the next one. A heap keeps the merge order in O(n log n) for long
        // pieces; entries whose pair changed since are skipped when they come up.
        let mut next: Vec<usize> = (1..=n).collect();
        let mut prev: Vec<usize> = (0..n).map(|i| i.wrapping_sub(1)).collect();
        let mut pair = vec![NO_RANK; n];
        let mut heap = BinaryHeap::with_capacity(n);
        for i in 0..n - 1 {
            pair[i] = self.rank(&piece[i..i + 2]);
            if pair[i] != NO_RANK {
                heap.push(Reverse((pair[i], i)));
            }
        }
        let joined = |next: &[usize], i: usize| {
            let after = next[i];
            if after >= n {
                NO_RANK
            } else {
                self.rank(&piece[i..next[after]])
            }
        };
        let mut parts = n as u64;
        while let Some(Reverse((rank, i))) = heap.pop() {
            if pair[i] != rank {
                continue;
            }
            let gone = next[i];
            next[i] = next[gone];
            if next[i] < n {
                prev[next[i]] = i;
            }
            pair[gone] = NO_RANK;
            parts -= 1;
            pair[i] = joined(&next, i);
            if pair[i] != NO_RANK {
                heap.push(Reverse((pair[i], i)));
            }
            let before = prev[i];
            if before != usize::MAX {
                pair[before] = joined(&next, before);
                if pair[before] != NO_RANK {
                    heap.push(Reverse((pair[before], before)));
                }
            }
        }
        parts
    }
}

/// The pieces [`CL100K_PATTERN`] splits ASCII text into, found by a scanner instead of the
/// backtracking regex: prompts are mostly ASCII, and on them the regex (and its per-search
/// cache, taken from a shared pool by every thread but the first) cost more than the byte-pair
/// merge. Each arm below is one alternative of the pattern, tried in its order; a test checks
/// the pieces against the regex's on every short string of the characters that matter and on
/// random longer ones.
struct AsciiPieces<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> AsciiPieces<'a> {
    fn new(text: &'a str) -> Self {
        debug_assert!(text.is_ascii());
        AsciiPieces { text, at: 0 }
    }

    /// Bytes from `from` while `class` holds.
    fn run(&self, from: usize, class: fn(u8) -> bool) -> usize {
        self.text.as_bytes()[from.min(self.text.len())..]
            .iter()
            .take_while(|&&b| class(b))
            .count()
    }

    /// The length of the piece starting at `at` (never 0 before the end).
    fn piece_len(&self, at: usize) -> usize {
        let s = self.text.as_bytes();
        let (c, next) = (s[at], s.get(at + 1).copied());
        // '(?i:[sdmt]|ll|ve|re)
        if c == b'\'' {
            let lower = |i: usize| s.get(i).map(u8::to_ascii_lowercase);
            if matches!(lower(at + 1), Some(b's' | b'd' | b'm' | b't')) {
                return 2;
            }
            if matches!(
                (lower(at + 1), lower(at + 2)),
                (Some(b'l'), Some(b'l')) | (Some(b'v'), Some(b'e')) | (Some(b'r'), Some(b'e'))
            ) {
                return 3;
            }
        }
        // [^\r\n\p{L}\p{N}]?+\p{L}++
        if is_letter(c) {
            return self.run(at, is_letter);
        }
        if !is_line_break(c) && !c.is_ascii_digit() && next.is_some_and(is_letter) {
            return 1 + self.run(at + 1, is_letter);
        }
        // \p{N}{1,3}+
        if c.is_ascii_digit() {
            return self.run(at, |b| b.is_ascii_digit()).min(3);
        }
        //  ?[^\s\p{L}\p{N}]++[\r\n]*+
        let punct_from = if c == b' ' && next.is_some_and(is_punct) {
            Some(at + 1)
        } else if is_punct(c) {
            Some(at)
        } else {
            None
        };
        if let Some(from) = punct_from {
            let end = from + self.run(from, is_punct);
            return end + self.run(end, is_line_break) - at;
        }
        // What is left starts with white space: \s++$ | \s*[\r\n] | \s+(?!\S) | \s
        let spaces = self.run(at, is_space);
        if at + spaces == s.len() {
            return spaces;
        }
        if let Some(last) = s[at..at + spaces].iter().rposition(|&b| is_line_break(b)) {
            return last + 1;
        }
        spaces.saturating_sub(1).max(1)
    }
}

impl<'a> Iterator for AsciiPieces<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        if self.at >= self.text.len() {
            return None;
        }
        let start = self.at;
        self.at = (start + self.piece_len(start).max(1)).min(self.text.len());
        self.text.get(start..self.at)
    }
}

/// `\p{L}` on ASCII.
fn is_letter(b: u8) -> bool {
    b.is_ascii_alphabetic()
}

/// `\s` (Unicode White_Space) on ASCII: tab, line feed, vertical tab, form feed, carriage
/// return, space.
fn is_space(b: u8) -> bool {
    matches!(b, b'\t' | b'\n' | 0x0B | 0x0C | b'\r' | b' ')
}

/// `[\r\n]`.
fn is_line_break(b: u8) -> bool {
    b == b'\r' || b == b'\n'
}

/// `[^\s\p{L}\p{N}]` on ASCII.
fn is_punct(b: u8) -> bool {
    !is_letter(b) && !b.is_ascii_digit() && !is_space(b)
}

static CL100K: LazyLock<Bpe> = LazyLock::new(Bpe::cl100k);

/// Bytes of text counted exactly per request (a prompt, or one answer); beyond them texts are
/// estimated from their byte length, so one huge request cannot stall a CPU. 3 bytes per token
/// over-estimates English and matches CJK.
pub const TOKENIZE_BUDGET_BYTES: usize = 64 * 1024;

/// The byte-length estimate used past the budget.
#[must_use]
pub fn estimate(bytes: usize) -> u64 {
    (bytes as u64).div_ceil(3)
}

/// The exact-counting budget of one request.
struct Budget(usize);

impl Budget {
    fn new() -> Self {
        Budget(TOKENIZE_BUDGET_BYTES)
    }

    fn count(&mut self, text: &str) -> u64 {
        if text.is_empty() {
            return 0;
        }
        if text.len() > self.0 {
            self.0 = 0;
            return estimate(text.len());
        }
        self.0 -= text.len();
        CL100K.count(text)
    }
}

/// Tokens in `text` (exact up to [`TOKENIZE_BUDGET_BYTES`], estimated beyond).
#[must_use]
pub fn count(text: &str) -> u64 {
    Budget::new().count(text)
}

/// Tokens of several texts of one request (embedding inputs, completion prompts), within one
/// exact-counting budget.
#[must_use]
pub fn texts_tokens<'a>(texts: impl IntoIterator<Item = &'a str>) -> u64 {
    let mut budget = Budget::new();
    texts
        .into_iter()
        .fold(0u64, |n, t| n.saturating_add(budget.count(t)))
}

/// Loads the tokenizer tables now rather than on the first request.
pub fn warm_up() {
    let _ = count("warm up");
}

/// Tokens of a chat prompt, by OpenAI's accounting: 3 per message plus its texts, plus 3 to
/// prime the reply; tools and response formats are counted as their JSON text.
#[must_use]
pub fn prompt_tokens(body: &serde_json::Map<String, Value>) -> u64 {
    let mut budget = Budget::new();
    let mut count = |s: &str| budget.count(s);
    let mut total = 3u64;
    if let Some(Value::Array(messages)) = body.get("messages") {
        for m in messages {
            total = total.saturating_add(3);
            let Value::Object(m) = m else { continue };
            for (field, value) in m {
                let tokens = match (field.as_str(), value) {
                    (_, Value::String(s)) => count(s),
                    ("content", Value::Array(parts)) => {
                        parts.iter().map(|p| part_tokens(p, &mut count)).sum()
                    }
                    (_, Value::Null) => 0,
                    (_, other) => count(&other.to_string()),
                };
                total = total.saturating_add(tokens);
            }
        }
    }
    for extra in ["tools", "functions", "response_format"] {
        if let Some(v) = body.get(extra) {
            total = total.saturating_add(count(&v.to_string()));
        }
    }
    total
}

/// A content part: its text, or a flat 85 tokens for an image (OpenAI's low-detail cost).
fn part_tokens(part: &Value, count: &mut impl FnMut(&str) -> u64) -> u64 {
    match part {
        Value::Object(p) => match p.get("text") {
            Some(Value::String(t)) => count(t),
            _ if p.contains_key("image_url") => 85,
            _ => count(&part.to_string()),
        },
        Value::String(s) => count(s),
        other => count(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_known_strings() {
        assert_eq!(count(""), 0);
        assert_eq!(count("hello world"), 2);
        // cl100k_base: CJK text is about one token a character, the full-width marks included.
        assert_eq!(count("你好！"), 3);
        assert_eq!(count("你好！很高兴见到你！"), 12);
        assert_eq!(count("tell me a story"), 4);
        // A repeated word with its space is one token each time.
        assert_eq!(count(&format!("hello{}", " hello".repeat(199))), 200);
        let big = "a".repeat(TOKENIZE_BUDGET_BYTES + 3);
        assert_eq!(count(&big), 21_847, "(65,536 + 3) / 3, rounded up");
    }

    #[test]
    fn counts_as_tiktoken_does() {
        let reference = tiktoken_rs::cl100k_base().expect("tiktoken-rs's cl100k_base");
        let check = |text: &str| {
            assert_eq!(
                CL100K.count(text),
                reference.encode_ordinary(text).len() as u64,
                "{text:?}"
            );
        };
        for text in [
            "",
            "hello world",
            "It's a test: don't, we'll, they've, I'M, you'D.",
            "  leading and trailing spaces   ",
            "line one\nline two\r\n\r\n\tindented\n\n\n",
            "12345678901234567890 3.14159 1e-10 0x1F",
            "你好！很高兴见到你！この文章は日本語です。한국어 문장입니다.",
            "Ünïcödé façade naïve coöperate Straße ǅemal",
            "emoji 😀🎉👍🏽 family 👨‍👩‍👧‍👦 flags 🇫🇷🇯🇵",
            "fn main() { println!(\"{}\", x.iter().map(|v| v * 2).sum::<i32>()); }",
            "<html><body class=\"a-b\">&amp;&lt;&#x27;</body></html>",
            "ⓐⓑⓒ ∑∫∂√∞ ≠≤≥ → ⇒ ∀x∃y",
        ] {
            check(text);
        }
        // Long pieces take the heap-ordered merge: runs of one character, and of pairs no
        // token covers whole.
        check(&"!".repeat(5_000));
        check(&"a".repeat(3_000));
        check(&" ".repeat(1_000));
        check(&"\u{10FFFF}\u{E000}".repeat(400));
        check(&"ab!?".repeat(700));
        // Varied text from a fixed seed: scripts, digits, spaces, newlines, punctuation mixed.
        let mut next = xorshift(0x2545_f491_4f6c_dd1d);
        let alphabet: Vec<char> =
            "aAbBeEtTsSzZ09 5 \n\r\t'’.,!?-_/()[]{}\"#@$%^&*é你好ßЖж😀🎉\u{301}\u{200d}"
                .chars()
                .collect();
        for _ in 0..2_000 {
            let len = (next() % 120) as usize;
            let text: String = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            check(&text);
        }
    }

    /// A fixed sequence of pseudo-random numbers from `seed` (xorshift64), for varied text.
    fn xorshift(mut seed: u64) -> impl FnMut() -> u64 {
        move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        }
    }

    /// The regex's pieces of `text`, or `None` where it gave up backtracking.
    fn regex_pieces(text: &str) -> Option<Vec<&str>> {
        CL100K
            .pieces
            .find_iter(text)
            .map(|m| m.ok().map(|m| m.as_str()))
            .collect()
    }

    #[test]
    fn the_ascii_scanner_splits_as_the_pattern_does() {
        let compared = std::cell::Cell::new(0u32);
        let check = |text: &str| {
            if let Some(expected) = regex_pieces(text) {
                let scanned: Vec<&str> = AsciiPieces::new(text).collect();
                assert_eq!(scanned, expected, "{text:?}");
                compared.set(compared.get() + 1);
            }
        };
        // Every string of up to `len` characters of `alphabet`; how many there were.
        let every = |alphabet: &str, len: usize| {
            let alphabet: Vec<char> = alphabet.chars().collect();
            let mut strings = vec![String::new()];
            let mut made = 0u32;
            for _ in 0..len {
                strings = strings
                    .iter()
                    .flat_map(|s| alphabet.iter().map(move |c| format!("{s}{c}")))
                    .collect();
                for s in &strings {
                    check(s);
                    made += 1;
                }
            }
            made
        };
        // Up to five of the characters the alternatives turn on: a contraction's letters in
        // both cases, a digit, each kind of line break and space, the apostrophe, punctuation,
        // a control character; up to three of every contraction letter, all white space and
        // DEL.
        let made =
            every("sLe1 \t\n\r\x0b'!\x00", 5) + every("sSdDmMtTlLvVeErRx1 \t\n\r\x0b\x0c'!\x7f", 3);
        // Every one was compared: the regex gave up on none of them.
        assert_eq!(compared.get(), made);
        assert_eq!(made, 271_452 + 20_439);
        // Longer random ones over all of ASCII, white space and contractions favoured.
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
        let favoured = b"   \n\r\t'sStTdDlLvVrReE0123456789.,!?";
        for _ in 0..20_000 {
            let len = (next() % 40) as usize;
            let text: String = (0..len)
                .map(|_| {
                    let r = next();
                    if r.is_multiple_of(2) {
                        char::from(favoured[(r / 2 % favoured.len() as u64) as usize])
                    } else {
                        char::from((r / 2 % 128) as u8)
                    }
                })
                .collect();
            check(&text);
        }
        for text in [
            "It's a test: don't, we'll, they've, I'M, you'D.",
            "line one\nline two\r\n\r\n\tindented\n\n\n",
            "  leading and trailing spaces   ",
            "fn main() { println!(\"{}\", x.iter().map(|v| v * 2).sum::<i32>()); }",
        ] {
            check(text);
        }
    }

    #[test]
    fn the_vocabulary_is_complete() {
        assert!((0..CL100K_TOKENS).all(|r| !CL100K.token(r).is_empty()));
        assert_eq!(CL100K.ranks.len(), CL100K_TOKENS as usize);
        assert_eq!(CL100K.rank(b"hello"), 15_339);
        assert_eq!(CL100K.rank(b"no such token, surely"), NO_RANK);
    }

    #[test]
    fn prompt_accounting_follows_messages() {
        let body: serde_json::Map<String, Value> = serde_json::from_str(
            r#"{"model":"m","messages":[{"role":"user","content":"hello world"}]}"#,
        )
        .expect("json");
        // 3 + (3 + "user" 1 + "hello world" 2) = 9.
        assert_eq!(prompt_tokens(&body), 9);
        let parts: serde_json::Map<String, Value> = serde_json::from_str(
            r#"{"messages":[{"role":"user","content":[{"type":"text","text":"hello world"},{"type":"image_url","image_url":{"url":"x"}}]}]}"#,
        )
        .expect("json");
        assert_eq!(prompt_tokens(&parts), 3 + 3 + 1 + 2 + 85);
    }

    #[test]
    fn a_request_tokenizes_at_most_its_budget() {
        let message = serde_json::json!({"role": "user", "content": "a".repeat(10_240)});
        let body = |n: usize| -> serde_json::Map<String, Value> {
            let mut m = serde_json::Map::new();
            m.insert("messages".into(), Value::Array(vec![message.clone(); n]));
            m
        };
        // Six messages fit the 64 KiB budget; the hundredth is estimated from its bytes:
        // 3 + "user" (4 bytes → 2) + 10,240 bytes → 3,414.
        assert_eq!(
            prompt_tokens(&body(100)) - prompt_tokens(&body(99)),
            3 + 2 + 3_414
        );
        // The first one was counted exactly: 'a' × 10,240 is far fewer than 3,414 tokens.
        assert!(prompt_tokens(&body(1)) < 3 + 1 + 2_000);
    }
}
