//! Splitting a line into words the way a POSIX shell would for simple cases: whitespace
//! separates, single quotes keep everything literal, double quotes keep spaces and allow `\"`
//! and `\\`, a backslash outside quotes escapes the next character. Used by `corral shell`
//! (where the user types `create /a "hello world"`) and by `corral kv txn` (etcdctl's txn
//! syntax quotes keys and values).

/// The words of `line`, or an error naming the unterminated quote.
pub fn split(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err("unterminated single quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\')) => cur.push(c),
                            Some(c) => {
                                cur.push('\\');
                                cur.push(c);
                            }
                            None => return Err("unterminated double quote".into()),
                        },
                        Some(c) => cur.push(c),
                        None => return Err("unterminated double quote".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(c) = chars.next() {
                    cur.push(c);
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

/// Byte offset where the word under the cursor starts (for completion): after the last
/// unquoted whitespace before `pos`.
pub fn word_start(line: &str, pos: usize) -> usize {
    let before = &line[..pos.min(line.len())];
    before
        .char_indices()
        .rev()
        .find(|(_, c)| c.is_whitespace())
        .map_or(0, |(i, c)| i + c.len_utf8())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_like_a_shell() {
        assert_eq!(split("ls /a").unwrap(), ["ls", "/a"]);
        assert_eq!(split("  create  /a  ").unwrap(), ["create", "/a"]);
        assert_eq!(
            split(r#"create /a "hello world""#).unwrap(),
            ["create", "/a", "hello world"]
        );
        assert_eq!(split("set /a 'it''s'").unwrap(), ["set", "/a", "its"]);
        assert_eq!(split(r#"x "a \"q\" \n""#).unwrap(), ["x", r#"a "q" \n"#]);
        assert_eq!(split(r"a\ b c").unwrap(), ["a b", "c"]);
        assert_eq!(split(r#"put k """#).unwrap(), ["put", "k", ""]);
        assert!(split("get 'open").is_err());
        assert!(split("get \"open").is_err());
        assert!(split("").unwrap().is_empty());
    }

    #[test]
    fn word_under_the_cursor() {
        assert_eq!(word_start("ls /a/b", 7), 3);
        assert_eq!(word_start("ls", 2), 0);
        assert_eq!(word_start("ls ", 3), 3);
    }
}
