//! The `Range` header of a blob request: one byte range, `bytes=A-B`, `bytes=A-` or `bytes=-N`, as HTTP
//! (RFC 9110, section 14) writes them. Anything else is refused rather than guessed at: a malformed or
//! unsatisfiable range gets 416, never another part of the blob.

/// `header` as the half-open `start..end` it asks of a blob of `size` bytes, or `None` when it is not one
/// byte range within the blob.
pub fn byte_range(header: &str, size: u64) -> Option<(u64, u64)> {
    let spec = header
        .trim()
        .get(..6)
        .filter(|unit| unit.eq_ignore_ascii_case("bytes="))
        .map(|_| header.trim()[6..].trim())?;
    let (first, last) = spec.split_once('-')?;
    let (start, end) = match (number(first), number(last)) {
        // bytes=-N: the last N bytes (all of them if the blob is shorter); bytes=-0 asks for nothing.
        (None, Some(suffix)) if first.is_empty() && suffix > 0 => {
            (size.saturating_sub(suffix), size)
        }
        (Some(start), None) if last.is_empty() => (start, size),
        (Some(start), Some(last)) if last >= start => (start, last.saturating_add(1).min(size)),
        _ => return None,
    };
    (start < size).then_some((start, end))
}

/// Only ASCII digits (`u64`'s own parser takes a leading `+`).
fn number(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_http() {
        assert_eq!(byte_range("bytes=0-9", 100), Some((0, 10)));
        assert_eq!(byte_range("bytes=90-", 100), Some((90, 100)));
        assert_eq!(byte_range("bytes=-10", 100), Some((90, 100)));
        assert_eq!(byte_range("bytes=-500", 100), Some((0, 100)));
        assert_eq!(byte_range("bytes=50-500", 100), Some((50, 100)));
        assert_eq!(byte_range("Bytes=1-1", 100), Some((1, 2)));
    }

    #[test]
    fn malformed_and_unsatisfiable_ranges_are_refused() {
        for header in [
            "bytes=100-",
            "bytes=100-200",
            "bytes=-0",
            "bytes=9-1",
            "bytes=500-0",
            "bytes=0-1,5-6",
            "items=0-1",
            "bytes=+1-2",
            "bytes=1-+2",
            "bytes= - ",
            "bytes=-",
            "bytes=a-b",
            "bytes=0x1-2",
            "bytes",
            "",
            "bytes=18446744073709551616-",
        ] {
            assert_eq!(byte_range(header, 100), None, "{header}");
        }
        assert_eq!(
            byte_range("bytes=0-", 0),
            None,
            "an empty blob has no bytes to give"
        );
    }
}
