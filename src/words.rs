//! Counts in words for logs and messages: "1 document", "2 documents", "1 entry", "3 entries".

/// `n` and the noun, plural unless `n` is 1 (a consonant's `y` becomes `ies`).
pub fn counted(n: u64, noun: &str) -> String {
    if n == 1 {
        return format!("1 {noun}");
    }
    let consonant_y =
        noun.ends_with('y') && !noun[..noun.len() - 1].ends_with(['a', 'e', 'i', 'o', 'u']);
    if consonant_y {
        format!("{n} {}ies", &noun[..noun.len() - 1])
    } else {
        format!("{n} {noun}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_is_singular_and_every_other_count_plural() {
        assert_eq!(counted(1, "document"), "1 document");
        assert_eq!(counted(0, "document"), "0 documents");
        assert_eq!(counted(2, "label set"), "2 label sets");
        assert_eq!(counted(1, "entry"), "1 entry");
        assert_eq!(counted(12, "entry"), "12 entries");
        assert_eq!(counted(3, "day"), "3 days");
    }
}
