//! A request's headers as the proxy lists them, held in one buffer.
//!
//! Every request reads the whole header map. Proxy-Wasm hands it over serialized in one buffer;
//! keeping names and values as slices of that buffer costs one UTF-8 check over all of it, where
//! the SDK's `String` per name and `Vec` per value cost two allocations, two copies and two frees
//! per header. In the wasmtime harness each header cost the identity module about 1,340 Wasm
//! instructions that way, and costs it about 430 now (`cargo xtask bench` prints the figure).

/// Where one header sits in [`HeaderList`]'s text: the name at `start`, then one separator
/// byte, then the value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Field {
    start: usize,
    name_len: usize,
    value_len: usize,
}

impl Field {
    fn value_start(self) -> usize {
        self.start + self.name_len + 1
    }
}

/// Request headers (name, value) in the proxy's order, repeats kept; names as the proxy gives
/// them (lower-case). A value that is not UTF-8 (legal on the wire) is held lossily: what the
/// decision reads; the upstream gets the proxy's own bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderList {
    /// Every name and value, each followed by a NUL byte, as in the Proxy-Wasm serialization.
    text: String,
    fields: Vec<Field>,
}

impl HeaderList {
    /// The headers from `(name, value)` pairs.
    pub fn from_pairs<N: AsRef<str>, V: AsRef<[u8]>>(pairs: impl IntoIterator<Item = (N, V)>) -> Self {
        let mut list = Self::default();
        for (name, value) in pairs {
            list.push(name.as_ref(), &String::from_utf8_lossy(value.as_ref()));
        }
        list
    }

    /// The headers from a map as Proxy-Wasm serializes it (`proxy_get_header_map_pairs`): the
    /// number of pairs, each pair's name and value lengths (32-bit little-endian), then each
    /// name and value followed by a NUL byte. `None` if `bytes` is not that.
    pub fn from_proxy_wasm(mut bytes: Vec<u8>) -> Option<Self> {
        let word = |at: usize| -> Option<usize> {
            let word: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
            usize::try_from(u32::from_le_bytes(word)).ok()
        };
        let count = word(0)?;
        let text_start = count.checked_mul(8)?.checked_add(4)?;
        // The NUL bytes that end each name and value are there: each slice then starts and ends
        // on a character boundary once the text is known to be UTF-8.
        let nul = |at: usize| text_start.checked_add(at).and_then(|at| bytes.get(at)) == Some(&0);
        let mut fields = Vec::with_capacity(count.min(bytes.len() / 8));
        let mut start = 0;
        for pair in 0..count {
            // `pair * 8 + 8` is within `text_start`, computed without overflow above.
            let field = Field { start, name_len: word(4 + pair * 8)?, value_len: word(8 + pair * 8)? };
            let name_end = start.checked_add(field.name_len)?;
            let value_end = name_end.checked_add(1)?.checked_add(field.value_len)?;
            if !nul(name_end) || !nul(value_end) {
                return None;
            }
            fields.push(field);
            start = value_end + 1;
        }
        if text_start.checked_add(start)? != bytes.len() {
            return None;
        }
        bytes.drain(..text_start);
        match String::from_utf8(bytes) {
            Ok(text) => Some(Self { text, fields }),
            Err(invalid) => {
                let bytes = invalid.into_bytes();
                let slice = |from: usize, len: usize| bytes.get(from..from.saturating_add(len)).unwrap_or_default();
                Some(Self::from_pairs(fields.iter().map(|f| (String::from_utf8_lossy(slice(f.start, f.name_len)), slice(f.value_start(), f.value_len)))))
            }
        }
    }

    /// Appends one header.
    pub fn push(&mut self, name: &str, value: &str) {
        self.fields.push(Field { start: self.text.len(), name_len: name.len(), value_len: value.len() });
        // At once, not by doubling from eight bytes.
        self.text.reserve(name.len() + value.len() + 2);
        for part in [name, value] {
            self.text.push_str(part);
            self.text.push('\0');
        }
    }

    /// Every header (name, value), in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.fields.iter().map(|&field| self.field(field))
    }

    /// The number of headers.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// No header at all.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The first value of `name` (as the proxy gives names: lower-case).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields.iter().find(|&&field| self.is_named(field, name)).map(|&field| value(&self.text, field))
    }

    /// Every value of `name` (lower-case), in order.
    pub fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.fields.iter().filter(move |&&field| self.is_named(field, name)).map(|&field| value(&self.text, field))
    }

    /// Takes out the headers whose name `matches` and returns them as a list of their own.
    pub fn extract(&mut self, mut matches: impl FnMut(&str) -> bool) -> Self {
        let Self { text, fields } = self;
        // Most requests have none to take: one plain scan says so.
        if !fields.iter().any(|field| matches(name(text, *field))) {
            return Self::default();
        }
        let mut out = Self::default();
        fields.retain(|&field| {
            let taken = matches(name(text, field));
            if taken {
                out.push(name(text, field), value(text, field));
            }
            !taken
        });
        out
    }

    fn field(&self, field: Field) -> (&str, &str) {
        (name(&self.text, field), value(&self.text, field))
    }

    /// Whether `field` is named `name`: lengths first, as most are not.
    fn is_named(&self, field: Field, name: &str) -> bool {
        field.name_len == name.len() && self::name(&self.text, field) == name
    }
}

/// The value of `field` in `text`.
fn value(text: &str, field: Field) -> &str {
    let start = field.value_start();
    text.get(start..start + field.value_len).unwrap_or_default()
}

/// `pairs` as Proxy-Wasm serializes a header map (what [`HeaderList::from_proxy_wasm`] reads):
/// the map-backed host hands its headers over this way, so native tests read them as the
/// modules read Envoy's.
pub fn proxy_wasm_bytes<N: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(N, V)]) -> Vec<u8> {
    let word = |len: usize| u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes();
    let mut bytes = word(pairs.len()).to_vec();
    for (name, value) in pairs {
        bytes.extend(word(name.as_ref().len()));
        bytes.extend(word(value.as_ref().len()));
    }
    for (name, value) in pairs {
        for part in [name.as_ref(), value.as_ref()] {
            bytes.extend_from_slice(part);
            bytes.push(0);
        }
    }
    bytes
}

/// `field`'s name in `text` (a free function, so that it can borrow the text while the fields
/// are borrowed mutably).
fn name(text: &str, field: Field) -> &str {
    text.get(field.start..field.start + field.name_len).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`proxy_wasm_bytes`] with every value a byte slice, so that a test can mix lengths.
    fn serialized(pairs: &[(&str, &[u8])]) -> Vec<u8> {
        proxy_wasm_bytes(pairs)
    }

    fn pairs(list: &HeaderList) -> Vec<(&str, &str)> {
        list.iter().collect()
    }

    #[test]
    fn reads_the_proxy_wasm_serialization_in_order_with_repeats() {
        let bytes = serialized(&[(":path", b"/v1/generate"), ("x-a", b"1"), ("x-empty", b""), ("x-a", "é2".as_bytes())]);
        let list = HeaderList::from_proxy_wasm(bytes).unwrap();
        assert_eq!(pairs(&list), [(":path", "/v1/generate"), ("x-a", "1"), ("x-empty", ""), ("x-a", "é2")]);
        assert_eq!(list.get("x-a"), Some("1"));
        assert_eq!(list.values("x-a").collect::<Vec<_>>(), ["1", "é2"]);
        assert_eq!(list.get("x-b"), None);
        assert_eq!(list, HeaderList::from_pairs([(":path", "/v1/generate"), ("x-a", "1"), ("x-empty", ""), ("x-a", "é2")]));
        assert_eq!(HeaderList::from_proxy_wasm(serialized(&[])).unwrap(), HeaderList::default());
    }

    #[test]
    fn a_value_that_is_not_utf8_is_read_lossily_and_the_rest_unchanged() {
        let bytes = serialized(&[("x-a", b"caf\xe9"), ("x-b", b"ok")]);
        let list = HeaderList::from_proxy_wasm(bytes).unwrap();
        assert_eq!(pairs(&list), [("x-a", "caf\u{fffd}"), ("x-b", "ok")]);
    }

    #[test]
    fn refuses_a_buffer_that_is_not_a_serialized_map() {
        let good = serialized(&[("x-a", b"1"), ("x-b", b"2")]);
        assert!(HeaderList::from_proxy_wasm(good.clone()).is_some());
        // Truncated anywhere, or with a byte too many.
        for len in 0..good.len() {
            assert_eq!(HeaderList::from_proxy_wasm(good[..len].to_vec()), None, "{len}");
        }
        let mut longer = good.clone();
        longer.push(0);
        assert_eq!(HeaderList::from_proxy_wasm(longer), None);
        // A length that reaches past a separator, and one that splits a character.
        let mut shifted = good.clone();
        shifted[4] = 4;
        assert_eq!(HeaderList::from_proxy_wasm(shifted), None);
        let mut split = serialized(&[("x-a", "é".as_bytes())]);
        split[8] = 1;
        assert_eq!(HeaderList::from_proxy_wasm(split), None);
        // A count no buffer could hold.
        assert_eq!(HeaderList::from_proxy_wasm(u32::MAX.to_le_bytes().to_vec()), None);
        // Any byte changed to anything: refused, or read as headers that serialize back to the
        // same bytes (text that is not UTF-8 aside, read lossily), never a panic.
        let good = serialized(&[(":path", b"/a"), ("x-a", "é".as_bytes()), ("x-b", b"")]);
        for at in 0..good.len() {
            for byte in [0, 1, 2, 7, 0x7f, 0x80, 0xc3, 0xff] {
                let mut bytes = good.clone();
                bytes[at] = byte;
                if let Some(list) = HeaderList::from_proxy_wasm(bytes.clone()) {
                    let pairs: Vec<(&str, &[u8])> = list.iter().map(|(n, v)| (n, v.as_bytes())).collect();
                    let again = serialized(&pairs);
                    if std::str::from_utf8(&bytes[4 + 8 * list.len()..]).is_ok() {
                        assert_eq!(again, bytes, "byte {at} set to {byte}");
                    } else {
                        assert_eq!(again[..4], bytes[..4], "byte {at} set to {byte}");
                    }
                }
            }
        }
    }

    #[test]
    fn extract_takes_out_the_matching_headers_and_keeps_the_order_of_both() {
        let mut list = HeaderList::from_pairs([("a", "1"), ("x-id", "2"), ("b", "3"), ("x-id", "4")]);
        let taken = list.extract(|name| name == "x-id");
        assert_eq!(pairs(&list), [("a", "1"), ("b", "3")]);
        assert_eq!(pairs(&taken), [("x-id", "2"), ("x-id", "4")]);
        assert_eq!(list.len(), 2);
        assert!(list.extract(|_| false).is_empty());
    }
}
