//! Placeholder until the memory work lands.
#![allow(missing_docs)]
use async_trait::async_trait;
use serde_json::Value;

use super::types::*;
use crate::{Error, ErrorKind, Result};

#[derive(Debug, Clone, Default)]
pub struct InMemoryMemoryConfig {}

#[derive(Debug, Default)]
pub struct InMemoryMemory {}

impl InMemoryMemory {
    #[must_use]
    pub fn new() -> Self {
        Self {}
    }
}

#[async_trait]
impl Memory for InMemoryMemory {
    async fn put(&self, _entry: NewEntry) -> Result<Entry> {
        Err(Error::new(ErrorKind::Configuration, "todo"))
    }
    async fn get(&self, _namespace: &str, _key: &str) -> Result<Option<Entry>> {
        Ok(None)
    }
    async fn update(&self, _n: &str, _k: &str, _v: Value, _e: Option<u64>) -> Result<Entry> {
        Err(Error::new(ErrorKind::Configuration, "todo"))
    }
    async fn delete(&self, _namespace: &str, _key: &str) -> Result<bool> {
        Ok(false)
    }
    async fn search(&self, _query: &EntryQuery) -> Result<Vec<Entry>> {
        Ok(Vec::new())
    }
    async fn record(&self, _runs: &[ExecutionRecord]) -> Result<()> {
        Ok(())
    }
    async fn reflect(&self, kind: &str, _window: Window) -> Result<Reflection> {
        Ok(super::reflection::reflect_on(kind, &[]))
    }
}
