//! The storage interface the state machine runs over: one ordered key space of
//! `(table, key) -> bytes`. `weft-store` implements it on redb; tests use [`MemState`].

use std::collections::BTreeMap;

use crate::StorageFault;

/// Read access to replicated state.
pub trait StateRead {
    /// The value under `table/key`.
    fn get(&self, table: &str, key: &str) -> Result<Option<Vec<u8>>, StorageFault>;
    /// Every `(key, value)` of `table`, in key order.
    fn scan(&self, table: &str) -> Result<Vec<(String, Vec<u8>)>, StorageFault>;
    /// Every key of `table`, in order: an index lookup (see [`crate::index`]), which needs
    /// no values. Stores override it to skip copying the values.
    fn keys(&self, table: &str) -> Result<Vec<String>, StorageFault> {
        Ok(self.scan(table)?.into_iter().map(|(k, _)| k).collect())
    }
    /// The first `limit` keys of `table`, in order: the oldest rows of a time-ordered
    /// table (see [`crate::idempotency`]), read without walking the whole table. Stores
    /// override it so the cost is `limit`, not the table's size.
    fn first_keys(&self, table: &str, limit: usize) -> Result<Vec<String>, StorageFault> {
        Ok(self.keys(table)?.into_iter().take(limit).collect())
    }
    /// Whether `table/key` exists. Stores override it to skip copying the value.
    fn contains(&self, table: &str, key: &str) -> Result<bool, StorageFault> {
        Ok(self.get(table, key)?.is_some())
    }
}

/// Write access to replicated state (inside one transaction of the store).
pub trait StateWrite: StateRead {
    fn put(&mut self, table: &str, key: &str, value: &[u8]) -> Result<(), StorageFault>;
    fn delete(&mut self, table: &str, key: &str) -> Result<(), StorageFault>;
}

/// An in-memory state, for unit tests of the domain logic.
#[derive(Debug, Default, Clone)]
pub struct MemState {
    pub map: BTreeMap<(String, String), Vec<u8>>,
}

impl StateRead for MemState {
    fn get(&self, table: &str, key: &str) -> Result<Option<Vec<u8>>, StorageFault> {
        Ok(self.map.get(&(table.to_owned(), key.to_owned())).cloned())
    }
    fn scan(&self, table: &str) -> Result<Vec<(String, Vec<u8>)>, StorageFault> {
        Ok(self
            .map
            .iter()
            .filter(|((t, _), _)| t == table)
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect())
    }
}

impl StateWrite for MemState {
    fn put(&mut self, table: &str, key: &str, value: &[u8]) -> Result<(), StorageFault> {
        self.map
            .insert((table.to_owned(), key.to_owned()), value.to_vec());
        Ok(())
    }
    fn delete(&mut self, table: &str, key: &str) -> Result<(), StorageFault> {
        self.map.remove(&(table.to_owned(), key.to_owned()));
        Ok(())
    }
}
