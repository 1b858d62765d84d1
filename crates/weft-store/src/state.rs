//! `weft-model`'s [`StateRead`]/[`StateWrite`] on redb: [`StateTxn`] inside a write
//! transaction, [`StateView`] over a read transaction.

use redb::{ReadOnlyTable, ReadableTable, ReadableTableMetadata, Table};
use weft_model::{StateRead, StateWrite, StorageFault};

use crate::{export, fault, StoreError};

type StateTable<'a> = Table<'a, (&'static str, &'static str), &'static [u8]>;
type SmMetaTable<'a> = Table<'a, &'static str, &'static [u8]>;

/// The replicated state inside one write transaction of [`Store::write_state`]: what
/// [`weft_model::apply`] mutates, plus the state-machine metadata that must commit with it.
///
/// [`Store::write_state`]: crate::Store::write_state
pub struct StateTxn<'a> {
    state: StateTable<'a>,
    sm_meta: SmMetaTable<'a>,
}

impl<'a> StateTxn<'a> {
    pub(crate) fn new(state: StateTable<'a>, sm_meta: SmMetaTable<'a>) -> Self {
        StateTxn { state, sm_meta }
    }

    /// Records state-machine metadata (applied log id, membership) in this transaction, so it
    /// commits atomically with the state it describes.
    pub fn put_sm_meta(&mut self, key: &str, value: &[u8]) -> Result<(), StorageFault> {
        self.sm_meta.insert(key, value).map_err(fault)?;
        Ok(())
    }

    /// Reads state-machine metadata as seen by this transaction (e.g. the applied log id, to
    /// skip entries that were already applied).
    pub fn get_sm_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StorageFault> {
        Ok(self
            .sm_meta
            .get(key)
            .map_err(fault)?
            .map(|v| v.value().to_vec()))
    }
}

impl StateRead for StateTxn<'_> {
    fn get(&self, table: &str, key: &str) -> Result<Option<Vec<u8>>, StorageFault> {
        get(&self.state, table, key)
    }

    fn scan(&self, table: &str) -> Result<Vec<(String, Vec<u8>)>, StorageFault> {
        scan(&self.state, table)
    }
}

impl StateWrite for StateTxn<'_> {
    fn put(&mut self, table: &str, key: &str, value: &[u8]) -> Result<(), StorageFault> {
        self.state.insert((table, key), value).map_err(fault)?;
        Ok(())
    }

    fn delete(&mut self, table: &str, key: &str) -> Result<(), StorageFault> {
        self.state.remove((table, key)).map_err(fault)?;
        Ok(())
    }
}

/// A consistent, read-only view of the replicated state as of one commit (a redb read
/// transaction). Readers (REST handlers, the controller) use it with `weft-model`'s query
/// functions; later commits do not change what it shows.
pub struct StateView {
    state: ReadOnlyTable<(&'static str, &'static str), &'static [u8]>,
    sm_meta: ReadOnlyTable<&'static str, &'static [u8]>,
}

impl StateView {
    pub(crate) fn new(
        state: ReadOnlyTable<(&'static str, &'static str), &'static [u8]>,
        sm_meta: ReadOnlyTable<&'static str, &'static [u8]>,
    ) -> Self {
        StateView { state, sm_meta }
    }

    /// State-machine metadata as of this view, e.g. the applied log id the data corresponds to.
    pub fn sm_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StorageFault> {
        Ok(self
            .sm_meta
            .get(key)
            .map_err(fault)?
            .map(|v| v.value().to_vec()))
    }

    /// Serializes everything this view shows (state rows and sm meta) in the export format of
    /// [`Store::export_state`](crate::Store::export_state): a raft snapshot's payload, consistent as of this
    /// view's commit however long it takes. Holds only a read transaction, so writers (log
    /// appends, applies) go on meanwhile.
    pub fn export(&self) -> Result<Vec<u8>, StoreError> {
        let mut enc = export::Encoder::new();
        enc.count(self.state.len()?);
        for row in self.state.iter()? {
            let (k, v) = row?;
            let (table, key) = k.value();
            enc.bytes(table.as_bytes());
            enc.bytes(key.as_bytes());
            enc.bytes(v.value());
        }
        enc.count(self.sm_meta.len()?);
        for row in self.sm_meta.iter()? {
            let (k, v) = row?;
            enc.bytes(k.value().as_bytes());
            enc.bytes(v.value());
        }
        Ok(enc.finish())
    }
}

impl std::fmt::Debug for StateView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateView").finish_non_exhaustive()
    }
}

impl StateRead for StateView {
    fn get(&self, table: &str, key: &str) -> Result<Option<Vec<u8>>, StorageFault> {
        get(&self.state, table, key)
    }

    fn scan(&self, table: &str) -> Result<Vec<(String, Vec<u8>)>, StorageFault> {
        scan(&self.state, table)
    }
}

fn get<T>(t: &T, table: &str, key: &str) -> Result<Option<Vec<u8>>, StorageFault>
where
    T: ReadableTable<(&'static str, &'static str), &'static [u8]>,
{
    Ok(t.get((table, key))
        .map_err(fault)?
        .map(|v| v.value().to_vec()))
}

/// All rows of one logical table: the key range `[(table, ""), (table + "\0", ""))`, because
/// `table + "\0"` is the smallest string greater than `table`.
fn scan<T>(t: &T, table: &str) -> Result<Vec<(String, Vec<u8>)>, StorageFault>
where
    T: ReadableTable<(&'static str, &'static str), &'static [u8]>,
{
    let upper = format!("{table}\0");
    let mut out = Vec::new();
    for row in t.range((table, "")..(upper.as_str(), "")).map_err(fault)? {
        let (k, v) = row.map_err(fault)?;
        out.push((k.value().1.to_owned(), v.value().to_vec()));
    }
    Ok(out)
}
