//! The parsed config, cached in the plugin instance.
//!
//! The gateway reuses a plugin instance for many calls of one webhook (warm instances), and the
//! webhook's config bytes come with every call. Parsing the mapping tables is a good part of a
//! field-map call, so the last config parsed is kept beside its bytes: a call with the same
//! bytes uses it, a changed config is parsed again (and replaces it). The bytes themselves are
//! the key: comparing them costs less than hashing them, and nothing can collide.

use std::rc::Rc;

/// The last config parsed, by its bytes.
pub struct ConfigCache<T> {
    entry: Option<(Vec<u8>, Rc<T>)>,
    /// How many times a config was parsed (a miss).
    pub parses: u64,
}

impl<T> Default for ConfigCache<T> {
    fn default() -> Self {
        ConfigCache {
            entry: None,
            parses: 0,
        }
    }
}

impl<T> ConfigCache<T> {
    /// The config parsed from `bytes`: the cached one when the bytes are the same as last
    /// time, else `parse(bytes)`, cached when it succeeds (a config that fails to parse is
    /// parsed again next time, and keeps failing the same way).
    pub fn get_or_parse<E>(
        &mut self,
        bytes: Vec<u8>,
        parse: impl FnOnce(&[u8]) -> Result<T, E>,
    ) -> Result<Rc<T>, E> {
        if let Some((cached, value)) = &self.entry {
            if *cached == bytes {
                return Ok(value.clone());
            }
        }
        self.parses += 1;
        let value = Rc::new(parse(&bytes)?);
        self.entry = Some((bytes, value.clone()));
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_bytes_parse_once_and_a_changed_config_is_parsed_again() {
        let mut cache = ConfigCache::default();
        let parse = |b: &[u8]| -> Result<usize, String> { Ok(b.len()) };
        assert_eq!(*cache.get_or_parse(b"{}".to_vec(), parse).unwrap(), 2);
        assert_eq!(*cache.get_or_parse(b"{}".to_vec(), parse).unwrap(), 2);
        assert_eq!(cache.parses, 1);
        assert_eq!(
            *cache.get_or_parse(b"{\"a\":1}".to_vec(), parse).unwrap(),
            7
        );
        assert_eq!(cache.parses, 2);
        // Back to the first: parsed again (one entry only).
        assert_eq!(*cache.get_or_parse(b"{}".to_vec(), parse).unwrap(), 2);
        assert_eq!(cache.parses, 3);
    }

    #[test]
    fn a_config_that_fails_is_not_cached() {
        let mut cache: ConfigCache<()> = ConfigCache::default();
        let fail = |_: &[u8]| -> Result<(), String> { Err("bad".into()) };
        assert!(cache.get_or_parse(b"x".to_vec(), fail).is_err());
        assert!(cache.get_or_parse(b"x".to_vec(), fail).is_err());
        assert_eq!(cache.parses, 2);
        let ok = |_: &[u8]| -> Result<(), String> { Ok(()) };
        assert!(cache.get_or_parse(b"x".to_vec(), ok).is_ok());
        assert!(
            cache.get_or_parse(b"x".to_vec(), fail).is_ok(),
            "cached now"
        );
    }
}
